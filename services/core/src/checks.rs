//! Geometry checks of a whole table: invalid or self-intersecting rings, overlapping grids and
//! gaps between grids. They are slower than loading (they union every polygon), so they run
//! where a table is admitted (publish, `tables validate`), not on every replica's reload of a
//! version that already passed them.

use geo::{Area, BooleanOps, BoundingRect, MultiPolygon, Polygon, Validation};

use crate::{
    region::RegionId,
    rules::GapPolicy,
    table::{
        RoutingTable, Severity, TableIssue,
        holes::{area_m2, m2_per_deg2},
    },
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
    // Areas declared outside the grids must not cover grids: the table would contradict itself.
    for d in &table.declared_outside {
        let Some(r) = d.shape.bounding_rect() else {
            continue;
        };
        for g in table
            .grids
            .candidates([r.min().x, r.min().y], [r.max().x, r.max().y])
        {
            let area = area_m2(&g.shape.intersection(&d.shape));
            if area > AREA_TOLERANCE_M2 {
                out.push(issue(
                    "outside_overlaps_grid",
                    format!("{},{}", d.name, g.code),
                    format!(
                        "{area:.0} m² of grid {:?} lie in {:?}, which regions.geojson declares outside the grids",
                        g.code, d.name
                    ),
                ));
            }
        }
    }
    out.extend(gaps(table));
    out
}

/// Gaps: areas no grid covers that the table does not explain, each a warning or an error by
/// the table's `gaps` policy. Inside a region that has an official outline, the outline
/// decides (a hole it excludes is not a gap); elsewhere, the holes between grids. Areas
/// declared outside are never gaps.
fn gaps(table: &RoutingTable) -> Vec<TableIssue> {
    let grids = table.grids.grids();
    let declared = MultiPolygon(
        table
            .declared_outside
            .iter()
            .flat_map(|d| d.shape.0.iter().cloned())
            .collect(),
    );
    let min = table.gaps.min_area_m2.max(AREA_TOLERANCE_M2);
    // An error says how to load the table; a warning only that the area was accepted.
    let (severity, hint) = match table.gaps.policy {
        GapPolicy::Error => (
            Severity::Error,
            " (declare the area outside in regions.geojson, or set gaps: warn)",
        ),
        GapPolicy::Warn => (Severity::Warning, ""),
    };
    let mut out = Vec::new();
    let mut report = |region: Option<RegionId>, piece: &Polygon<f64>| {
        let area = area_m2(piece);
        let Some(r) = piece.bounding_rect() else {
            return;
        };
        if area <= min {
            return;
        }
        let c = r.center();
        let subject = region.map_or_else(
            || table.name.clone(),
            |p| table.regions.node(p).code.clone(),
        );
        let centre = region.map_or(table.default_command_centre, |p| {
            table.command_centre_for(p)
        });
        out.push(TableIssue {
            severity,
            code: "gap_in_parent",
            message: format!(
                "{area:.0} m² around ({:.6}, {:.6}) belong to no grid of region {subject:?}; reports there go to {:?}{hint}",
                c.x, c.y, table.departments[centre as usize].id
            ),
            subject,
        });
    };
    // Inside official outlines: what the outline holds that none of its grids covers.
    let outlined: Vec<RegionId> = table.region_shapes.iter().map(|(r, _)| *r).collect();
    for (region, shape) in &table.region_shapes {
        let children: Vec<Polygon<f64>> = grids
            .iter()
            .filter(|g| table.regions.is_within(g.region, *region))
            .flat_map(|g| g.shape.0.iter().cloned())
            .collect();
        let uncovered = shape
            .difference(&MultiPolygon(children))
            .difference(&declared);
        for piece in &uncovered.0 {
            report(Some(*region), piece);
        }
    }
    // Elsewhere: the holes between grids.
    for hole in &table.holes {
        if hole
            .region
            .is_some_and(|r| outlined.iter().any(|&o| table.regions.is_within(r, o)))
        {
            continue;
        }
        let rest = MultiPolygon(vec![hole.shape.clone()]).difference(&declared);
        for piece in &rest.0 {
            report(hole.region, piece);
        }
    }
    out
}
