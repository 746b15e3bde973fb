//! A router's first dispatches written with plain commands in one `MULTI`/`EXEC` transaction
//! instead of `lua/dispatch.lua` (`gridroute serve --transactions`), on the router's own
//! connection (`resp::Direct`: one Redis or Sentinel over TCP; a `WATCH` belongs to its
//! connection, and this one is the router's alone).
//!
//! Why: the script's own Lua costs Redis about as much as the commands it runs
//! (docs/PERFORMANCE.md). Exactly-once is kept as the reports' transactions keep it
//! (`transact.rs`): one round trip `WATCH`es the batch's records and reads what the script
//! reads of them; the dispatch decides per entry as the script does (routable state, the
//! entry's generation, once per batch); a second round trip sends `MULTI`, the writes, the ack
//! of every entry of the batch, and `EXEC`, which Redis refuses (nothing is
//! written) when a record changed meanwhile: another router dispatching a redelivered entry,
//! or a department acting on the case. The batch is then read and decided again.
//!
//! The stored forms are the script's, field for field, but for `dept_at`: a first dispatch has
//! exactly one entry in its department's index, which readers count when the record has no
//! `dept_at` (docs/ARCHITECTURE.md, "Writes without scripts"). A re-route (a later route
//! generation) or an incident already indexed needs `dept_at`, the id of the index entry
//! written in the same call, which a transaction cannot read before it commits: a batch holding
//! one goes to the script, as does a batch whose records kept changing, or whose transaction
//! Redis answered with an error (the script then sorts out which entry it was).

use std::collections::{HashMap, HashSet};
use std::io::Write;

use gridroute_core::{
    lifecycle::{self, Status},
    table::fnv1a,
};
use gridroute_telemetry::names;
use redis::{RedisWrite, ToRedisArgs};

use crate::{
    Result, Store, StoreError,
    dispatch::DispatchWrite,
    keys::{ROUTER_GROUP, kind},
    resp::{Direct, RespBatch, Rows},
};

/// The record's fields a dispatch decides on, as `lua/dispatch.lua` reads them.
const READ: [&[u8]; 6] = [
    b"status",
    b"gen",
    b"v",
    b"first_dispatched_at",
    b"ix",
    b"reported_at",
];

/// How many times a batch is read and written again after a watched record changed, before
/// it goes to the script (which needs no retries: it runs alone).
const ATTEMPTS: usize = 4;

/// A report → index-entry delay beyond this raises the partition's index lag (as the script).
const LATE_MS: i64 = 60_000;

/// FNV-1a (the core's [`fnv1a`]) for the batch's small maps of short keys (ids, index keys): the
/// standard hasher's SipHash, built against untrusted keys, cost more per incident than the
/// rest of the gathering. These keys come from the router's own routing, not from callers.
#[derive(Default)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        // A key hashes as several writes (a tuple's parts, a string's end marker).
        self.0 = self.0.rotate_left(5) ^ fnv1a(bytes);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type FnvBuild = std::hash::BuildHasherDefault<Fnv>;

/// What the read says about an entry the batch dispatches.
#[derive(Debug, PartialEq)]
struct Due {
    /// The record's version after the dispatch.
    version: i64,
    /// `first_dispatched_at`: the record's, else the dispatch time.
    first_at: i64,
    /// Report → dispatch delay (ms).
    late: i64,
}

/// Why a batch goes to the script (the `reason` of the fallback counter).
#[derive(Debug, PartialEq)]
enum ToScript {
    /// An entry needs `dept_at` (a re-route, or an incident already indexed).
    NeedsDeptAt,
}

