//! Routing tables at city scale: loading and validating a 100,000-grid synthetic table, swapping
//! it in while routers hold the old one, and route decisions on it. Figures go to
//! docs/PERFORMANCE.md.

use std::{hint::black_box, sync::Arc, time::Duration};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use geo::polygon;
use gridroute_benches::{points, route_all};
use gridroute_core::{
    RoutingTable,
    synth::{self, CityParams},
    table::{self, TableSources},
};

const GRIDS: usize = 100_000;

fn city() -> (String, String) {
    let square = geo::MultiPolygon(vec![polygon![
        (x: 116.0, y: 39.6), (x: 116.8, y: 39.6), (x: 116.8, y: 40.2), (x: 116.0, y: 40.2)
    ]]);
    let grids = synth::synthesize_city(&square, &CityParams::with_grids(GRIDS)).expect("generated");
    let rules = gridroute_benches::DAWUKOU_RULES
        .lines()
        .filter(|l| !l.contains("regions: [\"640202"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\"640202\": command-centre", "\"99\": command-centre");
    (synth::render_geojson(&grids), rules)
}

fn bench(c: &mut Criterion) {
    let (grids, rules) = city();
    let src = TableSources {
        grids_geojson: &grids,
        rules_yaml: &rules,
        calendar_yaml: None,
        regions_geojson: None,
    };
    let mut g = c.benchmark_group("city_100k");
    g.sample_size(10).measurement_time(Duration::from_secs(30));
    g.bench_function("load_and_validate", |b| {
        b.iter(|| RoutingTable::load(black_box(src)).expect("valid"))
    });

    let loaded = Arc::new(RoutingTable::load(src).expect("valid"));
    let shared = table::shared(RoutingTable::load(src).expect("valid"));
    g.sample_size(100).measurement_time(Duration::from_secs(5));
    // The swap a router sees: the old table is retired elsewhere (see store::tables).
    g.bench_function("swap", |b| {
        b.iter_batched(
            || loaded.clone(),
            |new| shared.swap(new),
            BatchSize::SmallInput,
        )
    });
    let table = shared.load_full();
    let pts = points(&table, 10_000, 7);
    g.throughput(Throughput::Elements(pts.len() as u64));
    g.bench_function("route_decision", |b| b.iter(|| route_all(&table, &pts)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
