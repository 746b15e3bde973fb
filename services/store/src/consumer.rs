//! The router's side of the ingest streams: one consumer group (`routers`) per partition
//! stream; reads in batches; takes over entries left pending by routers that stopped
//! (XAUTOCLAIM); and moves entries that cannot be processed to the dead-letter stream. What a
//! routed entry writes is in `dispatch` and `merge`.

use std::{collections::HashMap, time::Duration};

use redis::{
    Value,
    streams::{StreamAutoClaimReply, StreamId, StreamInfoGroupsReply, StreamPendingCountReply},
};

use crate::{Result, Store, StoreError, keys::ROUTER_GROUP, scripts};
use gridroute_core::lifecycle::EventKind;

/// One entry read from an ingest stream.
#[derive(Debug, Clone)]
pub struct IngestEntry {
    /// Partition of the stream.
    pub partition: u16,
    /// Stream entry id.
    pub entry_id: String,
    /// How many times the entry has been delivered (1 on first delivery).
    pub deliveries: u64,
    /// Raw fields as written, in their order (a handful: looked up by name in order, which
    /// costs less than hashing each name into a map per entry on the router's hot path).
    /// Empty for a packed entry, whose parts [`IngestEntry::field`] reads from `packed`.
    pub fields: Vec<(String, Vec<u8>)>,
    packed: Option<Packed>,
}

/// The one field of a packed ingest entry (see [`pack`]).
pub const PACKED_FIELD: &str = "p";

/// The names a packed entry's parts answer to, in the order they are packed.
const PACKED_PARTS: [&str; 5] = ["id", "g", "t", "tp", "r"];

/// A packed entry's value and where each of its parts lies (the report runs to the end).
#[derive(Debug, Clone)]
struct Packed {
    value: Vec<u8>,
    /// Byte ranges of `PACKED_PARTS` in `value`.
    parts: [(usize, usize); 5],
}

impl Packed {
    /// Where the parts of `1|id|g|t|tp|report` lie; `None` when the value is not of that form
    /// (then the entry keeps its one raw field, fails to route for want of an id, and is
    /// dead-lettered with that field shown).
    fn parts(value: &[u8]) -> Option<[(usize, usize); 5]> {
        if !value.starts_with(b"1|") {
            return None;
        }
        let mut parts = [(0, 0); 5];
        let mut start = 2;
        for part in parts.iter_mut().take(4) {
            let len = value.get(start..)?.iter().position(|&c| c == b'|')?;
            *part = (start, start + len);
            start += len + 1;
        }
        parts[4] = (start, value.len());
        Some(parts)
    }

    fn get(&self, name: &str) -> Option<&[u8]> {
        let i = PACKED_PARTS.iter().position(|p| *p == name)?;
        let (from, to) = self.parts[i];
        self.value.get(from..to)
    }
}

/// The value of a packed ingest entry (`XADD … p <value>`): the incident id, route generation,
/// report time (ms), W3C traceparent ('' = none) and the report's bytes, as
/// `1|id|g|t|tp|report`. One field instead of five: Redis stores, sends and the router parses
/// two values per entry instead of ten. `report.lua` writes the same form. The id, generation,
/// time and traceparent never hold `|` (server-made id, digits, W3C hex and dashes); the
/// report, which may, comes last.
pub fn pack(id: &str, generation: &str, time: &str, traceparent: &str, report: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + id.len() + time.len() + traceparent.len() + report.len());
    for part in ["1", id, generation, time, traceparent] {
        v.extend_from_slice(part.as_bytes());
        v.push(b'|');
    }
    v.extend_from_slice(report);
    v
}

