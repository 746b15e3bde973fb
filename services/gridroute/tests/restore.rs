//! The restore drill of docs/OPERATIONS.md ("Backup and restore"): back up a running Redis with
//! `redis-cli --rdb`, lose the server and its files, restore the backup on the same address,
//! and find every report acknowledged before the backup, while gridroute carries on by itself.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use common::process::{Child, ServeAuth, connect, redis_server, serve_command};
use gridroute_proto::v1::{self as pb, incident_service_client::IncidentServiceClient};
use gridroute_store::local::free_port;

fn report(i: usize, grid: &str) -> pb::ReportIncidentRequest {
    common::grid_report(format!("drill-{i}"), grid)
}

async fn dispatched(
    auth: &ServeAuth,
    c: &mut IncidentServiceClient<tonic::transport::Channel>,
    ids: &[String],
) -> usize {
    let mut n = 0;
    for id in ids {
        if let Ok(i) = c
            .get_incident(auth.signed(pb::GetIncidentRequest {
                incident_id: id.clone(),
            }))
            .await
            && i.get_ref().status == pb::IncidentStatus::Dispatched as i32
        {
            n += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_lose_redis_restore_and_nothing_acknowledged_before_the_backup_is_missing() {
    let port = free_port().unwrap();
    let data = common::process::temp_dir("drill-data");
    let aof = [
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ];
    let mut redis = Some(redis_server(port, &data, &aof));
    let auth = ServeAuth::new("drill");
    let grpc = free_port().unwrap();
    let _gridroute = Child(
        serve_command(&format!("redis://127.0.0.1:{port}"), grpc, None, &auth)
            .spawn()
            .unwrap(),
    );
    let mut c = IncidentServiceClient::new(connect(&format!("http://127.0.0.1:{grpc}")).await);
    let grids: Vec<String> = gridroute_benches::dawukou()
        .grids
        .grids()
        .iter()
        .map(|g| g.code.clone())
        .collect();
    let mut before = Vec::new();
    for i in 0..200 {
        let r = c
            .report_incident(auth.signed(report(i, &grids[i % grids.len()])))
            .await
            .unwrap();
        before.push(r.into_inner().incident_id);
    }

    // Back up: an RDB snapshot of the running server, fetched over the network.
    let backup = common::process::temp_dir("drill-backup").join("gridroute.rdb");
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "--rdb"])
        .arg(&backup)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Lose Redis: the process and its files.
    drop(redis.take());
    std::fs::remove_dir_all(&data).unwrap();

    // Restore: the snapshot as the new data directory's dump, AOF switched on again after the
    // load (CONFIG SET rewrites it from memory).
    let restored = common::process::temp_dir("drill-restored");
    std::fs::copy(&backup, restored.join("dump.rdb")).unwrap();
    redis = Some(redis_server(
        port,
        &restored,
        &["--save", "", "--appendonly", "no"],
    ));
    let out = Command::new("redis-cli")
        .args([
            "-p",
            &port.to_string(),
            "config",
            "set",
            "appendonly",
            "yes",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));

    // Everything acknowledged before the backup is there and dispatched; gridroute goes on.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut found = 0;
    while Instant::now() < deadline {
        found = dispatched(&auth, &mut c, &before).await;
        if found == before.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(found, before.len(), "acknowledged before the backup");
    let mut after = None;
    while Instant::now() < deadline && after.is_none() {
        after = c
            .report_incident(auth.signed(report(1000, &grids[0])))
            .await
            .ok()
            .map(|r| r.into_inner().incident_id);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = after.expect("reports accepted after the restore");
    while Instant::now() < deadline
        && dispatched(&auth, &mut c, std::slice::from_ref(&after)).await == 0
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        dispatched(&auth, &mut c, &[after]).await,
        1,
        "routed after the restore"
    );
    drop(redis);
}
