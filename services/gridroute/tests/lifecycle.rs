//! The closed loop of #4 through the gRPC API against a real redis-server: every illegal
//! transition, idempotent actions, return → re-route → arbitration, extension and suspension,
//! merge and un-merge, verification, feedback and reopening, points, timers that fire exactly
//! once across replicas, WatchIncidents and GetStats.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use common::{Env, fast_router, grid_point, next_dispatch, report};
use gridroute_proto::v1 as pb;
use tonic::Code;

/// The sample rules plus duplicate detection, points, and a seconds-long policy for timers.
fn rules() -> String {
    gridroute_benches::DAWUKOU_RULES
        .replace(
            "sla_policies:\n",
            "sla_policies:\n  quick: {accept: 1s, resolve: 2s, verify: 1h, warn_at: [50], escalation: [{step: urge, after: '0'}, {step: supervise, after: 1s}, {step: public_report, after: 2s}]}\n",
        )
        .replace(
            "rules:\n",
            "rules:\n  - id: quick\n    category: test.quick\n    department: water-affairs\n    sla: quick\n",
        )
        .replace(
            "# duplicates:\n#   - {category: city.vehicle.abandoned, within_m: 50, window: 24h}",
            "duplicates:\n  - {category: city.vehicle.abandoned, within_m: 50, window: 24h}",
        )
        .replace("{city.safety: 3, city.fire_lane: 3}", "{city.vehicle: 5}")
}

async fn reported(env: &Env, rid: &str, category: &str, lng: f64, lat: f64) -> String {
    let id = env.report(report(rid, category, lng, lat)).await;
    env.wait_status(&id, pb::IncidentStatus::Dispatched).await;
    id
}

fn accept(id: &str, dept: &str, rid: &str) -> pb::AcceptIncidentRequest {
    pb::AcceptIncidentRequest {
        incident_id: id.into(),
        department_id: dept.into(),
        note: "on it".into(),
        request_id: rid.into(),
    }
}

fn resolve(id: &str, dept: &str, rid: &str) -> pb::ResolveIncidentRequest {
    pb::ResolveIncidentRequest {
        incident_id: id.into(),
        department_id: dept.into(),
        note: "towed away".into(),
        request_id: rid.into(),
        ..Default::default()
    }
}

fn ret(id: &str, dept: &str, rid: &str) -> pb::ReturnIncidentRequest {
    pb::ReturnIncidentRequest {
        incident_id: id.into(),
        department_id: dept.into(),
        reason: pb::ReturnReason::NotInRemit as i32,
        note: "not ours".into(),
        request_id: rid.into(),
    }
}

fn kinds(inc: &pb::Incident) -> Vec<String> {
    inc.timeline.iter().map(|e| e.kind.clone()).collect()
}

