//! Telemetry for every gridroute process: the one module of metric names (with their
//! descriptions), the Prometheus exporter, and log set-up.
//!
//! Metric names live only in [`names`]; code records through them so that a dashboard, an alert
//! and the code always agree. Labels come from small fixed sets: never incident ids, never
//! reporter data.

use std::{net::SocketAddr, time::Duration};

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Metric names. Counters end in `_total`, durations are in seconds.
pub mod names {
    /// Reports received, by `outcome` (accepted, duplicate_request, invalid, conflict, unavailable).
    pub const REPORTS_TOTAL: &str = "gridroute_reports_total";
    /// Ingest entries routed, by `outcome` (matched, no_rule, outside_grids, unknown_grid).
    pub const ROUTED_TOTAL: &str = "gridroute_routed_total";
    /// Dispatch attempts, by `outcome` (dispatched, already_dispatched, failed; dispatched_inline:
    /// routed and dispatched by the process that accepted the report, `--inline-routing`).
    pub const DISPATCHES_TOTAL: &str = "gridroute_dispatches_total";
    /// Entries moved to the dead-letter stream, by `reason` (undecodable, max_deliveries).
    pub const DEAD_LETTERS_TOTAL: &str = "gridroute_dead_letters_total";
    /// Entries taken over from routers that stopped (XAUTOCLAIM).
    pub const CLAIMED_TOTAL: &str = "gridroute_claimed_entries_total";
    /// Time to make one route decision (grid lookup + rule match).
    pub const ROUTE_DECISION_SECONDS: &str = "gridroute_route_decision_seconds";
    /// Time from the report being accepted to its dispatch being written.
    pub const REPORT_TO_DISPATCH_SECONDS: &str = "gridroute_report_to_dispatch_seconds";
    /// Waits for replicas (`WAIT`, with `--wait-replicas`), by `op` (report, dispatch) and
    /// `outcome` (replicated, short).
    pub const REPLICATION_WAITS_TOTAL: &str = "gridroute_replication_waits_total";
    /// How long waits for replicas took, by `op`.
    pub const REPLICATION_WAIT_SECONDS: &str = "gridroute_replication_wait_seconds";
    /// Redis `used_memory` (bytes), as seen by routers.
    pub const REDIS_USED_MEMORY: &str = "gridroute_redis_used_memory_bytes";
    /// Redis `maxmemory` (bytes; 0 = no limit), as seen by routers.
    pub const REDIS_MAX_MEMORY: &str = "gridroute_redis_max_memory_bytes";
    /// Entries in the ingest streams not yet delivered to any router (consumer-group lag).
    pub const INGEST_LAG: &str = "gridroute_ingest_lag_entries";
    /// Entries delivered to a router and not yet acknowledged.
    pub const INGEST_PENDING: &str = "gridroute_ingest_pending_entries";
    /// Entries in the ingest streams (acknowledged ones included until they are trimmed).
    pub const INGEST_LENGTH: &str = "gridroute_ingest_stream_entries";
    /// Acknowledged ingest entries trimmed from the streams' heads by the routers.
    pub const INGEST_TRIMMED_TOTAL: &str = "gridroute_ingest_trimmed_entries_total";
    /// Entries in the dead-letter streams.
    pub const DEAD_LETTER_LENGTH: &str = "gridroute_dead_letter_entries";
    /// gRPC requests, by `method` and `code`.
    pub const RPC_REQUESTS_TOTAL: &str = "gridroute_rpc_requests_total";
    /// gRPC request duration, by `method`.
    pub const RPC_DURATION_SECONDS: &str = "gridroute_rpc_duration_seconds";
    /// HTTP requests of the HTTP/JSON and Open311 faces, by `route` (the path template) and
    /// `status`.
    pub const HTTP_REQUESTS_TOTAL: &str = "gridroute_http_requests_total";
    /// HTTP request duration (to the response head; streams count until they start), by
    /// `route`.
    pub const HTTP_DURATION_SECONDS: &str = "gridroute_http_duration_seconds";
    /// Dispatches delivered to subscribers.
    pub const DELIVERED_TOTAL: &str = "gridroute_subscriber_dispatches_total";
    /// Open Subscribe streams.
    pub const SUBSCRIBERS: &str = "gridroute_subscribers";
    /// Duration of Redis round trips (a pipeline of script calls counts once), by `op`.
    pub const REDIS_DURATION_SECONDS: &str = "gridroute_redis_command_duration_seconds";
    /// Redis command errors, by `op`.
    pub const REDIS_ERRORS_TOTAL: &str = "gridroute_redis_errors_total";
    /// Connections swapped to the primary the Sentinels name, by `reason` (`readonly`: the
    /// server refused a write as a replica; `connection`: it was gone).
    pub const REDIS_PRIMARY_CHANGES_TOTAL: &str = "gridroute_redis_primary_changes_total";
    /// Transactions written again because a watched key changed before `EXEC`, by `op`.
    pub const TRANSACTION_RETRIES_TOTAL: &str = "gridroute_transaction_retries_total";
    /// Batches a transaction left to its script instead, by `op` and `reason` (`dept_at`: a
    /// re-route or an incident already indexed; `contended`: the records kept changing;
    /// `error`: Redis answered with an error; `small_batch`: fewer writes than
    /// `--transaction-min-batch`).
    pub const TRANSACTION_FALLBACKS_TOTAL: &str = "gridroute_transaction_fallbacks_total";
    /// Routing tables loaded into memory, by `outcome` (loaded, rejected).
    pub const TABLE_LOADS_TOTAL: &str = "gridroute_table_loads_total";
    /// Entries removed from dispatch and events streams by the retention window.
    pub const STREAM_ENTRIES_TRIMMED_TOTAL: &str = "gridroute_stream_entries_trimmed_total";
    /// Reconnections of a Subscribe/WatchIncidents partition tail on Redis Cluster, by `reason`
    /// (`moved`: the slot moved or a replica took over; `ask`: the slot is migrating; `error`).
    pub const STREAM_TAIL_REDIRECTS_TOTAL: &str = "gridroute_stream_tail_redirects_total";
    /// New-case dispatches delivered without their report and decision because the incident's
    /// record had left Redis (moved to the archive while the stream kept the entry).
    pub const DISPATCHES_WITHOUT_RECORD_TOTAL: &str = "gridroute_dispatches_without_record_total";
    /// Subscriptions and watches refused because entries after their cursor were trimmed.
    pub const CURSORS_EXPIRED_TOTAL: &str = "gridroute_cursors_expired_total";
    /// Info about the table in force: value 1, label `version`.
    pub const TABLE_INFO: &str = "gridroute_table_info";
    /// When the working calendar of the table in force stops covering (Unix seconds of the
    /// midnight after its last day); absent when the calendar has no horizon.
    pub const CALENDAR_COVERED_UNTIL: &str = "gridroute_calendar_covered_until_timestamp_seconds";
    /// Lifecycle actions applied, by `action` and resulting `status`.
    pub const TRANSITIONS_TOTAL: &str = "gridroute_transitions_total";
    /// Lifecycle actions planned again because the record changed meanwhile.
    pub const TRANSITION_CONFLICTS_TOTAL: &str = "gridroute_transition_conflicts_total";
    /// SLA timers fired, by `kind` (accept, warn, urge, supervise, public, verify) and
    /// `department`.
    pub const TIMERS_FIRED_TOTAL: &str = "gridroute_sla_timers_fired_total";
    /// How late timers fired after their due time.
    pub const TIMER_LATENESS_SECONDS: &str = "gridroute_sla_timer_lateness_seconds";
    /// Pending SLA timers, summed over every partition.
    pub const TIMERS_PENDING: &str = "gridroute_sla_timers_pending";
    /// Due SLA timers left to another replica because their record's schedule has a step this
    /// release cannot read (written by a newer one).
    pub const TIMERS_UNREADABLE_TOTAL: &str = "gridroute_sla_timers_unreadable_total";
    /// Working time from first dispatch to resolution, by `department`.
    pub const RESOLVE_WORKING_SECONDS: &str = "gridroute_resolve_working_time_seconds";
    /// Reports merged into an open incident as duplicates.
    pub const DUPLICATES_MERGED_TOTAL: &str = "gridroute_duplicates_merged_total";
    /// Unary reports accepted together in one Redis round trip (group commit).
    pub const REPORT_BATCH_SIZE: &str = "gridroute_report_batch_size";
    /// Routed entries dispatched together in one Redis round trip.
    pub const DISPATCH_BATCH_SIZE: &str = "gridroute_dispatch_batch_size";
    /// Bearer tokens checked, by `outcome` (`verified`, `cached`, or the check that failed).
    pub const AUTH_TOKENS_TOTAL: &str = "gridroute_auth_tokens_total";
    /// Key set (JWKS) loads, by `outcome` (`ok`, `unchanged`, `error`).
    pub const AUTH_JWKS_LOADS_TOTAL: &str = "gridroute_auth_jwks_loads_total";
    /// Keys in the key set in force.
    pub const AUTH_JWKS_KEYS: &str = "gridroute_auth_jwks_keys";
    /// Calls refused before any handler ran, by `reason` (unauthenticated, permission_denied,
    /// rate_limited) and `kind` of principal (`anonymous` when none).
    pub const AUTH_DENIED_TOTAL: &str = "gridroute_auth_denied_total";
    /// Audit records written, by `outcome` (written, dropped: the writer's queue was full,
    /// failed: Redis refused).
    pub const AUDIT_RECORDS_TOTAL: &str = "gridroute_audit_records_total";
    /// Incidents moved from Redis to the archive.
    pub const ARCHIVED_TOTAL: &str = "gridroute_archived_incidents_total";
    /// Idempotency claims kept with their records (`--claims-with-records`) that the archive
    /// mover gave their 7 days when it moved the record out.
    pub const CLAIMS_RELEASED_TOTAL: &str = "gridroute_idempotency_claims_released_total";
    /// Closed incidents past the hot period still in Redis, as the last mover pass saw them.
    pub const ARCHIVE_DUE: &str = "gridroute_archive_due_incidents";
    /// Reads answered from the archive, by call (`get`, `list`, `stats`).
    pub const ARCHIVE_READS_TOTAL: &str = "gridroute_archive_reads_total";
    /// Archive (PostgreSQL) calls that failed.
    pub const ARCHIVE_ERRORS_TOTAL: &str = "gridroute_archive_errors_total";
    /// Index stream entries removed because every incident they name was archived.
    pub const INDEX_ENTRIES_COMPACTED_TOTAL: &str = "gridroute_index_entries_compacted_total";
    /// Entries of an ancestor's region index that a list or figures of a finer region read
    /// and passed over, naming none of its incidents (`--region-index-depth`): its read cost.
    pub const INDEX_ENTRIES_PASSED_TOTAL: &str = "gridroute_index_entries_passed_total";
    /// Changes per events entry written packed (`--packed-events`), one sample per entry.
    pub const EVENTS_PACKED_CHANGES: &str = "gridroute_events_packed_changes";
    /// Reporters' contact details erased after the retention period.
    pub const CONTACTS_ERASED_TOTAL: &str = "gridroute_contacts_erased_total";
}

