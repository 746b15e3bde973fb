//! Requests a careless or hostile client sends, against a real server: answers stay small and
//! precise (capped field violations, quoted and cut values), spans cannot overflow the
//! calendar, and nothing panics.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Env, grid_point, report};
use gridroute_proto::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn violations_are_capped_and_values_cut() {
    let env = Env::start().await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let mut i = env.incidents().await;
    let mut many_urls = report("v-1", "city.sanitation", lng, lat);
    many_urls.attachment_urls = (0..50).map(|n| format!("ftp://{n}")).collect();
    let mut many_labels = report("v-2", "city.sanitation", lng, lat);
    many_labels.labels = (0..2000)
        .map(|n| (format!("{n}{}", "k".repeat(100)), "v".into()))
        .collect();
    for (what, r) in [("50 bad URLs", many_urls), ("2000 bad labels", many_labels)] {
        let e = i.report_incident(env.signed(r)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
        let bad = e.get_details_bad_request().unwrap();
        assert_eq!(bad.field_violations.len(), 21, "{what}");
        assert!(
            bad.field_violations[20].description.contains("more"),
            "{what}: {:?}",
            bad.field_violations[20]
        );
        assert!(
            e.details().len() + e.message().len() < 8 * 1024,
            "{what}: {} bytes of details",
            e.details().len()
        );
        assert!(
            bad.field_violations
                .iter()
                .all(|v| v.field.chars().count() <= 80),
            "{what}: echoed keys are cut"
        );
    }
    // A grid code is quoted in its message.
    let mut unknown = report("v-3", "city.sanitation", lng, lat);
    unknown.location = Some(pb::Location {
        kind: Some(pb::location::Kind::GridCode("9 9".into())),
        ..Default::default()
    });
    let e = i.report_incident(env.signed(unknown)).await.unwrap_err();
    assert!(e.message().contains("\"9 9\" is not a grid"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_extension_is_invalid_and_a_granted_one_never_panics() {
    let env = Env::start().await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let id = env
        .report(report("x-1", "city.vehicle.abandoned", lng, lat))
        .await;
    env.wait_status(&id, pb::IncidentStatus::Dispatched).await;
    let mut d = env.dispatches().await;
    let ask = |span: &str| pb::RequestExtensionRequest {
        incident_id: id.clone(),
        department_id: "property-office".into(),
        reason: "waiting for the owner".into(),
        extension: span.into(),
        request_id: String::new(),
    };
    let e = d
        .request_extension(env.signed(ask("5000wd")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("at most 366wd"), "{e:?}");
    // The longest allowed span, then a grant of the longest: the server answers (it used to
    // panic in the calendar and leave the request pending).
    d.request_extension(env.signed(ask("366wd"))).await.unwrap();
    let mut s = env.supervision().await;
    let e = s
        .decide_request(env.signed(pb::DecideRequestRequest {
            incident_id: id.clone(),
            department_id: "command-centre".into(),
            approve: true,
            granted_extension: "99999wd".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let inc = s
        .decide_request(env.signed(pb::DecideRequestRequest {
            incident_id: id.clone(),
            department_id: "command-centre".into(),
            approve: true,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(inc.pending_request.is_empty());
    assert!(inc.resolve_deadline.unwrap().seconds > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_needs_no_request_id_nor_source() {
    let env = Env::start().await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let mut r = report("", "city.fire_lane.blocked", lng, lat);
    r.source_system.clear();
    for who in [
        "auditor:inspector",
        "department:water-affairs",
        "source_system:resident-app",
    ] {
        let d = env
            .routing()
            .await
            .explain_route(env.as_(
                who,
                pb::ExplainRouteRequest {
                    report: Some(r.clone()),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .decision
            .unwrap();
        assert_eq!(d.department_id, "emergency-management", "{who}");
    }
}
