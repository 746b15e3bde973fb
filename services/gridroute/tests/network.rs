//! Network faults between gridroute and Redis, injected by a TCP proxy: latency, a black hole of
//! a few seconds, connections reset mid-pipeline, half-open connections. Nothing acknowledged is
//! lost, nothing is done twice, readiness is NOT_SERVING while Redis is unreachable and SERVING
//! after, and no call outlives its deadline.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{
    process::{Child, ServeAuth, bearer, connect, serve_command},
    proxy::{FaultProxy, Mode},
};
use gridroute_proto::v1::{self as pb, incident_service_client::IncidentServiceClient};
use gridroute_store::local::{LocalRedis, free_port};
use prost::Message;
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// The deadline every report call carries.
const DEADLINE: Duration = Duration::from_secs(2);

fn report(i: usize, grid: &str) -> pb::ReportIncidentRequest {
    common::grid_report(format!("net-{i}"), grid)
}

/// A client that reports `range` one after another, retrying each with the same request id
/// until it is acknowledged; records every incident id and the longest call.
async fn send(
    channel: Channel,
    token: String,
    grids: Arc<Vec<String>>,
    range: std::ops::Range<usize>,
    acked: Arc<Mutex<HashMap<usize, HashSet<String>>>>,
    longest: Arc<Mutex<Duration>>,
) {
    let mut client = IncidentServiceClient::new(channel);
    for i in range {
        loop {
            let mut req = bearer(&token, report(i, &grids[i % grids.len()]));
            req.set_timeout(DEADLINE);
            let t = Instant::now();
            // The outer limit only keeps a broken test from hanging; the assertion below is
            // on the measured time.
            let r = tokio::time::timeout(DEADLINE * 5, client.report_incident(req)).await;
            let took = t.elapsed();
            {
                let mut l = longest.lock().unwrap();
                *l = (*l).max(took);
            }
            if let Ok(Ok(r)) = r {
                acked
                    .lock()
                    .unwrap()
                    .entry(i)
                    .or_default()
                    .insert(r.into_inner().incident_id);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn readiness(channel: &Channel) -> Option<ServingStatus> {
    let mut req = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    req.set_timeout(Duration::from_secs(1));
    let r = HealthClient::new(channel.clone()).check(req).await.ok()?;
    ServingStatus::try_from(r.into_inner().status).ok()
}

/// Polls readiness until it is `want`, for at most `within`; returns whether it was seen.
async fn becomes(channel: &Channel, want: ServingStatus, within: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < within {
        if readiness(channel).await == Some(want) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_faults_lose_nothing_double_nothing_and_never_hang() {
    let redis = LocalRedis::start().unwrap();
    let proxy = FaultProxy::start(redis.port()).await;
    let auth = ServeAuth::new("network");
    let grpc = free_port().unwrap();
    let _gridroute = Child(
        serve_command(&proxy.url(), grpc, None, &auth)
            .args(["--claim-min-idle-ms", "1000"])
            .spawn()
            .unwrap(),
    );
    let channel = connect(&format!("http://127.0.0.1:{grpc}")).await;
    assert!(becomes(&channel, ServingStatus::Serving, Duration::from_secs(10)).await);
    let table = gridroute_benches::dawukou();
    let grids: Arc<Vec<String>> =
        Arc::new(table.grids.grids().iter().map(|g| g.code.clone()).collect());
    let token = auth.token("source_system:resident-app");
    let acked: Arc<Mutex<HashMap<usize, HashSet<String>>>> = Arc::default();
    let longest = Arc::new(Mutex::new(Duration::ZERO));
    let phase = |range: std::ops::Range<usize>| {
        let per = range.len() / 4;
        (0..4)
            .map(|c| {
                let start = range.start + c * per;
                let end = if c == 3 { range.end } else { start + per };
                tokio::spawn(send(
                    channel.clone(),
                    token.clone(),
                    grids.clone(),
                    start..end,
                    acked.clone(),
                    longest.clone(),
                ))
            })
            .collect::<Vec<_>>()
    };

    // Latency: 20 ms each way on every exchange with Redis.
    proxy.set(Mode::Latency(Duration::from_millis(20)));
    for t in phase(0..100) {
        t.await.unwrap();
    }
    proxy.set(Mode::Pass);

    // A black hole of 6 s while clients keep reporting: readiness goes NOT_SERVING, calls end
    // by their deadline, and all is well after.
    let senders = phase(100..400);
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.set(Mode::BlackHole);
    assert!(
        becomes(&channel, ServingStatus::NotServing, Duration::from_secs(8)).await,
        "readiness NOT_SERVING while Redis is unreachable"
    );
    proxy.set(Mode::Pass);
    assert!(
        becomes(&channel, ServingStatus::Serving, Duration::from_secs(15)).await,
        "readiness SERVING again after"
    );
    for t in senders {
        t.await.unwrap();
    }

    // Connections reset mid-pipeline, three times during a burst.
    let senders = phase(400..1000);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        proxy.reset_all();
    }
    for t in senders {
        t.await.unwrap();
    }

    // Half-open for 4 s: requests reach Redis, answers never come back.
    let senders = phase(1000..1300);
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.set(Mode::HalfOpen);
    tokio::time::sleep(Duration::from_secs(4)).await;
    proxy.set(Mode::Pass);
    for t in senders {
        t.await.unwrap();
    }

    // No call outlived its deadline by more than the time to answer it.
    let longest = *longest.lock().unwrap();
    assert!(
        longest < DEADLINE + Duration::from_millis(500),
        "a call took {longest:?} with a {DEADLINE:?} deadline"
    );

    // Every request id acknowledged, always with the same incident id.
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), 1300);
    let doubled: Vec<_> = acked.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(
        doubled.is_empty(),
        "one request, two incidents: {doubled:?}"
    );
    let ids: Vec<String> = acked.values().flatten().cloned().collect();

    // Every acknowledged incident dispatched, exactly once, on its department's stream.
    let mut r = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut news: HashMap<String, usize> = HashMap::new();
    loop {
        news.clear();
        for p in 0..4u16 {
            for d in &table.departments {
                let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                    .arg(format!("gr:{{p{p}}}:dispatch:{}", d.id))
                    .arg("-")
                    .arg("+")
                    .query_async(&mut r)
                    .await
                    .unwrap();
                for e in entries.ids {
                    let Some(redis::Value::BulkString(b)) = e.map.get("d") else {
                        continue;
                    };
                    let m = pb::Dispatch::decode(b.as_slice()).unwrap();
                    if m.role == pb::DispatchRole::Primary as i32 && matches!(m.kind, 0 | 1) {
                        *news.entry(m.incident_id).or_default() += 1;
                    }
                }
            }
        }
        if ids.iter().all(|id| news.contains_key(id)) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let lost = ids.iter().filter(|id| !news.contains_key(*id)).count();
    let twice = news.values().filter(|&&n| n > 1).count();
    eprintln!(
        "network faults: {} acknowledged, longest call {longest:?}, lost {lost}, dispatched twice {twice}",
        ids.len()
    );
    assert_eq!(lost, 0, "acknowledged but never dispatched");
    assert_eq!(twice, 0, "dispatched twice");
}
