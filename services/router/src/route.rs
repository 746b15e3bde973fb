//! The pure step of routing: from an ingest entry and the table in force to the write that
//! dispatches it (decision, deadlines, SLA schedule, the departments' dispatch messages). No
//! I/O: unit-testable without Redis.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use gridroute_core::{Outcome, RouteTarget, RoutingTable, sla::Escalation, table::DuplicatePolicy};
use gridroute_proto::v1 as pb;
use gridroute_store::{codec, consumer::IngestEntry, dispatch::DispatchWrite, keys, schedule};
use gridroute_telemetry::names;
use prost::Message;

/// Routes one ingest entry into the write that dispatches it, with its report time and, when
/// its category has duplicate detection, the policy. `Err` is a permanent problem with the
/// entry itself (it goes to the dead-letter stream).
pub fn route_entry(
    table: &RoutingTable,
    entry: &IngestEntry,
    now_ms: i64,
    tally: &mut DecisionTally,
) -> Result<(DispatchWrite, i64, Option<DuplicatePolicy>), String> {
    let id = entry.text("id").ok_or("no incident id")?;
    if keys::partition_of(id, u16::MAX).is_none_or(|p| p != entry.partition) {
        return Err(format!(
            "incident id {id:?} does not belong to partition {}",
            entry.partition
        ));
    }
    let generation = entry.text("g").ok_or("no route generation")?;
    let reported_ms: i64 = entry
        .text("t")
        .and_then(|t| t.parse().ok())
        .ok_or("no report time")?;
    let bytes = entry.field("r").ok_or("no report")?;
    let report = pb::ReportIncidentRequest::decode(bytes)
        .map_err(|e| format!("report does not decode: {e}"))?;
    let of = Routed {
        id,
        partition: entry.partition,
        entry_id: &entry.entry_id,
        generation,
        excluded: entry.text("x").unwrap_or(""),
        merge_again: entry.text("nm").is_none(),
    };
    let (write, duplicates) = route_report(table, &report, &of, now_ms, tally)?;
    Ok((write, reported_ms, duplicates))
}

/// The routing decisions' metrics (outcome counts, decision times), gathered over a batch and
/// recorded once by [`DecisionTally::record`]. Looking a metric up per incident (its key built
/// and copied into the registry's form, hashed and compared, a handle cloned) was several
/// allocations per routed incident (docs/PERFORMANCE.md).
#[derive(Debug, Default)]
pub struct DecisionTally {
    outcomes: [u64; Outcome::ALL.len()],
    seconds: Vec<f64>,
}

impl DecisionTally {
    fn add(&mut self, outcome: Outcome, seconds: f64) {
        self.outcomes[outcome as usize] += 1;
        self.seconds.push(seconds);
    }

    /// Records what was gathered (`gridroute_routed_total`, `gridroute_route_decision_seconds`)
    /// and starts over.
    pub fn record(&mut self) {
        if !self.seconds.is_empty() {
            let h = metrics::histogram!(names::ROUTE_DECISION_SECONDS);
            for s in self.seconds.drain(..) {
                h.record(s);
            }
        }
        for (outcome, n) in Outcome::ALL.iter().zip(&mut self.outcomes) {
            if *n > 0 {
                metrics::counter!(names::ROUTED_TOTAL, "outcome" => outcome.as_str()).increment(*n);
                *n = 0;
            }
        }
    }
}

/// What [`route_report`] needs to know of an incident besides its report: where it queues and
/// what earlier routing left on it.
#[derive(Debug, Clone, Copy)]
pub struct Routed<'a> {
    /// Incident id.
    pub id: &'a str,
    /// Partition of the id.
    pub partition: u16,
    /// Its ingest entry ('' when routed inline, before any entry exists).
    pub entry_id: &'a str,
    /// Route generation the dispatch belongs to.
    pub generation: &'a str,
    /// Departments that returned it, comma-separated.
    pub excluded: &'a str,
    /// False for an incident un-merged by the command centre: never merged again.
    pub merge_again: bool,
}

