//! Test harness: a private redis-server on a free port, the real store, router workers and the
//! gRPC API on a real socket (port 0), all on the Dawukou sample table.

#![allow(dead_code, clippy::unwrap_used)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use geo::InteriorPoint;
use gridroute_api::{
    ApiState, Security,
    audit::AuditTrail,
    authz::Identity,
    limits::{LimitConfig, Limits},
};
use gridroute_auth::{
    Authenticator,
    dev::{DEV_AUDIENCE, DEV_ISSUER, DevKeys},
    jwks::{JwksSource, Keys},
    token::{TokenConfig, Verifier},
};
use gridroute_core::{
    RoutingTable,
    access::{self, Principal},
    table::SharedTable,
};
use gridroute_proto::v1::{
    self as pb, dispatch_service_client::DispatchServiceClient,
    incident_service_client::IncidentServiceClient, routing_service_client::RoutingServiceClient,
    supervision_service_client::SupervisionServiceClient,
};
use gridroute_router::RouterConfig;
use gridroute_store::{Store, local::LocalRedis};
use tokio::{sync::watch, task::JoinHandle};
use tonic::{Request, transport::Channel};

pub mod http;
pub mod keys;
pub mod pki;
pub mod process;
pub mod proxy;

/// The security of a test server: tokens signed by the keys of `jwks`, default limits, a real
/// audit trail.
pub fn security(store: &Store, jwks: String) -> Security {
    let verifier = Verifier::new(
        TokenConfig {
            issuer: Some(DEV_ISSUER.into()),
            audience: Some(DEV_AUDIENCE.into()),
            ..TokenConfig::default()
        },
        Arc::new(Keys::new(JwksSource::Inline(jwks))),
    );
    Security {
        identity: Identity::Credentials(Authenticator {
            tokens: Some(Arc::new(verifier)),
            certs: None,
        }),
        limits: Limits::new(LimitConfig::default()),
        audit: AuditTrail::new(store.clone(), Duration::from_secs(400 * 86_400)),
        co_handlers_see_contact: false,
    }
}

/// The principal a request names by its identity fields, as a test acting "as that department"
/// means it: a department, a command centre (if the table names it one), a grid worker, or a
/// reporting system; requests without one are read as the default command centre or, for
/// table administration, a table administrator.
pub trait Acting {
    fn principal(&self, table: &RoutingTable) -> String;
}

fn department(table: &RoutingTable, id: &str) -> String {
    if id.is_empty() {
        return format!("command_centre:{}", centre(table));
    }
    let centre =
        access::is_default_centre(table, id) || !access::centre_roots(table, id).is_empty();
    format!(
        "{}:{id}",
        if centre {
            "command_centre"
        } else {
            "department"
        }
    )
}

/// The principal of the table's default command centre.
#[allow(dead_code)]
pub fn command_centre(table: &RoutingTable) -> String {
    format!("command_centre:{}", centre(table))
}

fn centre(table: &RoutingTable) -> String {
    table.departments[table.default_command_centre as usize]
        .id
        .clone()
}

macro_rules! acting_department {
    ($($t:ty),*) => {$(
        impl Acting for $t {
            fn principal(&self, table: &RoutingTable) -> String {
                department(table, &self.department_id)
            }
        }
    )*};
}
acting_department!(
    pb::AcceptIncidentRequest,
    pb::ResolveIncidentRequest,
    pb::ReturnIncidentRequest,
    pb::AddProgressRequest,
    pb::RequestExtensionRequest,
    pb::RequestSuspensionRequest,
    pb::ResumeIncidentRequest,
    pb::ArbitrateIncidentRequest,
    pb::DecideRequestRequest,
    pb::CloseIncidentRequest,
    pb::CancelIncidentRequest,
    pb::UnmergeIncidentRequest,
    pb::SubscribeRequest,
    pb::GetStatsRequest,
    pb::WatchIncidentsRequest,
    pb::ListIncidentsRequest
);

