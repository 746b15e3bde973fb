//! A router's first dispatches written by transaction (`--transactions`, `dispatch_tx.rs`)
//! against a real redis-server: the same record, events, indexes, timers and department
//! entries as the dispatch script (but for `dept_at`, which readers do without on a first
//! dispatch); each entry dispatched once when routers race on redelivered entries; and a
//! re-route left to the script, which writes `dept_at`; batches smaller than
//! `--transaction-min-batch` left to the scripts; and with `--packed-events`, each
//! transaction's changes in one events entry per partition, read back change by change.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::{collections::HashMap, sync::Arc, time::Duration};

use gridroute_core::sla::{Timer, TimerKind};
use gridroute_proto::v1 as pb;
use gridroute_store::{
    Store, consumer::Consumer, dispatch::DispatchWrite, local::LocalRedis, schedule,
};

const PARTITIONS: u16 = 4;

/// What a router would dispatch for an ingest entry: a first dispatch with two departments,
/// two timers, duplicate detection and an estimated deadline, so that every optional write
/// is made.
fn write(e: &gridroute_store::consumer::IngestEntry, id: &str) -> DispatchWrite {
    let timers = [
        Timer {
            due: 1_796_608_138_000,
            kind: TimerKind::Accept,
            target: "urban-management".into(),
        },
        Timer {
            due: 1_796_636_938_000,
            kind: TimerKind::Supervise(1),
            target: "command-centre".into(),
        },
    ];
    DispatchWrite {
        decision: Arc::from(prost::Message::encode_to_vec(&pb::RouteDecision {
            department_id: "urban-management".into(),
            ..Default::default()
        })),
        region_codes: Arc::from(["4201".to_owned(), "420102".to_owned()]),
        estimated: true,
        deliveries: vec![
            ("urban-management".into(), b"head one".to_vec()),
            ("water".into(), b"head two".to_vec()),
        ],
        schedule: schedule::Written::of(id, &timers),
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        ..common::dispatch_of(e, id)
    }
}

/// A store under `prefix` that writes by transaction (`--transactions`).
async fn by_transactions(redis: &LocalRedis, prefix: &str) -> Store {
    Store::connect(&redis.url(), prefix, PARTITIONS)
        .await
        .unwrap()
        .with_transactions(true)
}

/// Reports `n` incidents through `store` and reads their ingest entries with one router's
/// consumers (one per partition): the consumers and, per partition, the writes a router would
/// dispatch.
async fn reported(store: &Store, n: usize, tag: &str) -> Vec<(Consumer, Vec<DispatchWrite>)> {
    common::reported_with(store, n, tag, "router-a", |e, id, _| write(e, id)).await
}

/// Every key of `prefix`, by kind (the part after the partition tag), with how many entries or
/// members each holds.
async fn contents(c: &mut redis::aio::MultiplexedConnection, prefix: &str) -> Vec<(String, usize)> {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(c)
        .await
        .unwrap();
    let mut out = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query_async(c).await.unwrap();
        let n: usize = match kind.as_str() {
            "stream" => redis::cmd("XLEN").arg(&key).query_async(c).await.unwrap(),
            "zset" => redis::cmd("ZCARD").arg(&key).query_async(c).await.unwrap(),
            "hash" => redis::cmd("HLEN").arg(&key).query_async(c).await.unwrap(),
            _ => 1,
        };
        // `<prefix>:{pN}:inc:<id>` → `inc`, `ix:region:4201` kept whole.
        let rest = key
            .split_once("}:")
            .map_or(key.split_once(':').map_or("", |(_, r)| r), |(_, r)| r);
        let name = match rest.split_once(':') {
            Some(("inc" | "idem" | "tl", _)) => rest.split(':').next().unwrap().to_owned(),
            _ => rest.to_owned(),
        };
        out.push((name, n));
    }
    out.sort();
    out
}