/// Buckets for sub-millisecond to multi-second latencies.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_001, 0.000_005, 0.000_01, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets for working time to resolve: 15 working minutes to 10 working days (7 h each).
const WORKING_TIME_BUCKETS: &[f64] = &[
    900.0, 1_800.0, 3_600.0, 7_200.0, 14_400.0, 25_200.0, 37_800.0, 50_400.0, 75_600.0, 126_000.0,
    252_000.0,
];

/// Buckets for batch sizes.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Registers the description and unit of every metric.
pub fn describe() {
    use names::*;
    describe_counter!(REPORTS_TOTAL, "Reports received, by outcome.");
    describe_counter!(
        TRANSITIONS_TOTAL,
        "Lifecycle actions applied, by action and resulting status."
    );
    describe_counter!(
        TRANSITION_CONFLICTS_TOTAL,
        "Lifecycle actions planned again after a concurrent change."
    );
    describe_counter!(
        TIMERS_FIRED_TOTAL,
        "SLA timers fired (warnings, urges, supervision, public reports), by kind and department."
    );
    describe_histogram!(
        TIMER_LATENESS_SECONDS,
        Unit::Seconds,
        "How late SLA timers fired after their due time."
    );
    describe_gauge!(TIMERS_PENDING, "Pending SLA timers over every partition.");
    describe_counter!(
        TIMERS_UNREADABLE_TOTAL,
        "Due SLA timers left to another replica: their schedule has a step this release cannot read (a newer release wrote it)."
    );
    describe_gauge!(
        INGEST_LENGTH,
        "Entries in the ingest streams: not yet routed, and routed ones not yet trimmed."
    );
    describe_counter!(
        INGEST_TRIMMED_TOTAL,
        "Acknowledged ingest entries trimmed from the streams' heads by the routers."
    );
    describe_histogram!(
        REDIS_DURATION_SECONDS,
        Unit::Seconds,
        "Duration of Redis round trips (script pipelines), by operation."
    );
    describe_histogram!(
        RESOLVE_WORKING_SECONDS,
        Unit::Seconds,
        "Working time from first dispatch to resolution, by department."
    );
    describe_counter!(
        DUPLICATES_MERGED_TOTAL,
        "Reports merged into an open incident as duplicates."
    );
    describe_histogram!(
        REPORT_BATCH_SIZE,
        "Unary reports accepted together in one Redis round trip."
    );
    describe_histogram!(
        DISPATCH_BATCH_SIZE,
        "Routed entries dispatched together in one Redis round trip."
    );
    describe_counter!(
        AUTH_TOKENS_TOTAL,
        "Bearer tokens checked, by outcome (verified, cached, or the failed check)."
    );
    describe_counter!(AUTH_JWKS_LOADS_TOTAL, "Key set (JWKS) loads, by outcome.");
    describe_gauge!(AUTH_JWKS_KEYS, "Keys in the key set in force.");
    describe_counter!(
        AUTH_DENIED_TOTAL,
        "Calls refused before any handler ran, by reason and principal kind."
    );
    describe_counter!(AUDIT_RECORDS_TOTAL, "Audit records, by outcome.");
    describe_counter!(ARCHIVED_TOTAL, "Incidents moved from Redis to the archive.");
    describe_counter!(
        CLAIMS_RELEASED_TOTAL,
        "Idempotency claims kept with their records that the archive mover gave their 7 days when it moved the record out."
    );
    describe_gauge!(
        ARCHIVE_DUE,
        "Closed incidents past the hot period still in Redis (last mover pass)."
    );
    describe_counter!(
        ARCHIVE_READS_TOTAL,
        "Reads answered from the archive, by call."
    );
    describe_counter!(
        ARCHIVE_ERRORS_TOTAL,
        "Archive (PostgreSQL) calls that failed."
    );
    describe_counter!(
        INDEX_ENTRIES_COMPACTED_TOTAL,
        "Index stream entries removed once every incident they name was archived."
    );
    describe_counter!(
        INDEX_ENTRIES_PASSED_TOTAL,
        "Entries of an ancestor's region index passed over by lists of a finer region (--region-index-depth)."
    );
    describe_histogram!(
        EVENTS_PACKED_CHANGES,
        "Changes per events entry written packed (--packed-events)."
    );
    describe_counter!(
        CONTACTS_ERASED_TOTAL,
        "Reporters' contact details erased after the retention period."
    );
    describe_counter!(ROUTED_TOTAL, "Ingest entries routed, by outcome.");
    describe_counter!(DISPATCHES_TOTAL, "Dispatch attempts, by outcome.");
    describe_counter!(
        DEAD_LETTERS_TOTAL,
        "Entries moved to the dead-letter stream, by reason."
    );
    describe_counter!(
        CLAIMED_TOTAL,
        "Ingest entries taken over from stopped routers."
    );
    describe_histogram!(
        ROUTE_DECISION_SECONDS,
        Unit::Seconds,
        "Time to make one route decision."
    );
    describe_histogram!(
        REPORT_TO_DISPATCH_SECONDS,
        Unit::Seconds,
        "Time from a report being accepted to its dispatch."
    );
    describe_gauge!(
        INGEST_LAG,
        "Ingest entries not yet delivered to any router."
    );
    describe_gauge!(
        INGEST_PENDING,
        "Ingest entries delivered and not yet acknowledged."
    );
    describe_gauge!(DEAD_LETTER_LENGTH, "Entries in the dead-letter streams.");
    describe_counter!(
        RPC_REQUESTS_TOTAL,
        "gRPC requests, by method and status code."
    );
    describe_counter!(
        HTTP_REQUESTS_TOTAL,
        "HTTP requests, by route template and status."
    );
    describe_histogram!(
        HTTP_DURATION_SECONDS,
        Unit::Seconds,
        "HTTP request duration to the response head, by route template."
    );
    describe_histogram!(
        RPC_DURATION_SECONDS,
        Unit::Seconds,
        "gRPC request duration, by method."
    );
    describe_counter!(DELIVERED_TOTAL, "Dispatches delivered to subscribers.");
    describe_gauge!(SUBSCRIBERS, "Open Subscribe streams.");
    describe_counter!(REDIS_ERRORS_TOTAL, "Redis command errors, by operation.");
    describe_counter!(
        REDIS_PRIMARY_CHANGES_TOTAL,
        "Shared connections swapped to the primary the Sentinels name, by reason (readonly: the server refused a write as a replica; connection: it was gone)."
    );
    describe_counter!(
        TRANSACTION_RETRIES_TOTAL,
        "Transactions written again because a watched key changed before EXEC (another replica claimed the same request id, or changed a record a router was dispatching), by operation."
    );
    describe_counter!(
        TRANSACTION_FALLBACKS_TOTAL,
        "Batches a transaction left to its script instead, by operation and reason."
    );
    describe_counter!(TABLE_LOADS_TOTAL, "Routing table loads, by outcome.");
    describe_gauge!(
        TABLE_INFO,
        "The routing table in force (value 1, label version)."
    );
    describe_counter!(
        REPLICATION_WAITS_TOTAL,
        "Waits for replicas before a write counts as done, by operation and outcome."
    );
    describe_histogram!(
        REPLICATION_WAIT_SECONDS,
        Unit::Seconds,
        "How long waits for replicas took, by operation."
    );
    describe_gauge!(
        REDIS_USED_MEMORY,
        Unit::Bytes,
        "Redis used_memory, as seen by routers."
    );
    describe_gauge!(
        REDIS_MAX_MEMORY,
        Unit::Bytes,
        "Redis maxmemory (0 = no limit), as seen by routers."
    );
    describe_counter!(
        STREAM_ENTRIES_TRIMMED_TOTAL,
        "Entries removed from dispatch and events streams by the retention window."
    );
    describe_counter!(
        DISPATCHES_WITHOUT_RECORD_TOTAL,
        "New-case dispatches delivered without report and decision: the incident's record had left Redis (keep --stream-retention below --hot-period)."
    );
    describe_counter!(
        STREAM_TAIL_REDIRECTS_TOTAL,
        "Reconnections of a Subscribe/WatchIncidents partition tail on Redis Cluster, by reason (moved, ask, error)."
    );
    describe_counter!(
        CURSORS_EXPIRED_TOTAL,
        "Subscriptions and watches refused with OUT_OF_RANGE because entries after their cursor were trimmed, by stream."
    );
    describe_gauge!(
        CALENDAR_COVERED_UNTIL,
        Unit::Seconds,
        "When the working calendar's holiday schedule ends (Unix time of the midnight after its last day)."
    );
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The Prometheus exporter failed to build or bind.
    #[error("metrics exporter: {0}")]
    Exporter(String),
}