/// Per entry, whether the batch dispatches it (and with what), decided from the records as
/// `lua/dispatch.lua` decides: the incident is in a routable state, at the entry's generation,
/// and not dispatched earlier in the batch.
fn decide(
    members: &[&DispatchWrite],
    current: &Rows,
) -> std::result::Result<Vec<Option<Due>>, ToScript> {
    let routable = |s: &[u8]| {
        lifecycle::ROUTABLE
            .iter()
            .any(|r| r.as_str().as_bytes() == s)
    };
    let int = |v: Option<&[u8]>| -> Option<i64> { std::str::from_utf8(v?).ok()?.parse().ok() };
    let mut seen = HashSet::with_capacity_and_hasher(members.len(), FnvBuild::default());
    let mut out = Vec::with_capacity(members.len());
    for (row, w) in members.iter().enumerate() {
        let field = |i: usize| current.get(row, i);
        let dispatches = field(0).is_some_and(routable)
            && field(1) == Some(w.generation.as_bytes())
            && seen.insert((w.incident_id.as_str(), w.generation.as_str()));
        if !dispatches {
            out.push(None);
            continue;
        }
        if w.generation != "0" || field(4).is_some() {
            return Err(ToScript::NeedsDeptAt);
        }
        let now = w.dispatched_ms;
        let at = |i: usize| int(field(i));
        out.push(Some(Due {
            version: at(2).unwrap_or(0) + 1,
            first_at: at(3).unwrap_or(now),
            late: now - at(5).unwrap_or(now),
        }));
    }
    Ok(out)
}

/// The first round trip: `WATCH` the records, then `HMGET` of each.
fn watch_and_read(k: &crate::Keys, p: u16, members: &[&DispatchWrite]) -> Result<RespBatch> {
    let mut b = RespBatch::with_capacity(members.len() * (2 * k.part_len() + 160));
    b.command(1 + members.len()).write_arg(b"WATCH");
    for w in members {
        k.write_part(&mut b, p, &[kind::INCIDENT, &w.incident_id]);
    }
    for w in members {
        b.command(2 + READ.len()).write_arg(b"HMGET");
        k.write_part(&mut b, p, &[kind::INCIDENT, &w.incident_id]);
        for f in READ {
            b.write_arg(f);
        }
    }
    b.finish()
}

/// An index key by its kind and piece (`kind::INDEX_REGION`, a code).
type IndexKey<'a> = (&'a str, &'a str);
/// An incident in an index entry: its field (`None`: `i`; else its finer codes) and its id.
type Named<'a> = (Option<String>, &'a str);

/// One number as an argument, as the client library writes it.
fn num(b: &mut RespBatch, n: i64) {
    n.write_redis_args(b);
}

