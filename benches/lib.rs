//! Fixtures shared by the criterion benches: the Dawukou sample table and reproducible
//! workloads drawn from it.

use gridroute_core::{
    RouteQuery, RouteTarget, RoutingTable, crs::Crs, rules::Urgency, synth::Rng,
    table::TableSources,
};

/// The Dawukou sample's `grids.geojson`.
pub const DAWUKOU_GRIDS: &str = include_str!("../deploy/sample/dawukou/grids.geojson");
/// The Dawukou sample's `rules.yaml`.
pub const DAWUKOU_RULES: &str = include_str!("../deploy/sample/dawukou/rules.yaml");

/// The Dawukou sample table, as `make dev` loads it.
pub fn dawukou() -> RoutingTable {
    RoutingTable::load(TableSources {
        grids_geojson: DAWUKOU_GRIDS,
        rules_yaml: DAWUKOU_RULES,
        calendar_yaml: None,
        regions_geojson: None,
    })
    .expect("the sample table is valid")
}

/// Categories in a realistic mix (the sample rules cover all but the last, which falls back
/// to the command centre).
pub const CATEGORIES: [&str; 8] = [
    "city.vehicle.abandoned",
    "city.vehicle.illegal_parking",
    "city.fire_lane.blocked",
    "city.sanitation.garbage",
    "city.environment.noise.construction",
    "city.market.food_safety",
    "civil.dispute.property",
    "city.other",
];

/// `n` points (longitude, latitude) uniform over the bounding box of the table's grids: most
/// fall inside a grid, some outside the district, as real reports with GPS noise do.
pub fn points(table: &RoutingTable, n: usize, seed: u64) -> Vec<(f64, f64)> {
    let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    for g in table.grids.grids() {
        for p in &g.shape.0 {
            for c in p.exterior().coords() {
                x0 = x0.min(c.x);
                y0 = y0.min(c.y);
                x1 = x1.max(c.x);
                y1 = y1.max(c.y);
            }
        }
    }
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| (x0 + rng.unit() * (x1 - x0), y0 + rng.unit() * (y1 - y0)))
        .collect()
}

/// Routes every point with the category mix, as the router would; returns a checksum so that
/// the work cannot be optimised away.
pub fn route_all(table: &RoutingTable, pts: &[(f64, f64)]) -> usize {
    let mut n = 0usize;
    for (i, &(lng, lat)) in pts.iter().enumerate() {
        let q = RouteQuery {
            category: CATEGORIES[i % CATEGORIES.len()],
            target: RouteTarget::Point {
                lng,
                lat,
                crs: Crs::Gcj02,
                accuracy_m: 0.0,
            },
            urgency: Urgency::Normal,
            source: "resident-app",
            excluded: &[],
            labels: &(),
            now_ms: 0,
        };
        n += usize::from(std::hint::black_box(table.route(&q)).department);
    }
    n
}
