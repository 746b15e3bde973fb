//! Wiring of a serving process: config → telemetry → store → router and API → drain.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use gridroute_api::ApiState;
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
    /// Prometheus metrics listen address (`/metrics`); `off` disables.
    #[arg(long, env = "GRIDROUTE_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: String,
    /// What this process runs.
    #[arg(long, env = "GRIDROUTE_ROLE", value_enum, default_value = "all")]
    pub role: Role,
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
    /// PEM CA of client certificates: when given, callers must present one (mutual TLS).
    #[arg(long, env = "GRIDROUTE_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// service.name of the exported spans.
    #[arg(long, env = "GRIDROUTE_SERVICE_NAME", default_value = "gridroute")]
    pub service_name: String,
}

/// Log format flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormatArg {
    /// Human-readable.
    Text,
    /// JSON lines.
    Json,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
    let mut delay = Duration::from_millis(200);
    loop {
        match Store::connect(url, &o.key_prefix, o.partitions).await {
            Ok(s) => return Ok(Some(s)),
            Err(gridroute_store::StoreError::Unavailable(e)) => {
                warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "redis unreachable at start");
            }
            Err(e) => return Err(e.into()),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => return Ok(None),
        }
        delay = (delay * 2).min(Duration::from_secs(5));
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
                let r = LocalRedis::start()?;
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
    // Once a version was published, the one in force in Redis wins over --tables.
    store.bootstrap_table(&tables, &sources).await?;
    drop(sources);

    let mut tasks = tokio::task::JoinSet::new();
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
            Duration::from_millis(o.timer_poll_ms),
            stop_rx.clone(),
        ));
    }
    if o.role != Role::Router {
        let listener = tokio::net::TcpListener::bind(o.grpc_addr).await?;
        let mut state = ApiState::new(store.clone(), tables.clone(), stop_rx.clone());
        state.tls = server_tls(&o)?;
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
        print_dev_help(&o);
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
        tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?));
    }
    Ok(Some(tls))
}

fn print_dev_help(o: &ServeOptions) {
    let addr = o.grpc_addr;
    println!(
        "\ngridroute dev is serving the Dawukou sample on {addr} (metrics: http://{}/metrics)\n\n\
         In another terminal:\n  \
         gridroute subscribe --addr http://{addr} --department property-office\n  \
         gridroute report --addr http://{addr} --category city.vehicle.abandoned --lng 106.3852 --lat 39.0203 \\\n      --description 'zombie car, flat tyres, two months'\n  \
         gridroute explain --addr http://{addr} --category city.fire_lane.blocked --lng 106.3852 --lat 39.0203\n  \
         gridroute get --addr http://{addr} INCIDENT_ID\n\n\
         (cargo run -q -p gridroute -- … works in place of gridroute.) Ctrl-C stops it and its private Redis.\n",
        o.metrics_addr
    );
}
