//! How gridroute's records look inside Redis, and the mapping between the core's types and the
//! API's messages.
//!
//! Reports, decisions, timeline events and dispatches are stored as protobuf bytes (compact,
//! versioned by the proto's field numbers). Timeline entries are `ms|bytes`, the time written by
//! the Lua script from the Redis clock.

use std::collections::HashMap;

use gridroute_core::{
    Decision, Outcome, RouteQuery, RouteTarget, RoutingTable,
    crs::Crs,
    lifecycle::{NoticeKind, Pending, Record, Status},
    rules::DeptId,
    rules::Urgency,
};
use gridroute_proto::v1 as pb;
use prost::Message;

use crate::StoreError;

/// A record's hash fields as read from Redis.
pub type Fields = HashMap<String, Vec<u8>>;

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
    let target = match loc.kind.as_ref()? {
        pb::location::Kind::Point(p) => RouteTarget::Point {
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
        pb::location::Kind::GridCode(code) => RouteTarget::Grid(code),
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
    let rule = d.rule.map(|i| &table.rules[i as usize]);
    pb::RouteDecision {
        outcome: match d.outcome {
            Outcome::Matched => pb::RouteOutcome::Matched,
            Outcome::NoRule => pb::RouteOutcome::NoRule,
            Outcome::OutsideGrids => pb::RouteOutcome::OutsideGrids,
            Outcome::UnknownGrid => pb::RouteOutcome::UnknownGrid,
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
        reasons: table.explain(q, d),
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

fn text<'a>(fields: &'a HashMap<String, Vec<u8>>, k: &str) -> Option<&'a str> {
    fields
        .get(k)
        .and_then(|v| std::str::from_utf8(v).ok())
        .filter(|s| !s.is_empty())
}

fn list(fields: &HashMap<String, Vec<u8>>, k: &str) -> Vec<String> {
    text(fields, k)
        .map(|s| s.split(',').map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The report and the decision of a stored record, decoded.
pub fn decode_parts(
    fields: &HashMap<String, Vec<u8>>,
) -> Result<(Option<pb::ReportIncidentRequest>, pb::RouteDecision), StoreError> {
    let corrupt = |e: prost::DecodeError| StoreError::Corrupt(e.to_string());
    let report = fields
        .get("report")
        .map(|b| pb::ReportIncidentRequest::decode(b.as_slice()))
        .transpose()
        .map_err(corrupt)?;
    let decision = fields
        .get("decision")
        .map(|b| pb::RouteDecision::decode(b.as_slice()))
        .transpose()
        .map_err(corrupt)?
        .unwrap_or_default();
    Ok((report, decision))
}

/// The reporter's contact kept with a record: the `contact` field, or (records written before
/// the contact had a field of its own) the report's. `None` when there is none, or it was erased.
pub fn contact(
    fields: &HashMap<String, Vec<u8>>,
    report: Option<&pb::ReportIncidentRequest>,
) -> Option<pb::ReporterContact> {
    match fields.get("contact") {
        Some(b) => pb::ReporterContact::decode(b.as_slice()).ok(),
        None => report.and_then(|r| r.reporter.clone()),
    }
}

/// What the lifecycle needs of a stored record (its report and decision already decoded).
pub fn record_from_fields(
    fields: &HashMap<String, Vec<u8>>,
    report: Option<&pb::ReportIncidentRequest>,
    decision: &pb::RouteDecision,
    merged: Vec<String>,
) -> Record {
    let num = |k: &str| text(fields, k).and_then(|s| s.parse::<i64>().ok());
    let paused = text(fields, "paused").and_then(|p| {
        let (a, r) = p.split_once('|')?;
        Some((a.parse().ok(), r.parse().ok()?))
    });
    let pending = text(fields, "pending").and_then(|p| match p.split_once('|') {
        Some(("extension", span)) => Some(Pending::Extension(span.to_owned())),
        Some(("suspension", _)) => Some(Pending::Suspension),
        _ => None,
    });
    let reporter_id = contact(fields, report)
        .map(|c| c.reporter_id)
        .unwrap_or_default();
    let report = report.cloned().unwrap_or_default();
    Record {
        status: text(fields, "status").and_then(Status::parse),
        generation: num("gen").unwrap_or(0) as u64,
        department: text(fields, "dept").unwrap_or_default().to_owned(),
        co_handlers: decision.co_department_ids.clone(),
        grid: decision
            .region_path
            .last()
            .map(|r| r.code.clone())
            .unwrap_or_default(),
        grid_workers: decision.grid_workers.clone(),
        policy: decision.sla_policy.clone(),
        source_system: report.source_system,
        reporter_id,
        category: report.category,
        returned_by: list(fields, "returned_by"),
        locked: text(fields, "locked").is_some(),
        dispatched_at: num("dispatched_at"),
        accept_due: num("accept_due"),
        resolve_due: num("resolve_due"),
        accepted_at: num("accepted_at"),
        prev_status: text(fields, "prev_status").and_then(Status::parse),
        paused,
        pending,
        fired: list(fields, "fired"),
        reported_at: num("reported_at"),
        timers: text(fields, "timers")
            .map(crate::schedule::decode)
            .unwrap_or_default(),
        merged,
        merged_into: text(fields, "merged_into").unwrap_or_default().to_owned(),
        satisfaction: num("satisfaction").map(|s| s as u8),
        reopened: num("reopened").unwrap_or(0) as u32,
    }
}

/// A timeline event of gridroute's own (actor `router` or a system) without its time (the
/// script adds the Redis time).
pub fn event_bytes(kind: &str, actor: &str, detail: &str, department: &str) -> Vec<u8> {
    pb::TimelineEvent {
        time: None,
        kind: kind.to_owned(),
        actor: actor.to_owned(),
        detail: detail.to_owned(),
        department_id: department.to_owned(),
        user: String::new(),
        actor_kind: String::new(),
    }
    .encode_to_vec()
}

/// The time of a stored timeline entry (`ms|bytes`); 0 when it has none.
pub fn entry_ms(raw: &[u8]) -> i64 {
    raw.iter()
        .position(|&b| b == b'|')
        .and_then(|sep| std::str::from_utf8(&raw[..sep]).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Decodes one stored timeline entry (`ms|bytes`).
pub fn decode_event(raw: &[u8]) -> Result<pb::TimelineEvent, StoreError> {
    let sep = raw
        .iter()
        .position(|&b| b == b'|')
        .ok_or_else(|| StoreError::Corrupt("timeline entry without time".into()))?;
    let ms: i64 = std::str::from_utf8(&raw[..sep])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| StoreError::Corrupt("timeline entry time".into()))?;
    let mut ev = pb::TimelineEvent::decode(&raw[sep + 1..])
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    ev.time = Some(timestamp(ms));
    Ok(ev)
}

/// Builds an incident message from its stored hash fields, timeline and merged set.
pub fn incident_from_fields(
    id: &str,
    fields: &HashMap<String, Vec<u8>>,
    timeline: &[Vec<u8>],
    merged: Vec<String>,
) -> Result<pb::Incident, StoreError> {
    let ms = |k: &str| {
        text(fields, k)
            .and_then(|s| s.parse::<i64>().ok())
            .map(timestamp)
    };
    let mut report = match fields.get("report") {
        Some(b) => pb::ReportIncidentRequest::decode(b.as_slice())
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        None => return Err(StoreError::NotFound(id.to_owned())),
    };
    // The contact joins the report here; the API masks it for callers who may not read it.
    report.reporter = contact(fields, Some(&report));
    let decision = match fields.get("decision") {
        Some(b) => Some(
            pb::RouteDecision::decode(b.as_slice())
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        ),
        None => None,
    };
    let status = status_from_str(text(fields, "status").unwrap_or(""));
    let open = matches!(
        status,
        pb::IncidentStatus::Dispatched
            | pb::IncidentStatus::Accepted
            | pb::IncidentStatus::InProgress
            | pb::IncidentStatus::Reopened
            | pb::IncidentStatus::Suspended
    );
    Ok(pb::Incident {
        incident_id: id.to_owned(),
        report: Some(report),
        status: status as i32,
        decision,
        reported_time: ms("reported_at"),
        dispatched_time: ms("dispatched_at"),
        accept_deadline: ms("accept_due").filter(|_| text(fields, "accepted_at").is_none() && open),
        resolve_deadline: ms("resolve_due"),
        timeline: timeline
            .iter()
            .map(|r| decode_event(r))
            .collect::<Result<_, _>>()?,
        returned_by: list(fields, "returned_by"),
        accepted_time: ms("accepted_at"),
        resolved_time: ms("resolved_at"),
        verify_deadline: ms("verify_due"),
        verified_time: ms("verified_at"),
        closed_time: ms("closed_at"),
        locked: text(fields, "locked").is_some(),
        warning: text(fields, "warning").is_some(),
        reopened_count: text(fields, "reopened")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        satisfaction: text(fields, "satisfaction")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        merged_incident_ids: merged,
        merged_into: text(fields, "merged_into").unwrap_or_default().to_owned(),
        pending_request: text(fields, "pending").unwrap_or_default().to_owned(),
        escalations: list(fields, "fired"),
        department_id: text(fields, "dept").unwrap_or_default().to_owned(),
    })
}
