//! Reading one department's dispatches, or the incident events, across every partition, from
//! a cursor.
//!
//! A cursor lists the last stream id delivered from each partition, joined by `.`
//! (e.g. `1732540000000-0.0-0.1732540000123-4.0-0`); inside an events entry that packs a batch
//! of changes (`crate::events`), a partition's position is `<id>~<n>`: the first `n` changes of
//! entry `<id>` delivered. It is opaque to callers: they hand back the cursor of the last
//! dispatch or event they processed and receive everything after it, so delivery is at least
//! once across disconnects.

use std::time::Duration;

use gridroute_proto::v1 as pb;
use prost::Message;
use redis::{Value, streams::StreamReadReply};
use tracing::Instrument;

use crate::{Result, Store, StoreError, keys};

/// Why a cursor was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cursor must hold {partitions} stream ids separated by '.'")]
pub struct BadCursor {
    /// Number of partitions expected.
    pub partitions: u16,
}

/// A resume position across every partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor(Vec<String>);

impl Cursor {
    /// The start of every stream.
    pub fn earliest(partitions: u16) -> Self {
        Self(vec!["0-0".to_owned(); partitions as usize])
    }

    /// Parses a cursor given back by a caller.
    pub fn parse(text: &str, partitions: u16) -> Result<Self, BadCursor> {
        let parts: Vec<String> = text.split('.').map(str::to_owned).collect();
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
        let valid = |part: &str| {
            let (id, delivered) = part.split_once('~').unwrap_or((part, "0"));
            stream_id(id).is_some()
                && id
                    .split_once('-')
                    .is_some_and(|(a, b)| digits(a) && digits(b))
                && digits(delivered)
                && delivered.parse::<u32>().is_ok()
        };
        if parts.len() != partitions as usize || !parts.iter().all(|p| valid(p)) {
            return Err(BadCursor { partitions });
        }
        Ok(Self(parts))
    }

    /// The cursor as text.
    pub fn encode(&self) -> String {
        self.0.join(".")
    }

    /// This cursor with partition `p` inside entry `id`, its first `delivered` changes
    /// delivered, as text.
    fn inside(&self, p: usize, id: &str, delivered: usize) -> String {
        let mut parts = self.0.clone();
        if let Some(part) = parts.get_mut(p) {
            *part = format!("{id}~{delivered}");
        }
        parts.join(".")
    }
}

/// A cursor's position in one partition: the entry id, and how many changes of that entry
/// were delivered when the position is inside a packed entry (0: the whole entry was).
fn position(part: &str) -> (&str, usize) {
    match part.split_once('~') {
        Some((id, n)) => (id, n.parse().unwrap_or(0)),
        None => (part, 0),
    }
}

/// Where a read of one partition's stream starts (`XREAD` reads after an id): after the
/// position, or, inside a packed entry, just before that entry, which is read again.
fn read_after(part: &str) -> String {
    match position(part) {
        (id, 0) => id.to_owned(),
        (id, _) => match stream_id(id) {
            Some((ms, seq)) if seq > 0 => format!("{ms}-{}", seq - 1),
            Some((ms, _)) if ms > 0 => format!("{}-{}", ms - 1, u64::MAX),
            _ => "0-0".to_owned(),
        },
    }
}

/// A stream id as (milliseconds, sequence) for ordering; `None` when malformed.
fn stream_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// The id of the last entry trimmed (or deleted) from a stream, from an `XINFO STREAM` reply;
/// `0-0` when nothing was or the stream does not exist.
fn last_deleted(reply: redis::Value) -> String {
    redis::from_redis_value::<std::collections::HashMap<String, Value>>(reply)
        .ok()
        .and_then(|mut info| info.remove("max-deleted-entry-id"))
        .and_then(|v| redis::from_redis_value(v).ok())
        .unwrap_or_else(|| "0-0".to_owned())
}

/// A reader of one stream per partition from a cursor, holding its own connection(s) for
/// blocking reads.
struct StreamReader {
    source: Source,
    keys: Vec<String>,
    cursor: Cursor,
    block: Duration,
    /// The next blocking read, already written on the reader's own connection behind a
    /// batch's record reads (see [`DispatchReader::join_records`]).
    ahead: Option<ReadAhead>,
}

