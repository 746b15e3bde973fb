//! The stored form of the router's texts (`gridroute_store::compact`): a decision's reasons
//! and dispatch summary compacted against the values the record already holds, as the router
//! does for every incident. Figures go to docs/PERFORMANCE.md.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gridroute_store::compact::{Context, compact};

fn bench(c: &mut Criterion) {
    // The values and texts of one routed Dawukou incident (the load tester's noise report).
    let ctx = Context::new()
        .with(b'g', "640202008003005 沟口三社区第5网格")
        .with(b'k', "640202008003005")
        .with(b'r', "construction-noise")
        .with(b'c', "city.environment.noise.construction")
        .with(b'p', "106.36460471157542, 39.1035235")
        .with(b'd', "housing-construction")
        .with(b't', "dawukou-336b9f373cee");
    let texts = [
        "point (106.36460471157542, 39.1035235) lies in grid 640202008003005 沟口三社区第5网格",
        "rule construction-noise (priority 0) matched category prefix city.environment.noise.construction",
        "to housing-construction by rule construction-noise (table dawukou-336b9f373cee)",
        "沟口三社区第5网格",
        "石嘴山市大武口区沟口街道",
    ];
    let mut g = c.benchmark_group("stored_text");
    g.throughput(Throughput::Elements(texts.len() as u64));
    g.bench_function("compact_reasons", |b| {
        b.iter(|| {
            texts
                .iter()
                .map(|t| compact(black_box(t), &ctx).len())
                .sum::<usize>()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
