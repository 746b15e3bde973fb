//! Reading one department's dispatches across every partition, from a cursor.
//!
//! A cursor lists the last stream id delivered from each partition, joined by `.`
//! (e.g. `1732540000000-0.0-0.1732540000123-4.0-0`). It is opaque to callers: they hand back the
//! cursor of the last dispatch they processed and receive everything after it, so delivery is
//! at least once across disconnects.

use std::time::Duration;

use gridroute_proto::v1 as pb;
use prost::Message;
use redis::{Value, streams::StreamReadReply};

use crate::{Result, Store, StoreError};

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
        let valid = |id: &str| {
            id.split_once('-').is_some_and(|(a, b)| {
                !a.is_empty()
                    && !b.is_empty()
                    && a.bytes().all(|c| c.is_ascii_digit())
                    && b.bytes().all(|c| c.is_ascii_digit())
            })
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

/// A reader of one stream per partition from a cursor, holding its own connection for blocking
/// reads.
struct StreamReader {
    conn: crate::conn::Conn,
    keys: Vec<String>,
    cursor: Cursor,
    block: Duration,
}

/// One entry read: its fields, the cursor right after it, and its time (ms, from its id).
type RawEntry = (std::collections::HashMap<String, Value>, String, i64);

impl StreamReader {
    async fn next_raw(&mut self, count: usize) -> Result<Vec<RawEntry>> {
        if matches!(self.conn, crate::conn::Conn::Cluster(_)) {
            return self.next_raw_cluster(count).await;
        }
        // One blocking XREAD over all partitions' streams.
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(self.block.as_millis() as u64)
            .arg("STREAMS");
        for k in &self.keys {
            cmd.arg(k);
        }
        for id in &self.cursor.0 {
            cmd.arg(id);
        }
        let reply: Option<StreamReadReply> = cmd
            .query_async(&mut self.conn)
            .await
            .map_err(StoreError::from)?;
        let mut out = Vec::new();
        for stream in reply.map(|r| r.keys).unwrap_or_default() {
            let Some(p) = self.keys.iter().position(|k| *k == stream.key) else {
                continue;
            };
            for entry in stream.ids {
                self.cursor.0[p].clone_from(&entry.id);
                let ms = entry
                    .id
                    .split_once('-')
                    .and_then(|(ms, _)| ms.parse().ok())
                    .unwrap_or(0);
                out.push((entry.map, self.cursor.encode(), ms));
            }
        }
        Ok(out)
    }
}

impl StreamReader {
    /// On a cluster the partitions' streams live in different slots, so one multi-key XREAD is
    /// not possible: each partition is read in turn without blocking, and an empty round waits
    /// a moment (at most [`CLUSTER_POLL`]) before the next.
    async fn next_raw_cluster(&mut self, count: usize) -> Result<Vec<RawEntry>> {
        let mut out = Vec::new();
        for p in 0..self.keys.len() {
            let reply: Option<StreamReadReply> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(count)
                .arg("STREAMS")
                .arg(&self.keys[p])
                .arg(&self.cursor.0[p])
                .query_async(&mut self.conn)
                .await
                .map_err(StoreError::from)?;
            for stream in reply.map(|r| r.keys).unwrap_or_default() {
                for entry in stream.ids {
                    self.cursor.0[p].clone_from(&entry.id);
                    let ms = entry
                        .id
                        .split_once('-')
                        .and_then(|(ms, _)| ms.parse().ok())
                        .unwrap_or(0);
                    out.push((entry.map, self.cursor.encode(), ms));
                }
            }
        }
        if out.is_empty() {
            tokio::time::sleep(self.block.min(CLUSTER_POLL)).await;
        }
        Ok(out)
    }
}

/// How long an empty read round waits on a cluster before the next.
const CLUSTER_POLL: Duration = Duration::from_millis(50);

fn bytes<'a>(m: &'a std::collections::HashMap<String, Value>, k: &str) -> &'a [u8] {
    match m.get(k) {
        Some(Value::BulkString(b)) => b.as_slice(),
        _ => &[],
    }
}

fn text(m: &std::collections::HashMap<String, Value>, k: &str) -> String {
    String::from_utf8_lossy(bytes(m, k)).into_owned()
}

/// A reader of one department's dispatches and notices.
pub struct DispatchReader(StreamReader);

impl std::fmt::Debug for DispatchReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DispatchReader")
            .field("cursor", &self.0.cursor)
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
                if stream_id(at) < stream_id(&deleted) {
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
        Ok(DispatchReader(StreamReader {
            conn: self.blocking_conn(block).await?,
            keys: (0..k.partitions())
                .map(|p| k.dispatch(p, department))
                .collect(),
            cursor,
            block,
        }))
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
        Ok(EventReader {
            inner: StreamReader {
                conn: self.blocking_conn(block).await?,
                keys: (0..k.partitions()).map(|p| k.events(p)).collect(),
                cursor,
                block,
            },
            region: region.to_owned(),
            department: department.to_owned(),
        })
    }
}

impl DispatchReader {
    /// The next dispatches (oldest first), waiting up to the block time; each carries the cursor
    /// that resumes right after it. Empty when nothing arrived in time.
    pub async fn next_batch(&mut self, count: usize) -> Result<Vec<pb::Dispatch>> {
        let mut out = Vec::new();
        for (fields, cursor, _) in self.0.next_raw(count).await? {
            let b = bytes(&fields, "d");
            if b.is_empty() {
                continue;
            }
            let mut d = pb::Dispatch::decode(b).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if d.kind == pb::DispatchKind::Unspecified as i32 {
                d.kind = pb::DispatchKind::New as i32;
            }
            d.traceparent = text(&fields, "tp");
            d.cursor = cursor;
            out.push(d);
        }
        Ok(out)
    }
}

impl EventReader {
    /// The next events that pass the filters (oldest first), waiting up to the block time. May
    /// be empty when everything read was filtered out; the cursor still advances.
    pub async fn next_batch(&mut self, count: usize) -> Result<Vec<pb::IncidentEvent>> {
        let mut out = Vec::new();
        for (fields, cursor, ms) in self.inner.next_raw(count).await? {
            let regions = text(&fields, "r");
            let dept = text(&fields, "d");
            let mut event = pb::TimelineEvent::decode(bytes(&fields, "e"))
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            crate::codec::set_type(&mut event);
            if !self.region.is_empty() && !regions.split(',').any(|r| r == self.region) {
                continue;
            }
            if !self.department.is_empty()
                && dept != self.department
                && event.department_id != self.department
            {
                continue;
            }
            event.time = Some(gridroute_mapping::timestamp(ms));
            let split = |s: String| -> Vec<String> {
                s.split(',')
                    .filter(|x| !x.is_empty())
                    .map(str::to_owned)
                    .collect()
            };
            out.push(pb::IncidentEvent {
                cursor,
                incident_id: text(&fields, "id"),
                status: gridroute_mapping::status_from_str(&text(&fields, "s")) as i32,
                event: Some(event),
                department_id: dept,
                region_codes: split(regions),
                merged_incident_ids: split(text(&fields, "m")),
            });
        }
        Ok(out)
    }
}