type ReadAhead = std::pin::Pin<
    Box<dyn std::future::Future<Output = redis::RedisResult<Option<StreamReadReply>>> + Send>,
>;

/// Polls `f` once: a request on a multiplexed connection is queued for writing by its first
/// poll, so requests polled one after the other go out in that order, in one write.
async fn poll_once<F: std::future::Future + Unpin>(f: &mut F) -> std::task::Poll<F::Output> {
    std::future::poll_fn(|cx| std::task::Poll::Ready(std::pin::Pin::new(&mut *f).poll(cx))).await
}

/// Where a [`StreamReader`] blocks.
enum Source {
    /// One Redis: one blocking `XREAD` over every partition's stream.
    One(crate::conn::Conn),
    /// A cluster: one tail per partition (see [`Tails`]).
    Cluster(Tails),
}

/// One entry read.
struct RawEntry {
    fields: std::collections::HashMap<String, Value>,
    /// The cursor right after the whole entry.
    cursor: Cursor,
    /// Its time (ms, from its id).
    ms: i64,
    partition: usize,
    id: String,
    /// How many of its changes were delivered before (a packed events entry the cursor was
    /// inside of); 0 for every other entry.
    delivered: usize,
}

/// The milliseconds of a stream id.
fn id_ms(id: &str) -> i64 {
    id.split_once('-')
        .and_then(|(ms, _)| ms.parse().ok())
        .unwrap_or(0)
}

impl StreamReader {
    async fn next_raw(&mut self, count: usize) -> Result<Vec<RawEntry>> {
        let conn = match &mut self.source {
            Source::One(conn) => conn,
            Source::Cluster(tails) => {
                let mut out = Vec::new();
                for (p, entry) in tails.next(count, self.block).await? {
                    out.push(self.advance(p, entry));
                }
                return Ok(out);
            }
        };
        let reply: Option<StreamReadReply> = match self.ahead.take() {
            Some(read) => read.await,
            None => {
                let read = Self::read_cmd(&self.keys, &self.cursor, self.block, count);
                read.query_async(conn).await
            }
        }
        .map_err(StoreError::from)?;
        let mut out = Vec::new();
        for stream in reply.map(|r| r.keys).unwrap_or_default() {
            let Some(p) = self.keys.iter().position(|k| *k == stream.key) else {
                continue;
            };
            for entry in stream.ids {
                out.push(self.advance(p, entry));
            }
        }
        Ok(out)
    }

    /// Moves partition `p`'s position past `entry`.
    fn advance(&mut self, p: usize, entry: redis::streams::StreamId) -> RawEntry {
        let delivered = match position(&self.cursor.0[p]) {
            (at, n) if at == entry.id => n,
            _ => 0,
        };
        self.cursor.0[p].clone_from(&entry.id);
        RawEntry {
            fields: entry.map,
            cursor: self.cursor.clone(),
            ms: id_ms(&entry.id),
            partition: p,
            id: entry.id,
            delivered,
        }
    }

    /// One blocking XREAD over all partitions' streams, after the cursor.
    fn read_cmd(keys: &[String], cursor: &Cursor, block: Duration, count: usize) -> redis::Cmd {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS");
        for k in keys {
            cmd.arg(k);
        }
        for part in &cursor.0 {
            cmd.arg(read_after(part));
        }
        cmd
    }
}

/// Blocking reads on a cluster. The partitions' streams live in different hash slots, and Redis
/// Cluster refuses a multi-key command across slots (`CROSSSLOT`) even when one node holds
/// them all, so no single read can wait on several partitions. Each partition gets a task
/// that blocks on its stream over its own connection to the node holding the slot (following
/// `MOVED` when the slot moves or a replica takes over) and hands what it reads over a
/// bounded channel. The reader's cursor advances only for entries handed to its caller: a
/// tail reads at most one batch ahead, and what it read ahead is dropped with the reader.
struct Tails {
    rx: tokio::sync::mpsc::Receiver<(usize, Result<Vec<redis::streams::StreamId>>)>,
    ready: std::collections::VecDeque<(usize, redis::streams::StreamId)>,
    tasks: tokio::task::JoinSet<()>,
}

