//! How gridroute's records look inside Redis, and the mapping between the core's types and the
//! API's messages.
//!
//! Reports, decisions, timeline events and dispatches are stored as protobuf bytes (compact,
//! versioned by the proto's field numbers). Timeline entries are `ms|bytes`, the time written by
//! the Lua script from the Redis clock.

use gridroute_core::{
    Decision, Outcome, RouteQuery, RouteTarget, RoutingTable, crs::Crs, rules::DeptId,
    rules::Urgency,
};
use gridroute_proto::v1 as pb;
use prost::Message;

use crate::StoreError;

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

/// The wire name of a status as stored in Redis.
pub fn status_from_str(s: &str) -> pb::IncidentStatus {
    match s {
        "reported" => pb::IncidentStatus::Reported,
        "dispatched" => pb::IncidentStatus::Dispatched,
        "accepted" => pb::IncidentStatus::Accepted,
        "resolved" => pb::IncidentStatus::Resolved,
        "returned" => pb::IncidentStatus::Returned,
        _ => pb::IncidentStatus::Unspecified,
    }
}

/// A timeline event without its time (the script adds the Redis time).
pub fn event_bytes(kind: &str, actor: &str, detail: &str, department: &str) -> Vec<u8> {
    pb::TimelineEvent {
        time: None,
        kind: kind.to_owned(),
        actor: actor.to_owned(),
        detail: detail.to_owned(),
        department_id: department.to_owned(),
    }
    .encode_to_vec()
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

/// Builds an incident message from its stored hash fields and timeline.
pub fn incident_from_fields(
    id: &str,
    fields: &std::collections::HashMap<String, Vec<u8>>,
    timeline: &[Vec<u8>],
) -> Result<pb::Incident, StoreError> {
    let text = |k: &str| fields.get(k).and_then(|v| std::str::from_utf8(v).ok());
    let ms = |k: &str| text(k).and_then(|s| s.parse::<i64>().ok()).map(timestamp);
    let report = match fields.get("report") {
        Some(b) => Some(
            pb::ReportIncidentRequest::decode(b.as_slice())
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        ),
        None => return Err(StoreError::NotFound(id.to_owned())),
    };
    let decision = match fields.get("decision") {
        Some(b) => Some(
            pb::RouteDecision::decode(b.as_slice())
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        ),
        None => None,
    };
    Ok(pb::Incident {
        incident_id: id.to_owned(),
        report,
        status: status_from_str(text("status").unwrap_or("")) as i32,
        decision,
        reported_time: ms("reported_at"),
        dispatched_time: ms("dispatched_at"),
        accept_deadline: ms("accept_due"),
        resolve_deadline: ms("resolve_due"),
        timeline: timeline
            .iter()
            .map(|r| decode_event(r))
            .collect::<Result<_, _>>()?,
        returned_by: text("returned_by")
            .filter(|s| !s.is_empty())
            .map(|s| s.split(',').map(str::to_owned).collect())
            .unwrap_or_default(),
    })
}
