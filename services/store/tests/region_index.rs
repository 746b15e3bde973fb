//! Region index entries down to a level (`--region-index-depth`, written by transactions):
//! lists and figures of every region, from the district down to a grid, find the same
//! incidents, page after page, whether they were indexed at every level (before the depth was
//! recorded, or by a replica without it) or only down to the street with their finer codes in
//! the field names; compaction keeps those entries; a replica asked for another depth is
//! refused.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use gridroute_core::calendar::WorkCalendar;
use gridroute_proto::v1 as pb;
use gridroute_store::{
    Store, dispatch::DispatchWrite, local::LocalRedis, query::ListFilter, stats::StatsFilter,
};

const PARTITIONS: u16 = 4;

/// Grid path of incident `i`: one district, two streets, three communities per street, two
/// grids per community.
fn path(i: usize) -> [String; 4] {
    let (s, c, g) = (i % 2, (i / 2) % 3, (i / 6) % 2);
    [
        "64".to_owned(),
        format!("64-{s}"),
        format!("64-{s}-{c}"),
        format!("64-{s}-{c}-{g}"),
    ]
}

fn write(e: &gridroute_store::consumer::IngestEntry, id: &str, codes: &[String]) -> DispatchWrite {
    let region_path = codes
        .iter()
        .map(|c| pb::RegionRef {
            code: c.clone(),
            ..Default::default()
        })
        .collect();
    DispatchWrite {
        decision: Arc::from(prost::Message::encode_to_vec(&pb::RouteDecision {
            department_id: "urban-management".into(),
            region_path,
            ..Default::default()
        })),
        region_codes: Arc::from(codes.to_vec()),
        deliveries: vec![("urban-management".into(), b"head".to_vec())],
        duplicates: None,
        ..common::dispatch_of(e, id)
    }
}

/// Reports `n` incidents (`tag-<i>`, the path of `first + i`) through `store` and dispatches
/// them with its consumers, by transaction; returns (id, path) of each.
async fn routed(store: &Store, first: usize, n: usize, tag: &str) -> Vec<(String, [String; 4])> {
    let router = format!("router-{tag}");
    let batches = common::reported_with(store, n, tag, &router, |e, id, i| {
        write(e, id, &path(first + i))
    })
    .await;
    let mut out = Vec::new();
    for (mut c, writes) in batches {
        let done = c.dispatch_batch(&writes).await.unwrap();
        assert!(done.iter().all(|d| matches!(d, Ok(true))), "{done:?}");
        out.extend(writes.iter().map(|w| {
            let codes: [String; 4] = w.region_codes.to_vec().try_into().unwrap();
            (w.incident_id.clone(), codes)
        }));
    }
    out
}

/// Every incident a list of `region` finds, page by page (small pages, so that tokens fall
/// inside entries and between sources).
async fn listed(store: &Store, region: &[String]) -> Vec<String> {
    let (code, ancestors) = region.split_last().unwrap();
    let filter = ListFilter {
        region_code: code.clone(),
        region_ancestors: ancestors.to_vec(),
        ..Default::default()
    };
    let (mut out, mut token) = (Vec::new(), String::new());
    loop {
        let (page, next) = store.list_incidents(&filter, 3, &token).await.unwrap();
        out.extend(page.into_iter().map(|i| i.incident_id));
        if next.is_empty() {
            return out;
        }
        token = next;
    }
}

