//! One partition's router: reads its ingest stream through the consumer group, takes over
//! entries abandoned by stopped routers, routes each entry ([`crate::route`]), merges
//! duplicates or dispatches in batches, and moves what it cannot process to the dead-letter
//! stream.

use std::time::{Duration, Instant};

use gridroute_core::{
    RoutingTable,
    table::{DuplicatePolicy, SharedTable},
};
use gridroute_store::{
    Store, StoreError,
    consumer::{Consumer, IngestEntry},
    dispatch::DispatchWrite,
    merge::MergeWrite,
    retry::Retry,
};
use gridroute_telemetry::{names, trace_context};
use tokio::sync::watch;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::{
    RouterConfig,
    route::{DecisionTally, route_entry},
};

/// How long a router waits after Redis refused a write for a reason of its own (full,
/// unreachable) before it goes on.
const STORAGE_BACKOFF: Duration = Duration::from_millis(500);

/// Whether Redis itself refused or could not be reached (as opposed to a problem of the entry).
fn storage_trouble(e: &StoreError) -> bool {
    matches!(e, StoreError::Full(_) | StoreError::Unavailable(_))
}

/// One partition's router.
pub(crate) struct Worker {
    store: Store,
    tables: SharedTable,
    cfg: RouterConfig,
    partition: u16,
    /// The reader, with its own connection; dropped after a connection error so that the next
    /// attempt reconnects (a multiplexed connection does not come back by itself).
    consumer: Option<Consumer>,
    /// Delays between failed reads.
    retry: Retry,
    /// When a write last failed because of Redis itself (out of memory, unreachable): the
    /// deliveries that pile up meanwhile are not the entries' fault, so for a while after it
    /// they do not send an entry to the dead-letter stream.
    storage_trouble: Option<Instant>,
}

impl Worker {
    pub(crate) fn new(
        store: Store,
        tables: SharedTable,
        cfg: RouterConfig,
        partition: u16,
    ) -> Self {
        Self {
            store,
            tables,
            cfg,
            partition,
            consumer: None,
            retry: Retry::new(),
            storage_trouble: None,
        }
    }

    /// Notes a write Redis itself refused (full or unreachable) and waits a moment before going
    /// on, so that a router does not spin on a store that refuses writes.
    async fn storage_failed(&mut self) {
        self.storage_trouble = Some(Instant::now());
        tokio::time::sleep(STORAGE_BACKOFF).await;
    }

    /// Whether a write failed because of Redis recently enough that delivery counts may come
    /// from that and not from the entries (three reclaim periods).
    fn storage_troubled(&self) -> bool {
        self.storage_trouble
            .is_some_and(|t| t.elapsed() < self.cfg.claim_min_idle * 3 + STORAGE_BACKOFF)
    }

