//! The router's side of the ingest streams: one consumer group (`routers`) per partition
//! stream; reads in batches; takes over entries left pending by routers that stopped
//! (XAUTOCLAIM); dispatches routed entries with one script call per batch and partition; and
//! moves entries that cannot be processed to the dead-letter stream.

use std::{borrow::Cow, collections::HashMap, time::Duration};

use redis::{
    Value,
    streams::{
        StreamAutoClaimReply, StreamId, StreamInfoGroupsReply, StreamPendingCountReply,
        StreamReadReply,
    },
};

use crate::{Result, Store, StoreError, keys::ROUTER_GROUP, scripts};

/// One entry read from an ingest stream.
#[derive(Debug, Clone)]
pub struct IngestEntry {
    /// Partition of the stream.
    pub partition: u16,
    /// Stream entry id.
    pub entry_id: String,
    /// How many times the entry has been delivered (1 on first delivery).
    pub deliveries: u64,
    /// Raw fields as written.
    pub fields: HashMap<String, Vec<u8>>,
}

impl IngestEntry {
    fn from_stream_id(partition: u16, s: StreamId, deliveries: u64) -> Self {
        let fields = s
            .map
            .into_iter()
            .filter_map(|(k, v)| match v {
                Value::BulkString(b) => Some((k, b)),
                Value::SimpleString(t) => Some((k, t.into_bytes())),
                _ => None,
            })
            .collect();
        Self {
            partition,
            entry_id: s.id,
            deliveries,
            fields,
        }
    }

    /// A text field.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.fields
            .get(name)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The fields in a stable order, for the dead-letter copy.
    pub fn fields_dump(&self) -> Vec<u8> {
        let mut names: Vec<&String> = self.fields.keys().collect();
        names.sort();
        let mut out = Vec::new();
        for n in names {
            out.extend_from_slice(n.as_bytes());
            out.push(b'=');
            out.extend_from_slice(&self.fields[n]);
            out.push(b'\n');
        }
        out
    }
}

/// Everything one dispatch writes.
#[derive(Debug, Clone)]
pub struct DispatchWrite {
    /// Partition.
    pub partition: u16,
    /// Ingest entry id to acknowledge.
    pub entry_id: String,
    /// Route generation the entry carried.
    pub generation: String,
    /// Incident id.
    pub incident_id: String,
    /// Primary department.
    pub department: String,
    /// Encoded `RouteDecision`.
    pub decision: Vec<u8>,
    /// Region codes of the grid path, for the region indexes.
    pub region_codes: Vec<String>,
    /// Dispatch time (Redis clock, ms).
    pub dispatched_ms: i64,
    /// Accept deadline (ms).
    pub accept_due_ms: i64,
    /// Resolve deadline (ms).
    pub resolve_due_ms: i64,
    /// Encoded timeline event.
    pub event: Vec<u8>,
    /// One (department, encoded `Dispatch`) per receiving department, primary first.
    pub deliveries: Vec<(String, Vec<u8>)>,
    /// The SLA timers of the dispatch.
    pub timers: Vec<gridroute_core::sla::Timer>,
    /// When the category has duplicate detection: its category key and the point (lng, lat).
    pub duplicates: Option<(String, f64, f64)>,
    /// W3C traceparent of the dispatch ('' = none), carried to the subscribers.
    pub traceparent: String,
}

/// What a duplicate report is merged into.
#[derive(Debug, Clone)]
pub struct MergeWrite {
    /// The routed entry of the duplicate.
    pub write: DispatchWrite,
    /// Its report time (ms).
    pub reported_ms: i64,
    /// The open incident to merge into.
    pub into: String,
    /// Duplicate window of the policy (ms).
    pub window_ms: i64,
}

/// Longest retained history of one department's dispatch stream in one partition. Subscribers
/// that fall further behind than this lose the oldest dispatches (the incident records remain).
pub const DISPATCH_STREAM_MAX_LEN: u64 = 1_000_000;

/// Most dispatches one script call writes. A script blocks Redis while it runs; an incident
/// costs 45-60 µs of Redis time in its two scripts together (docs/PERFORMANCE.md), so this
/// bounds the pause other clients see to a few milliseconds.
pub const DISPATCHES_PER_SCRIPT: usize = 128;

