//! How gridroute's records look inside Redis. (The mapping between the core's types and the
//! API's messages is `gridroute-mapping`'s.)
//!
//! Reports, decisions, timeline events and dispatches are stored as protobuf bytes (compact,
//! versioned by the proto's field numbers). Timeline entries are `ms|bytes`, the time written by
//! the Lua script from the Redis clock. A decision's reasons and a timeline entry's words are
//! stored shorter (`compact`): write them with [`decision_bytes`] and [`stored_event`], read
//! them with [`decode_decision`] and [`event_from_stored`].

use std::collections::HashMap;

use gridroute_core::lifecycle::{self, EventKind, Pending, Record, Status};
use gridroute_proto::v1 as pb;
use prost::Message;

use crate::{
    StoreError,
    compact::{self, Context},
};

/// A record's hash fields as read from Redis.
pub type Fields = HashMap<String, Vec<u8>>;

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
        .map(|b| decode_decision(b, report.as_ref()))
        .transpose()?
        .unwrap_or_default();
    Ok((report, decision))
}

/// What a stored decision's text may refer to: its own fields and its record's report. The
/// letters are part of the stored format (`compact`): never change what one stands for.
fn decision_context<'a>(
    d: &'a pb::RouteDecision,
    report: Option<&'a pb::ReportIncidentRequest>,
    point: bool,
) -> Context<'a> {
    let describe = |r: &pb::RegionRef| format!("{} {}", r.code, r.name);
    let mut ctx = Context::new()
        .with(b'g', d.region_path.last().map(describe).unwrap_or_default())
        .with(
            b'k',
            d.region_path
                .last()
                .map(|r| r.code.as_str())
                .unwrap_or_default(),
        )
        .with(b'd', d.department_id.as_str())
        .with(b'r', d.rule_id.as_str())
        .with(b't', d.table_version.as_str());
    // The whole path appears only in the reason of a point in a hole between grids.
    if d.outcome == pb::RouteOutcome::InHole as i32 {
        let path: Vec<String> = d.region_path.iter().map(describe).collect();
        ctx = ctx.with(b'a', path.join(" > "));
    }
    if let Some(r) = report {
        ctx = ctx.with(b'c', r.category.as_str());
        if let (true, Some(pb::location::Kind::Point(p))) =
            (point, r.location.as_ref().and_then(|l| l.kind.as_ref()))
        {
            ctx = ctx.with(b'p', format!("{}, {}", p.longitude, p.latitude));
        }
    }
    ctx
}

/// A decision as stored in its record: the reasons written shorter, against the decision's
/// own fields and the record's report (`report`: the one stored with it). `d` is as it was
/// when this returns (its texts are swapped for their short forms while it is encoded, rather
/// than the whole decision copied: the router does this for every incident).
pub fn decision_bytes(
    d: &mut pb::RouteDecision,
    report: Option<&pb::ReportIncidentRequest>,
) -> Vec<u8> {
    compacted_bytes(d, report, true)
}

/// As [`decision_bytes`], for a decision whose reasons are in their stored form already
/// (written from the decision's parts with [`compact::Writer`], as the router does for its most
/// common reasons); only the other texts are compacted, and without the point, which only the
/// reasons mention (formatting it is a good share of the work saved).
pub fn decision_bytes_with_stored_reasons(
    d: &mut pb::RouteDecision,
    report: Option<&pb::ReportIncidentRequest>,
) -> Vec<u8> {
    compacted_bytes(d, report, false)
}

fn compacted_bytes(
    d: &mut pb::RouteDecision,
    report: Option<&pb::ReportIncidentRequest>,
    reasons: bool,
) -> Vec<u8> {
    let mut texts: Vec<String> = decision_texts(d, reasons).map(std::mem::take).collect();
    let short: Vec<String> = {
        // Most of these texts are a region's level, one phrase: no context is needed for them.
        let mut ctx = None;
        texts
            .iter()
            .map(|t| match compact::whole_phrase(t) {
                Some(s) => s,
                None => compact::compact(
                    t,
                    ctx.get_or_insert_with(|| decision_context(d, report, reasons)),
                ),
            })
            .collect()
    };
    for (slot, t) in decision_texts(d, reasons).zip(short) {
        *slot = t;
    }
    let bytes = d.encode_to_vec();
    for (slot, t) in decision_texts(d, reasons).zip(texts.iter_mut()) {
        std::mem::swap(slot, t);
    }
    bytes
}

