//! Router workers: stateless, any number per deployment.
//!
//! Each process runs one worker per partition. A worker first drains the entries it already
//! owns (after a restart under the same consumer name), then reads new entries in batches
//! through the `routers` consumer group, and every [`RouterConfig::claim_interval`] takes over
//! entries left pending by routers that stopped. Each entry is routed against the table in
//! memory and dispatched by one script that also acknowledges it, so a router killed at any
//! point causes a redelivery, never a lost or doubled dispatch. Entries that cannot be decoded,
//! or that failed [`RouterConfig::max_deliveries`] times, go to the dead-letter stream.

use std::time::{Duration, Instant};

use gridroute_core::{
    RouteTarget, RoutingTable,
    sla::Escalation,
    table::{DuplicatePolicy, SharedTable},
};
use gridroute_proto::v1 as pb;
use gridroute_store::{
    Store, StoreError, codec,
    consumer::{Consumer, DispatchWrite, IngestEntry, MergeWrite},
    keys,
};
use gridroute_telemetry::{names, trace_context};
use prost::Message;
use tokio::sync::watch;
use tracing::{Instrument, debug, info, info_span, warn};

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
    while let Err(e) = store.ensure_groups().await {
        warn!(error = %e, "router waiting for redis");
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown_wait.changed() => return Ok(()),
        }
    }
    let mut workers = tokio::task::JoinSet::new();
    for p in 0..store.keys().partitions() {
        let worker = Worker {
            store: store.clone(),
            tables: tables.clone(),
            cfg: cfg.clone(),
            partition: p,
            consumer: None,
        };
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
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Fires due SLA timers of every partition until shutdown. Every replica runs it: the firing
/// script claims each timer atomically, so replicas share the work without coordination.
pub async fn timers_loop(store: Store, every: Duration, shutdown: watch::Receiver<bool>) {
    fire_timers(store, every, shutdown)
        .instrument(info_span!("timers"))
        .await;
}

async fn fire_timers(store: Store, every: Duration, mut shutdown: watch::Receiver<bool>) {
    const BATCH: usize = 512;
    let mut last_gauge = Instant::now() - Duration::from_secs(60);
    loop {
        let mut busy = false;
        for p in 0..store.keys().partitions() {
            match store.fire_due_timers(p, BATCH).await {
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

struct Worker {
    store: Store,
    tables: SharedTable,
    cfg: RouterConfig,
    partition: u16,
    /// The reader, with its own connection; dropped after a connection error so that the next
    /// attempt reconnects (a multiplexed connection does not come back by itself).
    consumer: Option<Consumer>,
}

impl Worker {
    /// The consumer, connecting when there is none.
    async fn consumer(&mut self) -> Result<&mut Consumer, StoreError> {
        if self.consumer.is_none() {
            let c = self
                .store
                .consumer(self.partition, &self.cfg.consumer_name, self.cfg.block)
                .await?;
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

    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let n = self.cfg.batch_size;
        // Own pending entries first: they are the oldest work this consumer holds.
        loop {
            let read = match self.consumer().await {
                Ok(c) => c.read_own_pending(n).await,
                Err(e) => Err(e),
            };
            match read {
                Ok(entries) if entries.is_empty() => break,
                Ok(entries) => self.process(entries).await,
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
                    if !entries.is_empty() {
                        self.process(entries).await;
                    }
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

    /// Waits a little before retrying; true when shutdown was requested meanwhile.
    async fn backoff(&self, shutdown: &mut watch::Receiver<bool>) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => *shutdown.borrow(),
            _ = shutdown.changed() => true,
        }
    }

    async fn process(&mut self, entries: Vec<IngestEntry>) {
        let table = self.tables.load_full();
        let now = match self.store.server_time_ms().await {
            Ok(t) => t,
            Err(e) => {
                // Left pending: claimed again after the idle time, counted as a delivery.
                warn!(error = %e, count = entries.len(), "redis time unavailable; batch left pending");
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
        for entry in &entries {
            if entry.deliveries > self.cfg.max_deliveries {
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
            match span.in_scope(|| route_entry(&table, entry, now)) {
                Ok((mut w, reported_ms, dup)) => {
                    if let Some(policy) = dup {
                        match self
                            .try_merge(&w, reported_ms, &policy)
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
        if !writes.is_empty() {
            metrics::histogram!(names::DISPATCH_BATCH_SIZE).record(writes.len() as f64);
        }
        match self.store.dispatch_batch(&writes).await {
            Ok(done) => {
                for ((result, reported_ms), w) in done.iter().zip(&reported).zip(&writes) {
                    let outcome = match result {
                        Ok(true) => {
                            let latency = (now - reported_ms).max(0) as f64 / 1000.0;
                            metrics::histogram!(names::REPORT_TO_DISPATCH_SECONDS).record(latency);
                            "dispatched"
                        }
                        Ok(false) => "already_dispatched",
                        // Left pending: delivered again later, dead-lettered after too many tries.
                        Err(e) => {
                            warn!(entry = %w.entry_id, error = %e, "dispatch failed; entry left pending");
                            "failed"
                        }
                    };
                    metrics::counter!(names::DISPATCHES_TOTAL, "outcome" => outcome).increment(1);
                }
                debug!(count = done.len(), "batch dispatched");
            }
            // Nothing was acknowledged: the entries stay pending and are claimed again.
            Err(e) => {
                warn!(error = %e, count = writes.len(), "dispatch failed; entries left pending")
            }
        }
        drop(spans);
    }

    /// Merges a duplicate into the nearest open incident that still takes it; `false` when there
    /// is none.
    async fn try_merge(
        &self,
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
            if self.store.merge(&m).await? {
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

/// Routes one ingest entry into the write that dispatches it, with its report time and, when
/// its category has duplicate detection, the policy. `Err` is a permanent problem with the
/// entry itself (it goes to the dead-letter stream).
pub fn route_entry(
    table: &RoutingTable,
    entry: &IngestEntry,
    now_ms: i64,
) -> Result<(DispatchWrite, i64, Option<DuplicatePolicy>), String> {
    let id = entry.text("id").ok_or("no incident id")?;
    if keys::partition_of(id, u16::MAX).is_none_or(|p| p != entry.partition) {
        return Err(format!(
            "incident id {id:?} does not belong to partition {}",
            entry.partition
        ));
    }
    let generation = entry.text("g").ok_or("no route generation")?;
    let reported_ms: i64 = entry
        .text("t")
        .and_then(|t| t.parse().ok())
        .ok_or("no report time")?;
    let bytes = entry.fields.get("r").ok_or("no report")?;
    let report = pb::ReportIncidentRequest::decode(bytes.as_slice())
        .map_err(|e| format!("report does not decode: {e}"))?;
    let excluded: Vec<_> = entry
        .text("x")
        .unwrap_or("")
        .split(',')
        .filter_map(|d| table.department(d))
        .collect();
    let q = codec::route_query(now_ms, &report, &excluded, table.crs)
        .ok_or("report has no location")?;
    if !gridroute_core::category::is_valid(q.category) {
        return Err(format!("category {:?} is not valid", q.category));
    }
    let started = Instant::now();
    let d = table.route(&q);
    metrics::histogram!(names::ROUTE_DECISION_SECONDS).record(started.elapsed().as_secs_f64());
    metrics::counter!(names::ROUTED_TOTAL, "outcome" => d.outcome.as_str()).increment(1);

    let decision = codec::decision_message(table, &q, &d);
    let policy = &table.sla_policies[d.sla as usize];
    let deadlines = policy.deadlines(&table.calendar, now_ms);
    let supervisors: Vec<String> = table
        .supervisors(d.grid)
        .into_iter()
        .filter(|&c| c != d.department)
        .map(|c| table.departments[c as usize].id.clone())
        .collect();
    let timers = policy.timers(
        &table.calendar,
        now_ms,
        Some(deadlines.accept_by),
        deadlines.resolve_by,
        &Escalation {
            primary: &decision.department_id,
            supervisors: &supervisors,
            public: &table.departments[table.default_command_centre as usize].id,
        },
    );
    // Duplicate detection needs a point; an un-merged incident (`nm`) is never merged again.
    let duplicates = match (table.duplicate_policy(q.category), q.target) {
        (Some(policy), RouteTarget::Point { lng, lat, crs, .. }) if entry.text("nm").is_none() => {
            let (x, y) = gridroute_core::crs::convert(crs, table.crs, lng, lat);
            Some((policy.clone(), x, y))
        }
        _ => None,
    };
    let decision_bytes = decision.encode_to_vec();
    let dispatch = |department: &str, role: pb::DispatchRole| {
        let head = pb::Dispatch {
            cursor: String::new(),
            incident_id: id.to_owned(),
            department_id: department.to_owned(),
            role: role as i32,
            decision: None,
            report: None,
            dispatched_time: Some(codec::timestamp(now_ms)),
            accept_deadline: (role == pb::DispatchRole::Primary)
                .then(|| codec::timestamp(deadlines.accept_by)),
            resolve_deadline: Some(codec::timestamp(deadlines.resolve_by)),
            kind: pb::DispatchKind::New as i32,
            note: String::new(),
            traceparent: String::new(),
        };
        dispatch_bytes(&head, &decision_bytes, bytes)
    };
    let mut deliveries = vec![(
        decision.department_id.clone(),
        dispatch(&decision.department_id, pb::DispatchRole::Primary),
    )];
    for co in &decision.co_department_ids {
        if *co != decision.department_id {
            deliveries.push((co.clone(), dispatch(co, pb::DispatchRole::CoHandler)));
        }
    }
    let summary = match &decision.rule_id {
        r if r.is_empty() => format!(
            "to {} ({}, table {})",
            decision.department_id,
            d.outcome.as_str(),
            table.version
        ),
        r => format!(
            "to {} by rule {r} (table {})",
            decision.department_id, table.version
        ),
    };
    Ok((
        DispatchWrite {
            partition: entry.partition,
            entry_id: entry.entry_id.clone(),
            generation: generation.to_owned(),
            incident_id: id.to_owned(),
            department: decision.department_id.clone(),
            region_codes: decision
                .region_path
                .iter()
                .map(|r| r.code.clone())
                .collect(),
            decision: decision_bytes,
            dispatched_ms: now_ms,
            accept_due_ms: deadlines.accept_by,
            resolve_due_ms: deadlines.resolve_by,
            event: codec::event_bytes("dispatched", "router", &summary, &decision.department_id),
            deliveries,
            timers,
            duplicates: duplicates
                .as_ref()
                .map(|(p, x, y)| (p.category.clone(), *x, *y)),
            traceparent: String::new(),
        },
        reported_ms,
        duplicates.map(|(p, _, _)| p),
    ))
}

/// A dispatch's encoding from its small fields and the decision and report already encoded
/// (the report as it arrived in the ingest entry). Protobuf fields may come in any order and an
/// embedded message is a length-delimited field, so this decodes exactly as the whole message
/// would, without cloning and re-encoding its two largest parts for every delivery.
fn dispatch_bytes(head: &pb::Dispatch, decision: &[u8], report: &[u8]) -> Vec<u8> {
    use prost::encoding::{WireType, encode_key, encode_varint};
    let mut buf = Vec::with_capacity(head.encoded_len() + decision.len() + report.len() + 8);
    for (tag, field) in [(5, decision), (6, report)] {
        encode_key(tag, WireType::LengthDelimited, &mut buf);
        encode_varint(field.len() as u64, &mut buf);
        buf.extend_from_slice(field);
    }
    head.encode_raw(&mut buf);
    buf
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dispatch_assembled_from_encoded_parts_decodes_as_the_whole_message() {
        let decision = pb::RouteDecision {
            department_id: "property-office".into(),
            reasons: vec!["rule vehicle-abandoned matched".into()],
            region_path: vec![pb::RegionRef {
                code: "640202".into(),
                name: "大武口区".into(),
                level: "district".into(),
            }],
            ..Default::default()
        };
        let report = pb::ReportIncidentRequest {
            request_id: "r-1".into(),
            source_system: "app".into(),
            category: "city.vehicle.abandoned".into(),
            description: "zombie car".into(),
            ..Default::default()
        };
        let whole = pb::Dispatch {
            incident_id: "01J-0".into(),
            department_id: "property-office".into(),
            role: pb::DispatchRole::Primary as i32,
            decision: Some(decision.clone()),
            report: Some(report.clone()),
            dispatched_time: Some(codec::timestamp(1_700_000_000_000)),
            kind: pb::DispatchKind::New as i32,
            ..Default::default()
        };
        let head = pb::Dispatch {
            decision: None,
            report: None,
            ..whole.clone()
        };
        let bytes = dispatch_bytes(&head, &decision.encode_to_vec(), &report.encode_to_vec());
        assert_eq!(pb::Dispatch::decode(bytes.as_slice()), Ok(whole));
    }
}
