//! `gridroute-loadtest`: drives a gridroute endpoint with realistic reports and measures what
//! its users feel.
//!
//! Scenarios: `report` (unary ReportIncident), `report-batch` (the client-streaming
//! ReportIncidents), `e2e` (reports plus a subscriber for every department, measuring the time
//! from sending a report to its dispatch arriving). Closed loop (`--concurrency`, as fast as
//! the server answers) or open loop (`--rate`, a constant arrival rate with latency measured
//! from each request's intended start, correcting coordinated omission as wrk2 does).
//! Traffic comes from the routing table: points inside grids with hot spots, a category and
//! urgency mix, a share of duplicate request ids and of points outside every grid.

/// mimalloc, as in gridroute itself: many small buffers per message (protobuf, strings), where
/// glibc's malloc/free took ~20 % of gridroute's CPU under load.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod echo;
mod html;
mod http;
mod metadata;
mod report;
mod traffic;

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clap::{Parser, ValueEnum};
use dashmap::DashMap;
use gridroute_proto::v1::{
    self as pb, dispatch_service_client::DispatchServiceClient,
    incident_service_client::IncidentServiceClient,
};
use hdrhistogram::Histogram;
use tonic::transport::Channel;

use crate::{report::Summary, traffic::Traffic};

/// How reports reach gridroute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Protocol {
    /// gRPC on --addr.
    Grpc,
    /// HTTP/JSON (`POST /v1/incidents`) on --http-addr; report and e2e scenarios (subscribers
    /// stay on gRPC).
    Http,
}

/// What to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Unary ReportIncident calls.
    Report,
    /// ReportIncidents client streams of --batch-size reports.
    ReportBatch,
    /// Reports plus subscribers for every department: report → dispatch latency, lost count.
    E2e,
    /// As e2e with ReportIncidents streams of --batch-size reports: routed throughput with
    /// zero loss, and the time from a stream's start to each of its dispatches arriving.
    E2eBatch,
    /// As e2e, and each department accepts then resolves every case it receives, as
    /// departments would: accept and resolve latencies and the whole loop.
    Lifecycle,
    /// Unary reports against a bare tonic server the tool starts itself (same messages, no
    /// work): the gRPC framework's own ceiling on this machine. --addr is ignored.
    Echo,
}

impl Scenario {
    /// Whether subscribers follow every report to its dispatch.
    fn follows(self) -> bool {
        matches!(self, Self::E2e | Self::E2eBatch | Self::Lifecycle)
    }

