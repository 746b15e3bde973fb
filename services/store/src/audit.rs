//! The audit trail: one stream, trimmed by age. Each record's fields are stored as separate
//! stream fields, so no value (a person's name, a reason) can forge another; the entry id is
//! the time, so pages are ordered and resumable.

use std::collections::HashMap;

use gridroute_proto::v1 as pb;
use redis::Value;

use crate::{Result, Store, StoreError};

/// Most records one page examines, so that a rare filter cannot make one call scan the trail.
pub const MAX_SCANNED_PER_PAGE: usize = 10_000;
/// Largest page.
pub const MAX_PAGE_SIZE: usize = 1000;

/// One record to write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// `kind:id`, or `anonymous`.
    pub principal: String,
    /// The person acting.
    pub person: String,
    /// `package.Service/Method`.
    pub method: String,
    /// Incident id, table version, department.
    pub target: String,
    /// gRPC code name.
    pub outcome: String,
    /// Why, or what changed.
    pub reason: String,
    /// Remote address.
    pub peer: String,
}

/// Filters of a listing; empty ones do not filter.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// From (ms, inclusive).
    pub start_ms: Option<i64>,
    /// Until (ms, exclusive).
    pub end_ms: Option<i64>,
    /// Exact principal.
    pub principal: String,
    /// Exact method.
    pub method: String,
    /// Exact outcome.
    pub outcome: String,
}

fn text(map: &HashMap<String, Value>, k: &str) -> String {
    match map.get(k) {
        Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(Value::SimpleString(s)) => s.clone(),
        _ => String::new(),
    }
}

/// Whether a page token is one [`Store::audit_list`] issues (a stream id).
pub fn is_page_token(token: &str) -> bool {
    token.split_once('-').is_some_and(|(a, b)| {
        !a.is_empty()
            && !b.is_empty()
            && a.len() <= 20
            && b.len() <= 20
            && a.bytes().all(|c| c.is_ascii_digit())
            && b.bytes().all(|c| c.is_ascii_digit())
    })
}

impl Store {
    /// Appends records in one round trip, dropping records older than `retention_ms`.
    pub async fn audit_append(&self, entries: &[Entry], retention_ms: i64) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let now = self.server_time_ms().await?;
        let min_id = format!("{}", (now - retention_ms).max(0));
        let key = self.keys().audit();
        let mut pipe = redis::pipe();
        for e in entries {
            pipe.cmd("XADD")
                .arg(&key)
                .arg("MINID")
                .arg("~")
                .arg(&min_id)
                .arg("*")
                .arg("p")
                .arg(&e.principal)
                .arg("u")
                .arg(&e.person)
                .arg("m")
                .arg(&e.method)
                .arg("t")
                .arg(&e.target)
                .arg("o")
                .arg(&e.outcome)
                .arg("r")
                .arg(&e.reason)
                .arg("a")
                .arg(&e.peer)
                .ignore();
        }
        let mut c = self.conn();
        pipe.query_async::<()>(&mut c)
            .await
            .map_err(StoreError::from)
            .inspect_err(|e| crate::record_error("audit", e))
    }

    /// A page of records, newest first, and the token of the next page ('' at the end).
    pub async fn audit_list(
        &self,
        f: &Filter,
        page_size: usize,
        token: &str,
    ) -> Result<(Vec<pb::AuditRecord>, String)> {
        if !token.is_empty() && !is_page_token(token) {
            return Err(StoreError::InvalidToken(token.to_owned()));
        }
        let page_size = page_size.clamp(1, MAX_PAGE_SIZE);
        let key = self.keys().audit();
        // XREVRANGE end start: `(id` excludes the last record of the previous page.
        let mut end = if token.is_empty() {
            f.end_ms.map_or_else(|| "+".to_owned(), |e| format!("({e}"))
        } else {
            format!("({token}")
        };
        let start = f
            .start_ms
            .map_or_else(|| "-".to_owned(), |s| s.max(0).to_string());
        let mut out = Vec::new();
        let mut scanned = 0;
        let mut last = String::new();
        let mut c = self.conn();
        loop {
            let chunk = (page_size - out.len()).max(64);
            let entries: Vec<(String, HashMap<String, Value>)> = redis::cmd("XREVRANGE")
                .arg(&key)
                .arg(&end)
                .arg(&start)
                .arg("COUNT")
                .arg(chunk)
                .query_async::<redis::streams::StreamRangeReply>(&mut c)
                .await
                .map_err(StoreError::from)?
                .ids
                .into_iter()
                .map(|e| (e.id, e.map))
                .collect();
            let exhausted = entries.len() < chunk;
            for (id, map) in entries {
                scanned += 1;
                last.clone_from(&id);
                let r = pb::AuditRecord {
                    time: id
                        .split_once('-')
                        .and_then(|(ms, _)| ms.parse().ok())
                        .map(gridroute_mapping::timestamp),
                    record_id: id,
                    principal: text(&map, "p"),
                    person: text(&map, "u"),
                    method: text(&map, "m"),
                    target: text(&map, "t"),
                    outcome: text(&map, "o"),
                    reason: text(&map, "r"),
                    peer: text(&map, "a"),
                };
                let keep = (f.principal.is_empty() || r.principal == f.principal)
                    && (f.method.is_empty() || r.method == f.method)
                    && (f.outcome.is_empty() || r.outcome == f.outcome);
                if keep {
                    out.push(r);
                    if out.len() == page_size {
                        return Ok((out, last));
                    }
                }
            }
            if exhausted {
                return Ok((out, String::new()));
            }
            if scanned >= MAX_SCANNED_PER_PAGE {
                return Ok((out, last));
            }
            end = format!("({last}");
        }
    }
}
