//! The small client CLI: report, subscribe, get, explain, accept, resolve, return. It speaks
//! the public gRPC API only, like any other government system would, and presents the bearer
//! token given by `--token` (or `GRIDROUTE_TOKEN`) on every call.

use std::sync::OnceLock;

mod tables;
pub use tables::{tables_diff, tables_push, tables_rollback, tables_show};

use gridroute_proto::v1::{
    self as pb, dispatch_service_client::DispatchServiceClient,
    incident_service_client::IncidentServiceClient, routing_service_client::RoutingServiceClient,
    supervision_service_client::SupervisionServiceClient,
};
use tonic::{
    metadata::MetadataValue, service::interceptor::InterceptedService, transport::Channel,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The bearer token of this process's calls (`--token`, `GRIDROUTE_TOKEN`).
static TOKEN: OnceLock<Option<String>> = OnceLock::new();

/// Sets the bearer token every call presents (once, at start).
pub fn set_token(token: Option<String>) {
    let _ = TOKEN.set(token.filter(|t| !t.trim().is_empty()));
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Debug, Clone)]
pub struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A connection that presents the process's token.
pub type Conn = InterceptedService<Channel, Bearer>;

/// Where the incident is, as given on the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// Category code, e.g. city.vehicle.abandoned.
    #[arg(long)]
    pub category: String,
    /// Longitude.
    #[arg(long, requires = "lat", conflicts_with = "grid")]
    pub lng: Option<f64>,
    /// Latitude.
    #[arg(long, requires = "lng")]
    pub lat: Option<f64>,
    /// Coordinate system of --lng/--lat: wgs84, gcj02 or bd09 (default: the table's, gcj02).
    #[arg(long)]
    pub crs: Option<String>,
    /// Grid code instead of a point.
    #[arg(long)]
    pub grid: Option<String>,
    /// What was seen.
    #[arg(long, default_value = "")]
    pub description: String,
    /// normal, high or critical.
    #[arg(long, default_value = "normal")]
    pub urgency: String,
    /// Source system name (default: the one the token names).
    #[arg(long, default_value = "")]
    pub source: String,
    /// Idempotency key (default: a new random one).
    #[arg(long)]
    pub request_id: Option<String>,
}