    /// Whether reports go in ReportIncidents streams of --batch-size.
    fn batched(self) -> bool {
        matches!(self, Self::ReportBatch | Self::E2eBatch)
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "gridroute-loadtest",
    version,
    about = "Load tester for gridroute"
)]
struct Args {
    /// gridroute gRPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// Scenario.
    #[arg(long, value_enum, default_value = "report")]
    scenario: Scenario,
    /// How reports are sent.
    #[arg(long, value_enum, default_value = "grpc")]
    protocol: Protocol,
    /// gridroute HTTP/JSON endpoint (with --protocol http).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    http_addr: String,
    /// Open loop: this many reports per second (intended start times, CO-corrected latency).
    #[arg(long)]
    rate: Option<u64>,
    /// Open loop in stages, e.g. '10s:1000,20s:5000,30s:10000' (ramp-up; replaces --rate and
    /// --duration).
    #[arg(long)]
    stages: Option<String>,
    /// Metadata sent with every call, `key=value` (repeatable), e.g.
    /// a gateway's API key.
    #[arg(long = "metadata", value_name = "KEY=VALUE")]
    metadata: Vec<String>,
    /// Bearer token sent as `authorization: Bearer <token>` with every call (a reporting
    /// system's token for the report scenarios).
    #[arg(long, env = "GRIDROUTE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Tokens by principal, a JSON object as `gridroute dev` writes to
    /// target/gridroute-dev/tokens.json: reports are sent with the token of
    /// `source_system:gridroute-loadtest`, each department subscribes (and acts) with its own.
    #[arg(long, env = "GRIDROUTE_TOKENS")]
    tokens: Option<std::path::PathBuf>,
    /// PEM CA that signed an https:// endpoint's certificate (default: the public web roots).
    #[arg(long, env = "GRIDROUTE_CA_CERT")]
    ca_cert: Option<std::path::PathBuf>,
    /// Serve only the echo service (the `echo` scenario's server) on a free port: print its
    /// address and run until killed. A separate process, so that its CPU per call can be read
    /// apart from the load generator's (`make targets`).
    #[arg(long)]
    serve_echo: bool,
    /// Write an HTML report: throughput, call latency and report → subscriber latency over
    /// time, latency by percentile (log scale to p99.99 and beyond), and the figures.
    #[arg(long)]
    html: Option<std::path::PathBuf>,
    /// Draw an earlier run (its --json file) dashed on every chart of --html, and beside every
    /// figure: a before/after in one page.
    #[arg(long, requires = "html")]
    compare: Option<std::path::PathBuf>,
    /// Closed loop: this many calls in flight (ignored with --rate).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to run, e.g. 10s, 1m (default 10s unless --requests is given).
    #[arg(long)]
    duration: Option<String>,
    /// Stop after this many reports.
    #[arg(long)]
    requests: Option<u64>,
    /// HTTP/2 connections to spread calls over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Reports per ReportIncidents stream (report-batch).
    #[arg(long, default_value_t = 500)]
    batch_size: usize,
    /// Routing table directory to draw traffic from (default: the built-in Dawukou sample).
    #[arg(long)]
    tables: Option<std::path::PathBuf>,
    /// Share of reports that repeat an earlier request_id (idempotent retries).
    #[arg(long, default_value_t = 0.02)]
    duplicate_share: f64,
    /// Share of reports at points outside every grid.
    #[arg(long, default_value_t = 0.02)]
    outside_share: f64,
    /// Write a JSON summary (ghz-style fields) to this file, or `-` for stdout.
    #[arg(long)]
    json: Option<String>,
    /// Fail (exit 1) when a threshold is crossed, e.g. 'p99>5ms,error_rate>0.1%,lost>0'.
    #[arg(long)]
    fail_if: Option<String>,
    /// After the load, how long to wait for outstanding dispatches (e2e).
    #[arg(long, default_value = "5s")]
    drain: String,
}

/// Parses `500ms`, `10s`, `2m`.
fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit() && c != '.')?);
    let v: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

/// One side of an end-to-end measurement.
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// The report was sent at this instant; its dispatch has not arrived.
    Sent(Instant),
    /// The dispatch arrived at this instant, before the report's answer.
    Arrived(Instant),
}

/// Counters and histograms shared by the workers.
struct Shared {
    sent: AtomicU64,
    ok: AtomicU64,
    codes: Mutex<BTreeMap<String, u64>>,
    latency: Mutex<Histogram<u64>>,
    e2e: Mutex<Histogram<u64>>,
    /// How late each call started against its open-loop schedule: the load generator's own
    /// delay (its pacer and tasks waiting for a core), which every latency above includes.
    send_delay: Mutex<Histogram<u64>>,
    received: AtomicU64,
    /// incident id → when its report was (intended to be) sent, or when its dispatch arrived if
    /// that beat the report's answer: whichever side comes second completes the measurement.
    /// One map, updated through its entry API, so the two sides cannot miss each other.
    inflight: DashMap<String, Slot>,
    errors: AtomicU64,
    stop: AtomicBool,
    /// Latencies of the current second, for the over-time charts.
    window: Mutex<Histogram<u64>>,
    /// Report → subscriber latencies of the current second.
    e2e_window: Mutex<Histogram<u64>>,
    completed: AtomicU64,
    samples: Mutex<Vec<html::Sample>>,
    /// Lifecycle scenario: AcceptIncident and ResolveIncident latencies, and report → resolved.
    accept: Mutex<Histogram<u64>>,
    resolve: Mutex<Histogram<u64>>,
    full_loop: Mutex<Histogram<u64>>,
    lifecycle_errors: AtomicU64,
}