/// Serves Prometheus metrics on `addr` (`/metrics`) from a task on the current runtime, and
/// returns the handle (also usable to render the metrics in tests).
pub fn serve_metrics(addr: SocketAddr) -> Result<PrometheusHandle, TelemetryError> {
    let (recorder, exporter) = PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            Matcher::Full(names::RESOLVE_WORKING_SECONDS.into()),
            WORKING_TIME_BUCKETS,
        )
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?
        .set_buckets_for_metric(Matcher::Suffix("_batch_size".into()), BATCH_BUCKETS)
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    describe();
    tokio::spawn(async move {
        if let Err(e) = exporter.await {
            tracing::error!(error = ?e, "metrics listener stopped");
        }
    });
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// Log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where traces go. Tracing is off unless an OTLP endpoint is given.
#[derive(Debug, Clone)]
pub struct TraceConfig {
    /// OTLP/gRPC collector endpoint, e.g. `http://otel-collector:4317`.
    pub otlp_endpoint: Option<String>,
    /// Share of new traces sampled (0.0-1.0); a sampled parent is always followed.
    pub sample_ratio: f64,
    /// `service.name` of the spans.
    pub service_name: String,
}

/// Keeps the trace exporter alive; dropping it flushes and shuts it down.
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("trace exporter shutdown: {e}");
        }
    }
}

