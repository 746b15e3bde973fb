//! Inline routing (`gridroute serve --inline-routing`): the API process routes a report and
//! dispatches it in the script call that records it. The record is the one a router writes;
//! a retry dispatches nothing twice; what it does not route still queues for the routers.

#![allow(clippy::unwrap_used)]

use crate::common;

use common::{Env, PARTITIONS, Writes, field_names, grid_point, next_dispatch, report};
use gridroute_proto::v1 as pb;

/// Timers due in the SLA timer sets, summed over the partitions.
async fn timers(env: &Env) -> u64 {
    let mut c = env.redis().await;
    let mut n = 0;
    for p in 0..PARTITIONS {
        let len: u64 = redis::cmd("ZCARD")
            .arg(env.store.keys().sla(p))
            .query_async(&mut c)
            .await
            .unwrap();
        n += len;
    }
    n
}

/// GetIncident as the command centre.
async fn get(env: &Env, id: &str) -> pb::Incident {
    let centre = common::command_centre(&env.table());
    env.get_as(&centre, id).await.unwrap()
}

/// Fields that hold a time (the two runs differ by milliseconds), or a timeline entry that
/// starts with one.
const TIMED: [&str; 7] = [
    "reported_at",
    "dispatched_at",
    "first_dispatched_at",
    "dept_at",
    "accept_due",
    "resolve_due",
    "timers",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_routed_inline_is_recorded_and_dispatched_as_a_router_does() {
    recorded_and_dispatched_as_a_router_does(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_routed_inline_by_a_transaction_is_recorded_and_dispatched_as_a_router_does() {
    recorded_and_dispatched_as_a_router_does(true).await;
}

async fn recorded_and_dispatched_as_a_router_does(transactions: bool) {
    let routed = Env::start().await;
    let inline = Env::writing(None, Writes::inline().by_transactions(transactions)).await;
    let (_, _, lng, lat) = grid_point(&routed.table(), false);
    let r = report("inline-1", "city.vehicle.abandoned", lng, lat);

    let by_router = routed.report(r.clone()).await;
    routed
        .wait_status(&by_router, pb::IncidentStatus::Dispatched)
        .await;
    // No router runs beside the inline API: the answer to the report finds it dispatched.
    let by_api = inline.report(r.clone()).await;
    let got = get(&inline, &by_api).await;
    assert_eq!(got.status, pb::IncidentStatus::Dispatched as i32);

    // The same record, field for field, times aside.
    let (a, b) = (
        routed.record(&by_router).await,
        inline.record(&by_api).await,
    );
    // A transaction leaves out `dept_at` on a first dispatch: readers then count the one
    // entry of the department's index there is.
    let mut names_a = field_names(&a);
    names_a.retain(|n| !transactions || *n != "dept_at");
    assert_eq!(names_a, field_names(&b), "the same record fields");
    for (name, value) in &a {
        if TIMED.contains(&name.as_str()) || !b.contains_key(name) {
            continue;
        }
        let (x, y) = (value.as_slice(), b[name].as_slice());
        if name.starts_with("tl") {
            // `time|event`: the same event.
            let after = |v: &[u8]| v[v.iter().position(|&c| c == b'|').unwrap()..].to_vec();
            assert_eq!(after(x), after(y), "timeline entry {name}");
        } else {
            assert_eq!(x, y, "record field {name}");
        }
    }
    let timers_a = String::from_utf8(a["timers"].clone()).unwrap();
    let timers_b = String::from_utf8(b["timers"].clone()).unwrap();
    assert_eq!(timers_a.split(',').count(), timers_b.split(',').count());

    // The same streams and sets, and nothing left for a router.
    let k = inline.store.keys();
    assert_eq!(inline.stream_len(|p| k.ingest(p)).await, 0);
    assert_eq!(inline.stream_len(|p| k.events(p)).await, 2);
    assert_eq!(inline.stream_len(|p| k.index_all(p)).await, 1);
    assert_eq!(timers(&inline).await, timers(&routed).await);
    let dept = String::from_utf8(b["dept"].clone()).unwrap();
    assert_eq!(inline.dispatch_count(&dept).await, 1);
    assert_eq!(routed.dispatch_count(&dept).await, 1);

    // The department receives it with its report and decision.
    let mut stream = inline.subscribe(&dept).await;
    let d = next_dispatch(&mut stream).await;
    assert_eq!(d.incident_id, by_api);
    assert_eq!(d.decision.unwrap().department_id, dept);
    assert_eq!(d.report.unwrap().category, "city.vehicle.abandoned");

    // A retry of the report answers the same incident and dispatches nothing again.
    assert_eq!(inline.report(r).await, by_api);
    assert_eq!(inline.dispatch_count(&dept).await, 1);
    assert_eq!(inline.stream_len(|p| k.events(p)).await, 2);
    assert_eq!(inline.stream_len(|p| k.ingest(p)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_with_duplicate_detection_still_go_through_the_routers() {
    duplicate_detection_through_the_routers(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_with_duplicate_detection_still_go_through_the_routers_from_a_transaction() {
    duplicate_detection_through_the_routers(true).await;
}

async fn duplicate_detection_through_the_routers(transactions: bool) {
    let rules = gridroute_benches::DAWUKOU_RULES.replace(
        "# duplicates:\n#   - {category: city.vehicle.abandoned, within_m: 50, window: 24h}",
        "duplicates:\n  - {category: city.vehicle.abandoned, within_m: 50, window: 24h}",
    );
    let mut env = Env::writing(Some(&rules), Writes::inline().by_transactions(transactions)).await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let k = env.store.keys().clone();

    // Another category is dispatched by the call; this one waits in the ingest stream.
    let other = env
        .report(report("inline-other", "city.sanitation", lng, lat))
        .await;
    let dup = env
        .report(report("inline-dup", "city.vehicle.abandoned", lng, lat))
        .await;
    assert_eq!(
        get(&env, &other).await.status,
        pb::IncidentStatus::Dispatched as i32
    );
    assert_eq!(
        get(&env, &dup).await.status,
        pb::IncidentStatus::Reported as i32
    );
    assert_eq!(env.stream_len(|p| k.ingest(p)).await, 1);

    // A router dispatches it, and finds nothing else to do.
    env.spawn_router(common::fast_router("router-a"));
    env.wait_status(&dup, pb::IncidentStatus::Dispatched).await;
    let dept = String::from_utf8(env.record(&other).await["dept"].clone()).unwrap();
    assert_eq!(env.dispatch_count(&dept).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_call_that_fails_midway_still_dispatches_each_report_once() {
    fails_midway_and_dispatches_each_once(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_with_a_key_of_another_type_still_dispatches_each_report_once() {
    fails_midway_and_dispatches_each_once(true).await;
}

async fn fails_midway_and_dispatches_each_once(transactions: bool) {
    let env = Env::writing(None, Writes::inline().by_transactions(transactions)).await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let items: Vec<pb::ReportIncidentRequest> = (0..40)
        .map(|i| report(&format!("mid-{i}"), "city.vehicle.abandoned", lng, lat))
        .collect();
    // The idempotency key of report 20 holds a hash: its batch's script fails there, after the
    // reports of the same partition before it claimed their keys.
    let k = env.store.keys().clone();
    let p = k.partition_for(&items[20].source_system, &items[20].request_id);
    let _: () = redis::cmd("HSET")
        .arg(k.idempotency(p, &items[20].source_system, &items[20].request_id))
        .arg("not")
        .arg("a string")
        .query_async(&mut env.redis().await)
        .await
        .unwrap();

    let resp = env.report_batch(items).await;
    // A transaction reads the key of another type as no claim (`MGET`) and claims it; the
    // script fails on it, and only that report is refused.
    let accepted = if transactions { 40 } else { 39 };
    assert_eq!(
        (resp.accepted_count, resp.rejected_count),
        (accepted, 40 - accepted)
    );
    for (i, res) in resp.results.iter().enumerate().filter(|(i, _)| *i != 20) {
        assert!(!res.duplicate_request, "report {i} was new to its caller");
        // Dispatched by the call, exactly once (`v` counts the record's dispatches).
        let rec = env.record(&res.incident_id).await;
        assert_eq!(rec["status"], b"dispatched", "report {i}");
        assert_eq!(rec["v"], b"1", "report {i}");
    }
    assert_eq!(env.stream_len(|p| k.ingest(p)).await, 0);
    // Two events per incident: reported, dispatched.
    assert_eq!(env.stream_len(|p| k.events(p)).await, 2 * accepted as u64);
}
