//! Helpers shared by the store's tests against a real redis-server.

#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use gridroute_proto::v1 as pb;
use gridroute_store::{dispatch::DispatchWrite, schedule};

/// A plain client connection, for looking at what the store wrote.
pub async fn connect(url: &str) -> redis::aio::MultiplexedConnection {
    let c = redis::Client::open(url).unwrap();
    c.get_multiplexed_async_connection().await.unwrap()
}

/// A report of an abandoned car at a point in Wuhan (a category with duplicate detection).
pub fn report(request_id: &str) -> pb::ReportIncidentRequest {
    pb::ReportIncidentRequest {
        request_id: request_id.into(),
        source_system: "app".into(),
        category: "city.vehicle".into(),
        location: Some(pb::Location {
            kind: Some(pb::location::Kind::Point(pb::LatLng {
                latitude: 30.5928,
                longitude: 114.3055,
            })),
            ..Default::default()
        }),
        description: "abandoned car".into(),
        ..Default::default()
    }
}

/// A first dispatch of the entry's incident `id` to `urban-management`, as a router writes it
/// (tests override the fields they are about).
pub fn dispatch_of(e: &gridroute_store::consumer::IngestEntry, id: &str) -> DispatchWrite {
    DispatchWrite {
        partition: e.partition,
        entry_id: e.entry_id.clone(),
        generation: "0".into(),
        incident_id: id.to_owned(),
        department: "urban-management".into(),
        decision: std::sync::Arc::from(&b""[..]),
        region_codes: std::sync::Arc::from(["420102".to_owned()]),
        dispatched_ms: 1_796_604_538_000,
        accept_due_ms: 1_796_608_138_000,
        resolve_due_ms: 1_796_636_938_000,
        estimated: false,
        event: std::sync::Arc::from(&b""[..]),
        deliveries: vec![("urban-management".into(), b"d".to_vec())],
        schedule: schedule::Written::of(id, &[]),
        duplicates: Some(("city.vehicle".into(), 114.3055, 30.5928)),
        traceparent: String::new(),
    }
}

/// Reports one incident and reads its ingest entry: the consumer that holds it, a dispatch of
/// it to `urban-management` (over the router's own connection), its id.
pub async fn reported_as(
    store: &gridroute_store::Store,
    request_id: &str,
) -> (gridroute_store::consumer::Consumer, DispatchWrite, String) {
    store.ensure_groups().await.unwrap();
    let accepted = store
        .report_batch(&[report(request_id)], "", "")
        .await
        .unwrap();
    let id = accepted[0].as_ref().unwrap().incident_id().to_owned();
    let mut entry = None;
    for p in 0..4 {
        let mut c = store
            .consumer(p, "r1", Duration::from_millis(50))
            .await
            .unwrap();
        if let Some(e) = c.read_new(10).await.unwrap().pop() {
            entry = Some((c, e));
        }
    }
    let (c, e) = entry.unwrap();
    assert!(c.direct());
    let w = dispatch_of(&e, &id);
    (c, w, id)
}

/// Reports `n` incidents (`tag-<i>`) through `store` in one batch and reads their ingest
/// entries with consumers named `router` (one per partition, over the router's own
/// connection): per partition, the consumer and what `write` makes of each entry (given the
/// entry, its incident id and the index of its report), as a router would dispatch it.
pub async fn reported_with(
    store: &gridroute_store::Store,
    n: usize,
    tag: &str,
    router: &str,
    write: impl Fn(&gridroute_store::consumer::IngestEntry, &str, usize) -> DispatchWrite,
) -> Vec<(gridroute_store::consumer::Consumer, Vec<DispatchWrite>)> {
    store.ensure_groups().await.unwrap();
    let reports: Vec<_> = (0..n).map(|i| report(&format!("{tag}-{i}"))).collect();
    let accepted = store.report_batch(&reports, "", "").await.unwrap();
    let ids: Vec<String> = accepted
        .iter()
        .map(|a| a.as_ref().unwrap().incident_id().to_owned())
        .collect();
    let mut out = Vec::new();
    for p in 0..store.keys().partitions() {
        let mut c = store
            .consumer(p, router, Duration::from_millis(50))
            .await
            .unwrap();
        assert!(c.direct(), "the router's own connection");
        let entries = c.read_new(1000).await.unwrap();
        let writes = entries
            .iter()
            .map(|e| {
                let id = e.text("id").unwrap();
                let i = ids.iter().position(|x| x == id).unwrap();
                write(e, id, i)
            })
            .collect();
        out.push((c, writes));
    }
    out
}
