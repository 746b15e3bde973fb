//! A department's dispatch reader on one Redis (`subscribe.rs`) against a real redis-server. A
//! new case's report and decision are read from its record over the reader's own connection,
//! with the reader's next blocking read written right behind them: each dispatch still arrives
//! whole, and one written while the reader waits arrives at once, not after the block time.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use gridroute_proto::v1 as pb;
use gridroute_store::{Store, local::LocalRedis, subscribe::Cursor};

const PARTITIONS: u16 = 4;
const DEPT: &str = "urban-management";
/// Long enough that a delivery held until the reader's blocking read times out would show.
const BLOCK: Duration = Duration::from_secs(4);

/// Reports `tag` and dispatches it to [`DEPT`] as a router would: a head without report or
/// decision, which the reader fills in from the record. Returns the incident id.
async fn dispatch(store: &Store, tag: &str) -> String {
    let (mut c, mut w, id) = common::reported_as(store, tag).await;
    assert_eq!(w.department, DEPT);
    w.decision = Arc::from(prost::Message::encode_to_vec(&pb::RouteDecision {
        department_id: DEPT.into(),
        ..Default::default()
    }));
    let head = prost::Message::encode_to_vec(&pb::Dispatch {
        incident_id: id.clone(),
        department_id: DEPT.into(),
        role: pb::DispatchRole::Primary as i32,
        kind: pb::DispatchKind::New as i32,
        ..Default::default()
    });
    w.deliveries = vec![(DEPT.into(), head)];
    let done = c.dispatch_batch(std::slice::from_ref(&w)).await.unwrap();
    assert!(matches!(done[..], [Ok(true)]), "{done:?}");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatches_arrive_whole_and_at_once_while_the_next_read_waits_behind_the_record_reads() {
    let redis = LocalRedis::start().unwrap();
    let store = Store::connect(&redis.url(), "gr", PARTITIONS)
        .await
        .unwrap();
    let mut reader = store
        .dispatch_reader(DEPT, Cursor::earliest(PARTITIONS), BLOCK)
        .await
        .unwrap();
    let first = dispatch(&store, "ahead-0").await;
    let batch = reader.next_batch(16, |_| false).await.unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].incident_id, first);
    assert_eq!(
        batch[0].report.as_ref().map(|r| r.description.as_str()),
        Some("abandoned car"),
        "the report read from the record"
    );
    assert_eq!(
        batch[0].decision.as_ref().map(|d| d.department_id.as_str()),
        Some(DEPT),
        "the decision read from the record"
    );

    // The reader's next read is already waiting in Redis; each dispatch written now is
    // delivered as soon as it is written, whole, and the record reads of one batch never wait
    // for the read behind them.
    for i in 1..4 {
        let next = tokio::spawn({
            let store = store.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let id = dispatch(&store, &format!("ahead-{i}")).await;
                (id, Instant::now())
            }
        });
        let batch = reader.next_batch(16, |_| false).await.unwrap();
        let arrived = Instant::now();
        let (id, written) = next.await.unwrap();
        assert_eq!(batch.len(), 1, "round {i}");
        assert_eq!(batch[0].incident_id, id);
        assert!(batch[0].report.is_some() && batch[0].decision.is_some());
        let waited = arrived.saturating_duration_since(written);
        assert!(
            waited < BLOCK / 2,
            "round {i}: delivered {waited:?} after it was written, as if held until the blocking read timed out"
        );
        assert_eq!(
            Cursor::parse(&batch[0].cursor, PARTITIONS).map(|c| c.encode()),
            Ok(batch[0].cursor.clone()),
            "a cursor a subscriber can resume from"
        );
    }

    // Nothing more: the read ahead times out empty after the block time.
    let started = Instant::now();
    let batch = reader.next_batch(16, |_| false).await.unwrap();
    assert!(batch.is_empty());
    assert!(started.elapsed() >= BLOCK / 2);
}
