//! Synthetic grid tables inside a real boundary.
//!
//! Real grid polygons are not public, so gridroute generates realistic ones: seed points dense
//! around an urban centre and sparse in the countryside, a Voronoi partition relaxed a few
//! times (Lloyd) so that grids have compact shapes, every cell clipped to the real outline, and
//! the region tree built by clustering grids into streets and communities. The output tiles
//! the boundary without gaps or overlaps (up to the 1e-7 degree rounding of the coordinates)
//! and is deterministic for a given seed.
//!
//! Layout: this file generates one district's grids ([`synthesize`]); `city` a whole city of
//! any size with its region tree ([`synthesize_city`]); `render` writes them as a table's
//! `grids.geojson`.

use geo::{
    BooleanOps, BoundingRect, Centroid, Contains, Coord, LineString, MapCoords, MultiPolygon,
    Point, Polygon,
};

mod city;
mod render;

pub use city::{CityParams, synthesize_city};
pub use render::{area_km2, dawukou_grids, grids_geojson, render_geojson};

/// What to generate.
#[derive(Debug, Clone)]
pub struct SynthParams {
    /// Table name.
    pub name: String,
    /// District code, e.g. `640202`.
    pub district_code: String,
    /// District name.
    pub district_name: String,
    /// Number of grids.
    pub grids: usize,
    /// Street names with their number of communities. A name ending in 镇 or 乡 is a township
    /// and gets villages; the township goes to the most rural cluster.
    pub streets: Vec<(String, usize)>,
    /// Longitude and latitude of the urban centre, where most grids are.
    pub urban_centre: (f64, f64),
    /// Spread of the urban grids around the centre, in km (one standard deviation).
    pub urban_spread_km: f64,
    /// Share of the grids seeded around the urban centre; the rest are spread uniformly.
    pub urban_share: f64,
    /// Random seed.
    pub seed: u64,
}

impl SynthParams {
    /// The Dawukou sample: 1 township and 10 sub-districts, 62 communities and villages,
    /// 317 grids, as described in the article behind gridroute.
    pub fn dawukou() -> Self {
        let streets = [
            ("长胜街道", 5),
            ("朝阳街道", 5),
            ("人民路街道", 5),
            ("长城街道", 5),
            ("青山街道", 5),
            ("锦林街道", 5),
            ("长兴街道", 5),
            ("沟口街道", 5),
            ("石炭井街道", 5),
            ("白芨沟街道", 5),
            ("星海镇", 12),
        ];
        Self {
            name: "dawukou".into(),
            district_code: "640202".into(),
            district_name: "大武口区".into(),
            grids: 317,
            streets: streets.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect(),
            urban_centre: (106.375, 39.02),
            urban_spread_km: 4.5,
            urban_share: 0.72,
            seed: 640_202,
        }
    }
}

/// A generated grid.
#[derive(Debug, Clone)]
pub struct SynthGrid {
    /// Street index into `SynthParams::streets` order as assigned.
    pub street: usize,
    /// Community index within the street.
    pub community: usize,
    /// Grid shape in longitude/latitude.
    pub shape: MultiPolygon<f64>,
}

/// Deterministic pseudo-random numbers (SplitMix64): no dependency, same output everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.unit().max(1e-12);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// A local equirectangular projection in km, good enough at district or city scale.
#[derive(Debug, Clone, Copy)]
struct Proj {
    lng0: f64,
    lat0: f64,
    kx: f64,
    ky: f64,
}

impl Proj {
    fn new(lng0: f64, lat0: f64) -> Self {
        Self {
            lng0,
            lat0,
            kx: 111.32 * lat0.to_radians().cos(),
            ky: 110.57,
        }
    }
    fn fwd(&self, c: Coord<f64>) -> Coord<f64> {
        Coord {
            x: (c.x - self.lng0) * self.kx,
            y: (c.y - self.lat0) * self.ky,
        }
    }
    fn inv(&self, c: Coord<f64>) -> Coord<f64> {
        let round = |v: f64| (v * 1e7).round() / 1e7;
        Coord {
            x: round(c.x / self.kx + self.lng0),
            y: round(c.y / self.ky + self.lat0),
        }
    }
}

