//! `gridroute-redisceiling`: the Redis-only ceiling of gridroute's command mix. It drives the
//! same store code the service runs (report script with idempotency, consumer-group reads,
//! route decisions in memory, dispatch script with record, timeline, events, timers, indexes
//! and department streams, ack, and the routers' trim of acknowledged entries) straight
//! against Redis, without gRPC, and reports routed
//! incidents per second: the figure `report-batch` end to end is compared with.
//!
//! `--mix lean` runs instead the floor of issue 13: per incident an ingest XADD (300 B), reads
//! in batches of 100, an 8-field record HSET with a 600 B decision, a department-stream XADD
//! (900 B), a timer ZADD, XACK and XDEL, pipelined by 100, without scripts. Both mixes print the
//! Redis CPU (`used_cpu_user + used_cpu_sys`) per routed incident, so that the two can be set
//! side by side in one run.
//!
//! `--mix inline` runs the service's store code with inline routing (`gridroute serve
//! --inline-routing`): each report batch is routed before it is written and dispatched by the
//! script call that records it; no router reads the ingest streams.
//!
//! `--mix plain` is an experiment (`plain_mix.rs`): the inline mix's writes as plain commands
//! in a `WATCH`/`MULTI`/`EXEC` transaction, to measure what the same record costs Redis
//! without the scripts' Lua.

#![allow(clippy::unwrap_used)]

/// The same allocator as the service, so that the ceiling measures the same client code.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../traffic.rs"]
#[allow(dead_code)]
mod traffic;

#[path = "../plain_mix.rs"]
mod plain_mix;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Parser;
use gridroute_store::{Store, local::LocalRedis};

#[derive(Debug, Parser)]
#[command(
    name = "gridroute-redisceiling",
    about = "Redis-only ceiling of the routed command mix"
)]
struct Args {
    /// Redis URL; a private redis-server on a free port when absent.
    #[arg(long)]
    redis_url: Option<String>,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Reports per pipelined report batch (as one ReportIncidents chunk).
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Report-writing tasks.
    #[arg(long, default_value_t = 2)]
    writers: usize,
    /// Stream partitions.
    #[arg(long, default_value_t = 4)]
    partitions: u16,
    /// `gridroute` (the service's store code), `inline` (the same with inline routing), `lean`
    /// (the floor: plain pipelined commands) or `plain` (an experiment: the inline mix's writes
    /// without scripts).
    #[arg(long, default_value = "gridroute")]
    mix: String,
    /// `--mix plain` only: how the events entries are written (`plain_mix.rs`).
    #[arg(long, value_enum, default_value = "entry")]
    events: plain_mix::Events,
    /// `--mix plain` only: region index levels written, the finer codes in the field names of
    /// the last one (0 = every level, as the service).
    #[arg(long, default_value_t = 0)]
    region_levels: usize,
    /// `--mix plain` only: where the idempotency claims are kept (`plain_mix.rs`).
    #[arg(long, value_enum, default_value = "key")]
    claims: plain_mix::Claims,
    /// `--mix gridroute` and `inline`: accept reports with transactions instead of the report
    /// script, as `gridroute serve --transactions` does.
    #[arg(long)]
    transactions: bool,
    /// `--mix gridroute` and `inline`: idempotency claims kept without an expiry, as
    /// `gridroute serve --claims-with-records` writes them.
    #[arg(long)]
    claims_with_records: bool,
    /// With `--transactions`: each batch's changes as one events entry per partition, as
    /// `gridroute serve --packed-events` writes them.
    #[arg(long)]
    packed_events: bool,
    /// With `--transactions`: region index entries for the first N levels of a grid's path, as
    /// `gridroute serve --region-index-depth N` writes them (0: every level).
    #[arg(long, default_value_t = 0)]
    region_index_depth: usize,
    /// After the run: the first page (50) of a list of up to N regions of each level below the
    /// district, with the Redis CPU and the time a page took (on stderr), what a
    /// `--region-index-depth` costs the readers.
    #[arg(long, default_value_t = 0)]
    list_pages: usize,
    /// Where the Redis time went: Redis' command statistics are reset before the run
    /// (`CONFIG RESETSTAT`: use a private server) and printed after it on stderr, per
    /// command, in calls and µs per routed incident.
    #[arg(long)]
    commandstats: bool,
}

