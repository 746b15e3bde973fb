//! Realistic traffic drawn from a routing table: points inside grids (a fifth of the reports
//! fall on a twentieth of the grids, as complaints cluster in busy neighbourhoods), a category
//! and urgency mix, a share of repeated request ids and of points outside every grid.

use geo::{BoundingRect, InteriorPoint};
use gridroute_core::{RoutingTable, synth::Rng, table::TableSources};
use gridroute_proto::v1 as pb;

/// The reporting system the load tester reports as (its token is
/// `source_system:gridroute-loadtest`).
pub const SOURCE_SYSTEM: &str = "gridroute-loadtest";

/// Categories with their weights.
const CATEGORIES: [(&str, u32); 10] = [
    ("city.vehicle.abandoned", 20),
    ("city.vehicle.illegal_parking", 20),
    ("city.sanitation.garbage", 15),
    ("city.appearance.street_vending", 10),
    ("city.environment.noise.construction", 8),
    ("city.fire_lane.blocked", 5),
    ("city.water.leak", 7),
    ("city.market.food_safety", 5),
    ("civil.dispute.property", 5),
    ("city.other", 5),
];

/// A reproducible stream of reports.
#[derive(Debug)]
pub struct Traffic {
    points: Vec<(f64, f64)>,
    hot: usize,
    outside: (f64, f64),
    departments: Vec<String>,
    run: u64,
    duplicate_share: f64,
    outside_share: f64,
}

impl Traffic {
    /// Traffic over the table in `dir` (or the built-in sample).
    pub fn from_tables(
        dir: Option<&std::path::Path>,
        duplicate_share: f64,
        outside_share: f64,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let (grids, rules) = match dir {
            Some(d) => (
                std::fs::read_to_string(d.join("grids.geojson"))?,
                std::fs::read_to_string(d.join("rules.yaml"))?,
            ),
            None => (
                gridroute_benches::DAWUKOU_GRIDS.to_owned(),
                gridroute_benches::DAWUKOU_RULES.to_owned(),
            ),
        };
        let table = RoutingTable::load(TableSources {
            grids_geojson: &grids,
            rules_yaml: &rules,
            calendar_yaml: None,
            regions_geojson: None,
        })?;
        let mut rng = Rng::new(7);
        let mut points = Vec::new();
        for g in table.grids.grids() {
            if let Some(p) = g.shape.interior_point() {
                points.push((p.x(), p.y()));
            }
            // A few more points spread over the grid.
            if let Some(r) = g.shape.bounding_rect() {
                for _ in 0..20 {
                    let (x, y) = (
                        r.min().x + rng.unit() * r.width(),
                        r.min().y + rng.unit() * r.height(),
                    );
                    if table.grids.locate(x, y).is_some_and(|h| h.code == g.code) {
                        points.push((x, y));
                        if points.len() % 4 == 0 {
                            break;
                        }
                    }
                }
            }
        }
        // Shuffle so that "hot" points (the first twentieth) spread over the city.
        for i in (1..points.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            points.swap(i, j);
        }
        let mut departments: Vec<String> = table.departments.iter().map(|d| d.id.clone()).collect();
        departments.sort();
        let run = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        // Just south-west of every grid: outside, but near enough to be plausible GPS noise.
        let outside = points
            .iter()
            .fold((f64::MAX, f64::MAX), |a, p| (a.0.min(p.0), a.1.min(p.1)));
        Ok(Self {
            outside: (outside.0 - 0.05, outside.1 - 0.05),
            hot: (points.len() / 20).max(1),
            points,
            departments,
            run,
            duplicate_share: duplicate_share.clamp(0.0, 1.0),
            outside_share: outside_share.clamp(0.0, 1.0),
        })
    }

    /// Every department of the table.
    pub fn departments(&self) -> &[String] {
        &self.departments
    }

    fn rng(i: u64, salt: u64) -> Rng {
        Rng::new(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt)
    }

    /// Whether report `i` repeats an earlier request id.
    pub fn is_duplicate(&self, i: u64) -> bool {
        i > 0 && Self::rng(i, 1).unit() < self.duplicate_share
    }

    /// The `i`-th report of this run.
    pub fn report(&self, i: u64) -> pb::ReportIncidentRequest {
        // A duplicate repeats the whole earlier report, as a retrying client does.
        let seq = if self.is_duplicate(i) {
            Self::rng(i, 2).next_u64() % i
        } else {
            i
        };
        let mut rng = Self::rng(seq, 3);
        let (lng, lat) = if rng.unit() < self.outside_share {
            self.outside
        } else if rng.unit() < 0.2 {
            self.points[(rng.next_u64() % self.hot as u64) as usize]
        } else {
            self.points[(rng.next_u64() % self.points.len() as u64) as usize]
        };
        let total: u32 = CATEGORIES.iter().map(|c| c.1).sum();
        let mut pick = (rng.next_u64() % u64::from(total)) as u32;
        let mut category = CATEGORIES[0].0;
        for (c, w) in CATEGORIES {
            if pick < w {
                category = c;
                break;
            }
            pick -= w;
        }
        let u = rng.unit();
        let urgency = if u < 0.8 {
            pb::Urgency::Normal
        } else if u < 0.97 {
            pb::Urgency::High
        } else {
            pb::Urgency::Critical
        };
        pb::ReportIncidentRequest {
            request_id: format!("lt-{:x}-{seq}", self.run),
            source_system: SOURCE_SYSTEM.into(),
            category: category.into(),
            location: Some(pb::Location {
                kind: Some(pb::location::Kind::Point(pb::LatLng {
                    latitude: lat,
                    longitude: lng,
                })),
                ..Default::default()
            }),
            description: "load test report".into(),
            urgency: urgency as i32,
            ..Default::default()
        }
    }
}
