//! Erasing reporters' contact details a retention period after their incidents closed, and
//! trimming dispatch and events streams to their retention window.

use std::{future::Future, time::Duration};

use gridroute_core::table::SharedTable;
use gridroute_store::Store;
use tokio::sync::watch;
use tracing::{Instrument, debug, info, info_span};

/// Runs `sweep` now and every `every` after, until `shutdown` turns true.
pub(crate) async fn sweep_every<F, Fut>(
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
    mut sweep: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        sweep().await;
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

pub(crate) fn millis(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// Erases reporters' contact details `retention` after their incidents closed (PIPL: kept no
/// longer than needed), looking every `every`; stops when `shutdown` turns true. Every router
/// sweeps; the erase script makes two sweeps of one incident erase once.
pub async fn retention_loop(
    store: Store,
    retention: Duration,
    every: Duration,
    shutdown: watch::Receiver<bool>,
) {
    let retention_ms = millis(retention);
    sweep_every(every, shutdown, || async {
        match store.erase_expired_contacts(retention_ms).await {
            Ok(0) => {}
            Ok(n) => info!(
                erased = n,
                "reporters' contact details erased after retention"
            ),
            Err(e) => debug!(error = %e, "contact retention sweep failed"),
        }
    })
    .instrument(info_span!("retention"))
    .await;
}

/// Trims the events streams and every department's dispatch streams to the last `retention`,
/// looking every `every`; stops when `shutdown` turns true. Every router trims (trimming twice
/// removes nothing more). A department removed from the table keeps its streams until they are
/// deleted by hand or the department comes back.
pub async fn stream_retention_loop(
    store: Store,
    tables: SharedTable,
    retention: Duration,
    every: Duration,
    shutdown: watch::Receiver<bool>,
) {
    let retention_ms = millis(retention);
    sweep_every(every, shutdown, || async {
        let departments: Vec<String> = tables
            .load()
            .departments
            .iter()
            .map(|d| d.id.clone())
            .collect();
        match store.trim_streams(retention_ms, &departments).await {
            Ok(0) => {}
            Ok(n) => debug!(removed = n, "stream entries past retention trimmed"),
            Err(e) => debug!(error = %e, "stream retention sweep failed"),
        }
    })
    .instrument(info_span!("stream_retention"))
    .await;
}
