//! Test harness: a private redis-server on a free port, the real store, router workers and the
//! gRPC API on a real socket (port 0), all on the Dawukou sample table.

#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use geo::InteriorPoint;
use gridroute_api::ApiState;
use gridroute_core::{RoutingTable, table::SharedTable};
use gridroute_proto::v1::{
    self as pb, dispatch_service_client::DispatchServiceClient,
    incident_service_client::IncidentServiceClient, routing_service_client::RoutingServiceClient,
    supervision_service_client::SupervisionServiceClient,
};
use gridroute_router::RouterConfig;
use gridroute_store::{Store, local::LocalRedis};
use tokio::{sync::watch, task::JoinHandle};
use tonic::transport::Channel;

pub mod process;

pub const PARTITIONS: u16 = 4;

pub struct Env {
    pub redis: LocalRedis,
    pub store: Store,
    pub tables: SharedTable,
    pub addr: String,
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

    async fn build(rules: Option<&str>) -> Self {
        let redis = LocalRedis::start().expect("redis-server starts");
        let store = Store::connect(&redis.url(), "gr", PARTITIONS)
            .await
            .expect("store connects");
        store.ensure_groups().await.expect("groups");
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
        let mut state = ApiState::new(store.clone(), tables.clone(), rx.clone());
        state.subscribe_block = Duration::from_millis(200);
        tokio::spawn({
            let (s, t, rx) = (store.clone(), tables.clone(), rx.clone());
            async move { s.sync_tables(t, rx).await }
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
            api_stop,
            routers: Vec::new(),
        }
    }

    pub fn spawn_router(&mut self, cfg: RouterConfig) {
        let (tx, rx) = watch::channel(false);
        let (s, t) = (self.store.clone(), self.tables.clone());
        // One task for the router and its timer loop, so that killing it stops both.
        let timers =
            gridroute_router::timers_loop(s.clone(), Duration::from_millis(50), rx.clone());
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
    pub async fn incidents(&self) -> IncidentServiceClient<Channel> {
        IncidentServiceClient::new(self.channel().await)
    }
    pub async fn dispatches(&self) -> DispatchServiceClient<Channel> {
        DispatchServiceClient::new(self.channel().await)
    }
    pub async fn supervision(&self) -> SupervisionServiceClient<Channel> {
        SupervisionServiceClient::new(self.channel().await)
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
            .subscribe(req)
            .await
            .unwrap()
            .into_inner()
    }

    /// Reports one incident and returns its id.
    pub async fn report(&self, r: pb::ReportIncidentRequest) -> String {
        self.incidents()
            .await
            .report_incident(r)
            .await
            .unwrap()
            .into_inner()
            .incident_id
    }

    /// Publishes table sources through the API and returns the new version.
    pub async fn publish(&self, sources: Option<pb::TableSources>) -> String {
        let req = pb::PublishTableRequest {
            sources,
            ..Default::default()
        };
        self.table_admin()
            .await
            .publish_table(req)
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
        let mut c = self.redis().await;
        let mut n = 0;
        for p in 0..PARTITIONS {
            let len: u64 = redis::cmd("XLEN")
                .arg(self.store.keys().dispatch(p, department))
                .query_async(&mut c)
                .await
                .unwrap();
            n += len;
        }
        n
    }

    /// Polls GetIncident until the incident reaches `status` (routers run asynchronously).
    pub async fn wait_status(&self, id: &str, status: pb::IncidentStatus) -> pb::Incident {
        let mut c = self.incidents().await;
        for _ in 0..200 {
            let inc = c
                .get_incident(pb::GetIncidentRequest {
                    incident_id: id.to_owned(),
                })
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