/// Reads a department's stream until a message of `kind` arrives.
async fn notice(
    stream: &mut tonic::Streaming<pb::Dispatch>,
    kind: pb::DispatchKind,
) -> pb::Dispatch {
    loop {
        let d = next_dispatch(stream).await;
        if d.kind == kind as i32 {
            return d;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn illegal_transitions_fail_and_request_ids_make_actions_idempotent() {
    let env = Env::with_rules(&rules()).await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let id = reported(&env, "il-1", "city.sanitation", lng, lat).await;
    let (mut d, mut s, mut i) = (
        env.dispatches().await,
        env.supervision().await,
        env.incidents().await,
    );
    let centre = "command-centre";
    // Every action that is illegal on a dispatched incident.
    let fp = |r: Result<tonic::Response<pb::Incident>, tonic::Status>, what: &str| {
        assert_eq!(r.unwrap_err().code(), Code::FailedPrecondition, "{what}");
    };
    fp(
        s.verify_incident(env.signed(pb::VerifyIncidentRequest {
            incident_id: id.clone(),
            department_id: centre.into(),
            passed: true,
            ..Default::default()
        }))
        .await,
        "verify before resolve",
    );
    fp(
        s.close_incident(env.signed(pb::CloseIncidentRequest {
            incident_id: id.clone(),
            department_id: centre.into(),
            ..Default::default()
        }))
        .await,
        "close before verify",
    );
    fp(
        s.arbitrate_incident(env.signed(pb::ArbitrateIncidentRequest {
            incident_id: id.clone(),
            department_id: centre.into(),
            assignee_department_id: "water-affairs".into(),
            ..Default::default()
        }))
        .await,
        "arbitrate without arbitration",
    );
    fp(
        s.unmerge_incident(env.signed(pb::UnmergeIncidentRequest {
            incident_id: id.clone(),
            department_id: centre.into(),
            ..Default::default()
        }))
        .await,
        "unmerge an incident that was not merged",
    );
    fp(
        s.decide_request(env.signed(pb::DecideRequestRequest {
            incident_id: id.clone(),
            department_id: centre.into(),
            approve: true,
            ..Default::default()
        }))
        .await,
        "decide without a request",
    );
    fp(
        d.resume_incident(env.signed(pb::ResumeIncidentRequest {
            incident_id: id.clone(),
            department_id: "urban-management".into(),
            ..Default::default()
        }))
        .await,
        "resume without suspension",
    );
    fp(
        i.submit_feedback(env.signed(pb::SubmitFeedbackRequest {
            incident_id: id.clone(),
            source_system: "resident-app".into(),
            satisfaction: 4,
            ..Default::default()
        }))
        .await,
        "feedback before resolve",
    );
    // Who may act.
    let err = d
        .accept_incident(env.signed(accept(&id, "water-affairs", "x")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = s
        .close_incident(env.signed(pb::CloseIncidentRequest {
            incident_id: id.clone(),
            department_id: "water-affairs".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::PermissionDenied,
        "only a command centre closes"
    );
    let err = i
        .submit_feedback(env.signed(pb::SubmitFeedbackRequest {
            incident_id: id.clone(),
            source_system: "other-app".into(),
            satisfaction: 4,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::PermissionDenied,
        "only the reporting system"
    );
    // Field-level errors.
    let err = d
        .accept_incident(env.signed(accept(&id, "urban-management", "bad id!")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // Idempotency: the same request id is OK and changes nothing; another id is judged afresh.
    let first = d
        .accept_incident(env.signed_by(accept(&id, "urban-management", "a-1"), "wang.kezhang"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.status, pb::IncidentStatus::Accepted as i32);
    let again = d
        .accept_incident(env.signed(accept(&id, "urban-management", "a-1")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        again.timeline.len(),
        first.timeline.len(),
        "nothing changed"
    );
    let accepted = first.timeline.last().unwrap();
    assert_eq!(
        (
            accepted.kind.as_str(),
            accepted.actor.as_str(),
            accepted.user.as_str()
        ),
        ("accepted", "urban-management", "wang.kezhang")
    );
    fp(
        d.accept_incident(env.signed(accept(&id, "urban-management", "a-2")))
            .await,
        "accept twice",
    );
    let err = d
        .resolve_incident(env.signed(resolve(&id, "urban-management", "a-1")))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::AlreadyExists,
        "request id reused for another action"
    );
    // Progress moves an accepted incident to in progress; resolve after that; then the
    // department may no longer return it.
    let inc = d
        .add_progress(env.signed(pb::AddProgressRequest {
            incident_id: id.clone(),
            department_id: "urban-management".into(),
            note: "crew on the way".into(),
            request_id: "p-1".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(inc.status, pb::IncidentStatus::InProgress as i32);
    fp(
        d.return_incident(env.signed(ret(&id, "urban-management", "r-1")))
            .await,
        "return in progress",
    );
    let inc = d
        .resolve_incident(env.signed(resolve(&id, "urban-management", "res-1")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(inc.status, pb::IncidentStatus::Resolved as i32);
    fp(
        d.add_progress(env.signed(pb::AddProgressRequest {
            incident_id: id.clone(),
            department_id: "urban-management".into(),
            note: "more".into(),
            request_id: "p-2".into(),
        }))
        .await,
        "progress after resolve",
    );
    fp(
        s.close_incident(env.signed(pb::CloseIncidentRequest {
            incident_id: id.clone(),
            department_id: centre.into(),
            ..Default::default()
        }))
        .await,
        "close before verify",
    );
    let inc = s
        .cancel_incident(env.signed(pb::CancelIncidentRequest {
            incident_id: id.clone(),
            department_id: centre.into(),
            reason: "x".into(),
            ..Default::default()
        }))
        .await;
    fp(inc, "a resolved incident cannot be cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returns_reroute_then_arbitration_assigns_a_department_that_cannot_return() {
    let env = Env::with_rules(&rules()).await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let mut centre_stream = env.subscribe("command-centre").await;
    let mut assignee_stream = env.subscribe("urban-management").await;
    let id = reported(&env, "ar-1", "city.vehicle.abandoned", lng, lat).await;
    let mut d = env.dispatches().await;
    d.return_incident(env.signed(ret(&id, "property-office", "r1")))
        .await
        .unwrap();
    // Routed again without property-office: no other rule covers it, the centre takes it.
    let mut inc = env.wait_status(&id, pb::IncidentStatus::Dispatched).await;
    for _ in 0..100 {
        if inc.decision.as_ref().unwrap().department_id == "command-centre" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        inc = env.wait_status(&id, pb::IncidentStatus::Dispatched).await;
    }
    assert_eq!(inc.decision.unwrap().department_id, "command-centre");
    // Second return: arbitration, not another round.
    let inc = d
        .return_incident(env.signed(ret(&id, "command-centre", "r2")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(inc.status, pb::IncidentStatus::Arbitration as i32);
    assert_eq!(inc.returned_by, ["property-office", "command-centre"]);
    let n = notice(&mut centre_stream, pb::DispatchKind::ArbitrationNeeded).await;
    assert_eq!(n.incident_id, id);
    // Nobody routes it meanwhile.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut s = env.supervision().await;
    let err = s
        .arbitrate_incident(env.signed(pb::ArbitrateIncidentRequest {
            incident_id: id.clone(),
            department_id: "command-centre".into(),
            assignee_department_id: "no-such-department".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let inc = s
        .arbitrate_incident(env.signed(pb::ArbitrateIncidentRequest {
            incident_id: id.clone(),
            department_id: "command-centre".into(),
            assignee_department_id: "urban-management".into(),
            note: "abandoned cars on public roads are urban management's".into(),
            request_id: "arb-1".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(inc.status, pb::IncidentStatus::Dispatched as i32);
    assert!(inc.locked);
    assert_eq!(
        inc.decision.as_ref().unwrap().department_id,
        "urban-management"
    );
    assert!(inc.resolve_deadline.is_some() && inc.accept_deadline.is_some());
    let assigned = notice(&mut assignee_stream, pb::DispatchKind::Assigned).await;
    assert_eq!(assigned.incident_id, id);
    assert!(assigned.resolve_deadline.is_some());
    let err = d
        .return_incident(env.signed(ret(&id, "urban-management", "r3")))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::FailedPrecondition,
        "assigned by arbitration"
    );
    let kinds = kinds(&env.wait_status(&id, pb::IncidentStatus::Dispatched).await);
    assert_eq!(
        kinds,
        [
            "reported",
            "dispatched",
            "returned",
            "dispatched",
            "returned",
            "arbitrated"
        ]
    );
    // Replayed from the start, each department's new-case dispatch still shows the report and
    // the decision it was delivered with, though the record's decision has moved on twice.
    for (department, decided) in [
        ("property-office", "property-office"),
        ("command-centre", "command-centre"),
    ] {
        let mut replay = env.subscribe(department).await;
        let first = notice(&mut replay, pb::DispatchKind::New).await;
        assert_eq!(first.incident_id, id);
        assert_eq!(
            first.decision.as_ref().map(|d| d.department_id.as_str()),
            Some(decided),
            "{department}'s replay"
        );
        let report = first.report.expect("the report, from the record");
        assert_eq!(report.category, "city.vehicle.abandoned");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extension_and_suspension_move_deadlines_only_as_approved() {
    let env = Env::with_rules(&rules()).await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let id = reported(&env, "ex-1", "city.sanitation", lng, lat).await;
    let (mut d, mut s) = (env.dispatches().await, env.supervision().await);
    let ms = |t: &Option<prost_types::Timestamp>| gridroute_mapping::millis(t.as_ref().unwrap());
    let before = env.wait_status(&id, pb::IncidentStatus::Dispatched).await;
    let due = ms(&before.resolve_deadline);

    let err = d
        .request_extension(env.signed(pb::RequestExtensionRequest {
            incident_id: id.clone(),
            department_id: "urban-management".into(),
            reason: "waiting for a crane".into(),
            extension: "two days".into(),
            request_id: "e0".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let inc = d
        .request_extension(env.signed(pb::RequestExtensionRequest {
            incident_id: id.clone(),
            department_id: "urban-management".into(),
            reason: "waiting for a crane".into(),
            extension: "2wd".into(),
            request_id: "e1".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    let pending = inc.pending.clone().unwrap();
    assert_eq!(pending.kind, pb::PendingKind::Extension as i32);
    assert_eq!(pending.extension, "2wd");
    #[allow(deprecated)]
    let packed = inc.pending_request.clone();
    assert_eq!(
        packed, "extension|2wd",
        "the deprecated text stays for older clients"
    );
    assert_eq!(
        ms(&inc.resolve_deadline),
        due,
        "nothing moves before approval"
    );
    // The centre grants one working day instead of two.
    let inc = s
        .decide_request(env.signed(pb::DecideRequestRequest {
            incident_id: id.clone(),
            department_id: "command-centre".into(),
            approve: true,
            note: "one day is enough".into(),
            granted_extension: "1wd".into(),
            request_id: "dec-1".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    let cal = &env.table().calendar;
    assert_eq!(
        ms(&inc.resolve_deadline),
        cal.add_working(due, cal.working_ms_per_day())
    );
    assert!(inc.pending.is_none());
    let due = ms(&inc.resolve_deadline);

    // Suspension: requested, approved, clocks stop; resumed, the time left is kept.
    d.request_suspension(env.signed(pb::RequestSuspensionRequest {
        incident_id: id.clone(),
        department_id: "urban-management".into(),
        reason: "court ruling pending".into(),
        request_id: "s1".into(),
    }))
    .await
    .unwrap();
    let inc = s
        .decide_request(env.signed(pb::DecideRequestRequest {
            incident_id: id.clone(),
            department_id: "command-centre".into(),
            approve: true,
            note: "approved".into(),
            request_id: "dec-2".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(inc.status, pb::IncidentStatus::Suspended as i32);
    let suspended_at = ms(&inc.timeline.last().unwrap().time);
    let left = cal.working_between(suspended_at, due);
    let mut r = env.redis().await;
    let p = gridroute_store::keys::partition_of(&id, common::PARTITIONS).unwrap();
    let timers: Vec<String> = redis::cmd("ZRANGE")
        .arg(env.store.keys().sla(p))
        .arg(0)
        .arg(-1)
        .query_async(&mut r)
        .await
        .unwrap();
    assert!(
        !timers.iter().any(|t| t.starts_with(&id)),
        "no clock runs while suspended"
    );
    let err = d
        .accept_incident(env.signed(accept(&id, "urban-management", "acc")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let inc = d
        .resume_incident(env.signed(pb::ResumeIncidentRequest {
            incident_id: id.clone(),
            department_id: "urban-management".into(),
            note: "ruling received".into(),
            request_id: "res".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(inc.status, pb::IncidentStatus::Dispatched as i32);
    let resumed_at = ms(&inc.timeline.last().unwrap().time);
    assert_eq!(
        ms(&inc.resolve_deadline),
        cal.add_working(resumed_at, left),
        "the working time left at suspension is left after resuming"
    );
    let k = kinds(&inc);
    assert_eq!(
        &k[2..],
        [
            "extension_requested",
            "extension_approved",
            "suspension_requested",
            "suspended",
            "resumed"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_merge_into_the_open_incident_and_can_be_unmerged() {
    let env = Env::with_rules(&rules()).await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let a = reported(&env, "dup-a", "city.vehicle.abandoned", lng, lat).await;
    // 9 m away, same category: merged. Same place, another category: its own incident.
    let b = env
        .report(report("dup-b", "city.vehicle.abandoned", lng + 0.0001, lat))
        .await;
    let merged = env.wait_status(&b, pb::IncidentStatus::Merged).await;
    assert_eq!(merged.merged_into, a);
    let c = env
        .report(report("dup-c", "city.environment.noise", lng + 0.0001, lat))
        .await;
    env.wait_status(&c, pb::IncidentStatus::Dispatched).await;
    let mut i = env.incidents().await;
    let env = &env;
    let get = |id: String| {
        let mut i = i.clone();
        async move {
            i.get_incident(env.signed(pb::GetIncidentRequest { incident_id: id }))
                .await
                .unwrap()
                .into_inner()
        }
    };
    let open = get(a.clone()).await;
    assert_eq!(open.merged_incident_ids, std::slice::from_ref(&b));
    assert!(kinds(&open).contains(&"duplicate_merged".to_owned()));
    // Only the centre may undo it; then B is routed on its own.
    let mut s = env.supervision().await;
    let unmerge = |dept: &str| pb::UnmergeIncidentRequest {
        incident_id: b.clone(),
        department_id: dept.into(),
        note: "a second car, not the same one".into(),
        request_id: "um-1".into(),
    };
    let err = s
        .unmerge_incident(env.signed(unmerge("property-office")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    s.unmerge_incident(env.signed(unmerge("command-centre")))
        .await
        .unwrap();
    let own = env.wait_status(&b, pb::IncidentStatus::Dispatched).await;
    assert!(own.merged_into.is_empty());
    assert_eq!(
        kinds(&own),
        ["reported", "merged", "unmerged", "dispatched"]
    );
    assert!(get(a.clone()).await.merged_incident_ids.is_empty());

    // A fresh duplicate merges again. It is critical (4 h wall clock): the case keeps the
    // earliest deadline. When the case resolves, the duplicate's record says so.
    let ms = |t: &Option<prost_types::Timestamp>| gridroute_mapping::millis(t.as_ref().unwrap());
    let due_before = ms(&get(a.clone()).await.resolve_deadline);
    let d2 = env
        .report(pb::ReportIncidentRequest {
            urgency: pb::Urgency::Critical as i32,
            ..report("dup-d", "city.vehicle.abandoned", lng, lat + 0.0001)
        })
        .await;
    let merged = env.wait_status(&d2, pb::IncidentStatus::Merged).await;
    let due_after = ms(&get(a.clone()).await.resolve_deadline);
    assert!(
        due_after < due_before,
        "the earlier deadline of the duplicate wins"
    );
    assert!(
        (due_after - ms(&merged.reported_time) - 4 * 3_600_000).abs() < 5_000,
        "four wall-clock hours from the duplicate's report"
    );
    let mut d = env.dispatches().await;
    d.resolve_incident(env.signed(resolve(&a, "property-office", "res")))
        .await
        .unwrap();
    let dup = get(d2.clone()).await;
    let last = dup.timeline.last().unwrap();
    assert_eq!(last.kind, "outcome");
    assert!(last.detail.contains("resolved"), "{}", last.detail);
    let _ = &mut i;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_feedback_reopening_and_reporter_points() {
    let env = Env::with_rules(&rules()).await;
    let (grid, _, lng, lat) = grid_point(&env.table(), false);
    let mut po_stream = env.subscribe("traffic-police").await;
    let id = reported(&env, "vf-1", "city.vehicle.illegal_parking", lng, lat).await;
    let primary = env
        .wait_status(&id, pb::IncidentStatus::Dispatched)
        .await
        .decision
        .unwrap()
        .department_id;
    let (mut d, mut s, mut i) = (
        env.dispatches().await,
        env.supervision().await,
        env.incidents().await,
    );
    d.resolve_incident(env.signed(resolve(&id, &primary, "r1")))
        .await
        .unwrap();
    // A worker of another grid may not verify; the incident's own grid worker may.
    let verify = |worker: &str, passed: bool, rid: &str| pb::VerifyIncidentRequest {
        incident_id: id.clone(),
        grid_worker_id: worker.into(),
        passed,
        note: "checked on site".into(),
        request_id: rid.into(),
        ..Default::default()
    };
    let err = s
        .verify_incident(env.signed(verify("gw-elsewhere", true, "v0")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let worker = format!("gw-{grid}");
    let inc = s
        .verify_incident(env.signed(verify(&worker, false, "v1")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        inc.status,
        pb::IncidentStatus::Reopened as i32,
        "failed verification reopens"
    );
    assert!(inc.warning);
    d.accept_incident(env.signed(accept(&id, &primary, "a2")))
        .await
        .unwrap();
    d.resolve_incident(env.signed(resolve(&id, &primary, "r2")))
        .await
        .unwrap();
    let inc = s
        .verify_incident(env.signed(verify(&worker, true, "v2")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(inc.status, pb::IncidentStatus::Verified as i32);
    // Points for the verified report: city.vehicle earns 5.
    let points = i
        .get_reporter_points(env.signed(pb::GetReporterPointsRequest {
            source_system: "resident-app".into(),
            reporter_id: "r-1".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(points.total, 5);
    assert_eq!(points.entries[0].incident_id, id);
    // A dissatisfied reporter reopens the case with a warning flag.
    let feedback = |sat: i32, rid: &str| pb::SubmitFeedbackRequest {
        incident_id: id.clone(),
        source_system: "resident-app".into(),
        satisfaction: sat,
        comment: "the car is still there".into(),
        request_id: rid.into(),
    };
    let err = i
        .submit_feedback(env.signed(feedback(9, "f0")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let inc = i
        .submit_feedback(env.signed(feedback(1, "f1")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(inc.status, pb::IncidentStatus::Reopened as i32);
    assert_eq!(inc.reopened_count, 2);
    let reopened = notice(&mut po_stream, pb::DispatchKind::Reopened).await;
    assert_eq!(reopened.incident_id, id);
    d.resolve_incident(env.signed(resolve(&id, &primary, "r3")))
        .await
        .unwrap();
    s.verify_incident(env.signed(verify(&worker, true, "v3")))
        .await
        .unwrap();
    let inc = i
        .submit_feedback(env.signed(feedback(5, "f2")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        inc.status,
        pb::IncidentStatus::Closed as i32,
        "satisfied: closed"
    );
    assert_eq!(inc.satisfaction, 5);
    let err = i
        .submit_feedback(env.signed(feedback(4, "f3")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "feedback once");
    let k = kinds(&inc);
    assert_eq!(
        &k[2..],
        [
            "resolved",
            "verification_failed",
            "accepted",
            "resolved",
            "verified",
            "dissatisfied",
            "resolved",
            "verified",
            "closed"
        ]
    );
    // Programs read the same from the enum: every entry has one, and the feedback that closed
    // the case is its CLOSED entry, with the satisfaction in its text.
    assert!(
        inc.timeline
            .iter()
            .all(|e| e.r#type != pb::TimelineKind::Unspecified as i32),
        "{:?}",
        inc.timeline
    );
    let closed = inc.timeline.last().unwrap();
    assert_eq!(closed.r#type, pb::TimelineKind::Closed as i32);
    assert!(
        closed.detail.contains("satisfaction 5/5"),
        "{}",
        closed.detail
    );
}

/// Counts, per kind, the timer notices in a department's streams.
async fn notices(env: &Env, department: &str) -> std::collections::BTreeMap<i32, usize> {
    let mut c = env.redis().await;
    let mut out = std::collections::BTreeMap::new();
    for p in 0..common::PARTITIONS {
        let r: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(env.store.keys().dispatch(p, department))
            .arg("-")
            .arg("+")
            .query_async(&mut c)
            .await
            .unwrap();
        for e in r.ids {
            let redis::Value::BulkString(b) = e.map.get("d").unwrap() else {
                panic!()
            };
            let d = <pb::Dispatch as prost::Message>::decode(b.as_slice()).unwrap();
            *out.entry(d.kind).or_default() += 1;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_fire_exactly_once_up_the_chain_while_replicas_come_and_go() {
    let env_rules = rules();
    let mut env = Env::with_rules(&env_rules).await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let id = reported(&env, "t-1", "test.quick", lng, lat).await;
    // The replica that scheduled the timers is killed (its tasks aborted, no clean shutdown)
    // before any is due; two others start and race for every timer.
    env.kill_routers();
    env.spawn_router(fast_router("router-b"));
    env.spawn_router(fast_router("router-c"));
    let mut watch = env
        .incidents()
        .await
        .watch_incidents(env.signed(pb::WatchIncidentsRequest {
            department_id: "water-affairs".into(),
            start: pb::WatchStart::Earliest as i32,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    // quick: accept 1 s, warning at 50 % (1 s), urge at 2 s, supervise at 3 s, public at 4 s.
    let mut seen = Vec::new();
    while !seen.contains(&"public_report".to_owned()) {
        let e = tokio::time::timeout(Duration::from_secs(10), watch.message())
            .await
            .expect("events keep coming")
            .unwrap()
            .unwrap();
        assert_eq!(e.incident_id, id);
        seen.push(e.event.unwrap().kind);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let inc = env.wait_status(&id, pb::IncidentStatus::Dispatched).await;
    let fired: Vec<&str> = inc
        .timeline
        .iter()
        .filter(|e| e.actor == "sla-timer")
        .map(|e| e.kind.as_str())
        .collect();
    let mut sorted = fired.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "accept_overdue",
            "public_report",
            "supervised",
            "urged",
            "warning"
        ],
        "each timer fired exactly once: {fired:?}"
    );
    assert_eq!(inc.escalations.len(), 5);
    let to_dept = notices(&env, "water-affairs").await;
    for kind in [
        pb::DispatchKind::AcceptOverdue,
        pb::DispatchKind::Warning,
        pb::DispatchKind::Urge,
    ] {
        assert_eq!(to_dept.get(&(kind as i32)), Some(&1), "{kind:?}");
    }
    let to_centre = notices(&env, "command-centre").await;
    assert_eq!(
        to_centre.get(&(pb::DispatchKind::Supervise as i32)),
        Some(&1)
    );
    assert_eq!(
        to_centre.get(&(pb::DispatchKind::PublicReport as i32)),
        Some(&1)
    );
    assert!(
        seen.starts_with(&["dispatched".to_owned()]) || seen.contains(&"dispatched".to_owned())
    );
    // Stats see the breach.
    let stats = env
        .supervision()
        .await
        .get_stats(env.signed(pb::GetStatsRequest {
            department_id: "water-affairs".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.incident_count, 1);
    assert_eq!(stats.breached, 1);
    assert_eq!(stats.by_status.get("INCIDENT_STATUS_DISPATCHED"), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_filters_by_region_and_stats_report_the_headline_figures() {
    let env = Env::with_rules(&rules()).await;
    let table = env.table();
    let (_, path, lng, lat) = grid_point(&table, false);
    let (_, tpath, tlng, tlat) = grid_point(&table, true);
    let mut watch = env
        .incidents()
        .await
        .watch_incidents(env.signed(pb::WatchIncidentsRequest {
            region_code: tpath[1].clone(),
            start: pb::WatchStart::Latest as i32,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let town = reported(&env, "w-1", "city.sanitation", tlng, tlat).await;
    let _city = reported(&env, "w-2", "city.sanitation", lng, lat).await;
    let mut d = env.dispatches().await;
    d.accept_incident(env.signed(accept(&town, "urban-management", "a")))
        .await
        .unwrap();
    d.resolve_incident(env.signed(resolve(&town, "urban-management", "r")))
        .await
        .unwrap();
    let mut kinds = Vec::new();
    while kinds.len() < 3 {
        let e = tokio::time::timeout(Duration::from_secs(10), watch.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(e.incident_id, town, "only the township's incidents");
        assert!(e.region_codes.contains(&tpath[1]));
        kinds.push(e.event.unwrap().kind);
    }
    assert_eq!(kinds, ["dispatched", "accepted", "resolved"]);

    let mut s = env.supervision().await;
    let stats = s
        .get_stats(env.signed(pb::GetStatsRequest {
            region_code: path[0].clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.incident_count, 2);
    assert_eq!(stats.resolved_count, 1);
    assert_eq!(stats.by_status.get("INCIDENT_STATUS_RESOLVED"), Some(&1));
    assert_eq!(stats.by_status.get("INCIDENT_STATUS_DISPATCHED"), Some(&1));
    assert!((stats.accept_on_time_rate - 1.0).abs() < 1e-9);
    assert!((stats.resolve_on_time_rate - 1.0).abs() < 1e-9);
    assert!(stats.resolve_working_hours_avg >= 0.0);
    let err = s
        .get_stats(env.signed(pb::GetStatsRequest {
            region_code: "nowhere".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn co_handlers_add_progress_and_the_primary_resolves() {
    let env = Env::with_rules(&rules()).await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let mut primary_stream = env.subscribe("emergency-management").await;
    // Fire lanes: emergency management leads, property office and traffic police assist.
    let id = reported(&env, "co-1", "city.fire_lane.blocked", lng, lat).await;
    let inc = env.wait_status(&id, pb::IncidentStatus::Dispatched).await;
    let decision = inc.decision.unwrap();
    assert_eq!(decision.department_id, "emergency-management");
    assert_eq!(
        decision.co_department_ids,
        ["property-office", "traffic-police"]
    );
    let mut d = env.dispatches().await;
    let inc = d
        .add_progress(env.signed(pb::AddProgressRequest {
            incident_id: id.clone(),
            department_id: "property-office".into(),
            note: "compound gate opened for the fire engine".into(),
            request_id: "co-p1".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        inc.status,
        pb::IncidentStatus::Dispatched as i32,
        "a co-handler's note moves nothing"
    );
    assert_eq!(inc.timeline.last().unwrap().actor, "property-office");
    let n = notice(&mut primary_stream, pb::DispatchKind::Progress).await;
    assert!(n.note.contains("compound gate"));
    for act in ["resolve", "accept", "return"] {
        let err = match act {
            "resolve" => {
                d.resolve_incident(env.signed(resolve(&id, "traffic-police", "x1")))
                    .await
            }
            "accept" => {
                d.accept_incident(env.signed(accept(&id, "traffic-police", "x2")))
                    .await
            }
            _ => {
                d.return_incident(env.signed(ret(&id, "traffic-police", "x3")))
                    .await
            }
        }
        .unwrap_err();
        assert_eq!(
            err.code(),
            Code::PermissionDenied,
            "a co-handler may not {act}"
        );
    }
    let err = d
        .add_progress(env.signed(pb::AddProgressRequest {
            incident_id: id.clone(),
            department_id: "water-affairs".into(),
            note: "not involved".into(),
            request_id: "co-p2".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let mut co_stream = env.subscribe("traffic-police").await;
    d.resolve_incident(env.signed(resolve(&id, "emergency-management", "co-r")))
        .await
        .unwrap();
    let n = notice(&mut co_stream, pb::DispatchKind::Resolved).await;
    assert_eq!(n.incident_id, id);
}

/// Every action a caller may take, as the API is called.
const ACTIONS: [&str; 15] = [
    "accept",
    "progress",
    "resolve",
    "return",
    "arbitrate",
    "request_extension",
    "request_suspension",
    "decide",
    "resume",
    "verify",
    "feedback",
    "close",
    "cancel",
    "unmerge",
    "verify_failed",
];

/// Calls `action` on `id` as the caller entitled to it (`primary` for department actions, the
/// command centre for supervision, the reporting system for feedback).
async fn call(
    env: &Env,
    action: &str,
    id: &str,
    primary: &str,
) -> Result<pb::Incident, tonic::Status> {
    let (mut d, mut s, mut i) = (
        env.dispatches().await,
        env.supervision().await,
        env.incidents().await,
    );
    let id = id.to_owned();
    let centre = "command-centre".to_owned();
    let rid = format!("x-{action}-{}", ulid_like());
    let r = match action {
        "accept" => {
            d.accept_incident(env.signed(accept(&id, primary, &rid)))
                .await
        }
        "progress" => {
            d.add_progress(env.signed(pb::AddProgressRequest {
                incident_id: id,
                department_id: primary.into(),
                note: "n".into(),
                request_id: rid,
            }))
            .await
        }
        "resolve" => {
            d.resolve_incident(env.signed(resolve(&id, primary, &rid)))
                .await
        }
        "return" => d.return_incident(env.signed(ret(&id, primary, &rid))).await,
        "arbitrate" => {
            s.arbitrate_incident(env.signed(pb::ArbitrateIncidentRequest {
                incident_id: id,
                department_id: centre,
                assignee_department_id: "water-affairs".into(),
                note: "n".into(),
                request_id: rid,
            }))
            .await
        }
        "request_extension" => {
            d.request_extension(env.signed(pb::RequestExtensionRequest {
                incident_id: id,
                department_id: primary.into(),
                reason: "r".into(),
                extension: "1wd".into(),
                request_id: rid,
            }))
            .await
        }
        "request_suspension" => {
            d.request_suspension(env.signed(pb::RequestSuspensionRequest {
                incident_id: id,
                department_id: primary.into(),
                reason: "r".into(),
                request_id: rid,
            }))
            .await
        }
        "decide" => {
            s.decide_request(env.signed(pb::DecideRequestRequest {
                incident_id: id,
                department_id: centre,
                approve: true,
                note: "n".into(),
                request_id: rid,
                ..Default::default()
            }))
            .await
        }
        "resume" => {
            d.resume_incident(env.signed(pb::ResumeIncidentRequest {
                incident_id: id,
                department_id: centre,
                note: "n".into(),
                request_id: rid,
            }))
            .await
        }
        "verify" | "verify_failed" => {
            s.verify_incident(env.signed(pb::VerifyIncidentRequest {
                incident_id: id,
                department_id: centre,
                passed: action == "verify",
                note: "n".into(),
                request_id: rid,
                ..Default::default()
            }))
            .await
        }
        "feedback" => {
            i.submit_feedback(env.signed(pb::SubmitFeedbackRequest {
                incident_id: id,
                source_system: "resident-app".into(),
                satisfaction: 4,
                comment: "c".into(),
                request_id: rid,
            }))
            .await
        }
        "close" => {
            s.close_incident(env.signed(pb::CloseIncidentRequest {
                incident_id: id,
                department_id: centre,
                note: "n".into(),
                request_id: rid,
            }))
            .await
        }
        "cancel" => {
            s.cancel_incident(env.signed(pb::CancelIncidentRequest {
                incident_id: id,
                department_id: centre,
                reason: "r".into(),
                request_id: rid,
            }))
            .await
        }
        "unmerge" => {
            s.unmerge_incident(env.signed(pb::UnmergeIncidentRequest {
                incident_id: id,
                department_id: centre,
                note: "n".into(),
                request_id: rid,
            }))
            .await
        }
        other => panic!("unknown action {other}"),
    };
    r.map(tonic::Response::into_inner)
}

fn ulid_like() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// The states an action is legal in, as the core defines them (names of `Status::as_str`).
fn legal(action: &str) -> &'static [&'static str] {
    match action {
        "accept" => &["dispatched", "reopened"],
        "progress" | "resolve" | "request_extension" | "request_suspension" => {
            &["dispatched", "accepted", "in_progress", "reopened"]
        }
        "return" => &["dispatched", "accepted"],
        "arbitrate" => &["arbitration"],
        "decide" => &["dispatched", "accepted", "in_progress", "reopened"],
        "resume" => &["suspended"],
        "verify" | "verify_failed" => &["resolved"],
        "feedback" => &["resolved", "verified", "closed"],
        "close" => &["verified"],
        "cancel" => &[
            "dispatched",
            "accepted",
            "in_progress",
            "returned",
            "arbitration",
            "suspended",
            "reopened",
        ],
        "unmerge" => &["merged"],
        _ => &[],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_illegal_action_in_every_reachable_state_is_failed_precondition() {
    let env = Env::with_rules(&rules()).await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let primary = "urban-management";
    // (state, the actions that lead there from a fresh dispatch)
    let paths: [(&str, &[&str]); 11] = [
        ("arbitration", &[]),
        ("dispatched", &[]),
        ("accepted", &["accept"]),
        ("in_progress", &["accept", "progress"]),
        ("resolved", &["resolve"]),
        ("verified", &["resolve", "verify"]),
        ("closed", &["resolve", "verify", "close"]),
        ("reopened", &["resolve", "verify_failed"]),
        ("suspended", &["request_suspension", "decide"]),
        ("cancelled", &["cancel"]),
        ("merged", &[]),
    ];
    let mut checked = 0;
    for (n, (state, path)) in paths.iter().enumerate() {
        let mut primary = primary;
        let id = if *state == "arbitration" {
            // Returned by its department, routed to the centre, returned again: arbitration.
            let id = reported(&env, "ill-arb", "city.sanitation", lng, lat).await;
            call(&env, "return", &id, primary).await.unwrap();
            for _ in 0..200 {
                let inc = env.wait_status(&id, pb::IncidentStatus::Dispatched).await;
                if inc.decision.unwrap().department_id == "command-centre" {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            call(&env, "return", &id, "command-centre").await.unwrap();
            primary = "command-centre";
            id
        } else if *state == "merged" {
            let (x, y) = (lng + 0.002, lat + 0.002);
            let _open = reported(&env, "ill-open", "city.vehicle.abandoned", x, y).await;
            let dup = env
                .report(report("ill-dup", "city.vehicle.abandoned", x, y))
                .await;
            env.wait_status(&dup, pb::IncidentStatus::Merged).await;
            dup
        } else {
            reported(&env, &format!("ill-{n}"), "city.sanitation", lng, lat).await
        };
        for step in *path {
            call(&env, step, &id, primary)
                .await
                .unwrap_or_else(|e| panic!("{state}: {step}: {e:?}"));
        }
        let inc = env
            .incidents()
            .await
            .get_incident(env.signed(pb::GetIncidentRequest {
                incident_id: id.clone(),
            }))
            .await
            .unwrap()
            .into_inner();
        let status = pb::IncidentStatus::try_from(inc.status)
            .unwrap()
            .as_str_name()
            .to_lowercase();
        assert_eq!(
            status,
            format!("incident_status_{state}"),
            "the path led to {state}"
        );
        for action in ACTIONS {
            if legal(action).contains(state) {
                continue;
            }
            let err = call(&env, action, &id, primary).await.unwrap_err();
            // A merged report has no department: department actions are refused as not
            // permitted before its state is looked at.
            let expected = if *state == "merged"
                && matches!(
                    action,
                    "accept"
                        | "progress"
                        | "resolve"
                        | "return"
                        | "request_extension"
                        | "request_suspension"
                ) {
                Code::PermissionDenied
            } else {
                Code::FailedPrecondition
            };
            assert_eq!(
                err.code(),
                expected,
                "{action} on a {state} incident: {err:?}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 100, "{checked} illegal actions checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_department_given_a_case_back_by_arbitration_lists_and_counts_it_once() {
    let env = Env::with_rules(&rules()).await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let id = reported(&env, "back-1", "city.vehicle.abandoned", lng, lat).await;
    let mut d = env.dispatches().await;
    d.return_incident(env.signed(ret(&id, "property-office", "b1")))
        .await
        .unwrap();
    let mut inc = env.wait_status(&id, pb::IncidentStatus::Dispatched).await;
    for _ in 0..100 {
        if inc.decision.as_ref().unwrap().department_id == "command-centre" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        inc = env.wait_status(&id, pb::IncidentStatus::Dispatched).await;
    }
    d.return_incident(env.signed(ret(&id, "command-centre", "b2")))
        .await
        .unwrap();
    // The centre gives it back to the department that returned it first.
    env.supervision()
        .await
        .arbitrate_incident(env.signed(pb::ArbitrateIncidentRequest {
            incident_id: id.clone(),
            department_id: "command-centre".into(),
            assignee_department_id: "property-office".into(),
            note: "inside the compound after all".into(),
            request_id: "back-arb".into(),
        }))
        .await
        .unwrap();
    let mut c = env.incidents().await;
    let env = &env;
    let listed = |department: &str| {
        let mut c = c.clone();
        let (department, id) = (department.to_owned(), id.clone());
        async move {
            c.list_incidents(env.signed(pb::ListIncidentsRequest {
                department_id: department,
                page_size: 50,
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
            .incidents
            .into_iter()
            .filter(|i| i.incident_id == id)
            .count()
        }
    };
    // Its index has two entries (first dispatch, arbitration); only the latest counts.
    assert_eq!(listed("property-office").await, 1);
    assert_eq!(listed("command-centre").await, 0);
    let stats = env
        .supervision()
        .await
        .get_stats(env.signed(pb::GetStatsRequest {
            department_id: "property-office".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.incident_count, 1);
    // Unfiltered, it is listed once too (it entered the `all` index at its first routing).
    let all = c
        .list_incidents(env.signed(pb::ListIncidentsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        all.incidents.iter().filter(|i| i.incident_id == id).count(),
        1
    );
}

/// The figures of GetStats as the contract defines them: states named as everywhere else,
/// returns counted for the department that returned, and a reopen rate that is a share of the
/// incidents resolved (it once counted reopened cases against the resolved ones still standing
/// and came to 2.0 here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_attribute_each_figure_to_who_did_it_and_the_reopen_rate_is_a_share() {
    let env = Env::with_rules(&rules()).await;
    let (grid, _, lng, lat) = grid_point(&env.table(), false);
    let worker = format!("gw-{grid}");
    let (mut d, mut s) = (env.dispatches().await, env.supervision().await);
    // Property office returns an abandoned car: re-routed to the command centre.
    let returned = reported(&env, "st-ret", "city.vehicle.abandoned", lng, lat).await;
    d.return_incident(env.signed(ret(&returned, "property-office", "st-r1")))
        .await
        .unwrap();
    // Three parking cases resolved; two fail verification and are reopened.
    let mut cases = Vec::new();
    for n in 0..3 {
        let id = reported(
            &env,
            &format!("st-{n}"),
            "city.vehicle.illegal_parking",
            lng,
            lat,
        )
        .await;
        let primary = env
            .wait_status(&id, pb::IncidentStatus::Dispatched)
            .await
            .decision
            .unwrap()
            .department_id;
        d.resolve_incident(env.signed(resolve(&id, &primary, &format!("st-res-{n}"))))
            .await
            .unwrap();
        cases.push(id);
    }
    for (n, id) in cases.iter().take(2).enumerate() {
        s.verify_incident(env.signed(pb::VerifyIncidentRequest {
            incident_id: id.clone(),
            grid_worker_id: worker.clone(),
            passed: false,
            note: "still there".into(),
            request_id: format!("st-v-{n}"),
            ..Default::default()
        }))
        .await
        .unwrap();
    }
    let mut inc = env
        .wait_status(&returned, pb::IncidentStatus::Dispatched)
        .await;
    for _ in 0..100 {
        if inc.department_id == "command-centre" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        inc = env
            .wait_status(&returned, pb::IncidentStatus::Dispatched)
            .await;
    }
    let all = s
        .get_stats(env.signed(pb::GetStatsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.incident_count, 4);
    assert_eq!(all.by_status.get("INCIDENT_STATUS_REOPENED"), Some(&2));
    assert_eq!(all.by_status.get("INCIDENT_STATUS_RESOLVED"), Some(&1));
    assert_eq!(all.by_status.get("INCIDENT_STATUS_DISPATCHED"), Some(&1));
    assert!(
        all.by_status
            .keys()
            .all(|k| pb::IncidentStatus::from_str_name(k).is_some()),
        "every key is a state's enum name: {:?}",
        all.by_status
    );
    assert_eq!(all.resolved_count, 1, "one resolution still stands");
    assert_eq!(all.ever_resolved_count, 3);
    assert_eq!(all.reopened, 2);
    assert!(
        (all.reopen_rate - 2.0 / 3.0).abs() < 1e-9,
        "{}",
        all.reopen_rate
    );
    assert_eq!(all.returns, 1);
    // The return is the property office's, though the command centre handles the case now.
    let po = s
        .get_stats(env.signed(pb::GetStatsRequest {
            department_id: "property-office".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(po.incident_count, 0, "it handles none of them now");
    assert_eq!(po.returns, 1, "but it made the return");
    let centre = s
        .get_stats(env.signed(pb::GetStatsRequest {
            department_id: "command-centre".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(centre.incident_count, 1);
    assert_eq!(centre.returns, 0, "the centre returned nothing");
}

/// Which department a watched event names, after each kind of return: the handler after the
/// change (none while the case waits to be routed again, the command centre once it
/// arbitrates), and on the entry the department that returned it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watched_returns_name_the_handler_after_the_change_and_the_returning_department() {
    let env = Env::with_rules(&rules()).await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let mut watch = env
        .incidents()
        .await
        .watch_incidents(env.signed(pb::WatchIncidentsRequest {
            start: pb::WatchStart::Latest as i32,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let id = reported(&env, "wr-1", "city.vehicle.abandoned", lng, lat).await;
    let mut d = env.dispatches().await;
    env.wait_status(&id, pb::IncidentStatus::Dispatched).await;
    d.return_incident(env.signed(ret(&id, "property-office", "wr-r1")))
        .await
        .unwrap();
    let mut inc = env.wait_status(&id, pb::IncidentStatus::Dispatched).await;
    while inc.department_id != "command-centre" {
        tokio::time::sleep(Duration::from_millis(25)).await;
        inc = env.wait_status(&id, pb::IncidentStatus::Dispatched).await;
    }
    d.return_incident(env.signed(ret(&id, "command-centre", "wr-r2")))
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let e = tokio::time::timeout(Duration::from_secs(10), watch.message())
            .await
            .expect("events arrive")
            .unwrap()
            .unwrap();
        let ev = e.event.unwrap();
        seen.push((ev.r#type, e.status, e.department_id, ev.department_id));
    }
    use pb::{IncidentStatus as S, TimelineKind as K};
    let expected = [
        (K::Reported, S::Reported, "", ""),
        (
            K::Dispatched,
            S::Dispatched,
            "property-office",
            "property-office",
        ),
        (K::Returned, S::Returned, "", "property-office"),
        (
            K::Dispatched,
            S::Dispatched,
            "command-centre",
            "command-centre",
        ),
        (
            K::Returned,
            S::Arbitration,
            "command-centre",
            "command-centre",
        ),
    ]
    .map(|(k, s, handler, concerned)| {
        (k as i32, s as i32, handler.to_owned(), concerned.to_owned())
    });
    assert_eq!(seen, expected);
}
