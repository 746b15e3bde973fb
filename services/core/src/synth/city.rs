//! A synthetic city of any size: districts → streets → communities → grids, by recursive
//! bisection of clustered seeds.

use geo::{
    BooleanOps, BoundingRect, Centroid, Contains, Coord, MapCoords, MultiPolygon, Point, Polygon,
};

use super::{GridOut, Proj, Rng, voronoi_cells};

/// Sizes of a synthetic city.
#[derive(Debug, Clone)]
pub struct CityParams {
    /// Table name.
    pub name: String,
    /// Code of the root (the city); districts, streets, communities and grids extend it.
    pub code: String,
    /// Name of the city.
    pub city_name: String,
    /// Number of grids.
    pub grids: usize,
    /// Grids per community (on average).
    pub grids_per_community: usize,
    /// Communities per street.
    pub communities_per_street: usize,
    /// Streets per district.
    pub streets_per_district: usize,
    /// Random seed.
    pub seed: u64,
}

impl CityParams {
    /// A city of `grids` grids with the proportions of Chinese cities (about 6 grids per
    /// community, 8 communities per street, 12 streets per district).
    pub fn with_grids(grids: usize) -> Self {
        Self {
            name: format!("synth-{grids}"),
            code: "99".into(),
            city_name: "合成市".into(),
            grids,
            grids_per_community: 6,
            communities_per_street: 8,
            streets_per_district: 12,
            seed: 20_261_125,
        }
    }
}

/// Splits `items` into `k` groups of near-equal size by recursive bisection along the longer
/// axis: compact groups, like administrative areas, in O(n log n log k).
fn bisect(points: &[Coord<f64>], mut items: Vec<usize>, k: usize, out: &mut Vec<Vec<usize>>) {
    if k <= 1 || items.len() <= 1 {
        out.push(items);
        return;
    }
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &i in &items {
        let c = points[i];
        (x0, x1, y0, y1) = (x0.min(c.x), x1.max(c.x), y0.min(c.y), y1.max(c.y));
    }
    if x1 - x0 >= y1 - y0 {
        items.sort_by(|&a, &b| points[a].x.total_cmp(&points[b].x));
    } else {
        items.sort_by(|&a, &b| points[a].y.total_cmp(&points[b].y));
    }
    let k_left = k / 2;
    let cut = items.len() * k_left / k;
    let right = items.split_off(cut);
    bisect(points, items, k_left, out);
    bisect(points, right, k - k_left, out);
}

