//! Reading the shared record: one incident with its timeline, and filtered, paged lists.
//!
//! Lists read per-partition indexes (sorted sets of incident ids, all scored 0, so that
//! `ZRANGE … BYLEX REV` walks them newest first: ids start with a ULID). The most selective
//! index among department, region and all is read; the other filters are applied to the
//! records. A page token is the last id returned.

use std::collections::HashMap;

use gridroute_proto::v1 as pb;

use crate::{Result, Store, StoreError, codec, keys};

/// Largest page a caller may ask for.
pub const MAX_PAGE_SIZE: usize = 500;
/// Page size when the caller gives none.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Most index entries examined for one page, so that a rare filter cannot make one call scan
/// the whole history; the page then comes back short with a token to continue.
pub const MAX_SCANNED_PER_PAGE: usize = 5_000;

/// Filters of a list call; empty fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Region subtree (any level).
    pub region_code: String,
    /// Primary department.
    pub department: String,
    /// Allowed states; empty = all.
    pub statuses: Vec<pb::IncidentStatus>,
    /// Reported at or after (ms).
    pub start_ms: Option<i64>,
    /// Reported before (ms).
    pub end_ms: Option<i64>,
}

impl Store {
    /// One incident with its timeline.
    pub async fn get_incident(&self, id: &str) -> Result<pb::Incident> {
        let k = self.keys();
        let p = keys::partition_of(id, k.partitions())
            .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
        let mut c = self.conn();
        let (fields, timeline, merged): (codec::Fields, Vec<Vec<u8>>, Vec<String>) = redis::pipe()
            .hgetall(k.incident(p, id))
            .lrange(k.timeline(p, id), 0, -1)
            .smembers(k.merged(p, id))
            .query_async(&mut c)
            .await
            .inspect_err(|e| crate::record_error("get_incident", &StoreError::from(e.clone())))?;
        if fields.is_empty() {
            return Err(StoreError::NotFound(id.to_owned()));
        }
        codec::incident_from_fields(id, &fields, &timeline, merged)
    }

    /// A page of incidents, newest first, and the token of the next page (empty at the end).
    pub async fn list_incidents(
        &self,
        f: &ListFilter,
        page_size: usize,
        page_token: &str,
    ) -> Result<(Vec<pb::Incident>, String)> {
        let k = self.keys();
        let page_size = page_size.clamp(1, MAX_PAGE_SIZE);
        // ULID bounds for the time window: 10 characters of time, then 16 of randomness.
        let upper = match (page_token.is_empty(), f.end_ms) {
            (false, _) => format!("({page_token}"),
            (true, Some(end)) => format!("({}", ulid::Ulid::from_parts(end.max(0) as u64, 0)),
            (true, None) => "+".to_owned(),
        };
        let lower = f.start_ms.map_or_else(
            || "-".to_owned(),
            |s| format!("[{}", ulid::Ulid::from_parts(s.max(0) as u64, 0)),
        );
        let mut out: Vec<pb::Incident> = Vec::with_capacity(page_size);
        let mut cursor = upper;
        let mut scanned = 0usize;
        let mut more = true;
        while more && out.len() < page_size && scanned < MAX_SCANNED_PER_PAGE {
            // Newest-first merge of the partitions: a chunk from each, then the newest overall.
            let chunk = page_size.max(16);
            let mut pipe = redis::pipe();
            for p in 0..k.partitions() {
                let index = if !f.department.is_empty() {
                    k.index_department(p, &f.department)
                } else if !f.region_code.is_empty() {
                    k.index_region(p, &f.region_code)
                } else {
                    k.index_all(p)
                };
                pipe.cmd("ZRANGE")
                    .arg(index)
                    .arg(&cursor)
                    .arg(&lower)
                    .arg("BYLEX")
                    .arg("REV")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(chunk);
            }
            let lists: Vec<Vec<String>> = self.query_pipe(&pipe).await?;
            more = lists.iter().any(|l| l.len() == chunk);
            let mut ids: Vec<String> = lists.into_iter().flatten().collect();
            // Ids start with a fixed-width ULID, so string order is time order.
            ids.sort_unstable_by(|a, b| b.cmp(a));
            more |= ids.len() > chunk;
            ids.truncate(chunk);
            let mut pipe = redis::pipe();
            for id in &ids {
                let p = keys::partition_of(id, k.partitions()).unwrap_or(0);
                pipe.hgetall(k.incident(p, id));
            }
            let records: Vec<HashMap<String, Vec<u8>>> = if ids.is_empty() {
                Vec::new()
            } else {
                self.query_pipe(&pipe).await?
            };
            for (i, (id, fields)) in ids.iter().zip(records).enumerate() {
                scanned += 1;
                cursor = format!("({id}");
                if fields.is_empty() {
                    continue;
                }
                let inc = codec::incident_from_fields(id, &fields, &[], Vec::new())?;
                if matches(&inc, f) {
                    out.push(inc);
                    if out.len() == page_size {
                        more |= i + 1 < ids.len();
                        break;
                    }
                }
            }
        }
        let next = if more {
            cursor.trim_start_matches('(').to_owned()
        } else {
            String::new()
        };
        Ok((out, next))
    }
}

fn matches(inc: &pb::Incident, f: &ListFilter) -> bool {
    let d = inc.decision.as_ref();
    (f.statuses.is_empty() || f.statuses.iter().any(|s| *s as i32 == inc.status))
        && (f.department.is_empty()
            || d.is_some_and(|d| d.department_id == f.department)
                && inc.status != pb::IncidentStatus::Returned as i32)
        && (f.region_code.is_empty()
            || d.is_some_and(|d| d.region_path.iter().any(|r| r.code == f.region_code)))
}