/// Generates grids inside `boundary` (longitude/latitude).
pub fn synthesize(boundary: &MultiPolygon<f64>, p: &SynthParams) -> Result<Vec<SynthGrid>, String> {
    let total_communities: usize = p.streets.iter().map(|s| s.1).sum();
    if p.grids < total_communities || p.streets.is_empty() {
        return Err(format!(
            "{} grids cannot fill {total_communities} communities",
            p.grids
        ));
    }
    let rect = boundary.bounding_rect().ok_or("empty boundary")?;
    let proj = Proj::new(rect.center().x, rect.center().y);
    let region = boundary.map_coords(|c| proj.fwd(c));
    let bbox = region.bounding_rect().ok_or("empty boundary")?;
    let mut rng = Rng::new(p.seed);

    // Seeds: a dense urban cluster plus uniform coverage, all inside the boundary.
    let centre = proj.fwd(Coord {
        x: p.urban_centre.0,
        y: p.urban_centre.1,
    });
    let urban = (p.grids as f64 * p.urban_share).round() as usize;
    let mut seeds: Vec<Coord<f64>> = Vec::with_capacity(p.grids);
    let mut attempts = 0usize;
    while seeds.len() < p.grids {
        attempts += 1;
        if attempts > p.grids * 10_000 {
            return Err("could not place seeds inside the boundary".into());
        }
        let c = if seeds.len() < urban {
            Coord {
                x: centre.x + rng.normal() * p.urban_spread_km,
                y: centre.y + rng.normal() * p.urban_spread_km,
            }
        } else {
            Coord {
                x: bbox.min().x + rng.unit() * bbox.width(),
                y: bbox.min().y + rng.unit() * bbox.height(),
            }
        };
        if region.contains(&Point(c)) {
            seeds.push(c);
        }
    }

    // Lloyd relaxation: move each seed to the centroid of its clipped cell.
    let mut cells = Vec::new();
    for round in 0..4 {
        cells = voronoi_cells(&seeds, bbox.min(), bbox.max())
            .into_iter()
            .map(|cell| region.intersection(&cell))
            .collect::<Vec<_>>();
        if round < 3 {
            for (s, cell) in seeds.iter_mut().zip(&cells) {
                if let Some(c) = cell.centroid() {
                    *s = c.0;
                }
            }
        }
    }

    // Streets: cluster the grids; the township takes the cluster farthest from the centre.
    let street_of = kmeans(&seeds, p.streets.len(), &mut rng);
    let mut order: Vec<usize> = (0..p.streets.len()).collect();
    let dist = |k: usize| {
        let members: Vec<&Coord<f64>> = seeds
            .iter()
            .zip(&street_of)
            .filter(|(_, s)| **s == k)
            .map(|(c, _)| c)
            .collect();
        let n = members.len().max(1) as f64;
        let mx = members.iter().map(|c| c.x).sum::<f64>() / n;
        let my = members.iter().map(|c| c.y).sum::<f64>() / n;
        ((mx - centre.x).powi(2) + (my - centre.y).powi(2)).sqrt()
    };
    order.sort_by(|&a, &b| dist(a).total_cmp(&dist(b)));
    // `order[i]` is the i-th nearest cluster; give it the i-th name, townships last.
    let mut names: Vec<usize> = (0..p.streets.len()).collect();
    names.sort_by_key(|&i| {
        (
            p.streets[i].0.ends_with('镇') || p.streets[i].0.ends_with('乡'),
            i,
        )
    });
    let mut street_index = vec![0; p.streets.len()];
    for (rank, &cluster) in order.iter().enumerate() {
        street_index[cluster] = names[rank];
    }

    let mut out: Vec<SynthGrid> = Vec::with_capacity(p.grids);
    let mut community_of = vec![0usize; seeds.len()];
    for (cluster, &street) in street_index.iter().enumerate() {
        let members: Vec<usize> = (0..seeds.len())
            .filter(|&i| street_of[i] == cluster)
            .collect();
        let pts: Vec<Coord<f64>> = members.iter().map(|&i| seeds[i]).collect();
        let k = p.streets[street].1.min(pts.len());
        let assign = kmeans(&pts, k, &mut rng);
        for (&i, &c) in members.iter().zip(&assign) {
            community_of[i] = c;
        }
    }
    for (i, cell) in cells.into_iter().enumerate() {
        if cell.0.is_empty() {
            continue;
        }
        out.push(SynthGrid {
            street: street_index[street_of[i]],
            community: community_of[i],
            shape: cell.map_coords(|c| proj.inv(c)),
        });
    }
    out.sort_by(|a, b| {
        let ka = a
            .shape
            .centroid()
            .map(|c| (c.y(), c.x()))
            .unwrap_or_default();
        let kb = b
            .shape
            .centroid()
            .map(|c| (c.y(), c.x()))
            .unwrap_or_default();
        (a.street, a.community)
            .cmp(&(b.street, b.community))
            .then(kb.0.total_cmp(&ka.0))
            .then(ka.1.total_cmp(&kb.1))
    });
    Ok(out)
}