/// Generates a city of `p.grids` grids inside `boundary`: city → districts → streets →
/// communities → grids. Seeds cluster around a few centres, as urban density does.
pub fn synthesize_city(
    boundary: &MultiPolygon<f64>,
    p: &CityParams,
) -> Result<Vec<GridOut>, String> {
    if p.grids == 0 {
        return Err("at least one grid".into());
    }
    let rect = boundary.bounding_rect().ok_or("empty boundary")?;
    let proj = Proj::new(rect.center().x, rect.center().y);
    let region = boundary.map_coords(|c| proj.fwd(c));
    let bbox = region.bounding_rect().ok_or("empty boundary")?;
    let mut rng = Rng::new(p.seed);
    let centres: Vec<Coord<f64>> = (0..5)
        .map(|_| {
            loop {
                let c = Coord {
                    x: bbox.min().x + rng.unit() * bbox.width(),
                    y: bbox.min().y + rng.unit() * bbox.height(),
                };
                if region.contains(&Point(c)) {
                    break c;
                }
            }
        })
        .collect();
    let spread = (bbox.width() * bbox.height()).sqrt() / 10.0;
    let mut seeds = Vec::with_capacity(p.grids);
    let mut attempts = 0usize;
    while seeds.len() < p.grids {
        attempts += 1;
        if attempts > p.grids * 1000 {
            return Err("could not place seeds inside the boundary".into());
        }
        let c = if rng.unit() < 0.7 {
            let k = centres[(rng.next_u64() % centres.len() as u64) as usize];
            Coord {
                x: k.x + rng.normal() * spread,
                y: k.y + rng.normal() * spread,
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
    // One relaxation round keeps shapes compact; cells wholly inside the boundary skip the
    // (costly) polygon intersection.
    let edges: Vec<[f64; 2]> = region
        .0
        .iter()
        .flat_map(|p| {
            p.exterior()
                .0
                .iter()
                .chain(p.interiors().iter().flat_map(|r| r.0.iter()))
        })
        .map(|c| [c.x, c.y])
        .collect();
    let boundary_points = rstar::RTree::bulk_load(edges);
    let clip = |cell: Polygon<f64>| -> MultiPolygon<f64> {
        let inside = cell
            .exterior()
            .0
            .iter()
            .all(|c| region.contains(&Point(*c)));
        let r = cell.bounding_rect();
        let crossing = r.is_some_and(|r| {
            boundary_points
                .locate_in_envelope(&rstar::AABB::from_corners(
                    [r.min().x, r.min().y],
                    [r.max().x, r.max().y],
                ))
                .next()
                .is_some()
        });
        if inside && !crossing {
            MultiPolygon(vec![cell])
        } else {
            region.intersection(&cell)
        }
    };
    let mut cells: Vec<MultiPolygon<f64>> = Vec::new();
    for round in 0..2 {
        cells = voronoi_cells(&seeds, bbox.min(), bbox.max())
            .into_iter()
            .map(&clip)
            .collect();
        if round == 0 {
            for (s, cell) in seeds.iter_mut().zip(&cells) {
                if let Some(c) = cell.centroid() {
                    *s = c.0;
                }
            }
        }
    }
    // Hierarchy by recursive bisection, bottom-up sizes.
    let communities = p.grids.div_ceil(p.grids_per_community.max(1)).max(1);
    let streets = communities.div_ceil(p.communities_per_street.max(1)).max(1);
    let districts = streets.div_ceil(p.streets_per_district.max(1)).max(1);
    let mut out = Vec::with_capacity(p.grids);
    let mut district_groups = Vec::new();
    bisect(
        &seeds,
        (0..seeds.len()).collect(),
        districts,
        &mut district_groups,
    );
    let per_district = streets.div_ceil(districts);
    for (di, dg) in district_groups.into_iter().enumerate() {
        let dcode = format!("{}{:02}", p.code, di + 1);
        let dname = format!("第{}区", di + 1);
        let mut street_groups = Vec::new();
        bisect(&seeds, dg, per_district, &mut street_groups);
        let per_street = p.communities_per_street.max(1);
        for (si, sg) in street_groups.into_iter().enumerate() {
            let scode = format!("{dcode}{:03}", si + 1);
            let sname = format!("{dname}{}街道", si + 1);
            let mut community_groups = Vec::new();
            bisect(&seeds, sg, per_street, &mut community_groups);
            for (ci, cg) in community_groups.into_iter().enumerate() {
                let ccode = format!("{scode}{:03}", ci + 1);
                let cname = format!("{sname}{}社区", ci + 1);
                for (gi, g) in cg.into_iter().enumerate() {
                    if cells[g].0.is_empty() {
                        continue;
                    }
                    out.push(GridOut {
                        code: format!("{ccode}{:03}", gi + 1),
                        name: format!("{cname}第{}网格", gi + 1),
                        path: vec![
                            (p.code.clone(), p.city_name.clone(), "city"),
                            (dcode.clone(), dname.clone(), "district"),
                            (scode.clone(), sname.clone(), "street"),
                            (ccode.clone(), cname.clone(), "community"),
                        ],
                        shape: std::mem::replace(&mut cells[g], MultiPolygon(vec![]))
                            .map_coords(|c| proj.inv(c)),
                    });
                }
            }
        }
    }
    Ok(out)
}