/// The second round trip: what `lua/dispatch.lua` writes for the entries `plan` dispatches,
/// and the ack of every entry (trimmed later, `trim_acked.lua`), in `MULTI`…`EXEC`.
/// With `packed`, the batch's changes go into one events entry (`crate::events`).
fn transaction<'a>(
    k: &crate::Keys,
    p: u16,
    members: &[&'a DispatchWrite],
    plan: &[Option<Due>],
    packed: bool,
    region_depth: usize,
) -> Result<RespBatch> {
    // What the batch writes, from above, so that the buffer is allocated once: growing it
    // copies what is written so far (a batch of 128 is about 250 KB).
    let size: usize = members
        .iter()
        .map(|w| {
            let regions: usize = w.region_codes.iter().map(|c| c.len() + 1).sum();
            // The id is written in the record's key, its events entry, each department
            // entry, each index entry, the timer head and the duplicate set.
            let ids = 6 + w.deliveries.len() + w.region_codes.len();
            w.decision.len()
                + 2 * w.event.len()
                + w.schedule.text.len()
                + 2 * regions
                + ids * (w.incident_id.len() + 8)
                + w.deliveries
                    .iter()
                    .map(|(_, d)| d.len() + w.traceparent.len() + 200)
                    .sum::<usize>()
                + 12 * k.part_len()
                + 600
        })
        .sum();
    let mut b = RespBatch::with_capacity(size);
    b.all(&[b"MULTI"]);
    let status = Status::Dispatched.as_str();
    let dispatched = status.as_bytes();
    let mut packer = packed.then(crate::events::Packer::default);
    let (events, lag) = (k.events(p), k.index_lag(p));
    let mut regions = String::new();
    // One argument put together before it is written (RESP gives its length first).
    let mut scratch: Vec<u8> = Vec::with_capacity(256);
    // Index entries per key in the order keys were first seen (as `lua/batch_index.lua`),
    // each key named by its kind and piece (written at the end, not built per incident).
    // An incident is named `i`, or in a level's index standing for finer ones, by those codes.
    let mut index: Vec<(IndexKey<'a>, Vec<Named<'a>>)> = Vec::new();
    // Where each key is in `index`: a batch of a hundred names a few hundred grids and
    // communities, too many to search the list for each.
    let mut places: HashMap<(&str, &str), usize, FnvBuild> =
        HashMap::with_capacity_and_hasher(8 * members.len(), FnvBuild::default());
    let mut timers: Vec<(i64, &'a str)> = Vec::new();
    for (w, due) in members.iter().zip(plan) {
        let Some(due) = due else { continue };
        let id = w.incident_id.as_str();
        w.regions_into(&mut regions);
        // The record: status and assignment, deadlines, schedule, the first dispatch's timeline
        // entry (`tl1`, in the record like the report's `tl0`).
        let pairs = 12 + usize::from(w.estimated) + usize::from(w.duplicates.is_some());
        b.command(2 + 2 * pairs).write_arg(b"HSET");
        k.write_part(&mut b, p, &[kind::INCIDENT, id]);
        b.write_arg(b"status");
        b.write_arg(dispatched);
        b.write_arg(b"dept");
        b.write_arg(w.department.as_bytes());
        b.write_arg(b"decision");
        b.write_arg(&w.decision);
        b.write_arg(b"dispatched_at");
        num(&mut b, w.dispatched_ms);
        b.write_arg(b"accept_due");
        num(&mut b, w.accept_due_ms);
        b.write_arg(b"resolve_due");
        num(&mut b, w.resolve_due_ms);
        b.write_arg(b"timers");
        b.write_arg(w.schedule.text.as_bytes());
        b.write_arg(b"regions");
        b.write_arg(regions.as_bytes());
        b.write_arg(b"v");
        num(&mut b, due.version);
        b.write_arg(b"first_dispatched_at");
        num(&mut b, due.first_at);
        b.write_arg(b"ix");
        b.write_arg(b"1");
        b.write_arg(b"tl1");
        scratch.clear();
        scratch.extend_from_slice(itoa::Buffer::new().format(w.dispatched_ms).as_bytes());
        scratch.push(b'|');
        scratch.extend_from_slice(&w.event);
        b.write_arg(&scratch);
        if w.estimated {
            b.write_arg(b"est");
            b.write_arg(b"1");
        }
        if let Some((category, _, _)) = &w.duplicates {
            b.write_arg(b"geo");
            k.write_part(&mut b, p, &[kind::DUPLICATES, category]);
        }
        // The change, for WatchIncidents.
        if let Some(packer) = &mut packer {
            packer.push(id, status, &w.department, &regions, &w.event);
        } else {
            b.command(13).write_arg(b"XADD");
            b.write_arg(events.as_bytes());
            b.write_arg(b"*");
            b.write_arg(b"id");
            b.write_arg(id.as_bytes());
            b.write_arg(b"s");
            b.write_arg(dispatched);
            b.write_arg(b"d");
            b.write_arg(w.department.as_bytes());
            b.write_arg(b"r");
            b.write_arg(regions.as_bytes());
            b.write_arg(b"e");
            b.write_arg(&w.event);
        }
        if due.late > LATE_MS {
            b.command(5).write_arg(b"ZADD");
            b.write_arg(lag.as_bytes());
            b.write_arg(b"GT");
            num(&mut b, due.late);
            b.write_arg(b"first");
        }
        let mut gather = |key: (&'a str, &'a str), field: Option<String>| match places.get(&key) {
            Some(&i) => index[i].1.push((field, id)),
            None => {
                places.insert(key, index.len());
                index.push((key, vec![(field, id)]));
            }
        };
        gather((kind::INDEX_DEPARTMENT, &w.department), None);
        gather((kind::INDEX_ALL, ""), None);
        for (code, field) in crate::dispatch::region_entries(&w.region_codes, region_depth) {
            gather((kind::INDEX_REGION, code), field);
        }
        if let Some((category, lng, lat)) = &w.duplicates {
            b.command(5).write_arg(b"GEOADD");
            k.write_part(&mut b, p, &[kind::DUPLICATES, category]);
            // Writing into a vector does not fail.
            for c in [lng, lat] {
                scratch.clear();
                let _ = write!(scratch, "{c:.7}");
                b.write_arg(&scratch);
            }
            b.write_arg(id.as_bytes());
        }
        if let Some((due, member)) = &w.schedule.head {
            timers.push((*due, member.as_str()));
        }
        for (department, payload) in &w.deliveries {
            b.command(11).write_arg(b"XADD");
            k.write_part(&mut b, p, &[kind::DISPATCH, department]);
            b.write_arg(b"*");
            b.write_arg(b"id");
            b.write_arg(id.as_bytes());
            b.write_arg(b"g");
            b.write_arg(w.generation.as_bytes());
            b.write_arg(b"d");
            b.write_arg(payload);
            b.write_arg(b"tp");
            b.write_arg(w.traceparent.as_bytes());
        }
    }
    if let Some(packer) = packer.filter(|p| !p.is_empty()) {
        b.command(5).write_arg(b"XADD");
        b.write_arg(events.as_bytes());
        b.write_arg(b"*");
        b.write_arg(crate::events::PACKED_FIELD.as_bytes());
        b.write_arg(packer.value());
    }
    if !timers.is_empty() {
        b.command(2 + 2 * timers.len()).write_arg(b"ZADD");
        b.write_arg(k.sla(p).as_bytes());
        for (due, member) in &timers {
            num(&mut b, *due);
            b.write_arg(member.as_bytes());
        }
    }
    for ((kind, piece), ids) in &index {
        b.command(3 + 2 * ids.len()).write_arg(b"XADD");
        k.write_part(&mut b, p, &[kind, piece]);
        b.write_arg(b"*");
        for (field, id) in ids {
            b.write_arg(field.as_deref().unwrap_or("i").as_bytes());
            b.write_arg(id.as_bytes());
        }
    }
    let ingest = k.ingest(p);
    b.command(3 + members.len()).write_arg(b"XACK");
    b.write_arg(ingest.as_bytes());
    b.write_arg(ROUTER_GROUP.as_bytes());
    for w in members {
        b.write_arg(w.entry_id.as_bytes());
    }
    b.all(&[b"EXEC"]);
    b.finish()
}

impl Store {
    /// Dispatches the writes of one partition group by transaction (see the module
    /// documentation). Returns per write whether it dispatched (`false`: that generation was
    /// already dispatched), or `None` when the group goes to the script.
    #[tracing::instrument(name = "dispatch_transaction", level = "debug", skip_all, fields(writes = members.len()))]
    pub(crate) async fn dispatch_transaction(
        &self,
        d: &mut Direct,
        p: u16,
        members: &[&DispatchWrite],
    ) -> Result<Option<Vec<bool>>> {
        let started = std::time::Instant::now();
        let done = self
            .dispatch_attempts(d, p, members)
            .await
            .inspect_err(|e| crate::record_error("dispatch_transaction", e))?;
        metrics::histogram!(names::REDIS_DURATION_SECONDS, "op" => "dispatch_transaction")
            .record(started.elapsed().as_secs_f64());
        Ok(done)
    }

    /// [`Store::dispatch_transaction`]'s reads, decisions and transactions.
    async fn dispatch_attempts(
        &self,
        d: &mut Direct,
        p: u16,
        members: &[&DispatchWrite],
    ) -> Result<Option<Vec<bool>>> {
        let k = self.keys();
        let to_script = |reason: &'static str| {
            metrics::counter!(names::TRANSACTION_FALLBACKS_TOTAL, "op" => "dispatch", "reason" => reason)
                .increment(1);
            tracing::debug!(reason, "the batch goes to the dispatch script");
            Ok(None)
        };
        for _ in 0..ATTEMPTS {
            let read = watch_and_read(k, p, members)?;
            // One row per member: the read checks every reply's shape.
            let current = match d.watch_read(&read, READ.len()).await {
                Ok(c) => c,
                Err(e @ StoreError::Unavailable(_)) => return Err(e),
                Err(_) => {
                    // A record that is not a hash, say: the script tells which entry it was.
                    d.unwatch().await?;
                    return to_script("error");
                }
            };
            let plan = match decide(members, &current) {
                Ok(plan) => plan,
                Err(ToScript::NeedsDeptAt) => {
                    d.unwatch().await?;
                    return to_script("dept_at");
                }
            };
            let tx = transaction(
                k,
                p,
                members,
                &plan,
                self.packed_events,
                self.region_index_depth,
            )?;
            match d.exec(&tx).await {
                Ok(true) => return Ok(Some(plan.iter().map(Option::is_some).collect())),
                Ok(false) => {
                    metrics::counter!(names::TRANSACTION_RETRIES_TOTAL, "op" => "dispatch")
                        .increment(1);
                }
                Err(e @ StoreError::Unavailable(_)) => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "a dispatch transaction failed");
                    return to_script("error");
                }
            }
        }
        to_script("contended")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(id: &str, generation: &str) -> DispatchWrite {
        DispatchWrite {
            partition: 0,
            entry_id: "1-1".into(),
            generation: generation.into(),
            incident_id: id.into(),
            department: "water".into(),
            decision: std::sync::Arc::from(&b""[..]),
            region_codes: std::sync::Arc::from(Vec::<String>::new()),
            dispatched_ms: 100_000,
            accept_due_ms: 0,
            resolve_due_ms: 0,
            estimated: false,
            event: std::sync::Arc::from(&b""[..]),
            deliveries: Vec::new(),
            schedule: crate::schedule::Written::of(id, &[]),
            duplicates: None,
            traceparent: String::new(),
        }
    }

    /// The script's decision: a routable state at the entry's generation, once per batch;
    /// what it read gives the version, the first dispatch time and the delay.
    #[test]
    fn entries_are_dispatched_as_the_script_decides() {
        let reported = [
            Some("reported"),
            Some("0"),
            Some("1"),
            None,
            None,
            Some("30000"),
        ];
        let ws = [
            write("a", "0"),
            write("a", "0"),
            write("b", "0"),
            write("c", "0"),
            write("d", "0"),
            write("e", "0"),
        ];
        let members: Vec<&DispatchWrite> = ws.iter().collect();
        let current = Rows::of(&[
            (reported),
            (reported),
            // Already dispatched (a redelivery).
            ([
                Some("dispatched"),
                Some("0"),
                Some("2"),
                Some("5"),
                Some("1"),
                Some("1"),
            ]),
            // Returned, and routed again since: this entry's generation is past.
            ([
                Some("returned"),
                Some("1"),
                Some("3"),
                Some("5"),
                Some("1"),
                Some("1"),
            ]),
            // Gone (erased, or never written).
            ([None; 6]),
            // Returned at this generation, first dispatched earlier, no report time.
            ([Some("returned"), Some("0"), None, Some("7"), None, None]),
        ]);
        let plan = decide(&members, &current).unwrap();
        let due = |version, first_at, late| {
            Some(Due {
                version,
                first_at,
                late,
            })
        };
        assert_eq!(
            plan,
            [
                due(2, 100_000, 70_000),
                None,
                None,
                None,
                None,
                due(1, 7, 0)
            ]
        );
    }

    /// A re-route, or an incident already indexed, needs `dept_at`: the script's.
    #[test]
    fn what_needs_dept_at_goes_to_the_script() {
        let reroute = write("a", "1");
        let returned = [
            Some("returned"),
            Some("1"),
            Some("2"),
            Some("5"),
            Some("1"),
            None,
        ];
        assert_eq!(
            decide(&[&reroute], &Rows::of(&[returned])),
            Err(ToScript::NeedsDeptAt)
        );
        let indexed = write("a", "0");
        let with_ix = [
            Some("reported"),
            Some("0"),
            Some("1"),
            None,
            Some("1"),
            None,
        ];
        assert_eq!(
            decide(&[&indexed], &Rows::of(&[with_ix])),
            Err(ToScript::NeedsDeptAt)
        );
        // The same entries skipped (not dispatchable) do not send the batch to the script.
        let dispatched = [
            Some("dispatched"),
            Some("1"),
            Some("2"),
            Some("5"),
            Some("1"),
            None,
        ];
        assert_eq!(
            decide(&[&reroute], &Rows::of(&[dispatched])),
            Ok(vec![None])
        );
    }
}
