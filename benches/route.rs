//! Route decisions on the Dawukou sample: the grid lookup alone, and the full decision (lookup
//! plus rule match) as the router makes it. Figures go to docs/PERFORMANCE.md.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gridroute_benches::{dawukou, points, route_all};

const N: usize = 10_000;

fn bench(c: &mut Criterion) {
    let table = dawukou();
    let pts = points(&table, N, 42);
    let mut g = c.benchmark_group("dawukou");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("grid_lookup", |b| {
        b.iter(|| {
            let mut found = 0usize;
            for &(x, y) in &pts {
                found += usize::from(table.grids.locate(black_box(x), black_box(y)).is_some());
            }
            found
        })
    });
    g.bench_function("grid_lookup_rtree_baseline", |b| {
        b.iter(|| {
            let mut found = 0usize;
            for &(x, y) in &pts {
                found += usize::from(
                    table
                        .grids
                        .locate_exact(black_box(x), black_box(y))
                        .is_some(),
                );
            }
            found
        })
    });
    g.bench_function("route_decision", |b| b.iter(|| route_all(&table, &pts)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
