//! Group commit and batched dispatch: many concurrent unary reports (with retries of the same
//! request id landing in the same batch, and a reuse of an id with another payload) are each
//! answered for themselves, and every new incident is dispatched exactly once.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::{HashMap, HashSet};

use common::{Env, grid_point, report};
use gridroute_proto::v1 as pb;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reports_are_answered_one_by_one_and_dispatched_once() {
    let env = Env::start().await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    // The department this category goes to at this point, from a first report.
    let probe = env
        .report(report("batch-probe", "city.vehicle.abandoned", lng, lat))
        .await;
    let department = env
        .wait_status(&probe, pb::IncidentStatus::Dispatched)
        .await
        .decision
        .unwrap()
        .department_id;
    let before = env.dispatch_count(&department).await;

    // 300 distinct request ids, each sent twice at once; and one id reused with another
    // description. All 601 calls are in flight together, so they share batches.
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..300 {
        for _ in 0..2 {
            let mut client = env.incidents().await;
            let r = env.signed(report(
                &format!("batch-{i}"),
                "city.vehicle.abandoned",
                lng,
                lat,
            ));
            calls.spawn(async move { (i, client.report_incident(r).await) });
        }
    }
    let mut client = env.incidents().await;
    let first = client
        .report_incident(env.signed(report("batch-reused", "city.vehicle.abandoned", lng, lat)))
        .await
        .unwrap()
        .into_inner();
    let reused = client
        .report_incident(env.signed(pb::ReportIncidentRequest {
            description: "another payload".into(),
            ..report("batch-reused", "city.vehicle.abandoned", lng, lat)
        }))
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::AlreadyExists, "{reused:?}");
    assert!(reused.message().contains(&first.incident_id), "{reused:?}");

    let mut ids: HashMap<usize, Vec<pb::ReportIncidentResponse>> = HashMap::new();
    while let Some(done) = calls.join_next().await {
        let (i, answer) = done.unwrap();
        ids.entry(i).or_default().push(answer.unwrap().into_inner());
    }
    let mut distinct = HashSet::new();
    for (i, answers) in &ids {
        assert_eq!(answers.len(), 2);
        assert_eq!(
            answers[0].incident_id, answers[1].incident_id,
            "request {i}"
        );
        assert_eq!(
            answers.iter().filter(|a| a.duplicate_request).count(),
            1,
            "request {i}: exactly one of the two is the original"
        );
        distinct.insert(answers[0].incident_id.clone());
    }
    assert_eq!(distinct.len(), 300);

    // Every new incident (300 + the reused id's first) is dispatched once, and its record says so.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while env.dispatch_count(&department).await < before + 301 {
        assert!(std::time::Instant::now() < deadline, "not all dispatched");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(env.dispatch_count(&department).await, before + 301);
    for id in distinct.iter().take(20) {
        let inc = env.wait_status(id, pb::IncidentStatus::Dispatched).await;
        assert_eq!(inc.decision.unwrap().department_id, department);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_written_by_a_batch_call_that_failed_midway_are_answered_as_new() {
    let env = Env::start().await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let items: Vec<pb::ReportIncidentRequest> = (0..40)
        .map(|i| report(&format!("mid-{i}"), "city.vehicle.abandoned", lng, lat))
        .collect();
    // The idempotency key of report 20 holds a hash: its batch's script fails there, after
    // writing the reports of the same partition that come before it in the call.
    let k = env.store.keys();
    let partition =
        |r: &pb::ReportIncidentRequest| k.partition_for(&r.source_system, &r.request_id);
    let p = partition(&items[20]);
    assert!(
        items[..20].iter().any(|r| partition(r) == p),
        "no report shares the poisoned report's call"
    );
    let mut r = env.redis().await;
    let _: () = redis::cmd("HSET")
        .arg(k.idempotency(p, &items[20].source_system, &items[20].request_id))
        .arg("not")
        .arg("a string")
        .query_async(&mut r)
        .await
        .unwrap();

    let resp = env.report_batch(items).await;
    assert_eq!(resp.accepted_count, 39);
    assert_eq!(resp.rejected_count, 1);
    let mut ids = HashSet::new();
    for (i, res) in resp.results.iter().enumerate() {
        if i == 20 {
            assert_ne!(res.code, 0, "the poisoned report is refused");
            continue;
        }
        assert_eq!(res.code, 0, "report {i}: {res:?}");
        assert!(!res.duplicate_request, "report {i} was new to its caller");
        assert!(
            ids.insert(res.incident_id.clone()),
            "one incident per report"
        );
    }
    for id in &ids {
        env.wait_status(id, pb::IncidentStatus::Dispatched).await;
    }
}