impl Acting for pb::VerifyIncidentRequest {
    fn principal(&self, table: &RoutingTable) -> String {
        if self.grid_worker_id.is_empty() {
            department(table, &self.department_id)
        } else {
            format!("grid_worker:{}", self.grid_worker_id)
        }
    }
}

macro_rules! acting_source {
    ($($t:ty),*) => {$(
        impl Acting for $t {
            fn principal(&self, _: &RoutingTable) -> String {
                format!("source_system:{}", self.source_system)
            }
        }
    )*};
}
acting_source!(
    pb::ReportIncidentRequest,
    pb::SubmitFeedbackRequest,
    pb::GetReporterPointsRequest
);

macro_rules! acting_as {
    ($who:expr => $($t:ty),*) => {$(
        impl Acting for $t {
            fn principal(&self, table: &RoutingTable) -> String {
                let who: &str = $who;
                if who.is_empty() { format!("command_centre:{}", centre(table)) } else { who.to_owned() }
            }
        }
    )*};
}
acting_as!("" => pb::GetIncidentRequest, pb::ExplainRouteRequest);
acting_as!("table_admin:ops" => pb::PublishTableRequest, pb::RollbackTableRequest, pb::DiffTableRequest, pb::GetTableInfoRequest);
acting_as!("auditor:inspector" => pb::ListAuditRecordsRequest);

pub const PARTITIONS: u16 = 4;

/// Every switch of the leanest configuration (docs/PERFORMANCE.md): inline routing, every write
/// by transaction, both stored-format switches, the claims kept with their records.
pub const EVERY_SWITCH: &[&str] = &[
    "--inline-routing",
    "--transactions",
    "--packed-events",
    "--region-index-depth",
    "2",
    "--claims-with-records",
];

/// How the API writes the reports it accepts (`gridroute serve --inline-routing`,
/// `--transactions`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Writes {
    pub inline: bool,
    pub transactions: bool,
    /// `--packed-events`: a transaction's changes as one events entry per partition.
    pub packed_events: bool,
    /// `--region-index-depth`: region index entries down to this level (0: every level).
    pub region_index_depth: usize,
}

impl Writes {
    #[allow(dead_code)]
    pub fn inline() -> Self {
        Self {
            inline: true,
            transactions: false,
            packed_events: false,
            region_index_depth: 0,
        }
    }

    /// The same, reports written by transactions (`on`) or by the report script.
    #[allow(dead_code)]
    pub fn by_transactions(self, on: bool) -> Self {
        Self {
            transactions: on,
            ..self
        }
    }

    /// The same, with `--region-index-depth depth`.
    #[allow(dead_code)]
    pub fn region_index_depth(self, depth: usize) -> Self {
        Self {
            region_index_depth: depth,
            ..self
        }
    }

    /// The same, with `--packed-events` (`on`) or without.
    #[allow(dead_code)]
    pub fn packed_events(self, on: bool) -> Self {
        Self {
            packed_events: on,
            ..self
        }
    }
}

/// A record's field names, sorted.
#[allow(dead_code)]
pub fn field_names(record: &HashMap<String, Vec<u8>>) -> Vec<&str> {
    let mut names: Vec<&str> = record.keys().map(String::as_str).collect();
    names.sort_unstable();
    names
}

pub struct Env {
    pub redis: LocalRedis,
    pub store: Store,
    pub tables: SharedTable,
    pub addr: String,
    /// The HTTP/JSON face (`127.0.0.1:port`).
    pub http_addr: String,
    /// The signing key the server trusts.
    pub keys: Arc<DevKeys>,
    tokens: Mutex<HashMap<String, String>>,
    api_stop: watch::Sender<bool>,
    routers: Vec<(watch::Sender<bool>, JoinHandle<()>)>,
}

