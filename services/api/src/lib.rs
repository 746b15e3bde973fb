//! The gRPC face of gridroute: the `gridroute.v1` services (incidents, dispatches,
//! supervision, routing, tables, audit), plus `grpc.health.v1` and server reflection (v1 and
//! v1alpha).
//!
//! Layout:
//! - [`policy`]: the access policy, one row per RPC (who may call it, on what, audited?).
//! - [`authz`]: the one authorization step, a tower layer before every handler: identity
//!   from credentials, the policy row, the caller's rate; and the scope checks handlers share.
//! - [`limits`]: rate limits and open-stream caps per principal.
//! - [`audit`]: the audit trail of privileged acts and refusals.
//! - [`privacy`]: reporters' contact details masked for callers who may not read them.
//! - [`scope`]: region filters validated alike, and command centres kept to their subtree.
//! - [`error`]: the one mapping from errors to `tonic::Status`.
//! - [`validate`]: request validation with field-level violations.
//! - [`incident`], [`dispatch`], [`supervision`], [`routing`], [`tables`], [`auditing`]: one
//!   service per module; handlers check scope, validate, call the store or the core, and map
//!   the result.
//! - [`actions`]: what every lifecycle action shares (identity, idempotency, the answer).
//! - [`coalesce`]: group commit of concurrent unary reports.
//! - [`streaming`]: the server-streaming RPCs' reader tasks.
//! - [`records`]: the shared record across Redis and the archive (get, list, stats).
//! - [`server`]: assembles the services, the layer, health and reflection, and serves them.
//!
//! Handlers hold no state of their own: everything shared lives in Redis or in the table in
//! force, so any number of API replicas can run side by side.

pub mod actions;
pub mod audit;
pub mod auditing;
pub mod authz;
pub mod coalesce;
pub mod dispatch;
pub mod error;
pub mod incident;
pub mod limits;
pub mod policy;
pub mod privacy;
pub mod records;
pub mod routing;
pub mod scope;
pub mod server;
pub mod streaming;
pub mod supervision;
pub mod tables;
pub mod validate;

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use gridroute_core::{access::Principal, table::SharedTable};
use gridroute_proto::v1 as pb;
use gridroute_store::{Store, audit::Entry};
use gridroute_telemetry::{names, trace_context};
use tokio::sync::Semaphore;
use tonic::{Code, Request, Response, Status};
use tracing::Instrument;

pub use authz::Security;
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
    /// Identity, limits, audit and privacy settings.
    pub security: Arc<Security>,
    /// The archive of closed incidents, read when Redis no longer has one (none: everything
    /// stays in Redis).
    pub archive: Option<gridroute_archive::Archive>,
}

impl ApiState {
    /// State with default limits.
    pub fn new(
        store: Store,
        tables: SharedTable,
        shutdown: tokio::sync::watch::Receiver<bool>,
        security: Security,
    ) -> Self {
        Self {
            reports: coalesce::Coalescer::new(store.clone()),
            store,
            tables,
            subscribers: Arc::new(Semaphore::new(MAX_SUBSCRIBERS)),
            subscribe_block: Duration::from_secs(5),
            shutdown,
            tls: None,
            security: Arc::new(security),
            archive: None,
        }
    }

    /// Runs a handler body for the authenticated caller of `request`, inside the call's span
    /// (continuing the caller's `traceparent`), records the call's rate, errors and duration,
    /// audits it when the policy says so (privileged acts) or when it was refused, and maps its
    /// error through the one conversion to `Status`.
    pub(crate) async fn call<T, R, Fut>(
        &self,
        method: &'static str,
        request: Request<T>,
        body: impl FnOnce(Principal, T) -> Fut,
    ) -> Result<Response<R>, Status>
    where
        T: Target,
        R: Detail,
        Fut: Future<Output = Result<R, ApiError>>,
    {
        let started = Instant::now();
        let traceparent = caller_trace(request.metadata());
        let span = tracing::info_span!("rpc", method, trace_id = tracing::field::Empty);
        trace_context::set_parent(&span, &traceparent);
        let trace_id = trace_context::trace_id(&span);
        if !trace_id.is_empty() {
            span.record("trace_id", trace_id.as_str());
        }
        let (meta, ext, msg) = request.into_parts();
        drop(meta);
        let target = msg.target();
        let result = match authz::caller(&ext) {
            Ok(caller) => {
                let who = caller.principal.clone();
                let outcome = body(who, msg).instrument(span.clone()).await;
                let denied = matches!(
                    &outcome,
                    Err(ApiError::PermissionDenied(_)
                        | ApiError::Store(gridroute_store::StoreError::Refused(
                            gridroute_core::lifecycle::Refusal::NotPermitted(_)
                        )))
                );
                let outcome = outcome.map_err(Status::from);
                if let Some(entry) = audit_entry(&caller, &ext, &target, &outcome, denied) {
                    if denied {
                        metrics::counter!(names::AUTH_DENIED_TOTAL,
                            "reason" => "permission_denied", "kind" => who_kind(&caller))
                        .increment(1);
                        self.security.audit.record(entry);
                    } else {
                        self.security.audit.record_now(entry).await;
                    }
                }
                outcome
            }
            Err(e) => Err(Status::from(e)),
        };
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
        metrics::counter!(names::RPC_REQUESTS_TOTAL, "method" => method, "code" => code)
            .increment(1);
        metrics::histogram!(names::RPC_DURATION_SECONDS, "method" => method)
            .record(started.elapsed().as_secs_f64());
        result.map(Response::new)
    }
}

