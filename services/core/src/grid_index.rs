//! Point → leaf grid.
//!
//! An R-tree over grid bounding boxes narrows a lookup to a few candidates, and an exact
//! point-in-polygon test (holes included) settles it. Grids of one table do not overlap, so a
//! point strictly inside one grid is the answer; a point on a border shared by several grids
//! goes to the candidate that sorts first by grid code, the same answer on every replica.

use geo::{BoundingRect, CoordinatePosition, MultiPolygon, coord, coordinate_position::CoordPos};
use rstar::{AABB, RTree, primitives::GeomWithData, primitives::Rectangle};

use crate::{
    cell_index::{CellAnswer, CellIndex},
    region::RegionId,
};

/// Raster cells per polygon vertex. Measured on China's 2,870 counties (docs/PERFORMANCE.md):
/// 0.5 gives 2.8 M lookups/s at 1.77x the coordinates' memory, 0.75 gives 3.5 M/s at 1.90x,
/// 1.0 gives 5.3 M/s at 2.03x. 0.75 keeps the index within twice the raw coordinates.
const CELLS_PER_VERTEX: f64 = 0.75;

/// Small tables get at least this many cells (a quarter of a megabyte of raster), so that their
/// few long edges spread over enough cells to leave most cells uniform.
const MIN_CELLS: usize = 1 << 16;

type Entry = GeomWithData<Rectangle<[f64; 2]>, u32>;

/// One grid polygon as the index holds it.
#[derive(Debug, Clone)]
pub struct IndexedGrid {
    /// The grid's node in the region tree.
    pub region: RegionId,
    /// Its code, used to order border ties.
    pub code: String,
    /// Its area, in the table's coordinate system (x = longitude, y = latitude).
    pub shape: MultiPolygon<f64>,
}

/// Spatial index of the leaf grids of one table.
#[derive(Debug)]
pub struct GridIndex {
    grids: Vec<IndexedGrid>,
    tree: RTree<Entry>,
    cells: Option<CellIndex>,
}

impl GridIndex {
    /// Builds the index. Grids are ordered by code so that ties resolve the same way
    /// whatever order the source listed them in.
    pub fn build(mut grids: Vec<IndexedGrid>) -> Self {
        grids.sort_by(|a, b| a.code.cmp(&b.code));
        let entries = grids
            .iter()
            .enumerate()
            .filter_map(|(i, g)| {
                let r = g.shape.bounding_rect()?;
                let rect = Rectangle::from_corners([r.min().x, r.min().y], [r.max().x, r.max().y]);
                Some(GeomWithData::new(rect, u32::try_from(i).ok()?))
            })
            .collect();
        let vertices: usize = grids
            .iter()
            .map(|g| {
                g.shape
                    .0
                    .iter()
                    .map(|p| {
                        p.exterior().0.len()
                            + p.interiors().iter().map(|r| r.0.len()).sum::<usize>()
                    })
                    .sum::<usize>()
            })
            .sum();
        let shapes: Vec<&MultiPolygon<f64>> = grids.iter().map(|g| &g.shape).collect();
        let cells = CellIndex::build(
            &shapes,
            ((vertices as f64 * CELLS_PER_VERTEX) as usize).max(MIN_CELLS),
        );
        Self {
            grids,
            tree: RTree::bulk_load(entries),
            cells,
        }
    }

    /// Bytes of the cell index (0 when there is none).
    pub fn cell_index_bytes(&self) -> usize {
        self.cells.as_ref().map_or(0, CellIndex::memory_bytes)
    }

    /// The grid containing the point (longitude, latitude), borders included: the cell index
    /// answers most points; the exact method settles the rest.
    pub fn locate(&self, lng: f64, lat: f64) -> Option<&IndexedGrid> {
        match self.cells.as_ref().map(|c| c.locate(lng, lat)) {
            Some(CellAnswer::Grid(i)) => Some(&self.grids[i as usize]),
            Some(CellAnswer::Outside) => None,
            Some(CellAnswer::Fallback) | None => self.locate_exact(lng, lat),
        }
    }

    /// The grid containing the point by the exact method: R-tree of bounding boxes, then an
    /// exact point-in-polygon test of each candidate. The baseline the cell index is measured
    /// against, and its fallback for border cases.
    pub fn locate_exact(&self, lng: f64, lat: f64) -> Option<&IndexedGrid> {
        let c = coord! { x: lng, y: lat };
        let mut best: Option<u32> = None;
        for e in self.tree.locate_all_at_point(&[lng, lat]) {
            let i = e.data;
            match self.grids[i as usize].shape.coordinate_position(&c) {
                CoordPos::Inside => return Some(&self.grids[i as usize]),
                CoordPos::OnBoundary => best = Some(best.map_or(i, |b| b.min(i))),
                CoordPos::Outside => {}
            }
        }
        best.map(|i| &self.grids[i as usize])
    }

