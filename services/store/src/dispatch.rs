//! Dispatching routed entries: the record, its timeline, events, the head of its SLA schedule,
//! the indexes and the departments' streams, written with one script call per batch and
//! partition; and finding the open incidents a new report may duplicate.

use std::sync::Arc;

use gridroute_core::lifecycle;

use redis::RedisWrite;

use crate::{
    Result, Store,
    keys::{ROUTER_GROUP, kind},
    schedule, scripts,
};

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
    /// Encoded `RouteDecision` (shared with the router's cache of common decisions, as are
    /// the region codes and the timeline event: not copied per incident).
    pub decision: Arc<[u8]>,
    /// Region codes of the grid path, for the region indexes.
    pub region_codes: Arc<[String]>,
    /// Dispatch time (Redis clock, ms).
    pub dispatched_ms: i64,
    /// Accept deadline (ms).
    pub accept_due_ms: i64,
    /// Resolve deadline (ms).
    pub resolve_due_ms: i64,
    /// A deadline was counted past the calendar's horizon (record field `est`).
    pub estimated: bool,
    /// Encoded timeline event.
    pub event: Arc<[u8]>,
    /// One (department, encoded `Dispatch`) per receiving department, primary first.
    pub deliveries: Vec<(String, Vec<u8>)>,
    /// The SLA schedule of the dispatch, as written (the record's field and the head).
    pub schedule: schedule::Written,
    /// When the category has duplicate detection: its category key and the point (lng, lat).
    pub duplicates: Option<(String, f64, f64)>,
    /// W3C traceparent of the dispatch ('' = none), carried to the subscribers.
    pub traceparent: String,
}

impl DispatchWrite {
    /// The region codes comma-separated, as the record's `regions` and the events' `r` hold
    /// them, into `out` (cleared first; a buffer reused across a batch).
    pub(crate) fn regions_into(&self, out: &mut String) {
        out.clear();
        for (i, code) in self.region_codes.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(code);
        }
    }
}

/// The region index entries of an incident whose grid path is `codes` (root first), with
/// index depth `depth` (`--region-index-depth`; 0: every level): per index, its level's code
/// and the field naming the incident there, `i`, or at the last level written when the path
/// goes deeper, the finer codes joined by `|` (what a finer region's list looks for).
pub(crate) fn region_entries(
    codes: &[String],
    depth: usize,
) -> impl Iterator<Item = (&str, Option<String>)> {
    let written = match depth {
        0 => codes.len(),
        d => d.min(codes.len()),
    };
    codes[..written]
        .iter()
        .enumerate()
        .map(move |(level, code)| {
            let finer =
                (level + 1 == written && written < codes.len()).then(|| codes[written..].join("|"));
            (code.as_str(), finer)
        })
}

/// Most dispatches one script call writes. A script blocks Redis while it runs; an incident
/// costs 45-60 µs of Redis time in its two scripts together (docs/PERFORMANCE.md), so this
/// bounds the pause other clients see to a few milliseconds.
pub const DISPATCHES_PER_SCRIPT: usize = 128;

/// How many keys [`dispatch_keys`] writes for `w`.
pub(crate) fn dispatch_key_count(w: &DispatchWrite) -> usize {
    4 + w.region_codes.len() + w.deliveries.len()
}

/// About how many arguments and bytes [`dispatch_keys`] and [`dispatch_args`] write for `w`
/// (numbers counted at their longest), to size the call's command once.
pub(crate) fn dispatch_size(k: &crate::Keys, w: &DispatchWrite) -> scripts::Size {
    use scripts::Size;
    let key = |piece: usize| Size::arg(k.part_len() + kind::INDEX_REGION.len() + piece);
    let id = w.incident_id.len();
    let number = Size::arg(20);
    let keys = key(id)
        + key(id)
        + key(w.department.len())
        + key(w.duplicates.as_ref().map_or(id, |(c, _, _)| c.len()))
        + w.region_codes.iter().map(|c| key(c.len())).sum()
        + w.deliveries.iter().map(|(d, _)| key(d.len())).sum();
    let regions: usize = w.region_codes.iter().map(|c| c.len() + 1).sum();
    let args = Size::arg(w.entry_id.len())
        + Size::arg(w.generation.len())
        + Size::arg(id)
        + Size::arg(w.department.len())
        + Size::arg(w.decision.len())
        + number
        + number
        + number
        + Size::arg(w.event.len())
        + number
        + Size::arg(w.schedule.text.len())
        + Size::arg(regions)
        + number
        + number
        + number
        + Size::arg(w.traceparent.len())
        + number
        + number
        + w.schedule
            .head
            .as_ref()
            .map_or(Size::default(), |(_, m)| number + Size::arg(m.len()))
        + w.deliveries.iter().map(|(_, b)| Size::arg(b.len())).sum();
    keys + args
}