/// How many entries a tail reads at a time.
const TAIL_BATCH: usize = 128;

/// How many times in a row a tail may fail (connection lost, redirected) before the reader
/// reports the error to its caller, who resumes from the cursor.
const TAIL_ATTEMPTS: u32 = 5;

impl Tails {
    fn start(
        target: &crate::conn::Target,
        keys: &[String],
        cursor: &Cursor,
        count: usize,
        block: Duration,
    ) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(keys.len().max(1));
        let mut tasks = tokio::task::JoinSet::new();
        for (p, (key, from)) in keys.iter().zip(&cursor.0).enumerate() {
            let tail = tail(
                target.clone(),
                p,
                key.clone(),
                read_after(from),
                count,
                block,
                tx.clone(),
            );
            tasks.spawn(tail.instrument(tracing::debug_span!("stream_tail", partition = p)));
        }
        Self {
            rx,
            ready: Default::default(),
            tasks,
        }
    }

    /// Up to `count` entries, waiting up to `block` for the first. Cancel-safe: an entry is
    /// either returned or still queued.
    async fn next(
        &mut self,
        count: usize,
        block: Duration,
    ) -> Result<Vec<(usize, redis::streams::StreamId)>> {
        if self.ready.is_empty() {
            let first = match tokio::time::timeout(block, self.rx.recv()).await {
                Err(_) => return Ok(Vec::new()),
                Ok(None) => return Err(StoreError::Unavailable("stream tails ended".into())),
                Ok(Some(read)) => read,
            };
            self.queue(first)?;
            while self.ready.len() < count {
                let Ok(read) = self.rx.try_recv() else { break };
                self.queue(read)?;
            }
        }
        let n = count.min(self.ready.len());
        Ok(self.ready.drain(..n).collect())
    }

    fn queue(&mut self, (p, read): (usize, Result<Vec<redis::streams::StreamId>>)) -> Result<()> {
        self.ready.extend(read?.into_iter().map(|e| (p, e)));
        Ok(())
    }
}

impl Drop for Tails {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

/// One partition's tail on a cluster: blocks on `key` after `from`, forever, sending what it
/// reads; gives up (sending the error) after [`TAIL_ATTEMPTS`] failures in a row.
async fn tail(
    target: crate::conn::Target,
    p: usize,
    key: String,
    mut from: String,
    count: usize,
    block: Duration,
    tx: tokio::sync::mpsc::Sender<(usize, Result<Vec<redis::streams::StreamId>>)>,
) {
    let mut node: Option<(String, u16)> = None;
    let mut conn = None;
    let mut failures = 0;
    loop {
        if failures >= TAIL_ATTEMPTS {
            let e = StoreError::Unavailable(format!("{key}: no node answered"));
            let _ = tx.send((p, Err(e))).await;
            return;
        }
        let c = match &mut conn {
            Some(c) => c,
            None => match target.cluster_node(node.as_ref(), block).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    failures += 1;
                    node = None;
                    tracing::debug!(error = %e, "stream tail cannot connect");
                    tokio::time::sleep(Duration::from_millis(100) * failures).await;
                    continue;
                }
            },
        };
        let read: redis::RedisResult<Option<StreamReadReply>> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&key)
            .arg(&from)
            .query_async(c)
            .await;
        match read {
            Ok(reply) => {
                failures = 0;
                let entries: Vec<_> = reply
                    .map(|r| r.keys)
                    .unwrap_or_default()
                    .into_iter()
                    .flat_map(|s| s.ids)
                    .collect();
                if let Some(last) = entries.last() {
                    from.clone_from(&last.id);
                    if tx.send((p, Ok(entries))).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                failures += 1;
                // A tail starts at a seed, which redirects it to the slot's node: not counted.
                let settled = node.is_some();
                // `redirect_node` is the node's `host:port` and the slot.
                let moved_to = e
                    .redirect_node()
                    .and_then(|(addr, _)| addr.rsplit_once(':'))
                    .and_then(|(host, port)| Some((host.to_owned(), port.parse().ok()?)));
                let reason = match (e.code(), moved_to) {
                    // The slot lives elsewhere now: follow it.
                    (Some("MOVED"), Some(to)) => {
                        node = Some(to);
                        "moved"
                    }
                    // The slot is being migrated: wait for the move to complete.
                    (Some("ASK"), _) => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        failures -= 1;
                        "ask"
                    }
                    _ => {
                        node = None;
                        tokio::time::sleep(Duration::from_millis(100) * failures).await;
                        "error"
                    }
                };
                if reason != "ask" {
                    conn = None;
                }
                if settled || reason != "moved" {
                    metrics::counter!(
                        gridroute_telemetry::names::STREAM_TAIL_REDIRECTS_TOTAL,
                        "reason" => reason
                    )
                    .increment(1);
                }
                tracing::debug!(error = %e, reason, "stream tail reconnects");
            }
        }
    }
}