impl IngestEntry {
    /// An entry of these fields: one field [`PACKED_FIELD`] of the packed form is read as its
    /// parts, any other fields as they are (the form every release before the packed one
    /// wrote, and the form re-routes still write).
    pub fn new(
        partition: u16,
        entry_id: String,
        deliveries: u64,
        mut fields: Vec<(String, Vec<u8>)>,
    ) -> Self {
        let mut packed = None;
        if fields.len() == 1
            && fields[0].0 == PACKED_FIELD
            && let Some(parts) = Packed::parts(&fields[0].1)
        {
            let value = fields.pop().map(|(_, v)| v).unwrap_or_default();
            packed = Some(Packed { value, parts });
        }
        Self {
            partition,
            entry_id,
            deliveries,
            fields,
            packed,
        }
    }

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
        Self::new(partition, s.id, deliveries, fields)
    }

    /// A field's bytes (the first of that name, as a map of the entry would hold the last;
    /// writers name each field once).
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        if let Some(p) = &self.packed {
            return p.get(name);
        }
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// A text field.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.field(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The fields in a stable order, for the dead-letter copy.
    pub fn fields_dump(&self) -> Vec<u8> {
        let mut fields: Vec<(&str, &[u8])> = match &self.packed {
            Some(p) => PACKED_PARTS
                .iter()
                .filter_map(|n| Some((*n, p.get(n)?)))
                .collect(),
            None => self
                .fields
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_slice()))
                .collect(),
        };
        fields.sort_by(|a, b| a.0.cmp(b.0));
        let mut out = Vec::new();
        for (n, v) in fields {
            out.extend_from_slice(n.as_bytes());
            out.push(b'=');
            out.extend_from_slice(v);
            out.push(b'\n');
        }
        out
    }
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
    /// Entries in the ingest streams: lag, pending, and acknowledged entries the routers have
    /// not trimmed yet (a quarter second's worth or a stream node's; see
    /// [`Consumer::trim_if_due`]). The work not yet routed is lag plus pending.
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
                // A full Redis refuses XGROUP CREATE before it looks for the group: a router
                // that starts then can still work on groups that exist (reads, claims).
                Err(e) if e.code() == Some("OOM") && self.group_exists(&mut c, p).await => {}
                other => other?,
            }
        }
        scripts::ensure_loaded(&mut c).await?;
        Ok(())
    }

    /// Whether the partition's router group exists (asked without writing).
    async fn group_exists(&self, c: &mut crate::conn::Conn, partition: u16) -> bool {
        let groups: redis::RedisResult<Vec<HashMap<String, redis::Value>>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(self.keys().ingest(partition))
            .query_async(c)
            .await;
        groups.is_ok_and(|gs| {
            gs.iter().any(|g| {
                g.get("name").is_some_and(|n| {
                    redis::from_redis_value::<String>(n.clone()).is_ok_and(|n| n == ROUTER_GROUP)
                })
            })
        })
    }

    /// A consumer of one partition with its own connection for blocking reads.
    pub async fn consumer(&self, partition: u16, name: &str, block: Duration) -> Result<Consumer> {
        let reader = match self.target.direct(block).await? {
            Some(d) => Reader::Direct(d),
            None => Reader::Client(self.blocking_conn(block).await?),
        };
        Ok(Consumer {
            reader,
            store: self.clone(),
            key: self.keys().ingest(partition),
            partition,
            name: name.to_owned(),
            block,
            pending_cursor: "0".to_owned(),
            acked_since_trim: 0,
            last_trim: std::time::Instant::now(),
        })
    }

    /// Trims a partition's ingest stream of its acknowledged entries (`trim_acked.lua`): those
    /// older than the routers' oldest pending entry, or with none pending, than the last one
    /// delivered; whole stream nodes only. Returns how many entries went.
    pub async fn trim_acked(&self, partition: u16) -> Result<u64> {
        let mut pipe = redis::pipe();
        scripts::evalsha(
            &mut pipe,
            &scripts::TRIM_ACKED,
            &[self.keys().ingest(partition)],
            &[ROUTER_GROUP.as_bytes()],
        );
        let removed: u64 = self.run_script(&mut pipe, "trim_acked").await?;
        metrics::counter!(gridroute_telemetry::names::INGEST_TRIMMED_TOTAL).increment(removed);
        Ok(removed)
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
            EventKind::DeadLettered,
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
            .map(|s| {
                IngestEntry::from_stream_id(partition, s, 0)
                    .fields
                    .into_iter()
                    .collect()
            })
            .collect())
    }
}

/// One router's reader of one partition's ingest stream.
pub struct Consumer {
    reader: Reader,
    store: Store,
    key: String,
    partition: u16,
    name: String,
    block: Duration,
    pending_cursor: String,
    /// Entries this consumer acknowledged since it last trimmed its stream.
    acked_since_trim: usize,
    last_trim: std::time::Instant,
}

/// How often a router trims the acknowledged entries of a stream it dispatches from
/// ([`Consumer::trim_if_due`]): often enough that they hold little memory (at 10,000 reports/s
/// on four partitions, about 625 entries per partition), rarely enough that the trim's cost per
/// entry stays far below the `XDEL` per entry it replaces.
pub const TRIM_EVERY: Duration = Duration::from_millis(250);