/// Routes one decoded report: the write that dispatches it and, when its category has
/// duplicate detection, the policy. Shared by the routers ([`route_entry`]) and inline routing
/// (which has the report decoded already, and so skips an encode and a decode per incident).
/// Its metrics are added to `tally`.
pub fn route_report(
    table: &RoutingTable,
    report: &pb::ReportIncidentRequest,
    of: &Routed<'_>,
    now_ms: i64,
    tally: &mut DecisionTally,
) -> Result<(DispatchWrite, Option<DuplicatePolicy>), String> {
    let id = of.id;
    let excluded: Vec<_> = of
        .excluded
        .split(',')
        .filter(|d| !d.is_empty())
        .filter_map(|d| table.department(d))
        .collect();
    let q = gridroute_mapping::route_query(now_ms, report, &excluded, table.crs)
        .ok_or("report has no location")?;
    if !gridroute_core::category::is_valid(q.category) {
        return Err(format!("category {:?} is not valid", q.category));
    }
    let started = Instant::now();
    let d = table.route(&q);
    tally.add(d.outcome, started.elapsed().as_secs_f64());

    let decided = decided(table, &q, &d, report);
    let policy = &table.sla_policies[d.sla as usize];
    let deadlines = policy.deadlines(&table.calendar, now_ms);
    let estimated = deadlines.estimated(policy, &table.calendar);
    let mut timers = policy.plan(
        &table.calendar,
        now_ms,
        Some(deadlines.accept_by),
        deadlines.resolve_by,
        &Escalation {
            primary: &decided.department,
            supervisors: &decided.supervisors,
            public: &table.departments[table.default_command_centre as usize].id,
        },
    );
    // Duplicate detection needs a point; an un-merged incident (`nm`) is never merged again.
    let duplicates = match (table.duplicate_policy(q.category), q.target) {
        (Some(policy), RouteTarget::Point { lng, lat, crs, .. }) if of.merge_again => {
            let (x, y) = gridroute_core::crs::convert(crs, table.crs, lng, lat);
            Some((policy.clone(), x, y))
        }
        _ => None,
    };
    let dispatch = |department: &str, role: pb::DispatchRole| {
        let head = pb::Dispatch {
            cursor: String::new(),
            incident_id: id.to_owned(),
            department_id: department.to_owned(),
            role: role as i32,
            decision: None,
            report: None,
            dispatched_time: Some(gridroute_mapping::timestamp(now_ms)),
            accept_deadline: (role == pb::DispatchRole::Primary)
                .then(|| gridroute_mapping::timestamp(deadlines.accept_by)),
            resolve_deadline: Some(gridroute_mapping::timestamp(deadlines.resolve_by)),
            kind: pb::DispatchKind::New as i32,
            note: String::new(),
            traceparent: String::new(),
            deadline_estimated: estimated,
        };
        head.encode_to_vec()
    };
    let mut deliveries = vec![(
        decided.department.clone(),
        dispatch(&decided.department, pb::DispatchRole::Primary),
    )];
    for co in &decided.co_departments {
        if *co != decided.department {
            deliveries.push((co.clone(), dispatch(co, pb::DispatchRole::CoHandler)));
        }
    }
    Ok((
        DispatchWrite {
            partition: of.partition,
            entry_id: of.entry_id.to_owned(),
            generation: of.generation.to_owned(),
            incident_id: id.to_owned(),
            department: decided.department.clone(),
            region_codes: decided.region_codes.clone(),
            decision: decided.bytes.clone(),
            dispatched_ms: now_ms,
            accept_due_ms: deadlines.accept_by,
            resolve_due_ms: deadlines.resolve_by,
            estimated,
            event: decided.events[usize::from(estimated)].clone(),
            deliveries,
            schedule: schedule::Written::plan(id, &mut timers),
            duplicates: duplicates
                .as_ref()
                .map(|(p, x, y)| (p.category.clone(), *x, *y)),
            traceparent: String::new(),
        },
        duplicates.map(|(p, _, _)| p),
    ))
}

