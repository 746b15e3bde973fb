//! Firing due SLA timers (warnings, urges, supervision, public reports, overdue acceptance and
//! verification): the store claims them, the core plans what each does.

use std::time::{Duration, Instant};

use gridroute_core::table::SharedTable;
use gridroute_store::Store;
use gridroute_telemetry::names;
use tokio::sync::watch;
use tracing::{Instrument, debug, info_span};

/// Fires due SLA timers of every partition with the table in force until shutdown. Every
/// replica runs it: the claim script hands each due timer to one replica, so replicas share
/// the work without coordination.
pub async fn timers_loop(
    store: Store,
    tables: SharedTable,
    every: Duration,
    shutdown: watch::Receiver<bool>,
) {
    fire_timers(store, tables, every, shutdown)
        .instrument(info_span!("timers"))
        .await;
}

async fn fire_timers(
    store: Store,
    tables: SharedTable,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    const BATCH: usize = 512;
    let mut last_gauge = Instant::now() - Duration::from_secs(60);
    loop {
        let mut busy = false;
        let table = tables.load_full();
        for p in 0..store.keys().partitions() {
            match store.fire_due_timers(p, BATCH, &table).await {
                Ok(fired) => {
                    busy |= fired.len() == BATCH;
                    for f in &fired {
                        let kind = f
                            .kind
                            .trim_end_matches(|c: char| c.is_ascii_digit())
                            .to_owned();
                        metrics::counter!(names::TIMERS_FIRED_TOTAL, "kind" => kind, "department" => f.department.clone())
                            .increment(1);
                        metrics::histogram!(names::TIMER_LATENESS_SECONDS)
                            .record(f.lateness_ms.max(0) as f64 / 1000.0);
                    }
                    if !fired.is_empty() {
                        debug!(partition = p, count = fired.len(), "timers fired");
                    }
                }
                Err(e) => debug!(error = %e, "firing timers failed"),
            }
        }
        if last_gauge.elapsed() >= Duration::from_secs(5) {
            last_gauge = Instant::now();
            if let Ok(n) = store.pending_timers().await {
                metrics::gauge!(names::TIMERS_PENDING).set(n as f64);
            }
        }
        if busy {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}
