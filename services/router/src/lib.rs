//! Router workers: stateless, any number per deployment.
//!
//! Each process runs one worker per partition. A worker first drains the entries it already
//! owns (after a restart under the same consumer name), then reads new entries in batches
//! through the `routers` consumer group, and every [`RouterConfig::claim_interval`] takes over
//! entries left pending by routers that stopped. Each entry is routed against the table in
//! memory and dispatched by one script that also acknowledges it, so a router killed at any
//! point causes a redelivery, never a lost or doubled dispatch. Entries that cannot be decoded,
//! or that failed [`RouterConfig::max_deliveries`] times, go to the dead-letter stream.
//!
//! Layout:
//! - this file: settings and [`run`], which starts the workers;
//! - [`worker`]: one partition's loop (read, claim, route, merge or dispatch, dead letters);
//! - [`route`]: the pure step from an ingest entry to the write that dispatches it (no I/O);
//! - [`timers`]: firing due SLA timers;
//! - [`stats`]: the ingest gauges;
//! - [`retention`]: erasing reporters' contact details after the retention period;
//! - [`archive`]: moving closed incidents to the archive after the hot period.

use std::time::Duration;

use gridroute_core::table::SharedTable;
use gridroute_store::{Store, StoreError, retry::Retry};
use tokio::sync::watch;
use tracing::{Instrument, info, info_span, warn};

pub mod archive;
pub mod retention;
pub mod route;
pub mod stats;
pub mod timers;
pub mod worker;

pub use archive::{ArchiveSettings, archive_loop};
pub use retention::{retention_loop, stream_retention_loop};
pub use route::{DecisionTally, Routed, inline_route, route_entry, route_report};
pub use stats::stats_loop;
pub use timers::timers_loop;
use worker::Worker;

/// Router settings.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// Consumer name in the group; unique per process. A stable name (a StatefulSet pod name)
    /// lets a restarted router finish its own pending entries at once.
    pub consumer_name: String,
    /// Entries read per batch: large enough to amortise the round trip, small enough that one
    /// batch's dispatch pipeline stays well under Redis's latency budget.
    pub batch_size: usize,
    /// How long one read blocks when the stream is empty; also bounds shutdown latency.
    pub block: Duration,
    /// How often to look for entries abandoned by other routers.
    pub claim_interval: Duration,
    /// How long an entry must have been pending before another router takes it over. Must be
    /// well above the time a healthy router needs for one batch.
    pub claim_min_idle: Duration,
    /// Deliveries after which an entry that still fails goes to the dead-letter stream.
    pub max_deliveries: u64,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            consumer_name: default_consumer_name(),
            batch_size: 256,
            block: Duration::from_secs(1),
            claim_interval: Duration::from_secs(5),
            claim_min_idle: Duration::from_secs(30),
            max_deliveries: 5,
        }
    }
}

/// `host-pid`: unique per process on one host.
pub fn default_consumer_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "router".to_owned());
    format!("{host}-{}", std::process::id())
}

/// Runs one worker per partition until `shutdown` turns true; in-flight batches finish first.
pub async fn run(
    store: Store,
    tables: SharedTable,
    cfg: RouterConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<(), StoreError> {
    // Start-up waits for Redis rather than failing: a router that gave up would leave the
    // process serving the API while nothing routes.
    let mut shutdown_wait = shutdown.clone();
    let mut retry = Retry::new();
    while let Err(e) = store.ensure_groups().await {
        warn!(error = %e, "router waiting for redis");
        if retry.wait(&mut shutdown_wait).await {
            return Ok(());
        }
    }
    let mut workers = tokio::task::JoinSet::new();
    for p in 0..store.keys().partitions() {
        let worker = Worker::new(store.clone(), tables.clone(), cfg.clone(), p);
        let shutdown = shutdown.clone();
        workers.spawn(
            worker
                .run(shutdown)
                .instrument(info_span!("router", partition = p)),
        );
    }
    info!(consumer = %cfg.consumer_name, partitions = store.keys().partitions(), "router started");
    while workers.join_next().await.is_some() {}
    info!("router stopped");
    Ok(())
}
