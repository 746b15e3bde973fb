//! Chaos: a real deployment on this machine (redis-server with AOF `appendfsync always`, one API
//! process, two router processes), a sender that retries with the same request ids as a real
//! client would, one subscriber per department that resumes from its cursor, and a checker.
//! While the reports are sent, every router is killed with SIGKILL three times, the API twice and
//! Redis three times (restarted on the same AOF). The checker fails on any report acknowledged
//! but lost (never dispatched, or missing from the record) and on any duplicate effect (a second
//! primary new-case dispatch of one incident). It runs twice: with the routers routing every
//! report, and with the API routing the reports it accepts (`--inline-routing`; the checker
//! then also checks that no report went through the ingest streams), a third time with the
//! API writing those reports by transactions instead of the report script (`--transactions`),
//! and a fourth with every write by transaction: reports queued by the API, first dispatches
//! by the routers (`--transactions` without inline routing), a fifth with the stored-format
//! switches on as well, and a sixth with every switch: inline routing, transactions, both
//! stored-format switches and the claims kept with their records.
//!
//! CI runs a short version (`GRIDROUTE_CHAOS_REPORTS`, default 3,000 at
//! `GRIDROUTE_CHAOS_RATE` 250 per second); `make chaos` runs 100,000 at 1,000 per second and
//! prints the figures (docs/OPERATIONS.md, "Chaos").

#![allow(clippy::unwrap_used)]

use crate::common;

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use common::process::{Child, ServeAuth, connect};
use gridroute_proto::v1::{
    self as pb, dispatch_service_client::DispatchServiceClient,
    incident_service_client::IncidentServiceClient,
};
use gridroute_store::local::free_port;
use tonic::transport::Channel;

