//! Redis Sentinel: the real binary finds the primary through a Sentinel
//! (`redis+sentinel://…/mymaster`), keeps working through a failover to the replica (calls
//! made during the switch fail UNAVAILABLE and succeed when retried with the same request id),
//! and every accepted report is dispatched.

#![allow(clippy::unwrap_used)]

mod common;

use common::process::{Child, ServeAuth, connect};

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use gridroute_proto::v1::{self as pb, incident_service_client::IncidentServiceClient};
use gridroute_store::local::{LocalSentinel, free_port};
use tonic::transport::Channel;

fn report(i: usize, grid: &str) -> pb::ReportIncidentRequest {
    pb::ReportIncidentRequest {
        request_id: format!("sen-{i}"),
        source_system: "resident-app".into(),
        category: "city.sanitation".into(),
        location: Some(pb::Location {
            kind: Some(pb::location::Kind::GridCode(grid.to_owned())),
            ..Default::default()
        }),
        ..Default::default()
    }
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
    let child = Command::new(env!("CARGO_BIN_EXE_gridroute"))
        .args([
            "serve",
            "--redis-url",
            &sentinel.url(),
            "--grpc-addr",
            &format!("127.0.0.1:{grpc}"),
            "--http-addr",
            "off",
            "--metrics-addr",
            &format!("127.0.0.1:{metrics}"),
        ])
        .args(auth.args())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
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