fn bytes<'a>(m: &'a std::collections::HashMap<String, Value>, k: &str) -> &'a [u8] {
    match m.get(k) {
        Some(Value::BulkString(b)) => b.as_slice(),
        _ => &[],
    }
}

fn text(m: &std::collections::HashMap<String, Value>, k: &str) -> String {
    String::from_utf8_lossy(bytes(m, k)).into_owned()
}

/// A reader of one department's dispatches and notices. A new case's entry holds only what
/// differs per department (role, deadlines); the report and the decision are read from the
/// incident's record when the entry is delivered (docs/ARCHITECTURE.md, the dispatch stream key).
pub struct DispatchReader {
    inner: StreamReader,
    store: Store,
}

impl std::fmt::Debug for DispatchReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DispatchReader")
            .field("cursor", &self.inner.cursor)
            .finish_non_exhaustive()
    }
}

/// A reader of incident events, filtered by region subtree and department.
pub struct EventReader {
    inner: StreamReader,
    region: String,
    department: String,
}

impl std::fmt::Debug for EventReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventReader")
            .field("cursor", &self.inner.cursor)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// A reader of `keys` (one stream per partition) after `cursor`.
    async fn stream_reader(
        &self,
        keys: Vec<String>,
        cursor: Cursor,
        block: Duration,
    ) -> Result<StreamReader> {
        let source = if self.is_cluster() {
            Source::Cluster(Tails::start(
                &self.target,
                &keys,
                &cursor,
                TAIL_BATCH,
                block,
            ))
        } else {
            Source::One(self.blocking_conn(block).await?)
        };
        Ok(StreamReader {
            source,
            keys,
            cursor,
            block,
            ahead: None,
        })
    }

    async fn latest(&self, keys: Vec<String>) -> Result<Cursor> {
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.cmd("XREVRANGE")
                .arg(k)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1);
        }
        let last: Vec<redis::streams::StreamRangeReply> = self.query_pipe(&pipe).await?;
        Ok(Cursor(
            last.into_iter()
                .map(|r| {
                    r.ids
                        .into_iter()
                        .next()
                        .map_or_else(|| "0-0".to_owned(), |s| s.id)
                })
                .collect(),
        ))
    }

    /// Whether entries after `cursor` were trimmed from one of `keys` (one stream per
    /// partition): `Some(resume)` when they were, with the oldest cursor after which every
    /// stream still holds every entry (the caller's position where nothing was trimmed past
    /// it). Relies on the stream's `max-deleted-entry-id` (Redis 7), which the retention sweep
    /// sets when it trims ([`Store::trim_streams`]): these streams lose entries to nothing
    /// else.
    async fn trimmed_after(&self, keys: Vec<String>, cursor: &Cursor) -> Result<Option<Cursor>> {
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.cmd("XINFO").arg("STREAM").arg(k);
        }
        // A stream that does not exist yet answers with an error: nothing was trimmed from it.
        let replies = self.raw_pipe(&pipe, true).await?;
        let mut gap = false;
        let resume = cursor
            .0
            .iter()
            .zip(replies)
            .map(|(at, reply)| {
                let deleted = last_deleted(reply);
                // Inside a packed entry, the rest of that entry is gone once it is trimmed.
                let (id, delivered) = position(at);
                let lost = match delivered {
                    0 => stream_id(id) < stream_id(&deleted),
                    _ => stream_id(id) <= stream_id(&deleted),
                };
                if lost {
                    gap = true;
                    deleted
                } else {
                    at.clone()
                }
            })
            .collect();
        Ok(gap.then_some(Cursor(resume)))
    }

    /// [`Store::trimmed_after`] for a department's dispatch streams.
    pub async fn dispatches_trimmed_after(
        &self,
        department: &str,
        cursor: &Cursor,
    ) -> Result<Option<Cursor>> {
        let k = self.keys();
        self.trimmed_after(
            (0..k.partitions())
                .map(|p| k.dispatch(p, department))
                .collect(),
            cursor,
        )
        .await
    }

    /// [`Store::trimmed_after`] for the events streams.
    pub async fn events_trimmed_after(&self, cursor: &Cursor) -> Result<Option<Cursor>> {
        let k = self.keys();
        self.trimmed_after((0..k.partitions()).map(|p| k.events(p)).collect(), cursor)
            .await
    }

    /// Trims the events streams and the dispatch streams of `departments` to the entries of
    /// the last `retention_ms` (Redis clock), exactly, and records on each stream the last
    /// entry removed (`lua/trim_stream.lua`). Returns how many entries were removed.
    pub async fn trim_streams(&self, retention_ms: i64, departments: &[String]) -> Result<u64> {
        let k = self.keys();
        let min_id = format!("{}-0", (self.server_time_ms().await? - retention_ms).max(0));
        let mut pipe = redis::pipe();
        for p in 0..k.partitions() {
            let streams =
                std::iter::once(k.events(p)).chain(departments.iter().map(|d| k.dispatch(p, d)));
            for stream in streams {
                crate::scripts::evalsha(
                    &mut pipe,
                    &crate::scripts::TRIM_STREAM,
                    &[stream],
                    &[min_id.as_bytes()],
                );
            }
        }
        let mut total = 0;
        for removed in self.run_scripts::<u64>(&mut pipe, "trim_stream").await? {
            total += removed?;
        }
        if total > 0 {
            metrics::counter!(gridroute_telemetry::names::STREAM_ENTRIES_TRIMMED_TOTAL)
                .increment(total);
        }
        Ok(total)
    }

    /// The current end of a department's streams: a cursor that yields only later dispatches.
    pub async fn latest_cursor(&self, department: &str) -> Result<Cursor> {
        let k = self.keys();
        self.latest(
            (0..k.partitions())
                .map(|p| k.dispatch(p, department))
                .collect(),
        )
        .await
    }

    /// The current end of the events streams.
    pub async fn latest_event_cursor(&self) -> Result<Cursor> {
        let k = self.keys();
        self.latest((0..k.partitions()).map(|p| k.events(p)).collect())
            .await
    }

    /// A reader of `department`'s dispatches after `cursor`.
    pub async fn dispatch_reader(
        &self,
        department: &str,
        cursor: Cursor,
        block: Duration,
    ) -> Result<DispatchReader> {
        let k = self.keys();
        let keys: Vec<String> = (0..k.partitions())
            .map(|p| k.dispatch(p, department))
            .collect();
        Ok(DispatchReader {
            inner: self.stream_reader(keys, cursor, block).await?,
            store: self.clone(),
        })
    }

    /// A reader of incident events after `cursor`, only those in `region` (any level; '' = all)
    /// and concerning `department` ('' = all).
    pub async fn event_reader(
        &self,
        region: &str,
        department: &str,
        cursor: Cursor,
        block: Duration,
    ) -> Result<EventReader> {
        let k = self.keys();
        let keys = (0..k.partitions()).map(|p| k.events(p)).collect();
        Ok(EventReader {
            inner: self.stream_reader(keys, cursor, block).await?,
            region: region.to_owned(),
            department: department.to_owned(),
        })
    }
}

