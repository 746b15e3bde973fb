//! The stored-format switches with the real binary: `gridroute dev --inline-routing
//! --transactions --packed-events --region-index-depth 2 --claims-with-records` takes the flags,
//! answers a retry with the original incident, lists a grid and its street through
//! ListIncidents, streams every change through WatchIncidents, and exports the switches'
//! metrics.

#![allow(clippy::unwrap_used)]

use crate::common;

use common::{
    metric_value,
    process::{bearer, connect, dev_tokens, scrape, start_dev, temp_dir, wait_serving},
};

use std::{collections::HashSet, time::Duration};

use geo::InteriorPoint;
use gridroute_proto::v1::{self as pb, incident_service_client::IncidentServiceClient};
use gridroute_store::local::free_port;

/// Two grids of one street of the sample, with a point inside each, and the street's code.
fn two_grids_of_a_street() -> ([(String, f64, f64); 2], String) {
    let table = gridroute_benches::dawukou();
    let street_of = |g: &gridroute_core::grid_index::IndexedGrid| {
        let path = table.regions.path(g.region);
        table.regions.node(path[1]).code.clone()
    };
    let grids: Vec<_> = table.grids.grids().iter().collect();
    for a in &grids {
        for b in &grids {
            if a.code != b.code && street_of(a) == street_of(b) {
                let point = |g: &gridroute_core::grid_index::IndexedGrid| {
                    let p = g.shape.interior_point().unwrap();
                    (g.code.clone(), p.x(), p.y())
                };
                return ([point(a), point(b)], street_of(a));
            }
        }
    }
    panic!("no street with two grids");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packed_events_and_street_level_index_through_the_real_binary() {
    let (grpc, metrics) = (free_port().unwrap(), free_port().unwrap());
    let dev_dir = temp_dir("switches");
    let _child = start_dev(grpc, metrics, &dev_dir, common::EVERY_SWITCH);
    let channel = connect(&format!("http://127.0.0.1:{grpc}")).await;
    wait_serving(channel.clone()).await;
    let tokens = dev_tokens(&dev_dir);
    let (source, centre) = (
        &tokens["source_system:resident-app"],
        &tokens["command_centre:command-centre"],
    );
    let mut incidents = IncidentServiceClient::new(channel);

    // Ten reports in each of two grids of one street, one batch per grid.
    let ([a, b], street) = two_grids_of_a_street();
    let mut ids: Vec<HashSet<String>> = Vec::new();
    for (n, (_, lng, lat)) in [&a, &b].into_iter().enumerate() {
        let batch: Vec<pb::ReportIncidentRequest> = (0..10)
            .map(|i| {
                common::report(
                    &format!("switch-{n}-{i}"),
                    "city.vehicle.abandoned",
                    *lng,
                    *lat,
                )
            })
            .collect();
        let answer = incidents
            .report_incidents(bearer(source, tokio_stream::iter(batch)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.accepted_count, 10);
        ids.push(answer.results.into_iter().map(|r| r.incident_id).collect());
    }

    // A retry (its claim kept without an expiry) is answered with the original incident.
    let (_, lng, lat) = &a;
    let retry = incidents
        .report_incident(bearer(
            source,
            common::report("switch-0-3", "city.vehicle.abandoned", *lng, *lat),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(retry.duplicate_request, "{retry:?}");
    assert!(ids[0].contains(&retry.incident_id), "{retry:?}");

    // Each grid lists its own ten, the street all twenty.
    let all: HashSet<String> = ids.iter().flatten().cloned().collect();
    for (region, expected) in [(&a.0, &ids[0]), (&b.0, &ids[1]), (&street, &all)] {
        let page = incidents
            .list_incidents(bearer(
                centre,
                pb::ListIncidentsRequest {
                    region_code: region.clone(),
                    page_size: 50,
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        let got: HashSet<String> = page.incidents.into_iter().map(|i| i.incident_id).collect();
        assert_eq!(&got, expected, "{region}");
    }

    // Every change, reported then dispatched, from the packed entries.
    let mut watch = incidents
        .watch_incidents(bearer(
            centre,
            pb::WatchIncidentsRequest {
                start: pb::WatchStart::Earliest as i32,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut changes = HashSet::new();
    while changes.len() < 40 {
        let e = tokio::time::timeout(Duration::from_secs(10), watch.message())
            .await
            .expect("events keep coming")
            .unwrap()
            .unwrap();
        assert!(all.contains(&e.incident_id), "{e:?}");
        assert!(changes.insert((e.incident_id, e.status)), "a change twice");
    }

    // The switches' metrics: packed entries written, street entries of the other grid passed.
    let text = scrape(metrics);
    assert!(
        metric_value(&text, "gridroute_events_packed_changes_count") >= 2.0,
        "packed entries: {}",
        text.lines()
            .filter(|l| l.contains("packed"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(metric_value(&text, "gridroute_events_packed_changes_sum") >= 40.0);
    assert!(metric_value(&text, "gridroute_index_entries_passed_total") >= 1.0);
}
