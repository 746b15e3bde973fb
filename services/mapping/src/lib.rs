//! The mapping between the API's messages (`gridroute-proto`) and the core's types: what a
//! report asks the router, what a decision tells the caller, the API's names of states,
//! notices, route outcomes and timeline kinds, and protobuf timestamps. No I/O and no policy:
//! every crate that speaks both languages (the store's records, the router, the API) uses
//! this one translation.

use gridroute_core::{
    Decision, Outcome, RouteQuery, RouteTarget, RoutingTable,
    crs::Crs,
    lifecycle::{EventKind, NoticeKind, Status},
    rules::{DeptId, Urgency},
};
use gridroute_proto::v1 as pb;

/// A protobuf timestamp from Unix milliseconds.
pub fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// Unix milliseconds from a protobuf timestamp.
pub fn millis(ts: &prost_types::Timestamp) -> i64 {
    ts.seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(ts.nanos) / 1_000_000)
}

/// The core urgency of a report.
pub fn urgency(report: &pb::ReportIncidentRequest) -> Urgency {
    match pb::Urgency::try_from(report.urgency).unwrap_or(pb::Urgency::Unspecified) {
        pb::Urgency::High => Urgency::High,
        pb::Urgency::Critical => Urgency::Critical,
        pb::Urgency::Unspecified | pb::Urgency::Normal => Urgency::Normal,
    }
}

/// What the router asks the core for a report. `None` when the report has no location (only
/// possible for entries that bypassed validation).
pub fn route_query<'a>(
    now_ms: i64,
    report: &'a pb::ReportIncidentRequest,
    excluded: &'a [DeptId],
    table_crs: Crs,
) -> Option<RouteQuery<'a>> {
    let loc = report.location.as_ref()?;
    let target = match loc.kind.as_ref() {
        None if !loc.address.trim().is_empty() => RouteTarget::Address(&loc.address),
        None => return None,
        Some(pb::location::Kind::Point(p)) => RouteTarget::Point {
            lng: p.longitude,
            lat: p.latitude,
            accuracy_m: loc.accuracy_meters,
            crs: match pb::CoordinateSystem::try_from(loc.coordinate_system).unwrap_or_default() {
                pb::CoordinateSystem::Wgs84 => Crs::Wgs84,
                pb::CoordinateSystem::Gcj02 => Crs::Gcj02,
                pb::CoordinateSystem::Bd09 => Crs::Bd09,
                pb::CoordinateSystem::Unspecified => table_crs,
            },
        },
        Some(pb::location::Kind::GridCode(code)) => RouteTarget::Grid(code),
    };
    Some(RouteQuery {
        category: &report.category,
        target,
        urgency: urgency(report),
        source: &report.source_system,
        excluded,
        labels: &report.labels,
        now_ms,
    })
}

/// The API's view of a decision, with names and reasons.
pub fn decision_message(
    table: &RoutingTable,
    q: &RouteQuery<'_>,
    d: &Decision,
) -> pb::RouteDecision {
    pb::RouteDecision {
        reasons: table.explain(q, d),
        ..decision_without_reasons(table, q, d)
    }
}

