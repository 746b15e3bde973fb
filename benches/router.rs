//! The router's own work per incident, without Redis: an ingest entry routed into the write
//! that dispatches it (`gridroute_router::route::route_entry`: decode, route, decision,
//! deadlines, SLA schedule, dispatch messages), as `make router-cost` measures it end to end
//! with Redis' reply parsing and the script call around it. Figures go to docs/PERFORMANCE.md.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gridroute_benches::{CATEGORIES, dawukou, points};
use gridroute_proto::v1 as pb;
use gridroute_store::{
    consumer::{IngestEntry, PACKED_FIELD, pack},
    keys,
};
use prost::Message;

fn bench(c: &mut Criterion) {
    let table = dawukou();
    let now: i64 = 1_767_225_600_000; // 2026-01-01
    // Reports as the load tester sends them: points over the district, the category mix, three
    // urgencies; each entry as the API writes it to the ingest stream.
    let entries: Vec<IngestEntry> = points(&table, 4096, 7)
        .into_iter()
        .enumerate()
        .map(|(i, (lng, lat))| {
            let report = pb::ReportIncidentRequest {
                source_system: "bench".into(),
                request_id: format!("r-{i}"),
                category: CATEGORIES[i % CATEGORIES.len()].into(),
                urgency: (i % 3) as i32 + 1,
                description: "a car has stood here for three weeks".into(),
                location: Some(pb::Location {
                    kind: Some(pb::location::Kind::Point(pb::LatLng {
                        longitude: lng,
                        latitude: lat,
                    })),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let partition = (i % 12) as u16;
            // Packed, as reports are queued.
            let id = keys::incident_id(&format!("01K{i:023}"), partition);
            let value = pack(&id, "0", &now.to_string(), "", &report.encode_to_vec());
            IngestEntry::new(
                partition,
                format!("{}-0", now + i as i64),
                1,
                vec![(PACKED_FIELD.to_owned(), value)],
            )
        })
        .collect();
    let mut g = c.benchmark_group("router");
    g.throughput(Throughput::Elements(entries.len() as u64));
    g.bench_function("route_entry", |b| {
        b.iter(|| {
            // As a router does: the decisions' metrics gathered over the batch, recorded once.
            let mut tally = gridroute_router::DecisionTally::default();
            let n = entries
                .iter()
                .filter_map(|e| {
                    gridroute_router::route::route_entry(&table, black_box(e), now, &mut tally).ok()
                })
                .map(|(w, _, _)| w.decision.len() + w.schedule.text.len())
                .sum::<usize>();
            tally.record();
            n
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