/// What routing decides for an incident apart from its times, in the forms the dispatch
/// writes: the departments, the stored decision, the region codes it is indexed under, the
/// command centres it escalates to, and its dispatch timeline entry without and with the
/// estimate note.
#[derive(Debug)]
struct Decided {
    department: String,
    co_departments: Vec<String>,
    bytes: Arc<[u8]>,
    region_codes: Arc<[String]>,
    supervisors: Vec<String>,
    events: [Arc<[u8]>; 2],
}

/// The cache key of a common decision (see [`decided`]): grid, rule, SLA policy and primary
/// department; the category and the co-handlers are compared apart, without allocating.
type Common = (gridroute_core::region::RegionId, u32, u16, u16);

/// The decision of a report, from the process's cache when it is the common one.
///
/// The most common decision, a reported point in a grid matched by a rule with no department
/// excluded, has reasons that do not mention the point itself (they name the record's point),
/// so everything in [`Decided`] follows from the table, the grid, the rule, the SLA policy,
/// the category and the co-handlers. Building it (the decision message, its compacted texts,
/// the encoding, the supervisors, the timeline entry) was about half of `route_report`'s CPU
/// (docs/PERFORMANCE.md). The process keeps the ones it has built for the table in force, up
/// to [`DECIDED_KEPT`] (about 1.1 KB each on the sample), shared by its worker threads, and starts over
/// when the table's version, which names its content, changes. Every other decision is built
/// each time. A full cache keeps what it has rather than starting over: with more common
/// decisions than it holds, the ones it keeps still hit, where clearing it would make most of
/// them miss.
fn decided(
    table: &RoutingTable,
    q: &gridroute_core::RouteQuery<'_>,
    d: &gridroute_core::Decision,
    report: &pb::ReportIncidentRequest,
) -> Arc<Decided> {
    let Some(key) = common(q, d, report) else {
        return Arc::new(build_decided(table, q, d, report, None));
    };
    let co = table.co_handlers(q, d);
    let cache = &*DECIDED;
    if let Some(hit) = cache.map.get(&key).and_then(|e| {
        e.iter()
            .find(|x| x.category == q.category && x.co == co && x.version == table.version)
            .map(|x| x.decided.clone())
    }) {
        return hit;
    }
    let built = Arc::new(build_decided(table, q, d, report, Some(key.1)));
    {
        // Misses are rare once the common decisions are in: a lock here costs nothing.
        let mut version = cache
            .version
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *version != table.version {
            cache.map.clear();
            cache.len.store(0, Ordering::Relaxed);
            version.clone_from(&table.version);
        }
    }
    if cache.len.fetch_add(1, Ordering::Relaxed) < DECIDED_KEPT {
        cache.map.entry(key).or_default().push(CachedDecision {
            version: table.version.clone(),
            category: q.category.to_owned(),
            co,
            decided: built.clone(),
        });
    }
    built
}

/// Most common decisions the process keeps (see [`decided`]): every grid of a district times
/// its categories and urgencies (the Dawukou sample has 7,291 for the load tester's ten
/// categories and three urgencies).
const DECIDED_KEPT: usize = 16_384;

/// The common decisions built so far. `version` is the table the map was last started over
/// for, so that a new table frees the old one's decisions; each entry still names its own
/// table, because a worker routing with the old table during the swap may add one after the
/// map started over.
#[derive(Default)]
struct DecidedCache {
    map: dashmap::DashMap<Common, Vec<CachedDecision>>,
    len: AtomicUsize,
    version: std::sync::Mutex<String>,
}

/// One cached decision: what it was built for beyond its [`Common`] key, and the result.
struct CachedDecision {
    version: String,
    category: String,
    co: Vec<gridroute_core::rules::DeptId>,
    decided: Arc<Decided>,
}

static DECIDED: std::sync::LazyLock<DecidedCache> = std::sync::LazyLock::new(DecidedCache::default);

