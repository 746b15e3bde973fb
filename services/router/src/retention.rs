//! Erasing reporters' contact details a retention period after their incidents closed.

use std::time::Duration;

use gridroute_store::Store;
use tokio::sync::watch;
use tracing::{Instrument, debug, info, info_span};

/// Erases reporters' contact details `retention` after their incidents closed (PIPL: kept no
/// longer than needed), looking every `every`; stops when `shutdown` turns true. Every router
/// sweeps; the erase script makes two sweeps of one incident erase once.
pub async fn retention_loop(
    store: Store,
    retention: Duration,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let retention_ms = retention.as_millis().min(i64::MAX as u128) as i64;
    async move {
        loop {
            match store.erase_expired_contacts(retention_ms).await {
                Ok(0) => {}
                Ok(n) => info!(
                    erased = n,
                    "reporters' contact details erased after retention"
                ),
                Err(e) => debug!(error = %e, "contact retention sweep failed"),
            }
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }
    .instrument(info_span!("retention"))
    .await;
}