impl Shared {
    fn new() -> Self {
        let h =
            || Mutex::new(Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("valid bounds"));
        Self {
            sent: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            codes: Mutex::new(BTreeMap::new()),
            latency: h(),
            e2e: h(),
            send_delay: h(),
            received: AtomicU64::new(0),
            inflight: DashMap::new(),
            errors: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            window: h(),
            e2e_window: h(),
            completed: AtomicU64::new(0),
            samples: Mutex::new(Vec::new()),
            accept: h(),
            resolve: h(),
            full_loop: h(),
            lifecycle_errors: AtomicU64::new(0),
        }
    }

    /// Closes the current second: one sample for the charts.
    fn sample(&self, t: f64, errors: f64) {
        let done = self.completed.swap(0, Ordering::Relaxed) as f64;
        let (p50, p99, max) = self
            .window
            .lock()
            .map(|mut h| {
                let v = (
                    h.value_at_quantile(0.5) as f64 / 1e6,
                    h.value_at_quantile(0.99) as f64 / 1e6,
                    h.max() as f64 / 1e6,
                );
                h.reset();
                v
            })
            .unwrap_or_default();
        let (e2e_p50, e2e_p99) = self
            .e2e_window
            .lock()
            .map(|mut h| {
                let v = if h.is_empty() {
                    (0.0, 0.0)
                } else {
                    (
                        h.value_at_quantile(0.5) as f64 / 1e6,
                        h.value_at_quantile(0.99) as f64 / 1e6,
                    )
                };
                h.reset();
                v
            })
            .unwrap_or_default();
        if let Ok(mut s) = self.samples.lock() {
            s.push(html::Sample {
                t,
                rate: done,
                errors,
                p50,
                p99,
                max,
                e2e_p50,
                e2e_p99,
            });
        }
    }

