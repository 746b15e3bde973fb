//! The shared record: accept / resolve / return, GetIncident, ListIncidents and ExplainRoute,
//! against a real redis-server and a real gRPC socket.

#![allow(clippy::unwrap_used)]

use crate::common;

use common::{Env, PARTITIONS, grid_point, report};
use gridroute_proto::v1 as pb;
use tonic::Code;

/// The incident's timer schedule (`kind|department`, earliest first), after checking that
/// exactly its head is in the partition's timer set.
async fn timers(env: &Env, id: &str) -> Vec<String> {
    let p = gridroute_store::keys::partition_of(id, PARTITIONS).unwrap();
    let mut r = env.redis().await;
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(env.store.keys().sla(p))
        .arg(0)
        .arg(-1)
        .query_async(&mut r)
        .await
        .unwrap();
    let in_set: Vec<String> = members
        .into_iter()
        .filter(|m| m.starts_with(id))
        .map(|m| m[id.len() + 1..].to_owned())
        .collect();
    let schedule: String = redis::cmd("HGET")
        .arg(env.store.keys().incident(p, id))
        .arg("timers")
        .query_async(&mut r)
        .await
        .unwrap_or_default();
    let steps: Vec<String> = gridroute_store::schedule::decode(&schedule)
        .iter()
        .map(|t| format!("{}|{}", t.kind, t.target))
        .collect();
    assert_eq!(
        in_set,
        steps.iter().take(1).cloned().collect::<Vec<_>>(),
        "only the head is in the set"
    );
    steps
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_and_resolve_change_state_and_stop_their_timers() {
    let env = Env::start().await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let id = env
        .incidents()
        .await
        .report_incident(env.signed(report("a-1", "city.vehicle.abandoned", lng, lat)))
        .await
        .unwrap()
        .into_inner()
        .incident_id;
    env.wait_status(&id, pb::IncidentStatus::Dispatched).await;
    let t = timers(&env, &id).await;
    assert_eq!(
        t,
        [
            "accept|property-office",
            "warn50|property-office",
            "warn80|property-office",
            "urge|property-office",
            "supervise1|command-centre",
            "supervise2|command-centre",
            "public|command-centre",
        ]
    );

    let mut d = env.dispatches().await;
    let accept = |dept: &str| pb::AcceptIncidentRequest {
        incident_id: id.clone(),
        department_id: dept.into(),
        note: "on it".into(),
        request_id: "acc-1".into(),
    };
    let err = d
        .accept_incident(env.signed(accept("water-affairs")))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::PermissionDenied,
        "only the primary department accepts"
    );

    let inc = d
        .accept_incident(env.signed(accept("property-office")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(inc.status, pb::IncidentStatus::Accepted as i32);
    assert_eq!(
        timers(&env, &id).await.len(),
        6,
        "accept clock stopped, resolve clock runs on"
    );
    assert!(
        !timers(&env, &id)
            .await
            .iter()
            .any(|t| t.starts_with("accept"))
    );
    // Repeating the same action with the same request id is not an error.
    let again = d
        .accept_incident(env.signed(accept("property-office")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.status, pb::IncidentStatus::Accepted as i32);

    let resolve = pb::ResolveIncidentRequest {
        incident_id: id.clone(),
        department_id: "property-office".into(),
        note: "the property company towed the car".into(),
        evidence_urls: vec!["https://evidence.example/1.jpg".into()],
        request_id: String::new(),
    };
    let inc = d
        .resolve_incident(env.signed(resolve))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(inc.status, pb::IncidentStatus::Resolved as i32);
    assert_eq!(
        timers(&env, &id).await,
        ["verify|command-centre"],
        "resolve clocks stopped, the verification clock runs"
    );
    let kinds: Vec<&str> = inc.timeline.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["reported", "dispatched", "accepted", "resolved"]);
    assert_eq!(inc.timeline[3].actor, "property-office");
    assert!(inc.timeline[3].detail.contains("towed"));

    let err = d
        .accept_incident(env.signed(pb::AcceptIncidentRequest {
            request_id: "acc-2".into(),
            ..accept("property-office")
        }))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::FailedPrecondition,
        "a resolved incident cannot be accepted"
    );
    let err = d
        .accept_incident(env.signed(pb::AcceptIncidentRequest {
            incident_id: "01JDXK3M4P5Q6R7S8T9V0W1X2Y-2".into(),
            department_id: "property-office".into(),
            note: String::new(),
            request_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::PermissionDenied,
        "a department cannot tell an unknown incident from another's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returned_incident_is_rerouted_without_the_department_that_returned_it() {
    let env = Env::start().await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let id = env
        .incidents()
        .await
        .report_incident(env.signed(report("ret-1", "city.vehicle.abandoned", lng, lat)))
        .await
        .unwrap()
        .into_inner()
        .incident_id;
    env.wait_status(&id, pb::IncidentStatus::Dispatched).await;
    let mut d = env.dispatches().await;
    let ret = pb::ReturnIncidentRequest {
        incident_id: id.clone(),
        department_id: "property-office".into(),
        reason: pb::ReturnReason::NotInRemit as i32,
        note: "the car stands on a public road, not in the compound".into(),
        request_id: "ret-1".into(),
    };
    d.return_incident(env.signed(ret.clone())).await.unwrap();
    // Returned → routed again; property-office is excluded, no other rule covers the category
    // here, so the district command centre takes it.
    let mut inc = env.wait_status(&id, pb::IncidentStatus::Dispatched).await;
    for _ in 0..100 {
        if inc.decision.as_ref().unwrap().department_id != "property-office" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        inc = env.wait_status(&id, pb::IncidentStatus::Dispatched).await;
    }
    let decision = inc.decision.clone().unwrap();
    assert_eq!(decision.department_id, "command-centre");
    assert!(
        decision
            .reasons
            .iter()
            .any(|r| r.contains("excluded: property-office")),
        "{:?}",
        decision.reasons
    );
    assert_eq!(inc.returned_by, ["property-office"]);
    let kinds: Vec<&str> = inc.timeline.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["reported", "dispatched", "returned", "dispatched"]);
    assert!(
        inc.timeline[2]
            .detail
            .starts_with("RETURN_REASON_NOT_IN_REMIT")
    );
    assert_eq!(env.dispatch_count("command-centre").await, 1);
    // A retried return is answered OK and changes nothing.
    d.return_incident(env.signed(ret)).await.unwrap();
    assert_eq!(env.dispatch_count("command-centre").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_by_department_region_status_and_pages() {
    let env = Env::start().await;
    let table = env.table();
    let (_, path, lng, lat) = grid_point(&table, false);
    let (_, tpath, tlng, tlat) = grid_point(&table, true);
    let mut c = env.incidents().await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let (x, y) = if i % 2 == 0 { (lng, lat) } else { (tlng, tlat) };
        ids.push(
            c.report_incident(env.signed(report(
                &format!("l-{i}"),
                "city.vehicle.abandoned",
                x,
                y,
            )))
            .await
            .unwrap()
            .into_inner()
            .incident_id,
        );
    }
    for id in &ids {
        env.wait_status(id, pb::IncidentStatus::Dispatched).await;
    }
    let env = &env;
    let list = |req: pb::ListIncidentsRequest| {
        let mut c = c.clone();
        async move {
            c.list_incidents(env.signed(req))
                .await
                .unwrap()
                .into_inner()
        }
    };
    // Everything in pages of 3, every incident exactly once. The order is the order in which
    // they entered the list (their first routing, newest first), which partitions routed in
    // parallel may swap with the order of the reports.
    let mut sorted_ids = ids.clone();
    sorted_ids.sort();
    assert_eq!(
        walk(env, &mut c.clone(), Default::default(), 3).await,
        sorted_ids
    );

    let by_dept = list(pb::ListIncidentsRequest {
        department_id: "urban-management".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(by_dept.incidents.len(), 3, "the township's abandoned cars");
    let by_street = list(pb::ListIncidentsRequest {
        region_code: path[1].clone(),
        ..Default::default()
    })
    .await;
    assert_eq!(by_street.incidents.len(), 4);
    let by_district = list(pb::ListIncidentsRequest {
        region_code: tpath[0].clone(),
        ..Default::default()
    })
    .await;
    assert_eq!(by_district.incidents.len(), 7);

    let mut d = env.dispatches().await;
    d.accept_incident(env.signed(pb::AcceptIncidentRequest {
        incident_id: ids[0].clone(),
        department_id: "property-office".into(),
        note: String::new(),
        request_id: String::new(),
    }))
    .await
    .unwrap();
    let accepted = list(pb::ListIncidentsRequest {
        statuses: vec![pb::IncidentStatus::Accepted as i32],
        ..Default::default()
    })
    .await;
    assert_eq!(
        accepted
            .incidents
            .iter()
            .map(|i| i.incident_id.clone())
            .collect::<Vec<_>>(),
        [ids[0].clone()]
    );

    let future = prost_types::Timestamp {
        seconds: 4_000_000_000,
        nanos: 0,
    };
    let none = list(pb::ListIncidentsRequest {
        start_time: Some(future),
        ..Default::default()
    })
    .await;
    assert!(none.incidents.is_empty() && none.next_page_token.is_empty());

    // A window around the reports holds all of them; one that ended before them holds none.
    let secs = |d: std::time::Duration| prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: 0,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let window = list(pb::ListIncidentsRequest {
        start_time: Some(secs(now - std::time::Duration::from_secs(600))),
        end_time: Some(secs(now + std::time::Duration::from_secs(60))),
        page_size: 50,
        ..Default::default()
    })
    .await;
    assert_eq!(window.incidents.len(), ids.len());
    let before = list(pb::ListIncidentsRequest {
        start_time: Some(secs(now - std::time::Duration::from_secs(600))),
        end_time: Some(secs(now - std::time::Duration::from_secs(300))),
        ..Default::default()
    })
    .await;
    assert!(before.incidents.is_empty() && before.next_page_token.is_empty());

    let err = c
        .list_incidents(env.signed(pb::ListIncidentsRequest {
            page_size: 10_000,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = c
        .list_incidents(env.signed(pb::ListIncidentsRequest {
            page_token: "not-a-token".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("page_token"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_route_returns_the_decision_and_creates_nothing() {
    let env = Env::without_router().await;
    let table = env.table();
    let (grid, _, lng, lat) = grid_point(&table, false);
    let mut r = report("", "city.environment.noise.construction", lng, lat);
    r.urgency = pb::Urgency::Unspecified as i32;
    let d = env
        .routing()
        .await
        .explain_route(env.signed(pb::ExplainRouteRequest { report: Some(r) }))
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    assert_eq!(d.department_id, "housing-construction");
    assert_eq!(d.co_department_ids, ["ecology-environment"]);
    assert_eq!(d.rule_id, "construction-noise");
    assert_eq!(d.table_version, table.version);
    assert_eq!(d.sla_policy, "standard");
    assert_eq!(d.region_path.last().unwrap().code, grid);
    assert!(
        d.reasons
            .iter()
            .any(|x| x.contains("rule construction-noise")),
        "{:?}",
        d.reasons
    );

    // WGS-84 input is converted to the table's GCJ-02 before the lookup.
    let (wlng, wlat) = gridroute_core::crs::convert(
        gridroute_core::crs::Crs::Gcj02,
        gridroute_core::crs::Crs::Wgs84,
        lng,
        lat,
    );
    let mut w = report("", "city.vehicle.abandoned", wlng, wlat);
    w.location.as_mut().unwrap().coordinate_system = pb::CoordinateSystem::Wgs84 as i32;
    let d = env
        .routing()
        .await
        .explain_route(env.signed(pb::ExplainRouteRequest { report: Some(w) }))
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    assert_eq!(d.region_path.last().unwrap().code, grid);

    let err = env
        .routing()
        .await
        .explain_route(env.signed(pb::ExplainRouteRequest { report: None }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let stats = env.store.ingest_stats().await.unwrap();
    let mut c = env.redis().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("gr:*inc:*")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(keys.is_empty() && stats.lag == 0, "nothing was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_window_finds_an_incident_routed_long_after_its_report() {
    // Reported while no router ran; its record says it was reported two days ago (as after a
    // long routing outage). Lists are kept in routing order, yet a window around the report
    // time must still find it.
    let mut env = Env::without_router().await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let id = env
        .incidents()
        .await
        .report_incident(env.signed(report("late-1", "city.vehicle.abandoned", lng, lat)))
        .await
        .unwrap()
        .into_inner()
        .incident_id;
    let two_days = 2 * 24 * 3600 * 1000;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let reported = now_ms - two_days;
    let p = gridroute_store::keys::partition_of(&id, common::PARTITIONS).unwrap();
    let _: () = redis::cmd("HSET")
        .arg(env.store.keys().incident(p, &id))
        .arg("reported_at")
        .arg(reported)
        .query_async(&mut env.redis().await)
        .await
        .unwrap();
    env.spawn_router(common::fast_router("router-late"));
    env.wait_status(&id, pb::IncidentStatus::Dispatched).await;

    let at = |ms: i64| prost_types::Timestamp {
        seconds: ms / 1000,
        nanos: 0,
    };
    let window = env
        .incidents()
        .await
        .list_incidents(env.signed(pb::ListIncidentsRequest {
            start_time: Some(at(reported - 3_600_000)),
            end_time: Some(at(reported + 3_600_000)),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = window
        .incidents
        .iter()
        .map(|i| i.incident_id.as_str())
        .collect();
    assert_eq!(ids, [id.as_str()]);
    let stats = env
        .supervision()
        .await
        .get_stats(env.signed(pb::GetStatsRequest {
            start_time: Some(at(reported - 3_600_000)),
            end_time: Some(at(reported + 3_600_000)),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.incident_count, 1);
}

/// Every incident of a page walk, checking that none comes twice.
async fn walk(
    env: &Env,
    c: &mut pb::incident_service_client::IncidentServiceClient<tonic::transport::Channel>,
    filter: pb::ListIncidentsRequest,
    page_size: i32,
) -> Vec<String> {
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_incidents(env.signed(pb::ListIncidentsRequest {
                page_size,
                page_token: token.clone(),
                ..filter.clone()
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(page.incidents.len() <= page_size as usize);
        seen.extend(page.incidents.into_iter().map(|i| i.incident_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        seen.len(),
        "an incident on two pages: {seen:?}"
    );
    unique
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_and_stats_count_incidents_dispatched_in_one_batch_once() {
    // Reports queue while no router runs; the router then dispatches them in batches, and each
    // index gets one entry per batch listing many incidents.
    let mut env = Env::without_router().await;
    let table = env.table();
    let (_, path, lng, lat) = grid_point(&table, false);
    let (_, _, tlng, tlat) = grid_point(&table, true);
    let mut c = env.incidents().await;
    let mut ids = Vec::new();
    let mut township = Vec::new();
    for i in 0..60 {
        let (x, y) = if i % 3 == 0 { (tlng, tlat) } else { (lng, lat) };
        let id = env
            .report(report(&format!("b-{i}"), "city.vehicle.abandoned", x, y))
            .await;
        if i % 3 == 0 {
            township.push(id.clone());
        }
        ids.push(id);
    }
    // Small batches: several multi-incident entries per partition, so that pages end inside
    // entries and partitions interleave.
    env.spawn_router(gridroute_router::RouterConfig {
        batch_size: 3,
        ..common::fast_router("router-a")
    });
    for id in &ids {
        env.wait_status(id, pb::IncidentStatus::Dispatched).await;
    }
    let mut r = env.redis().await;
    let all_keys: Vec<String> = redis::cmd("KEYS")
        .arg("*ix:all")
        .query_async(&mut r)
        .await
        .unwrap();
    let mut widest = 0;
    for key in all_keys {
        let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
            .arg(&key)
            .arg("-")
            .arg("+")
            .query_async(&mut r)
            .await
            .unwrap();
        widest = entries
            .iter()
            .map(|(_, f)| f.len() / 2)
            .fold(widest, usize::max);
    }
    assert!(widest > 1, "the router wrote one index entry per incident");

    ids.sort();
    township.sort();
    for page_size in [1, 4, 7, 12, 16, 500] {
        let all = walk(&env, &mut c, Default::default(), page_size).await;
        assert_eq!(all, ids, "page size {page_size}");
    }
    let by_dept = pb::ListIncidentsRequest {
        department_id: "urban-management".into(),
        ..Default::default()
    };
    assert_eq!(walk(&env, &mut c, by_dept, 3).await, township);
    let by_street = pb::ListIncidentsRequest {
        region_code: path[1].clone(),
        ..Default::default()
    };
    assert_eq!(walk(&env, &mut c, by_street, 6).await.len(), 40);

    let mut s = env.supervision().await;
    let stats = s
        .get_stats(env.signed(pb::GetStatsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.incident_count, 60);
    let stats = s
        .get_stats(env.signed(pb::GetStatsRequest {
            department_id: "urban-management".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.incident_count, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stored_decision_and_timeline_read_back_exactly_as_routed() {
    let env = Env::start().await;
    let table = env.table();
    let (_, _, lng, lat) = grid_point(&table, false);
    let r = report("short-1", "city.environment.noise.construction", lng, lat);
    let explained = env
        .routing()
        .await
        .explain_route(env.signed(pb::ExplainRouteRequest {
            report: Some(r.clone()),
        }))
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    let id = env.report(r).await;
    let inc = env.wait_status(&id, pb::IncidentStatus::Dispatched).await;
    // What GetIncident shows is what the router decided, every reason word for word.
    assert_eq!(inc.decision.as_ref(), Some(&explained));
    assert!(
        explained
            .reasons
            .iter()
            .any(|x| x.contains(" lies in grid "))
    );
    let kinds: Vec<(&str, &str, &str)> = inc
        .timeline
        .iter()
        .map(|e| (e.kind.as_str(), e.actor.as_str(), e.actor_kind.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("reported", "resident-app", "source_system"),
            ("dispatched", "router", "")
        ]
    );
    assert_eq!(
        inc.timeline[0].detail,
        "category city.environment.noise.construction"
    );
    assert_eq!(
        inc.timeline[1].detail,
        format!(
            "to housing-construction by rule construction-noise (table {})",
            table.version
        )
    );
    // Stored shorter than the message it stands for (docs/PERFORMANCE.md, memory).
    let p = gridroute_store::keys::partition_of(&id, PARTITIONS).unwrap();
    let mut c = env.redis().await;
    let stored: Vec<u8> = redis::cmd("HGET")
        .arg(env.store.keys().incident(p, &id))
        .arg("decision")
        .query_async(&mut c)
        .await
        .unwrap();
    let full = prost::Message::encode_to_vec(&explained);
    assert!(
        stored.len() + 100 < full.len(),
        "{} vs {}",
        stored.len(),
        full.len()
    );
}
