//! Redis' side of moving closed incidents to the archive: which are due, reading each whole,
//! removing it once the archive holds it, and removing index entries that name only archived
//! incidents (so that Redis memory stays flat while cases close and age out).
//!
//! Each partition keeps its closed (or cancelled) incidents in a sorted set by closing time,
//! written by the same script as the closing action (a reopened case leaves it). The mover
//! (`gridroute_router::archive`) takes those older than the hot period, writes them to
//! PostgreSQL, then calls [`Store::remove_archived`], which removes the record only if it is
//! still the version that was written: a case that changed in between stays in Redis.

use std::collections::{BTreeSet, HashMap};

use gridroute_proto::v1 as pb;
use gridroute_telemetry::names;

use crate::{Result, Store, StoreError, keys};

/// A closed incident due for the archive, read whole.
#[derive(Debug, Clone)]
pub struct ArchiveCandidate {
    pub partition: u16,
    /// The record with its timeline, as `GetIncident` returns it.
    pub incident: pb::Incident,
    /// The record's version it was read at.
    pub version: String,
    /// Its record's fields (text), for the figures the archive keeps.
    pub fields: HashMap<String, String>,
    /// When it closed (ms).
    pub closed_ms: i64,
}

impl ArchiveCandidate {
    /// A text field of the record ("" when absent).
    pub fn text(&self, name: &str) -> &str {
        self.fields.get(name).map_or("", String::as_str)
    }
}

/// What became of a candidate when it was to be removed from Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Removed: the archive is now its only home.
    Removed,
    /// The record changed since it was read (reopened, feedback …): it stays in Redis.
    Changed,
    /// Already gone (another replica's mover removed it).
    Gone,
}

