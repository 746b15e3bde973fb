//! Wiring of a serving process: config → telemetry → store → router and API → drain.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use gridroute_api::{
    ApiState, Security,
    audit::AuditTrail,
    authz::Identity,
    limits::{LimitConfig, Limits},
};
use gridroute_auth::{
    Authenticator,
    certs::CertMap,
    dev::{DEV_AUDIENCE, DEV_ISSUER, DevKeys},
    jwks::{JwksSource, Keys},
    token::{ClaimMapping, TokenConfig, Verifier},
};
use gridroute_core::RoutingTable;
use gridroute_router::RouterConfig;
use gridroute_store::{Store, local::LocalRedis};
use tokio::sync::watch;
use tracing::{error, info, warn};

/// Which parts of gridroute this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// API and router in one process.
    All,
    /// Only the gRPC API.
    Api,
    /// Only router workers.
    Router,
}

/// Options of `serve` and `dev`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeOptions {
    /// Redis URL (redis://[user:pass@]host:port/db, rediss:// for TLS). `dev` starts a private
    /// redis-server when absent.
    #[arg(long, env = "GRIDROUTE_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Directory holding grids.geojson and rules.yaml; the built-in Dawukou sample when absent.
    #[arg(long, env = "GRIDROUTE_TABLES")]
    pub tables: Option<PathBuf>,
    /// gRPC listen address.
    #[arg(long, env = "GRIDROUTE_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,
    /// HTTP/JSON and Open311 listen address (the OpenAPI document at `/openapi.json`); `off`
    /// disables.
    #[arg(long, env = "GRIDROUTE_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: String,
    /// Prometheus metrics listen address (`/metrics`); `off` disables.
    #[arg(long, env = "GRIDROUTE_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: String,
    /// What this process runs.
    #[arg(long, env = "GRIDROUTE_ROLE", value_enum, default_value = "all")]
    pub role: Role,
    /// Route each report in the API process that accepts it and dispatch it in the same Redis
    /// script call that records it (one call instead of report, router read and dispatch).
    /// Reports it cannot route, and categories with duplicate detection, still go through the
    /// ingest stream to the routers. Needs the API (role `all` or `api`).
    #[arg(long, env = "GRIDROUTE_INLINE_ROUTING")]
    pub inline_routing: bool,
    /// Write with plain commands in Redis transactions (`WATCH`, `MULTI`, `EXEC`) instead of
    /// scripts: the API its reports, the routers their first dispatches (on their own
    /// connections). The same record and exactly-once, less Redis CPU per incident. One Redis
    /// or Sentinel; on Redis Cluster (and for routers over TLS) the scripts stay.
    #[arg(long, env = "GRIDROUTE_TRANSACTIONS")]
    pub transactions: bool,
    /// With `--transactions`, the fewest writes a batch needs to go by transaction (a group
    /// commit's reports, a router's first dispatches of one partition); smaller batches take
    /// the script, whose one round trip costs less than a transaction's two at moderate rates.
    #[arg(long, env = "GRIDROUTE_TRANSACTION_MIN_BATCH", default_value_t = 1)]
    pub transaction_min_batch: usize,
    /// With `--transactions`, write each batch's changes as one entry of its partition's events
    /// stream instead of one per change (less Redis CPU). Replicas of this release read both
    /// forms, earlier ones only one per change: turn it on once every replica runs this
    /// release, and turn it off before going back to an earlier one (docs/OPERATIONS.md).
    #[arg(long, env = "GRIDROUTE_PACKED_EVENTS")]
    pub packed_events: bool,
    /// With `--transactions`, write region index entries only for the first N levels of a
    /// grid's path (e.g. 2: district and street), the last naming each incident under its
    /// finer codes; lists of finer regions read that level's index. 0: every level. Recorded
    /// in Redis by the first replica that uses it; fixed for the deployment from then on
    /// (docs/OPERATIONS.md).
    #[arg(long, env = "GRIDROUTE_REGION_INDEX_DEPTH", default_value_t = 0)]
    pub region_index_depth: usize,
    /// Keep each idempotency claim, without an expiry, as long as its incident's record is in
    /// Redis; the archive mover gives it its 7 days when it moves the record out. Less Redis
    /// CPU per report (no expiry to keep per report), more memory for incidents held longer
    /// than a week, and a longer idempotency window (docs/OPERATIONS.md).
    #[arg(long, env = "GRIDROUTE_CLAIMS_WITH_RECORDS")]
    pub claims_with_records: bool,
    /// Number of stream partitions; fixed for the life of a deployment.
    #[arg(long, env = "GRIDROUTE_PARTITIONS", default_value_t = 4)]
    pub partitions: u16,
    /// Prefix of every Redis key (several deployments can share one Redis).
    #[arg(long, env = "GRIDROUTE_KEY_PREFIX", default_value = "gr")]
    pub key_prefix: String,
    /// Consumer name of this router in the consumer group (default: host-pid).
    #[arg(long, env = "GRIDROUTE_CONSUMER_NAME")]
    pub consumer_name: Option<String>,
    /// How long an ingest entry must be pending before another router takes it over.
    #[arg(long, env = "GRIDROUTE_CLAIM_MIN_IDLE_MS", default_value_t = 30_000)]
    pub claim_min_idle_ms: u64,
    /// How often routers look for due SLA timers (warnings, urges, escalations) when none was
    /// due at the last look.
    #[arg(long, env = "GRIDROUTE_TIMER_POLL_MS", default_value_t = 200)]
    pub timer_poll_ms: u64,
    /// How long dispatch and events streams keep their entries, e.g. `30d`: a subscriber or a
    /// watcher whose cursor is older gets OUT_OF_RANGE and resyncs with ListIncidents. The
    /// incident records are not affected.
    #[arg(long, env = "GRIDROUTE_STREAM_RETENTION", default_value = "30d")]
    pub stream_retention: String,
    /// The archive of closed incidents: a PostgreSQL URL
    /// (`postgres://user:password@host:5432/gridroute`). Without one, every incident stays in
    /// Redis. With one, routers move incidents closed longer than --hot-period there, and the
    /// API reads them back transparently; pending migrations are applied at start.
    #[arg(long, env = "GRIDROUTE_ARCHIVE_URL", hide_env_values = true)]
    pub archive_url: Option<String>,
    /// How long a closed (or cancelled) incident stays in Redis before the archive takes it.
    #[arg(long, env = "GRIDROUTE_HOT_PERIOD", default_value = "90d")]
    pub hot_period: String,
    /// How often routers look for incidents to archive.
    #[arg(long, env = "GRIDROUTE_ARCHIVE_EVERY", default_value = "60s")]
    pub archive_every: String,
    /// Durability: a report is acknowledged, and a dispatch counts as done, only once this many
    /// replicas have it (`WAIT`), so that a Sentinel failover cannot lose it. 0 = the
    /// primary's word (asynchronous replication). Not on Redis Cluster.
    #[arg(long, env = "GRIDROUTE_WAIT_REPLICAS", default_value_t = 0)]
    pub wait_replicas: u32,
    /// How long to wait for those replicas; a report they do not confirm in time is answered
    /// UNAVAILABLE (retry with the same request_id).
    #[arg(long, env = "GRIDROUTE_WAIT_TIMEOUT_MS", default_value_t = 1000)]
    pub wait_timeout_ms: u64,
    /// Time allowed after SIGTERM to finish in-flight work.
    #[arg(long, env = "GRIDROUTE_SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,
    /// Log format.
    #[arg(long, env = "GRIDROUTE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormatArg,
    /// OpenTelemetry collector (OTLP over gRPC), e.g. http://otel-collector:4317; tracing is
    /// off when absent.
    #[arg(long, env = "GRIDROUTE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Share of new traces sampled (0.0-1.0); a caller's sampled trace is always followed.
    #[arg(long, env = "GRIDROUTE_TRACE_SAMPLE_RATIO", default_value_t = 0.1)]
    pub trace_sample_ratio: f64,
    /// PEM certificate (chain) of the gRPC endpoint; with --tls-key, the endpoint speaks TLS.
    #[arg(long, env = "GRIDROUTE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the gRPC endpoint.
    #[arg(long, env = "GRIDROUTE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA of client certificates: when given, callers must present one (mutual TLS), and
    /// `--cert-map` can make a certificate alone identify a system.
    #[arg(long, env = "GRIDROUTE_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// With --tls-client-ca: a client certificate is optional, so that callers with bearer
    /// tokens and systems with certificates share the endpoint (every call still needs one or
    /// the other).
    #[arg(
        long,
        env = "GRIDROUTE_TLS_CLIENT_OPTIONAL",
        requires = "tls_client_ca"
    )]
    pub tls_client_optional: bool,
    /// service.name of the exported spans.
    #[arg(long, env = "GRIDROUTE_SERVICE_NAME", default_value = "gridroute")]
    pub service_name: String,
    #[command(flatten)]
    pub auth: AuthOptions,
}