/// A stored decision with its reasons in full (`report`: the record's).
pub fn decode_decision(
    bytes: &[u8],
    report: Option<&pb::ReportIncidentRequest>,
) -> Result<pb::RouteDecision, StoreError> {
    let mut d = pb::RouteDecision::decode(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    if !decision_texts(&mut d, true).any(|t| t.starts_with(compact::MARK)) {
        return Ok(d);
    }
    // Taken out while the context (which refers to the decision's other fields) is in use.
    let mut texts: Vec<String> = decision_texts(&mut d, true).map(std::mem::take).collect();
    {
        let ctx = decision_context(&d, report, true);
        for t in &mut texts {
            if t.starts_with(compact::MARK) {
                *t = compact::expand(t, &ctx)
                    .map_err(|e| StoreError::Corrupt(format!("a stored decision: {e}")))?;
            }
        }
    }
    for (slot, t) in decision_texts(&mut d, true).zip(texts) {
        *slot = t;
    }
    Ok(d)
}

/// The texts of a decision that are stored shorter: its reasons, its regions' levels and its
/// grid workers (never what [`decision_context`] refers to); without the reasons when they
/// are in their stored form already.
fn decision_texts(d: &mut pb::RouteDecision, reasons: bool) -> impl Iterator<Item = &mut String> {
    d.reasons
        .iter_mut()
        .take(if reasons { usize::MAX } else { 0 })
        .chain(d.region_path.iter_mut().map(|r| &mut r.level))
        .chain(d.grid_workers.iter_mut())
}

/// A timeline entry as stored (without its time): its words written shorter against its own
/// department, and its text kind left out when its `type` tells it.
pub fn stored_event(mut ev: pb::TimelineEvent) -> Vec<u8> {
    let ctx = Context::new().with(b'd', ev.department_id.as_str());
    if ev.r#type != 0 && gridroute_mapping::timeline_kind_of(&ev.kind) as i32 == ev.r#type {
        ev.kind.clear();
    }
    for t in [
        &mut ev.detail,
        &mut ev.actor,
        &mut ev.actor_kind,
        &mut ev.user,
    ] {
        *t = compact::compact(t, &ctx);
    }
    ev.encode_to_vec()
}

