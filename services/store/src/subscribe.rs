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

/// A reader of one department's dispatches, holding its own connection for blocking reads.
pub struct DispatchReader {
    conn: redis::aio::MultiplexedConnection,
    keys: Vec<String>,
    cursor: Cursor,
    block: Duration,
}

impl std::fmt::Debug for DispatchReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DispatchReader")
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// The current end of a department's streams: a cursor that yields only later dispatches.
    pub async fn latest_cursor(&self, department: &str) -> Result<Cursor> {
        let k = self.keys();
        let mut c = self.conn();
        let mut pipe = redis::pipe();
        for p in 0..k.partitions() {
            pipe.cmd("XREVRANGE")
                .arg(k.dispatch(p, department))
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1);
        }
        let last: Vec<redis::streams::StreamRangeReply> =
            pipe.query_async(&mut c).await.map_err(StoreError::from)?;
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

    /// A reader of `department`'s dispatches after `cursor`.
    pub async fn dispatch_reader(
        &self,
        department: &str,
        cursor: Cursor,
        block: Duration,
    ) -> Result<DispatchReader> {
        let k = self.keys();
        Ok(DispatchReader {
            conn: self.blocking_conn(block).await?,
            keys: (0..k.partitions())
                .map(|p| k.dispatch(p, department))
                .collect(),
            cursor,
            block,
        })
    }
}

impl DispatchReader {
    /// The next dispatches (oldest first), waiting up to the block time; each carries the cursor
    /// that resumes right after it. Empty when nothing arrived in time.
    pub async fn next_batch(&mut self, count: usize) -> Result<Vec<pb::Dispatch>> {
        // One XREAD over all partitions: each partition's keys share a hash tag, but different
        // partitions do not, so on Redis Cluster this becomes one read per node.
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
                let bytes = match entry.map.get("d") {
                    Some(Value::BulkString(b)) => b.as_slice(),
                    _ => continue,
                };
                let mut d =
                    pb::Dispatch::decode(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                d.cursor = self.cursor.encode();
                out.push(d);
            }
        }
        Ok(out)
    }
}
