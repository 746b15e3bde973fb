//! Reading the shared record: one incident with its timeline, and filtered, paged lists.
//!
//! Lists read per-partition index streams (append-only; entry ids are the Redis time at which
//! the incident entered the index), merged newest first across partitions. The most selective
//! index among department, region and all is read; the other filters, and the report-time
//! window, are applied to the records. An index entry lists the incidents of one dispatch
//! batch. A page token is the position of the last incident examined
//! (`<entry id>~<partition>[.<position in the entry>][:<source>]`).
//!
//! With `--region-index-depth N` (recorded in the deployment's `meta` hash with the time it
//! began), writers by transaction stop at the N-th level of a grid's path: that level's entry
//! names each incident under its finer codes (`<community>|<grid>` instead of `i`). A list of a
//! finer region then reads two sources per partition: its own index (entries written before,
//! or by the scripts) and, from that time on, the level-N ancestor's, keeping the incidents
//! whose field names its code. The source is part of a position, so that both merge into one
//! order.
//!
//! An incident enters the `all` and region indexes when it is first routed, which is right
//! after its report unless routing was down, and a department's index at each assignment
//! (only the latest entry, at or after the record's `dept_at`, counts). A time window is
//! scanned from after its end by the longest report → entry delay the partition has seen
//! (at least [`MIN_INDEX_SLACK_MS`]), so windows are exact.

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
    /// The codes above `region_code` in the region tree, from the root down (empty for a root
    /// or no region): where its incidents may be indexed under their finer codes.
    pub region_ancestors: Vec<String>,
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
        self.read_record(p, id).await.map(|(incident, _)| incident)
    }

    /// One incident with its timeline, and the record's fields it was read from, in one
    /// round trip (so that the fields' version `v` is the version of the incident).
    pub(crate) async fn read_record(
        &self,
        p: u16,
        id: &str,
    ) -> Result<(pb::Incident, codec::Fields)> {
        let k = self.keys();
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
        // The report's entry and the first dispatch's live in the record (`tl0`, `tl1`), the
        // later ones in the list. Entries carry their time: merged in time order (stable, so
        // entries of one millisecond keep the order they were written in).
        let mut timeline: Vec<Vec<u8>> = ["tl0", "tl1"]
            .iter()
            .filter_map(|f| fields.get(*f).cloned())
            .chain(timeline)
            .collect();
        timeline.sort_by_key(|e| codec::entry_ms(e));
        let incident = codec::incident_from_fields(id, &fields, &timeline, merged)?;
        Ok((incident, fields))
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
        let mut cursor = if page_token.is_empty() {
            None
        } else {
            Some(
                Cursor::parse(page_token)
                    .ok_or_else(|| StoreError::InvalidToken(page_token.to_owned()))?,
            )
        };
        let scan = self
            .index_scan(
                &f.department,
                &f.region_code,
                &f.region_ancestors,
                f.start_ms,
                f.end_ms,
            )
            .await?;
        let mut out: Vec<pb::Incident> = Vec::with_capacity(page_size);
        let mut scanned = 0usize;
        let mut more = true;
        while more && out.len() < page_size && scanned < MAX_SCANNED_PER_PAGE {
            let chunk = page_size.max(16);
            let (entries, full, skipped) = self.scan_index(&scan, cursor.as_ref(), chunk).await?;
            more = full;
            scanned += skipped;
            let mut pipe = redis::pipe();
            for e in entries.iter().filter(|e| !e.id.is_empty()) {
                pipe.hgetall(k.incident(e.at.partition, &e.id));
            }
            let mut records: std::vec::IntoIter<HashMap<String, Vec<u8>>> = if pipe.is_empty() {
                Vec::new()
            } else {
                self.query_pipe(&pipe).await?
            }
            .into_iter();
            for (i, e) in entries.iter().enumerate() {
                scanned += 1;
                cursor = Some(e.at);
                // An entry of the ancestor's index naming none of the region's incidents.
                if e.id.is_empty() {
                    continue;
                }
                let fields = records.next().unwrap_or_default();
                let text = |n: &str| {
                    fields
                        .get(n)
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .unwrap_or("")
                };
                if fields.is_empty() || !scan.counts(e, text) {
                    continue;
                }
                let inc = codec::incident_from_fields(&e.id, &fields, &[], Vec::new())?;
                if matches(&inc, f) {
                    out.push(inc);
                    if out.len() == page_size {
                        more |= i + 1 < entries.len();
                        break;
                    }
                }
            }
        }
        let next = match (more, cursor) {
            (true, Some(c)) => c.token(),
            _ => String::new(),
        };
        Ok((out, next))
    }

    /// The next (at most `count`) entries of an index after `after`, newest first across
    /// partitions, whether more may follow, and how many entries of an ancestor's index
    /// naming none of the region's incidents were passed (the last of them, when no entry
    /// follows it, is returned as a place holder with no id, to carry the position).
    #[tracing::instrument(name = "index_scan", level = "debug", skip_all, fields(count, via = scan.via.is_some()))]
    pub(crate) async fn scan_index(
        &self,
        scan: &IndexScan,
        after: Option<&Cursor>,
        count: usize,
    ) -> Result<(Vec<IndexEntry>, bool, usize)> {
        let k = self.keys();
        // An index entry lists a dispatch batch: one incident when idle, up to a batch when
        // busy. Reading a few entries per partition keeps a page's read small either way. At
        // least two: the cursor's own entry is read again, so a full read always brings one
        // new entry and the scan advances.
        let per_read = count.div_ceil(8).max(2);
        // The ancestor's entries name the region's incidents among many others (a grid is
        // about one in thirty of its street's, in the sample): more of them per read.
        let reads = |source: u8| match source {
            0 => per_read,
            _ => per_read * VIA_READ_FACTOR,
        };
        let mut pipe = redis::pipe();
        // Per partition its index, and with `via` the ancestor's (source 1) from when it began.
        let mut sources: Vec<(u16, u8)> = Vec::new();
        for p in 0..k.partitions() {
            let index = if !scan.department.is_empty() {
                k.index_department(p, &scan.department)
            } else if !scan.region.is_empty() {
                k.index_region(p, &scan.region)
            } else {
                k.index_all(p)
            };
            let via = scan
                .via
                .as_ref()
                .map(|v| (k.index_region(p, &v.ancestor), &v.lower));
            for (source, (index, lower)) in
                std::iter::once((index, &scan.lower)).chain(via).enumerate()
            {
                let source = source as u8;
                // Entries at or after the cursor in the merged order (newest first, then the
                // higher partition and source first, then the later id within an entry): at
                // the cursor's own entry only its ids before the cursor's position remain, and
                // lower partitions' and sources'.
                let upper = match after {
                    Some(c) if (p, source) <= (c.partition, c.source) => {
                        format!("{}-{}", c.ms, c.seq)
                    }
                    Some(c) => format!("({}-{}", c.ms, c.seq),
                    None => scan.uppers[usize::from(p)].clone(),
                };
                pipe.cmd("XREVRANGE")
                    .arg(index)
                    .arg(upper)
                    .arg(lower)
                    .arg("COUNT")
                    .arg(reads(source));
                sources.push((p, source));
            }
        }
        // An entry lists one or more incidents (`i <id>`, or in a level's index that stands for
        // finer ones, `<finer codes> <id>`, repeated): one entry per batch.
        let lists: Vec<Vec<(String, Vec<String>)>> = self.query_pipe(&pipe).await?;
        let mut full = false;
        // A source that may hold more than it returned bounds the merge: nothing older than
        // its last entry can be placed before its next ones are read.
        let mut cut: Option<Cursor> = None;
        let mut entries: Vec<IndexEntry> = Vec::new();
        for ((p, source), list) in sources.into_iter().zip(lists) {
            let at = |ms, seq, pos| Cursor {
                ms,
                seq,
                partition: p,
                source,
                pos,
            };
            if list.len() == reads(source) {
                full = true;
                let last = list.last().and_then(|(id, _)| entry_time(id));
                if let Some((ms, seq)) = last {
                    cut = cut.max(Some(at(ms, seq, 0)));
                }
            }
            // The ancestor's entries name the region's incidents under their finer codes.
            let named = |field: &str| source == 0 || field.split('|').any(|c| c == scan.region);
            for (entry, fields) in list {
                let Some((ms, seq)) = entry_time(&entry) else {
                    continue;
                };
                let before = entries.len();
                let pairs = fields.chunks_exact(2).enumerate();
                entries.extend(pairs.filter_map(|(pos, f)| {
                    let at = at(ms, seq, pos as u32);
                    (named(&f[0]) && after.is_none_or(|c| at.older_than(c))).then(|| IndexEntry {
                        at,
                        id: f[1].clone(),
                    })
                }));
                // An entry naming none of them still moves the scan on: a place holder.
                let at = at(ms, seq, 0);
                if entries.len() == before && after.is_none_or(|c| at.older_than(c)) {
                    entries.push(IndexEntry {
                        at,
                        id: String::new(),
                    });
                }
            }
        }
        if let Some(cut) = cut {
            entries.retain(|e| !e.at.older_than(&cut));
        }
        entries.sort_unstable_by_key(|e| std::cmp::Reverse(e.at));
        // Place holders move the scan on without counting against `count`: of those after the
        // last incident kept, only the oldest stays (the next read starts at its position);
        // how many were passed is returned, so that a page's work stays bounded.
        let mut kept = Vec::with_capacity(count.min(entries.len()));
        let (mut skipped, mut tail) = (0, None);
        for e in entries {
            if e.id.is_empty() {
                skipped += 1;
                tail = Some(e);
                continue;
            }
            tail = None;
            if kept.len() == count {
                full = true;
                break;
            }
            kept.push(e);
        }
        kept.extend(tail);
        if skipped > 0 {
            metrics::counter!(gridroute_telemetry::names::INDEX_ENTRIES_PASSED_TOTAL)
                .increment(skipped as u64);
        }
        Ok((kept, full, skipped))
    }
}

