//! The small client CLI: report, subscribe, get, explain, accept, resolve, return. It speaks
//! the public gRPC API only, like any other government system would.

use gridroute_proto::v1::{
    self as pb, dispatch_service_client::DispatchServiceClient,
    incident_service_client::IncidentServiceClient, routing_service_client::RoutingServiceClient,
};
use tonic::transport::Channel;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
    /// Source system name.
    #[arg(long, default_value = "cli")]
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

async fn channel(addr: &str) -> Result<Channel, BoxError> {
    Ok(Channel::from_shared(addr.to_owned())?.connect().await?)
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
    eprintln!("subscribed as {department}; waiting for dispatches (Ctrl-C stops)");
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

/// What a department does to an incident from the CLI.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Act {
    /// 签收.
    Accept,
    /// 办结.
    Resolve,
    /// 退单 (reason: not in remit).
    Return,
}

/// `gridroute act`.
pub async fn act(
    addr: &str,
    act: Act,
    id: &str,
    department: &str,
    note: &str,
) -> Result<(), BoxError> {
    let mut c = DispatchServiceClient::new(channel(addr).await?);
    let (incident_id, department_id, note) =
        (id.to_owned(), department.to_owned(), note.to_owned());
    let inc = match act {
        Act::Accept => {
            c.accept_incident(pb::AcceptIncidentRequest {
                incident_id,
                department_id,
                note,
            })
            .await?
        }
        Act::Resolve => {
            c.resolve_incident(pb::ResolveIncidentRequest {
                incident_id,
                department_id,
                note,
                evidence_urls: vec![],
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