async fn record(
    c: &mut redis::aio::MultiplexedConnection,
    store: &Store,
    w: &DispatchWrite,
) -> HashMap<String, Vec<u8>> {
    redis::cmd("HGETALL")
        .arg(store.keys().incident(w.partition, &w.incident_id))
        .query_async(c)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_dispatch_by_transaction_writes_what_the_script_writes() {
    let redis = LocalRedis::start().unwrap();
    let mut plain = common::connect(&redis.url()).await;
    let by_script = Store::connect(&redis.url(), "script", PARTITIONS)
        .await
        .unwrap();
    let by_tx = by_transactions(&redis, "tx").await;
    let mut records = Vec::new();
    for store in [&by_script, &by_tx] {
        let mut batches = reported(store, 20, "same").await;
        let mut dispatched = Vec::new();
        for (c, writes) in &mut batches {
            let done = c.dispatch_batch(writes).await.unwrap();
            assert!(done.iter().all(|d| matches!(d, Ok(true))), "{done:?}");
            // Delivered again (a redelivery): nothing is written a second time.
            let again = c.dispatch_batch(writes).await.unwrap();
            assert!(again.iter().all(|d| matches!(d, Ok(false))), "{again:?}");
            dispatched.extend(writes.iter().cloned());
        }
        let w = &dispatched[0];
        records.push((record(&mut plain, store, w).await, w.incident_id.clone()));
        let incident = store.get_incident(&w.incident_id).await.unwrap();
        assert_eq!(incident.status(), pb::IncidentStatus::Dispatched);
        assert_eq!(incident.timeline.len(), 2);
    }
    // Field for field the script's record, but for `dept_at` (and the values that name the
    // incident or the deployment's prefix).
    let (script, tx) = (&records[0], &records[1]);
    let mut expected: Vec<&String> = script.0.keys().filter(|f| *f != "dept_at").collect();
    let mut got: Vec<&String> = tx.0.keys().collect();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
    for (field, value) in &script.0 {
        let same = |v: &[u8]| {
            String::from_utf8_lossy(v)
                .replace(&script.1, "ID")
                .replace(&tx.1, "ID")
                .replace("script:", "P:")
                .replace("tx:", "P:")
        };
        if ["report", "reported_at", "tl0", "dept_at"].contains(&field.as_str()) {
            continue;
        }
        assert_eq!(same(&tx.0[field]), same(value), "{field}");
    }
    // The same keys with as many entries: events, indexes, department streams, timers, the
    // geo set; the ingest entries acknowledged (and left for the routers to trim).
    // Records one field shorter: `dept_at`.
    let shorter = |mut c: Vec<(String, usize)>| {
        for (name, n) in &mut c {
            if name == "inc" {
                *n -= 1;
            }
        }
        c
    };
    assert_eq!(
        contents(&mut plain, "tx").await,
        shorter(contents(&mut plain, "script").await)
    );
    let pending: (usize,) = redis::cmd("XPENDING")
        .arg(by_tx.keys().ingest(0))
        .arg("routers")
        .query_async(&mut plain)
        .await
        .map(|v: redis::Value| match v {
            redis::Value::Array(a) => (redis::from_redis_value(a[0].clone()).unwrap(),),
            _ => (usize::MAX,),
        })
        .unwrap();
    assert_eq!(pending.0, 0);
    // Lists and reads find the incident without `dept_at`: its one department-index entry
    // counts.
    let filter = gridroute_store::query::ListFilter {
        department: "urban-management".into(),
        ..Default::default()
    };
    for store in [&by_script, &by_tx] {
        let (page, _) = store.list_incidents(&filter, 100, "").await.unwrap();
        assert_eq!(page.len(), 20);
    }
}

/// Two routers dispatch the same entries at once (a redelivery racing the first delivery), in
/// batches of different sizes so that their transactions watch overlapping records: each
/// incident is dispatched once, with one entry per department and one dispatch event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routers_racing_on_the_same_entries_dispatch_each_once() {
    const N: usize = 300;
    let redis = LocalRedis::start().unwrap();
    let mut plain = common::connect(&redis.url()).await;
    let store = by_transactions(&redis, "gr").await;
    let batches = reported(&store, N, "race").await;
    let all: Vec<DispatchWrite> = batches.iter().flat_map(|(_, w)| w.clone()).collect();
    drop(batches);
    let mut tasks = tokio::task::JoinSet::new();
    for (name, size) in [("router-a", 7), ("router-b", 128), ("router-c", 33)] {
        let (store, all) = (store.clone(), all.clone());
        tasks.spawn(async move {
            let mut consumers = Vec::new();
            for p in 0..PARTITIONS {
                consumers.push(
                    store
                        .consumer(p, name, Duration::from_millis(50))
                        .await
                        .unwrap(),
                );
            }
            let mut dispatched = Vec::new();
            for chunk in all.chunks(size) {
                let done = consumers[0].dispatch_batch(chunk).await.unwrap();
                for (w, d) in chunk.iter().zip(done) {
                    if d.unwrap() {
                        dispatched.push(w.incident_id.clone());
                    }
                }
            }
            dispatched
        });
    }
    let mut dispatched: Vec<String> = Vec::new();
    while let Some(d) = tasks.join_next().await {
        dispatched.extend(d.unwrap());
    }
    dispatched.sort();
    let mut unique = dispatched.clone();
    unique.dedup();
    assert_eq!(unique.len(), N, "every incident dispatched");
    assert_eq!(dispatched.len(), N, "and only once");
    let k = store.keys();
    let mut dispatch_entries = 0;
    let mut events = 0;
    for p in 0..PARTITIONS {
        for key in [
            k.dispatch(p, "urban-management"),
            k.dispatch(p, "water"),
            k.events(p),
        ] {
            let n: usize = redis::cmd("XLEN")
                .arg(&key)
                .query_async(&mut plain)
                .await
                .unwrap();
            if key.ends_with("events") {
                events += n;
            } else {
                dispatch_entries += n;
            }
        }
    }
    assert_eq!(dispatch_entries, 2 * N);
    assert_eq!(events, 2 * N, "a report and a dispatch event each");
    for w in &all {
        let r = record(&mut plain, &store, w).await;
        assert_eq!(r["v"], b"1", "one dispatch of {}", w.incident_id);
    }
}

