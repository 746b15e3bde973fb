//! The end-to-end path against a real redis-server and a real gRPC socket:
//! report → ingest stream → router → department dispatch → subscriber.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use common::{Env, PARTITIONS, fast_router, grid_point, next_dispatch, report};
use gridroute_proto::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_reaches_the_departments_subscriber_with_grid_path() {
    let env = Env::start().await;
    let table = env.table();
    let (grid, path, lng, lat) = grid_point(&table, false);
    let mut sub = env.subscribe("property-office").await;

    let r = env
        .incidents()
        .await
        .report_incident(env.signed(report("r-1", "city.vehicle.abandoned", lng, lat)))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.duplicate_request);

    let d = next_dispatch(&mut sub).await;
    assert_eq!(d.incident_id, r.incident_id);
    assert_eq!(d.department_id, "property-office");
    assert_eq!(d.role, pb::DispatchRole::Primary as i32);
    let decision = d.decision.unwrap();
    assert_eq!(decision.outcome, pb::RouteOutcome::Matched as i32);
    assert_eq!(decision.rule_id, "vehicle-abandoned");
    assert_eq!(decision.table_version, table.version);
    let codes: Vec<String> = decision
        .region_path
        .iter()
        .map(|r| r.code.clone())
        .collect();
    assert_eq!(codes, path, "district > street > community > grid");
    assert_eq!(codes.last(), Some(&grid));
    assert_eq!(decision.region_path.last().unwrap().level, "grid");
    assert_eq!(decision.grid_workers, [format!("gw-{grid}")]);
    assert!(decision.notify_grid_worker);
    assert!(d.accept_deadline.is_some() && d.resolve_deadline.is_some());
    assert_eq!(d.report.unwrap().category, "city.vehicle.abandoned");

    // The shared record shows the same decision and a timeline.
    let inc = env
        .wait_status(&r.incident_id, pb::IncidentStatus::Dispatched)
        .await;
    assert_eq!(inc.decision.unwrap().department_id, "property-office");
    let kinds: Vec<&str> = inc.timeline.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["reported", "dispatched"]);
    assert!(inc.resolve_deadline.unwrap().seconds > inc.dispatched_time.unwrap().seconds);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_specific_rule_wins_in_the_township() {
    let env = Env::start().await;
    let (_, _, lng, lat) = grid_point(&env.table(), true);
    let r = env
        .incidents()
        .await
        .report_incident(env.signed(report("r-t", "city.vehicle.abandoned", lng, lat)))
        .await
        .unwrap()
        .into_inner();
    let inc = env
        .wait_status(&r.incident_id, pb::IncidentStatus::Dispatched)
        .await;
    let d = inc.decision.unwrap();
    assert_eq!(d.department_id, "urban-management");
    assert_eq!(d.rule_id, "vehicle-abandoned-township");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn co_handlers_receive_the_dispatch_too() {
    let env = Env::start().await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let mut sub = env.subscribe("traffic-police").await;
    let r = env
        .incidents()
        .await
        .report_incident(env.signed(report("r-f", "city.fire_lane.blocked", lng, lat)))
        .await
        .unwrap()
        .into_inner();
    let d = next_dispatch(&mut sub).await;
    assert_eq!(d.incident_id, r.incident_id);
    assert_eq!(d.role, pb::DispatchRole::CoHandler as i32);
    assert_eq!(d.decision.unwrap().department_id, "emergency-management");
    assert_eq!(env.dispatch_count("emergency-management").await, 1);
    assert_eq!(env.dispatch_count("property-office").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retry_returns_the_same_incident() {
    let env = Env::start().await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let mut c = env.incidents().await;
    let first = c
        .report_incident(env.signed(report("same-key", "city.vehicle.abandoned", lng, lat)))
        .await
        .unwrap()
        .into_inner();
    let again = c
        .report_incident(env.signed(report("same-key", "city.vehicle.abandoned", lng, lat)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.incident_id, again.incident_id);
    assert!(again.duplicate_request);
    // Spelling out a default is the same request.
    let mut explicit = report("same-key", "city.vehicle.abandoned", lng, lat);
    explicit.urgency = pb::Urgency::Unspecified as i32;
    let third = c
        .report_incident(env.signed(explicit))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(third.incident_id, first.incident_id);

    let err = c
        .report_incident(env.signed(report("same-key", "city.sanitation.garbage", lng, lat)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains(&first.incident_id));

    // The same key from another source system is another request.
    let mut other = report("same-key", "city.vehicle.abandoned", lng, lat);
    other.source_system = "grid-worker-app".into();
    let fourth = c
        .report_incident(env.signed(other))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(fourth.incident_id, first.incident_id);

    env.wait_status(&first.incident_id, pb::IncidentStatus::Dispatched)
        .await;
    env.wait_status(&fourth.incident_id, pb::IncidentStatus::Dispatched)
        .await;
    assert_eq!(
        env.dispatch_count("property-office").await,
        2,
        "one dispatch per incident, none for retries"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_every_grid_goes_to_the_command_centre() {
    let env = Env::start().await;
    let mut c = env.incidents().await;
    // Yinchuan, 50 km south of Dawukou.
    let r = c
        .report_incident(env.signed(report("far", "city.vehicle.abandoned", 106.23, 38.49)))
        .await
        .unwrap()
        .into_inner();
    let inc = env
        .wait_status(&r.incident_id, pb::IncidentStatus::Dispatched)
        .await;
    let d = inc.decision.unwrap();
    assert_eq!(d.department_id, "command-centre");
    assert_eq!(d.outcome, pb::RouteOutcome::OutsideGrids as i32);
    assert!(d.region_path.is_empty());
    assert!(
        d.reasons.iter().any(|r| r.contains("outside every grid")),
        "{:?}",
        d.reasons
    );

    // No rule for the category: the command centre of the district, with the grid path kept.
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let r = c
        .report_incident(env.signed(report("norule", "city.other.unlisted", lng, lat)))
        .await
        .unwrap()
        .into_inner();
    let d = env
        .wait_status(&r.incident_id, pb::IncidentStatus::Dispatched)
        .await
        .decision
        .unwrap();
    assert_eq!(d.department_id, "command-centre");
    assert_eq!(d.outcome, pb::RouteOutcome::NoRule as i32);
    assert_eq!(d.region_path.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grid_code_reports_route_like_points() {
    let env = Env::start().await;
    let (grid, _, _, _) = grid_point(&env.table(), false);
    let mut rep = report("by-grid", "city.vehicle.illegal_parking", 0.0, 0.0);
    rep.location = Some(pb::Location {
        kind: Some(pb::location::Kind::GridCode(grid.clone())),
        ..Default::default()
    });
    let r = env
        .incidents()
        .await
        .report_incident(env.signed(rep))
        .await
        .unwrap()
        .into_inner();
    let d = env
        .wait_status(&r.incident_id, pb::IncidentStatus::Dispatched)
        .await
        .decision
        .unwrap();
    assert_eq!(d.department_id, "traffic-police");
    assert_eq!(d.region_path.last().unwrap().code, grid);
}

fn violations(status: &tonic::Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_get_field_violations() {
    let env = Env::start().await;
    let mut c = env.incidents().await;
    let mut bad = report("", "City Vehicle", 200.0, 95.0);
    // An empty source system is the caller's own: not a violation.
    bad.source_system.clear();
    bad.attachment_urls = vec!["ftp://x".into()];
    let err = c
        .report_incident(env.as_("source_system:resident-app", bad))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut fields = violations(&err);
    fields.sort();
    assert_eq!(
        fields,
        [
            "attachment_urls[0]",
            "category",
            "location.point.latitude",
            "location.point.longitude",
            "request_id",
        ]
    );

    let mut no_loc = report("x", "city.vehicle.abandoned", 0.0, 0.0);
    no_loc.location = None;
    assert_eq!(
        violations(&c.report_incident(env.signed(no_loc)).await.unwrap_err()),
        ["location"]
    );

    let mut unknown_grid = report("y", "city.vehicle.abandoned", 0.0, 0.0);
    unknown_grid.location = Some(pb::Location {
        kind: Some(pb::location::Kind::GridCode("999".into())),
        ..Default::default()
    });
    assert_eq!(
        violations(
            &c.report_incident(env.signed(unknown_grid))
                .await
                .unwrap_err()
        ),
        ["location.grid_code"]
    );

    let mut future = report("z", "city.vehicle.abandoned", 106.38, 39.02);
    future.occurred_time = Some(prost_types::Timestamp {
        seconds: 4_000_000_000,
        nanos: 0,
    });
    assert_eq!(
        violations(&c.report_incident(env.signed(future)).await.unwrap_err()),
        ["occurred_time"]
    );

    let err = c
        .get_incident(env.signed(pb::GetIncidentRequest {
            incident_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = c
        .get_incident(env.signed(pb::GetIncidentRequest {
            incident_id: "01JDXK3M4P5Q6R7S8T9V0W1X2Y-1".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let mut d = env.dispatches().await;
    let err = d
        .subscribe(env.signed(pb::SubscribeRequest {
            department_id: "nobody".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::PermissionDenied,
        "a token naming no department of the table: {err:?}"
    );
    let err = d
        .subscribe(env.signed(pb::SubscribeRequest {
            department_id: "water-affairs".into(),
            cursor: "garbage".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(violations(&err), ["cursor"]);
    let err = d
        .return_incident(env.signed(pb::ReturnIncidentRequest {
            incident_id: "x".into(),
            department_id: "water-affairs".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    let mut f = violations(&err);
    f.sort();
    assert_eq!(f, ["note", "reason"]);

    // Nothing invalid reached the ingest stream.
    let mut r = env.redis().await;
    for p in 0..PARTITIONS {
        let n: u64 = redis::cmd("XLEN")
            .arg(env.store.keys().ingest(p))
            .query_async(&mut r)
            .await
            .unwrap();
        assert_eq!(n, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_gives_unavailable_and_not_serving() {
    let mut env = Env::start().await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let mut health = tonic_health::pb::health_client::HealthClient::new(env.channel().await);
    let check = |service: &str| tonic_health::pb::HealthCheckRequest {
        service: service.into(),
    };
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    for _ in 0..100 {
        if health.check(check("")).await.unwrap().into_inner().status == serving {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        health
            .check(check("gridroute.v1.IncidentService"))
            .await
            .unwrap()
            .into_inner()
            .status,
        serving
    );

    env.stop_routers().await;
    env.redis.stop();
    let err = env
        .incidents()
        .await
        .report_incident(env.signed(report("down", "city.vehicle.abandoned", lng, lat)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");

    let mut status = serving;
    for _ in 0..100 {
        status = health.check(check("")).await.unwrap().into_inner().status;
        if status != serving {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
    );
    // Per service, what each needs: every service that reads or writes Redis is not ready;
    // RoutingService answers from the table in memory and stays ready (ExplainRoute works).
    let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
    for service in [
        "gridroute.v1.IncidentService",
        "gridroute.v1.DispatchService",
        "gridroute.v1.SupervisionService",
        "gridroute.v1.TableService",
        "gridroute.v1.AuditService",
    ] {
        let s = health
            .check(check(service))
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(s, not_serving, "{service}");
    }
    let routing = health
        .check(check("gridroute.v1.RoutingService"))
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(routing, serving, "RoutingService needs no Redis");
    let explained = env
        .routing()
        .await
        .explain_route(env.signed(pb::ExplainRouteRequest {
            report: Some(report("explain", "city.vehicle.abandoned", lng, lat)),
        }))
        .await;
    assert!(
        explained.is_ok(),
        "ExplainRoute answers without Redis: {explained:?}"
    );
    // A service that does not exist is not reported ready.
    let unknown = health.check(check("gridroute.v1.NoSuchService")).await;
    assert_eq!(unknown.unwrap_err().code(), Code::NotFound);
    // Liveness is separate: the process is alive, only not ready.
    assert_eq!(
        health
            .check(check("liveness"))
            .await
            .unwrap()
            .into_inner()
            .status,
        serving
    );
    // Redis returns: ready again.
    let _back = gridroute_store::local::LocalRedis::start_on(env.redis.port()).unwrap();
    for _ in 0..100 {
        status = health.check(check("")).await.unwrap().into_inner().status;
        if status == serving {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, serving, "SERVING again once Redis answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_recovers_when_redis_comes_back() {
    let mut env = Env::start().await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let port = env.redis.port();
    env.redis.stop();
    let err = env
        .incidents()
        .await
        .report_incident(env.signed(report("gone", "city.vehicle.abandoned", lng, lat)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    // Back on the same port, empty (no persistence): the router recreates its group.
    let _restarted = gridroute_store::local::LocalRedis::start_on(port).unwrap();
    let mut id = None;
    for _ in 0..100 {
        match env
            .incidents()
            .await
            .report_incident(env.signed(report("back", "city.vehicle.abandoned", lng, lat)))
            .await
        {
            Ok(r) => {
                id = Some(r.into_inner().incident_id);
                break;
            }
            Err(e) => assert_eq!(e.code(), Code::Unavailable),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let id = id.expect("reports are accepted again");
    let d = env
        .wait_status(&id, pb::IncidentStatus::Dispatched)
        .await
        .decision
        .unwrap();
    assert_eq!(d.department_id, "property-office");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_reports_get_one_result_each() {
    let env = Env::start().await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let items = vec![
        report("b-1", "city.vehicle.abandoned", lng, lat),
        report("", "city.vehicle.abandoned", lng, lat),
        report("b-2", "city.sanitation.garbage", lng, lat),
        report("b-1", "city.vehicle.abandoned", lng, lat),
    ];
    let resp = env.report_batch(items).await;
    let codes: Vec<i32> = resp.results.iter().map(|r| r.code).collect();
    assert_eq!(codes, [0, Code::InvalidArgument as i32, 0, 0]);
    assert_eq!(resp.accepted_count, 3);
    assert_eq!(resp.rejected_count, 1);
    assert!(resp.results[3].duplicate_request);
    assert_eq!(resp.results[3].incident_id, resp.results[0].incident_id);
    env.wait_status(&resp.results[2].incident_id, pb::IncidentStatus::Dispatched)
        .await;
    let d = env
        .wait_status(&resp.results[0].incident_id, pb::IncidentStatus::Dispatched)
        .await;
    assert_eq!(d.decision.unwrap().department_id, "property-office");
}

/// What an operator watching the ingest streams sees: once the reports are routed, nothing
/// waits (no lag, nothing pending) and the routers have trimmed what they acknowledged, so the
/// streams do not grow with the traffic they carried. `XTRIM MINID ~` frees whole stream nodes
/// (100 entries), so each partition may keep up to a node's worth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routers_trim_the_entries_they_acknowledged() {
    const N: usize = 800;
    let env = Env::start().await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    for b in 0..N / 100 {
        let items = (0..100)
            .map(|i| report(&format!("t-{b}-{i}"), "city.vehicle.abandoned", lng, lat))
            .collect();
        assert_eq!(env.report_batch(items).await.accepted_count, 100);
    }
    let k = env.store.keys().clone();
    let bound = 100 * u64::from(PARTITIONS);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut left = u64::MAX;
    while tokio::time::Instant::now() < deadline {
        left = env.stream_len(|p| k.ingest(p)).await;
        if env.dispatch_count("property-office").await == N as u64 && left <= bound {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(env.dispatch_count("property-office").await, N as u64);
    assert!(
        left <= bound,
        "{left} of {N} entries left in the ingest streams"
    );
    let stats = env.store.ingest_stats().await.unwrap();
    assert_eq!((stats.lag, stats.pending, stats.dead_letters), (0, 0, 0));
    // Nothing new arrives, and a later trim only removes more.
    assert!(stats.length <= left, "{} after {left}", stats.length);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_resumes_from_its_cursor_without_missing_anything() {
    let env = Env::start().await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let mut inc = env.incidents().await;
    let mut d = env.dispatches().await;
    let sub_req = |cursor: &str| pb::SubscribeRequest {
        department_id: "property-office".into(),
        cursor: cursor.into(),
        ..Default::default()
    };

    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            inc.report_incident(env.signed(report(
                &format!("c-{i}"),
                "city.vehicle.abandoned",
                lng,
                lat,
            )))
            .await
            .unwrap()
            .into_inner()
            .incident_id,
        );
    }
    let mut sub = d
        .subscribe(env.signed(sub_req("")))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    let mut cursor = String::new();
    for _ in 0..3 {
        let x = next_dispatch(&mut sub).await;
        got.push(x.incident_id);
        cursor = x.cursor;
    }
    let mut expected = ids.clone();
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "a new subscriber sees everything retained");

    // Disconnect; more incidents arrive meanwhile.
    drop(sub);
    let mut later = Vec::new();
    for i in 3..6 {
        let id = inc
            .report_incident(env.signed(report(
                &format!("c-{i}"),
                "city.vehicle.abandoned",
                lng,
                lat,
            )))
            .await
            .unwrap()
            .into_inner()
            .incident_id;
        env.wait_status(&id, pb::IncidentStatus::Dispatched).await;
        later.push(id);
    }
    let mut sub = d
        .subscribe(env.signed(sub_req(&cursor)))
        .await
        .unwrap()
        .into_inner();
    let mut resumed = Vec::new();
    for _ in 0..3 {
        resumed.push(next_dispatch(&mut sub).await.incident_id);
    }
    resumed.sort();
    later.sort();
    assert_eq!(resumed, later, "exactly the dispatches after the cursor");

    // LATEST skips history.
    let mut sub = d
        .subscribe(env.signed(pb::SubscribeRequest {
            department_id: "property-office".into(),
            start: pb::SubscribeStart::Latest as i32,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let id = inc
        .report_incident(env.signed(report("c-new", "city.vehicle.abandoned", lng, lat)))
        .await
        .unwrap()
        .into_inner()
        .incident_id;
    assert_eq!(next_dispatch(&mut sub).await.incident_id, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_killed_before_dispatch_is_replaced_exactly_once() {
    let mut env = Env::without_router().await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let mut c = env.incidents().await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            c.report_incident(env.signed(report(
                &format!("k-{i}"),
                "city.vehicle.abandoned",
                lng,
                lat,
            )))
            .await
            .unwrap()
            .into_inner()
            .incident_id,
        );
    }
    // A router reads every entry and dies before dispatching: they stay pending under its name.
    let mut r = env.redis().await;
    for p in 0..PARTITIONS {
        let _: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("routers")
            .arg("dead-router")
            .arg("COUNT")
            .arg(100)
            .arg("STREAMS")
            .arg(env.store.keys().ingest(p))
            .arg(">")
            .query_async(&mut r)
            .await
            .unwrap();
    }
    let stats = env.store.ingest_stats().await.unwrap();
    assert_eq!((stats.lag, stats.pending), (0, 20));

    // Two live routers race to take over.
    env.spawn_router(fast_router("router-b"));
    env.spawn_router(fast_router("router-c"));
    for id in &ids {
        env.wait_status(id, pb::IncidentStatus::Dispatched).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        env.dispatch_count("property-office").await,
        20,
        "each incident dispatched exactly once"
    );
    let stats = env.store.ingest_stats().await.unwrap();
    assert_eq!((stats.lag, stats.pending, stats.dead_letters), (0, 0, 0));
    for id in &ids {
        let inc = env.wait_status(id, pb::IncidentStatus::Dispatched).await;
        assert_eq!(
            inc.timeline
                .iter()
                .filter(|e| e.kind == "dispatched")
                .count(),
            1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_entries_go_to_the_dead_letter_stream() {
    let env = Env::start().await;
    let mut r = env.redis().await;
    let key = env.store.keys().ingest(1);
    // Not a report at all.
    let _: String = redis::cmd("XADD")
        .arg(&key)
        .arg("*")
        .arg("junk")
        .arg("\u{1}\u{2}")
        .query_async(&mut r)
        .await
        .unwrap();
    // A report that does not decode.
    let _: String = redis::cmd("XADD")
        .arg(&key)
        .arg("*")
        .arg("id")
        .arg("01JDXK3M4P5Q6R7S8T9V0W1X2Y-1")
        .arg("g")
        .arg("0")
        .arg("t")
        .arg("1")
        .arg("r")
        .arg(b"\xff\xff\xff".as_slice())
        .query_async(&mut r)
        .await
        .unwrap();
    // A packed entry cut short: kept as written in the dead letter.
    let _: String = redis::cmd("XADD")
        .arg(&key)
        .arg("*")
        .arg("p")
        .arg("1|01JDXK3M4P5Q6R7S8T9V0W1X2Y-1|0")
        .query_async(&mut r)
        .await
        .unwrap();
    let mut letters = Vec::new();
    for _ in 0..200 {
        letters = env.store.dead_letters(1, 10).await.unwrap();
        if letters.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(letters.len(), 3);
    for l in &letters {
        assert_eq!(l["reason"], b"undecodable");
    }
    assert!(String::from_utf8_lossy(&letters[0]["detail"]).contains("no incident id"));
    assert!(String::from_utf8_lossy(&letters[1]["detail"]).contains("does not decode"));
    assert!(String::from_utf8_lossy(&letters[2]["detail"]).contains("no incident id"));
    assert_eq!(
        letters[2]["fields"],
        b"p=1|01JDXK3M4P5Q6R7S8T9V0W1X2Y-1|0\n"
    );
    let stats = env.store.ingest_stats().await.unwrap();
    assert_eq!((stats.pending, stats.dead_letters), (0, 3));

    // The path still works after poison.
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let id = env
        .incidents()
        .await
        .report_incident(env.signed(report("after", "city.vehicle.abandoned", lng, lat)))
        .await
        .unwrap()
        .into_inner()
        .incident_id;
    env.wait_status(&id, pb::IncidentStatus::Dispatched).await;
}

/// Reports are queued packed (one field); an entry queued by a release before that, with its
/// parts in five fields, is still routed after an upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_queued_in_the_earlier_fielded_form_are_still_routed() {
    let env = Env::without_router().await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let id = env
        .report(report("fielded", "city.vehicle.abandoned", lng, lat))
        .await;
    let p = gridroute_store::keys::partition_of(&id, PARTITIONS).unwrap();
    let key = env.store.keys().ingest(p);
    let mut r = env.redis().await;
    // Each entry: its id and its (field, value) pairs.
    type Entry = (String, Vec<(String, Vec<u8>)>);
    let queued: Vec<Entry> = redis::cmd("XRANGE")
        .arg(&key)
        .arg("-")
        .arg("+")
        .query_async(&mut r)
        .await
        .unwrap();
    assert_eq!(queued.len(), 1);
    let (entry_id, fields) = &queued[0];
    assert_eq!(fields.len(), 1, "one packed field");
    assert_eq!(fields[0].0, "p");
    let value = &fields[0].1;
    let head = format!("1|{id}|0|");
    assert!(value.starts_with(head.as_bytes()), "{value:?}");
    // Its parts: id, generation, time, traceparent, then the report's bytes.
    let parts: Vec<&[u8]> = value.splitn(6, |&c| c == b'|').collect();
    assert_eq!(parts.len(), 6);
    let time = std::str::from_utf8(parts[3]).unwrap().to_owned();
    assert!(time.parse::<i64>().unwrap() > 0);
    let report_bytes = parts[5].to_vec();

    // Queued again as an earlier release wrote it.
    let _: i64 = redis::cmd("XDEL")
        .arg(&key)
        .arg(entry_id)
        .query_async(&mut r)
        .await
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg(&key)
        .arg("*")
        .arg("id")
        .arg(&id)
        .arg("g")
        .arg("0")
        .arg("t")
        .arg(&time)
        .arg("r")
        .arg(report_bytes)
        .arg("tp")
        .arg("")
        .query_async(&mut r)
        .await
        .unwrap();
    let mut env = env;
    env.spawn_router(fast_router("router-after-upgrade"));
    env.wait_status(&id, pb::IncidentStatus::Dispatched).await;
    assert_eq!(env.dispatch_count("property-office").await, 1);
    let stats = env.store.ingest_stats().await.unwrap();
    assert_eq!((stats.lag, stats.pending, stats.dead_letters), (0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_that_keep_failing_are_dead_lettered_after_max_deliveries() {
    let env = Env::without_router().await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let mut c = env.incidents().await;
    let bad = c
        .report_incident(env.signed(report("will-fail", "city.vehicle.abandoned", lng, lat)))
        .await
        .unwrap()
        .into_inner()
        .incident_id;
    // Good reports around it: the ones in its partition are read in the same batch, so they
    // share its dispatch script call, and must not fail with it.
    let mut good = Vec::new();
    for i in 0..40 {
        let id = c
            .report_incident(env.signed(report(
                &format!("will-pass-{i}"),
                "city.vehicle.abandoned",
                lng,
                lat,
            )))
            .await
            .unwrap()
            .into_inner()
            .incident_id;
        good.push(id);
    }
    // Break the first incident's record so that its dispatch script fails every time.
    let p = gridroute_store::keys::partition_of(&bad, PARTITIONS).unwrap();
    let mut r = env.redis().await;
    let _: () = redis::cmd("DEL")
        .arg(env.store.keys().incident(p, &bad))
        .query_async(&mut r)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(env.store.keys().incident(p, &bad))
        .arg("not a hash")
        .query_async(&mut r)
        .await
        .unwrap();

    assert!(
        good.iter()
            .any(|g| gridroute_store::keys::partition_of(g, PARTITIONS) == Some(p)),
        "some good report shares the bad one's partition"
    );

    let mut env = env;
    env.spawn_router(fast_router("router-x"));
    for g in &good {
        env.wait_status(g, pb::IncidentStatus::Dispatched).await;
    }
    let mut letters = Vec::new();
    for _ in 0..400 {
        letters = env.store.dead_letters(p, 10).await.unwrap();
        if !letters.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(letters.len(), 1, "the failing entry is dead-lettered");
    assert_eq!(letters[0]["reason"], b"max_deliveries");
    assert!(String::from_utf8_lossy(&letters[0]["fields"]).contains(&bad));
    let stats = env.store.ingest_stats().await.unwrap();
    assert_eq!((stats.pending, stats.dead_letters), (0, 1));
}