fn who_kind(caller: &authz::Authenticated) -> &'static str {
    caller.principal.kind.as_str()
}

/// The audit record of a call, if it gets one: every privileged act, and every refusal made
/// by a handler (refusals made by the layer are recorded there).
fn audit_entry<R: Detail>(
    caller: &authz::Authenticated,
    ext: &tonic::Extensions,
    target: &str,
    outcome: &Result<R, Status>,
    denied: bool,
) -> Option<Entry> {
    if !caller.rule.audited && !denied {
        return None;
    }
    let (code, reason) = match outcome {
        Ok(r) => ("OK", r.detail()),
        Err(s) => (code_name(s.code()), s.message().to_owned()),
    };
    let p = &caller.principal;
    Some(Entry {
        principal: p.label(),
        person: p.person.clone(),
        method: format!("{}/{}", caller.rule.service, caller.rule.method),
        target: target.to_owned(),
        outcome: code.to_owned(),
        reason,
        peer: authz::peer(ext),
    })
}

/// What a request is about, for the audit trail: an incident id, a table version, a
/// department. Never personal data.
pub trait Target {
    /// The target ('' when none).
    fn target(&self) -> String {
        String::new()
    }
}

/// What a privileged act changed, for the audit trail.
pub trait Detail {
    /// A short description ('' when there is nothing to add).
    fn detail(&self) -> String {
        String::new()
    }
}

macro_rules! incident_targets {
    ($($t:ty),* $(,)?) => {
        $(impl Target for $t {
            fn target(&self) -> String {
                self.incident_id.clone()
            }
        })*
    };
}

incident_targets!(
    pb::GetIncidentRequest,
    pb::SubmitFeedbackRequest,
    pb::AcceptIncidentRequest,
    pb::ResolveIncidentRequest,
    pb::ReturnIncidentRequest,
    pb::AddProgressRequest,
    pb::RequestExtensionRequest,
    pb::RequestSuspensionRequest,
    pb::ResumeIncidentRequest,
    pb::ArbitrateIncidentRequest,
    pb::DecideRequestRequest,
    pb::VerifyIncidentRequest,
    pb::CloseIncidentRequest,
    pb::CancelIncidentRequest,
    pb::UnmergeIncidentRequest,
);

impl Target for pb::SubscribeRequest {
    fn target(&self) -> String {
        self.department_id.clone()
    }
}

impl Target for pb::RollbackTableRequest {
    fn target(&self) -> String {
        self.version.clone()
    }
}

macro_rules! no_target {
    ($($t:ty),* $(,)?) => { $(impl Target for $t {})* };
}

no_target!(
    pb::ReportIncidentRequest,
    tonic::Streaming<pb::ReportIncidentRequest>,
    pb::ListIncidentsRequest,
    pb::WatchIncidentsRequest,
    pb::GetReporterPointsRequest,
    pb::GetStatsRequest,
    pb::ExplainRouteRequest,
    pb::PublishTableRequest,
    pb::GetTableInfoRequest,
    pb::DiffTableRequest,
    pb::ListAuditRecordsRequest,
);

impl Detail for pb::Incident {
    fn detail(&self) -> String {
        let status =
            pb::IncidentStatus::try_from(self.status).map_or("unknown", |s| s.as_str_name());
        format!("now {status}")
    }
}

impl Detail for pb::PublishTableResponse {
    fn detail(&self) -> String {
        if self.changed {
            format!("published {} (was {})", self.version, self.previous_version)
        } else {
            format!("validated {} (in force unchanged)", self.version)
        }
    }
}

impl Detail for pb::TableInfo {
    fn detail(&self) -> String {
        format!("in force: {}", self.current_version)
    }
}

impl Detail for pb::DiffTableResponse {
    fn detail(&self) -> String {
        format!(
            "candidate {}: {} of {} reports would change",
            self.candidate_version,
            self.changes.len(),
            self.compared
        )
    }
}

impl Detail for pb::ListAuditRecordsResponse {
    fn detail(&self) -> String {
        format!("{} records read", self.records.len())
    }
}

macro_rules! no_detail {
    ($($t:ty),* $(,)?) => { $(impl Detail for $t {})* };
}

no_detail!(
    pb::ReportIncidentResponse,
    pb::ReportIncidentsResponse,
    pb::ListIncidentsResponse,
    pb::ReporterPoints,
    pb::Stats,
    pb::ExplainRouteResponse,
    streaming::BoxStream<pb::Dispatch>,
    streaming::BoxStream<pb::IncidentEvent>,
);

/// The caller's W3C trace context (`traceparent` metadata), '' when absent.
pub(crate) fn caller_trace(meta: &tonic::metadata::MetadataMap) -> String {
    meta.get("traceparent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Stable names of status codes (`INVALID_ARGUMENT`), for the `code` metric label and the
/// `status` of JSON errors.
pub fn code_name(code: Code) -> &'static str {
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
