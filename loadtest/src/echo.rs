//! The `echo` scenario's server: gridroute's own `IncidentService` contract served by a bare
//! tonic server whose ReportIncident answers at once, without validation or storage. Driving it
//! with the same messages as the `report` scenario measures what the gRPC framework itself can
//! do on this machine: the ceiling the real service is compared with.

use std::pin::Pin;

use gridroute_proto::v1::{
    self as pb,
    incident_service_server::{IncidentService, IncidentServiceServer},
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

/// The bare service.
#[derive(Debug, Clone, Copy)]
pub struct Echo;

#[tonic::async_trait]
impl IncidentService for Echo {
    async fn report_incident(
        &self,
        request: Request<pb::ReportIncidentRequest>,
    ) -> Result<Response<pb::ReportIncidentResponse>, Status> {
        Ok(Response::new(pb::ReportIncidentResponse {
            incident_id: request.into_inner().request_id,
            duplicate_request: false,
        }))
    }

    async fn report_incidents(
        &self,
        request: Request<Streaming<pb::ReportIncidentRequest>>,
    ) -> Result<Response<pb::ReportIncidentsResponse>, Status> {
        let mut stream = request.into_inner();
        let mut results = Vec::new();
        while let Some(r) = stream.message().await? {
            results.push(pb::ReportResult {
                incident_id: r.request_id.clone(),
                request_id: r.request_id,
                ..Default::default()
            });
        }
        let accepted_count = results.len() as i64;
        Ok(Response::new(pb::ReportIncidentsResponse {
            results,
            accepted_count,
            rejected_count: 0,
        }))
    }

    async fn get_incident(
        &self,
        _: Request<pb::GetIncidentRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        Err(Status::unimplemented("echo server"))
    }

    async fn list_incidents(
        &self,
        _: Request<pb::ListIncidentsRequest>,
    ) -> Result<Response<pb::ListIncidentsResponse>, Status> {
        Err(Status::unimplemented("echo server"))
    }

    type WatchIncidentsStream =
        Pin<Box<dyn Stream<Item = Result<pb::IncidentEvent, Status>> + Send>>;

    async fn watch_incidents(
        &self,
        _: Request<pb::WatchIncidentsRequest>,
    ) -> Result<Response<Self::WatchIncidentsStream>, Status> {
        Err(Status::unimplemented("echo server"))
    }

    async fn submit_feedback(
        &self,
        _: Request<pb::SubmitFeedbackRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        Err(Status::unimplemented("echo server"))
    }

    async fn get_reporter_points(
        &self,
        _: Request<pb::GetReporterPointsRequest>,
    ) -> Result<Response<pb::ReporterPoints>, Status> {
        Err(Status::unimplemented("echo server"))
    }
}

/// Starts the echo server on a free loopback port, on its own runtime thread (as a separate
/// server process would have its own scheduler), and returns its address.
pub fn start() -> std::io::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    std::thread::Builder::new()
        .name("echo-server".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("echo runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let incoming = tokio_stream::StreamExt::map(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    |s| {
                        if let Ok(s) = &s {
                            let _ = s.set_nodelay(true);
                        }
                        s
                    },
                );
                let _ = tonic::transport::Server::builder()
                    .add_service(IncidentServiceServer::new(Echo))
                    .serve_with_incoming(incoming)
                    .await;
            });
        })?;
    Ok(format!("http://{addr}"))
}