/// The files of the Dawukou sample.
pub fn sample_sources() -> gridroute_store::tables::Sources {
    gridroute_store::tables::Sources {
        grids: gridroute_benches::DAWUKOU_GRIDS.into(),
        rules: gridroute_benches::DAWUKOU_RULES.into(),
        calendar: String::new(),
        regions: String::new(),
    }
}

/// Router settings that make redelivery fast enough for tests.
pub fn fast_router(name: &str) -> RouterConfig {
    RouterConfig {
        consumer_name: name.to_owned(),
        batch_size: 64,
        block: Duration::from_millis(100),
        claim_interval: Duration::from_millis(100),
        claim_min_idle: Duration::from_millis(400),
        max_deliveries: 3,
    }
}

impl Env {
    /// Redis + API + one router.
    pub async fn start() -> Self {
        let mut env = Self::without_router().await;
        env.spawn_router(fast_router("router-a"));
        env
    }

    /// Redis + API, no router: entries stay in the ingest stream until a test starts one.
    pub async fn without_router() -> Self {
        Self::build(None).await
    }

    /// Redis + API + one router (with its timer loop) on the sample grids and these rules.
    pub async fn with_rules(rules: &str) -> Self {
        let mut env = Self::build(Some(rules)).await;
        env.spawn_router(fast_router("router-a"));
        env
    }

    /// Redis + API + one router, trusting these keys besides the development key, with these
    /// changes to the security settings.
    pub async fn with_security(
        extra_keys: &[&keys::TestKey],
        adjust: impl FnOnce(&mut Security),
    ) -> Self {
        let mut env = Self::build_with(None, extra_keys, adjust).await;
        env.spawn_router(fast_router("router-a"));
        env
    }

    /// Redis + API reading this archive + one router (the mover is run by the test).
    #[allow(dead_code)]
    pub async fn with_archive(archive: gridroute_archive::Archive) -> Self {
        let mut env = Self::build_full(None, &[], |_| {}, Some(archive), Writes::default()).await;
        env.spawn_router(fast_router("router-a"));
        env
    }

    /// Redis + an API that routes the reports it accepts (`--inline-routing`), no router:
    /// what the routers would do with a report stays in the ingest stream.
    #[allow(dead_code)]
    pub async fn inline(rules: Option<&str>) -> Self {
        Self::writing(rules, Writes::inline()).await
    }

    /// Redis + an API that writes reports as `writes` says, no router.
    #[allow(dead_code)]
    pub async fn writing(rules: Option<&str>, writes: Writes) -> Self {
        Self::build_full(rules, &[], |_| {}, None, writes).await
    }

    async fn build(rules: Option<&str>) -> Self {
        Self::build_with(rules, &[], |_| {}).await
    }

    async fn build_with(
        rules: Option<&str>,
        extra_keys: &[&keys::TestKey],
        adjust: impl FnOnce(&mut Security),
    ) -> Self {
        Self::build_full(rules, extra_keys, adjust, None, Writes::default()).await
    }

