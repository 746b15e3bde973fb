//! Synthetic grids written as a table's `grids.geojson`, with codes, names and paths.

use std::fmt::Write as _;

use geo::{Area, BoundingRect, MapCoords, MultiPolygon};

use super::{GridOut, Proj, SynthGrid, SynthParams};

/// Renders grids as the `grids.geojson` of a table.
pub fn render_geojson(grids: &[GridOut]) -> String {
    let mut out = String::with_capacity(grids.len() * 600);
    out.push_str("{\"type\":\"FeatureCollection\",\"features\":[\n");
    for (i, g) in grids.iter().enumerate() {
        let path = g
            .path
            .iter()
            .map(|(c, n, l)| format!("{{\"code\":\"{c}\",\"name\":\"{n}\",\"level\":\"{l}\"}}"))
            .collect::<Vec<_>>()
            .join(",");
        let coords = g
            .shape
            .0
            .iter()
            .map(|poly| {
                let rings = std::iter::once(poly.exterior())
                    .chain(poly.interiors())
                    .map(|r| {
                        format!(
                            "[{}]",
                            r.0.iter()
                                .map(|c| format!("[{},{}]", c.x, c.y))
                                .collect::<Vec<_>>()
                                .join(",")
                        )
                    })
                    .collect::<Vec<_>>();
                format!("[{}]", rings.join(","))
            })
            .collect::<Vec<_>>()
            .join(",");
        let _ = writeln!(
            out,
            "{{\"type\":\"Feature\",\"properties\":{{\"code\":\"{}\",\"name\":\"{}\",\"level\":\"grid\",\"workers\":[\"gw-{}\"],\"path\":[{path}]}},\"geometry\":{{\"type\":\"MultiPolygon\",\"coordinates\":[{coords}]}}}}{}",
            g.code,
            g.name,
            g.code,
            if i + 1 < grids.len() { "," } else { "" }
        );
    }
    out.push_str("]}\n");
    out
}

/// Area of a lon/lat shape in km² (local projection), for reports and tests.
pub fn area_km2(shape: &MultiPolygon<f64>) -> f64 {
    let Some(r) = shape.bounding_rect() else {
        return 0.0;
    };
    let proj = Proj::new(r.center().x, r.center().y);
    shape.map_coords(|c| proj.fwd(c)).unsigned_area()
}

/// The Dawukou sample's grids with codes, names and paths.
pub fn dawukou_grids(p: &SynthParams, grids: &[SynthGrid]) -> Vec<GridOut> {
    let mut grid_no = std::collections::HashMap::new();
    grids
        .iter()
        .map(|g| {
            let (street_name, _) = &p.streets[g.street];
            let street_code = format!("{}{:03}", p.district_code, g.street + 1);
            let community_code = format!("{street_code}{:03}", g.community + 1);
            let n = *grid_no
                .entry(community_code.clone())
                .and_modify(|n| *n += 1)
                .or_insert(1);
            let community_name = community_name(street_name, g.community);
            let level = if street_name.ends_with('镇') || street_name.ends_with('乡') {
                "village"
            } else {
                "community"
            };
            GridOut {
                code: format!("{community_code}{n:03}"),
                name: format!("{community_name}第{n}网格"),
                path: vec![
                    (p.district_code.clone(), p.district_name.clone(), "district"),
                    (street_code, street_name.clone(), "street"),
                    (community_code, community_name, level),
                ],
                shape: g.shape.clone(),
            }
        })
        .collect()
}

/// Renders the Dawukou sample grids as `grids.geojson`.
pub fn grids_geojson(p: &SynthParams, grids: &[SynthGrid]) -> String {
    render_geojson(&dawukou_grids(p, grids))
}

const VILLAGES: [&str; 12] = [
    "红旗村",
    "团结村",
    "富民村",
    "新华村",
    "光明村",
    "永丰村",
    "和平村",
    "幸福村",
    "东风村",
    "胜利村",
    "前进村",
    "友谊村",
];
const NUMERALS: [&str; 10] = ["一", "二", "三", "四", "五", "六", "七", "八", "九", "十"];

fn community_name(street: &str, index: usize) -> String {
    if street.ends_with('镇') || street.ends_with('乡') {
        return VILLAGES
            .get(index)
            .map_or_else(|| format!("第{}村", index + 1), |v| (*v).to_owned());
    }
    let short = street.trim_end_matches("街道");
    match NUMERALS.get(index) {
        Some(n) => format!("{short}{n}社区"),
        None => format!("{short}{}社区", index + 1),
    }
}