async fn stream_len(c: &mut redis::aio::MultiplexedConnection, key: String) -> usize {
    redis::cmd("XLEN").arg(key).query_async(c).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_region_lists_the_same_incidents_whichever_depth_indexed_them() {
    let redis = LocalRedis::start().unwrap();
    let mut plain = common::connect(&redis.url()).await;
    let connect = || async {
        Store::connect(&redis.url(), "gr", PARTITIONS)
            .await
            .unwrap()
            .with_transactions(true)
    };
    let every_level = connect().await;
    every_level.ensure_groups().await.unwrap();
    // Index entries of the communities and grids, and of the streets, so far.
    let counts = |plain: &mut redis::aio::MultiplexedConnection| {
        let (k, mut plain) = (every_level.keys().clone(), plain.clone());
        async move {
            let (mut fine, mut streets) = (0, 0);
            for p in 0..PARTITIONS {
                for i in 0..12 {
                    for code in &path(i)[2..] {
                        fine += stream_len(&mut plain, k.index_region(p, code)).await;
                    }
                }
                for s in ["64-0", "64-1"] {
                    streets += stream_len(&mut plain, k.index_region(p, s)).await;
                }
            }
            (fine, streets)
        }
    };
    // Indexed at every level, before any depth was recorded.
    let mut all = routed(&every_level, 0, 30, "before").await;
    let (fine0, streets0) = counts(&mut plain).await;
    let to_street = connect().await.with_region_index_depth(2);
    to_street.record_region_index_depth().await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    // Down to the street: no community or grid entry.
    all.extend(routed(&to_street, 30, 40, "street").await);
    let (fine1, streets1) = counts(&mut plain).await;
    assert_eq!(fine1, fine0);
    assert!(streets1 > streets0);
    // Meanwhile a replica still writing every level.
    all.extend(routed(&every_level, 70, 12, "mixed").await);
    let (grid_entries_before, _) = counts(&mut plain).await;
    assert!(grid_entries_before > fine1);

    let regions: BTreeSet<Vec<String>> = all
        .iter()
        .flat_map(|(_, codes)| (1..=4).map(|n| codes[..n].to_vec()))
        .collect();
    assert_eq!(regions.len(), 1 + 2 + 6 + 12);
    let calendar = WorkCalendar::from_yaml("timezone: Asia/Shanghai\n").unwrap();
    for region in &regions {
        let expected: BTreeSet<&str> = all
            .iter()
            .filter(|(_, codes)| codes.starts_with(region))
            .map(|(id, _)| id.as_str())
            .collect();
        for store in [&every_level, &to_street] {
            let got = listed(store, region).await;
            let unique: BTreeSet<&str> = got.iter().map(String::as_str).collect();
            assert_eq!(unique.len(), got.len(), "{region:?}: listed twice");
            assert_eq!(unique, expected, "{region:?}");
        }
        let (code, ancestors) = region.split_last().unwrap();
        let stats = to_street
            .stats(
                &StatsFilter {
                    region_code: code.clone(),
                    region_ancestors: ancestors.to_vec(),
                    ..Default::default()
                },
                &calendar,
            )
            .await
            .unwrap();
        assert_eq!(stats.incident_count as usize, expected.len(), "{region:?}");
    }
    // A list without the ancestors (an earlier release's reader) misses the incidents indexed
    // only down to the street: what the depth's readers add.
    let grid = path(0);
    let (code, _) = grid.split_last().unwrap();
    let alone = ListFilter {
        region_code: code.clone(),
        ..Default::default()
    };
    let (page, _) = to_street.list_incidents(&alone, 500, "").await.unwrap();
    let expected = all.iter().filter(|(_, c)| c == &grid).count();
    assert!(page.len() < expected, "{} of {expected}", page.len());

    // Compaction keeps street entries naming live incidents by their finer codes.
    let streams: BTreeSet<String> = (0..PARTITIONS)
        .flat_map(|p| ["64-0", "64-1"].map(|s| every_level.keys().index_region(p, s)))
        .collect();
    let removed = to_street
        .compact_indexes(&streams, i64::MAX / 2, 10_000)
        .await
        .unwrap();
    assert_eq!(removed, 0);
    let (fine_after, _) = counts(&mut plain).await;
    assert_eq!(fine_after, grid_entries_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_asked_for_another_depth_is_refused() {
    let redis = LocalRedis::start().unwrap();
    let at = |depth| {
        let url = redis.url();
        async move {
            Store::connect(&url, "gr", PARTITIONS)
                .await
                .unwrap()
                .with_transactions(true)
                .with_region_index_depth(depth)
        }
    };
    at(2).await.record_region_index_depth().await.unwrap();
    at(2).await.record_region_index_depth().await.unwrap();
    let refused = at(3).await.record_region_index_depth().await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("depth 2")),
        "{refused:?}"
    );
    // Writing every level (0) is always allowed: readers find those entries in any case.
    at(0).await.record_region_index_depth().await.unwrap();
}
