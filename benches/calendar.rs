//! Working-time deadlines on the built-in calendar (Asia/Shanghai, the 2024-2026 schedule), as
//! the router counts them for every incident it dispatches: here a deadline 2 working hours
//! ahead and one 30 working days ahead. Figures go to docs/PERFORMANCE.md.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gridroute_core::calendar::WorkCalendar;

fn bench(c: &mut Criterion) {
    let cal = WorkCalendar::cn_default();
    // Dispatch instants spread over 2025, every 7 h 13 min (all hours, all weekdays).
    let starts: Vec<i64> = (0..1_000)
        .map(|i| 1_735_660_800_000 + i * 26_000_000)
        .collect();
    let mut g = c.benchmark_group("calendar");
    g.throughput(Throughput::Elements(starts.len() as u64));
    g.bench_function("accept_and_resolve_deadlines", |b| {
        b.iter(|| {
            starts
                .iter()
                .map(|&s| {
                    cal.add_working(black_box(s), 2 * 3_600_000)
                        + cal.add_working(black_box(s), 30 * 7 * 3_600_000)
                })
                .fold(0i64, i64::wrapping_add)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