impl DispatchReader {
    /// The next dispatches (oldest first), waiting up to the block time; each carries the cursor
    /// that resumes right after it. Empty when nothing arrived in time. A new case gets its
    /// report and decision from the record, and the reporter's contact where `contact` says the
    /// department may have it: one round trip per batch.
    pub async fn next_batch(
        &mut self,
        count: usize,
        contact: impl Fn(&pb::Dispatch) -> bool,
    ) -> Result<Vec<pb::Dispatch>> {
        let mut out = Vec::new();
        let mut gens = Vec::new();
        for RawEntry {
            fields,
            cursor,
            delivered,
            ..
        } in self.inner.next_raw(count).await?
        {
            let b = bytes(&fields, "d");
            // A dispatch entry is one delivery: a position inside one (a cursor made by
            // hand) has delivered it.
            if b.is_empty() || delivered > 0 {
                continue;
            }
            let cursor = cursor.encode();
            let mut d = pb::Dispatch::decode(b).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if d.kind == pb::DispatchKind::Unspecified as i32 {
                d.kind = pb::DispatchKind::New as i32;
            }
            d.traceparent = text(&fields, "tp");
            d.cursor = cursor;
            gens.push(text(&fields, "g"));
            out.push(d);
        }
        self.join_records(&mut out, &gens, contact, count).await?;
        Ok(out)
    }