/// `--commandstats`: `INFO commandstats` per routed incident, the dearest command first.
/// `EXEC`'s time includes the commands it ran, which have lines of their own.
async fn commandstats(info: &mut redis::aio::MultiplexedConnection, routed: u64) {
    let text: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(info)
        .await
        .unwrap();
    let per = routed.max(1) as f64;
    let mut rows: Vec<(String, f64, f64)> = text
        .lines()
        .filter_map(|l| {
            let (name, stats) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |key: &str| -> Option<f64> {
                stats
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))?
                    .parse()
                    .ok()
            };
            Some((name.to_owned(), field("calls")? / per, field("usec")? / per))
        })
        .filter(|(_, calls, _)| *calls >= 0.001)
        .collect();
    rows.sort_by(|a, b| b.2.total_cmp(&a.2));
    eprintln!("commands per routed incident (EXEC's time includes the commands it ran):");
    for (name, calls, usec) in rows {
        eprintln!("  {name:<16} {calls:>7.3} calls  {usec:>6.2} µs");
    }
}

/// The first page of ListIncidents for up to `n` regions of each level below the district
/// (`--list-pages`): Redis CPU and time per page, and incidents per page, on stderr.
async fn list_cost(
    store: &Store,
    table: &gridroute_core::RoutingTable,
    info: &mut redis::aio::MultiplexedConnection,
    n: usize,
) {
    let mut levels: std::collections::BTreeMap<u16, (String, Vec<Vec<String>>)> =
        Default::default();
    for (id, node) in table.regions.iter() {
        if node.depth == 0 {
            continue;
        }
        let path: Vec<String> = table
            .regions
            .path(id)
            .into_iter()
            .map(|r| table.regions.node(r).code.clone())
            .collect();
        let level = levels
            .entry(node.depth)
            .or_insert_with(|| (node.level.clone(), Vec::new()));
        if level.1.len() < n {
            level.1.push(path);
        }
    }
    for (level, paths) in levels.values() {
        let (cpu0, t0) = (redis_cpu(info).await, Instant::now());
        let mut found = 0;
        for path in paths {
            let (code, ancestors) = path.split_last().unwrap();
            let filter = gridroute_store::query::ListFilter {
                region_code: code.clone(),
                region_ancestors: ancestors.to_vec(),
                ..Default::default()
            };
            found += store.list_incidents(&filter, 50, "").await.unwrap().0.len();
        }
        let (cpu, took) = (redis_cpu(info).await - cpu0, t0.elapsed());
        let pages = paths.len() as f64;
        eprintln!(
            "lists of a {level}: {} regions, {:.0} µs of Redis CPU and {:.2} ms per first page of 50 ({:.1} incidents per page)",
            paths.len(),
            cpu * 1e6 / pages,
            took.as_secs_f64() * 1e3 / pages,
            found as f64 / pages,
        );
    }
}

/// Redis CPU seconds so far (`used_cpu_user + used_cpu_sys`).
async fn redis_cpu(conn: &mut redis::aio::MultiplexedConnection) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .filter_map(|l| {
            l.strip_prefix("used_cpu_user:")
                .or_else(|| l.strip_prefix("used_cpu_sys:"))
        })
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .sum()
}

/// The lean floor's writer: ingest entries of 300 B, pipelined by 100.
async fn lean_writer(
    mut c: redis::aio::MultiplexedConnection,
    partitions: u16,
    stop: Arc<AtomicBool>,
    reported: Arc<AtomicU64>,
    routed: Arc<AtomicU64>,
) {
    let payload = vec![b'r'; 300];
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // Keep pace with the routers: Redis CPU is then spent on incidents that get routed,
        // not on a growing backlog.
        if reported.load(Ordering::Relaxed) > routed.load(Ordering::Relaxed) + 10_000 {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        let mut pipe = redis::pipe();
        for _ in 0..100 {
            n += 1;
            pipe.cmd("XADD")
                .arg(format!("lean:{{p{}}}:ingest", n % u64::from(partitions)))
                .arg("*")
                .arg("id")
                .arg(n)
                .arg("r")
                .arg(&payload)
                .ignore();
        }
        let _: () = pipe.query_async(&mut c).await.unwrap();
        reported.fetch_add(100, Ordering::Relaxed);
    }
}

