//! Redis Cluster: the real binary on a private three-primary cluster (`redis+cluster://`). The
//! partitions spread over the nodes, so this covers every path that touches several
//! partitions: batch reports, routing, duplicate search, lists, stats, subscriptions, the
//! events stream, lifecycle actions and timers.

#![allow(clippy::unwrap_used)]

use crate::common;

use common::process::{Child, ServeAuth, connect, serve_command};

use std::time::Duration;

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
    let child = serve_command(&cluster.url(), grpc, Some(metrics), &auth)
        .arg("--tables")
        .arg(&dir)
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

    // The routers trimmed what they acknowledged (`trim_acked.lua` on each partition's node,
    // once its reads found nothing new), and no trim failed. The counter's sample appears once a
    // trim succeeded (its description alone is a comment line).
    let trimmed = |text: &str| {
        text.lines()
            .any(|l| l.starts_with("gridroute_ingest_trimmed_entries_total"))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut text = common::process::scrape(metrics);
    while !trimmed(&text) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        text = common::process::scrape(metrics);
    }
    assert!(trimmed(&text), "{text}");
    assert_eq!(
        common::metric_value(&text, "gridroute_redis_errors_total{op=\"trim_acked\"}"),
        0.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The ports of a local cluster's nodes, from its URL.
fn node_ports(cluster: &LocalCluster) -> Vec<u16> {
    let url = cluster.url();
    let hosts = url
        .trim_start_matches("redis+cluster://")
        .trim_end_matches('/');
    hosts
        .split(',')
        .map(|h| h.rsplit(':').next().unwrap().parse().unwrap())
        .collect()
}

fn node(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_connection()
        .unwrap()
}

/// Moves a hash slot and its keys from one node to another, as `redis-cli --cluster reshard`
/// does: importing/migrating, MIGRATE of every key, then the new owner announced to all.
fn move_slot(ports: &[u16], slot: u16, from: u16, to: u16) {
    let id = |port: u16| -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut node(port))
            .unwrap()
    };
    let (from_id, to_id) = (id(from), id(to));
    let _: () = redis::cmd("CLUSTER")
        .arg(&["SETSLOT", &slot.to_string(), "IMPORTING", &from_id])
        .query(&mut node(to))
        .unwrap();
    let _: () = redis::cmd("CLUSTER")
        .arg(&["SETSLOT", &slot.to_string(), "MIGRATING", &to_id])
        .query(&mut node(from))
        .unwrap();
    let keys: Vec<String> = redis::cmd("CLUSTER")
        .arg(&["GETKEYSINSLOT", &slot.to_string(), "1000"])
        .query(&mut node(from))
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("MIGRATE")
            .arg(&["127.0.0.1", &to.to_string(), "", "0", "5000", "KEYS"])
            .arg(&keys)
            .query(&mut node(from))
            .unwrap();
    }
    for &p in ports {
        let _: () = redis::cmd("CLUSTER")
            .arg(&["SETSLOT", &slot.to_string(), "NODE", &to_id])
            .query(&mut node(p))
            .unwrap();
    }
}

/// Subscribe and WatchIncidents block on every partition of a cluster at once (one tail per
/// partition, on the node that holds its slot), and a tail follows its slot when the slot moves
/// to another node: nothing is skipped and nothing repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_readers_block_on_every_partition_and_follow_moved_slots() {
    use gridroute_store::{Store, subscribe::Cursor};
    use prost::Message;

    let cluster = LocalCluster::start().expect("a local cluster forms");
    let ports = node_ports(&cluster);
    let partitions = 6;
    let store = Store::connect(&cluster.url(), "tails", partitions)
        .await
        .unwrap();
    let keys: Vec<String> = (0..partitions)
        .map(|p| store.keys().dispatch(p, "water"))
        .collect();
    // Blocks far longer than the test waits: entries must wake the reader, not a poll.
    let mut reader = store
        .dispatch_reader(
            "water",
            Cursor::earliest(partitions),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let client = redis::cluster::ClusterClient::new(
        ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let writer = client.get_async_connection().await.unwrap();
    let add = |key: String, id: String| {
        let mut w = writer.clone();
        async move {
            let d = pb::Dispatch {
                incident_id: id,
                ..Default::default()
            };
            let _: String = redis::cmd("XADD")
                .arg(key)
                .arg("*")
                .arg("d")
                .arg(d.encode_to_vec())
                .query_async(&mut w)
                .await
                .unwrap();
        }
    };
    let mut read = async |want: usize| -> Vec<pb::Dispatch> {
        let mut got = Vec::new();
        while got.len() < want {
            let batch =
                tokio::time::timeout(Duration::from_secs(10), reader.next_batch(100, |_| false))
                    .await
                    .expect("an entry wakes the reader")
                    .unwrap();
            got.extend(batch);
        }
        got
    };

    // Every partition, after the reader started waiting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (p, k) in keys.iter().enumerate() {
        add(k.clone(), format!("a{p}")).await;
    }
    let first = read(keys.len()).await;
    let mut ids: Vec<&str> = first.iter().map(|d| d.incident_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["a0", "a1", "a2", "a3", "a4", "a5"]);

    // Partition 0's slot moves to another node while its tail is blocked there.
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(&keys[0])
        .query(&mut node(ports[0]))
        .unwrap();
    let owner = ports
        .iter()
        .copied()
        .find(|&p| {
            let n: i64 = redis::cmd("CLUSTER")
                .arg(&["COUNTKEYSINSLOT", &slot.to_string()])
                .query(&mut node(p))
                .unwrap();
            n > 0
        })
        .expect("the node holding partition 0's stream");
    let to = ports.iter().copied().find(|&p| p != owner).unwrap();
    move_slot(&ports, slot, owner, to);
    add(keys[0].clone(), "b0".into()).await;
    add(keys[1].clone(), "b1".into()).await;
    let after = read(2).await;
    let mut ids: Vec<&str> = after.iter().map(|d| d.incident_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["b0", "b1"], "nothing repeated, nothing skipped");

    // The cursor of the last entry resumes after everything read, on the new owner too.
    let cursor = Cursor::parse(&after.last().unwrap().cursor, partitions).unwrap();
    let mut resumed = store
        .dispatch_reader("water", cursor, Duration::from_millis(300))
        .await
        .unwrap();
    add(keys[0].clone(), "c0".into()).await;
    let mut rest = Vec::new();
    for _ in 0..20 {
        rest.extend(resumed.next_batch(100, |_| false).await.unwrap());
        if !rest.is_empty() {
            break;
        }
    }
    let ids: Vec<&str> = rest.iter().map(|d| d.incident_id.as_str()).collect();
    assert_eq!(ids, ["c0"]);
}
