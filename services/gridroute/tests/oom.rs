//! Redis out of memory (`maxmemory` reached with `noeviction`): reports are refused with
//! RESOURCE_EXHAUSTED (never OK for something not stored), what was stored stays, routers back
//! off instead of spinning, and everything resumes when memory is freed.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use common::{Env, grid_point, report};
use gridroute_proto::v1 as pb;
use tonic::Code;

/// Calls of EVALSHA (every script) the server has run so far.
async fn script_calls(redis: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(redis)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_refuses_reports_loses_nothing_and_resumes() {
    let mut env = Env::start().await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let before = env
        .report(report("oom-before", "city.sanitation", lng, lat))
        .await;
    env.wait_status(&before, pb::IncidentStatus::Dispatched)
        .await;

    // What idle routers cost in script calls (timer claims), to compare with a full Redis.
    let mut redis = env.redis().await;
    let start = script_calls(&mut redis).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = script_calls(&mut redis).await - start;

    // Fill Redis past a small maxmemory with noeviction.
    let used = env.store.memory_stats().await.unwrap().0;
    let limit = used + 8 * 1024 * 1024;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("noeviction")
        .query_async(&mut redis)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("filler")
        .arg(vec![b'x'; 10 * 1024 * 1024])
        .query_async(&mut redis)
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(limit)
        .query_async(&mut redis)
        .await
        .unwrap();

    // A report stored before Redis filled up, routed while it is full.
    env.stop_routers().await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(0)
        .query_async(&mut redis)
        .await
        .unwrap();
    let waiting = env
        .report(report("oom-waiting", "city.sanitation", lng, lat))
        .await;
    // Delivered once to a router that then died: the entry is pending, so routers take it
    // over (XAUTOCLAIM works on a full Redis, unlike XREADGROUP) and its delivery count grows
    // with every failed dispatch while Redis is full.
    let p = gridroute_store::keys::partition_of(&waiting, common::PARTITIONS).unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(gridroute_store::keys::ROUTER_GROUP)
        .arg("died")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(env.store.keys().ingest(p))
        .arg(">")
        .query_async(&mut redis)
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(limit)
        .query_async(&mut redis)
        .await
        .unwrap();
    env.spawn_router(common::fast_router("oom-router"));

    // A report is refused, never acknowledged.
    let mut incidents = env.incidents().await;
    let err = incidents
        .report_incident(env.signed(report("oom-1", "city.sanitation", lng, lat)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("full"), "{err:?}");
    // Reads still work: what was stored stays.
    let got = incidents
        .get_incident(env.signed(pb::GetIncidentRequest {
            incident_id: before.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.status, pb::IncidentStatus::Dispatched as i32);

    // Routers do not spin on failing scripts while Redis is full: no more calls than idle.
    // (Four seconds: long enough for the waiting entry to be delivered more than 3 times.)
    let start = script_calls(&mut redis).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let full = script_calls(&mut redis).await - start;
    assert!(
        full <= 3 * idle + 10,
        "{full} script calls in 4 s while full, {idle} in 2 s when idle"
    );

    // The waiting entry was delivered more often than the routers' max_deliveries (3) ...
    let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(env.store.keys().ingest(p))
        .arg(gridroute_store::keys::ROUTER_GROUP)
        .arg("-")
        .arg("+")
        .arg(10)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(
        pending.iter().any(|(_, _, _, deliveries)| *deliveries > 3),
        "{pending:?}"
    );
    // ... yet nothing went to the dead-letter stream: the failures were Redis', not the
    // entry's.
    for p in 0..common::PARTITIONS {
        let dead: u64 = redis::cmd("XLEN")
            .arg(env.store.keys().dead_letter(p))
            .query_async(&mut redis)
            .await
            .unwrap();
        assert_eq!(dead, 0, "dead letters in partition {p}");
    }

    // Memory freed: the waiting report is dispatched, and the refused request goes through.
    let _: () = redis::cmd("DEL")
        .arg("filler")
        .query_async(&mut redis)
        .await
        .unwrap();
    // Routers retry their refused reads with a jittered back-off of up to 10 s.
    let freed = std::time::Instant::now();
    loop {
        let got = incidents
            .get_incident(env.signed(pb::GetIncidentRequest {
                incident_id: waiting.clone(),
            }))
            .await
            .unwrap()
            .into_inner();
        if got.status == pb::IncidentStatus::Dispatched as i32 {
            break;
        }
        assert!(
            freed.elapsed() < Duration::from_secs(20),
            "not dispatched after memory was freed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let id = env
        .report(report("oom-1", "city.sanitation", lng, lat))
        .await;
    env.wait_status(&id, pb::IncidentStatus::Dispatched).await;
}