/// Appends one write's keys and arguments to a batched dispatch call (layout in
/// `lua/dispatch.lua`).
fn dispatch_args<'a>(
    k: &crate::Keys,
    w: &'a DispatchWrite,
    keys: &mut Vec<String>,
    args: &mut Vec<Cow<'a, [u8]>>,
) {
    let p = w.partition;
    let geo_key = w.duplicates.as_ref().map_or_else(
        || k.incident(p, &w.incident_id),
        |(c, _, _)| k.duplicates(p, c),
    );
    keys.extend([
        k.incident(p, &w.incident_id),
        k.timeline(p, &w.incident_id),
        k.index_department(p, &w.department),
        geo_key,
    ]);
    keys.extend(w.region_codes.iter().map(|c| k.index_region(p, c)));
    keys.extend(w.deliveries.iter().map(|(d, _)| k.dispatch(p, d)));
    let (lng, lat) = w
        .duplicates
        .as_ref()
        .map_or((String::new(), String::new()), |(_, x, y)| {
            (format!("{x:.7}"), format!("{y:.7}"))
        });
    let head: Vec<(String, String)> = timer_head(&w.timers)
        .map(|t| (t.due.to_string(), timer_member(&w.incident_id, t)))
        .into_iter()
        .collect();
    let owned = |s: String| Cow::Owned(s.into_bytes());
    args.extend([
        w.entry_id.as_bytes().into(),
        w.generation.as_bytes().into(),
        w.incident_id.as_bytes().into(),
        w.department.as_bytes().into(),
        w.decision.as_slice().into(),
        owned(w.dispatched_ms.to_string()),
        owned(w.accept_due_ms.to_string()),
        owned(w.resolve_due_ms.to_string()),
        w.event.as_slice().into(),
        owned(w.region_codes.len().to_string()),
        owned(timer_list(&w.timers)),
        owned(w.region_codes.join(",")),
        owned(lng),
        owned(lat),
        owned(head.len().to_string()),
        w.traceparent.as_bytes().into(),
        owned(w.deliveries.len().to_string()),
    ]);
    for (due, member) in head {
        args.extend([owned(due), owned(member)]);
    }
    args.extend(
        w.deliveries
            .iter()
            .map(|(_, b)| Cow::Borrowed(b.as_slice())),
    );
}

/// Counts of an ingest stream's consumer group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestStats {
    /// Entries not yet delivered to any router.
    pub lag: u64,
    /// Entries delivered and not acknowledged.
    pub pending: u64,
    /// Entries in the dead-letter stream.
    pub dead_letters: u64,
    /// Entries in the ingest streams (acknowledged entries are deleted, so this is the work
    /// not yet routed: lag plus pending).
    pub length: u64,
}

impl Store {
    /// Creates the router group on every partition's ingest stream (idempotent).
    pub async fn ensure_groups(&self) -> Result<()> {
        let mut c = self.conn();
        for p in 0..self.keys().partitions() {
            let r: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(self.keys().ingest(p))
                .arg(ROUTER_GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut c)
                .await;
            match r {
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                other => other?,
            }
        }
        scripts::ensure_loaded(&mut c).await?;
        Ok(())
    }

    /// A consumer of one partition with its own connection for blocking reads.
    pub async fn consumer(&self, partition: u16, name: &str, block: Duration) -> Result<Consumer> {
        Ok(Consumer {
            conn: self.blocking_conn(block).await?,
            store: self.clone(),
            key: self.keys().ingest(partition),
            partition,
            name: name.to_owned(),
            block,
            pending_cursor: "0".to_owned(),
        })
    }

