//! Acknowledged ingest entries trimmed from the stream's head (`trim_acked.lua`,
//! `Consumer::trim_if_due`) against a real redis-server: what was acknowledged goes, in whole
//! stream nodes; what a router holds unacknowledged and what no router has read yet stays; the
//! group's lag and pending counts, the backlog operators watch, are unchanged by a trim.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use gridroute_store::{Store, local::LocalRedis};

/// Appends `n` small entries to a partition's ingest stream; their ids, oldest first.
async fn append(c: &mut redis::aio::MultiplexedConnection, key: &str, n: usize) -> Vec<String> {
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.cmd("XADD").arg(key).arg("*").arg("n").arg(i);
    }
    pipe.query_async(c).await.unwrap()
}

async fn ack(c: &mut redis::aio::MultiplexedConnection, key: &str, ids: &[String]) {
    let n: usize = redis::cmd("XACK")
        .arg(key)
        .arg("routers")
        .arg(ids)
        .query_async(c)
        .await
        .unwrap();
    assert_eq!(n, ids.len());
}

/// The ids of a stream's entries, oldest first.
async fn ids(c: &mut redis::aio::MultiplexedConnection, key: &str) -> Vec<String> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query_async(c)
        .await
        .unwrap();
    reply.ids.into_iter().map(|s| s.id).collect()
}

#[tokio::test]
async fn a_trim_removes_acknowledged_entries_and_keeps_pending_and_unread_ones() {
    let redis = LocalRedis::start().unwrap();
    let store = Store::connect(&redis.url(), "trim", 1).await.unwrap();
    store.ensure_groups().await.unwrap();
    let key = store.keys().ingest(0);
    let mut plain = common::connect(&redis.url()).await;
    let written = append(&mut plain, &key, 350).await;

    // A router reads 300 and acknowledges the first 250; 50 stay pending, 50 unread.
    let mut c = store
        .consumer(0, "r1", Duration::from_millis(50))
        .await
        .unwrap();
    let read = c.read_new(300).await.unwrap();
    assert_eq!(read.len(), 300);
    ack(&mut plain, &key, &written[..250]).await;
    let removed = store.trim_acked(0).await.unwrap();
    let left = ids(&mut plain, &key).await;
    // Whole nodes of 100 entries below the oldest pending one: the first two.
    assert_eq!(removed, 200, "{left:?}");
    assert_eq!(left, written[200..], "only acknowledged entries went");
    let stats = store.ingest_stats().await.unwrap();
    assert_eq!((stats.lag, stats.pending, stats.length), (50, 50, 150));

    // Everything read and acknowledged: up to the last entry delivered, and no further.
    ack(&mut plain, &key, &written[250..300]).await;
    let rest = c.read_new(100).await.unwrap();
    assert_eq!(rest.len(), 50);
    let later = append(&mut plain, &key, 10).await;
    let removed = store.trim_acked(0).await.unwrap();
    assert_eq!(removed, 100);
    let left = ids(&mut plain, &key).await;
    assert_eq!(
        left[..50],
        written[300..],
        "delivered, not acknowledged: kept"
    );
    assert_eq!(left[50..], later[..], "not delivered: kept");
    // Acknowledged and not yet trimmed: in the stream's length, not in the backlog.
    ack(&mut plain, &key, &written[300..]).await;
    let stats = store.ingest_stats().await.unwrap();
    assert_eq!((stats.lag, stats.pending, stats.length), (10, 0, 60));
}

/// A consumer trims only after it acknowledged entries, at most once per `TRIM_EVERY` while
/// busy, and at once when its read finds nothing new.
#[tokio::test]
async fn a_consumer_trims_what_its_dispatches_acknowledged() {
    let redis = LocalRedis::start().unwrap();
    let store = Store::connect(&redis.url(), "due", 4).await.unwrap();
    let (mut c, w, _) = common::reported_as(&store, "r-1").await;
    assert!(!c.trim_due(true), "nothing acknowledged yet");
    assert_eq!(c.trim_if_due(true).await.unwrap(), 0);
    let done = c.dispatch_batch(std::slice::from_ref(&w)).await.unwrap();
    assert!(matches!(done[..], [Ok(true)]), "{done:?}");
    assert!(c.trim_due(true), "idle after acknowledging: due");
    assert!(!c.trim_due(false), "busy: not before TRIM_EVERY");
    tokio::time::sleep(gridroute_store::consumer::TRIM_EVERY).await;
    assert!(c.trim_due(false));
    // One entry, in a node not yet full: acknowledged, kept until its node can go whole.
    assert_eq!(c.trim_if_due(false).await.unwrap(), 0);
    assert!(!c.trim_due(true), "trimmed: nothing acknowledged since");
    let stats = store.ingest_stats().await.unwrap();
    assert_eq!((stats.lag, stats.pending, stats.length), (0, 0, 1));
}