    /// Fills in what the dispatch heads leave to the record. A head of generation `g` takes
    /// `decision.g` where the record has it (kept when an arbitration or a re-route replaced the
    /// decision delivered with `g`), else the record's decision, so that a replay shows the
    /// decision that was delivered.
    /// A record no longer in Redis (archived: the stream outlived --hot-period) leaves the head
    /// as it is; GetIncident reads the archive.
    /// On one Redis the record reads go over the reader's own connection with the next blocking
    /// read written right behind them (`count` entries): one write instead of two, and no
    /// hand-over to the shared connection. Redis answers the reads first, then blocks.
    async fn join_records(
        &mut self,
        batch: &mut [pb::Dispatch],
        gens: &[String],
        contact: impl Fn(&pb::Dispatch) -> bool,
        count: usize,
    ) -> Result<()> {
        let k = self.store.keys();
        let mut pipe = redis::pipe();
        let mut asked = Vec::new();
        for (i, (d, g)) in batch.iter().zip(gens).enumerate() {
            let parts = d.kind == pb::DispatchKind::New as i32 && d.decision.is_none();
            let wants_contact = contact(d);
            if !parts && !wants_contact {
                continue;
            }
            let Some(p) = keys::partition_of(&d.incident_id, k.partitions()) else {
                continue;
            };
            let at_gen = format!("decision.{g}");
            pipe.cmd("HMGET").arg(k.incident(p, &d.incident_id)).arg(&[
                "report",
                "decision",
                if g.is_empty() { "decision" } else { &at_gen },
                if wants_contact { "contact" } else { "gen" },
            ]);
            asked.push((i, parts, wants_contact));
        }
        if asked.is_empty() {
            return Ok(());
        }
        let rows: Vec<Vec<Option<Vec<u8>>>> = match &self.inner.source {
            Source::One(conn @ crate::conn::Conn::Blocking(_)) => {
                let (mut c, mut next) = (conn.clone(), conn.clone());
                let mut rows = Box::pin(async move { pipe.query_async(&mut c).await });
                let first = poll_once(&mut rows).await;
                let r = &self.inner;
                let read = StreamReader::read_cmd(&r.keys, &r.cursor, r.block, count);
                let mut ahead: ReadAhead =
                    Box::pin(async move { read.query_async(&mut next).await });
                if let std::task::Poll::Ready(done) = poll_once(&mut ahead).await {
                    ahead = Box::pin(std::future::ready(done));
                }
                self.inner.ahead = Some(ahead);
                match first {
                    std::task::Poll::Ready(rows) => rows,
                    std::task::Poll::Pending => rows.await,
                }
                .map_err(StoreError::from)?
            }
            _ => self.store.query_pipe(&pipe).await?,
        };
        for ((i, parts, wants_contact), row) in asked.into_iter().zip(rows) {
            let Ok([report, current, kept, contact]) = <[_; 4]>::try_from(row) else {
                return Err(StoreError::Internal(
                    "HMGET of 4 fields: another reply".into(),
                ));
            };
            let d = &mut batch[i];
            let corrupt = |e: prost::DecodeError| StoreError::Corrupt(e.to_string());
            if parts {
                if report.is_none() && current.is_none() {
                    metrics::counter!(gridroute_telemetry::names::DISPATCHES_WITHOUT_RECORD_TOTAL)
                        .increment(1);
                }
                if let Some(r) = report {
                    d.report =
                        Some(pb::ReportIncidentRequest::decode(r.as_slice()).map_err(corrupt)?);
                }
                if let Some(b) = kept.or(current) {
                    d.decision = Some(crate::codec::decode_decision(&b, d.report.as_ref())?);
                }
            }
            if wants_contact && let (Some(r), Some(c)) = (d.report.as_mut(), contact) {
                r.reporter = pb::ReporterContact::decode(c.as_slice()).ok();
            }
        }
        Ok(())
    }
}