/// Convex Voronoi cells of `seeds` within the box, by half-plane clipping. Neighbours are
/// found ring by ring in a bucket grid, so the cost grows with n, not n².
fn voronoi_cells(seeds: &[Coord<f64>], min: Coord<f64>, max: Coord<f64>) -> Vec<Polygon<f64>> {
    let pad = 1.0;
    let frame = vec![
        Coord {
            x: min.x - pad,
            y: min.y - pad,
        },
        Coord {
            x: max.x + pad,
            y: min.y - pad,
        },
        Coord {
            x: max.x + pad,
            y: max.y + pad,
        },
        Coord {
            x: min.x - pad,
            y: max.y + pad,
        },
    ];
    let (w, h) = ((max.x - min.x).max(1e-9), (max.y - min.y).max(1e-9));
    let size = (w * h / seeds.len().max(1) as f64).sqrt().max(1e-9);
    let (nx, ny) = ((w / size).ceil() as i64 + 1, (h / size).ceil() as i64 + 1);
    let bucket_of = |c: Coord<f64>| {
        (
            ((c.x - min.x) / size).floor().clamp(0.0, (nx - 1) as f64) as i64,
            ((c.y - min.y) / size).floor().clamp(0.0, (ny - 1) as f64) as i64,
        )
    };
    let mut buckets: Vec<Vec<usize>> = vec![Vec::new(); (nx * ny) as usize];
    for (i, &c) in seeds.iter().enumerate() {
        let (bx, by) = bucket_of(c);
        buckets[(by * nx + bx) as usize].push(i);
    }
    seeds
        .iter()
        .enumerate()
        .map(|(si, &s)| {
            let (bx, by) = bucket_of(s);
            let mut cell = frame.clone();
            let mut ring = 0i64;
            loop {
                let mut cands: Vec<(f64, Coord<f64>)> = Vec::new();
                for y in (by - ring)..=(by + ring) {
                    for x in (bx - ring)..=(bx + ring) {
                        let on_ring = (x - bx).abs() == ring || (y - by).abs() == ring;
                        if !on_ring || x < 0 || y < 0 || x >= nx || y >= ny {
                            continue;
                        }
                        for &o in &buckets[(y * nx + x) as usize] {
                            if o != si && seeds[o] != s {
                                let c = seeds[o];
                                cands.push((((c.x - s.x).powi(2) + (c.y - s.y).powi(2)).sqrt(), c));
                            }
                        }
                    }
                }
                cands.sort_by(|a, b| a.0.total_cmp(&b.0));
                for (_, o) in cands {
                    cell = clip_half_plane(&cell, s, o);
                }
                let reach = cell
                    .iter()
                    .map(|c| ((c.x - s.x).powi(2) + (c.y - s.y).powi(2)).sqrt())
                    .fold(0.0, f64::max);
                // Seeds beyond the next ring are at least `ring * size` away: they cannot cut
                // a cell whose farthest vertex is within half that distance.
                if (ring as f64) * size / 2.0 > reach || (ring > nx && ring > ny) {
                    break;
                }
                ring += 1;
            }
            cell.push(cell[0]);
            Polygon::new(LineString::new(cell), vec![])
        })
        .collect()
}

/// Keeps the part of a convex polygon nearer to `s` than to `o`.
fn clip_half_plane(poly: &[Coord<f64>], s: Coord<f64>, o: Coord<f64>) -> Vec<Coord<f64>> {
    let m = Coord {
        x: (s.x + o.x) / 2.0,
        y: (s.y + o.y) / 2.0,
    };
    let n = Coord {
        x: o.x - s.x,
        y: o.y - s.y,
    };
    let side = |c: Coord<f64>| (c.x - m.x) * n.x + (c.y - m.y) * n.y;
    let mut out = Vec::with_capacity(poly.len() + 1);
    for i in 0..poly.len() {
        let a = poly[i];
        let b = poly[(i + 1) % poly.len()];
        let (sa, sb) = (side(a), side(b));
        if sa <= 0.0 {
            out.push(a);
        }
        if (sa < 0.0 && sb > 0.0) || (sa > 0.0 && sb < 0.0) {
            let t = sa / (sa - sb);
            out.push(Coord {
                x: a.x + t * (b.x - a.x),
                y: a.y + t * (b.y - a.y),
            });
        }
    }
    out
}