/// redis-server with AOF fsync'd on every write, restartable on the same port and files.
struct Redis {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Redis {
    fn start(dir: &Path) -> Self {
        let mut r = Self {
            port: free_port().unwrap(),
            dir: dir.to_owned(),
            child: None,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(Child(child));
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            #[allow(clippy::disallowed_methods)]
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server did not start");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

/// A `gridroute serve` process of one role, restartable on the same address and name.
struct Gridroute {
    args: Vec<String>,
    child: Option<Child>,
}

impl Gridroute {
    fn start(
        role: &str,
        name: &str,
        redis: &str,
        grpc: u16,
        auth: &ServeAuth,
        extra: &[&str],
    ) -> Self {
        let mut args: Vec<String> = [
            "serve",
            "--role",
            role,
            "--redis-url",
            redis,
            "--grpc-addr",
            &format!("127.0.0.1:{grpc}"),
            "--http-addr",
            "off",
            "--metrics-addr",
            "off",
            "--consumer-name",
            name,
            "--claim-min-idle-ms",
            "2000",
        ]
        .map(str::to_owned)
        .to_vec();
        args.extend(auth.args());
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let mut g = Self { args, child: None };
        g.spawn();
        g
    }

    fn spawn(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_gridroute"))
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(Child(child));
    }
}

/// A process the chaos kills and starts again.
trait Restartable {
    fn child(&mut self) -> &mut Option<Child>;
    fn spawn(&mut self);

    /// SIGKILL, as a crashed host would stop it, then the same command again.
    async fn kill_and_restart(&mut self) {
        if let Some(mut c) = self.child().take() {
            c.0.kill().unwrap();
            c.0.wait().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.spawn();
    }
}

impl Restartable for Redis {
    fn child(&mut self) -> &mut Option<Child> {
        &mut self.child
    }
    fn spawn(&mut self) {
        Redis::spawn(self);
    }
}

impl Restartable for Gridroute {
    fn child(&mut self) -> &mut Option<Child> {
        &mut self.child
    }
    fn spawn(&mut self) {
        Gridroute::spawn(self);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    RouterA,
    RouterB,
    Api,
    Redis,
}

/// Three kills of each router, two of the API, three of Redis, interleaved.
const FAULTS: [Fault; 11] = [
    Fault::RouterA,
    Fault::Redis,
    Fault::RouterB,
    Fault::Api,
    Fault::RouterA,
    Fault::Redis,
    Fault::RouterB,
    Fault::Api,
    Fault::RouterA,
    Fault::Redis,
    Fault::RouterB,
];

fn report(i: usize, grid: &str) -> pb::ReportIncidentRequest {
    pb::ReportIncidentRequest {
        description: format!("chaos report {i}"),
        ..common::grid_report(format!("chaos-{i}"), grid)
    }
}

/// What the subscribers saw: per incident, the distinct stream positions of primary new-case
/// dispatches.
type Seen = Arc<Mutex<HashMap<String, HashSet<String>>>>;

/// Follows one department's dispatches for ever, resuming from its cursor after any error.
async fn follow(channel: Channel, department: String, token: String, seen: Seen) {
    let mut cursor = String::new();
    loop {
        let mut req = tonic::Request::new(pb::SubscribeRequest {
            department_id: department.clone(),
            cursor: cursor.clone(),
            start: pb::SubscribeStart::Earliest as i32,
        });
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        if let Ok(r) = DispatchServiceClient::new(channel.clone())
            .subscribe(req)
            .await
        {
            let mut stream = r.into_inner();
            while let Ok(Some(d)) = stream.message().await {
                if d.kind == pb::DispatchKind::New as i32
                    && d.role == pb::DispatchRole::Primary as i32
                {
                    seen.lock()
                        .unwrap()
                        .entry(d.incident_id.clone())
                        .or_default()
                        .insert(d.cursor.clone());
                }
                cursor = d.cursor;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_loses_nothing_and_doubles_nothing() {
    chaos(&[]).await;
}

/// The same faults with the API routing the reports it accepts (`--inline-routing`): killing
/// it between accepting and answering, or Redis mid-script, still loses and doubles nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_with_inline_routing_loses_nothing_and_doubles_nothing() {
    chaos(&["--inline-routing"]).await;
}

/// The same faults with the API writing those reports by transactions (`--transactions`):
/// killing it between the read and `EXEC`, or Redis mid-transaction, loses and doubles nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_with_transactions_loses_nothing_and_doubles_nothing() {
    chaos(&["--inline-routing", "--transactions"]).await;
}

/// The same faults with every write by transaction (`--transactions` without inline routing):
/// the API queues the reports by transaction and the routers dispatch them by transaction, so
/// that a router killed between its read and `EXEC`, or Redis mid-transaction, leaves entries
/// that another router dispatches once, and none that nobody does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_with_routers_dispatching_by_transaction_loses_nothing_and_doubles_nothing() {
    chaos(&["--transactions"]).await;
}

/// The same faults with every write by transaction and both stored-format switches on
/// (`--packed-events`, `--region-index-depth 2`): a transaction's changes in one events entry,
/// region index entries down to the street; still nothing lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_with_packed_events_and_street_index_loses_nothing_and_doubles_nothing() {
    chaos(&[
        "--transactions",
        "--packed-events",
        "--region-index-depth",
        "2",
    ])
    .await;
}

/// The same faults with every switch of the leanest configuration (docs/PERFORMANCE.md): inline
/// routing, every write by transaction, both stored-format switches, and the idempotency claims
/// kept with their records (`--claims-with-records`, no expiry while the record is held), so
/// that the retries of reports whose answer was lost meet claims written that way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_with_every_switch_loses_nothing_and_doubles_nothing() {
    chaos(common::EVERY_SWITCH).await;
}

/// Runs the chaos with these extra flags for the API process (and with `--transactions` the
/// same flags but inline routing for the routers too, as one deployment's setting).
async fn chaos(api_flags: &[&str]) {
    let router_flags: Vec<&str> = if api_flags.contains(&"--transactions") {
        api_flags
            .iter()
            .copied()
            .filter(|f| *f != "--inline-routing")
            .collect()
    } else {
        Vec::new()
    };
    let setting = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(default)
    };
    let total = setting("GRIDROUTE_CHAOS_REPORTS", 3000);
    // Reports per second offered (open loop, retries come on top): the faults then fall while
    // reports are being sent, not after.
    let rate = setting("GRIDROUTE_CHAOS_RATE", 250).max(1);
    let dir = common::process::temp_dir("chaos");
    let mut redis = Redis::start(&dir);
    let auth = ServeAuth::new("chaos");
    let grpc = free_port().unwrap();
    let addr = format!("http://127.0.0.1:{grpc}");
    let mut api = Gridroute::start("api", "api", &redis.url(), grpc, &auth, api_flags);
    let mut routers = [
        Gridroute::start(
            "router",
            "router-a",
            &redis.url(),
            free_port().unwrap(),
            &auth,
            &router_flags,
        ),
        Gridroute::start(
            "router",
            "router-b",
            &redis.url(),
            free_port().unwrap(),
            &auth,
            &router_flags,
        ),
    ];
    let channel = connect(&addr).await;
    let table = gridroute_benches::dawukou();
    let grids: Arc<Vec<String>> =
        Arc::new(table.grids.grids().iter().map(|g| g.code.clone()).collect());

    // One subscriber per department.
    let seen: Seen = Arc::default();
    let followers: Vec<_> = table
        .departments
        .iter()
        .map(|d| {
            let who = common::Acting::principal(
                &pb::SubscribeRequest {
                    department_id: d.id.clone(),
                    ..Default::default()
                },
                &table,
            );
            tokio::spawn(follow(
                channel.clone(),
                d.id.clone(),
                auth.token(&who),
                seen.clone(),
            ))
        })
        .collect();

    // The sender: 16 clients at `rate` reports per second in all, each retrying a report with
    // the same request id until it is acknowledged.
    let token = auth.token("source_system:resident-app");
    let next = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let retries = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let senders: Vec<_> = (0..16)
        .map(|_| {
            let (channel, next, acked, retries, grids, token) = (
                channel.clone(),
                next.clone(),
                acked.clone(),
                retries.clone(),
                grids.clone(),
                token.clone(),
            );
            tokio::spawn(async move {
                let mut client = IncidentServiceClient::new(channel);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return;
                    }
                    let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
                    tokio::time::sleep_until(due.into()).await;
                    loop {
                        let call = client.report_incident(common::process::bearer(
                            &token,
                            report(i, &grids[i % grids.len()]),
                        ));
                        match tokio::time::timeout(Duration::from_secs(10), call).await {
                            Ok(Ok(r)) => {
                                acked.lock().unwrap().push(r.into_inner().incident_id);
                                break;
                            }
                            _ => {
                                retries.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                }
            })
        })
        .collect();

    // The faults, spread over the sending.
    for (n, fault) in FAULTS.iter().enumerate() {
        let at = total * (n + 1) / (FAULTS.len() + 1);
        while acked.lock().unwrap().len() < at {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        match fault {
            Fault::RouterA | Fault::RouterB => {
                routers[usize::from(*fault == Fault::RouterB)]
                    .kill_and_restart()
                    .await;
            }
            Fault::Api => api.kill_and_restart().await,
            Fault::Redis => redis.kill_and_restart().await,
        }
        eprintln!(
            "chaos: {fault:?} killed and restarted at {} acknowledged",
            acked.lock().unwrap().len()
        );
    }
    for s in senders {
        s.await.unwrap();
    }
    let sent_in = started.elapsed();
    let acked: Vec<String> = acked.lock().unwrap().clone();
    let acked_set: HashSet<&String> = acked.iter().collect();

    // Wait until every acknowledged report reached its department's subscriber, or 120 s.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let missing = {
            let seen = seen.lock().unwrap();
            acked.iter().filter(|id| !seen.contains_key(*id)).count()
        };
        if missing == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for f in followers {
        f.abort();
    }

    // The checker.
    let mut r = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut missing_records = 0;
    for chunk in acked.chunks(1000) {
        let mut pipe = redis::pipe();
        for id in chunk {
            let p = gridroute_store::keys::partition_of(id, 4).unwrap();
            pipe.hget(format!("gr:{{p{p}}}:inc:{id}"), "status");
        }
        let statuses: Vec<Option<String>> = pipe.query_async(&mut r).await.unwrap();
        missing_records += statuses.iter().filter(|s| s.is_none()).count();
    }
    // Reports that went through the ingest streams (`entries-added` counts every XADD ever).
    let mut queued = 0;
    for p in 0..4 {
        let info: HashMap<String, redis::Value> = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(format!("gr:{{p{p}}}:ingest"))
            .query_async(&mut r)
            .await
            .unwrap_or_default();
        if let Some(redis::Value::Int(n)) = info.get("entries-added") {
            queued += n;
        }
    }
    let seen = seen.lock().unwrap();
    let never_dispatched = acked.iter().filter(|id| !seen.contains_key(*id)).count();
    let duplicates = seen.values().filter(|c| c.len() > 1).count();
    let unacknowledged = seen.keys().filter(|id| !acked_set.contains(id)).count();
    let distinct = acked_set.len();
    eprintln!(
        "chaos: {} reports, {distinct} acknowledged incidents in {sent_in:.1?} ({} retries); \
         lost: {} ({never_dispatched} never dispatched, {missing_records} missing from the \
         record); duplicate effects: {duplicates}; dispatched but never acknowledged: \
         {unacknowledged}; through the ingest streams: {queued}; faults: routers 3 + 3, API 2, \
         Redis 3 (SIGKILL)",
        total,
        retries.load(Ordering::Relaxed),
        never_dispatched + missing_records,
    );
    assert_eq!(acked.len(), total, "every report acknowledged in the end");
    if api_flags.contains(&"--inline-routing") {
        assert_eq!(
            queued, 0,
            "every report dispatched by the call that accepted it"
        );
    } else {
        assert!(
            queued >= total as i64,
            "every report queued for the routers"
        );
    }
    assert_eq!(distinct, total, "one incident per request id");
    assert_eq!(
        never_dispatched + missing_records,
        0,
        "nothing acknowledged is lost"
    );
    assert_eq!(duplicates, 0, "no incident dispatched twice");
}