/// Installs the global log subscriber (`RUST_LOG` overrides the default filter) and, when an
/// OTLP endpoint is configured, the OpenTelemetry layer and the W3C trace-context propagator.
/// Must run inside the tokio runtime (the exporter's gRPC client lives on it).
pub fn init(
    format: LogFormat,
    default_filter: &str,
    trace: &TraceConfig,
) -> Result<TelemetryGuard, TelemetryError> {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt, util::SubscriberInitExt};
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let mut guard = TelemetryGuard::default();
    let otel = match &trace.otlp_endpoint {
        None => None,
        Some(endpoint) => {
            use opentelemetry_otlp::WithExportConfig;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()
                .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
            let sampler = opentelemetry_sdk::trace::Sampler::ParentBased(Box::new(
                opentelemetry_sdk::trace::Sampler::TraceIdRatioBased(
                    trace.sample_ratio.clamp(0.0, 1.0),
                ),
            ));
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name(trace.service_name.clone())
                        .build(),
                )
                .with_sampler(sampler)
                .with_batch_exporter(exporter)
                .build();
            opentelemetry::global::set_text_map_propagator(
                opentelemetry_sdk::propagation::TraceContextPropagator::new(),
            );
            let tracer = provider.tracer("gridroute");
            guard.provider = Some(provider);
            trace_context::set_exporting();
            Some(tracing_opentelemetry::layer().with_tracer(tracer))
        }
    };
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let result = match format {
        LogFormat::Text => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    let _ = result;
    Ok(guard)
}

