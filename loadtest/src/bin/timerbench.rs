//! `gridroute-timerbench`: how many SLA timers one Redis holds, and how late they fire.
//!
//! Fills one Redis with `--pending` timers in gridroute's own layout: most of them due days
//! ahead (the backlog a city carries), `--due` of them due within `--window` on incidents that
//! exist, so that firing has its real effect (timeline, events, notice, flags). Then runs
//! `--replicas` firing loops exactly as routers do (the real claim, plan and apply path, polling
//! every `--poll-ms`) and reports the lateness distribution, the Redis memory per pending timer,
//! and whether every due timer fired exactly once, with the Redis CPU each fired timer cost.

#![allow(clippy::unwrap_used)]

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use clap::Parser;
use gridroute_store::{Store, local::LocalRedis};
use hdrhistogram::Histogram;

#[derive(Debug, Parser)]
#[command(name = "gridroute-timerbench", about = "SLA timer scale benchmark")]
struct Args {
    /// Redis URL; a private redis-server on a free port when absent.
    #[arg(long)]
    redis_url: Option<String>,
    /// Pending timers in total.
    #[arg(long, default_value_t = 1_000_000)]
    pending: u64,
    /// Of those, how many fall due during the run.
    #[arg(long, default_value_t = 50_000)]
    due: u64,
    /// Over how many seconds the due timers are spread.
    #[arg(long, default_value_t = 30)]
    window_secs: u64,
    /// Firing loops running side by side (router replicas).
    #[arg(long, default_value_t = 2)]
    replicas: usize,
    /// Poll interval of each loop when nothing was due.
    #[arg(long, default_value_t = 200)]
    poll_ms: u64,
    /// Stream partitions.
    #[arg(long, default_value_t = 4)]
    partitions: u16,
}

/// Redis CPU seconds so far (user + system).
async fn redis_cpu(c: &mut redis::aio::MultiplexedConnection) -> f64 {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(c).await.unwrap();
    info.lines()
        .filter_map(|l| {
            l.strip_prefix("used_cpu_user:")
                .or_else(|| l.strip_prefix("used_cpu_sys:"))
        })
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .sum()
}

async fn used_memory(c: &mut redis::aio::MultiplexedConnection) -> i64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(c)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
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
    let store = Store::connect(&url, "bench", a.partitions).await.unwrap();
    let k = store.keys().clone();
    let mut c = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let now = store.server_time_ms().await.unwrap();
    let departments = [
        "property-office",
        "urban-management",
        "traffic-police",
        "water-affairs",
    ];
    let kinds = ["warn50", "warn80", "urge", "supervise1", "public"];

    // The backlog: timers due 1 to 30 days ahead, on ids shaped like real ones.
    let backlog = a.pending.saturating_sub(a.due);
    let before = used_memory(&mut c).await;
    let started = Instant::now();
    let mut i = 0u64;
    while i < backlog {
        let mut pipe = redis::pipe();
        for _ in 0..20 {
            let mut per_part: Vec<Vec<(i64, String)>> = vec![Vec::new(); a.partitions as usize];
            for _ in 0..500 {
                if i >= backlog {
                    break;
                }
                let p = (i % u64::from(a.partitions)) as u16;
                let id = format!("{}-{p}", ulid::Ulid::new());
                let due = now + 86_400_000 + (i as i64 * 7919) % (29 * 86_400_000);
                per_part[p as usize].push((
                    due,
                    format!(
                        "{id}|{}|{}",
                        kinds[(i % 5) as usize],
                        departments[(i % 4) as usize]
                    ),
                ));
                i += 1;
            }
            for (p, members) in per_part.into_iter().enumerate() {
                if !members.is_empty() {
                    pipe.zadd_multiple(k.sla(p as u16), &members);
                }
            }
        }
        pipe.query_async::<()>(&mut c).await.unwrap();
    }
    let after = used_memory(&mut c).await;
    let per_timer = (after - before) as f64 / backlog.max(1) as f64;
    println!(
        "backlog: {backlog} timers written in {:.1} s; Redis used_memory +{:.1} MiB = {per_timer:.0} bytes per pending timer",
        started.elapsed().as_secs_f64(),
        (after - before) as f64 / 1_048_576.0
    );

    // The timers that fall due, on incidents that are open.
    let start = store.server_time_ms().await.unwrap() + 3_000;
    let window = a.window_secs as i64 * 1000;
    let mut pipe = redis::pipe();
    for j in 0..a.due {
        let p = (j % u64::from(a.partitions)) as u16;
        let id = format!("{}-{p}", ulid::Ulid::new());
        let dept = departments[(j % 4) as usize];
        let due = start + (j as i64 * window) / a.due.max(1) as i64;
        // A running case's record as the router writes it: its schedule, whose head (the
        // urge here) is in the timer set.
        let schedule = format!("urge|{dept}|{due}");
        pipe.hset_multiple(
            k.incident(p, &id),
            &[
                ("status", "dispatched"),
                ("dept", dept),
                ("regions", "640202,640202001"),
                ("v", "1"),
                ("timers", schedule.as_str()),
            ],
        );
        pipe.zadd(k.sla(p), format!("{id}|urge|{dept}"), due);
        if j % 1000 == 999 {
            pipe.query_async::<()>(&mut c).await.unwrap();
            pipe = redis::pipe();
        }
    }
    if a.due % 1000 != 0 {
        pipe.query_async::<()>(&mut c).await.unwrap();
    }
    println!(
        "{} timers due over {} s from {} replicas polling every {} ms; {} pending in total",
        a.due,
        a.window_secs,
        a.replicas,
        a.poll_ms,
        store.pending_timers().await.unwrap()
    );

    let cpu_before = redis_cpu(&mut c).await;
    let lateness = Arc::new(Mutex::new(Histogram::<u64>::new(3).unwrap()));
    let fired = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(a.window_secs + 20);
    let mut loops = Vec::new();
    // The table the timers' plans are made with, as `make dev` loads it.
    let table = Arc::new(gridroute_benches::dawukou());
    for _ in 0..a.replicas {
        let (store, lateness, fired) = (store.clone(), lateness.clone(), fired.clone());
        let table = table.clone();
        let (due, partitions, poll) = (a.due, a.partitions, Duration::from_millis(a.poll_ms));
        loops.push(tokio::spawn(async move {
            while fired.load(std::sync::atomic::Ordering::Relaxed) < due
                && Instant::now() < deadline
            {
                let mut busy = false;
                for p in 0..partitions {
                    let got = store.fire_due_timers(p, 512, &table).await.unwrap();
                    busy |= got.len() == 512;
                    fired.fetch_add(got.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    let mut h = lateness.lock().unwrap();
                    for f in got {
                        h.record(f.lateness_ms.max(0) as u64).unwrap();
                    }
                }
                if !busy {
                    tokio::time::sleep(poll).await;
                }
            }
        }));
    }
    for l in loops {
        l.await.unwrap();
    }
    let cpu = redis_cpu(&mut c).await - cpu_before;
    let h = lateness.lock().unwrap().clone();
    let n = fired.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "Redis CPU while firing: {cpu:.2} s = {:.1} µs per fired timer (polls included)",
        cpu * 1e6 / n.max(1) as f64
    );
    println!(
        "fired {n} of {} (exactly once: {}); lateness ms: p50 {} p90 {} p99 {} p99.9 {} max {}",
        a.due,
        n == a.due,
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.9),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    );
    println!(
        "pending after the run: {}",
        store.pending_timers().await.unwrap()
    );
    drop(local);
    if n != a.due {
        std::process::exit(1);
    }
}