/// The time and sequence of a stream entry id.
fn entry_time(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// Whether `token` has the form of a page token [`Store::list_incidents`] issues.
pub fn is_page_token(token: &str) -> bool {
    Cursor::parse(token).is_some()
}

/// The least a time window's scan starts after its end. Delays from report to index entry
/// beyond this are recorded per partition (`ixlag`) and widen the scan.
pub const MIN_INDEX_SLACK_MS: i64 = 60_000;

/// Which index to read, its bounds, and what makes one of its entries count.
#[derive(Debug, Clone)]
pub(crate) struct IndexScan {
    department: String,
    region: String,
    /// The ancestor's index that also names the region's incidents, from when it did.
    via: Option<Via>,
    start_ms: Option<i64>,
    end_ms: Option<i64>,
    lower: String,
    /// Per partition: where the newest-first scan starts.
    uppers: Vec<String>,
}

/// How many more entries a read of an ancestor's index takes than one of a region's own.
const VIA_READ_FACTOR: usize = 8;

/// A region's incidents indexed in an ancestor's entries (`--region-index-depth`).
#[derive(Debug, Clone)]
struct Via {
    ancestor: String,
    /// The scan's lower bound there: not before the depth was first recorded.
    lower: String,
}

/// Fields of the deployment's `meta` hash: the region index depth writers by transaction use,
/// and since when (ms, Redis' clock).
pub(crate) const META_REGION_DEPTH: &str = "region_index_depth";
pub(crate) const META_REGION_SINCE: &str = "region_index_since";

impl Store {
    /// The scan of the index that serves these filters. With a window's end, each partition's
    /// scan starts that far after it as the longest report → index-entry delay the partition
    /// has seen (at least a minute), so no incident reported within the window is missed.
    pub(crate) async fn index_scan(
        &self,
        department: &str,
        region: &str,
        ancestors: &[String],
        start_ms: Option<i64>,
        end_ms: Option<i64>,
    ) -> Result<IndexScan> {
        let k = self.keys();
        // Only a region read through its own index (no department) below the first level
        // reads the recorded depth; only a window's end reads the partitions' lags. Both go
        // in one round trip.
        let via_wanted = department.is_empty() && !region.is_empty() && !ancestors.is_empty();
        let mut pipe = redis::pipe();
        if via_wanted {
            pipe.cmd("HMGET")
                .arg(k.meta())
                .arg(META_REGION_DEPTH)
                .arg(META_REGION_SINCE);
        }
        if end_ms.is_some() {
            for p in 0..k.partitions() {
                pipe.cmd("ZMSCORE")
                    .arg(k.index_lag(p))
                    .arg("first")
                    .arg("assign");
            }
        }
        let replies = if via_wanted || end_ms.is_some() {
            self.raw_pipe(&pipe, false).await?
        } else {
            Vec::new()
        };
        let mut replies = replies.into_iter();
        let via = if via_wanted {
            let (depth, since): (Option<usize>, Option<i64>) = next_reply(&mut replies)?;
            match (depth, since) {
                (Some(d), Some(since)) if d >= 1 && ancestors.len() >= d => Some(Via {
                    ancestor: ancestors[d - 1].clone(),
                    lower: format!("{}-0", since.max(start_ms.unwrap_or(0)).max(0)),
                }),
                _ => None,
            }
        } else {
            None
        };
        let uppers = match end_ms {
            None => vec!["+".to_owned(); usize::from(k.partitions())],
            Some(end) => (0..k.partitions())
                .map(|_| {
                    let (first, assign): (Option<f64>, Option<f64>) = next_reply(&mut replies)?;
                    let mut lag = first.unwrap_or(0.0);
                    if !department.is_empty() {
                        lag = lag.max(assign.unwrap_or(0.0));
                    }
                    let slack = (lag as i64).max(MIN_INDEX_SLACK_MS);
                    Ok(format!("{}", end.max(0).saturating_add(slack)))
                })
                .collect::<Result<Vec<_>>>()?,
        };
        Ok(IndexScan {
            department: department.to_owned(),
            region: region.to_owned(),
            via,
            start_ms,
            end_ms,
            // Indexed at or after the report: the window's start bounds the index exactly.
            lower: start_ms.map_or_else(|| "-".to_owned(), |s| format!("{}-0", s.max(0))),
            uppers,
        })
    }
}

/// The next reply of a pipeline, as `T`.
fn next_reply<T: redis::FromRedisValue>(
    replies: &mut impl Iterator<Item = redis::Value>,
) -> Result<T> {
    let v = replies
        .next()
        .ok_or_else(|| StoreError::Internal("a pipeline's reply missing".into()))?;
    crate::decoded(v)
}

impl IndexScan {
    /// Whether the incident was reported within the window (whichever index entry named it).
    pub(crate) fn in_window<'a>(&self, field: impl Fn(&str) -> &'a str) -> bool {
        let reported: Option<i64> = field("reported_at").parse().ok();
        reported.is_none_or(|r| {
            self.start_ms.is_none_or(|s| r >= s) && self.end_ms.is_none_or(|end| r < end)
        })
    }

    /// Whether an entry counts, given its record's text fields: reported within the window,
    /// and for a department's index, the entry of the department's latest assignment.
    pub(crate) fn counts<'a>(&self, e: &IndexEntry, field: impl Fn(&str) -> &'a str) -> bool {
        let in_window = self.in_window(&field);
        let current = self.department.is_empty()
            || field("dept_at")
                .parse::<u64>()
                .ok()
                .is_none_or(|at| e.at.ms >= at);
        in_window && current
    }
}

