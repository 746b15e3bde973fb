//! `gridroute-redisceiling`: the Redis-only ceiling of gridroute's command mix. It drives the
//! same store code the service runs (report script with idempotency, consumer-group reads,
//! route decisions in memory, dispatch script with record, timeline, events, timers, indexes
//! and department streams, ack) straight against Redis, without gRPC, and reports routed
//! incidents per second: the figure `report-batch` end to end is compared with.

#![allow(clippy::unwrap_used)]

/// The same allocator as the service, so that the ceiling measures the same client code.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../traffic.rs"]
#[allow(dead_code)]
mod traffic;

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
    let store = Store::connect(&url, "ceiling", a.partitions).await.unwrap();
    store.ensure_groups().await.unwrap();
    let traffic = Arc::new(traffic::Traffic::from_tables(None, 0.0, 0.0).unwrap());
    let table = Arc::new(gridroute_benches::dawukou());
    let stop = Arc::new(AtomicBool::new(false));
    let (reported, routed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..a.writers {
        let (store, traffic, stop, reported, batch) = (
            store.clone(),
            traffic.clone(),
            stop.clone(),
            reported.clone(),
            a.batch,
        );
        tasks.push(tokio::spawn(async move {
            let mut i = w as u64 * 1_000_000_000;
            while !stop.load(Ordering::Relaxed) {
                let reports: Vec<_> = (i..i + batch as u64).map(|n| traffic.report(n)).collect();
                i += batch as u64;
                let done = store.report_batch(&reports, "", "").await.unwrap();
                reported.fetch_add(
                    done.iter().filter(|r| r.is_ok()).count() as u64,
                    Ordering::Relaxed,
                );
            }
        }));
    }
    for p in 0..a.partitions {
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
                let writes: Vec<_> = entries
                    .iter()
                    .filter_map(|e| gridroute_router::route_entry(&table, e, now).ok())
                    .map(|(w, _, _)| w)
                    .collect();
                let done = store.dispatch_batch(&writes).await.unwrap();
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
    println!(
        "Redis-only ceiling: {:.0} reports/s written, {:.0} incidents/s routed and dispatched ({} partitions, {} writers, batches of {})",
        reported.load(Ordering::Relaxed) as f64 / elapsed,
        routed.load(Ordering::Relaxed) as f64 / elapsed,
        a.partitions,
        a.writers,
        a.batch
    );
    drop(local);
}