/// A stored timeline entry's event (without its time) in full.
pub fn event_from_stored(bytes: &[u8]) -> Result<pb::TimelineEvent, StoreError> {
    let mut ev =
        pb::TimelineEvent::decode(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    // Timeline and watch reads decode every entry: the context only when something refers to it.
    let texts = [
        &mut ev.detail,
        &mut ev.actor,
        &mut ev.actor_kind,
        &mut ev.user,
    ];
    if texts.iter().any(|t| t.starts_with(compact::MARK)) {
        let ctx = Context::new().with(b'd', ev.department_id.as_str());
        for t in texts {
            if t.starts_with(compact::MARK) {
                *t = compact::expand(t, &ctx)
                    .map_err(|e| StoreError::Corrupt(format!("a timeline entry: {e}")))?;
            }
        }
    }
    if ev.kind.is_empty() {
        ev.kind = EventKind::ALL
            .into_iter()
            .find(|k| gridroute_mapping::timeline_kind(*k) as i32 == ev.r#type)
            .map(|k| k.as_str().to_owned())
            .unwrap_or_default();
    }
    set_type(&mut ev);
    Ok(ev)
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
    let pending = text(fields, "pending").and_then(parse_pending);
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
pub fn event_bytes(kind: EventKind, actor: &str, detail: &str, department: &str) -> Vec<u8> {
    stored_event(pb::TimelineEvent {
        time: None,
        kind: kind.as_str().to_owned(),
        actor: actor.to_owned(),
        detail: detail.to_owned(),
        department_id: department.to_owned(),
        user: String::new(),
        actor_kind: String::new(),
        r#type: gridroute_mapping::timeline_kind(kind) as i32,
    })
}

/// The time of a stored timeline entry (`ms|bytes`); 0 when it has none.
pub fn entry_ms(raw: &[u8]) -> i64 {
    raw.iter()
        .position(|&b| b == b'|')
        .and_then(|sep| std::str::from_utf8(&raw[..sep]).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Fills an entry's `type` from its text kind when it was stored without one (entries written
/// before the contract had the enum).
pub fn set_type(ev: &mut pb::TimelineEvent) {
    if ev.r#type == 0 {
        ev.r#type = gridroute_mapping::timeline_kind_of(&ev.kind) as i32;
    }
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
    let mut ev = event_from_stored(&raw[sep + 1..])?;
    ev.time = Some(gridroute_mapping::timestamp(ms));
    Ok(ev)
}

/// The pending request of a stored `pending` field (`extension|<span>`, `suspension|`).
fn pending_message(text: &str) -> Option<pb::PendingRequest> {
    match parse_pending(text)? {
        Pending::Extension(span) => Some(pb::PendingRequest {
            kind: pb::PendingKind::Extension as i32,
            extension: span,
        }),
        Pending::Suspension => Some(pb::PendingRequest {
            kind: pb::PendingKind::Suspension as i32,
            extension: String::new(),
        }),
    }
}

/// Parses a stored `pending` field.
fn parse_pending(text: &str) -> Option<Pending> {
    match text.split_once('|') {
        Some(("extension", span)) => Some(Pending::Extension(span.to_owned())),
        Some(("suspension", _)) => Some(Pending::Suspension),
        _ => None,
    }
}

/// Builds an incident message from its stored hash fields, timeline and merged set.
#[allow(deprecated)] // `pending_request` is still filled for older clients.
pub fn incident_from_fields(
    id: &str,
    fields: &HashMap<String, Vec<u8>>,
    timeline: &[Vec<u8>],
    merged: Vec<String>,
) -> Result<pb::Incident, StoreError> {
    let ms = |k: &str| {
        text(fields, k)
            .and_then(|s| s.parse::<i64>().ok())
            .map(gridroute_mapping::timestamp)
    };
    let mut report = match fields.get("report") {
        Some(b) => pb::ReportIncidentRequest::decode(b.as_slice())
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        None => return Err(StoreError::NotFound(id.to_owned())),
    };
    // The contact joins the report here; the API masks it for callers who may not read it.
    report.reporter = contact(fields, Some(&report));
    let decision = fields
        .get("decision")
        .map(|b| decode_decision(b, Some(&report)))
        .transpose()?;
    let status = gridroute_mapping::status_from_str(text(fields, "status").unwrap_or(""));
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
        pending: text(fields, "pending").and_then(pending_message),
        escalations: list(fields, "fired"),
        department_id: text(fields, "dept").unwrap_or_default().to_owned(),
        deadline_estimated: text(fields, lifecycle::ESTIMATED_FIELD) == Some("1"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> pb::ReportIncidentRequest {
        pb::ReportIncidentRequest {
            category: "city.vehicle.illegal_parking".into(),
            location: Some(pb::Location {
                kind: Some(pb::location::Kind::Point(pb::LatLng {
                    latitude: 39.0,
                    longitude: 106.5,
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn decision() -> pb::RouteDecision {
        pb::RouteDecision {
            department_id: "traffic-police".into(),
            region_path: vec![pb::RegionRef {
                code: "640202001001001".into(),
                name: "网格".into(),
                level: "grid".into(),
            }],
            rule_id: "parking".into(),
            reasons: vec![
                "point (106.5, 39) lies in grid 640202001001001 网格".into(),
                "rule parking (priority 0) matched category prefix city.vehicle.illegal_parking"
                    .into(),
            ],
            grid_workers: vec!["gw-640202001001001".into()],
            ..Default::default()
        }
    }

    #[test]
    fn a_decision_reads_back_exactly_and_old_ones_read_as_they_are() {
        let (mut d, r) = (decision(), report());
        let stored = decision_bytes(&mut d, Some(&r));
        assert_eq!(d, decision(), "left as it was");
        assert!(stored.len() + 80 < d.encoded_len(), "{}", stored.len());
        assert_eq!(decode_decision(&stored, Some(&r)).unwrap(), d);
        // Written before the shorter form: plain text, read as it is.
        assert_eq!(decode_decision(&d.encode_to_vec(), None).unwrap(), d);
        // A point in a hole between grids: its reason names the whole path.
        let mut hole = decision();
        hole.outcome = pb::RouteOutcome::InHole as i32;
        hole.region_path.insert(
            0,
            pb::RegionRef {
                code: "640202".into(),
                name: "大武口区".into(),
                level: "district".into(),
            },
        );
        hole.reasons = vec![
            "point (106.5, 39) lies in no grid but in a hole of 120 m² between the grids of \
             640202 大武口区 > 640202001001001 网格"
                .into(),
        ];
        let stored = decision_bytes(&mut hole.clone(), Some(&r));
        assert!(stored.len() + 100 < hole.encoded_len(), "{}", stored.len());
        assert_eq!(decode_decision(&stored, Some(&r)).unwrap(), hole);
        // A reference to the report cannot be told without it.
        assert!(matches!(
            decode_decision(&stored, None),
            Err(StoreError::Corrupt(_))
        ));
    }

    #[test]
    fn a_timeline_entry_reads_back_exactly() {
        let ev = pb::TimelineEvent {
            kind: EventKind::Dispatched.as_str().into(),
            r#type: gridroute_mapping::timeline_kind(EventKind::Dispatched) as i32,
            actor: "router".into(),
            detail: "to traffic-police by rule parking (table t-1)".into(),
            department_id: "traffic-police".into(),
            ..Default::default()
        };
        let stored = stored_event(ev.clone());
        assert!(stored.len() + 25 < ev.encoded_len(), "{}", stored.len());
        assert_eq!(event_from_stored(&stored).unwrap(), ev);
        assert_eq!(event_from_stored(&ev.encode_to_vec()).unwrap(), ev);
    }
}
