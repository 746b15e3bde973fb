//! The HTTP face of gridroute: every `gridroute.v1` RPC over HTTP/JSON, transcoded by the
//! `google.api.http` annotations of the protos and served by the same implementation, behind
//! the same authorization layer, as over gRPC; streams as Server-Sent Events; the OpenAPI
//! document generated from the protos; Open311 GeoReport v2 for civic apps.
//!
//! Layout:
//! - [`bindings`]: the annotations read from the descriptor set; verb and path → RPC.
//! - [`transcode`]: JSON and query strings ↔ request and response messages, the in-process
//!   call, errors as Google's JSON errors with the HTTP status of their gRPC code, SSE.
//! - [`openapi`]: the OpenAPI 3 document.
//! - [`open311`]: Open311 GeoReport v2 (services from the table's category catalogue, service
//!   requests as incidents), calling the same RPCs.
//! - [`tls`]: TLS with client certificates, as on the gRPC port.
//! - this file: the router and [`serve`].

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Router,
    extract::{ConnectInfo, Request, State},
    response::{IntoResponse, Response},
    routing::get,
};
use gridroute_api::{ApiState, authz::Connection};
use prost_reflect::DescriptorPool;

pub mod bindings;
pub mod open311;
pub mod openapi;
pub mod tls;
pub mod transcode;

use bindings::Bindings;
use transcode::Transcoder;

/// Where the OpenAPI document is served.
pub const OPENAPI_PATH: &str = "/openapi.json";

/// Why the HTTP face could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The descriptor sets compiled into the binary do not decode (a build problem).
    #[error("descriptors: {0}")]
    Descriptors(String),
    /// The annotations are inconsistent (a build problem).
    #[error(transparent)]
    Bindings(#[from] bindings::BindingError),
    /// The listener failed.
    #[error("http: {0}")]
    Io(#[from] std::io::Error),
    /// The TLS certificate, key or client CA could not be used.
    #[error("http tls: {0}")]
    Tls(String),
}

/// gridroute's descriptors and google.rpc's (the error details), in one pool.
pub fn descriptor_pool() -> Result<DescriptorPool, HttpError> {
    let mut pool = DescriptorPool::decode(gridroute_proto::FILE_DESCRIPTOR_SET)
        .map_err(|e| HttpError::Descriptors(e.to_string()))?;
    pool.decode_file_descriptor_set(gridroute_proto::ERROR_DETAILS_DESCRIPTOR_SET)
        .map_err(|e| HttpError::Descriptors(e.to_string()))?;
    Ok(pool)
}

/// The OpenAPI document of the API, as served at [`OPENAPI_PATH`].
pub fn openapi_document() -> Result<serde_json::Value, HttpError> {
    let pool = descriptor_pool()?;
    Ok(openapi::document(&Bindings::from_pool(&pool)?))
}

#[derive(Debug, Clone)]
struct Face {
    transcoder: Arc<Transcoder>,
    openapi: bytes::Bytes,
    tables: gridroute_core::table::SharedTable,
}

/// The HTTP application for `state`: the API under `/v1/`, the OpenAPI document, Open311.
pub fn app(state: ApiState) -> Result<Router, HttpError> {
    let pool = descriptor_pool()?;
    let bindings = Bindings::from_pool(&pool)?;
    let openapi = bytes::Bytes::from(openapi::document(&bindings).to_string());
    let shutdown = state.shutdown.clone();
    let tables = state.tables.clone();
    let transcoder = Transcoder::new(pool, bindings, transcode::grpc(state), shutdown);
    let face = Face {
        transcoder: Arc::new(transcoder),
        openapi,
        tables,
    };
    Ok(Router::new()
        .route(OPENAPI_PATH, get(openapi_json))
        .route(
            "/open311/v2/{file}",
            get(open311::get_collection).post(open311::post_request),
        )
        .route("/open311/v2/services/{file}", get(open311::get_service))
        .route("/open311/v2/{kind}/{file}", get(open311::get_one))
        .route_layer(axum::middleware::from_fn(observe))
        .fallback(api)
        .with_state(face))
}

/// Metrics and a span for the routes outside `/v1/` (Open311, the OpenAPI document); the
/// transcoder observes its own, by path template.
async fn observe(
    path: axum::extract::MatchedPath,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    use tracing::Instrument;
    let started = std::time::Instant::now();
    let route = path.as_str().to_owned();
    let span =
        tracing::info_span!("http.request", http.method = %req.method(), http.route = %route);
    let r = next.run(req).instrument(span).await;
    transcode::record(&route, r.status(), started);
    r
}

async fn openapi_json(State(face): State<Face>) -> Response {
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        face.openapi.clone(),
    )
        .into_response()
}

/// The caller's connection: set by the TLS acceptor (with the verified client certificates),
/// else the plain listener's peer address.
#[derive(Debug, Clone)]
pub(crate) struct Peer(pub(crate) Connection);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<Connection>()
                .cloned()
                .unwrap_or_else(|| Connection {
                    peer: parts
                        .extensions
                        .get::<ConnectInfo<SocketAddr>>()
                        .map(|c| c.0),
                    certificates: None,
                }),
        ))
    }
}

async fn api(State(face): State<Face>, Peer(conn): Peer, req: Request) -> Response {
    face.transcoder.handle(conn, req).await
}

/// Serves the HTTP face on `listener` (over TLS when `tls` is given) until `shutdown`
/// completes; open event streams end when the API's shutdown signal turns (their clients resume
/// with `Last-Event-ID`).
pub async fn serve(
    state: ApiState,
    listener: tokio::net::TcpListener,
    tls: Option<tls::TlsFiles>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    let app = app(state)?;
    if let Some(files) = tls {
        return tls::serve(app, listener, tls::server_config(&files)?, shutdown).await;
    }
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    Ok(())
}