/// [`decision_message`] without its reasons, for a writer that writes them in another form.
pub fn decision_without_reasons(
    table: &RoutingTable,
    q: &RouteQuery<'_>,
    d: &Decision,
) -> pb::RouteDecision {
    let rule = d.rule.map(|i| &table.rules[i as usize]);
    pb::RouteDecision {
        outcome: match d.outcome {
            Outcome::Matched => pb::RouteOutcome::Matched,
            Outcome::NoRule => pb::RouteOutcome::NoRule,
            Outcome::OutsideGrids => pb::RouteOutcome::OutsideGrids,
            Outcome::UnknownGrid => pb::RouteOutcome::UnknownGrid,
            Outcome::Unlocated => pb::RouteOutcome::Unlocated,
            Outcome::InHole => pb::RouteOutcome::InHole,
        } as i32,
        department_id: table.departments[d.department as usize].id.clone(),
        co_department_ids: table
            .co_handlers(q, d)
            .into_iter()
            .map(|c| table.departments[c as usize].id.clone())
            .collect(),
        region_path: d
            .grid
            .map(|g| {
                table
                    .regions
                    .path(g)
                    .into_iter()
                    .map(|r| {
                        let n = table.regions.node(r);
                        pb::RegionRef {
                            code: n.code.clone(),
                            name: n.name.clone(),
                            level: n.level.clone(),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default(),
        rule_id: rule.map(|r| r.id.clone()).unwrap_or_default(),
        table_version: table.version.clone(),
        sla_policy: table.sla_policies[d.sla as usize].name.clone(),
        reasons: Vec::new(),
        notify_grid_worker: rule.is_some_and(|r| r.notify_grid_worker),
        snapped_meters: d.snapped_m.map_or(0.0, f64::from),
        grid_workers: d
            .grid
            .map(|g| table.workers(g).to_vec())
            .unwrap_or_default(),
    }
}

/// The API status of a core status.
pub fn status_message(s: Status) -> pb::IncidentStatus {
    match s {
        Status::Reported => pb::IncidentStatus::Reported,
        Status::Dispatched => pb::IncidentStatus::Dispatched,
        Status::Accepted => pb::IncidentStatus::Accepted,
        Status::InProgress => pb::IncidentStatus::InProgress,
        Status::Resolved => pb::IncidentStatus::Resolved,
        Status::Verified => pb::IncidentStatus::Verified,
        Status::Closed => pb::IncidentStatus::Closed,
        Status::Returned => pb::IncidentStatus::Returned,
        Status::Arbitration => pb::IncidentStatus::Arbitration,
        Status::Suspended => pb::IncidentStatus::Suspended,
        Status::Merged => pb::IncidentStatus::Merged,
        Status::Cancelled => pb::IncidentStatus::Cancelled,
        Status::Reopened => pb::IncidentStatus::Reopened,
    }
}

/// The API status of a status name as stored in Redis.
pub fn status_from_str(s: &str) -> pb::IncidentStatus {
    Status::parse(s).map_or(pb::IncidentStatus::Unspecified, status_message)
}

/// The dispatch kind of a notice.
pub fn notice_kind(k: NoticeKind) -> pb::DispatchKind {
    match k {
        NoticeKind::Assigned => pb::DispatchKind::Assigned,
        NoticeKind::Reopened => pb::DispatchKind::Reopened,
        NoticeKind::ArbitrationNeeded => pb::DispatchKind::ArbitrationNeeded,
        NoticeKind::RequestPending => pb::DispatchKind::RequestPending,
        NoticeKind::RequestDecided => pb::DispatchKind::RequestDecided,
        NoticeKind::Progress => pb::DispatchKind::Progress,
        NoticeKind::Resolved => pb::DispatchKind::Resolved,
        NoticeKind::Cancelled => pb::DispatchKind::Cancelled,
        NoticeKind::AcceptOverdue => pb::DispatchKind::AcceptOverdue,
        NoticeKind::Warning => pb::DispatchKind::Warning,
        NoticeKind::Urge => pb::DispatchKind::Urge,
        NoticeKind::Supervise => pb::DispatchKind::Supervise,
        NoticeKind::PublicReport => pb::DispatchKind::PublicReport,
        NoticeKind::VerifyOverdue => pb::DispatchKind::VerifyOverdue,
    }
}

/// The API's kind of a timeline entry.
pub fn timeline_kind(k: EventKind) -> pb::TimelineKind {
    match k {
        EventKind::Reported => pb::TimelineKind::Reported,
        EventKind::Dispatched => pb::TimelineKind::Dispatched,
        EventKind::Merged => pb::TimelineKind::Merged,
        EventKind::DuplicateMerged => pb::TimelineKind::DuplicateMerged,
        EventKind::Unmerged => pb::TimelineKind::Unmerged,
        EventKind::DeadLettered => pb::TimelineKind::DeadLettered,
        EventKind::Accepted => pb::TimelineKind::Accepted,
        EventKind::Progress => pb::TimelineKind::Progress,
        EventKind::Resolved => pb::TimelineKind::Resolved,
        EventKind::Returned => pb::TimelineKind::Returned,
        EventKind::Arbitrated => pb::TimelineKind::Arbitrated,
        EventKind::ExtensionRequested => pb::TimelineKind::ExtensionRequested,
        EventKind::ExtensionApproved => pb::TimelineKind::ExtensionApproved,
        EventKind::SuspensionRequested => pb::TimelineKind::SuspensionRequested,
        EventKind::Suspended => pb::TimelineKind::Suspended,
        EventKind::RequestRejected => pb::TimelineKind::RequestRejected,
        EventKind::Resumed => pb::TimelineKind::Resumed,
        EventKind::Verified => pb::TimelineKind::Verified,
        EventKind::VerificationFailed => pb::TimelineKind::VerificationFailed,
        EventKind::Feedback => pb::TimelineKind::Feedback,
        EventKind::Dissatisfied => pb::TimelineKind::Dissatisfied,
        EventKind::Closed => pb::TimelineKind::Closed,
        EventKind::Cancelled => pb::TimelineKind::Cancelled,
        EventKind::Outcome => pb::TimelineKind::Outcome,
        EventKind::AcceptOverdue => pb::TimelineKind::AcceptOverdue,
        EventKind::Warning => pb::TimelineKind::Warning,
        EventKind::Urged => pb::TimelineKind::Urged,
        EventKind::Supervised => pb::TimelineKind::Supervised,
        EventKind::PublicReport => pb::TimelineKind::PublicReport,
        EventKind::VerifyOverdue => pb::TimelineKind::VerifyOverdue,
        EventKind::ContactErased => pb::TimelineKind::ContactErased,
    }
}

/// The API's kind of a stored entry's text kind (`UNSPECIFIED` for a text gridroute no longer
/// writes).
pub fn timeline_kind_of(text: &str) -> pb::TimelineKind {
    EventKind::parse(text).map_or(pb::TimelineKind::Unspecified, timeline_kind)
}