/// Writes one write's keys into a batched dispatch call (layout in `lua/dispatch.lua`;
/// `lua/report.lua` reads the same layout for a report routed inline). Keys and arguments go
/// straight into the call's command, with no owned vectors or strings in between; EVALSHA
/// wants every key before the first argument, hence two passes ([`dispatch_args`]).
pub(crate) fn dispatch_keys(k: &crate::Keys, w: &DispatchWrite, cmd: &mut impl RedisWrite) {
    let (p, id) = (w.partition, w.incident_id.as_str());
    k.write_part(cmd, p, &[kind::INCIDENT, id]);
    k.write_part(cmd, p, &[kind::TIMELINE, id]);
    k.write_part(cmd, p, &[kind::INDEX_DEPARTMENT, &w.department]);
    // The point's geo set when the category detects duplicates; otherwise a key the script
    // does not touch for it (one of the call's own, so that it stays in the partition).
    match &w.duplicates {
        Some((category, _, _)) => k.write_part(cmd, p, &[kind::DUPLICATES, category]),
        None => k.write_part(cmd, p, &[kind::INCIDENT, id]),
    }
    for code in w.region_codes.iter() {
        k.write_part(cmd, p, &[kind::INDEX_REGION, code]);
    }
    for (department, _) in &w.deliveries {
        k.write_part(cmd, p, &[kind::DISPATCH, department]);
    }
}

/// Writes one write's arguments into a batched dispatch call, after every key of the call
/// ([`dispatch_keys`]); `scratch` is a buffer reused across the batch.
pub(crate) fn dispatch_args(w: &DispatchWrite, cmd: &mut impl RedisWrite, scratch: &mut String) {
    use std::io::Write;
    let head = w.schedule.head.as_ref();
    put(cmd, &w.entry_id);
    put(cmd, &w.generation);
    put(cmd, &w.incident_id);
    put(cmd, &w.department);
    put(cmd, &w.decision[..]);
    put(cmd, w.dispatched_ms);
    put(cmd, w.accept_due_ms);
    put(cmd, w.resolve_due_ms);
    put(cmd, &w.event[..]);
    put(cmd, w.region_codes.len());
    put(cmd, w.schedule.text.as_str());
    w.regions_into(scratch);
    put(cmd, scratch.as_str());
    // Writing into the command's own buffer does not fail.
    match &w.duplicates {
        Some((_, x, y)) => {
            let _ = write!(cmd.writer_for_next_arg(), "{x:.7}");
            let _ = write!(cmd.writer_for_next_arg(), "{y:.7}");
        }
        None => {
            put(cmd, "");
            put(cmd, "");
        }
    }
    put(cmd, usize::from(head.is_some()));
    put(cmd, &w.traceparent);
    put(cmd, w.deliveries.len());
    put(cmd, if w.estimated { "1" } else { "" });
    if let Some((due, member)) = head {
        put(cmd, *due);
        put(cmd, member.as_str());
    }
    for (_, bytes) in &w.deliveries {
        put(cmd, bytes.as_slice());
    }
}

/// One argument, written as the client library writes it.
fn put(cmd: &mut impl RedisWrite, arg: impl redis::ToRedisArgs) {
    arg.write_redis_args(cmd);
}

/// The arguments of a batched dispatch call after `EVALSHA <sha> <numkeys>`: the call's own
/// keys, every member's keys, the constants, every member's arguments (`lua/dispatch.lua`).
fn dispatch_call(
    cmd: &mut impl RedisWrite,
    own: &[String],
    members: &[&DispatchWrite],
    k: &crate::Keys,
    constants: &[&str],
) {
    for key in own {
        cmd.write_arg(key.as_bytes());
    }
    for w in members {
        dispatch_keys(k, w, cmd);
    }
    for c in constants {
        cmd.write_arg(c.as_bytes());
    }
    let mut scratch = String::new();
    for w in members {
        dispatch_args(w, cmd, &mut scratch);
    }
}

impl Store {
    /// Dispatches routed entries: one script call per partition and [`DISPATCHES_PER_SCRIPT`]
    /// writes, all in one pipeline. Returns, per write, whether it dispatched (`false`: that
    /// generation was already dispatched by another router), or why it failed (the entry then
    /// stays pending and is delivered again).
    pub async fn dispatch_batch(&self, writes: &[DispatchWrite]) -> Result<Vec<Result<bool>>> {
        self.dispatch_via(writes, None).await
    }