/// How callers are identified and limited, and how long personal data and audit records stay.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthOptions {
    /// Key set (JWKS) that bearer tokens are verified against: a file (a mounted Secret) or the
    /// identity provider's https:// URL. `dev` makes its own when absent.
    #[arg(long, env = "GRIDROUTE_JWKS")]
    pub jwks: Option<String>,
    /// PEM CA certificates trusted for an https JWKS URL besides the public roots.
    #[arg(long, env = "GRIDROUTE_JWKS_CA")]
    pub jwks_ca: Option<PathBuf>,
    /// How often the key set is loaded again (it is also reloaded, at most every 10 s, when a
    /// token names an unknown key id).
    #[arg(long, env = "GRIDROUTE_JWKS_REFRESH", default_value = "5m")]
    pub jwks_refresh: String,
    /// The issuer (`iss`) tokens must name.
    #[arg(long, env = "GRIDROUTE_TOKEN_ISSUER")]
    pub token_issuer: Option<String>,
    /// The audience (`aud`) tokens must include.
    #[arg(long, env = "GRIDROUTE_TOKEN_AUDIENCE", default_value = "gridroute")]
    pub token_audience: String,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[arg(long, env = "GRIDROUTE_TOKEN_LEEWAY_SECS", default_value_t = 30)]
    pub token_leeway_secs: u64,
    /// The claim naming the person acting.
    #[arg(long, env = "GRIDROUTE_CLAIM_PERSON", default_value = "sub")]
    pub claim_person: String,
    /// The claim naming the principal as `kind:id` (or `{"kind": …, "id": …}`).
    #[arg(long, env = "GRIDROUTE_CLAIM_PRINCIPAL", default_value = "gridroute")]
    pub claim_principal: String,
    /// The roles claim searched for `gridroute:<kind>:<id>` when the principal claim is absent.
    #[arg(long, env = "GRIDROUTE_CLAIM_ROLES", default_value = "roles")]
    pub claim_roles: String,
    /// The scope claim, searched like the roles claim.
    #[arg(long, env = "GRIDROUTE_CLAIM_SCOPE", default_value = "scope")]
    pub claim_scope: String,
    /// YAML file mapping verified client certificates (mTLS, with --tls-client-ca) to
    /// principals.
    #[arg(long, env = "GRIDROUTE_CERT_MAP")]
    pub cert_map: Option<PathBuf>,
    /// Rate limits per principal kind over the defaults, `kind=rate:burst,…` (calls per second
    /// per API replica), e.g. `department=50:100`.
    #[arg(long, env = "GRIDROUTE_RATE_LIMITS", default_value = "")]
    pub rate_limits: String,
    /// Most streams (Subscribe, WatchIncidents) one principal holds open per API replica.
    #[arg(
        long,
        env = "GRIDROUTE_MAX_STREAMS_PER_PRINCIPAL",
        default_value_t = 16
    )]
    pub max_streams_per_principal: usize,
    /// Whether co-handlers (协办) receive the reporter's contact unmasked.
    #[arg(long, env = "GRIDROUTE_CO_HANDLERS_SEE_CONTACT")]
    pub co_handlers_see_contact: bool,
    /// How long after an incident closes the reporter's contact details are erased (PIPL),
    /// e.g. `180d`.
    #[arg(long, env = "GRIDROUTE_CONTACT_RETENTION", default_value = "180d")]
    pub contact_retention: String,
    /// How long audit records are kept (China's Cybersecurity Law asks for at least six
    /// months of logs).
    #[arg(long, env = "GRIDROUTE_AUDIT_RETENTION", default_value = "400d")]
    pub audit_retention: String,
    /// Trust the `x-gridroute-principal` metadata instead of credentials. For experiments on a
    /// laptop only: anyone can then act as anyone. Never the default.
    #[arg(long, env = "GRIDROUTE_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
}

