//! Assembles the gRPC server: the gridroute services behind the one authorization layer,
//! `grpc.health.v1` and reflection (v1 and v1alpha: Python's grpcio asks v1alpha), both open.
//! Health follows Redis: NOT_SERVING while it is unreachable, SERVING again when it answers.

use std::time::Duration;

use gridroute_proto::{
    ERROR_DETAILS_DESCRIPTOR_SET, FILE_DESCRIPTOR_SET,
    v1::{
        audit_service_server::AuditServiceServer, dispatch_service_server::DispatchServiceServer,
        incident_service_server::IncidentServiceServer,
        routing_service_server::RoutingServiceServer,
        supervision_service_server::SupervisionServiceServer,
        table_service_server::TableServiceServer,
    },
};
use tokio_stream::{StreamExt, wrappers::TcpListenerStream};
use tonic::transport::Server;
use tonic_health::{ServingStatus, server::HealthReporter};
use tracing::{info, warn};

use crate::{
    ApiState,
    auditing::Audits,
    authz::AuthLayer,
    dispatch::Dispatches,
    incident::Incidents,
    routing::Routing,
    supervision::Supervision,
    tables::{MAX_TABLE_BYTES, Tables},
};

/// Fully qualified names of the services health reports on (plus the empty name, the server).
pub const SERVICE_NAMES: [&str; 6] = [
    "gridroute.v1.IncidentService",
    "gridroute.v1.DispatchService",
    "gridroute.v1.RoutingService",
    "gridroute.v1.TableService",
    "gridroute.v1.SupervisionService",
    "gridroute.v1.AuditService",
];

/// HTTP/2 connection window: large enough that a client streaming many small reports (each
/// in its own DATA frame, as grpcio sends them) keeps within h2's budget for small frames,
/// which is half this window (see `docs/OPERATIONS.md`, "HTTP/2").
pub const CONNECTION_WINDOW: u32 = 16 << 20;
/// HTTP/2 stream window: what one stream may have in flight before the server reads it.
pub const STREAM_WINDOW: u32 = 1 << 20;

/// The health service name that reports liveness only (the process serves gRPC), for
/// Kubernetes liveness probes; readiness is the server's overall status (service "").
pub const LIVENESS: &str = "liveness";

/// How often health re-checks Redis.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// Why the server stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Reflection could not be built from the descriptor set.
    #[error("reflection: {0}")]
    Reflection(String),
    /// The TLS certificate or key could not be used.
    #[error("tls: {0}")]
    Tls(String),
    /// The transport failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The services that answer from the routing table in memory alone: ready once the process
/// serves, whether Redis answers or not (`ExplainRoute`).
pub const TABLE_ONLY_SERVICES: [&str; 1] = ["gridroute.v1.RoutingService"];

/// Readiness of the empty name (the process as a whole) and of every service that needs Redis.
async fn set_redis_dependent(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for name in SERVICE_NAMES
        .into_iter()
        .filter(|n| !TABLE_ONLY_SERVICES.contains(n))
    {
        reporter.set_service_status(name, status).await;
    }
}

/// The `gridroute.v1` services, one implementation of each RPC: served over gRPC by [`serve`]
/// and, behind the same [`AuthLayer`], called in process by the HTTP/JSON face.
pub fn gridroute_routes(state: ApiState) -> tonic::service::Routes {
    tonic::service::Routes::new(IncidentServiceServer::new(Incidents(state.clone())))
        .add_service(DispatchServiceServer::new(Dispatches(state.clone())))
        .add_service(RoutingServiceServer::new(Routing(state.clone())))
        .add_service(SupervisionServiceServer::new(Supervision(state.clone())))
        .add_service(AuditServiceServer::new(Audits(state.clone())))
        .add_service(
            TableServiceServer::new(Tables(state)).max_decoding_message_size(MAX_TABLE_BYTES),
        )
}

/// Serves the API on `listener` until `shutdown` completes, then drains in-flight calls.
pub async fn serve(
    state: ApiState,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    set_redis_dependent(&reporter, ServingStatus::NotServing).await;
    // Liveness: the process answers. Readiness, per service, of what each needs: the routing
    // table (loaded before the server starts, only ever swapped for another) for all, Redis
    // too for every service but RoutingService; "" is the process's readiness: Redis answers.
    reporter
        .set_service_status(LIVENESS, ServingStatus::Serving)
        .await;
    for name in TABLE_ONLY_SERVICES {
        reporter
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }
    let store = state.store.clone();
    let health_task = tokio::spawn(async move {
        let mut serving = None;
        loop {
            let ok = store.ping().await.is_ok();
            if serving != Some(ok) {
                if ok {
                    info!("redis reachable: SERVING");
                } else {
                    warn!("redis unreachable: NOT_SERVING");
                }
                set_redis_dependent(
                    &reporter,
                    if ok {
                        ServingStatus::Serving
                    } else {
                        ServingStatus::NotServing
                    },
                )
                .await;
                serving = Some(ok);
            }
            tokio::time::sleep(HEALTH_INTERVAL).await;
        }
    });
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(ERROR_DETAILS_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(ERROR_DETAILS_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    // The builder's tcp_nodelay only applies to listeners tonic binds itself: set it on every
    // accepted socket, or Nagle's algorithm and delayed ACKs add ~40 ms to responses that span
    // more than one write (an incident with its timeline).
    let incoming = TcpListenerStream::new(listener).map(|s| {
        if let Ok(s) = &s
            && let Err(e) = s.set_nodelay(true)
        {
            warn!(error = %e, "TCP_NODELAY not set");
        }
        s
    });
    let mut builder = Server::builder();
    if let Some(tls) = state.tls.clone() {
        builder = builder
            .tls_config(tls)
            .map_err(|e| ServeError::Tls(e.to_string()))?;
    }
    let security = state.security.clone();
    let result = builder
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .initial_connection_window_size(CONNECTION_WINDOW)
        .initial_stream_window_size(STREAM_WINDOW)
        .layer(AuthLayer::new(security))
        .add_routes(gridroute_routes(state))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    health_task.abort();
    Ok(result?)
}