    async fn build_full(
        rules: Option<&str>,
        extra_keys: &[&keys::TestKey],
        adjust: impl FnOnce(&mut Security),
        archive: Option<gridroute_archive::Archive>,
        writes: Writes,
    ) -> Self {
        let redis = LocalRedis::start().expect("redis-server starts");
        // As `gridroute serve` sets it: for the API's reports and the routers' dispatches.
        let store = Store::connect(&redis.url(), "gr", PARTITIONS)
            .await
            .expect("store connects")
            .with_transactions(writes.transactions)
            .with_packed_events(writes.packed_events)
            .with_region_index_depth(writes.region_index_depth);
        store.ensure_groups().await.expect("groups");
        store
            .record_region_index_depth()
            .await
            .expect("depth recorded");
        let mut sources = sample_sources();
        let table = match rules {
            None => gridroute_benches::dawukou(),
            Some(r) => {
                sources.rules = r.to_owned();
                RoutingTable::load(gridroute_core::table::TableSources {
                    grids_geojson: &sources.grids,
                    rules_yaml: r,
                    calendar_yaml: None,
                    regions_geojson: None,
                })
                .expect("test rules load")
            }
        };
        let tables = gridroute_core::table::shared(table);
        store.bootstrap_table(&tables, &sources).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let (api_stop, mut rx) = watch::channel(false);
        let keys = Arc::new(DevKeys::generate().unwrap());
        let mut jwks: serde_json::Value = serde_json::from_str(&keys.jwks()).unwrap();
        for k in extra_keys {
            jwks["keys"].as_array_mut().unwrap().push(k.jwk.clone());
        }
        let mut security = security(&store, jwks.to_string());
        adjust(&mut security);
        if let Identity::Credentials(a) = &security.identity {
            a.tokens.as_ref().unwrap().keys().load().await.unwrap();
        }
        let api_store = if writes.inline {
            store
                .clone()
                .with_inline_route(gridroute_router::inline_route(tables.clone()))
        } else {
            store.clone()
        }
        .with_transactions(writes.transactions)
        .with_packed_events(writes.packed_events)
        .with_region_index_depth(writes.region_index_depth);
        let mut state = ApiState::new(api_store, tables.clone(), rx.clone(), security);
        state.subscribe_block = Duration::from_millis(200);
        state.archive = archive;
        tokio::spawn({
            let (s, t, rx) = (store.clone(), tables.clone(), rx.clone());
            async move { s.sync_tables(t, rx).await }
        });
        let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_addr = http_listener.local_addr().unwrap().to_string();
        tokio::spawn({
            let (state, mut rx) = (state.clone(), rx.clone());
            async move {
                let stop = async move {
                    let _ = rx.wait_for(|s| *s).await;
                };
                gridroute_http::serve(state, http_listener, None, stop)
                    .await
                    .unwrap();
            }
        });
        tokio::spawn(async move {
            let stop = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            gridroute_api::serve(state, listener, stop).await.unwrap();
        });
        Self {
            redis,
            store,
            tables,
            addr,
            http_addr,
            keys,
            tokens: Mutex::new(HashMap::new()),
            api_stop,
            routers: Vec::new(),
        }
    }

    /// A token for `who` (`kind:id`), made once per principal.
    pub fn token(&self, who: &str) -> String {
        let mut tokens = self.tokens.lock().unwrap();
        tokens
            .entry(who.to_owned())
            .or_insert_with(|| {
                self.keys
                    .token(&Principal::parse(who).unwrap(), Duration::from_secs(3600))
            })
            .clone()
    }