    /// Dispatches routed entries: one script call per partition and [`DISPATCHES_PER_SCRIPT`]
    /// writes, all in one pipeline. Returns, per write, whether it dispatched (`false`: that
    /// generation was already dispatched by another router), or why it failed (the entry then
    /// stays pending and is delivered again).
    pub async fn dispatch_batch(&self, writes: &[DispatchWrite]) -> Result<Vec<Result<bool>>> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let k = self.keys();
        let maxlen = DISPATCH_STREAM_MAX_LEN.to_string();
        let groups = crate::ingest::partition_groups(
            writes.iter().map(|w| w.partition),
            DISPATCHES_PER_SCRIPT,
        );
        let build = |pipe: &mut redis::Pipeline, p: u16, members: &[usize]| {
            let mut keys = vec![
                k.ingest(p),
                k.sla(p),
                k.index_all(p),
                k.events(p),
                k.index_lag(p),
            ];
            let mut args: Vec<Cow<'_, [u8]>> = vec![
                ROUTER_GROUP.as_bytes().into(),
                maxlen.as_bytes().into(),
                crate::EVENTS_MAX_LEN.as_bytes().into(),
            ];
            for &i in members {
                dispatch_args(k, &writes[i], &mut keys, &mut args);
            }
            let args: Vec<&[u8]> = args.iter().map(AsRef::as_ref).collect();
            scripts::evalsha(pipe, &scripts::DISPATCH, &keys, &args);
        };
        let done: Vec<Result<i64>> = self
            .run_batched("dispatch", writes.len(), groups, build)
            .await?;
        Ok(done.into_iter().map(|d| d.map(|d| d == 1)).collect())
    }

    /// Open incidents near a point in a duplicate-detection category, nearest first, across every
    /// partition (at most `count` per partition).
    pub async fn duplicate_candidates(
        &self,
        category: &str,
        lng: f64,
        lat: f64,
        within_m: f64,
        count: usize,
    ) -> Result<Vec<String>> {
        let k = self.keys();
        let mut pipe = redis::pipe();
        for p in 0..k.partitions() {
            pipe.cmd("GEOSEARCH")
                .arg(k.duplicates(p, category))
                .arg("FROMLONLAT")
                .arg(lng)
                .arg(lat)
                .arg("BYRADIUS")
                .arg(within_m)
                .arg("m")
                .arg("ASC")
                .arg("COUNT")
                .arg(count)
                .arg("WITHDIST");
        }
        let found: Vec<Vec<(String, f64)>> = self
            .query_pipe(&pipe)
            .await
            .inspect_err(|e| crate::record_error("duplicates", e))?;
        let mut all: Vec<(String, f64)> = found.into_iter().flatten().collect();
        all.sort_by(|a, b| a.1.total_cmp(&b.1));
        Ok(all.into_iter().map(|(id, _)| id).collect())
    }

    /// Merges a duplicate into an open incident: first on the open incident's side (which checks
    /// that it is still open and recent), then on the duplicate's side, which acknowledges its
    /// entry. `Ok(false)`: the incident was no longer open; route the duplicate normally.
    pub async fn merge(&self, m: &MergeWrite) -> Result<bool> {
        let k = self.keys();
        let Some(pa) = crate::keys::partition_of(&m.into, k.partitions()) else {
            return Ok(false);
        };
        let w = &m.write;
        let into_event = crate::codec::event_bytes(
            "duplicate_merged",
            "router",
            &format!("{} merged into this incident", w.incident_id),
            "",
        );
        let mut pipe = redis::pipe();
        scripts::evalsha(
            &mut pipe,
            &scripts::MERGE_INTO,
            &[
                k.incident(pa, &m.into),
                k.timeline(pa, &m.into),
                k.merged(pa, &m.into),
                k.events(pa),
                k.sla(pa),
            ],
            &[
                w.incident_id.as_bytes(),
                m.reported_ms.to_string().as_bytes(),
                m.window_ms.to_string().as_bytes(),
                &into_event,
                w.resolve_due_ms.to_string().as_bytes(),
                crate::EVENTS_MAX_LEN.as_bytes(),
                m.into.as_bytes(),
            ],
        );
        if self.run_script::<i64>(&mut pipe, "merge").await? == 0 {
            return Ok(false);
        }
        let p = w.partition;
        let event = crate::codec::event_bytes(
            "merged",
            "router",
            &format!("duplicate of {}: the case continues there", m.into),
            "",
        );
        let mut pipe = redis::pipe();
        scripts::evalsha(
            &mut pipe,
            &scripts::MERGE_ENTRY,
            &[
                k.ingest(p),
                k.incident(p, &w.incident_id),
                k.timeline(p, &w.incident_id),
                k.events(p),
            ],
            &[
                ROUTER_GROUP.as_bytes(),
                w.entry_id.as_bytes(),
                w.generation.as_bytes(),
                m.into.as_bytes(),
                &event,
                &w.decision,
                w.region_codes.join(",").as_bytes(),
                crate::EVENTS_MAX_LEN.as_bytes(),
                w.incident_id.as_bytes(),
            ],
        );
        self.run_script::<i64>(&mut pipe, "merge").await?;
        Ok(true)
    }

    /// Moves an entry to its partition's dead-letter stream with the reason, and acknowledges it.
    pub async fn dead_letter(&self, entry: &IngestEntry, reason: &str, detail: &str) -> Result<()> {
        let k = self.keys();
        let p = entry.partition;
        let mut keys = vec![k.ingest(p), k.dead_letter(p)];
        if let Some(id) = entry
            .text("id")
            .filter(|id| crate::keys::partition_of(id, k.partitions()) == Some(p))
        {
            keys.push(k.incident(p, id));
            keys.push(k.timeline(p, id));
        }
        let deliveries = entry.deliveries.to_string();
        let dump = entry.fields_dump();
        let event = crate::codec::event_bytes(
            "dead_lettered",
            "router",
            &format!("{reason}: {detail}"),
            "",
        );
        let mut pipe = redis::pipe();
        scripts::evalsha(
            &mut pipe,
            &scripts::DEAD_LETTER,
            &keys,
            &[
                ROUTER_GROUP.as_bytes(),
                entry.entry_id.as_bytes(),
                reason.as_bytes(),
                detail.as_bytes(),
                deliveries.as_bytes(),
                &dump,
                &event,
            ],
        );
        self.run_script::<i64>(&mut pipe, "dead_letter")
            .await
            .map(drop)
    }

    /// Lag, pending and dead-letter counts summed over every partition.
    pub async fn ingest_stats(&self) -> Result<IngestStats> {
        let mut c = self.conn();
        let mut stats = IngestStats::default();
        for p in 0..self.keys().partitions() {
            let groups: StreamInfoGroupsReply = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(self.keys().ingest(p))
                .query_async(&mut c)
                .await?;
            for g in groups.groups.iter().filter(|g| g.name == ROUTER_GROUP) {
                stats.lag += g.lag.unwrap_or(0) as u64;
                stats.pending += g.pending as u64;
            }
            let len: u64 = redis::cmd("XLEN")
                .arg(self.keys().dead_letter(p))
                .query_async(&mut c)
                .await?;
            stats.dead_letters += len;
            let len: u64 = redis::cmd("XLEN")
                .arg(self.keys().ingest(p))
                .query_async(&mut c)
                .await?;
            stats.length += len;
        }
        Ok(stats)
    }

    /// The dead-letter entries of a partition, oldest first (for operators and tests).
    pub async fn dead_letters(
        &self,
        partition: u16,
        count: usize,
    ) -> Result<Vec<HashMap<String, Vec<u8>>>> {
        let mut c = self.conn();
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(self.keys().dead_letter(partition))
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut c)
            .await?;
        Ok(reply
            .ids
            .into_iter()
            .map(|s| IngestEntry::from_stream_id(partition, s, 0).fields)
            .collect())
    }
}