impl Store {
    /// Incidents closed before `closed_before_ms`, oldest first, at most `per_partition` of
    /// each partition, read whole.
    pub async fn archive_candidates(
        &self,
        closed_before_ms: i64,
        per_partition: usize,
    ) -> Result<Vec<ArchiveCandidate>> {
        let k = self.keys();
        let mut pipe = redis::pipe();
        for p in 0..k.partitions() {
            pipe.cmd("ZRANGEBYSCORE")
                .arg(k.archive_due(p))
                .arg("-inf")
                .arg(format!("({closed_before_ms}"))
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(0)
                .arg(per_partition);
        }
        let due: Vec<Vec<(String, f64)>> = self.query_pipe(&pipe).await?;
        let mut out = Vec::new();
        for (p, ids) in due.into_iter().enumerate() {
            let p = p as u16;
            for (id, closed) in ids {
                match self.read_candidate(p, &id, closed as i64).await {
                    Ok(c) => out.push(c),
                    // Not a record any more: nothing to archive, nothing to keep listed.
                    Err(StoreError::NotFound(_)) => {
                        let mut c = self.conn();
                        let _: i64 = redis::cmd("ZREM")
                            .arg(k.archive_due(p))
                            .arg(&id)
                            .query_async(&mut c)
                            .await?;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(out)
    }

    /// How many closed incidents are past `closed_before_ms` and still in Redis.
    pub async fn archive_due_count(&self, closed_before_ms: i64) -> Result<u64> {
        let k = self.keys();
        let mut pipe = redis::pipe();
        for p in 0..k.partitions() {
            pipe.cmd("ZCOUNT")
                .arg(k.archive_due(p))
                .arg("-inf")
                .arg(format!("({closed_before_ms}"));
        }
        let counts: Vec<u64> = self.query_pipe(&pipe).await?;
        Ok(counts.iter().sum())
    }

    async fn read_candidate(&self, p: u16, id: &str, closed_ms: i64) -> Result<ArchiveCandidate> {
        // One read: the version written to the archive is the version of what is written.
        let (incident, fields) = self.read_record(p, id).await?;
        let fields: HashMap<String, String> = fields
            .into_iter()
            .filter_map(|(k, v)| Some((k, String::from_utf8(v).ok()?)))
            .collect();
        Ok(ArchiveCandidate {
            partition: p,
            incident,
            version: fields.get("v").cloned().unwrap_or_else(|| "0".to_owned()),
            fields,
            closed_ms,
        })
    }

    /// Removes an archived incident from Redis (record, timeline, merged set, work lists) if
    /// its record is still at the version that was archived.
    pub async fn remove_archived(&self, c: &ArchiveCandidate) -> Result<Removal> {
        let k = self.keys();
        let (p, id) = (c.partition, c.incident.incident_id.as_str());
        let mut keys = vec![
            k.incident(p, id),
            k.timeline(p, id),
            k.merged(p, id),
            k.archive_due(p),
            k.closed(p),
        ];
        // The claim of the report that made it (the same partition: one slot).
        if let Some(r) = c.incident.report.as_ref() {
            keys.push(k.idempotency(p, &r.source_system, &r.request_id));
        }
        let ttl = crate::ingest::IDEMPOTENCY_TTL_SECS.to_string();
        let mut pipe = redis::pipe();
        crate::scripts::evalsha(
            &mut pipe,
            &crate::scripts::REMOVE_ARCHIVED,
            &keys,
            &[c.version.as_bytes(), id.as_bytes(), ttl.as_bytes()],
        );
        let code: i64 = self.run_script(&mut pipe, "remove_archived").await?;
        if code >= 1 {
            // The reporter's ledger keeps its newest entries; older ones count in its total.
            self.fold_points(p, c.incident.report.as_ref()).await?;
        }
        if code == 2 {
            metrics::counter!(names::CLAIMS_RELEASED_TOTAL).increment(1);
        }
        Ok(match code {
            1 | 2 => {
                metrics::counter!(names::ARCHIVED_TOTAL).increment(1);
                Removal::Removed
            }
            -2 => Removal::Gone,
            _ => Removal::Changed,
        })
    }

    /// The index streams that may name an incident (see [`index_streams`]).
    pub fn index_streams_of(&self, c: &ArchiveCandidate) -> BTreeSet<String> {
        index_streams(self.keys(), c)
    }

    /// Removes the entries of `streams` older than `before_ms` that name only incidents no
    /// longer in Redis (at most `max_scanned` entries read per stream). An entry naming a live
    /// incident stays, whatever its age: lists still find long-running cases. Returns how
    /// many entries were removed.
    pub async fn compact_indexes(
        &self,
        streams: &BTreeSet<String>,
        before_ms: i64,
        max_scanned: usize,
    ) -> Result<u64> {
        let k = self.keys();
        let streams: Vec<(&String, u16)> = streams
            .iter()
            .filter_map(|s| Some((s, partition_of_key(s)?)))
            .collect();
        if streams.is_empty() {
            return Ok(0);
        }
        // Three round trips for all the streams: their old entries, whether the incidents
        // they name still have records, and the removal of the entries naming none.
        let mut pipe = redis::pipe();
        for (stream, _) in &streams {
            pipe.cmd("XRANGE")
                .arg(*stream)
                .arg("-")
                .arg(format!("({before_ms}-0"))
                .arg("COUNT")
                .arg(max_scanned);
        }
        let entries: Vec<Vec<(String, Vec<String>)>> = self.query_pipe(&pipe).await?;
        // Every pair names an incident: `i <id>`, or in a level's index that stands for finer
        // ones (`--region-index-depth`), `<finer codes> <id>`.
        let named = |fields: &[String]| -> Vec<String> {
            fields.chunks_exact(2).map(|f| f[1].clone()).collect()
        };
        let mut pipe = redis::pipe();
        let mut asked = 0;
        for ((_, p), list) in streams.iter().zip(&entries) {
            for (_, fields) in list {
                for id in named(fields) {
                    pipe.exists(k.incident(*p, &id));
                    asked += 1;
                }
            }
        }
        if asked == 0 {
            return Ok(0);
        }
        let mut live = self.query_pipe::<bool>(&pipe).await?.into_iter();
        let mut pipe = redis::pipe();
        let mut deleting = false;
        for ((stream, _), list) in streams.iter().zip(&entries) {
            let mut dead = Vec::new();
            for (entry, fields) in list {
                // Every answer is taken, so that the next entry's are its own.
                let answers: Vec<bool> = named(fields)
                    .iter()
                    .map(|_| live.next().unwrap_or(true))
                    .collect();
                if !answers.contains(&true) {
                    dead.push(entry.as_str());
                }
            }
            if !dead.is_empty() {
                pipe.cmd("XDEL").arg(*stream).arg(dead);
                deleting = true;
            }
        }
        let removed: u64 = if deleting {
            self.query_pipe::<u64>(&pipe).await?.iter().sum()
        } else {
            0
        };
        if removed > 0 {
            metrics::counter!(names::INDEX_ENTRIES_COMPACTED_TOTAL).increment(removed);
        }
        Ok(removed)
    }
}

/// The index streams that may name an incident: the partition's `all`, its regions' and
/// every department that held it.
pub fn index_streams(k: &keys::Keys, c: &ArchiveCandidate) -> BTreeSet<String> {
    let p = c.partition;
    let mut out = BTreeSet::from([k.index_all(p)]);
    for r in c.text("regions").split(',').filter(|r| !r.is_empty()) {
        out.insert(k.index_region(p, r));
    }
    let departments = std::iter::once(c.text("dept"))
        .chain(c.text("returned_by").split(','))
        .chain(c.incident.returned_by.iter().map(String::as_str))
        // Every department a dispatch went to (a timeline entry names it).
        .chain(c.incident.timeline.iter().map(|e| e.department_id.as_str()))
        .chain(c.incident.decision.iter().map(|d| d.department_id.as_str()));
    for d in departments.filter(|d| !d.is_empty()) {
        out.insert(k.index_department(p, d));
    }
    out
}

/// The partition of a partition key (`<prefix>:{p<n>}:…`).
fn partition_of_key(key: &str) -> Option<u16> {
    let start = key.find("{p")? + 2;
    let end = start + key[start..].find('}')?;
    key[start..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partition_of_an_index_key_is_read_back() {
        let k = keys::Keys::new("gr", 8);
        assert_eq!(partition_of_key(&k.index_all(5)), Some(5));
        assert_eq!(partition_of_key(&k.index_region(7, "420102")), Some(7));
        assert_eq!(partition_of_key("gr:meta"), None);
    }

    #[test]
    fn an_incident_is_looked_for_in_every_index_that_may_name_it() {
        let store_keys = keys::Keys::new("gr", 4);
        let c = ArchiveCandidate {
            partition: 1,
            incident: pb::Incident {
                incident_id: "x".into(),
                ..Default::default()
            },
            version: "3".into(),
            fields: HashMap::from([
                ("regions".to_owned(), "42,4201".to_owned()),
                ("dept".to_owned(), "police".to_owned()),
                ("returned_by".to_owned(), "sanitation".to_owned()),
            ]),
            closed_ms: 0,
        };
        let want = [
            store_keys.index_all(1),
            store_keys.index_region(1, "42"),
            store_keys.index_region(1, "4201"),
            store_keys.index_department(1, "police"),
            store_keys.index_department(1, "sanitation"),
        ];
        let streams = index_streams(&store_keys, &c);
        for w in want {
            assert!(streams.contains(&w), "{w} in {streams:?}");
        }
    }
}
