//! Redis Sentinel: a primary demoted by hand, outside Sentinel, keeps its clients connected and
//! refuses each write (`READONLY`) in a reply rather than by closing the connection. The store
//! must take that reply, as a dropped connection, as the sign to ask the Sentinels again.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use gridroute_store::{Store, StoreError, audit::Entry, local::LocalSentinel};

/// Sends one command to the server on `port` and returns its reply.
async fn command(port: u16, args: &[&str]) -> redis::Value {
    let mut c = crate::common::connect(&format!("redis://127.0.0.1:{port}/")).await;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(&mut c).await.unwrap()
}

async fn audit_len(port: u16, key: &str) -> i64 {
    match command(port, &["XLEN", key]).await {
        redis::Value::Int(n) => n,
        other => panic!("XLEN answered {other:?}"),
    }
}

fn entry(n: u32) -> Entry {
    Entry {
        principal: "system:test".into(),
        method: "gridroute.v1.IncidentService/GetIncident".into(),
        target: format!("case-{n}"),
        outcome: "OK".into(),
        ..Entry::default()
    }
}

#[tokio::test]
async fn after_a_demoted_primary_refuses_a_write_the_next_one_reaches_the_primary_sentinel_names() {
    let s = LocalSentinel::start().unwrap();
    let (old, new) = (s.primary.port(), s.replica.port());
    let store = Store::connect(&s.url(), "sen", 4).await.unwrap();
    let key = store.keys().audit();
    store.audit_append(&[entry(1)], 3_600_000).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while audit_len(new, &key).await < 1 {
        assert!(
            Instant::now() < deadline,
            "the replica never got the first write"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // By hand: the replica becomes the primary, the old primary its replica, and the
    // Sentinel is told to watch the new one. The store's connection to the old primary stays
    // open.
    command(new, &["REPLICAOF", "NO", "ONE"]).await;
    command(old, &["REPLICAOF", "127.0.0.1", &new.to_string()]).await;
    let sentinel = s.sentinel_port();
    command(sentinel, &["SENTINEL", "REMOVE", "mymaster"]).await;
    let new_port = new.to_string();
    let monitor = [
        "SENTINEL",
        "MONITOR",
        "mymaster",
        "127.0.0.1",
        &new_port,
        "1",
    ];
    command(sentinel, &monitor).await;
    assert_eq!(s.primary_port(), Some(new));

    // The write that meets the demoted primary fails UNAVAILABLE (the caller retries) ...
    let refused = store
        .audit_append(&[entry(2)], 3_600_000)
        .await
        .expect_err("the demoted primary refuses the write");
    assert!(
        matches!(&refused, StoreError::Unavailable(why) if why.contains("read only replica")),
        "{refused:?}"
    );
    // ... and the retry reaches the primary the Sentinel names.
    store
        .audit_append(&[entry(3)], 3_600_000)
        .await
        .expect("the retry is written to the new primary");
    assert_eq!(
        audit_len(new, &key).await,
        2,
        "the first write and the retry"
    );
}