/// Installs the global log subscriber without tracing export (tools, tests).
pub fn init_logs(format: LogFormat, default_filter: &str) {
    let _ = init(
        format,
        default_filter,
        &TraceConfig {
            otlp_endpoint: None,
            sample_ratio: 0.0,
            service_name: "gridroute".into(),
        },
    );
}

/// W3C trace context across Redis streams: the `traceparent` of the current span is written
/// into stream entries, and the reader's span takes it as its parent, so one trace spans
/// report → route → dispatch → delivery across processes.
pub mod trace_context {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};

    use opentelemetry::propagation::{Extractor, Injector};
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    static EXPORTING: AtomicBool = AtomicBool::new(false);

    /// Whether spans are exported (an OTLP endpoint is configured). Hot paths create their
    /// per-item spans only then: without an exporter they carry no trace context anywhere
    /// and cost CPU (a sixth of a router's per incident, docs/PERFORMANCE.md).
    pub fn exporting() -> bool {
        EXPORTING.load(Ordering::Relaxed)
    }

    pub(crate) fn set_exporting() {
        EXPORTING.store(true, Ordering::Relaxed);
    }

    struct Map(HashMap<String, String>);
    impl Injector for Map {
        fn set(&mut self, key: &str, value: String) {
            self.0.insert(key.to_owned(), value);
        }
    }
    impl Extractor for Map {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).map(String::as_str)
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(String::as_str).collect()
        }
    }

    /// The `traceparent` of `span` ('' when tracing is off or the span is not sampled).
    pub fn traceparent(span: &tracing::Span) -> String {
        if !exporting() {
            return String::new();
        }
        let mut m = Map(HashMap::new());
        let cx = span.context();
        opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut m));
        m.0.remove("traceparent").unwrap_or_default()
    }

    /// Makes `traceparent` (W3C, e.g. from a stream entry or gRPC metadata) the parent of
    /// `span`; a missing or malformed value leaves the span a root.
    pub fn set_parent(span: &tracing::Span, traceparent: &str) {
        if traceparent.is_empty() || !exporting() {
            return;
        }
        let m = Map(HashMap::from([(
            "traceparent".to_owned(),
            traceparent.to_owned(),
        )]));
        let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&m));
        let _ = span.set_parent(cx);
    }

    /// The trace id of `span` as 32 hex digits ('' when tracing is off), for log lines.
    pub fn trace_id(span: &tracing::Span) -> String {
        use opentelemetry::trace::TraceContextExt;
        if !exporting() {
            return String::new();
        }
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        if sc.is_valid() {
            sc.trace_id().to_string()
        } else {
            String::new()
        }
    }
}