impl EventReader {
    /// The next events that pass the filters (oldest first), waiting up to the block time. May
    /// be empty when everything read was filtered out; the cursor still advances. An entry
    /// packing a batch of changes yields them all (but those delivered before, when the
    /// cursor was inside it), each with the cursor that resumes right after it.
    pub async fn next_batch(&mut self, count: usize) -> Result<Vec<pb::IncidentEvent>> {
        let mut out = Vec::new();
        for raw in self.inner.next_raw(count).await? {
            let packed = bytes(&raw.fields, crate::events::PACKED_FIELD);
            if packed.is_empty() {
                if raw.delivered > 0 {
                    continue;
                }
                let change = crate::events::Change {
                    incident_id: text(&raw.fields, "id"),
                    status: text(&raw.fields, "s"),
                    department: text(&raw.fields, "d"),
                    regions: text(&raw.fields, "r"),
                    event: bytes(&raw.fields, "e").to_vec(),
                    merged: text(&raw.fields, "m"),
                };
                self.push(&mut out, change, raw.cursor.encode(), raw.ms)?;
                continue;
            }
            let changes = crate::events::unpack(packed)?.changes;
            let n = changes.len();
            for (j, change) in changes.into_iter().enumerate().skip(raw.delivered) {
                let cursor = if j + 1 == n {
                    raw.cursor.encode()
                } else {
                    raw.cursor.inside(raw.partition, &raw.id, j + 1)
                };
                self.push(&mut out, change, cursor, raw.ms)?;
            }
        }
        Ok(out)
    }

    /// Adds `c` to `out` when it passes the filters.
    fn push(
        &self,
        out: &mut Vec<pb::IncidentEvent>,
        c: crate::events::Change,
        cursor: String,
        ms: i64,
    ) -> Result<()> {
        let mut event = crate::codec::event_from_stored(&c.event)?;
        if !self.region.is_empty() && !c.regions.split(',').any(|r| r == self.region) {
            return Ok(());
        }
        if !self.department.is_empty()
            && c.department != self.department
            && event.department_id != self.department
        {
            return Ok(());
        }
        event.time = Some(gridroute_mapping::timestamp(ms));
        let split = |s: &str| -> Vec<String> {
            s.split(',')
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect()
        };
        out.push(pb::IncidentEvent {
            cursor,
            incident_id: c.incident_id,
            status: gridroute_mapping::status_from_str(&c.status) as i32,
            event: Some(event),
            department_id: c.department,
            region_codes: split(&c.regions),
            merged_incident_ids: split(&c.merged),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_cursor_may_stand_inside_a_packed_entry() {
        let c = Cursor::parse("5-0.1700000000000-3~2", 2).unwrap();
        assert_eq!(c.encode(), "5-0.1700000000000-3~2");
        assert_eq!(position(&c.0[1]), ("1700000000000-3", 2));
        assert_eq!(c.inside(0, "6-1", 4), "6-1~4.1700000000000-3~2");
        for bad in [
            "5-0.7-1~",
            "5-0.7-1~x",
            "5-0.~3",
            "5-0.7-1~2~3",
            "5-0.7-1~99999999999",
        ] {
            assert!(Cursor::parse(bad, 2).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_read_inside_a_packed_entry_starts_just_before_it() {
        assert_eq!(read_after("7-3"), "7-3");
        assert_eq!(read_after("7-3~2"), "7-2");
        assert_eq!(read_after("7-0~2"), format!("6-{}", u64::MAX));
        assert_eq!(read_after("0-0~1"), "0-0");
    }
}