    /// `msg` sent as `who` (`kind:id`).
    pub fn as_<T>(&self, who: &str, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.token(who)).parse().unwrap(),
        );
        r
    }

    /// `msg` sent as `who`, with `person` acting.
    pub fn as_person<T>(&self, who: &str, person: &str, msg: T) -> Request<T> {
        let p = Principal::parse(who).unwrap().with_person(person);
        let token = self.keys.token(&p, Duration::from_secs(3600));
        let mut r = Request::new(msg);
        r.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        r
    }

    /// `msg` sent as the principal it names (see [`Acting`]).
    pub fn signed<T: Acting>(&self, msg: T) -> Request<T> {
        let who = msg.principal(&self.table());
        self.as_(&who, msg)
    }

    /// `msg` sent as the principal it names, with `person` acting.
    pub fn signed_by<T: Acting>(&self, msg: T, person: &str) -> Request<T> {
        let who = msg.principal(&self.table());
        self.as_person(&who, person, msg)
    }

    pub fn spawn_router(&mut self, cfg: RouterConfig) {
        let (tx, rx) = watch::channel(false);
        let (s, t) = (self.store.clone(), self.tables.clone());
        // One task for the router and its timer loop, so that killing it stops both.
        let timers = gridroute_router::timers_loop(
            s.clone(),
            t.clone(),
            Duration::from_millis(50),
            rx.clone(),
        );
        let h = tokio::spawn(async move {
            let route = async { gridroute_router::run(s, t, cfg, rx).await.unwrap() };
            tokio::join!(route, timers);
        });
        self.routers.push((tx, h));
    }

    /// Aborts every router task at once, as a killed process would stop: no clean shutdown.
    pub fn kill_routers(&mut self) {
        for (_, h) in self.routers.drain(..) {
            h.abort();
        }
    }

    pub async fn stop_routers(&mut self) {
        for (tx, h) in self.routers.drain(..) {
            let _ = tx.send(true);
            let _ = h.await;
        }
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.addr.clone())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }
    /// GetIncident as `who`.
    #[allow(dead_code)]
    pub async fn get_as(&self, who: &str, id: &str) -> Result<pb::Incident, tonic::Status> {
        self.incidents()
            .await
            .get_incident(self.as_(
                who,
                pb::GetIncidentRequest {
                    incident_id: id.to_owned(),
                },
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn incidents(&self) -> IncidentServiceClient<Channel> {
        IncidentServiceClient::new(self.channel().await)
    }
    pub async fn dispatches(&self) -> DispatchServiceClient<Channel> {
        DispatchServiceClient::new(self.channel().await)
    }
    pub async fn supervision(&self) -> SupervisionServiceClient<Channel> {
        SupervisionServiceClient::new(self.channel().await)
    }
    pub async fn audit(
        &self,
    ) -> gridroute_proto::v1::audit_service_client::AuditServiceClient<Channel> {
        gridroute_proto::v1::audit_service_client::AuditServiceClient::new(self.channel().await)
    }
    pub async fn routing(&self) -> RoutingServiceClient<Channel> {
        RoutingServiceClient::new(self.channel().await)
    }
    pub async fn table_admin(
        &self,
    ) -> gridroute_proto::v1::table_service_client::TableServiceClient<Channel> {
        gridroute_proto::v1::table_service_client::TableServiceClient::new(self.channel().await)
            .max_encoding_message_size(64 << 20)
    }

    /// A department's dispatches from the oldest retained one.
    pub async fn subscribe(&self, department: &str) -> tonic::Streaming<pb::Dispatch> {
        let req = pb::SubscribeRequest {
            department_id: department.into(),
            ..Default::default()
        };
        self.dispatches()
            .await
            .subscribe(self.signed(req))
            .await
            .unwrap()
            .into_inner()
    }

    /// Reports one incident and returns its id.
    pub async fn report(&self, r: pb::ReportIncidentRequest) -> String {
        let r = self.signed(r);
        self.incidents()
            .await
            .report_incident(r)
            .await
            .unwrap()
            .into_inner()
            .incident_id
    }

    /// Reports a batch through the client-streaming call, as the resident app.
    pub async fn report_batch(
        &self,
        items: Vec<pb::ReportIncidentRequest>,
    ) -> pb::ReportIncidentsResponse {
        self.incidents()
            .await
            .report_incidents(self.as_("source_system:resident-app", tokio_stream::iter(items)))
            .await
            .unwrap()
            .into_inner()
    }

    /// Publishes table sources through the API and returns the new version.
    pub async fn publish(&self, sources: Option<pb::TableSources>) -> String {
        let req = pb::PublishTableRequest {
            sources,
            ..Default::default()
        };
        self.table_admin()
            .await
            .publish_table(self.signed(req))
            .await
            .unwrap()
            .into_inner()
            .version
    }

    pub fn table(&self) -> std::sync::Arc<RoutingTable> {
        self.tables.load_full()
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Total entries in a department's dispatch streams over all partitions.
    pub async fn dispatch_count(&self, department: &str) -> u64 {
        let k = self.store.keys().clone();
        self.stream_len(|p| k.dispatch(p, department)).await
    }

    /// Entries in one kind of per-partition stream (`key` names it per partition), summed
    /// over the partitions.
    pub async fn stream_len(&self, key: impl Fn(u16) -> String) -> u64 {
        let mut c = self.redis().await;
        let mut n = 0;
        for p in 0..PARTITIONS {
            let len: u64 = redis::cmd("XLEN")
                .arg(key(p))
                .query_async(&mut c)
                .await
                .unwrap();
            n += len;
        }
        n
    }

    /// An incident's record as stored (`HGETALL`).
    #[allow(dead_code)]
    pub async fn record(&self, id: &str) -> HashMap<String, Vec<u8>> {
        let p = gridroute_store::keys::partition_of(id, PARTITIONS).unwrap();
        redis::cmd("HGETALL")
            .arg(self.store.keys().incident(p, id))
            .query_async(&mut self.redis().await)
            .await
            .unwrap()
    }

    /// Polls GetIncident until the incident reaches `status` (routers run asynchronously).
    pub async fn wait_status(&self, id: &str, status: pb::IncidentStatus) -> pb::Incident {
        let mut c = self.incidents().await;
        for _ in 0..200 {
            let inc = c
                .get_incident(self.signed(pb::GetIncidentRequest {
                    incident_id: id.to_owned(),
                }))
                .await
                .unwrap()
                .into_inner();
            if inc.status == status as i32 {
                return inc;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("incident {id} never reached {status:?}");
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = self.api_stop.send(true);
        for (tx, _) in &self.routers {
            let _ = tx.send(true);
        }
    }
}

/// A grid of the sample whose street is (or is not) the township, with a point inside it.
pub fn grid_point(table: &RoutingTable, township: bool) -> (String, Vec<String>, f64, f64) {
    for g in table.grids.grids() {
        let path: Vec<String> = table
            .regions
            .path(g.region)
            .iter()
            .map(|&r| table.regions.node(r).code.clone())
            .collect();
        let street = table.regions.node(table.regions.find(&path[1]).unwrap());
        if street.name.ends_with('镇') == township {
            let p = g.shape.interior_point().unwrap();
            return (g.code.clone(), path, p.x(), p.y());
        }
    }
    panic!("no such grid");
}

/// A report of `city.sanitation` located by grid code (no geometry to look up), as load and
/// fault tests send them.
pub fn grid_report(request_id: String, grid: &str) -> pb::ReportIncidentRequest {
    pb::ReportIncidentRequest {
        request_id,
        source_system: "resident-app".into(),
        category: "city.sanitation".into(),
        location: Some(pb::Location {
            kind: Some(pb::location::Kind::GridCode(grid.to_owned())),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The sum of the series in a Prometheus exposition `text` that start with `series` (a metric
/// name, or a name with the start of its labels).
#[allow(dead_code)]
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn report(request_id: &str, category: &str, lng: f64, lat: f64) -> pb::ReportIncidentRequest {
    pb::ReportIncidentRequest {
        request_id: request_id.to_owned(),
        source_system: "resident-app".to_owned(),
        category: category.to_owned(),
        location: Some(pb::Location {
            kind: Some(pb::location::Kind::Point(pb::LatLng {
                latitude: lat,
                longitude: lng,
            })),
            ..Default::default()
        }),
        description: "zombie car, flat tyres, two months".to_owned(),
        reporter: Some(pb::ReporterContact {
            name: "马先生".into(),
            phone: "13800000000".into(),
            reporter_id: "r-1".into(),
        }),
        urgency: pb::Urgency::Normal as i32,
        ..Default::default()
    }
}

/// Receives the next dispatch within a few seconds.
pub async fn next_dispatch(stream: &mut tonic::Streaming<pb::Dispatch>) -> pb::Dispatch {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a dispatch arrives")
        .unwrap()
        .expect("stream open")
}