/// A re-route (the entry of a later route generation) needs `dept_at`, which a transaction
/// cannot know before it commits: the batch goes to the script, which writes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reroute_goes_to_the_script() {
    let redis = LocalRedis::start().unwrap();
    let mut plain = common::connect(&redis.url()).await;
    let store = by_transactions(&redis, "gr").await;
    let mut batches = reported(&store, 1, "reroute").await;
    let (c, writes) = batches.iter_mut().find(|(_, w)| !w.is_empty()).unwrap();
    let w = writes[0].clone();
    assert!(matches!(
        c.dispatch_batch(std::slice::from_ref(&w)).await.unwrap()[..],
        [Ok(true)]
    ));
    let first = record(&mut plain, &store, &w).await;
    assert!(!first.contains_key("dept_at"));
    // Returned by the department and routed again (generation 1), as the lifecycle does.
    let key = store.keys().incident(w.partition, &w.incident_id);
    redis::cmd("HSET")
        .arg(&key)
        .arg(&[("status", "returned"), ("gen", "1")])
        .query_async::<()>(&mut plain)
        .await
        .unwrap();
    let again = DispatchWrite {
        generation: "1".into(),
        department: "water".into(),
        ..w.clone()
    };
    assert!(matches!(
        c.dispatch_batch(&[again]).await.unwrap()[..],
        [Ok(true)]
    ));
    let second = record(&mut plain, &store, &w).await;
    assert_eq!(second["dept"], b"water");
    assert_eq!(second["v"], b"2");
    assert!(second.contains_key("dept_at"), "the script wrote dept_at");
    let timeline: usize = redis::cmd("LLEN")
        .arg(store.keys().timeline(w.partition, &w.incident_id))
        .query_async(&mut plain)
        .await
        .unwrap();
    assert_eq!(timeline, 1, "the re-route's timeline entry");
}

