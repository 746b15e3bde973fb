//! The router's own ingest reader (`resp`) against a real redis-server: it authenticates as
//! the URL's user, reads the URL's database, gives entries exactly as written (large batches
//! that arrive in many reads included), keeps Redis' error codes, and after a lost connection or
//! an abandoned read fails as `Unavailable`, so that the router connects again and loses
//! nothing.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use gridroute_proto::v1 as pb;
use gridroute_store::{Replication, Store, StoreError, local::LocalRedis};

#[tokio::test]
async fn the_routers_own_reader_authenticates_reads_its_database_and_reconnects() {
    let redis = LocalRedis::start().unwrap();
    let port = redis.port();
    // The default user needs a password, so that a reader that did not authenticate as the
    // URL's user would be refused; the router's user has one of its own.
    let mut plain = common::connect(&redis.url()).await;
    redis::cmd("ACL")
        .arg(&["SETUSER", "router", "on", ">s3cret", "~*", "&*", "+@all"])
        .query_async::<()>(&mut plain)
        .await
        .unwrap();
    redis::cmd("CONFIG")
        .arg(&["SET", "requirepass", "adminpw"])
        .query_async::<()>(&mut plain)
        .await
        .unwrap();
    let url = format!("redis://router:s3cret@127.0.0.1:{port}/2");
    let store = Store::connect(&url, "direct", 4).await.unwrap();
    store.ensure_groups().await.unwrap();
    let key = store.keys().ingest(1);
    let mut a = common::connect(&format!("redis://:adminpw@127.0.0.1:{port}/")).await;
    redis::cmd("SELECT")
        .arg(2)
        .query_async::<()>(&mut a)
        .await
        .unwrap();
    // A thousand entries of 2 KB (a reply of 2 MB, read in many pieces), values holding every
    // byte, `\r\n` included.
    let value: Vec<u8> = (0..2048u32).map(|i| (i % 256) as u8).collect();
    let mut pipe = redis::pipe();
    for i in 0..1000 {
        pipe.cmd("XADD")
            .arg(&key)
            .arg("*")
            .arg("id")
            .arg(format!("x-{i}"))
            .arg("v")
            .arg(&value)
            .ignore();
    }
    pipe.query_async::<()>(&mut a).await.unwrap();

    let mut c = store
        .consumer(1, "r1", Duration::from_millis(100))
        .await
        .unwrap();
    assert!(
        c.direct(),
        "one Redis over plain TCP: the router's own reader"
    );
    let got = c.read_new(1000).await.unwrap();
    assert_eq!(got.len(), 1000);
    for (i, e) in got.iter().enumerate() {
        assert_eq!(e.text("id"), Some(format!("x-{i}").as_str()));
        assert_eq!(e.field("v"), Some(value.as_slice()));
        assert_eq!((e.partition, e.deliveries), (1, 1));
    }
    // Nothing new: the block time passes and the answer is empty.
    assert!(c.read_new(10).await.unwrap().is_empty());

    // The connection is killed: the read fails as Unavailable (the router reconnects), and a
    // new consumer of the same name finds every entry still pending, delivered a second time.
    redis::cmd("CLIENT")
        .arg(&["KILL", "USER", "router"])
        .query_async::<()>(&mut a)
        .await
        .unwrap();
    let e = c.read_new(10).await.unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    let mut c = store
        .consumer(1, "r1", Duration::from_secs(2))
        .await
        .unwrap();
    let mut again = Vec::new();
    loop {
        let page = c.read_own_pending(300).await.unwrap();
        if page.is_empty() {
            break;
        }
        again.extend(page);
    }
    assert_eq!(again.len(), 1000);
    assert!(
        again
            .iter()
            .all(|e| e.deliveries == 2 && e.field("v") == Some(&value[..]))
    );

    // A read abandoned half-way (its reply still to come) leaves the connection unusable: the
    // next call says so instead of reading the old reply as its own.
    assert!(
        tokio::time::timeout(Duration::from_millis(50), c.read_new(10))
            .await
            .is_err()
    );
    let e = c.read_new(10).await.unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");

    // Redis' error codes come through: a lost group is NOGROUP, which the router recreates.
    let mut c = store
        .consumer(1, "r1", Duration::from_millis(100))
        .await
        .unwrap();
    redis::cmd("DEL")
        .arg(&key)
        .query_async::<()>(&mut a)
        .await
        .unwrap();
    let e = c.read_new(10).await.unwrap_err();
    assert!(matches!(e, StoreError::NoGroup(_)), "{e:?}");

    // A wrong password is refused at connection, as with the client library.
    let wrong = format!("redis://router:nope@127.0.0.1:{port}/2");
    assert!(Store::connect(&wrong, "direct", 4).await.is_err());
}