/// How a consumer reads its stream: on one Redis over plain TCP with a connection of its own
/// that takes replies apart into entries directly (`resp`); otherwise (TLS, Cluster, RESP3)
/// through the client library.
enum Reader {
    Direct(crate::resp::Direct),
    Client(crate::conn::Conn),
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("key", &self.key)
            .field("name", &self.name)
            .field("direct", &self.direct())
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// Whether it reads with a connection of its own that takes replies apart directly (one
    /// Redis over plain TCP) rather than through the client library.
    pub fn direct(&self) -> bool {
        matches!(self.reader, Reader::Direct(_))
    }

    /// Dispatches routed entries ([`Store::dispatch_batch`]) over this consumer's own
    /// connection where it has one (idle between two reads: the calls go out written straight
    /// in RESP), else over the store's shared connection.
    pub async fn dispatch_batch(
        &mut self,
        writes: &[crate::dispatch::DispatchWrite],
    ) -> Result<Vec<Result<bool>>> {
        let done = match &mut self.reader {
            Reader::Direct(d) => self.store.dispatch_via(writes, Some(d)).await,
            Reader::Client(_) => self.store.dispatch_batch(writes).await,
        }?;
        self.acked_since_trim += done.iter().filter(|r| r.is_ok()).count();
        Ok(done)
    }

    /// Whether [`Consumer::trim_if_due`] would trim now.
    pub fn trim_due(&self, idle: bool) -> bool {
        self.acked_since_trim > 0 && (idle || self.last_trim.elapsed() >= TRIM_EVERY)
    }

    /// Trims the acknowledged entries from the head of this consumer's stream
    /// (`trim_acked.lua`) when it acknowledged some since the last trim and either
    /// [`TRIM_EVERY`] has passed or `idle` (its last read found nothing new). Returns how many
    /// entries went. Dispatches acknowledge their entries without deleting them: one trim per
    /// interval costs Redis a fraction of an `XDEL` per entry (docs/PERFORMANCE.md).
    pub async fn trim_if_due(&mut self, idle: bool) -> Result<u64> {
        if !self.trim_due(idle) {
            return Ok(0);
        }
        let removed = self.store.trim_acked(self.partition).await?;
        self.acked_since_trim = 0;
        self.last_trim = std::time::Instant::now();
        Ok(removed)
    }

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
        let conn = match &mut self.reader {
            Reader::Direct(d) => {
                let mut n = itoa::Buffer::new();
                let mut ms = itoa::Buffer::new();
                let mut args: Vec<&[u8]> = vec![
                    b"XREADGROUP",
                    b"GROUP",
                    ROUTER_GROUP.as_bytes(),
                    self.name.as_bytes(),
                    b"COUNT",
                    n.format(count).as_bytes(),
                ];
                if let Some(b) = block {
                    args.extend([&b"BLOCK"[..], ms.format(b.as_millis() as u64).as_bytes()]);
                }
                args.extend([&b"STREAMS"[..], self.key.as_bytes(), from.as_bytes()]);
                return d.read_entries(&args, self.partition, deliveries).await;
            }
            Reader::Client(conn) => conn,
        };
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
        // The reply is taken apart as it came (owned), not through `StreamReadReply`, which
        // copies every field into a map of values first.
        let reply = conn.reply(&cmd).await.map_err(StoreError::from)?;
        Ok(read_reply_entries(reply, self.partition, deliveries))
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
}

/// The entries of an `XREAD`/`XREADGROUP` reply (RESP2 `[[key, entries]…]` or RESP3
/// `{key: entries}`; nil when the block time passed), each `[id, [field, value, …]]`. An entry
/// whose fields are nil (deleted while pending) comes back with no fields, as before.
pub(crate) fn read_reply_entries(
    reply: Value,
    partition: u16,
    deliveries: u64,
) -> Vec<IngestEntry> {
    let streams: Vec<Value> = match reply {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut kv) if kv.len() == 2 => kv.pop(),
                _ => None,
            })
            .collect(),
        Value::Map(streams) => streams.into_iter().map(|(_, v)| v).collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for entries in streams {
        let Value::Array(entries) = entries else {
            continue;
        };
        out.reserve(entries.len());
        for entry in entries {
            let Value::Array(parts) = entry else { continue };
            let mut parts = parts.into_iter();
            let Some(id) = parts.next().and_then(text) else {
                continue;
            };
            let mut fields = Vec::new();
            if let Some(Value::Array(flat)) = parts.next() {
                fields.reserve(flat.len() / 2);
                let mut flat = flat.into_iter();
                while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                    if let (Some(k), Some(v)) = (text(k), bytes(v)) {
                        fields.push((k, v));
                    }
                }
            }
            out.push(IngestEntry::new(partition, id, deliveries, fields));
        }
    }
    out
}