/// The key of the common decision (a reported point in a grid matched by a rule, nothing
/// excluded, the query's point the report's), or `None`.
fn common(
    q: &gridroute_core::RouteQuery<'_>,
    d: &gridroute_core::Decision,
    report: &pb::ReportIncidentRequest,
) -> Option<Common> {
    let (RouteTarget::Point { lng, lat, .. }, Some(grid), Some(rule), None, Outcome::Matched) =
        (q.target, d.grid, d.rule, d.snapped_m, d.outcome)
    else {
        return None;
    };
    // The stored reasons name the record's point (`p`): it must be the query's.
    let Some(pb::location::Kind::Point(p)) = report.location.as_ref().and_then(|l| l.kind.as_ref())
    else {
        return None;
    };
    (q.excluded.is_empty()
        && p.longitude.to_bits() == lng.to_bits()
        && p.latitude.to_bits() == lat.to_bits())
    .then_some((grid, rule, d.sla, d.department))
}

/// Builds a [`Decided`]; `rule` is the matched rule of a common decision, whose reasons are
/// written in their stored form.
fn build_decided(
    table: &RoutingTable,
    q: &gridroute_core::RouteQuery<'_>,
    d: &gridroute_core::Decision,
    report: &pb::ReportIncidentRequest,
    rule: Option<u32>,
) -> Decided {
    let stored = rule
        .and_then(|r| table.rules.get(r as usize))
        .map(stored_reasons);
    let mut decision = match &stored {
        Some(_) => gridroute_mapping::decision_without_reasons(table, q, d),
        None => gridroute_mapping::decision_message(table, q, d),
    };
    let bytes = match stored {
        Some(reasons) => {
            decision.reasons = reasons;
            codec::decision_bytes_with_stored_reasons(&mut decision, Some(report))
        }
        None => codec::decision_bytes(&mut decision, Some(report)),
    };
    let supervisors = table
        .supervisors(d.grid)
        .into_iter()
        .filter(|&c| c != d.department)
        .map(|c| table.departments[c as usize].id.clone())
        .collect();
    let summary = match &decision.rule_id {
        r if r.is_empty() => format!(
            "to {} ({}, table {})",
            decision.department_id,
            d.outcome.as_str(),
            table.version
        ),
        r => format!(
            "to {} by rule {r} (table {})",
            decision.department_id, table.version
        ),
    };
    let events = [
        dispatched_event(&summary, &decision.department_id),
        dispatched_event(
            &(summary.clone() + &gridroute_core::sla::estimate_note(&table.calendar)),
            &decision.department_id,
        ),
    ];
    Decided {
        region_codes: decision
            .region_path
            .iter()
            .map(|r| r.code.clone())
            .collect(),
        bytes: bytes.into(),
        supervisors,
        events: events.map(Into::into),
        department: decision.department_id,
        co_departments: decision.co_department_ids,
    }
}

/// The stored timeline entry of a dispatch. Its text depends only on the department, the rule
/// and the table, so each worker thread keeps the entries it has written (a few hundred at
/// most; the cache starts over past 4,096): decisions that are not cached, or not yet, reuse
/// them.
fn dispatched_event(summary: &str, department: &str) -> Vec<u8> {
    thread_local! {
        static EVENTS: std::cell::RefCell<std::collections::HashMap<String, (String, Vec<u8>)>> =
            std::cell::RefCell::default();
    }
    EVENTS.with_borrow_mut(|events| {
        if let Some((d, bytes)) = events.get(summary)
            && d == department
        {
            return bytes.clone();
        }
        let bytes = codec::event_bytes(
            gridroute_core::lifecycle::EventKind::Dispatched,
            "router",
            summary,
            department,
        );
        if events.len() >= 4096 {
            events.clear();
        }
        events.insert(summary.to_owned(), (department.to_owned(), bytes.clone()));
        bytes
    })
}

