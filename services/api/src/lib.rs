//! The gRPC face of gridroute: `gridroute.v1` IncidentService, DispatchService and
//! RoutingService, plus `grpc.health.v1` and server reflection (v1 and v1alpha).
//!
//! Layout:
//! - [`error`]: the one mapping from errors to `tonic::Status`.
//! - [`validate`]: request validation with field-level violations.
//! - [`incident`], [`dispatch`], [`supervision`], [`routing`], [`tables`]: one service per
//!   module; handlers validate, call the store or the core, and map the result.
//! - [`actions`]: what every lifecycle action shares (identity, idempotency, the answer).
//! - [`coalesce`]: group commit of concurrent unary reports.
//! - [`server`]: assembles the services, health and reflection, and serves them.
//!
//! Handlers hold no state of their own: everything shared lives in Redis or in the table in
//! force, so any number of API replicas can run side by side.

pub mod actions;
pub mod coalesce;
pub mod dispatch;
pub mod error;
pub mod incident;
pub mod routing;
pub mod server;
pub mod streaming;
pub mod supervision;
pub mod tables;
pub mod validate;

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use gridroute_core::table::SharedTable;
use gridroute_store::Store;
use gridroute_telemetry::{names, trace_context};
use tokio::sync::Semaphore;
use tonic::{Code, Response, Status};
use tracing::Instrument;

pub use error::ApiError;
pub use server::serve;

/// Most concurrent Subscribe streams per API process: each holds one Redis connection for its
/// blocking reads, so this bounds connections as well as memory.
pub const MAX_SUBSCRIBERS: usize = 1024;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The store.
    pub store: Store,
    /// The routing table in force.
    pub tables: SharedTable,
    /// Permits for Subscribe streams.
    pub subscribers: Arc<Semaphore>,
    /// How long one subscriber read blocks waiting for dispatches.
    pub subscribe_block: Duration,
    /// Turns true when the server shuts down: open Subscribe streams end at once (their
    /// clients resume elsewhere from their cursor) instead of holding the drain open.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// TLS for the gRPC endpoint (with client certificates when it names a client CA); plain
    /// HTTP/2 when absent.
    pub tls: Option<tonic::transport::ServerTlsConfig>,
    /// Unary reports waiting to be accepted together.
    pub reports: coalesce::Coalescer,
}

impl ApiState {
    /// State with default limits.
    pub fn new(
        store: Store,
        tables: SharedTable,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            reports: coalesce::Coalescer::new(store.clone()),
            store,
            tables,
            subscribers: Arc::new(Semaphore::new(MAX_SUBSCRIBERS)),
            subscribe_block: Duration::from_secs(5),
            shutdown,
            tls: None,
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Stable names of status codes, for the `code` metric label.
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Runs a handler body inside its span, records its rate, errors and duration, and maps its
/// error through the one conversion to `Status`.
pub(crate) async fn observed<T>(
    method: &'static str,
    body: impl Future<Output = Result<T, ApiError>>,
) -> Result<Response<T>, Status> {
    observed_from(method, "", body).await
}

/// The caller's W3C trace context (`traceparent` metadata), '' when absent.
pub(crate) fn caller_trace(meta: &tonic::metadata::MetadataMap) -> String {
    meta.get("traceparent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// [`observed`], continuing the caller's trace when `traceparent` is given. The span carries
/// the trace id, so JSON log lines name it.
pub(crate) async fn observed_from<T>(
    method: &'static str,
    traceparent: &str,
    body: impl Future<Output = Result<T, ApiError>>,
) -> Result<Response<T>, Status> {
    let started = Instant::now();
    let span = tracing::info_span!("rpc", method, trace_id = tracing::field::Empty);
    trace_context::set_parent(&span, traceparent);
    let trace_id = trace_context::trace_id(&span);
    if !trace_id.is_empty() {
        span.record("trace_id", trace_id.as_str());
    }
    let result = body.instrument(span.clone()).await.map_err(Status::from);
    let code = result
        .as_ref()
        .map_or_else(|s| code_name(s.code()), |_| "OK");
    // One line per call at debug level, inside the span (so JSON logs carry the trace id).
    // Status messages name fields, never their values.
    span.in_scope(|| {
        tracing::debug!(
            code,
            elapsed_us = started.elapsed().as_micros() as u64,
            "rpc done"
        );
    });
    metrics::counter!(names::RPC_REQUESTS_TOTAL, "method" => method, "code" => code).increment(1);
    metrics::histogram!(names::RPC_DURATION_SECONDS, "method" => method)
        .record(started.elapsed().as_secs_f64());
    result.map(Response::new)
}
