//! Routing table lifecycle: publish, reject, hot swap under load, rollback, what-if diff.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::{Duration, Instant};

use common::{Env, grid_point, report};
use gridroute_benches::{DAWUKOU_GRIDS, DAWUKOU_RULES};
use gridroute_proto::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt;

/// The sample with abandoned vehicles sent to urban management everywhere.
fn candidate_rules() -> String {
    DAWUKOU_RULES.replacen(
        "  - id: vehicle-abandoned\n    category: city.vehicle.abandoned\n    department: property-office",
        "  - id: vehicle-abandoned\n    category: city.vehicle.abandoned\n    department: urban-management",
        1,
    )
}

fn sources(rules: &str) -> Option<pb::TableSources> {
    Some(pb::TableSources {
        grids_geojson: DAWUKOU_GRIDS.into(),
        rules_yaml: rules.into(),
        ..Default::default()
    })
}

async fn wait_replica(env: &Env, version: &str) -> Duration {
    let started = Instant::now();
    while env.tables.load().version != version {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "replica never swapped to {version}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_table_is_rejected_and_the_old_one_stays() {
    let env = Env::start().await;
    let before = env.tables.load().version.clone();
    let mut admin = env.table_admin().await;
    let bad_rules = DAWUKOU_RULES.replace("department: water-affairs", "department: water-board");
    let bad_grids = DAWUKOU_GRIDS.replacen(
        "\"code\":\"640202001001002\"",
        "\"code\":\"640202001001001\"",
        1,
    );
    let err = admin
        .publish_table(env.signed(pb::PublishTableRequest {
            sources: Some(pb::TableSources {
                grids_geojson: bad_grids,
                rules_yaml: bad_rules,
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let v = err.get_details_bad_request().unwrap().field_violations;
    let fields: Vec<&str> = v.iter().map(|v| v.field.as_str()).collect();
    assert!(fields.contains(&"sources.640202001001001"), "{fields:?}");
    assert!(fields.contains(&"sources.water"), "{fields:?}");
    assert!(
        v.iter()
            .any(|v| v.description.starts_with("[duplicate_grid]"))
    );
    assert!(
        v.iter()
            .any(|v| v.description.starts_with("[unknown_department]"))
    );

    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(env.tables.load().version, before);
    let info = admin
        .get_table_info(env.signed(pb::GetTableInfoRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.current_version, before);
    assert_eq!(info.history.len(), 1, "only the bootstrap publication");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_swaps_every_replica_and_rollback_restores() {
    let env = Env::start().await;
    let v1 = env.tables.load().version.clone();
    let mut admin = env.table_admin().await;
    let dry = admin
        .publish_table(env.signed(pb::PublishTableRequest {
            sources: sources(&candidate_rules()),
            validate_only: true,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(!dry.changed);
    assert_eq!(dry.grid_count, 317);
    assert_eq!(
        env.tables.load().version,
        v1,
        "validate_only publishes nothing"
    );

    let r = admin
        .publish_table(env.signed(pb::PublishTableRequest {
            sources: sources(&candidate_rules()),
            published_by: "ops".into(),
            note: "vehicles to urban management".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(r.changed);
    assert_eq!(r.previous_version, v1);
    let took = wait_replica(&env, &r.version).await;
    assert!(took < Duration::from_secs(2), "swap took {took:?}");

    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let id = env
        .incidents()
        .await
        .report_incident(env.signed(report("after-swap", "city.vehicle.abandoned", lng, lat)))
        .await
        .unwrap()
        .into_inner()
        .incident_id;
    let d = env
        .wait_status(&id, pb::IncidentStatus::Dispatched)
        .await
        .decision
        .unwrap();
    assert_eq!(
        (d.department_id.as_str(), d.table_version.as_str()),
        ("urban-management", r.version.as_str())
    );

    // Publishing the same content again changes nothing.
    let again = admin
        .publish_table(env.signed(pb::PublishTableRequest {
            sources: sources(&candidate_rules()),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.changed);

    let info = admin
        .rollback_table(env.signed(pb::RollbackTableRequest {
            published_by: "ops".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.current_version, v1);
    let versions: Vec<&str> = info.history.iter().map(|h| h.version.as_str()).collect();
    assert_eq!(versions, [v1.as_str(), r.version.as_str(), v1.as_str()]);
    assert_eq!(info.history[1].note, "vehicles to urban management");
    wait_replica(&env, &v1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_under_load_routes_each_incident_with_one_whole_table() {
    let env = Env::start().await;
    let v1 = env.tables.load().version.clone();
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let client = env.incidents().await;
    let token = env.token("source_system:resident-app");
    let load = tokio::spawn(async move {
        let mut ids = Vec::new();
        for chunk in 0..30 {
            let batch: Vec<_> = (0..10)
                .map(|i| {
                    report(
                        &format!("load-{chunk}-{i}"),
                        "city.vehicle.abandoned",
                        lng,
                        lat,
                    )
                })
                .collect();
            let mut req = tonic::Request::new(tokio_stream::iter(batch));
            req.metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            let resp = client
                .clone()
                .report_incidents(req)
                .await
                .unwrap()
                .into_inner();
            ids.extend(resp.results.into_iter().map(|r| r.incident_id));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        ids
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let v2 = env.publish(sources(&candidate_rules())).await;
    let ids = load.await.unwrap();
    assert_eq!(ids.len(), 300);
    let (mut old, mut new) = (0, 0);
    for id in &ids {
        let d = env
            .wait_status(id, pb::IncidentStatus::Dispatched)
            .await
            .decision
            .unwrap();
        match d.table_version.as_str() {
            v if v == v1 => {
                assert_eq!(d.department_id, "property-office");
                old += 1;
            }
            v if v == v2 => {
                assert_eq!(d.department_id, "urban-management");
                new += 1;
            }
            other => panic!("routed with unknown table {other}"),
        }
    }
    assert!(
        old > 0 && new > 0,
        "the swap happened mid-load ({old} old, {new} new)"
    );
    assert_eq!(
        env.dispatch_count("property-office").await + env.dispatch_count("urban-management").await,
        300,
        "none lost, none doubled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_lists_every_incident_a_candidate_would_route_differently() {
    let env = Env::start().await;
    let table = env.table();
    let (grid, _, lng, lat) = grid_point(&table, false);
    let (_, _, tlng, tlat) = grid_point(&table, true);
    let mut c = env.incidents().await;
    let mut changed = Vec::new();
    for i in 0..3 {
        changed.push(
            c.report_incident(env.signed(report(
                &format!("d-{i}"),
                "city.vehicle.abandoned",
                lng,
                lat,
            )))
            .await
            .unwrap()
            .into_inner()
            .incident_id,
        );
    }
    let same = [
        c.report_incident(env.signed(report("d-t", "city.vehicle.abandoned", tlng, tlat)))
            .await
            .unwrap()
            .into_inner()
            .incident_id,
        c.report_incident(env.signed(report("d-w", "city.water.leak", lng, lat)))
            .await
            .unwrap()
            .into_inner()
            .incident_id,
    ];
    for id in changed.iter().chain(&same) {
        env.wait_status(id, pb::IncidentStatus::Dispatched).await;
    }
    let mut file_report = report("", "city.vehicle.abandoned", lng, lat);
    file_report.request_id.clear();
    let r = env
        .table_admin()
        .await
        .diff_table(env.signed(pb::DiffTableRequest {
            candidate: sources(&candidate_rules()),
            replay_recent: 100,
            reports: vec![file_report, report("", "city.water.leak", lng, lat)],
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.compared, 7);
    let mut ids: Vec<String> = r
        .changes
        .iter()
        .filter(|c| !c.incident_id.is_empty())
        .map(|c| c.incident_id.clone())
        .collect();
    ids.sort();
    changed.sort();
    assert_eq!(
        ids, changed,
        "exactly the incidents whose department changes"
    );
    let from_file: Vec<i32> = r
        .changes
        .iter()
        .filter(|c| c.incident_id.is_empty())
        .map(|c| c.report_index)
        .collect();
    assert_eq!(from_file, [0]);
    let ch = &r.changes[0];
    assert_eq!(
        ch.current.as_ref().unwrap().department_id,
        "property-office"
    );
    assert_eq!(
        ch.candidate.as_ref().unwrap().department_id,
        "urban-management"
    );
    assert_eq!(
        ch.candidate
            .as_ref()
            .unwrap()
            .region_path
            .last()
            .unwrap()
            .code,
        grid
    );
    // Nothing was published by a diff.
    assert_eq!(env.tables.load().version, table.version);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_replica_keeps_the_published_table_over_its_configured_one() {
    let env = Env::start().await;
    let v2 = env.publish(sources(&candidate_rules())).await;
    // A new replica configured with the old sample joins.
    let store = gridroute_store::Store::connect(&env.redis.url(), "gr", common::PARTITIONS)
        .await
        .unwrap();
    let shared = gridroute_core::table::shared(gridroute_benches::dawukou());
    store
        .bootstrap_table(&shared, &common::sample_sources())
        .await
        .unwrap();
    assert_eq!(shared.load().version, v2);
}