/// The stored form of the reasons of the common decision, a reported point in a grid matched
/// by `rule`, written from the decision's parts: formatting them (the point's coordinates as
/// decimals) and then compacting them was about two fifths of `route_report`'s CPU in a
/// profile (docs/PERFORMANCE.md). Every other decision's reasons are formatted and compacted.
/// They read back as exactly the texts `RoutingTable::explain` gives (a test holds them equal
/// for a point in every sample grid and every category the sample rules name,
/// `stored_reasons_read_as_explained`).
fn stored_reasons(rule: &gridroute_core::rules::Rule) -> Vec<String> {
    use gridroute_store::compact::Writer;
    // The record's context names the stored report's point (`p`), the decision's grid (`g`,
    // the last of its region path) and its rule (`r`).
    let point = Writer::new()
        .phrase("point (")
        .value(b'p')
        .phrase(") lies in grid ")
        .value(b'g')
        .finish();
    let matched = Writer::new()
        .phrase("rule ")
        .value(b'r')
        .phrase(" (priority ")
        .text(&rule.priority.to_string())
        .phrase(") matched ");
    let matched = match rule.category.as_str() {
        "" => matched.phrase("any category"),
        prefix => matched.phrase("category prefix ").text(prefix),
    };
    vec![point, matched.finish()]
}

/// Routing in the process that accepts a report (`gridroute serve --inline-routing`): the same
/// decision [`route_entry`] makes for the report's ingest entry, made before the report is
/// written, so that one script call accepts and dispatches it. Reports whose category detects
/// duplicates (the merge needs its own reads) and reports the table cannot route are left to
/// the routers (`None`): they take the ingest stream as before.
pub fn inline_route(
    tables: gridroute_core::table::SharedTable,
) -> gridroute_store::ingest::InlineRoute {
    Arc::new(move |r, id, partition, now_ms| {
        let table = tables.load();
        if table.duplicate_policy(&r.report.category).is_some() {
            return None;
        }
        let of = Routed {
            id,
            partition,
            entry_id: "",
            generation: "0",
            excluded: "",
            merge_again: true,
        };
        // The same `route` span as a router's, child of the reporter's trace, when spans are
        // exported; the subscribers continue from it.
        let span = if gridroute_telemetry::trace_context::exporting() {
            let span = tracing::info_span!("route", incident = id, partition, inline = true);
            gridroute_telemetry::trace_context::set_parent(&span, r.traceparent);
            span
        } else {
            tracing::Span::none()
        };
        // No duplicate policy here (checked above): the write is the whole of it.
        let mut tally = DecisionTally::default();
        let routed = span.in_scope(|| route_report(&table, r.report, &of, now_ms, &mut tally));
        tally.record();
        let (mut w, _) = routed.ok()?;
        w.traceparent = gridroute_telemetry::trace_context::traceparent(&span);
        Some(w)
    })
}

#[cfg(test)]
mod tests {
    use gridroute_core::table::TableSources;

    use super::*;

    const GRIDS: &str = include_str!("../../../deploy/sample/dawukou/grids.geojson");
    const RULES: &str = include_str!("../../../deploy/sample/dawukou/rules.yaml");

