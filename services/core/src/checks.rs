//! Geometry checks of a whole table: invalid or self-intersecting rings, overlapping grids and
//! gaps between grids. They are slower than loading (they union every polygon), so they run
//! where a table is admitted (publish, `tables validate`), not on every replica's reload of a
//! version that already passed them.

use geo::{Area, BooleanOps, BoundingRect, MultiPolygon, Polygon, Validation};

use crate::{
    region::RegionId,
    table::{RoutingTable, Severity, TableIssue},
};

/// Overlaps and gaps smaller than this many square metres are rounding, not errors: shared
/// borders written with 7 decimals (about 1 cm) leave slivers far below it.
pub const AREA_TOLERANCE_M2: f64 = 1.0;

fn issue(code: &'static str, subject: String, message: String) -> TableIssue {
    TableIssue {
        severity: Severity::Error,
        code,
        subject,
        message,
    }
}

/// Square metres per square degree at a latitude (local equirectangular approximation).
fn m2_per_deg2(lat: f64) -> f64 {
    111_320.0 * 110_570.0 * lat.to_radians().cos()
}

/// Every geometry problem of the table's grids.
pub fn check_geometry(table: &RoutingTable) -> Vec<TableIssue> {
    let grids = table.grids.grids();
    let mut out = Vec::new();
    for g in grids {
        for err in g.shape.validation_errors() {
            out.push(issue("invalid_geometry", g.code.clone(), err.to_string()));
        }
    }
    // Overlaps: exact intersection areas of candidate pairs from the R-tree.
    for g in grids {
        let Some(r) = g.shape.bounding_rect() else {
            continue;
        };
        let scale = m2_per_deg2(r.center().y);
        for other in table
            .grids
            .candidates([r.min().x, r.min().y], [r.max().x, r.max().y])
        {
            if other.code <= g.code {
                continue;
            }
            let area = g.shape.intersection(&other.shape).unsigned_area() * scale;
            if area > AREA_TOLERANCE_M2 {
                out.push(issue(
                    "overlapping_grids",
                    format!("{},{}", g.code, other.code),
                    format!(
                        "grids {} and {} overlap by {area:.0} m²",
                        g.code, other.code
                    ),
                ));
            }
        }
    }
    // Grids outside their parent, where the table gives parents their own polygons: each grid
    // against its nearest ancestor that has one.
    let parent_shape: std::collections::HashMap<RegionId, &MultiPolygon<f64>> =
        table.region_shapes.iter().map(|(r, s)| (*r, s)).collect();
    for g in grids {
        let ancestor = table
            .regions
            .path(g.region)
            .into_iter()
            .rev()
            .skip(1)
            .find(|r| parent_shape.contains_key(r));
        if let Some(a) = ancestor {
            let outside = g.shape.difference(parent_shape[&a]);
            let Some(r) = outside.bounding_rect() else {
                continue;
            };
            let area = outside.unsigned_area() * m2_per_deg2(r.center().y);
            if area > AREA_TOLERANCE_M2 {
                out.push(issue(
                    "grid_outside_parent",
                    g.code.clone(),
                    format!(
                        "{area:.0} m² of grid {} lie outside its parent {}",
                        g.code,
                        table.regions.node(a).code
                    ),
                ));
            }
        }
    }
    // Parts of a parent's own polygon that none of its grids covers.
    for (region, shape) in &table.region_shapes {
        let children: Vec<Polygon<f64>> = grids
            .iter()
            .filter(|g| table.regions.is_within(g.region, *region))
            .flat_map(|g| g.shape.0.iter().cloned())
            .collect();
        let uncovered = shape.difference(&MultiPolygon(children));
        let Some(r) = uncovered.bounding_rect() else {
            continue;
        };
        let area = uncovered.unsigned_area() * m2_per_deg2(r.center().y);
        if area > AREA_TOLERANCE_M2 {
            out.push(issue(
                "gap_in_parent",
                table.regions.node(*region).code.clone(),
                format!(
                    "{area:.0} m² of region {} belong to none of its grids",
                    table.regions.node(*region).code
                ),
            ));
        }
    }
    // Gaps: holes in the union of all grids, attributed to the region that surrounds them.
    let all = MultiPolygon(
        grids
            .iter()
            .flat_map(|g| g.shape.0.iter().cloned())
            .collect(),
    );
    let union = all.union(&MultiPolygon::<f64>(vec![]));
    for poly in &union.0 {
        for hole in poly.interiors() {
            let hole = Polygon::new(hole.clone(), vec![]);
            let Some(r) = hole.bounding_rect() else {
                continue;
            };
            let area = hole.unsigned_area() * m2_per_deg2(r.center().y);
            if area <= AREA_TOLERANCE_M2 {
                continue;
            }
            let around: Vec<RegionId> = table
                .grids
                .candidates([r.min().x, r.min().y], [r.max().x, r.max().y])
                .map(|g| g.region)
                .collect();
            let parent = common_ancestor(table, &around);
            let c = r.center();
            out.push(issue(
                "gap_in_parent",
                parent.map_or_else(
                    || table.name.clone(),
                    |p| table.regions.node(p).code.clone(),
                ),
                format!(
                    "{area:.0} m² around ({:.6}, {:.6}) belong to no grid",
                    c.x, c.y
                ),
            ));
        }
    }
    out
}

fn common_ancestor(table: &RoutingTable, regions: &[RegionId]) -> Option<RegionId> {
    let first = *regions.first()?;
    let path = table.regions.path(first);
    path.into_iter()
        .rev()
        .skip(1) // a grid is not the parent of a gap
        .find(|&a| regions.iter().all(|&r| table.regions.is_within(r, a)))
}
