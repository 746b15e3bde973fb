//! SIGTERM under load loses nothing: two real `gridroute serve` processes share one Redis; a
//! load of reports runs against the first, which is stopped with SIGTERM in the middle; every
//! report it answered OK is dispatched in the end (by itself while draining, or by the second
//! process, which takes over what was left pending), and nothing is dead-lettered.

#![allow(clippy::unwrap_used)]

use crate::common;

use common::process::{Child, ServeAuth, bearer, connect, serve_command};

use std::{
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use gridroute_proto::v1::{self as pb, incident_service_client::IncidentServiceClient};
use gridroute_store::local::{LocalRedis, free_port};

fn serve(redis: &str, name: &str, auth: &ServeAuth) -> (Child, String) {
    let (grpc, metrics) = (free_port().unwrap(), free_port().unwrap());
    let child = serve_command(redis, grpc, Some(metrics), auth)
        .args(["--consumer-name", name, "--claim-min-idle-ms", "1000"])
        .args(["--shutdown-grace-ms", "5000"])
        .spawn()
        .expect("the binary starts");
    (Child(child), format!("http://127.0.0.1:{grpc}"))
}

fn report(i: usize, grid: &str) -> pb::ReportIncidentRequest {
    common::grid_report(format!("load-{i}"), grid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_nothing() {
    let redis = LocalRedis::start().unwrap();
    let table = gridroute_benches::dawukou();
    let grids: Vec<String> = table.grids.grids().iter().map(|g| g.code.clone()).collect();
    let auth = ServeAuth::new("shutdown");
    let token = auth.token("source_system:resident-app");
    let (mut first, addr) = serve(&redis.url(), "router-first", &auth);
    let channel = connect(&addr).await;

    // Eight clients report as fast as the first process answers.
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for c in 0..8 {
        let (channel, accepted, grids, token) = (
            channel.clone(),
            accepted.clone(),
            grids.clone(),
            token.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut client = IncidentServiceClient::new(channel);
            for i in (c..100_000).step_by(8) {
                match client
                    .report_incident(bearer(&token, report(i, &grids[i % grids.len()])))
                    .await
                {
                    Ok(r) => accepted.lock().unwrap().push(r.into_inner().incident_id),
                    Err(_) => break,
                }
            }
        }));
    }
    let t0 = Instant::now();
    while accepted.lock().unwrap().len() < 1500 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = first.0.id().to_string();
    let stopped = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    for c in clients {
        c.await.unwrap();
    }
    let status = first.0.wait().unwrap();
    assert!(status.success(), "clean exit: {status:?}");
    assert!(
        stopped.elapsed() < Duration::from_secs(8),
        "within the grace period"
    );
    let accepted = accepted.lock().unwrap().clone();
    eprintln!(
        "load {:?}, {} accepted, stop {:?}",
        t0.elapsed(),
        accepted.len(),
        stopped.elapsed()
    );

    // A second process takes over whatever the first left pending or unread.
    let (_second, addr) = serve(&redis.url(), "router-second", &auth);
    let _ = connect(&addr).await;
    let mut r = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut waiting = accepted.clone();
    while !waiting.is_empty() && Instant::now() < deadline {
        let mut pipe = redis::pipe();
        for id in &waiting {
            let p = gridroute_store::keys::partition_of(id, 4).unwrap();
            pipe.hget(format!("gr:{{p{p}}}:inc:{id}"), "status");
        }
        let statuses: Vec<Option<String>> = pipe.query_async(&mut r).await.unwrap();
        waiting = waiting
            .into_iter()
            .zip(statuses)
            .filter(|(_, s)| s.as_deref() != Some("dispatched"))
            .map(|(id, _)| id)
            .collect();
        if !waiting.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    eprintln!("verified after {:?}", t0.elapsed());
    assert!(
        waiting.is_empty(),
        "{} of {} accepted reports never dispatched",
        waiting.len(),
        accepted.len()
    );
    for p in 0..4 {
        let dead: u64 = redis::cmd("XLEN")
            .arg(format!("gr:{{p{p}}}:dlq"))
            .query_async(&mut r)
            .await
            .unwrap();
        assert_eq!(dead, 0, "nothing dead-lettered");
    }
}