/// The lean floor's router of one partition: read 100, write record, dispatch, timer, ack.
async fn lean_router(
    mut c: redis::aio::MultiplexedConnection,
    p: u16,
    stop: Arc<AtomicBool>,
    routed: Arc<AtomicU64>,
) {
    let ingest = format!("lean:{{p{p}}}:ingest");
    let _: Result<(), _> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&ingest)
        .arg("routers")
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut c)
        .await;
    let (decision, dispatch) = (vec![b'd'; 600], vec![b'x'; 900]);
    while !stop.load(Ordering::Relaxed) {
        let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("routers")
            .arg("lean")
            .arg("COUNT")
            .arg(100)
            .arg("BLOCK")
            .arg(100)
            .arg("STREAMS")
            .arg(&ingest)
            .arg(">")
            .query_async(&mut c)
            .await
            .unwrap();
        let ids: Vec<String> = reply
            .keys
            .into_iter()
            .flat_map(|k| k.ids)
            .map(|e| e.id)
            .collect();
        if ids.is_empty() {
            continue;
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HSET")
                .arg(format!("lean:{{p{p}}}:inc:{id}"))
                .arg(&[
                    ("status", "dispatched"),
                    ("dept", "property-office"),
                    ("dispatched_at", "1796176800000"),
                    ("accept_due", "1796191200000"),
                    ("resolve_due", "1796205600000"),
                    ("v", "1"),
                    ("gen", "0"),
                ])
                .arg("decision")
                .arg(&decision)
                .ignore();
            pipe.cmd("XADD")
                .arg(format!("lean:{{p{p}}}:dispatch:property-office"))
                .arg("*")
                .arg("id")
                .arg(id)
                .arg("d")
                .arg(&dispatch)
                .ignore();
            pipe.cmd("ZADD")
                .arg(format!("lean:{{p{p}}}:sla"))
                .arg(1_796_191_200_000u64)
                .arg(format!("{id}|accept|property-office"))
                .ignore();
        }
        pipe.cmd("XACK")
            .arg(&ingest)
            .arg("routers")
            .arg(&ids)
            .ignore();
        pipe.cmd("XDEL").arg(&ingest).arg(&ids).ignore();
        let _: () = pipe.query_async(&mut c).await.unwrap();
        routed.fetch_add(ids.len() as u64, Ordering::Relaxed);
    }
}

