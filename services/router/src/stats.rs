//! The ingest gauges: lag, pending, stream length and dead letters, summed over partitions.

use std::time::Duration;

use gridroute_store::Store;
use gridroute_telemetry::names;
use tokio::sync::watch;
use tracing::debug;

/// Publishes ingest lag, pending and dead-letter counts as gauges until shutdown.
pub async fn stats_loop(store: Store, every: Duration, mut shutdown: watch::Receiver<bool>) {
    loop {
        match store.ingest_stats().await {
            Ok(s) => {
                metrics::gauge!(names::INGEST_LAG).set(s.lag as f64);
                metrics::gauge!(names::INGEST_PENDING).set(s.pending as f64);
                metrics::gauge!(names::INGEST_LENGTH).set(s.length as f64);
                metrics::gauge!(names::DEAD_LETTER_LENGTH).set(s.dead_letters as f64);
            }
            Err(e) => debug!(error = %e, "ingest stats unavailable"),
        }
        match store.memory_stats().await {
            Ok((used, max)) => {
                metrics::gauge!(names::REDIS_USED_MEMORY).set(used as f64);
                metrics::gauge!(names::REDIS_MAX_MEMORY).set(max as f64);
            }
            Err(e) => debug!(error = %e, "redis memory unavailable"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
    }
}