/// The member of a timer in the timer set: `<incident>|<kind>|<department>`.
pub fn timer_member(incident_id: &str, t: &gridroute_core::sla::Timer) -> String {
    format!("{incident_id}|{}|{}", t.kind.name(), t.target)
}

/// The record's schedule of its pending timers, earliest first:
/// `<kind>|<department>|<due ms>,...`. Only its head is in the timer set; firing it puts the
/// next one there (one member per running case, not one per step).
pub fn timer_list(timers: &[gridroute_core::sla::Timer]) -> String {
    let mut sorted: Vec<&gridroute_core::sla::Timer> = timers.iter().collect();
    sorted.sort_by_key(|t| t.due);
    sorted
        .iter()
        .map(|t| format!("{}|{}|{}", t.kind.name(), t.target, t.due))
        .collect::<Vec<_>>()
        .join(",")
}

/// The earliest timer of a schedule.
pub fn timer_head(timers: &[gridroute_core::sla::Timer]) -> Option<&gridroute_core::sla::Timer> {
    timers.iter().min_by_key(|t| t.due)
}

/// One router's reader of one partition's ingest stream.
pub struct Consumer {
    conn: crate::conn::Conn,
    store: Store,
    key: String,
    partition: u16,
    name: String,
    block: Duration,
    pending_cursor: String,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("key", &self.key)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// Entries this consumer was given before and has not acknowledged (after a restart with the
    /// same name). Call repeatedly until it returns nothing.
    pub async fn read_own_pending(&mut self, count: usize) -> Result<Vec<IngestEntry>> {
        let from = self.pending_cursor.clone();
        let entries = self.read_group(count, None, &from, 2).await?;
        if let Some(last) = entries.last() {
            self.pending_cursor.clone_from(&last.entry_id);
        }
        Ok(entries)
    }