/// A dispatch sent over the consumer's own connection (written straight in RESP) on a server
/// whose script cache is empty: the call finds `NOSCRIPT`, the scripts are loaded and it runs
/// again; the record is dispatched as by the shared connection, and a second dispatch of the
/// same generation answers "already dispatched".
#[tokio::test]
async fn a_dispatch_over_the_routers_own_connection_loads_the_scripts_and_writes_the_record() {
    let redis = LocalRedis::start().unwrap();
    let store = Store::connect(&redis.url(), "direct", 4).await.unwrap();
    let (mut c, w, id) = common::reported_as(&store, "r-1").await;
    let mut plain = common::connect(&redis.url()).await;
    redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async::<()>(&mut plain)
        .await
        .unwrap();
    let done = c.dispatch_batch(std::slice::from_ref(&w)).await.unwrap();
    assert!(matches!(done[..], [Ok(true)]), "{done:?}");
    let incident = store.get_incident(&id).await.unwrap();
    assert_eq!(incident.status(), pb::IncidentStatus::Dispatched);
    let again = c.dispatch_batch(std::slice::from_ref(&w)).await.unwrap();
    assert!(matches!(again[..], [Ok(false)]), "{again:?}");
    // The entry was acknowledged by the call (the router trims it later).
    let stats = store.ingest_stats().await.unwrap();
    assert_eq!((stats.lag, stats.pending, stats.length), (0, 0, 1));
}

/// With a durability setting, a dispatch over the router's own connection waits for the
/// replica on that connection (`WAIT` covers the writes of the connection it is sent on): when
/// the call returns, the replica has the dispatched record.
#[tokio::test]
async fn a_dispatch_over_the_routers_own_connection_waits_for_its_replica() {
    let primary = LocalRedis::start().unwrap();
    let replica = LocalRedis::start().unwrap();
    let mut r = common::connect(&replica.url()).await;
    redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(primary.port())
        .query_async::<()>(&mut r)
        .await
        .unwrap();
    for _ in 0..200 {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut r)
            .await
            .unwrap();
        if info.contains("master_link_status:up") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let store = Store::connect(&primary.url(), "direct", 4)
        .await
        .unwrap()
        .with_replication(Replication {
            replicas: 1,
            timeout: Duration::from_secs(2),
        })
        .unwrap();
    for i in 0..10 {
        let (mut c, w, id) = common::reported_as(&store, &format!("r-{i}")).await;
        let done = c.dispatch_batch(std::slice::from_ref(&w)).await.unwrap();
        assert!(matches!(done[..], [Ok(true)]), "{done:?}");
        let status: Option<String> = redis::cmd("HGET")
            .arg(store.keys().incident(w.partition, &id))
            .arg("status")
            .query_async(&mut r)
            .await
            .unwrap();
        assert_eq!(
            status.as_deref(),
            Some("dispatched"),
            "the replica lags the dispatch"
        );
    }
    // The replica stopped (SIGSTOP): the dispatch's `WAIT` on the connection that wrote it
    // cannot be answered, so the call returns only after the wait's timeout (a `WAIT` sent on
    // a connection that wrote nothing would answer at once).
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut r)
        .await
        .unwrap();
    let pid = info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .unwrap()
        .trim()
        .to_owned();
    let store = store
        .with_replication(Replication {
            replicas: 1,
            timeout: Duration::from_millis(400),
        })
        .unwrap();
    let (mut c, w, _) = common::reported_as(&store, "stopped").await;
    let signal = |s: &str| {
        std::process::Command::new("kill")
            .args([s, pid.as_str()])
            .status()
            .unwrap()
    };
    assert!(signal("-STOP").success());
    let started = std::time::Instant::now();
    let done = c.dispatch_batch(std::slice::from_ref(&w)).await;
    let waited = started.elapsed();
    assert!(signal("-CONT").success());
    assert!(matches!(done.unwrap()[..], [Ok(true)]));
    assert!(
        waited >= Duration::from_millis(390),
        "returned after {waited:?} without its replica's acknowledgement"
    );
}
