//! Clock skew: an API process whose clock is 30 s behind and a router process whose clock is
//! 30 s ahead (libfaketime) change no deadline, no timer firing and no order. Every time that
//! matters is the Redis server's (`TIME`), never a replica's.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::{process::Command, time::Duration};

use common::process::{Child, ServeAuth, connect, serve_command};
use gridroute_benches::{DAWUKOU_GRIDS, DAWUKOU_RULES};
use gridroute_proto::v1::{
    self as pb, dispatch_service_client::DispatchServiceClient,
    incident_service_client::IncidentServiceClient,
};
use gridroute_store::local::{LocalRedis, free_port};

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// `cmd` with its wall clock shifted by `offset` (e.g. `+30s`); monotonic time is left alone.
fn skewed(cmd: &mut Command, offset: &str) {
    cmd.env("LD_PRELOAD", LIBFAKETIME)
        .env("FAKETIME", offset)
        .env("DONT_FAKE_MONOTONIC", "1");
}

fn serve(
    redis: &str,
    role: &str,
    offset: &str,
    tables: &std::path::Path,
    auth: &ServeAuth,
) -> (Child, String) {
    let grpc = free_port().unwrap();
    let mut cmd = serve_command(redis, grpc, None, auth);
    cmd.args(["--role", role, "--timer-poll-ms", "50"])
        // Tokens are minted on the test's clock; the API's is 30 s behind.
        .args(["--token-leeway-secs", "60"])
        .arg("--tables")
        .arg(tables);
    skewed(&mut cmd, offset);
    (
        Child(cmd.spawn().expect("the binary starts")),
        format!("http://127.0.0.1:{grpc}"),
    )
}

async fn redis_ms(redis: &mut redis::aio::MultiplexedConnection) -> i64 {
    let (s, us): (i64, i64) = redis::cmd("TIME").query_async(redis).await.unwrap();
    s * 1000 + us / 1000
}

fn ms(t: &Option<prost_types::Timestamp>) -> i64 {
    let t = t.as_ref().unwrap();
    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skewed_replica_clocks_change_no_deadline_timer_or_order() {
    // libfaketime works here: a shifted `date` is 30 s ahead.
    let mut date = Command::new("date");
    date.arg("+%s");
    skewed(&mut date, "+30s");
    let shifted: i64 = String::from_utf8(date.output().unwrap().stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (shifted - real - 30).abs() <= 2,
        "libfaketime: {shifted} vs {real}"
    );

    // A table whose standard policy counts wall-clock seconds, so that its accept timer fires
    // during the test.
    let dir = common::process::temp_dir("skew");
    std::fs::write(dir.join("grids.geojson"), DAWUKOU_GRIDS).unwrap();
    let rules = DAWUKOU_RULES.replace(
        "standard: {accept: 4wh, resolve: 1.5wd}",
        "standard: {accept: 3s, resolve: 1h}",
    );
    assert_ne!(rules, DAWUKOU_RULES);
    std::fs::write(dir.join("rules.yaml"), rules).unwrap();

    // ... and on the gridroute binary: ten years ahead, it judges the calendar from 2036.
    let mut validate = Command::new(env!("CARGO_BIN_EXE_gridroute"));
    validate.args(["tables", "validate"]).arg(&dir);
    skewed(&mut validate, "+3650d");
    let out = validate.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("for a case dispatched on 2036-"), "{err}");

    let redis = LocalRedis::start().unwrap();
    let auth = ServeAuth::new("skew");
    let (_api, addr) = serve(&redis.url(), "api", "-30s", &dir, &auth);
    let (_router, _) = serve(&redis.url(), "router", "+30s", &dir, &auth);
    let channel = connect(&addr).await;
    let mut r = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();

    let table = gridroute_benches::dawukou();
    let (_, _, lng, lat) = common::grid_point(&table, false);
    let mut incidents = IncidentServiceClient::new(channel.clone());
    let before = redis_ms(&mut r).await;
    let id = incidents
        .report_incident(auth.signed(common::report("skew-1", "city.sanitation", lng, lat)))
        .await
        .unwrap()
        .into_inner()
        .incident_id;
    let mut inc = pb::Incident::default();
    for _ in 0..200 {
        inc = incidents
            .get_incident(auth.signed(pb::GetIncidentRequest {
                incident_id: id.clone(),
            }))
            .await
            .unwrap()
            .into_inner();
        if inc.status == pb::IncidentStatus::Dispatched as i32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(inc.status, pb::IncidentStatus::Dispatched as i32);
    let after = redis_ms(&mut r).await;

    // Report and dispatch times are Redis' (not 30 s off either way), in order.
    let (reported, dispatched) = (ms(&inc.reported_time), ms(&inc.dispatched_time));
    assert!(
        before - 5 <= reported && reported <= dispatched && dispatched <= after + 5,
        "reported {reported}, dispatched {dispatched}, redis {before}..{after}"
    );
    let times: Vec<i64> = inc.timeline.iter().map(|e| ms(&e.time)).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    // The deadline counts from Redis' dispatch time: exactly the policy's 3 s.
    assert_eq!(ms(&inc.accept_deadline) - dispatched, 3000);

    // The accept timer fires at its deadline by Redis' clock: not 30 s early (the router's
    // clock), not 30 s late.
    let mut dispatches = DispatchServiceClient::new(channel)
        .subscribe(auth.signed(pb::SubscribeRequest {
            department_id: inc.department_id.clone(),
            start: pb::SubscribeStart::Earliest as i32,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    loop {
        let d = tokio::time::timeout(Duration::from_secs(15), dispatches.message())
            .await
            .expect("the accept timer fired")
            .unwrap()
            .unwrap();
        if d.incident_id == id && d.kind == pb::DispatchKind::AcceptOverdue as i32 {
            break;
        }
    }
    let inc = incidents
        .get_incident(auth.signed(pb::GetIncidentRequest {
            incident_id: id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    let fired = inc
        .timeline
        .iter()
        .find(|e| e.r#type == pb::TimelineKind::AcceptOverdue as i32)
        .map(|e| ms(&e.time))
        .unwrap();
    let deadline = ms(&inc.accept_deadline);
    assert!(
        deadline <= fired && fired < deadline + 2000,
        "fired at {fired}, deadline {deadline}"
    );
}
