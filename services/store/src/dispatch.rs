//! Dispatching routed entries: the record, its timeline, events, the head of its SLA schedule,
//! the indexes and the departments' streams, written with one script call per batch and
//! partition; and finding the open incidents a new report may duplicate.

use std::borrow::Cow;

use gridroute_core::lifecycle;

use crate::{Result, Store, keys::ROUTER_GROUP, schedule, scripts};

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
    /// Encoded `RouteDecision`.
    pub decision: Vec<u8>,
    /// Region codes of the grid path, for the region indexes.
    pub region_codes: Vec<String>,
    /// Dispatch time (Redis clock, ms).
    pub dispatched_ms: i64,
    /// Accept deadline (ms).
    pub accept_due_ms: i64,
    /// Resolve deadline (ms).
    pub resolve_due_ms: i64,
    /// A deadline was counted past the calendar's horizon (record field `est`).
    pub estimated: bool,
    /// Encoded timeline event.
    pub event: Vec<u8>,
    /// One (department, encoded `Dispatch`) per receiving department, primary first.
    pub deliveries: Vec<(String, Vec<u8>)>,
    /// The SLA timers of the dispatch.
    pub timers: Vec<gridroute_core::sla::Timer>,
    /// When the category has duplicate detection: its category key and the point (lng, lat).
    pub duplicates: Option<(String, f64, f64)>,
    /// W3C traceparent of the dispatch ('' = none), carried to the subscribers.
    pub traceparent: String,
}

/// Most dispatches one script call writes. A script blocks Redis while it runs; an incident
/// costs 45-60 µs of Redis time in its two scripts together (docs/PERFORMANCE.md), so this
/// bounds the pause other clients see to a few milliseconds.
pub const DISPATCHES_PER_SCRIPT: usize = 128;

/// Appends one write's keys and arguments to a batched dispatch call (layout in
/// `lua/dispatch.lua`; `lua/report.lua` reads the same layout for a report routed inline).
pub(crate) fn dispatch_args<'a>(
    k: &crate::Keys,
    w: &'a DispatchWrite,
    keys: &mut Vec<String>,
    args: &mut Vec<Cow<'a, [u8]>>,
) {
    let p = w.partition;
    let geo_key = w.duplicates.as_ref().map_or_else(
        || k.incident(p, &w.incident_id),
        |(c, _, _)| k.duplicates(p, c),
    );
    keys.extend([
        k.incident(p, &w.incident_id),
        k.timeline(p, &w.incident_id),
        k.index_department(p, &w.department),
        geo_key,
    ]);
    keys.extend(w.region_codes.iter().map(|c| k.index_region(p, c)));
    keys.extend(w.deliveries.iter().map(|(d, _)| k.dispatch(p, d)));
    let (lng, lat) = w
        .duplicates
        .as_ref()
        .map_or((String::new(), String::new()), |(_, x, y)| {
            (format!("{x:.7}"), format!("{y:.7}"))
        });
    let head: Vec<(Cow<'_, [u8]>, String)> = schedule::head(&w.timers)
        .map(|t| (number(t.due), schedule::member(&w.incident_id, t)))
        .into_iter()
        .collect();
    let owned = |s: String| Cow::Owned(s.into_bytes());
    args.extend([
        w.entry_id.as_bytes().into(),
        w.generation.as_bytes().into(),
        w.incident_id.as_bytes().into(),
        w.department.as_bytes().into(),
        w.decision.as_slice().into(),
        number(w.dispatched_ms),
        number(w.accept_due_ms),
        number(w.resolve_due_ms),
        w.event.as_slice().into(),
        number(w.region_codes.len()),
        owned(schedule::encode(&w.timers)),
        owned(w.region_codes.join(",")),
        owned(lng),
        owned(lat),
        number(head.len()),
        w.traceparent.as_bytes().into(),
        number(w.deliveries.len()),
        (if w.estimated { "1" } else { "" }).as_bytes().into(),
    ]);
    for (due, member) in head {
        args.extend([due, owned(member)]);
    }
    args.extend(
        w.deliveries
            .iter()
            .map(|(_, b)| Cow::Borrowed(b.as_slice())),
    );
}

/// A number as a script argument, written without the formatting machinery (several per
/// incident on the router's path).
fn number(n: impl itoa::Integer) -> Cow<'static, [u8]> {
    Cow::Owned(itoa::Buffer::new().format(n).as_bytes().to_vec())
}

impl Store {
    /// Dispatches routed entries: one script call per partition and [`DISPATCHES_PER_SCRIPT`]
    /// writes, all in one pipeline. Returns, per write, whether it dispatched (`false`: that
    /// generation was already dispatched by another router), or why it failed (the entry then
    /// stays pending and is delivered again).
    pub async fn dispatch_batch(&self, writes: &[DispatchWrite]) -> Result<Vec<Result<bool>>> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let k = self.keys();
        let routable = lifecycle::ROUTABLE.map(lifecycle::Status::as_str).join(",");
        let clears = lifecycle::REROUTE_CLEARS.join(",");
        let groups =
            scripts::partition_groups(writes.iter().map(|w| w.partition), DISPATCHES_PER_SCRIPT);
        let build = |pipe: &mut redis::Pipeline, p: u16, members: &[usize]| {
            let mut keys = vec![
                k.ingest(p),
                k.sla(p),
                k.index_all(p),
                k.events(p),
                k.index_lag(p),
            ];
            let mut args: Vec<Cow<'_, [u8]>> = vec![
                ROUTER_GROUP.as_bytes().into(),
                routable.as_bytes().into(),
                lifecycle::Status::Dispatched.as_str().as_bytes().into(),
                clears.as_bytes().into(),
            ];
            for &i in members {
                dispatch_args(k, &writes[i], &mut keys, &mut args);
            }
            let args: Vec<&[u8]> = args.iter().map(AsRef::as_ref).collect();
            scripts::evalsha(pipe, &scripts::DISPATCH, &keys, &args);
        };
        let done: Vec<Result<i64>> = self
            .run_batched("dispatch", writes.len(), groups, build)
            .await?;
        // With a durability setting, the batch counts as done once the replicas have it; when
        // they do not answer in time it is logged and counted (a failover may then bring back
        // the entries, which are dispatched again from the new primary).
        if done.iter().any(Result::is_ok) && !self.replicated("dispatch").await? {
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