#[tokio::main]
async fn main() {
    let a = Args::parse();
    let local = a
        .redis_url
        .is_none()
        .then(|| LocalRedis::start().expect("redis-server starts"));
    let url = a
        .redis_url
        .clone()
        .unwrap_or_else(|| local.as_ref().unwrap().url());
    let mut info = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut store = Store::connect(&url, "ceiling", a.partitions)
        .await
        .unwrap()
        .with_transactions(a.transactions)
        .with_packed_events(a.packed_events)
        .with_region_index_depth(a.region_index_depth)
        .with_claims_kept(a.claims_with_records);
    store.ensure_groups().await.unwrap();
    store.record_region_index_depth().await.unwrap();
    let traffic = Arc::new(traffic::Traffic::from_tables(None, 0.0, 0.0).unwrap());
    let table = Arc::new(gridroute_benches::dawukou());
    let inline = a.mix == "inline";
    let route =
        gridroute_router::inline_route(gridroute_core::table::shared(gridroute_benches::dawukou()));
    if inline {
        store = store.with_inline_route(route.clone());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (reported, routed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (lean, plain) = match a.mix.as_str() {
        "lean" => (true, false),
        "plain" => (false, true),
        "gridroute" | "inline" => (false, false),
        other => panic!("--mix {other:?}: gridroute, inline, lean or plain"),
    };
    if a.commandstats {
        let () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut info)
            .await
            .unwrap();
    }
    let cpu_before = redis_cpu(&mut info).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    if lean {
        let client = redis::Client::open(url.as_str()).unwrap();
        for p in 0..a.partitions {
            let c = client.get_multiplexed_async_connection().await.unwrap();
            tasks.push(tokio::spawn(lean_router(
                c,
                p,
                stop.clone(),
                routed.clone(),
            )));
        }
        for _ in 0..a.writers {
            let c = client.get_multiplexed_async_connection().await.unwrap();
            tasks.push(tokio::spawn(lean_writer(
                c,
                a.partitions,
                stop.clone(),
                reported.clone(),
                routed.clone(),
            )));
        }
    }
    if plain {
        let client = redis::Client::open(url.as_str()).unwrap();
        let plan = plain_mix::Plan {
            keys: store.keys().clone(),
            route: route.clone(),
            traffic: traffic.clone(),
            batch: a.batch,
            shape: plain_mix::Shape {
                events: a.events,
                region_levels: a.region_levels,
                claims: a.claims,
            },
        };
        for w in 0..a.writers {
            // A connection per writer: a `WATCH` holds for the connection that sent it.
            let c = client.get_multiplexed_async_connection().await.unwrap();
            tasks.push(tokio::spawn(plain_mix::writer(
                c,
                plan.clone(),
                w as u64 * 1_000_000_000,
                stop.clone(),
                [reported.clone(), routed.clone()],
            )));
        }
    }
    for w in 0..a.writers {
        if lean || plain {
            break;
        }
        let (store, traffic, stop, reported, routed, batch) = (
            store.clone(),
            traffic.clone(),
            stop.clone(),
            reported.clone(),
            routed.clone(),
            a.batch,
        );
        tasks.push(tokio::spawn(async move {
            let mut i = w as u64 * 1_000_000_000;
            while !stop.load(Ordering::Relaxed) {
                let reports: Vec<_> = (i..i + batch as u64).map(|n| traffic.report(n)).collect();
                i += batch as u64;
                let done = store.report_batch(&reports, "", "").await.unwrap();
                let ok = done.iter().filter(|r| r.is_ok()).count() as u64;
                reported.fetch_add(ok, Ordering::Relaxed);
                if inline {
                    // Dispatched by the same call (checked against the ingest streams below).
                    routed.fetch_add(ok, Ordering::Relaxed);
                }
            }
        }));
    }
    for p in 0..a.partitions {
        if lean || inline || plain {
            break;
        }
        let (store, table, stop, routed) =
            (store.clone(), table.clone(), stop.clone(), routed.clone());
        tasks.push(tokio::spawn(async move {
            let mut consumer = store
                .consumer(p, "ceiling", Duration::from_millis(100))
                .await
                .unwrap();
            while !stop.load(Ordering::Relaxed) {
                let entries = consumer.read_new(512).await.unwrap();
                if entries.is_empty() {
                    continue;
                }
                let now = store.server_time_ms().await.unwrap();
                let mut tally = gridroute_router::DecisionTally::default();
                let writes: Vec<_> = entries
                    .iter()
                    .filter_map(|e| gridroute_router::route_entry(&table, e, now, &mut tally).ok())
                    .map(|(w, _, _)| w)
                    .collect();
                tally.record();
                let done = consumer.dispatch_batch(&writes).await.unwrap();
                // As a router does: acknowledged entries trimmed from the head now and then.
                consumer.trim_if_due(false).await.unwrap();
                routed.fetch_add(
                    done.iter().filter(|d| matches!(d, Ok(true))).count() as u64,
                    Ordering::Relaxed,
                );
            }
        }));
    }
    let mut last = 0;
    for s in 1..=a.seconds {
        tokio::time::sleep_until((started + Duration::from_secs(s)).into()).await;
        let r = routed.load(Ordering::Relaxed);
        eprintln!(
            "{s:>4}s  {:>8} routed/s  reported {}",
            r - last,
            reported.load(Ordering::Relaxed)
        );
        last = r;
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    for t in tasks {
        let _ = t.await;
    }
    let routed = routed.load(Ordering::Relaxed);
    let cpu = redis_cpu(&mut info).await - cpu_before;
    if inline {
        // Every report was dispatched by the call that accepted it: none waits for a router.
        for p in 0..a.partitions {
            let waiting: u64 = redis::cmd("XLEN")
                .arg(store.keys().ingest(p))
                .query_async(&mut info)
                .await
                .unwrap();
            assert_eq!(waiting, 0, "reports left for the routers in partition {p}");
        }
    }
    let mix = if plain {
        format!(
            "plain --events {:?} --region-levels {} --claims {:?}",
            a.events, a.region_levels, a.claims
        )
        .to_lowercase()
    } else {
        a.mix.clone()
    };
    if a.commandstats {
        commandstats(&mut info, routed).await;
    }
    if a.list_pages > 0 {
        list_cost(&store, &table, &mut info, a.list_pages).await;
    }
    println!(
        "Redis-only ceiling ({} mix): {:.0} reports/s written, {:.0} incidents/s routed and dispatched ({} partitions, {} writers, batches of {}); Redis CPU {:.1} µs per routed incident",
        mix,
        reported.load(Ordering::Relaxed) as f64 / elapsed,
        routed as f64 / elapsed,
        a.partitions,
        a.writers,
        a.batch,
        cpu * 1e6 / routed.max(1) as f64
    );
    drop(local);
}
