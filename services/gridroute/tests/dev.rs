//! `gridroute dev` as a user runs it: the real binary, its own redis-server, gRPC health and
//! reflection, a report reaching a subscriber, /metrics moving, and a clean SIGTERM.

#![allow(clippy::unwrap_used)]

use crate::common;

use common::{
    metric_value,
    process::{
        Child, bearer, connect, dev_command, dev_tokens, scrape, start_dev, temp_dir, wait_serving,
    },
};

use std::{process::Command, time::Duration};

use gridroute_proto::v1::{
    self as pb, dispatch_service_client::DispatchServiceClient,
    incident_service_client::IncidentServiceClient,
};
use gridroute_store::local::free_port;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_serves_health_reflection_reports_and_metrics() {
    let (grpc, metrics) = (free_port().unwrap(), free_port().unwrap());
    let dev_dir = temp_dir("dev");
    let mut child = start_dev(grpc, metrics, &dev_dir, &[]);
    let addr = format!("http://127.0.0.1:{grpc}");
    let channel = connect(&addr).await;
    wait_serving(channel.clone()).await;

    // Reflection, v1 and v1alpha, lists the three services.
    {
        use tonic_reflection::pb::v1::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = ServerReflectionClient::new(channel.clone())
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            stream.message().await.unwrap().unwrap().message_response
        else {
            panic!("no list")
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for s in [
            "gridroute.v1.IncidentService",
            "gridroute.v1.DispatchService",
            "gridroute.v1.RoutingService",
            "grpc.health.v1.Health",
        ] {
            assert!(names.iter().any(|n| n == s), "{s} missing from {names:?}");
        }
    }
    {
        use tonic_reflection::pb::v1alpha::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "gridroute.v1.IncidentService".into(),
            )),
        };
        let mut stream = ServerReflectionClient::new(channel.clone())
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .unwrap()
            .into_inner();
        let resp = stream.message().await.unwrap().unwrap().message_response;
        assert!(
            matches!(resp, Some(MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty()),
            "{resp:?}"
        );
    }

    // Authentication is on: without a token nothing but health and reflection answers; the
    // tokens dev wrote for the sample's principals work.
    let tokens = dev_tokens(&dev_dir);
    for who in [
        "department:traffic-police",
        "command_centre:command-centre",
        "source_system:resident-app",
        "table_admin:ops",
        "auditor:inspector",
    ] {
        assert!(tokens.contains_key(who), "{who} in {:?}", tokens.keys());
    }
    assert!(tokens.keys().any(|k| k.starts_with("grid_worker:")));
    let anonymous = IncidentServiceClient::new(channel.clone())
        .get_incident(pb::GetIncidentRequest {
            incident_id: "01JDXK3M4P5Q6R7S8T9V0W1X2Y-1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);

    // A report inside Dawukou reaches the matching department's subscriber.
    let police = &tokens["department:traffic-police"];
    let mut sub = DispatchServiceClient::new(channel.clone())
        .subscribe(bearer(police, pb::SubscribeRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let report = pb::ReportIncidentRequest {
        request_id: "dev-1".into(),
        source_system: "resident-app".into(),
        category: "city.vehicle.illegal_parking".into(),
        location: Some(pb::Location {
            kind: Some(pb::location::Kind::Point(pb::LatLng {
                latitude: 39.0203,
                longitude: 106.3852,
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = IncidentServiceClient::new(channel.clone())
        .report_incident(bearer(&tokens["source_system:resident-app"], report))
        .await
        .unwrap()
        .into_inner()
        .incident_id;
    let d = tokio::time::timeout(Duration::from_secs(10), sub.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(d.incident_id, id);
    assert_eq!(d.decision.unwrap().region_path.len(), 4);
    DispatchServiceClient::new(channel.clone())
        .accept_incident(bearer(
            police,
            pb::AcceptIncidentRequest {
                incident_id: id.clone(),
                note: "on our way".into(),
                request_id: "dev-accept-1".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();

    // The key series moved.
    let mut text = String::new();
    for _ in 0..100 {
        text = scrape(metrics);
        if metric_value(&text, "gridroute_ingest_lag_entries") == 0.0
            && text.contains("gridroute_ingest_lag_entries")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        metric_value(&text, "gridroute_reports_total{outcome=\"accepted\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric_value(&text, "gridroute_routed_total{outcome=\"matched\"}"),
        1.0
    );
    assert_eq!(
        metric_value(&text, "gridroute_dispatches_total{outcome=\"dispatched\"}"),
        1.0
    );
    assert_eq!(
        metric_value(&text, "gridroute_route_decision_seconds_count"),
        1.0
    );
    assert!(
        metric_value(
            &text,
            "gridroute_rpc_requests_total{method=\"ReportIncident\",code=\"OK\"}"
        ) >= 1.0
    );
    assert!(text.contains("gridroute_table_info{version=\"dawukou-"));
    // The built-in calendar covers 2024-2026: its horizon is midnight after 31 December 2026,
    // Beijing time.
    assert_eq!(
        metric_value(&text, "gridroute_calendar_covered_until_timestamp_seconds"),
        1_798_732_800.0
    );
    assert_eq!(
        metric_value(
            &text,
            "gridroute_transitions_total{action=\"accept\",status=\"accepted\"}"
        ),
        1.0
    );

    // SIGTERM: a clean exit within the grace period.
    let pid = child.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut exited = None;
    for _ in 0..200 {
        if let Some(s) = child.0.try_wait().unwrap() {
            exited = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(exited.expect("exits after SIGTERM").success());
}

/// Ctrl-C at the terminal reaches the whole foreground process group. `gridroute dev` stops its
/// routers and server first and its own redis-server last, so a clean stop logs no warning
/// (the routers once lost their connections to a redis-server that Ctrl-C had already
/// stopped, and each partition logged a broken pipe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_dev_in_dependency_order_without_warnings() {
    use std::os::unix::process::CommandExt;
    let (grpc, metrics) = (free_port().unwrap(), free_port().unwrap());
    let dev_dir = temp_dir("dev-ctrl-c");
    let log = dev_dir.join("dev.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = dev_command(grpc, metrics, &dev_dir)
        // A process group of its own, as a shell gives a foreground job.
        .process_group(0)
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("the binary starts");
    let mut child = Child(child);
    let channel = connect(&format!("http://127.0.0.1:{grpc}")).await;
    wait_serving(channel).await;
    // Let the routers settle into their blocking reads.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = std::fs::read_to_string(&log).unwrap();
    let redis_port: u16 = started
        .split("started a private redis-server")
        .nth(1)
        .and_then(|rest| rest.split("redis://127.0.0.1:").nth(1))
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no redis URL in the log:\n{started}"));

    let group = format!("-{}", child.0.id());
    assert!(
        Command::new("kill")
            .args(["-INT", "--", &group])
            .status()
            .unwrap()
            .success()
    );
    let mut exited = None;
    for _ in 0..300 {
        if let Some(s) = child.0.try_wait().unwrap() {
            exited = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(exited.expect("exits after Ctrl-C").success(), "{text}");
    // The built-in calendar's horizon warning is a start-up warning about the date, not about
    // stopping (it appears from mid-December 2026 until the 2027 schedule is added).
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("broken pipe"))
        .filter(|l| !l.contains("the working calendar covers days until"))
        .collect();
    assert!(
        warnings.is_empty(),
        "a clean stop logged:\n{}",
        warnings.join("\n")
    );
    assert!(text.contains("stopped"), "{text}");
    // And its redis-server is gone with it.
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", redis_port)).is_err(),
        "redis-server on {redis_port} still runs"
    );
}