    /// A point near the middle of each sample grid (the mean of its outer ring's corners: inside
    /// most grids, outside a few, which then take the other reasons' path).
    fn grid_points() -> Vec<(f64, f64)> {
        let geo: serde_json::Value = serde_json::from_str(GRIDS).unwrap();
        let features = geo["features"].as_array().unwrap();
        features
            .iter()
            .filter_map(|f| {
                let coords = &f["geometry"]["coordinates"];
                let ring = match f["geometry"]["type"].as_str()? {
                    "Polygon" => coords.get(0)?,
                    _ => coords.get(0)?.get(0)?,
                };
                let pts: Vec<(f64, f64)> = ring
                    .as_array()?
                    .iter()
                    .filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?)))
                    .collect();
                let n = pts.len() as f64;
                Some((
                    pts.iter().map(|p| p.0).sum::<f64>() / n,
                    pts.iter().map(|p| p.1).sum::<f64>() / n,
                ))
            })
            .collect()
    }

    /// A report of `category` at a point.
    fn point_report(category: &str, lng: f64, lat: f64) -> pb::ReportIncidentRequest {
        pb::ReportIncidentRequest {
            category: category.into(),
            location: Some(pb::Location {
                kind: Some(pb::location::Kind::Point(pb::LatLng {
                    longitude: lng,
                    latitude: lat,
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A new incident, routed for the first time.
    const FIRST: Routed<'static> = Routed {
        id: "i",
        partition: 0,
        entry_id: "",
        generation: "0",
        excluded: "",
        merge_again: true,
    };

    /// A decision kept for one table is not given for another: the next table's decision names
    /// its own version (a table whose content differs has another version).
    #[test]
    fn a_kept_decision_is_not_reused_under_another_table() {
        let load = |rules: &str| {
            RoutingTable::load(TableSources {
                grids_geojson: GRIDS,
                rules_yaml: rules,
                calendar_yaml: None,
                regions_geojson: None,
            })
            .unwrap()
        };
        let first = load(RULES);
        let renamed = RULES.replacen("name: ", "name: renamed-", 1);
        let second = load(&renamed);
        assert_ne!(first.version, second.version);
        let (lng, lat) = grid_points()[0];
        let report = point_report("city.vehicle.abandoned", lng, lat);
        let now = 1_767_225_600_000;
        for table in [&first, &second, &first] {
            let (w, _) =
                route_report(table, &report, &FIRST, now, &mut DecisionTally::default()).unwrap();
            let stored = codec::decode_decision(&w.decision, Some(&report)).unwrap();
            assert_eq!(stored.table_version, table.version);
        }
    }

    /// The reasons the router writes from a decision's parts read back as the texts `explain`
    /// gives, and the whole stored decision as the API's view of it, for every sample grid and
    /// every category the sample rules name (and their children).
    #[test]
    fn stored_reasons_read_as_explained() {
        let table = RoutingTable::load(TableSources {
            grids_geojson: GRIDS,
            rules_yaml: RULES,
            calendar_yaml: None,
            regions_geojson: None,
        })
        .unwrap();
        let mut categories: Vec<String> = table
            .rules
            .iter()
            .filter(|r| !r.category.is_empty())
            .flat_map(|r| [r.category.clone(), format!("{}.other", r.category)])
            .collect();
        categories.push("unlisted.category".to_owned());
        let now = 1_767_225_600_000; // 2026-01-01
        let (mut written, mut total) = (0, 0);
        // Each grid twice, at points a hair apart: the second takes the first's decision from
        // the process's cache, and must read back with its own point all the same, and be
        // written exactly as a decision built afresh for it.
        let points = grid_points()
            .into_iter()
            .flat_map(|(lng, lat)| [(lng, lat), (lng + 1e-7, lat + 1e-7)]);
        for (lng, lat) in points {
            for category in &categories {
                let report = point_report(category, lng, lat);
                let (w, _) =
                    route_report(&table, &report, &FIRST, now, &mut DecisionTally::default())
                        .unwrap();
                let stored = codec::decode_decision(&w.decision, Some(&report)).unwrap();
                let q = gridroute_mapping::route_query(now, &report, &[], table.crs).unwrap();
                let d = table.route(&q);
                assert_eq!(stored, gridroute_mapping::decision_message(&table, &q, &d));
                let key = common(&q, &d, &report);
                let fresh = build_decided(&table, &q, &d, &report, key.map(|k| k.1));
                assert_eq!(w.decision, fresh.bytes);
                assert_eq!(w.region_codes, fresh.region_codes);
                assert!(fresh.events.contains(&w.event));
                written += usize::from(key.is_some());
                total += 1;
            }
        }
        // Most of them take the written path; the rest are compacted as before.
        assert!(
            written > total / 2 && written < total,
            "{written} of {total}"
        );
    }
}
