//! Idempotency claims kept with their records (`gridroute serve --claims-with-records`): a
//! claim has no expiry while its incident's record is in Redis, and gets its week when the
//! archive mover removes the record, so a retry is answered with the original incident before
//! and after the move. Through the report script and through transactions alike.

#![allow(clippy::unwrap_used)]

use gridroute_store::{
    Store,
    archive::{ArchiveCandidate, Removal},
    ingest::{Accepted, IDEMPOTENCY_TTL_SECS},
    keys,
    local::LocalRedis,
};

use crate::common;

async fn store(redis: &LocalRedis, transactions: bool, kept: bool) -> Store {
    let store = Store::connect(&redis.url(), "claims", 4)
        .await
        .unwrap()
        .with_transactions(transactions)
        .with_claims_kept(kept);
    store.ensure_groups().await.unwrap();
    store
}

async fn report(store: &Store, request_id: &str) -> Accepted {
    let mut out = store
        .report_batch(&[common::report(request_id)], "", "")
        .await
        .unwrap();
    out.pop().unwrap().unwrap()
}

fn claim_key(store: &Store, id: &str, request_id: &str) -> String {
    let p = keys::partition_of(id, 4).unwrap();
    store.keys().idempotency(p, "app", request_id)
}

async fn ttl(redis: &LocalRedis, key: &str) -> i64 {
    let mut c = common::connect(&redis.url()).await;
    redis::cmd("TTL")
        .arg(key)
        .query_async(&mut c)
        .await
        .unwrap()
}

/// Removes the incident from Redis as the archive mover does once the archive holds it.
async fn archive(redis: &LocalRedis, store: &Store, id: &str) -> Removal {
    let p = keys::partition_of(id, 4).unwrap();
    let mut c = common::connect(&redis.url()).await;
    let version: Option<String> = redis::cmd("HGET")
        .arg(store.keys().incident(p, id))
        .arg("v")
        .query_async(&mut c)
        .await
        .unwrap();
    let candidate = ArchiveCandidate {
        partition: p,
        incident: store.get_incident(id).await.unwrap(),
        version: version.unwrap_or_else(|| "0".into()),
        fields: Default::default(),
        closed_ms: 0,
    };
    store.remove_archived(&candidate).await.unwrap()
}

#[tokio::test]
async fn a_claim_kept_with_its_record_gets_its_week_when_the_record_is_archived() {
    let week = i64::try_from(IDEMPOTENCY_TTL_SECS).unwrap();
    for transactions in [false, true] {
        let redis = LocalRedis::start().unwrap();
        let store = store(&redis, transactions, true).await;
        let Accepted::New(id) = report(&store, "kept-1").await else {
            panic!("a new report")
        };
        let claim = claim_key(&store, &id, "kept-1");
        assert_eq!(
            ttl(&redis, &claim).await,
            -1,
            "no expiry while the record is held"
        );
        assert_eq!(
            report(&store, "kept-1").await,
            Accepted::Duplicate(id.clone())
        );

        assert_eq!(archive(&redis, &store, &id).await, Removal::Removed);
        let left = ttl(&redis, &claim).await;
        assert!(
            (week - 60..=week).contains(&left),
            "a week from the move: {left} s (transactions: {transactions})"
        );
        // A retry within that week is still answered with the (now archived) incident.
        assert_eq!(report(&store, "kept-1").await, Accepted::Duplicate(id));
    }
}

#[tokio::test]
async fn archiving_leaves_alone_a_claim_that_expires_already_or_names_another_incident() {
    let redis = LocalRedis::start().unwrap();
    let mut c = common::connect(&redis.url()).await;

    // Written with its expiry (the default, or an earlier release): the move keeps it.
    let with_expiry = store(&redis, false, false).await;
    let Accepted::New(id) = report(&with_expiry, "expiring").await else {
        panic!("a new report")
    };
    let claim = claim_key(&with_expiry, &id, "expiring");
    let week = i64::try_from(IDEMPOTENCY_TTL_SECS).unwrap();
    assert!(ttl(&redis, &claim).await > week - 60);
    let _: () = redis::cmd("EXPIRE")
        .arg(&claim)
        .arg(100)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(archive(&redis, &with_expiry, &id).await, Removal::Removed);
    assert!((1..=100).contains(&ttl(&redis, &claim).await));

    // Kept, but naming another incident (its request id reused after an earlier claim
    // expired): not this move's to shorten.
    let kept = store(&redis, false, true).await;
    let Accepted::New(id) = report(&kept, "reused").await else {
        panic!("a new report")
    };
    let claim = claim_key(&kept, &id, "reused");
    let _: () = redis::cmd("SET")
        .arg(&claim)
        .arg("0123456789abcdef|01KBZZZZZZZZZZZZZZZZZZZZZZ-1")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(archive(&redis, &kept, &id).await, Removal::Removed);
    assert_eq!(ttl(&redis, &claim).await, -1);
}