impl ReportArgs {
    fn to_request(&self) -> Result<pb::ReportIncidentRequest, BoxError> {
        let coordinate_system = match self.crs.as_deref() {
            None => pb::CoordinateSystem::Unspecified,
            Some(c) => match gridroute_core::crs::Crs::parse(c) {
                Some(gridroute_core::crs::Crs::Wgs84) => pb::CoordinateSystem::Wgs84,
                Some(gridroute_core::crs::Crs::Gcj02) => pb::CoordinateSystem::Gcj02,
                Some(gridroute_core::crs::Crs::Bd09) => pb::CoordinateSystem::Bd09,
                None => return Err(format!("unknown --crs {c}").into()),
            },
        };
        let kind = match (&self.grid, self.lng, self.lat) {
            (Some(g), _, _) => pb::location::Kind::GridCode(g.clone()),
            (None, Some(lng), Some(lat)) => pb::location::Kind::Point(pb::LatLng {
                latitude: lat,
                longitude: lng,
            }),
            _ => return Err("give --lng and --lat, or --grid".into()),
        };
        let urgency = match self.urgency.as_str() {
            "normal" => pb::Urgency::Normal,
            "high" => pb::Urgency::High,
            "critical" => pb::Urgency::Critical,
            other => return Err(format!("unknown --urgency {other}").into()),
        };
        Ok(pb::ReportIncidentRequest {
            request_id: self
                .request_id
                .clone()
                .unwrap_or_else(|| format!("cli-{}", now_nanos())),
            source_system: self.source.clone(),
            category: self.category.clone(),
            location: Some(pb::Location {
                kind: Some(kind),
                coordinate_system: coordinate_system as i32,
                ..Default::default()
            }),
            description: self.description.clone(),
            urgency: urgency as i32,
            ..Default::default()
        })
    }
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// A channel to `addr`. `https://` addresses speak TLS: the server certificate is checked
/// against GRIDROUTE_CA_CERT (a PEM file) when set, else the public web roots; with
/// GRIDROUTE_CLIENT_CERT and GRIDROUTE_CLIENT_KEY the client presents a certificate (mTLS).
pub async fn channel(addr: &str) -> Result<Conn, BoxError> {
    let mut endpoint = Channel::from_shared(addr.to_owned())?;
    if addr.starts_with("https://") {
        endpoint = endpoint.tls_config(client_tls()?)?;
    }
    let token = match TOKEN.get().cloned().flatten() {
        Some(t) => Some(
            format!("Bearer {}", t.trim())
                .parse()
                .map_err(|_| "--token holds characters a header cannot carry")?,
        ),
        None => None,
    };
    Ok(InterceptedService::new(
        endpoint.connect().await?,
        Bearer(token),
    ))
}

fn client_tls() -> Result<tonic::transport::ClientTlsConfig, BoxError> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let read = |var: &str| -> Result<Option<Vec<u8>>, BoxError> {
        match std::env::var_os(var) {
            None => Ok(None),
            Some(p) => {
                Ok(Some(std::fs::read(&p).map_err(|e| {
                    format!("{var}={}: {e}", p.to_string_lossy())
                })?))
            }
        }
    };
    let mut tls = ClientTlsConfig::new();
    tls = match read("GRIDROUTE_CA_CERT")? {
        Some(ca) => tls.ca_certificate(Certificate::from_pem(ca)),
        None => tls.with_webpki_roots(),
    };
    if let (Some(cert), Some(key)) = (
        read("GRIDROUTE_CLIENT_CERT")?,
        read("GRIDROUTE_CLIENT_KEY")?,
    ) {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Ok(tls)
}

/// `gridroute health`: OK when the service reports SERVING.
pub async fn health(addr: &str, service: &str, timeout_ms: u64) -> Result<(), BoxError> {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let check = async {
        let mut c = HealthClient::new(channel(addr).await?);
        let r = c
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await?
            .into_inner();
        Ok::<_, BoxError>(r.status())
    };
    let status = tokio::time::timeout(std::time::Duration::from_millis(timeout_ms), check)
        .await
        .map_err(|_| "health check timed out")??;
    println!("{status:?}");
    if status == ServingStatus::Serving {
        Ok(())
    } else {
        Err(format!("{addr} is {status:?}").into())
    }
}

fn print_json(label: &str, value: &impl std::fmt::Debug) {
    println!("{label}: {value:#?}");
}

/// `gridroute report`.
pub async fn report(addr: &str, args: &ReportArgs) -> Result<(), BoxError> {
    let mut c = IncidentServiceClient::new(channel(addr).await?);
    let r = c.report_incident(args.to_request()?).await?.into_inner();
    println!(
        "incident {}{}",
        r.incident_id,
        if r.duplicate_request {
            " (already reported)"
        } else {
            ""
        }
    );
    Ok(())
}

/// `gridroute explain`.
pub async fn explain(addr: &str, args: &ReportArgs) -> Result<(), BoxError> {
    let mut c = RoutingServiceClient::new(channel(addr).await?);
    let mut report = args.to_request()?;
    report.request_id.clear();
    let d = c
        .explain_route(pb::ExplainRouteRequest {
            report: Some(report),
        })
        .await?
        .into_inner();
    print_json("decision", &d.decision);
    Ok(())
}

/// `gridroute get`.
pub async fn get(addr: &str, id: &str) -> Result<(), BoxError> {
    let mut c = IncidentServiceClient::new(channel(addr).await?);
    let inc = c
        .get_incident(pb::GetIncidentRequest {
            incident_id: id.to_owned(),
        })
        .await?
        .into_inner();
    print_json("incident", &inc);
    Ok(())
}

/// `gridroute subscribe`: prints dispatches as they arrive, one line each, with the cursor to
/// resume from.
pub async fn subscribe(
    addr: &str,
    department: &str,
    cursor: Option<String>,
    latest: bool,
) -> Result<(), BoxError> {
    let mut c = DispatchServiceClient::new(channel(addr).await?);
    let start = if latest {
        pb::SubscribeStart::Latest
    } else {
        pb::SubscribeStart::Earliest
    };
    let mut stream = c
        .subscribe(pb::SubscribeRequest {
            department_id: department.to_owned(),
            cursor: cursor.unwrap_or_default(),
            start: start as i32,
        })
        .await?
        .into_inner();
    eprintln!(
        "subscribed{}; waiting for dispatches (Ctrl-C stops)",
        if department.is_empty() {
            String::new()
        } else {
            format!(" as {department}")
        }
    );
    while let Some(d) = stream.message().await? {
        let decision = d.decision.unwrap_or_default();
        let report = d.report.unwrap_or_default();
        let path: Vec<String> = decision
            .region_path
            .iter()
            .map(|r| r.name.clone())
            .collect();
        let role = if d.role == pb::DispatchRole::CoHandler as i32 {
            "co-handler"
        } else {
            "primary"
        };
        println!(
            "{}  {role}  {}  {}  rule={}  cursor={}",
            d.incident_id,
            report.category,
            path.join(" > "),
            if decision.rule_id.is_empty() {
                "-"
            } else {
                &decision.rule_id
            },
            d.cursor
        );
    }
    Ok(())
}

/// What a department or command centre does to an incident from the CLI.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Act {
    /// 签收.
    Accept,
    /// A progress note.
    Progress,
    /// 办结.
    Resolve,
    /// 退单 (reason: not in remit).
    Return,
    /// 核查 (passed), as a command centre.
    Verify,
    /// 结案, as a command centre.
    Close,
    /// Withdraw, as a command centre.
    Cancel,
    /// 审定: name the department that must handle it (`--assignee`), as a command centre.
    Arbitrate,
}