    /// New entries, waiting up to the block time when there are none.
    pub async fn read_new(&mut self, count: usize) -> Result<Vec<IngestEntry>> {
        let block = self.block;
        self.read_group(count, Some(block), ">", 1).await
    }

    async fn read_group(
        &mut self,
        count: usize,
        block: Option<Duration>,
        from: &str,
        deliveries: u64,
    ) -> Result<Vec<IngestEntry>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(ROUTER_GROUP)
            .arg(&self.name)
            .arg("COUNT")
            .arg(count);
        if let Some(b) = block {
            cmd.arg("BLOCK").arg(b.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(&self.key).arg(from);
        let reply: Option<StreamReadReply> = cmd
            .query_async(&mut self.conn)
            .await
            .map_err(StoreError::from)?;
        Ok(self.entries(reply, deliveries))
    }

    /// Takes over entries that have been pending longer than `min_idle` with any consumer
    /// (a router that died, or this one after a failed attempt), with their delivery counts.
    pub async fn claim_idle(
        &mut self,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<IngestEntry>> {
        let mut c = self.store.conn();
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(&self.key)
            .arg(ROUTER_GROUP)
            .arg(&self.name)
            .arg(min_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut c)
            .await
            .map_err(StoreError::from)?;
        if reply.claimed.is_empty() {
            return Ok(Vec::new());
        }
        let first = reply
            .claimed
            .first()
            .map(|s| s.id.clone())
            .unwrap_or_default();
        let last = reply
            .claimed
            .last()
            .map(|s| s.id.clone())
            .unwrap_or_default();
        let pending: StreamPendingCountReply = redis::cmd("XPENDING")
            .arg(&self.key)
            .arg(ROUTER_GROUP)
            .arg(&first)
            .arg(&last)
            .arg(reply.claimed.len())
            .arg(&self.name)
            .query_async(&mut c)
            .await
            .map_err(StoreError::from)?;
        let counts: HashMap<String, u64> = pending
            .ids
            .into_iter()
            .map(|p| (p.id, p.times_delivered as u64))
            .collect();
        metrics::counter!(gridroute_telemetry::names::CLAIMED_TOTAL)
            .increment(reply.claimed.len() as u64);
        Ok(reply
            .claimed
            .into_iter()
            .map(|s| {
                let n = counts.get(&s.id).copied().unwrap_or(2);
                IngestEntry::from_stream_id(self.partition, s, n)
            })
            .collect())
    }

    /// Removes consumers of the group that have held nothing for `idle` (routers that stopped
    /// long ago), so that `XINFO CONSUMERS` stays readable.
    pub async fn forget_idle_consumers(&mut self, idle: Duration) -> Result<usize> {
        let mut c = self.store.conn();
        let info: redis::streams::StreamInfoConsumersReply = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&self.key)
            .arg(ROUTER_GROUP)
            .query_async(&mut c)
            .await
            .map_err(StoreError::from)?;
        let mut removed = 0;
        for consumer in info.consumers {
            if consumer.pending == 0
                && consumer.idle as u128 > idle.as_millis()
                && consumer.name != self.name
            {
                let _: i64 = redis::cmd("XGROUP")
                    .arg("DELCONSUMER")
                    .arg(&self.key)
                    .arg(ROUTER_GROUP)
                    .arg(&consumer.name)
                    .query_async(&mut c)
                    .await
                    .map_err(StoreError::from)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn entries(&self, reply: Option<StreamReadReply>, deliveries: u64) -> Vec<IngestEntry> {
        reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .map(|s| IngestEntry::from_stream_id(self.partition, s, deliveries))
            .collect()
    }
}