    /// The consumer, connecting when there is none.
    async fn consumer(&mut self) -> Result<&mut Consumer, StoreError> {
        if self.consumer.is_none() {
            let c = self
                .store
                .consumer(self.partition, &self.cfg.consumer_name, self.cfg.block)
                .await?;
            debug!(
                partition = self.partition,
                direct = c.direct(),
                "ingest reader connected"
            );
            self.consumer = Some(c);
        }
        self.consumer
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable("no consumer".into()))
    }

    /// Reacts to a failed read: reconnect after connection errors, recreate a lost group.
    async fn failed(&mut self, op: &'static str, e: &StoreError) {
        warn!(op, error = %e, "ingest read failed");
        match e {
            StoreError::Unavailable(_) => self.consumer = None,
            // Redis lost the group (a restart without persistence): recreate it rather than
            // stall; entries written since are read from its start.
            StoreError::NoGroup(_) => match self.store.ensure_groups().await {
                Ok(()) => info!("consumer group recreated"),
                Err(e) => warn!(error = %e, "recreating the consumer group failed"),
            },
            _ => {}
        }
    }

    pub(crate) async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let n = self.cfg.batch_size;
        // Own pending entries first: they are the oldest work this consumer holds.
        loop {
            let read = match self.consumer().await {
                Ok(c) => c.read_own_pending(n).await,
                Err(e) => Err(e),
            };
            match read {
                Ok(entries) if entries.is_empty() => break,
                Ok(entries) => {
                    self.retry.reset();
                    self.process(entries).await;
                }
                Err(e) => {
                    self.failed("read_own_pending", &e).await;
                    if self.backoff(&mut shutdown).await {
                        return;
                    }
                }
            }
        }
        let mut last_claim = Instant::now() - self.cfg.claim_interval;
        while !*shutdown.borrow() {
            if last_claim.elapsed() >= self.cfg.claim_interval {
                last_claim = Instant::now();
                let (min_idle, hour) = (self.cfg.claim_min_idle, Duration::from_secs(3600));
                let claimed = match self.consumer().await {
                    Ok(c) => {
                        let claimed = c.claim_idle(min_idle, n).await;
                        let _ = c.forget_idle_consumers(hour).await;
                        claimed
                    }
                    Err(e) => Err(e),
                };
                match claimed {
                    Ok(entries) if !entries.is_empty() => {
                        info!(count = entries.len(), "took over abandoned entries");
                        self.process(entries).await;
                    }
                    Ok(_) => {}
                    Err(e) => self.failed("claim_idle", &e).await,
                }
            }
            // The read is not cancelled by shutdown: entries it returns are processed, so none
            // is left pending without need. Its block time bounds how long shutdown waits.
            let read = match self.consumer().await {
                Ok(c) => c.read_new(n).await,
                Err(e) => Err(e),
            };
            match read {
                Ok(entries) => {
                    self.retry.reset();
                    let idle = entries.is_empty();
                    if !idle {
                        self.process(entries).await;
                    }
                    self.trim(idle).await;
                }
                Err(e) => {
                    self.failed("read_new", &e).await;
                    if self.backoff(&mut shutdown).await {
                        return;
                    }
                }
            }
        }
    }

    /// Trims the acknowledged entries from the head of the partition's stream when due (see
    /// [`Consumer::trim_if_due`]); a failed trim is left to the next one, since the entries it
    /// would have removed stay acknowledged.
    async fn trim(&mut self, idle: bool) {
        let Some(c) = self.consumer.as_mut().filter(|c| c.trim_due(idle)) else {
            return;
        };
        let span = info_span!("ingest_trim", partition = self.partition, idle);
        match c.trim_if_due(idle).instrument(span).await {
            Ok(0) => {}
            Ok(removed) => debug!(removed, "acknowledged ingest entries trimmed"),
            Err(e) => debug!(error = %e, "trimming acknowledged ingest entries failed"),
        }
    }

    /// Waits before retrying (jittered, growing while failures last); true when shutdown was
    /// requested meanwhile.
    async fn backoff(&mut self, shutdown: &mut watch::Receiver<bool>) -> bool {
        self.retry.wait(shutdown).await
    }

    async fn process(&mut self, entries: Vec<IngestEntry>) {
        let table = self.tables.load_full();
        // Redis' clock without a round trip (a `TIME` per batch was one more round trip per
        // incident at moderate rates), never before a report of the batch: the cached reading
        // is accurate to half a round trip.
        let newest_report = entries
            .iter()
            .filter_map(|e| e.text("t")?.parse::<i64>().ok())
            .max()
            .unwrap_or(0);
        let now = match self.store.clock_ms().await {
            Ok(t) => t.max(newest_report),
            Err(e) => {
                // Left pending: claimed again after the idle time, counted as a delivery.
                warn!(error = %e, count = entries.len(), "redis time unavailable; batch left pending");
                if storage_trouble(&e) {
                    self.storage_failed().await;
                }
                return;
            }
        };
        let mut writes = Vec::with_capacity(entries.len());
        let mut reported = Vec::with_capacity(entries.len());
        // One `route` span per entry, child of the reporter's trace (the ingest entry's
        // `tp`), and one `dispatch` span under it that lasts until the pipeline answers; its
        // context travels to the subscribers. Only when spans are exported: otherwise they
        // carry nothing anywhere and cost a sixth of the router's CPU per incident.
        let traced = trace_context::exporting();
        let mut spans = Vec::with_capacity(entries.len());
        let mut tally = DecisionTally::default();
        for entry in &entries {
            if entry.deliveries > self.cfg.max_deliveries && !self.storage_troubled() {
                self.dead_letter(
                    entry,
                    "max_deliveries",
                    &format!("failed {} deliveries", entry.deliveries),
                )
                .await;
                continue;
            }
            let span = if traced {
                let span = info_span!(
                    "route",
                    incident = entry.text("id").unwrap_or(""),
                    partition = entry.partition
                );
                trace_context::set_parent(&span, entry.text("tp").unwrap_or(""));
                span
            } else {
                tracing::Span::none()
            };
            match span.in_scope(|| route_entry(&table, entry, now, &mut tally)) {
                Ok((mut w, reported_ms, dup)) => {
                    if let Some(policy) = dup {
                        match self
                            .try_merge(&table, &w, reported_ms, &policy)
                            .instrument(span.clone())
                            .await
                        {
                            Ok(true) => continue,
                            Ok(false) => {}
                            // Left pending: delivered again, and merged or dispatched then.
                            Err(e) => {
                                warn!(entry = %w.entry_id, error = %e, "duplicate check failed; entry left pending");
                                continue;
                            }
                        }
                    }
                    if traced {
                        let dispatch =
                            info_span!(parent: &span, "dispatch", department = %w.department);
                        w.traceparent = trace_context::traceparent(&dispatch);
                        spans.push((span, dispatch));
                    }
                    writes.push(w);
                    reported.push(reported_ms);
                }
                Err(why) => self.dead_letter(entry, "undecodable", &why).await,
            }
        }
        tally.record();
        if !writes.is_empty() {
            metrics::histogram!(names::DISPATCH_BATCH_SIZE).record(writes.len() as f64);
        }
        let mut refused_by_storage = false;
        let done = match self.consumer.as_mut() {
            Some(c) => c.dispatch_batch(&writes).await,
            None => self.store.dispatch_batch(&writes).await,
        };
        match done {
            Ok(done) => {
                // Metrics looked up once per batch, not per incident (see `DecisionTally`).
                let latency = metrics::histogram!(names::REPORT_TO_DISPATCH_SECONDS);
                let mut outcomes = [("dispatched", 0), ("already_dispatched", 0), ("failed", 0)];
                for ((result, reported_ms), w) in done.iter().zip(&reported).zip(&writes) {
                    let outcome = match result {
                        Ok(true) => {
                            latency.record((now - reported_ms).max(0) as f64 / 1000.0);
                            0
                        }
                        Ok(false) => 1,
                        // Left pending: delivered again later, dead-lettered after too many tries.
                        Err(e) => {
                            warn!(entry = %w.entry_id, error = %e, "dispatch failed; entry left pending");
                            refused_by_storage |= storage_trouble(e);
                            2
                        }
                    };
                    outcomes[outcome].1 += 1;
                }
                for (outcome, n) in outcomes {
                    if n > 0 {
                        metrics::counter!(names::DISPATCHES_TOTAL, "outcome" => outcome)
                            .increment(n);
                    }
                }
                debug!(count = done.len(), "batch dispatched");
            }
            // Nothing was acknowledged: the entries stay pending and are claimed again.
            Err(e) => {
                warn!(error = %e, count = writes.len(), "dispatch failed; entries left pending");
                refused_by_storage = storage_trouble(&e);
                // The call may have gone out on the consumer's own connection: connect again.
                if matches!(e, StoreError::Unavailable(_)) {
                    self.consumer = None;
                }
            }
        }
        drop(spans);
        if refused_by_storage {
            self.storage_failed().await;
        }
    }

    /// Merges a duplicate into the nearest open incident that still takes it; `false` when there
    /// is none.
    async fn try_merge(
        &self,
        table: &RoutingTable,
        w: &DispatchWrite,
        reported_ms: i64,
        policy: &DuplicatePolicy,
    ) -> Result<bool, StoreError> {
        let Some((category, x, y)) = &w.duplicates else {
            return Ok(false);
        };
        let candidates = self
            .store
            .duplicate_candidates(category, *x, *y, policy.within_m, 4)
            .await?;
        for into in candidates.into_iter().filter(|c| *c != w.incident_id) {
            let m = MergeWrite {
                write: w.clone(),
                reported_ms,
                into,
                window_ms: policy.window_ms,
            };
            if self.store.merge(&m, table).await? {
                metrics::counter!(names::DUPLICATES_MERGED_TOTAL).increment(1);
                info!(incident = %w.incident_id, into = %m.into, "duplicate merged");
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn dead_letter(&self, entry: &IngestEntry, reason: &'static str, detail: &str) {
        match self.store.dead_letter(entry, reason, detail).await {
            Ok(()) => {
                metrics::counter!(names::DEAD_LETTERS_TOTAL, "reason" => reason).increment(1);
                warn!(entry = %entry.entry_id, reason, detail, "entry moved to the dead-letter stream");
            }
            Err(e) => {
                warn!(entry = %entry.entry_id, error = %e, "dead-lettering failed; entry left pending")
            }
        }
    }
}
