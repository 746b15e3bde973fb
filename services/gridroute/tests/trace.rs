//! OpenTelemetry across the stream: the real binary exports over OTLP to a receiver in this
//! test; a report sent with a W3C `traceparent` yields one trace that spans the API call, the
//! router's route and dispatch (another task, reading the Redis stream), and the delivery to
//! the department's subscriber, whose Dispatch carries the trace context on. With inline
//! routing the route span comes from the API process that accepted the report.

#![allow(clippy::unwrap_used)]

use crate::common;

use common::process::{Child, ServeAuth, connect, dev_command};

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use gridroute_proto::v1::{
    self as pb, dispatch_service_client::DispatchServiceClient,
    incident_service_client::IncidentServiceClient,
};
use gridroute_store::local::free_port;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use tonic::{Request, Response, Status};

/// Span names by trace id (hex), and every exported span whole (names, attributes, events),
/// as text.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<HashMap<String, Vec<String>>>>, Arc<Mutex<String>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut seen = self.0.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            for ss in rs.scope_spans {
                for span in ss.spans {
                    let id: String = span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
                    self.1.lock().unwrap().push_str(&format!("{span:?}\n"));
                    seen.entry(id).or_default().push(span.name);
                }
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_spans_report_route_dispatch_and_delivery() {
    one_trace(&[], &["rpc", "route", "dispatch", "deliver"], &[]).await;
}

/// With inline routing the API call routes and dispatches: its `route` span joins the same
/// trace, and the subscriber's delivery continues from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_spans_report_inline_route_and_delivery() {
    // No router's `dispatch` span: no router read the report.
    one_trace(
        &["--inline-routing"],
        &["rpc", "route", "deliver"],
        &["dispatch"],
    )
    .await;
}

/// Runs `gridroute dev` (with `args`) exporting to a receiver here, reports one incident with a
/// sampled `traceparent`, and checks that the subscriber's dispatch carries the trace on and
/// that the trace holds the spans `want` and none of `absent`, and nothing else was sampled.
async fn one_trace(args: &[&str], want: &[&str], absent: &[&str]) {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let (grpc, metrics) = (free_port().unwrap(), free_port().unwrap());
    let auth = ServeAuth::new("trace");
    let child = dev_command(grpc, metrics, &auth.dir)
        .args([
            "--otlp-endpoint",
            &format!("http://{otlp}"),
            "--trace-sample-ratio",
            "0",
        ])
        .args(args)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .spawn()
        .expect("the binary starts");
    let _child = Child(child);
    let addr = format!("http://127.0.0.1:{grpc}");
    let channel = connect(&addr).await;
    let mut subscriber = DispatchServiceClient::new(channel.clone())
        .subscribe(auth.signed(pb::SubscribeRequest {
            department_id: "urban-management".into(),
            start: pb::SubscribeStart::Latest as i32,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();

    // The caller's trace is sampled (flags 01), so gridroute follows it although its own
    // ratio for new traces is 0.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut report = auth.req(
        "source_system:resident-app",
        pb::ReportIncidentRequest {
            request_id: "traced-1".into(),
            source_system: "resident-app".into(),
            category: "city.sanitation".into(),
            location: Some(pb::Location {
                kind: Some(pb::location::Kind::GridCode(
                    gridroute_benches::dawukou().grids.grids()[0].code.clone(),
                )),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    report.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01")
            .parse()
            .unwrap(),
    );
    let id = IncidentServiceClient::new(channel)
        .report_incident(report)
        .await
        .unwrap()
        .into_inner()
        .incident_id;
    let d = tokio::time::timeout(Duration::from_secs(10), subscriber.message())
        .await
        .expect("dispatched")
        .unwrap()
        .unwrap();
    assert_eq!(d.incident_id, id);
    assert!(
        d.traceparent.starts_with(&format!("00-{trace_id}-")),
        "the dispatch carries the trace on: {:?}",
        d.traceparent
    );

    let mut names = Vec::new();
    for _ in 0..100 {
        names = receiver
            .0
            .lock()
            .unwrap()
            .get(trace_id)
            .cloned()
            .unwrap_or_default();
        if want.iter().all(|w| names.iter().any(|n| n == w)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for w in want {
        assert!(
            names.iter().any(|n| n == w),
            "span {w} in the trace: {names:?}"
        );
    }
    for a in absent {
        assert!(
            !names.iter().any(|n| n == a),
            "no span {a} in the trace: {names:?}"
        );
    }
    // Nothing else was sampled: the ratio for new traces is 0.
    assert_eq!(
        receiver.0.lock().unwrap().len(),
        1,
        "only the caller's trace"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_spans_and_metrics_name_the_trace_and_never_the_reporter() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let log = std::env::temp_dir().join(format!("gridroute-log-{}.json", std::process::id()));
    let (grpc, metrics) = (free_port().unwrap(), free_port().unwrap());
    let auth = ServeAuth::new("trace");
    let child = dev_command(grpc, metrics, &auth.dir)
        .args([
            "--otlp-endpoint",
            &format!("http://{otlp}"),
            "--trace-sample-ratio",
            "1",
            "--log-format",
            "json",
        ])
        .env(
            "RUST_LOG",
            "debug,h2=warn,tower=warn,hyper=warn,opentelemetry=warn",
        )
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("the binary starts");
    let child = Child(child);
    let addr = format!("http://127.0.0.1:{grpc}");
    let mut incidents = IncidentServiceClient::new(connect(&addr).await);
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    // An invalid report (logged as a failed call) and a valid one, both full of personal data.
    for (rid, category) in [("pii-1", "NOT A CATEGORY"), ("pii-2", "city.sanitation")] {
        let mut r = auth.req(
            "source_system:resident-app",
            pb::ReportIncidentRequest {
                request_id: rid.into(),
                source_system: "resident-app".into(),
                category: category.into(),
                description: "张三丰 lives at Building 7, phone 13912345678".into(),
                reporter: Some(pb::ReporterContact {
                    name: "张三丰".into(),
                    phone: "13912345678".into(),
                    reporter_id: "resident-778899".into(),
                }),
                location: Some(pb::Location {
                    kind: Some(pb::location::Kind::GridCode(
                        gridroute_benches::dawukou().grids.grids()[0].code.clone(),
                    )),
                    address: "Building 7, Changsheng Road".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        r.metadata_mut().insert(
            "traceparent",
            format!("00-{trace_id}-b7ad6b7169203331-01")
                .parse()
                .unwrap(),
        );
        let _ = incidents.report_incident(r).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let scraped = common::process::scrape(metrics);
    // SIGTERM (on drop), so that the redis-server of `gridroute dev` stops with it (and the
    // last spans are flushed).
    drop(child);
    let spans = receiver.1.lock().unwrap().clone();
    assert!(
        spans.contains("rpc") && scraped.contains("gridroute_reports_total"),
        "spans and metrics were exported"
    );
    for secret in ["13912345678", "张三丰", "resident-778899", "Building 7"] {
        assert!(!spans.contains(secret), "{secret:?} leaked into the spans");
        assert!(
            !scraped.contains(secret),
            "{secret:?} leaked into the metrics"
        );
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    assert!(text.lines().count() > 5, "debug logs were written");
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("every line is JSON");
    }
    assert!(
        text.contains(trace_id),
        "log lines of the call name its trace id"
    );
    for secret in ["13912345678", "张三丰", "resident-778899", "Building 7"] {
        assert!(!text.contains(secret), "{secret:?} leaked into the logs");
    }
}