/// `gridroute act`. Each call carries a fresh request id, so a retry of the gRPC call inside
/// the client cannot apply twice.
pub async fn act(
    addr: &str,
    act: Act,
    id: &str,
    department: &str,
    note: &str,
    assignee: &str,
) -> Result<(), BoxError> {
    let ch = channel(addr).await?;
    let mut c = DispatchServiceClient::new(ch.clone());
    let mut s = SupervisionServiceClient::new(ch);
    let request_id = format!("cli-{}", ulid::Ulid::new());
    let (incident_id, department_id, note) =
        (id.to_owned(), department.to_owned(), note.to_owned());
    let inc = match act {
        Act::Accept => {
            c.accept_incident(pb::AcceptIncidentRequest {
                incident_id,
                department_id,
                note,
                request_id,
            })
            .await?
        }
        Act::Progress => {
            c.add_progress(pb::AddProgressRequest {
                incident_id,
                department_id,
                note,
                request_id,
            })
            .await?
        }
        Act::Resolve => {
            c.resolve_incident(pb::ResolveIncidentRequest {
                incident_id,
                department_id,
                note,
                evidence_urls: vec![],
                request_id,
            })
            .await?
        }
        Act::Return => {
            let reason = pb::ReturnReason::NotInRemit as i32;
            c.return_incident(pb::ReturnIncidentRequest {
                incident_id,
                department_id,
                reason,
                note,
                request_id,
            })
            .await?
        }
        Act::Verify => {
            s.verify_incident(pb::VerifyIncidentRequest {
                incident_id,
                department_id,
                passed: true,
                note,
                request_id,
                ..Default::default()
            })
            .await?
        }
        Act::Close => {
            s.close_incident(pb::CloseIncidentRequest {
                incident_id,
                department_id,
                note,
                request_id,
            })
            .await?
        }
        Act::Cancel => {
            s.cancel_incident(pb::CancelIncidentRequest {
                incident_id,
                department_id,
                reason: note,
                request_id,
            })
            .await?
        }
        Act::Arbitrate => {
            s.arbitrate_incident(pb::ArbitrateIncidentRequest {
                incident_id,
                department_id,
                assignee_department_id: assignee.to_owned(),
                note,
                request_id,
            })
            .await?
        }
    }
    .into_inner();
    println!(
        "incident {} is now {:?}",
        inc.incident_id,
        pb::IncidentStatus::try_from(inc.status).unwrap_or_default()
    );
    Ok(())
}
