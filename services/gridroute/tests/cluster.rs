//! Redis Cluster: the real binary on a private three-primary cluster (`redis+cluster://`). The
//! partitions spread over the nodes, so this covers every path that touches several
//! partitions: batch reports, routing, duplicate search, lists, stats, subscriptions, the
//! events stream, lifecycle actions and timers.

#![allow(clippy::unwrap_used)]

mod common;

use common::process::{Child, ServeAuth, connect};

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use gridroute_proto::v1::{
    self as pb, dispatch_service_client::DispatchServiceClient,
    incident_service_client::IncidentServiceClient,
    supervision_service_client::SupervisionServiceClient,
};
use gridroute_store::local::{LocalCluster, free_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_on_redis_cluster() {
    let cluster = LocalCluster::start().expect("a local cluster forms");
    // The sample tables with duplicate detection on.
    let dir = std::env::temp_dir().join(format!("gridroute-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("grids.geojson"), gridroute_benches::DAWUKOU_GRIDS).unwrap();
    std::fs::write(
        dir.join("rules.yaml"),
        gridroute_benches::DAWUKOU_RULES
            .replace(
                "# duplicates:\n#   - {category: city.vehicle.abandoned, within_m: 50, window: 24h}",
                "duplicates:\n  - {category: city.vehicle.abandoned, within_m: 50, window: 24h}",
            )
            .replace(
                "sla_policies:\n",
                "sla_policies:\n  quick: {accept: 1s, resolve: 1h}\n",
            )
            .replace(
                "rules:\n",
                "rules:\n  - id: quick\n    category: test.quick\n    department: water-affairs\n    sla: quick\n",
            ),
    )
    .unwrap();
    let (grpc, metrics) = (free_port().unwrap(), free_port().unwrap());
    let auth = ServeAuth::new("cluster");
    let child = Command::new(env!("CARGO_BIN_EXE_gridroute"))
        .args([
            "serve",
            "--redis-url",
            &cluster.url(),
            "--tables",
            &dir.display().to_string(),
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
    let channel = connect(&addr).await;
    let mut incidents = IncidentServiceClient::new(channel.clone());
    let mut watch = incidents
        .watch_incidents(auth.signed(pb::WatchIncidentsRequest {
            start: pb::WatchStart::Earliest as i32,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let mut sub = DispatchServiceClient::new(channel.clone())
        .subscribe(auth.signed(pb::SubscribeRequest {
            department_id: "urban-management".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();

    // A batch over many grids: its reports land in every partition, on every node.
    let table = gridroute_benches::dawukou();
    let grids: Vec<String> = table
        .grids
        .grids()
        .iter()
        .take(24)
        .map(|g| g.code.clone())
        .collect();
    let items: Vec<pb::ReportIncidentRequest> = grids
        .iter()
        .enumerate()
        .map(|(i, g)| pb::ReportIncidentRequest {
            request_id: format!("cl-{i}"),
            source_system: "resident-app".into(),
            category: "city.sanitation".into(),
            location: Some(pb::Location {
                kind: Some(pb::location::Kind::GridCode(g.clone())),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    let reply = incidents
        .report_incidents(auth.req("source_system:resident-app", tokio_stream::iter(items)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.accepted_count, 24);
    let ids: Vec<String> = reply
        .results
        .iter()
        .map(|r| r.incident_id.clone())
        .collect();
    let partitions: std::collections::BTreeSet<&str> =
        ids.iter().filter_map(|id| id.rsplit('-').next()).collect();
    assert!(
        partitions.len() >= 3,
        "spread over partitions: {partitions:?}"
    );
    let mut received = std::collections::BTreeSet::new();
    while received.len() < ids.len() {
        let d = tokio::time::timeout(Duration::from_secs(15), sub.message())
            .await
            .expect("dispatches arrive from every node")
            .unwrap()
            .unwrap();
        received.insert(d.incident_id);
    }

    // Lifecycle actions and lists.
    let mut d = DispatchServiceClient::new(channel.clone());
    d.accept_incident(auth.signed(pb::AcceptIncidentRequest {
        incident_id: ids[0].clone(),
        department_id: "urban-management".into(),
        note: "on it".into(),
        request_id: "cl-a".into(),
    }))
    .await
    .unwrap();
    let inc = d
        .resolve_incident(auth.signed(pb::ResolveIncidentRequest {
            incident_id: ids[0].clone(),
            department_id: "urban-management".into(),
            note: "swept".into(),
            request_id: "cl-r".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(inc.status, pb::IncidentStatus::Resolved as i32);
    let list = incidents
        .list_incidents(auth.signed(pb::ListIncidentsRequest {
            page_size: 100,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.incidents.len(), 24, "listed from every partition");
    let stats = SupervisionServiceClient::new(channel.clone())
        .get_stats(auth.signed(pb::GetStatsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.incident_count, 24);
    assert_eq!(stats.resolved_count, 1);

    // Duplicate search across the nodes' geo sets.
    let (lng, lat) = {
        use geo::InteriorPoint;
        let g = table
            .grids
            .grids()
            .iter()
            .find(|g| {
                !table
                    .regions
                    .node(table.regions.path(g.region)[1])
                    .name
                    .ends_with('镇')
            })
            .unwrap();
        let p = g.shape.interior_point().unwrap();
        (p.x(), p.y())
    };
    let car = |rid: &str, dx: f64| pb::ReportIncidentRequest {
        request_id: rid.into(),
        source_system: "resident-app".into(),
        category: "city.vehicle.abandoned".into(),
        location: Some(pb::Location {
            kind: Some(pb::location::Kind::Point(pb::LatLng {
                latitude: lat,
                longitude: lng + dx,
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let first = incidents
        .report_incident(auth.signed(car("car-1", 0.0)))
        .await
        .unwrap()
        .into_inner()
        .incident_id;
    let mut status = 0;
    for _ in 0..200 {
        status = incidents
            .get_incident(auth.signed(pb::GetIncidentRequest {
                incident_id: first.clone(),
            }))
            .await
            .unwrap()
            .into_inner()
            .status;
        if status == pb::IncidentStatus::Dispatched as i32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(status, pb::IncidentStatus::Dispatched as i32);
    // Several duplicates: their partitions differ from the first one's for most of them.
    for i in 0..4 {
        let dup = incidents
            .report_incident(auth.signed(car(&format!("car-dup-{i}"), 0.00005)))
            .await
            .unwrap()
            .into_inner()
            .incident_id;
        let mut merged = None;
        for _ in 0..200 {
            let inc = incidents
                .get_incident(auth.signed(pb::GetIncidentRequest {
                    incident_id: dup.clone(),
                }))
                .await
                .unwrap()
                .into_inner();
            if inc.status == pb::IncidentStatus::Merged as i32 {
                merged = Some(inc.merged_into);
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(
            merged.as_deref(),
            Some(first.as_str()),
            "duplicate {i} merged"
        );
    }

    // A timer fires on whichever node holds its partition.
    let mut water = DispatchServiceClient::new(channel.clone())
        .subscribe(auth.signed(pb::SubscribeRequest {
            department_id: "water-affairs".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let quick = incidents
        .report_incident(auth.signed(pb::ReportIncidentRequest {
            request_id: "quick-1".into(),
            source_system: "resident-app".into(),
            category: "test.quick".into(),
            location: Some(pb::Location {
                kind: Some(pb::location::Kind::GridCode(grids[0].clone())),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .incident_id;
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), water.message())
            .await
            .expect("the accept deadline passes and is notified")
            .unwrap()
            .unwrap();
        if n.kind == pb::DispatchKind::AcceptOverdue as i32 {
            assert_eq!(n.incident_id, quick);
            break;
        }
    }

    // The events stream, read partition by partition.
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    while kinds.get("dispatched").copied().unwrap_or(0) < 24 {
        let e = tokio::time::timeout(Duration::from_secs(10), watch.message())
            .await
            .expect("events arrive")
            .unwrap()
            .unwrap();
        *kinds.entry(e.event.unwrap().kind).or_default() += 1;
    }
    assert!(kinds.get("reported").copied().unwrap_or(0) >= 24);
    let _ = std::fs::remove_dir_all(&dir);
}