/// One entry of an index: where it is in the merged order, and the incident it names.
#[derive(Debug, Clone)]
pub(crate) struct IndexEntry {
    pub(crate) at: Cursor,
    pub(crate) id: String,
}

/// A position in the merged order of an index: an entry, and an incident within it. The
/// derived order (fields in this order) is the merged order, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Cursor {
    ms: u64,
    seq: u64,
    pub(crate) partition: u16,
    /// Which index of the partition: 0 its own, 1 the ancestor's (`Via`).
    source: u8,
    /// Which of the entry's incidents (0 = the first listed, which comes last).
    pos: u32,
}

impl Cursor {
    /// Parses `<ms>-<seq>~<partition>[.<pos>][:<source>]`.
    fn parse(token: &str) -> Option<Self> {
        let (id, p) = token.split_once('~')?;
        let (ms, seq) = entry_time(id)?;
        let (p, source) = p.split_once(':').unwrap_or((p, "0"));
        let (p, pos) = p.split_once('.').unwrap_or((p, "0"));
        Some(Self {
            ms,
            seq,
            partition: p.parse().ok()?,
            source: source.parse().ok().filter(|s| *s <= 1)?,
            pos: pos.parse().ok()?,
        })
    }

    fn token(&self) -> String {
        let mut t = format!("{}-{}~{}", self.ms, self.seq, self.partition);
        if self.pos > 0 {
            t.push_str(&format!(".{}", self.pos));
        }
        if self.source > 0 {
            t.push_str(&format!(":{}", self.source));
        }
        t
    }

    /// Whether this position comes after `other` in a newest-first scan.
    fn older_than(&self, other: &Self) -> bool {
        self < other
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