/// Connects to the archive and applies pending migrations, waiting for PostgreSQL like for
/// Redis (a deployment may start before its database); `None` only when stopped meanwhile.
async fn open_archive(
    url: &str,
    stop: &mut watch::Receiver<bool>,
) -> Result<gridroute_archive::Archive, BoxError> {
    let archive = gridroute_archive::Archive::connect(url)?;
    let mut retry = gridroute_store::retry::Retry::new();
    loop {
        match archive.migrate().await {
            Ok(applied) => {
                if !applied.is_empty() {
                    info!(?applied, "archive migrations applied");
                }
                return Ok(archive);
            }
            Err(gridroute_archive::ArchiveError::Unavailable(e)) => {
                warn!(error = %e, "waiting for the archive (PostgreSQL)");
                if retry.wait(stop).await {
                    return Err("stopped while waiting for the archive".into());
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn duration(flag: &str, text: &str) -> Result<Duration, BoxError> {
    gridroute_core::sla::parse_duration(text)
        .map(|ms| Duration::from_millis(ms as u64))
        .ok_or_else(|| format!("--{flag} {text:?}: a duration like 180d, 12h or 30s").into())
}

/// Log format flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormatArg {
    /// Human-readable.
    Text,
    /// JSON lines.
    Json,
}

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Connects, retrying until Redis answers or shutdown is requested.
async fn connect(
    url: &str,
    o: &ServeOptions,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<Store>, BoxError> {
    let mut retry = gridroute_store::retry::Retry::new();
    loop {
        match Store::connect(url, &o.key_prefix, o.partitions).await {
            Ok(s) => return Ok(Some(s)),
            Err(gridroute_store::StoreError::Unavailable(e)) => {
                warn!(error = %e, "redis unreachable at start; retrying");
            }
            Err(e) => return Err(e.into()),
        }
        if retry.wait(shutdown).await {
            return Ok(None);
        }
    }
}

/// Runs `serve` (or `dev`, which may start its own Redis and prints how to use it).
pub async fn run(o: ServeOptions, dev: bool) -> Result<(), BoxError> {
    // Held to the end: dropping it flushes the spans still buffered.
    let _telemetry = gridroute_telemetry::init(
        match o.log_format {
            LogFormatArg::Text => gridroute_telemetry::LogFormat::Text,
            LogFormatArg::Json => gridroute_telemetry::LogFormat::Json,
        },
        "info,h2=warn,tower=warn,hyper=warn",
        &gridroute_telemetry::TraceConfig {
            otlp_endpoint: o.otlp_endpoint.clone().filter(|e| !e.is_empty()),
            sample_ratio: o.trace_sample_ratio,
            service_name: o.service_name.clone(),
        },
    )?;
    if o.metrics_addr != "off" {
        gridroute_telemetry::serve_metrics(o.metrics_addr.parse()?)?;
    }
    let sources = crate::tables::read_sources(o.tables.as_deref())?;
    let table = crate::tables::load_sources(&sources)?;
    info!(version = %table.version, grids = table.grids.grids().len(), rules = table.rules.len(), "routing table loaded");
    let tables = gridroute_core::table::shared(table);

    let mut local = None;
    let url =
        match (&o.redis_url, dev) {
            (Some(u), _) => u.clone(),
            (None, true) => {
                let r = LocalRedis::start_for_dev()?;
                info!(url = %r.url(), "started a private redis-server (stopped on exit)");
                let url = r.url();
                local = Some(r);
                url
            }
            (None, false) => return Err(
                "--redis-url (or GRIDROUTE_REDIS_URL) is required; `gridroute dev` starts its own"
                    .into(),
            ),
        };

    let (stop_tx, mut stop_rx) = watch::channel(false);
    tokio::spawn({
        let stop_tx = stop_tx.clone();
        async move {
            shutdown_signal().await;
            info!("shutdown requested");
            let _ = stop_tx.send(true);
        }
    });
    let Some(store) = connect(&url, &o, &mut stop_rx).await? else {
        return Ok(());
    };
    let store = store
        .with_replication(gridroute_store::Replication {
            replicas: o.wait_replicas,
            timeout: Duration::from_millis(o.wait_timeout_ms),
        })?
        .with_transactions(o.transactions)
        .with_transaction_min_batch(o.transaction_min_batch)
        .with_packed_events(o.packed_events)
        .with_region_index_depth(o.region_index_depth)
        .with_claims_kept(o.claims_with_records);
    store.record_region_index_depth().await?;
    // Once a version was published, the one in force in Redis wins over --tables.
    store.bootstrap_table(&tables, &sources).await?;
    drop(sources);

    let archive = match &o.archive_url {
        None => None,
        Some(url) => Some(open_archive(url, &mut stop_rx).await?),
    };
    let mut tasks = tokio::task::JoinSet::new();
    let contact_retention = duration("contact-retention", &o.auth.contact_retention)?;
    let stream_retention = duration("stream-retention", &o.stream_retention)?;
    if archive.is_some() && stream_retention > duration("hot-period", &o.hot_period)? {
        // Dispatch entries read the report and decision from the record: one that outlives it
        // is delivered without them (docs/OPERATIONS.md).
        warn!(
            stream_retention = %o.stream_retention,
            hot_period = %o.hot_period,
            "--stream-retention is longer than --hot-period: dispatches replayed after their incident moved to the archive arrive without report and decision"
        );
    }
    tasks.spawn({
        let (s, t, rx) = (store.clone(), tables.clone(), stop_rx.clone());
        async move { s.sync_tables(t, rx).await }
    });
    if o.role != Role::Api {
        let cfg = RouterConfig {
            consumer_name: o
                .consumer_name
                .clone()
                .unwrap_or_else(gridroute_router::default_consumer_name),
            claim_min_idle: Duration::from_millis(o.claim_min_idle_ms),
            ..RouterConfig::default()
        };
        let (s, t, rx) = (store.clone(), tables.clone(), stop_rx.clone());
        tasks.spawn(async move {
            if let Err(e) = gridroute_router::run(s, t, cfg, rx).await {
                error!(error = %e, "router failed");
            }
        });
        tasks.spawn(gridroute_router::stats_loop(
            store.clone(),
            Duration::from_secs(5),
            stop_rx.clone(),
        ));
        tasks.spawn(gridroute_router::timers_loop(
            store.clone(),
            tables.clone(),
            Duration::from_millis(o.timer_poll_ms),
            stop_rx.clone(),
        ));
        tasks.spawn(gridroute_router::retention_loop(
            store.clone(),
            contact_retention,
            (contact_retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(60)),
            stop_rx.clone(),
        ));
        tasks.spawn(gridroute_router::stream_retention_loop(
            store.clone(),
            tables.clone(),
            stream_retention,
            (stream_retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(60)),
            stop_rx.clone(),
        ));
        if let Some(archive) = &archive {
            tasks.spawn(gridroute_router::archive_loop(
                store.clone(),
                archive.clone(),
                tables.clone(),
                gridroute_router::ArchiveSettings {
                    hot_period: duration("hot-period", &o.hot_period)?,
                    contact_retention,
                    every: duration("archive-every", &o.archive_every)?,
                    batch: 100,
                },
                stop_rx.clone(),
            ));
        }
    }
    let mut dev_tokens = None;
    if o.role != Role::Router {
        let (identity, tokens) = identity(&o, dev, &tables.load(), &mut tasks, &stop_rx).await?;
        dev_tokens = tokens;
        let security = Security {
            identity,
            limits: Limits::new(LimitConfig {
                streams_per_principal: o.auth.max_streams_per_principal,
                ..LimitConfig::default().with_rates(&o.auth.rate_limits)?
            }),
            audit: AuditTrail::new(
                store.clone(),
                duration("audit-retention", &o.auth.audit_retention)?,
            ),
            co_handlers_see_contact: o.auth.co_handlers_see_contact,
        };
        let listener = tokio::net::TcpListener::bind(o.grpc_addr).await?;
        let api_store = if o.inline_routing {
            store
                .clone()
                .with_inline_route(gridroute_router::inline_route(tables.clone()))
        } else {
            store.clone()
        };
        let mut state = ApiState::new(api_store, tables.clone(), stop_rx.clone(), security);
        state.tls = server_tls(&o)?;
        state.archive = archive.clone();
        if o.http_addr != "off" {
            let addr: SocketAddr = o
                .http_addr
                .parse()
                .map_err(|e| format!("--http-addr {:?}: {e}", o.http_addr))?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("--http-addr {addr}: {e}"))?;
            let state = state.clone();
            let tls = http_tls(&o)?;
            let mut rx = stop_rx.clone();
            tasks.spawn(async move {
                let stop = async move {
                    let _ = rx.wait_for(|s| *s).await;
                };
                if let Err(e) = gridroute_http::serve(state, listener, tls, stop).await {
                    error!(error = %e, "HTTP server failed");
                }
            });
            info!(%addr, "serving HTTP/JSON and Open311");
        }
        let mut rx = stop_rx.clone();
        tasks.spawn(async move {
            let stop = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = gridroute_api::serve(state, listener, stop).await {
                error!(error = %e, "gRPC server failed");
            }
        });
        info!(addr = %o.grpc_addr, "serving gRPC");
    }
    if dev {
        crate::dev::print_dev_help(&o, dev_tokens.as_deref());
    }

    let _ = stop_rx.wait_for(|s| *s).await;
    let grace = Duration::from_millis(o.shutdown_grace_ms);
    let drained =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        warn!(
            grace_ms = o.shutdown_grace_ms,
            "grace period over; exiting with work in flight (it stays pending in Redis)"
        );
    }
    drop(local);
    info!("stopped");
    Ok(())
}

/// The endpoint's TLS settings from the flags (files read once at start).
fn server_tls(o: &ServeOptions) -> Result<Option<tonic::transport::ServerTlsConfig>, BoxError> {
    let (Some(cert), Some(key)) = (&o.tls_cert, &o.tls_key) else {
        return Ok(None);
    };
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let mut tls = tonic::transport::ServerTlsConfig::new().identity(
        tonic::transport::Identity::from_pem(read(cert)?, read(key)?),
    );
    if let Some(ca) = &o.tls_client_ca {
        tls = tls
            .client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?))
            .client_auth_optional(o.tls_client_optional);
    }
    Ok(Some(tls))
}

/// The HTTP face's TLS: the gRPC port's certificate, key and client CA.
fn http_tls(o: &ServeOptions) -> Result<Option<gridroute_http::tls::TlsFiles>, BoxError> {
    let (Some(cert), Some(key)) = (&o.tls_cert, &o.tls_key) else {
        return Ok(None);
    };
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    Ok(Some(gridroute_http::tls::TlsFiles {
        cert_pem: read(cert)?,
        key_pem: read(key)?,
        client_ca_pem: o.tls_client_ca.as_ref().map(read).transpose()?,
        client_optional: o.tls_client_optional,
    }))
}

/// How callers are identified: tokens against a JWKS and/or certificates through a map; in
/// `dev` without a JWKS, tokens signed by a development key (returned with ready-made tokens
/// for the table's principals); `--insecure-no-auth` on request only.
async fn identity(
    o: &ServeOptions,
    dev: bool,
    table: &RoutingTable,
    tasks: &mut tokio::task::JoinSet<()>,
    stop: &watch::Receiver<bool>,
) -> Result<(Identity, Option<Vec<(String, String)>>), BoxError> {
    let a = &o.auth;
    if a.insecure_no_auth {
        error!(
            "--insecure-no-auth: callers are NOT authenticated; anyone can act as any department \
             by naming it in x-gridroute-principal. Never run this with real data."
        );
        eprintln!(
            "\n*** WARNING: --insecure-no-auth: no authentication, anyone can act as anyone ***\n"
        );
        return Ok((Identity::Insecure, None));
    }
    let mut dev_tokens = None;
    let (source, issuer, audience) = match (&a.jwks, dev) {
        (Some(j), _) if j.starts_with("https://") || j.starts_with("http://") => {
            let ca_pem = match &a.jwks_ca {
                Some(p) => {
                    Some(std::fs::read(p).map_err(|e| format!("--jwks-ca {}: {e}", p.display()))?)
                }
                None => None,
            };
            (
                Some(JwksSource::Url {
                    url: j.clone(),
                    ca_pem,
                }),
                a.token_issuer.clone(),
                a.token_audience.clone(),
            )
        }
        (Some(j), _) => (
            Some(JwksSource::File(PathBuf::from(j))),
            a.token_issuer.clone(),
            a.token_audience.clone(),
        ),
        (None, true) => {
            let dir = crate::dev::dev_dir();
            let keys = DevKeys::load_or_create(&dir)?;
            dev_tokens = Some(crate::dev::write_dev_tokens(&keys, table, &dir)?);
            (
                Some(JwksSource::Inline(keys.jwks())),
                Some(DEV_ISSUER.to_owned()),
                DEV_AUDIENCE.to_owned(),
            )
        }
        (None, false) => (None, None, a.token_audience.clone()),
    };
    let mut auth = Authenticator::default();
    if let Some(source) = source {
        let keys = std::sync::Arc::new(Keys::new(source));
        match keys.load().await {
            Ok(n) => info!(keys = n, "token key set loaded"),
            Err(e) if matches!(keys.source(), JwksSource::Url { .. }) => {
                warn!(error = %e, "identity provider unreachable at start: token calls get UNAVAILABLE until its key set loads");
            }
            Err(e) => return Err(format!("--jwks: {e}").into()),
        }
        tasks.spawn(
            keys.clone()
                .refresh_loop(duration("jwks-refresh", &a.jwks_refresh)?, stop.clone()),
        );
        auth.tokens = Some(std::sync::Arc::new(Verifier::new(
            TokenConfig {
                issuer,
                audience: Some(audience).filter(|a| !a.is_empty()),
                leeway: Duration::from_secs(a.token_leeway_secs),
                claims: ClaimMapping {
                    person: a.claim_person.clone(),
                    principal: a.claim_principal.clone(),
                    roles: a.claim_roles.clone(),
                    scope: a.claim_scope.clone(),
                },
            },
            keys,
        )));
    }
    if let Some(path) = &a.cert_map {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--cert-map {}: {e}", path.display()))?;
        let map = CertMap::from_yaml(&text)
            .map_err(|e| format!("--cert-map {}: {}", path.display(), e.join("; ")))?;
        if o.tls_client_ca.is_none() {
            warn!(
                "--cert-map without --tls-client-ca: no client presents a certificate, the map is never used"
            );
        }
        info!(entries = map.len(), "client certificate map loaded");
        auth.certs = Some(std::sync::Arc::new(map));
    }
    if auth.tokens.is_none() && auth.certs.is_none() {
        return Err("no way to authenticate callers: give --jwks (a file or the identity provider's https URL) and/or --cert-map; `gridroute dev` makes a development key".into());
    }
    Ok((Identity::Credentials(auth), dev_tokens))
}