    fn record_e2e(&self, sent: Instant, arrived: Instant) {
        let ns = (arrived.saturating_duration_since(sent).as_nanos() as u64).max(1);
        if let Ok(mut h) = self.e2e.lock() {
            h.saturating_record(ns);
        }
        if let Ok(mut h) = self.e2e_window.lock() {
            h.saturating_record(ns);
        }
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    /// The report's answer came back with this incident id.
    fn sent(&self, id: String, due: Instant) {
        match self.inflight.entry(id) {
            dashmap::Entry::Occupied(o) => {
                if let (_, Slot::Arrived(at)) = o.remove_entry() {
                    self.record_e2e(due, at);
                }
            }
            dashmap::Entry::Vacant(v) => {
                v.insert(Slot::Sent(due));
            }
        }
    }

    /// A primary dispatch arrived.
    fn arrived(&self, id: String, at: Instant) {
        match self.inflight.entry(id) {
            dashmap::Entry::Occupied(o) => {
                if let (_, Slot::Sent(due)) = o.remove_entry() {
                    self.record_e2e(due, at);
                }
            }
            dashmap::Entry::Vacant(v) => {
                v.insert(Slot::Arrived(at));
            }
        }
    }

    /// Reports whose dispatch never arrived.
    fn lost(&self) -> u64 {
        self.inflight
            .iter()
            .filter(|e| matches!(e.value(), Slot::Sent(_)))
            .count() as u64
    }

    fn record(&self, started: Instant, code: tonic::Code, n: u64) {
        let ns = started.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
        if let Ok(mut h) = self.latency.lock() {
            h.saturating_record(ns.max(1));
        }
        if let Ok(mut h) = self.window.lock() {
            h.saturating_record(ns.max(1));
        }
        self.completed.fetch_add(n, Ordering::Relaxed);
        if code == tonic::Code::Ok {
            self.ok.fetch_add(n, Ordering::Relaxed);
        } else {
            self.errors.fetch_add(n, Ordering::Relaxed);
        }
        if let Ok(mut c) = self.codes.lock() {
            *c.entry(format!("{code:?}")).or_default() += n;
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("gridroute-loadtest: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> Result<bool, BoxError> {
    let thresholds = args
        .fail_if
        .as_deref()
        .map(report::parse_thresholds)
        .transpose()?
        .unwrap_or_default();
    let duration = match (&args.duration, args.requests) {
        (Some(d), _) => Some(parse_duration(d).ok_or("--duration: write e.g. 10s, 500ms, 2m")?),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs(10)),
    };
    let drain = parse_duration(&args.drain).ok_or("--drain: write e.g. 5s")?;
    let stages = args.stages.as_deref().map(parse_stages).transpose()?;
    let duration = match &stages {
        Some(st) => Some(st.iter().map(|(d, _)| *d).sum()),
        None => duration,
    };
    if args.serve_echo {
        println!("{}", echo::start()?);
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    }
    let mut args = args;
    if args.scenario == Scenario::Echo {
        args.addr = echo::start()?;
        eprintln!("echo server on {}", args.addr);
    }
    let traffic = Arc::new(Traffic::from_tables(
        args.tables.as_deref(),
        args.duplicate_share,
        args.outside_share,
    )?);
    let headers = Arc::new(metadata::headers(&args.metadata, args.token.as_deref())?);
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        let mut endpoint = Channel::from_shared(args.addr.clone())?;
        if args.addr.starts_with("https://") {
            let tls = tonic::transport::ClientTlsConfig::new();
            let tls = match &args.ca_cert {
                Some(p) => tls.ca_certificate(tonic::transport::Certificate::from_pem(
                    std::fs::read(p).map_err(|e| format!("--ca-cert {}: {e}", p.display()))?,
                )),
                None => tls.with_webpki_roots(),
            };
            endpoint = endpoint.tls_config(tls)?;
        }
        channels.push(metadata::WithMetadata::new(
            endpoint.connect().await?,
            headers.clone(),
        ));
    }
    let tokens = match &args.tokens {
        Some(path) => metadata::tokens(path)?,
        None => Default::default(),
    };
    if let Some(t) = tokens.get(&format!("source_system:{}", traffic::SOURCE_SYSTEM)) {
        for c in &mut channels {
            *c = c.with_token(t)?;
        }
    }
    let shared = Arc::new(Shared::new());
    let http = match args.protocol {
        Protocol::Grpc => None,
        Protocol::Http => {
            if !matches!(args.scenario, Scenario::Report | Scenario::E2e) {
                return Err("--protocol http drives the report and e2e scenarios".into());
            }
            let token = tokens
                .get(&format!("source_system:{}", traffic::SOURCE_SYSTEM))
                .map(String::as_str)
                .or(args.token.as_deref());
            Some(http::HttpReports::connect(&args.http_addr, args.connections, token).await?)
        }
    };

    let mut subscribers = Vec::new();
    let follows = args.scenario.follows();
    if follows {
        for dept in traffic.departments() {
            let channel = channels[subscribers.len() % channels.len()].clone();
            let channel = match ["department", "command_centre"]
                .iter()
                .find_map(|k| tokens.get(&format!("{k}:{dept}")))
            {
                Some(t) => channel.with_token(t)?,
                None => channel,
            };
            let mut client = DispatchServiceClient::new(channel);
            let req = pb::SubscribeRequest {
                department_id: dept.clone(),
                start: pb::SubscribeStart::Latest as i32,
                ..Default::default()
            };
            let lifecycle = (args.scenario == Scenario::Lifecycle).then(|| client.clone());
            let mut stream = client.subscribe(req).await?.into_inner();
            let s = shared.clone();
            subscribers.push(tokio::spawn(async move {
                while let Ok(Some(d)) = stream.message().await {
                    // Co-handlers receive the dispatch too: count the primary's arrival only.
                    // Notices (warnings, escalations) are not new dispatches.
                    if d.role != pb::DispatchRole::Primary as i32
                        || d.kind != pb::DispatchKind::New as i32
                    {
                        continue;
                    }
                    if let Some(c) = &lifecycle {
                        tokio::spawn(work_case(
                            c.clone(),
                            s.clone(),
                            d.incident_id.clone(),
                            d.department_id.clone(),
                        ));
                    }
                    s.arrived(d.incident_id, Instant::now());
                }
            }));
        }
    }

    let started = Instant::now();
    let progress = {
        let s = shared.clone();
        tokio::spawn(async move {
            let mut last = 0;
            let mut last_errors = 0;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let sent = s.sent.load(Ordering::Relaxed);
                let errors = s.errors.load(Ordering::Relaxed);
                s.sample(
                    started.elapsed().as_secs_f64(),
                    (errors - last_errors) as f64,
                );
                last_errors = errors;
                let p99 = s
                    .latency
                    .lock()
                    .map(|h| h.value_at_quantile(0.99))
                    .unwrap_or(0);
                eprintln!(
                    "{:>5.0}s  {:>8} reports/s  sent {sent}  errors {errors}  p99 {:.2} ms",
                    started.elapsed().as_secs_f64(),
                    sent - last,
                    p99 as f64 / 1e6
                );
                last = sent;
                if s.stop.load(Ordering::Relaxed) {
                    return;
                }
            }
        })
    };
    if let Some(d) = duration {
        let s = shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            s.stop.store(true, Ordering::Relaxed);
        });
    }

    let limit = args.requests.unwrap_or(u64::MAX);
    let counter = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    let batch = if args.scenario.batched() {
        args.batch_size.max(1) as u64
    } else {
        1
    };
    match args.rate.or(stages.as_ref().map(|_| 0)) {
        None => {
            for w in 0..args.concurrency.max(1) {
                let (s, t, c, ch) = (
                    shared.clone(),
                    traffic.clone(),
                    counter.clone(),
                    channels[w % channels.len()].clone(),
                );
                let scenario = args.scenario;
                let http = http.clone();
                workers.spawn(async move {
                    let mut client = IncidentServiceClient::new(ch);
                    while !s.stop.load(Ordering::Relaxed) {
                        let first = c.fetch_add(batch, Ordering::Relaxed);
                        if first >= limit {
                            break;
                        }
                        send(
                            &mut client,
                            http.as_ref(),
                            scenario,
                            &t,
                            &s,
                            first,
                            batch.min(limit - first),
                            Instant::now(),
                        )
                        .await;
                    }
                });
            }
        }
        Some(_) => {
            // Open loop: call i is due at its intended time whatever the answers; its latency
            // runs from then. In-flight calls are capped so that a stalled server cannot
            // exhaust memory; the cap's wait counts in the latency, as it should.
            let permits = Arc::new(tokio::sync::Semaphore::new(10_000));
            let schedule = stages.clone().unwrap_or_else(|| {
                vec![(duration.unwrap_or(Duration::MAX), args.rate.unwrap_or(1))]
            });
            // The schedule runs on its own thread with the OS's sleep (tens of µs late at
            // most): tokio's timer has 1 ms ticks, so pacing with it made every call start up
            // to a millisecond late, and that lateness counted as the server's latency.
            let (tx, mut due_calls) = tokio::sync::mpsc::unbounded_channel::<(u64, u64, Instant)>();
            let pacer_stop = shared.clone();
            let pacer = std::thread::spawn(move || {
                let mut i = 0u64;
                let mut stage_start = started;
                'stages: for (length, rate) in schedule {
                    let interval = Duration::from_secs_f64(batch as f64 / rate.max(1) as f64);
                    let mut j = 0u64;
                    loop {
                        let due = stage_start + interval.mul_f64(j as f64);
                        if due.saturating_duration_since(stage_start) >= length {
                            break;
                        }
                        if pacer_stop.stop.load(Ordering::Relaxed) || i >= limit {
                            break 'stages;
                        }
                        // On the pacer's own OS thread, never a tokio worker.
                        #[allow(clippy::disallowed_methods)]
                        std::thread::sleep(due.saturating_duration_since(Instant::now()));
                        let n = batch.min(limit - i);
                        if tx.send((i, n, due)).is_err() {
                            break 'stages;
                        }
                        i += n;
                        j += 1;
                    }
                    stage_start += length;
                }
            });
            while let Some((i, n, due)) = due_calls.recv().await {
                let permit = permits.clone().acquire_owned().await?;
                let (s, t, ch) = (
                    shared.clone(),
                    traffic.clone(),
                    channels[(i / batch) as usize % channels.len()].clone(),
                );
                let scenario = args.scenario;
                let http = http.clone();
                workers.spawn(async move {
                    let _permit = permit;
                    let mut client = IncidentServiceClient::new(ch);
                    send(&mut client, http.as_ref(), scenario, &t, &s, i, n, due).await;
                });
            }
            let _ = pacer.join();
            shared.stop.store(true, Ordering::Relaxed);
        }
    }
    while workers.join_next().await.is_some() {}
    shared.stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    if follows {
        let deadline = Instant::now() + drain;
        while shared.lost() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for s in subscribers {
        s.abort();
    }
    let _ = progress.await;

    let summary = Summary::collect(
        &shared,
        elapsed,
        follows,
        args.scenario == Scenario::Lifecycle,
        args.rate.is_some() || stages.is_some(),
    );
    eprint!("{}", summary.text());
    let (call, e2e) = summary.spectra();
    let run = html::Run {
        samples: shared.samples.lock().map(|s| s.clone()).unwrap_or_default(),
        call,
        e2e,
    };
    if let Some(path) = &args.html {
        let baseline = match &args.compare {
            Some(b) => {
                let text = std::fs::read_to_string(b)
                    .map_err(|e| format!("--compare {}: {e}", b.display()))?;
                let v: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| format!("--compare {}: {e}", b.display()))?;
                Some(
                    html::Run::from_json(&v)
                        .map_err(|e| format!("--compare {}: {e}", b.display()))?,
                )
            }
            None => None,
        };
        let title = format!(
            "gridroute-loadtest {:?} against {}",
            args.scenario, args.addr
        );
        std::fs::write(
            path,
            html::page(&title, &run, baseline.as_ref(), &summary.text()),
        )?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.json {
        let mut json = summary.json();
        if let (Some(o), serde_json::Value::Object(extra)) = (json.as_object_mut(), run.to_json()) {
            o.extend(extra);
        }
        let json = json.to_string();
        if path == "-" {
            println!("{json}");
        } else {
            std::fs::write(path, json)?;
        }
    }
    let failed = report::check(&summary, &thresholds);
    for f in &failed {
        eprintln!("threshold crossed: {f}");
    }
    Ok(failed.is_empty())
}