/// k-means with k-means++ seeding; every cluster ends non-empty when `points.len() >= k`.
fn kmeans(points: &[Coord<f64>], k: usize, rng: &mut Rng) -> Vec<usize> {
    let d2 = |a: Coord<f64>, b: Coord<f64>| (a.x - b.x).powi(2) + (a.y - b.y).powi(2);
    if k <= 1 || points.len() <= k {
        return (0..points.len())
            .map(|i| i.min(k.saturating_sub(1)))
            .collect();
    }
    let mut centres = vec![points[(rng.next_u64() % points.len() as u64) as usize]];
    while centres.len() < k {
        let weights: Vec<f64> = points
            .iter()
            .map(|&p| centres.iter().map(|&c| d2(p, c)).fold(f64::MAX, f64::min))
            .collect();
        let total: f64 = weights.iter().sum();
        let mut pick = rng.unit() * total;
        let mut chosen = points.len() - 1;
        for (i, w) in weights.iter().enumerate() {
            if pick < *w {
                chosen = i;
                break;
            }
            pick -= w;
        }
        centres.push(points[chosen]);
    }
    let mut assign = vec![0usize; points.len()];
    for _ in 0..50 {
        for (i, &p) in points.iter().enumerate() {
            assign[i] = (0..k)
                .min_by(|&a, &b| d2(p, centres[a]).total_cmp(&d2(p, centres[b])))
                .unwrap_or(0);
        }
        // Refill empty clusters with the point farthest from its centre.
        for c in 0..k {
            if !assign.contains(&c) {
                let far = (0..points.len())
                    .max_by(|&a, &b| {
                        d2(points[a], centres[assign[a]])
                            .total_cmp(&d2(points[b], centres[assign[b]]))
                    })
                    .unwrap_or(0);
                assign[far] = c;
            }
        }
        let mut next = vec![(0.0, 0.0, 0usize); k];
        for (i, &p) in points.iter().enumerate() {
            let e = &mut next[assign[i]];
            e.0 += p.x;
            e.1 += p.y;
            e.2 += 1;
        }
        let mut moved = false;
        for (c, (sx, sy, n)) in next.into_iter().enumerate() {
            if n > 0 {
                let nc = Coord {
                    x: sx / n as f64,
                    y: sy / n as f64,
                };
                moved |= d2(nc, centres[c]) > 1e-12;
                centres[c] = nc;
            }
        }
        if !moved {
            break;
        }
    }
    assign
}

/// One generated grid with its full path, ready to render.
#[derive(Debug, Clone)]
pub struct GridOut {
    /// Grid code.
    pub code: String,
    /// Grid name.
    pub name: String,
    /// `(code, name, level)` from the root down to the grid's parent.
    pub path: Vec<(String, String, &'static str)>,
    /// Shape in longitude/latitude.
    pub shape: MultiPolygon<f64>,
}

#[cfg(test)]
mod tests {
    use geo::polygon;

    use super::*;

    #[test]
    fn city_generator_tiles_and_builds_a_hierarchy() {
        let square = MultiPolygon(vec![polygon![
            (x: 116.0, y: 39.0), (x: 116.5, y: 39.0), (x: 116.5, y: 39.4), (x: 116.0, y: 39.4)
        ]]);
        let p = CityParams::with_grids(2000);
        let grids = synthesize_city(&square, &p).unwrap();
        assert_eq!(grids.len(), 2000);
        let sum: f64 = grids.iter().map(|g| area_km2(&g.shape)).sum();
        let whole = area_km2(&square);
        assert!((sum - whole).abs() / whole < 1e-4, "{sum} vs {whole}");
        let mut codes: Vec<&str> = grids.iter().map(|g| g.code.as_str()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), 2000, "unique grid codes");
        let communities: std::collections::HashSet<&str> =
            grids.iter().map(|g| g.path[3].0.as_str()).collect();
        assert!(
            (300..=400).contains(&communities.len()),
            "{}",
            communities.len()
        );
    }

    #[test]
    fn tiles_a_square_without_gaps_or_overlaps() {
        let square = MultiPolygon(vec![polygon![
            (x: 106.0, y: 39.0), (x: 106.1, y: 39.0), (x: 106.1, y: 39.1), (x: 106.0, y: 39.1)
        ]]);
        let p = SynthParams {
            grids: 40,
            streets: vec![
                ("甲街道".into(), 3),
                ("乙街道".into(), 3),
                ("丙镇".into(), 4),
            ],
            urban_centre: (106.05, 39.05),
            urban_spread_km: 2.0,
            ..SynthParams::dawukou()
        };
        let grids = synthesize(&square, &p).unwrap();
        assert_eq!(grids.len(), 40);
        let sum: f64 = grids.iter().map(|g| area_km2(&g.shape)).sum();
        let whole = area_km2(&square);
        assert!((sum - whole).abs() / whole < 1e-4, "{sum} vs {whole}");
        let mut communities: Vec<(usize, usize)> =
            grids.iter().map(|g| (g.street, g.community)).collect();
        communities.sort_unstable();
        communities.dedup();
        assert_eq!(communities.len(), 10);
        // Deterministic.
        let again = synthesize(&square, &p).unwrap();
        assert_eq!(again[7].shape, grids[7].shape);
    }
}