/// How many times Redis ran `command` (`INFO commandstats`).
async fn calls(c: &mut redis::aio::MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(c)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_smaller_than_the_minimum_take_the_scripts() {
    let redis = LocalRedis::start().unwrap();
    let mut plain = common::connect(&redis.url()).await;
    let store = by_transactions(&redis, "gr")
        .await
        .with_transaction_min_batch(4);
    // Reports: a batch of 63 by transaction, a batch of one by the report script.
    let exec0 = calls(&mut plain, "exec").await;
    let mut batches = reported(&store, 63, "large").await;
    let (sha1, exec1) = (
        calls(&mut plain, "evalsha").await,
        calls(&mut plain, "exec").await,
    );
    assert!(exec1 > exec0, "63 reports: a transaction");
    let one = store
        .report_batch(&[common::report("small-0")], "", "")
        .await
        .unwrap();
    assert!(one[0].is_ok());
    assert_eq!(
        calls(&mut plain, "evalsha").await,
        sha1 + 1,
        "one report: the script"
    );
    assert_eq!(
        calls(&mut plain, "exec").await,
        exec1,
        "one report: no transaction"
    );
    // Dispatches: one entry of a partition alone by the script (which writes `dept_at`), the
    // rest of that partition's entries together by transaction (which does not).
    let (c, writes) = batches.iter_mut().max_by_key(|(_, w)| w.len()).unwrap();
    assert!(writes.len() >= 5, "16 entries per partition on average");
    let (first, rest) = writes.split_first().unwrap();
    let done = c.dispatch_batch(std::slice::from_ref(first)).await.unwrap();
    assert!(matches!(done[..], [Ok(true)]));
    assert!(
        record(&mut plain, &store, first)
            .await
            .contains_key("dept_at")
    );
    let done = c.dispatch_batch(rest).await.unwrap();
    assert!(done.iter().all(|d| matches!(d, Ok(true))));
    for w in rest {
        let r = record(&mut plain, &store, w).await;
        assert_eq!(r["dept"], b"urban-management");
        assert!(
            !r.contains_key("dept_at"),
            "a batch of {} by transaction",
            rest.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packed_events_hold_a_transactions_changes_and_read_back_one_by_one() {
    const N: usize = 40;
    let redis = LocalRedis::start().unwrap();
    let mut plain = common::connect(&redis.url()).await;
    let store = by_transactions(&redis, "gr").await.with_packed_events(true);
    let mut batches = reported(&store, N, "packed").await;
    for (c, writes) in &mut batches {
        let done = c.dispatch_batch(writes).await.unwrap();
        assert!(done.iter().all(|d| matches!(d, Ok(true))), "{done:?}");
    }
    // Per partition: one entry for the reports' transaction, one for the dispatches'.
    for p in 0..PARTITIONS {
        let len: usize = redis::cmd("XLEN")
            .arg(store.keys().events(p))
            .query_async(&mut plain)
            .await
            .unwrap();
        assert_eq!(len, 2, "partition {p}");
    }
    let start = gridroute_store::subscribe::Cursor::earliest(PARTITIONS);
    let mut reader = store
        .event_reader("", "", start, Duration::from_millis(50))
        .await
        .unwrap();
    let events = reader.next_batch(100).await.unwrap();
    assert_eq!(events.len(), 2 * N);
    for (i, e) in events.iter().enumerate() {
        let dispatched = e.status == pb::IncidentStatus::Dispatched as i32;
        assert!(dispatched || e.status == pb::IncidentStatus::Reported as i32);
        if dispatched {
            assert_eq!(e.department_id, "urban-management");
            assert_eq!(e.region_codes, ["4201", "420102"]);
            assert!(events[..i].iter().any(|r| r.incident_id == e.incident_id));
        }
    }
    // A region filter applies change by change inside a packed entry.
    let start = gridroute_store::subscribe::Cursor::earliest(PARTITIONS);
    let mut in_region = store
        .event_reader("420102", "", start, Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!(in_region.next_batch(100).await.unwrap().len(), N);
    // A cursor inside a packed entry whose entry was trimmed since has lost the rest of it.
    let inside = events.iter().find(|e| e.cursor.contains('~')).unwrap();
    let cursor = gridroute_store::subscribe::Cursor::parse(&inside.cursor, PARTITIONS).unwrap();
    assert_eq!(store.events_trimmed_after(&cursor).await.unwrap(), None);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(store.trim_streams(0, &[]).await.unwrap() >= 8);
    assert!(store.events_trimmed_after(&cursor).await.unwrap().is_some());
}