    /// [`Store::dispatch_batch`], over the router's own connection when `direct` is given
    /// (the calls written straight in RESP, `resp::RespCall`).
    pub(crate) async fn dispatch_via(
        &self,
        writes: &[DispatchWrite],
        mut direct: Option<&mut crate::resp::Direct>,
    ) -> Result<Vec<Result<bool>>> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let k = self.keys();
        let routable = lifecycle::ROUTABLE.map(lifecycle::Status::as_str).join(",");
        let clears = lifecycle::REROUTE_CLEARS.join(",");
        let constants = [
            ROUTER_GROUP,
            routable.as_str(),
            lifecycle::Status::Dispatched.as_str(),
            clears.as_str(),
        ];
        let mut groups =
            scripts::partition_groups(writes.iter().map(|w| w.partition), DISPATCHES_PER_SCRIPT);
        // With `--transactions`, on the router's own connection: first dispatches by
        // transaction (`dispatch_tx.rs`); what a transaction leaves, and groups smaller than
        // `--transaction-min-batch`, go to the script below.
        let mut by_tx: Vec<(usize, bool)> = Vec::new();
        if let (Some(d), true) = (direct.as_deref_mut(), self.transactions()) {
            let mut left = Vec::new();
            for (p, members) in groups {
                if !self.transactions_for("dispatch", members.len()) {
                    left.push((p, members));
                    continue;
                }
                let ws: Vec<&DispatchWrite> = members.iter().map(|&i| &writes[i]).collect();
                match self.dispatch_transaction(d, p, &ws).await? {
                    Some(done) => by_tx.extend(members.into_iter().zip(done)),
                    None => left.push((p, members)),
                }
            }
            groups = left;
        }
        // A call's own keys, its members, how many keys in all, and about its size.
        let plan = |p: u16, members: &[usize]| {
            let own = vec![
                k.ingest(p),
                k.sla(p),
                k.index_all(p),
                k.events(p),
                k.index_lag(p),
            ];
            let members: Vec<&DispatchWrite> = members.iter().map(|&i| &writes[i]).collect();
            let numkeys = own.len() + members.iter().map(|w| dispatch_key_count(w)).sum::<usize>();
            let size = scripts::Size::of(&own)
                + members.iter().map(|w| dispatch_size(k, w)).sum()
                + scripts::Size::of(&constants);
            (own, members, numkeys, size)
        };
        // Every write's answer: those in no group the script ran answer "no answer" here, and
        // the transactions' answers take their place below.
        let mut done: Vec<Result<i64>> = match direct.as_deref_mut() {
            Some(direct) => {
                let build = |calls: &mut Vec<crate::resp::RespCall>, p: u16, members: &[usize]| {
                    let (own, members, numkeys, size) = plan(p, members);
                    let mut call = scripts::evalsha_resp(&scripts::DISPATCH, numkeys, size);
                    dispatch_call(&mut call, &own, &members, k, &constants);
                    calls.push(call.finish());
                };
                self.run_batched("dispatch", writes.len(), groups, Some(direct), build)
                    .await?
            }
            None => {
                let build = |pipe: &mut redis::Pipeline, p: u16, members: &[usize]| {
                    let (own, members, numkeys, size) = plan(p, members);
                    let mut call = scripts::evalsha_cmd(&scripts::DISPATCH, numkeys, size);
                    dispatch_call(&mut call, &own, &members, k, &constants);
                    pipe.add_command(call);
                };
                self.run_batched("dispatch", writes.len(), groups, None, build)
                    .await?
            }
        };
        for (i, dispatched) in by_tx {
            done[i] = Ok(i64::from(dispatched));
        }
        // With a durability setting, the batch counts as done once the replicas have it; when
        // they do not answer in time it is logged and counted (a failover may then bring back
        // the entries, which are dispatched again from the new primary).
        // `WAIT` covers the writes of the connection it is sent on: the one that dispatched.
        let replicated = match direct {
            _ if !done.iter().any(Result::is_ok) => true,
            Some(d) => self.replicated_direct(d, "dispatch").await?,
            None => self.replicated("dispatch").await?,
        };
        if !replicated {
            tracing::warn!(
                count = writes.len(),
                "dispatches not yet on enough replicas"
            );
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridroute_core::sla::{Timer, TimerKind};

    #[test]
    fn region_entries_stop_at_the_depth_naming_the_finer_codes() {
        let codes: Vec<String> = ["64", "64-1", "64-1-2", "64-1-2-3"]
            .map(str::to_owned)
            .to_vec();
        let at = |depth| region_entries(&codes, depth).collect::<Vec<_>>();
        let every = |n: usize| -> Vec<(&str, Option<String>)> {
            codes[..n].iter().map(|c| (c.as_str(), None)).collect()
        };
        assert_eq!(at(0), every(4));
        assert_eq!(at(4), every(4));
        assert_eq!(at(9), every(4));
        assert_eq!(
            at(2),
            [("64", None), ("64-1", Some("64-1-2|64-1-2-3".to_owned()))]
        );
        assert_eq!(at(3)[2], ("64-1-2", Some("64-1-2-3".to_owned())));
        assert_eq!(at(1), [("64", Some("64-1|64-1-2|64-1-2-3".to_owned()))]);
    }

    fn timers() -> [Timer; 2] {
        [
            Timer {
                due: 1_796_604_538_000,
                kind: TimerKind::Accept,
                target: "urban-management".into(),
            },
            Timer {
                due: 1_796_717_038_000,
                kind: TimerKind::Supervise(2),
                target: "command-centre".into(),
            },
        ]
    }

    fn write(duplicates: Option<(String, f64, f64)>, timers: &[Timer]) -> DispatchWrite {
        DispatchWrite {
            partition: 3,
            entry_id: "1796604538000-12".into(),
            generation: "0".into(),
            incident_id: "01JDXK3M4P5Q6R7S8T9V0W1X2Y-3".into(),
            department: "urban-management".into(),
            decision: Arc::from(&[7u8; 600][..]),
            region_codes: Arc::from(["420100".to_owned(), "420102001".to_owned()]),
            dispatched_ms: i64::MAX,
            accept_due_ms: i64::MIN,
            resolve_due_ms: 1_796_636_938_000,
            estimated: true,
            event: Arc::from(&b"dispatched urban-management"[..]),
            deliveries: vec![
                ("urban-management".into(), vec![1; 140]),
                ("water".into(), vec![2; 120]),
            ],
            schedule: schedule::Written::of("01JDXK3M4P5Q6R7S8T9V0W1X2Y-3", timers),
            duplicates,
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        }
    }

    /// The size a call's command is allocated at covers what is written into it, so that it is
    /// allocated once (an estimate that fell short would only cost a reallocation, but it
    /// would be the cost this sizing removes).
    #[test]
    fn a_dispatch_is_sized_for_everything_it_writes() {
        let k = crate::Keys::new("gr", 4);
        let timers = timers();
        for w in [
            write(None, &timers),
            write(Some(("city.vehicle".into(), -180.0, -90.0)), &timers),
            write(None, &[]),
        ] {
            let mut cmd = redis::Cmd::new();
            dispatch_keys(&k, &w, &mut cmd);
            dispatch_args(&w, &mut cmd, &mut String::new());
            let size = dispatch_size(&k, &w);
            let args: Vec<usize> = cmd
                .args_iter()
                .map(|a| match a {
                    redis::Arg::Simple(bytes) => bytes.len(),
                    _ => 0,
                })
                .collect();
            assert_eq!(args.len(), size.args);
            let written: usize = args.iter().sum();
            assert!(written <= size.bytes, "{written} > {}", size.bytes);
            // An estimate, not a guess: within a few hundred bytes of what is written.
            assert!(size.bytes - written < 400, "{} for {written}", size.bytes);
        }
    }

    /// The router's own connection sends a dispatch call byte for byte as the client library
    /// would (`EVALSHA`, keys, arguments, the coordinates written through the argument writer).
    #[test]
    fn a_dispatch_call_in_resp_is_the_client_librarys_command() {
        let k = crate::Keys::new("gr", 4);
        let timers = timers();
        let writes = [
            write(None, &timers),
            write(Some(("city.vehicle".into(), 114.3055, 30.5928)), &timers),
            write(None, &[]),
        ];
        let members: Vec<&DispatchWrite> = writes.iter().collect();
        let own = ["gr:{p3}:ingest".to_owned(), "gr:{p3}:sla".to_owned()];
        let constants = ["router", "reported,returned", "dispatched", "a,b"];
        let mut cmd = scripts::evalsha_cmd(&scripts::DISPATCH, 42, scripts::Size::default());
        dispatch_call(&mut cmd, &own, &members, &k, &constants);
        let mut call = scripts::evalsha_resp(&scripts::DISPATCH, 42, scripts::Size::default());
        dispatch_call(&mut call, &own, &members, &k, &constants);
        assert_eq!(call.finish().bytes(), cmd.get_packed_command().as_slice());
    }
}
