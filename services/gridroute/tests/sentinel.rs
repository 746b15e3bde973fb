//! Redis Sentinel: the real binary finds the primary through a Sentinel
//! (`redis+sentinel://…/mymaster`), keeps working through a failover to the replica (calls
//! made during the switch fail UNAVAILABLE and succeed when retried with the same request id),
//! and every accepted report is dispatched.

#![allow(clippy::unwrap_used)]

use crate::common;

use common::process::{Child, ServeAuth, connect, serve_command};

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use gridroute_proto::v1::{self as pb, incident_service_client::IncidentServiceClient};
use gridroute_store::local::{LocalSentinel, free_port};
use tonic::transport::Channel;

fn report(i: usize, grid: &str) -> pb::ReportIncidentRequest {
    common::grid_report(format!("sen-{i}"), grid)
}

/// Reports, retrying UNAVAILABLE with the same request id as a calling system would.
async fn report_until_accepted(
    auth: &ServeAuth,
    c: &mut IncidentServiceClient<Channel>,
    r: pb::ReportIncidentRequest,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match c.report_incident(auth.signed(r.clone())).await {
            Ok(a) => return a.into_inner().incident_id,
            Err(e) if e.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("report failed: {e:?}"),
        }
    }
}

async fn all_dispatched(
    auth: &ServeAuth,
    c: &mut IncidentServiceClient<Channel>,
    ids: &[String],
) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut waiting: Vec<String> = ids.to_vec();
    while !waiting.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for id in waiting {
            match c
                .get_incident(auth.signed(pb::GetIncidentRequest {
                    incident_id: id.clone(),
                }))
                .await
            {
                Ok(i) if i.get_ref().status == pb::IncidentStatus::Dispatched as i32 => {}
                _ => still.push(id),
            }
        }
        waiting = still;
        if !waiting.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    waiting.is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_working_through_a_sentinel_failover() {
    let sentinel = LocalSentinel::start().expect("primary, replica and Sentinel start");
    let first_primary = sentinel.primary.port();
    let (grpc, metrics) = (free_port().unwrap(), free_port().unwrap());
    let auth = ServeAuth::new("sentinel");
    let child = serve_command(&sentinel.url(), grpc, Some(metrics), &auth)
        .spawn()
        .expect("the binary starts");
    let _child = Child(child);
    let addr = format!("http://127.0.0.1:{grpc}");
    let mut c = IncidentServiceClient::new(connect(&addr).await);
    let grids: Vec<String> = gridroute_benches::dawukou()
        .grids
        .grids()
        .iter()
        .take(40)
        .map(|g| g.code.clone())
        .collect();
    let mut before = Vec::new();
    for (i, grid) in grids.iter().enumerate().take(20) {
        before.push(report_until_accepted(&auth, &mut c, report(i, grid)).await);
    }
    assert!(
        all_dispatched(&auth, &mut c, &before).await,
        "routed through the first primary"
    );

    assert!(
        sentinel.failover().unwrap(),
        "Sentinel accepts the failover"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while sentinel.primary_port() == Some(first_primary) {
        assert!(Instant::now() < deadline, "the replica is promoted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sentinel.primary_port(), Some(sentinel.replica.port()));

    let mut after = Vec::new();
    for (i, grid) in grids.iter().enumerate().skip(20) {
        after.push(report_until_accepted(&auth, &mut c, report(i, grid)).await);
    }
    assert!(
        all_dispatched(&auth, &mut c, &after).await,
        "routed through the new primary"
    );
}

/// The process id of the redis-server on `port`.
fn redis_pid(port: u16) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "info", "server"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .unwrap()
        .trim()
        .to_owned()
}

fn signal(pid: &str, sig: &str) {
    assert!(
        Command::new("kill")
            .args([sig, pid])
            .status()
            .unwrap()
            .success()
    );
}

/// With `--wait-replicas 1`, a report is acknowledged only once the replica has it: while the
/// replica is frozen the report is UNAVAILABLE (and the retry with the same request id finds
/// it); and when the primary is killed (SIGKILL, no clean hand-over) during a load and the
/// Sentinel promotes the replica, every acknowledged report is there and dispatched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_the_replica_keeps_every_acknowledged_report_through_a_primary_crash() {
    let sentinel = LocalSentinel::start().expect("primary, replica and Sentinel start");
    let grpc = free_port().unwrap();
    let auth = std::sync::Arc::new(ServeAuth::new("sentinel-wait"));
    let _child = Child(
        serve_command(&sentinel.url(), grpc, None, &auth)
            .args(["--wait-replicas", "1", "--wait-timeout-ms", "500"])
            .args(["--claim-min-idle-ms", "1000"])
            .spawn()
            .expect("the binary starts"),
    );
    let channel = connect(&format!("http://127.0.0.1:{grpc}")).await;
    let mut c = IncidentServiceClient::new(channel.clone());
    let grids: Vec<String> = gridroute_benches::dawukou()
        .grids
        .grids()
        .iter()
        .map(|g| g.code.clone())
        .collect();
    let first = report_until_accepted(&auth, &mut c, report(0, &grids[0])).await;

    // The replica frozen: not acknowledged.
    let replica = redis_pid(sentinel.replica.port());
    signal(&replica, "-STOP");
    let t = Instant::now();
    let err = c
        .report_incident(auth.signed(report(1, &grids[1])))
        .await
        .unwrap_err();
    signal(&replica, "-CONT");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("retry with the same request_id"),
        "{err:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    let second = report_until_accepted(&auth, &mut c, report(1, &grids[1])).await;

    // A load, and the primary killed in the middle of it.
    let primary = redis_pid(sentinel.primary.port());
    let senders: Vec<_> = (0..4)
        .map(|k| {
            let (mut c, grids) = (IncidentServiceClient::new(channel.clone()), grids.clone());
            let auth = auth.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in (2 + k..402).step_by(4) {
                    ids.push(
                        report_until_accepted(&auth, &mut c, report(i, &grids[i % grids.len()]))
                            .await,
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                ids
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(&primary, "-KILL");
    // The promoted replica has no replica of its own, so reports wait (UNAVAILABLE, retried)
    // until an operator adds one: here a fresh redis-server, as a replacement host would.
    let deadline = Instant::now() + Duration::from_secs(30);
    while sentinel.primary_port() != Some(sentinel.replica.port()) {
        assert!(Instant::now() < deadline, "the replica is promoted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let port = free_port().unwrap();
    let dir = common::process::temp_dir("sentinel-new-replica");
    let _new_replica = Child(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .args([
                "--replicaof",
                "127.0.0.1",
                &sentinel.replica.port().to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut acked = vec![first, second];
    for s in senders {
        acked.extend(s.await.unwrap());
    }
    assert_eq!(sentinel.primary_port(), Some(sentinel.replica.port()));
    assert!(
        all_dispatched(&auth, &mut c, &acked).await,
        "every acknowledged report survived the crash and was dispatched"
    );
}