/// Parses `10s:1000,20s:5000` into (stage length, reports per second).
fn parse_stages(text: &str) -> Result<Vec<(Duration, u64)>, String> {
    text.split(',')
        .map(|st| {
            let (d, r) = st
                .trim()
                .split_once(':')
                .ok_or_else(|| format!("--stages {st:?}: write duration:rate, e.g. 10s:1000"))?;
            let d = parse_duration(d).ok_or_else(|| format!("--stages {st:?}: bad duration"))?;
            let r = r
                .trim()
                .parse::<u64>()
                .map_err(|_| format!("--stages {st:?}: bad rate"))?;
            Ok((d, r))
        })
        .collect()
}

/// Lifecycle scenario: the department accepts, then resolves, the case it just received.
async fn work_case(
    mut client: DispatchServiceClient<metadata::WithMetadata>,
    s: Arc<Shared>,
    id: String,
    department: String,
) {
    let started = Instant::now();
    let record = |h: &Mutex<Histogram<u64>>, since: Instant| {
        if let Ok(mut h) = h.lock() {
            h.saturating_record((since.elapsed().as_nanos() as u64).max(1));
        }
    };
    let accept = pb::AcceptIncidentRequest {
        incident_id: id.clone(),
        department_id: department.clone(),
        note: "load test".into(),
        request_id: format!("lt-accept-{id}"),
    };
    if client.accept_incident(accept).await.is_err() {
        s.lifecycle_errors.fetch_add(1, Ordering::Relaxed);
        return;
    }
    record(&s.accept, started);
    let t = Instant::now();
    let resolve = pb::ResolveIncidentRequest {
        incident_id: id,
        department_id: department,
        note: "load test: done".into(),
        request_id: String::new(),
        evidence_urls: Vec::new(),
    };
    if client.resolve_incident(resolve).await.is_err() {
        s.lifecycle_errors.fetch_add(1, Ordering::Relaxed);
        return;
    }
    record(&s.resolve, t);
    record(&s.full_loop, started);
}