fn bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(t) => Some(t.into_bytes()),
        _ => None,
    }
}

fn text(v: Value) -> Option<String> {
    bytes(v).and_then(|b| String::from_utf8(b).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn entry(id: &str, fields: Option<&[(&str, &str)]>) -> Value {
        let fields = fields.map_or(Value::Nil, |f| {
            Value::Array(f.iter().flat_map(|(k, v)| [bulk(k), bulk(v)]).collect())
        });
        Value::Array(vec![bulk(id), fields])
    }

    #[test]
    fn read_replies_of_either_protocol_give_the_same_entries() {
        let entries = || {
            Value::Array(vec![
                entry("1-0", Some(&[("id", "a-1"), ("g", "1")])),
                entry("2-0", None),
            ])
        };
        let resp2 = Value::Array(vec![Value::Array(vec![bulk("gr:{p1}:ingest"), entries()])]);
        let resp3 = Value::Map(vec![(bulk("gr:{p1}:ingest"), entries())]);
        for reply in [resp2, resp3] {
            let got = read_reply_entries(reply, 1, 2);
            assert_eq!(got.len(), 2);
            assert_eq!(got[0].entry_id, "1-0");
            assert_eq!(got[0].text("id"), Some("a-1"));
            assert_eq!(got[0].text("g"), Some("1"));
            assert_eq!((got[0].partition, got[0].deliveries), (1, 2));
            // Deleted while pending: the entry, with no fields (it goes to the dead letters).
            assert_eq!(got[1].entry_id, "2-0");
            assert!(got[1].fields.is_empty());
        }
        assert!(read_reply_entries(Value::Nil, 1, 1).is_empty());
    }

    #[test]
    fn packed_entries_read_as_their_parts() {
        let report = b"\x0a\x03a|b\x12\x00|";
        let value = pack("x-1", "0", "1700000000000", "00-ab-cd-01", report);
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("gr:{p1}:ingest"),
            Value::Array(vec![Value::Array(vec![
                bulk("1-0"),
                Value::Array(vec![bulk(PACKED_FIELD), Value::BulkString(value)]),
            ])]),
        ])]);
        let got = read_reply_entries(reply, 1, 1);
        let e = &got[0];
        assert!(e.fields.is_empty());
        assert_eq!(e.text("id"), Some("x-1"));
        assert_eq!(e.text("g"), Some("0"));
        assert_eq!(e.text("t"), Some("1700000000000"));
        assert_eq!(e.text("tp"), Some("00-ab-cd-01"));
        // The report runs to the end, `|` and all.
        assert_eq!(e.field("r"), Some(report.as_slice()));
        assert_eq!(e.field("x"), None);
        let dump = e.fields_dump();
        assert!(dump.starts_with(b"g=0\nid=x-1\nr="), "{dump:?}");
        assert!(dump.ends_with(b"t=1700000000000\ntp=00-ab-cd-01\n"));

        // No traceparent and an empty report are parts like any other.
        let e = IngestEntry::new(
            1,
            "2-0".into(),
            1,
            vec![("p".into(), pack("y-1", "2", "5", "", b""))],
        );
        assert_eq!(
            (e.text("tp"), e.field("r")),
            (Some(""), Some(b"".as_slice()))
        );
        assert_eq!(e.text("g"), Some("2"));
    }

    #[test]
    fn a_packed_value_of_another_form_is_kept_as_a_raw_field() {
        for bad in ["", "1|x-1|0|5", "2|x-1|0|5||r", "x-1|0|5||r"] {
            let e = IngestEntry::new(1, "1-0".into(), 1, vec![("p".into(), bad.into())]);
            assert_eq!(e.text("id"), None, "{bad}");
            assert_eq!(e.fields_dump(), format!("p={bad}\n").into_bytes());
        }
    }
}