    /// The grid nearest to a point outside every grid, if its border lies within `radius_m`
    /// metres, with that distance. Distances use a local equirectangular approximation, exact
    /// to well under a metre at the radii used for snapping.
    pub fn nearest_within(&self, lng: f64, lat: f64, radius_m: f64) -> Option<(&IndexedGrid, f64)> {
        const M_PER_DEG_LAT: f64 = 110_574.0;
        let m_per_deg_lng = 111_320.0 * lat.to_radians().cos().max(1e-6);
        let (dx, dy) = (radius_m / m_per_deg_lng, radius_m / M_PER_DEG_LAT);
        if self
            .cells
            .as_ref()
            .is_some_and(|c| c.empty_box(lng - dx, lat - dy, lng + dx, lat + dy))
        {
            return None;
        }
        let mut best: Option<(f64, u32)> = None;
        let env = AABB::from_corners([lng - dx, lat - dy], [lng + dx, lat + dy]);
        for e in self.tree.locate_in_envelope_intersecting(&env) {
            let g = &self.grids[e.data as usize];
            let rings = g
                .shape
                .0
                .iter()
                .flat_map(|p| std::iter::once(p.exterior()).chain(p.interiors()));
            let mut d = f64::INFINITY;
            for ring in rings {
                for seg in ring.lines() {
                    let (p, q) = ([seg.start.x, seg.start.y], [seg.end.x, seg.end.y]);
                    d = d.min(crate::cell_index::segment_distance(
                        p,
                        q,
                        lng,
                        lat,
                        m_per_deg_lng,
                        M_PER_DEG_LAT,
                    ));
                }
            }
            if d <= radius_m && best.is_none_or(|(bd, bi)| d < bd || (d == bd && e.data < bi)) {
                best = Some((d, e.data));
            }
        }
        best.map(|(d, i)| (&self.grids[i as usize], d))
    }

    /// Candidate grids whose bounding box meets the given box (for validation and tools).
    pub fn candidates(&self, min: [f64; 2], max: [f64; 2]) -> impl Iterator<Item = &IndexedGrid> {
        self.tree
            .locate_in_envelope_intersecting(&AABB::from_corners(min, max))
            .map(|e| &self.grids[e.data as usize])
    }

    /// Every grid, ordered by code.
    pub fn grids(&self) -> &[IndexedGrid] {
        &self.grids
    }
}

#[cfg(test)]
mod tests {
    use geo::{MultiPolygon, polygon};

    use super::*;

    fn square(x0: f64, y0: f64, x1: f64, y1: f64) -> MultiPolygon<f64> {
        MultiPolygon(vec![
            polygon![(x: x0, y: y0), (x: x1, y: y0), (x: x1, y: y1), (x: x0, y: y1)],
        ])
    }

    fn two_squares() -> GridIndex {
        GridIndex::build(vec![
            IndexedGrid {
                region: 7,
                code: "B".into(),
                shape: square(1.0, 0.0, 2.0, 1.0),
            },
            IndexedGrid {
                region: 3,
                code: "A".into(),
                shape: square(0.0, 0.0, 1.0, 1.0),
            },
        ])
    }

    #[test]
    fn inside_border_outside() {
        let idx = two_squares();
        assert_eq!(idx.locate(0.5, 0.5).unwrap().code, "A");
        assert_eq!(idx.locate(1.5, 0.5).unwrap().code, "B");
        // Shared edge and shared vertex: the lower code, always.
        assert_eq!(idx.locate(1.0, 0.5).unwrap().code, "A");
        assert_eq!(idx.locate(1.0, 1.0).unwrap().code, "A");
        // Outer edge of B alone.
        assert_eq!(idx.locate(2.0, 0.5).unwrap().code, "B");
        assert!(idx.locate(2.5, 0.5).is_none());
        assert!(idx.locate(-0.1, 0.5).is_none());
    }

    #[test]
    fn snaps_to_the_nearest_grid_within_the_radius() {
        let idx = two_squares();
        // 0.0001 degrees of longitude at the equator is about 11 m.
        let (g, d) = idx.nearest_within(2.0001, 0.5, 50.0).unwrap();
        assert_eq!(g.code, "B");
        assert!((d - 11.13).abs() < 0.1, "{d}");
        assert!(idx.nearest_within(2.0001, 0.5, 10.0).is_none());
        assert!(idx.nearest_within(5.0, 5.0, 50.0).is_none());
    }

    #[test]
    fn holes_are_outside() {
        let shape = MultiPolygon(vec![geo::Polygon::new(
            geo::LineString::from(vec![
                (0.0, 0.0),
                (4.0, 0.0),
                (4.0, 4.0),
                (0.0, 4.0),
                (0.0, 0.0),
            ]),
            vec![geo::LineString::from(vec![
                (1.0, 1.0),
                (3.0, 1.0),
                (3.0, 3.0),
                (1.0, 3.0),
                (1.0, 1.0),
            ])],
        )]);
        let idx = GridIndex::build(vec![IndexedGrid {
            region: 0,
            code: "H".into(),
            shape,
        }]);
        assert!(idx.locate(2.0, 2.0).is_none());
        assert!(idx.locate(0.5, 0.5).is_some());
    }
}
