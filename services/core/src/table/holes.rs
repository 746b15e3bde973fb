//! The areas inside a table's footprint that no grid covers, and what the table says of them.
//!
//! Real boundaries have enclaves and slivers: a quarter of a square kilometre between three
//! counties belongs to another jurisdiction, or to nobody's grid yet. Loading finds every hole
//! in the union of the grids (one union per version), names the region around it (the nearest
//! common ancestor of the grids around it) and the declared-outside area it lies in, if any.
//! The router sends a report inside a hole, or inside a region's official outline but in no
//! grid, to the command centre of that region ([`RoutingTable::area_at`]). Whether a table may
//! have such areas is admission's decision (`checks`), by the table's `gaps` policy.

use geo::{BooleanOps, BoundingRect, Contains, Coord, MultiPolygon, Point, Polygon, Rect};

use super::RoutingTable;
use crate::{
    grid_index::GridIndex,
    region::{RegionId, RegionTree},
};

/// A hole in the union of the grids.
#[derive(Debug, Clone)]
pub struct Hole {
    /// Its shape, in the table's coordinate system.
    pub shape: Polygon<f64>,
    /// Its bounding box.
    pub bbox: Rect<f64>,
    /// The region around it: the nearest common ancestor of the grids around it (`None` when
    /// they share no region, i.e. lie in different trees).
    pub region: Option<RegionId>,
    /// Its area, in square metres.
    pub area_m2: f64,
    /// The declared-outside area it overlaps most, by index into
    /// [`RoutingTable::declared_outside`].
    pub declared: Option<usize>,
}

/// An area `regions.geojson` declares outside the table's grids (`"outside": true`): an
/// enclave of another jurisdiction, a lake, a military area. Not a gap.
#[derive(Debug, Clone)]
pub struct Declared {
    /// Its name, for reasons and messages.
    pub name: String,
    /// Its shape.
    pub shape: MultiPolygon<f64>,
}

/// Where a point that lies in no grid belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// In this hole of the grids (index into [`RoutingTable::holes`]).
    Hole(u32),
    /// Within this region's official outline (`regions.geojson`), in none of its grids.
    Outline(RegionId),
}

/// Square metres per square degree at a latitude (local equirectangular approximation).
pub(crate) fn m2_per_deg2(lat: f64) -> f64 {
    111_320.0 * 110_570.0 * lat.to_radians().cos()
}

/// The area of a shape given in degrees, in square metres.
pub(crate) fn area_m2<T>(shape: &T) -> f64
where
    T: geo::Area<f64> + BoundingRect<f64, Output = Option<Rect<f64>>>,
{
    shape
        .bounding_rect()
        .map_or(0.0, |r| shape.unsigned_area() * m2_per_deg2(r.center().y))
}

/// The nearest region every one of `regions` lies within (a grid itself never counts: it is
/// not the parent of a hole beside it).
pub(crate) fn common_ancestor(tree: &RegionTree, regions: &[RegionId]) -> Option<RegionId> {
    let first = *regions.first()?;
    tree.path(first)
        .into_iter()
        .rev()
        .skip(1)
        .find(|&a| regions.iter().all(|&r| tree.is_within(r, a)))
}

/// Every hole of the union of the grids, with the region around it.
pub(super) fn find(grids: &GridIndex, regions: &RegionTree, declared: &[Declared]) -> Vec<Hole> {
    let all = MultiPolygon(
        grids
            .grids()
            .iter()
            .flat_map(|g| g.shape.0.iter().cloned())
            .collect(),
    );
    if all.0.is_empty() {
        return Vec::new();
    }
    let union = all.union(&MultiPolygon::<f64>(vec![]));
    let mut out = Vec::new();
    for poly in &union.0 {
        for ring in poly.interiors() {
            let shape = Polygon::new(ring.clone(), vec![]);
            let Some(bbox) = shape.bounding_rect() else {
                continue;
            };
            let around: Vec<RegionId> = grids
                .candidates([bbox.min().x, bbox.min().y], [bbox.max().x, bbox.max().y])
                .map(|g| g.region)
                .collect();
            let declared = declared
                .iter()
                .enumerate()
                .map(|(i, d)| (i, area_m2(&shape.intersection(&d.shape))))
                .filter(|(_, a)| *a > 0.0)
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(i, _)| i);
            out.push(Hole {
                area_m2: area_m2(&shape),
                region: common_ancestor(regions, &around),
                bbox,
                shape,
                declared,
            });
        }
    }
    out
}

impl RoutingTable {
    /// Where a point that lies in no grid belongs: a hole of the grids, or else the deepest
    /// region whose official outline contains it; `None`: outside the table's area.
    pub fn area_at(&self, x: f64, y: f64) -> Option<Area> {
        let p = Point::new(x, y);
        let inside = |bbox: &Rect<f64>| {
            let (min, max) = (bbox.min(), bbox.max());
            (min.x..=max.x).contains(&x) && (min.y..=max.y).contains(&y)
        };
        if let Some(i) = self
            .holes
            .iter()
            .position(|h| inside(&h.bbox) && h.shape.contains(&p))
        {
            return u32::try_from(i).ok().map(Area::Hole);
        }
        self.region_shapes
            .iter()
            .filter(|(_, shape)| {
                shape.bounding_rect().is_some_and(|b| inside(&b)) && shape.contains(&p)
            })
            .map(|(r, _)| *r)
            .max_by_key(|&r| self.regions.node(r).depth)
            .map(Area::Outline)
    }

    /// A point of a hole, well inside it (for tests and examples): the centre of its widest
    /// horizontal chord through the middle of its bounding box.
    pub fn point_in_hole(&self, hole: u32) -> Option<(f64, f64)> {
        let h = self.holes.get(hole as usize)?;
        let y = h.bbox.center().y;
        let mut xs: Vec<f64> = h
            .shape
            .exterior()
            .lines()
            .filter(|l| (l.start.y - y) * (l.end.y - y) < 0.0)
            .map(|l| l.start.x + (y - l.start.y) * (l.end.x - l.start.x) / (l.end.y - l.start.y))
            .collect();
        xs.sort_by(f64::total_cmp);
        xs.chunks(2)
            .filter(|c| c.len() == 2)
            .max_by(|a, b| (a[1] - a[0]).total_cmp(&(b[1] - b[0])))
            .map(|c| ((c[0] + c[1]) / 2.0, y))
            .filter(|&(x, y)| h.shape.contains(&Point::from(Coord { x, y })))
    }
}