/// Sends `n` reports starting at sequence number `first` (one unary call, or one stream).
#[allow(clippy::too_many_arguments)]
async fn send(
    client: &mut IncidentServiceClient<metadata::WithMetadata>,
    http: Option<&http::HttpReports>,
    scenario: Scenario,
    traffic: &Traffic,
    s: &Shared,
    first: u64,
    n: u64,
    due: Instant,
) {
    s.sent.fetch_add(n, Ordering::Relaxed);
    if let Ok(mut h) = s.send_delay.lock() {
        h.saturating_record((due.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64).max(1));
    }
    match scenario {
        Scenario::Report | Scenario::E2e | Scenario::Lifecycle | Scenario::Echo => {
            let report = traffic.report(first);
            let fresh = !traffic.is_duplicate(first);
            if let Some(h) = http {
                match h.report(&report).await {
                    Ok(r) => {
                        if scenario.follows() && fresh && !r.duplicate_request {
                            s.sent(r.incident_id, due);
                        }
                        s.record(due, tonic::Code::Ok, 1);
                    }
                    Err(code) => s.record(due, code, 1),
                }
                return;
            }
            match client.report_incident(report).await {
                Ok(r) => {
                    let r = r.into_inner();
                    if scenario.follows() && fresh && !r.duplicate_request {
                        s.sent(r.incident_id, due);
                    }
                    s.record(due, tonic::Code::Ok, 1);
                }
                Err(e) => s.record(due, e.code(), 1),
            }
        }
        Scenario::ReportBatch | Scenario::E2eBatch => {
            let items: Vec<pb::ReportIncidentRequest> =
                (first..first + n).map(|i| traffic.report(i)).collect();
            match client.report_incidents(tokio_stream::iter(items)).await {
                Ok(r) => {
                    let r = r.into_inner();
                    if scenario.follows() {
                        for (i, item) in (first..).zip(&r.results) {
                            if item.code == 0 && !item.duplicate_request && !traffic.is_duplicate(i)
                            {
                                s.sent(item.incident_id.clone(), due);
                            }
                        }
                    }
                    let rejected = r.rejected_count.max(0) as u64;
                    s.record(due, tonic::Code::Ok, n - rejected.min(n));
                    if rejected > 0
                        && let Ok(mut c) = s.codes.lock()
                    {
                        *c.entry("ItemRejected".into()).or_default() += rejected;
                    }
                }
                Err(e) => s.record(due, e.code(), n),
            }
        }
    }
}
