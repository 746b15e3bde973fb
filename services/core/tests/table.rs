//! Loading, validation and route decisions on small hand-written tables and on the Dawukou
//! sample.

#![allow(clippy::unwrap_used)]

use geo::{CoordinatePosition, InteriorPoint, coordinate_position::CoordPos};
use gridroute_core::{
    Outcome, RouteQuery, RouteTarget, RoutingTable,
    crs::Crs,
    rules::Urgency,
    table::{Severity, TableSources},
};
use proptest::prelude::*;

fn square(code: &str, parent_path: &str, x0: f64, y0: f64, x1: f64, y1: f64) -> String {
    format!(
        r#"{{"type":"Feature","properties":{{"code":"{code}","name":"g{code}","path":{parent_path}}},"geometry":{{"type":"Polygon","coordinates":[[[{x0},{y0}],[{x1},{y0}],[{x1},{y1}],[{x0},{y1}],[{x0},{y0}]]]}}}}"#
    )
}

const PATH_S1: &str = r#"[{"code":"D","name":"District","level":"district"},{"code":"S1","name":"Street 1","level":"street"},{"code":"C1","name":"Community 1","level":"community"}]"#;
const PATH_S2: &str = r#"[{"code":"D","name":"District","level":"district"},{"code":"S2","name":"Street 2","level":"street"},{"code":"C2","name":"Community 2","level":"community"}]"#;

fn grids() -> String {
    format!(
        r#"{{"type":"FeatureCollection","features":[{},{},{}]}}"#,
        square("G1", PATH_S1, 0.0, 0.0, 1.0, 1.0),
        square("G2", PATH_S1, 1.0, 0.0, 2.0, 1.0),
        square("G3", PATH_S2, 2.0, 0.0, 3.0, 1.0)
    )
}

const RULES: &str = r#"
name: test
departments:
  - {id: centre, name: Centre}
  - {id: street2-centre, name: Street 2 centre}
  - {id: a, name: A}
  - {id: b, name: B}
  - {id: c, name: C}
  - {id: d, name: D}
default_command_centre: centre
command_centres: {"S2": street2-centre}
sla_policies:
  std: {accept: 4h, resolve: 36h}
  urgent: {accept: 15m, resolve: 4h}
default_sla: {normal: std, high: std, critical: urgent}
rules:
  - {id: any-vehicle, category: city.vehicle, department: a}
  - {id: abandoned, category: city.vehicle.abandoned, department: b}
  - {id: abandoned-s1, category: city.vehicle.abandoned, regions: [S1], department: c}
  - {id: abandoned-g2, category: city.vehicle.abandoned, regions: [G2], department: d}
  - {id: vehicle-s1-forced, category: city.vehicle, regions: [S1], department: a, priority: 10, urgencies: [critical]}
  - {id: hotline, category: consult, sources: [hotline], department: d}
  - {id: wechat-plates, category: city.water, priority: 1, department: c, labels: [{key: channel, equals: wechat}, {key: plate, matches: "宁B.*"}, {key: vip, not_equals: "yes"}, {key: note, not_matches: "(?i).*test.*"}]}
  - {id: after-hours, category: city.noise, when: [off_hours], department: d}
  - {id: office-hours, category: city.noise, department: c}
  - {id: noise-watch, category: city.noise, priority: -1, continue: true, department: b, co_handlers: [a, c]}
  - {id: first, category: city.water, department: a}
  - {id: second, category: city.water, department: b}
"#;

fn table() -> RoutingTable {
    RoutingTable::load(TableSources {
        grids_geojson: &grids(),
        rules_yaml: RULES,
        calendar_yaml: None,
        regions_geojson: None,
    })
    .unwrap()
}

fn route(
    t: &RoutingTable,
    category: &str,
    x: f64,
    y: f64,
    urgency: Urgency,
    source: &str,
) -> (String, Option<String>, Outcome) {
    let q = RouteQuery {
        category,
        target: RouteTarget::Point {
            lng: x,
            lat: y,
            crs: Crs::Gcj02,
            accuracy_m: 0.0,
        },
        urgency,
        source,
        excluded: &[],
        labels: &(),
        now_ms: 0,
    };
    let d = t.route(&q);
    (
        t.departments[d.department as usize].id.clone(),
        d.rule.map(|r| t.rules[r as usize].id.clone()),
        d.outcome,
    )
}

#[test]
fn most_specific_rule_wins_and_priority_overrides() {
    let t = table();
    let n = Urgency::Normal;
    // Longer category prefix beats a shorter one.
    assert_eq!(
        route(&t, "city.vehicle.abandoned", 2.5, 0.5, n, "app")
            .1
            .as_deref(),
        Some("abandoned")
    );
    assert_eq!(
        route(&t, "city.vehicle.parking", 2.5, 0.5, n, "app")
            .1
            .as_deref(),
        Some("any-vehicle")
    );
    // Same category: the deeper region wins (street, then grid).
    assert_eq!(
        route(&t, "city.vehicle.abandoned", 0.5, 0.5, n, "app")
            .1
            .as_deref(),
        Some("abandoned-s1")
    );
    assert_eq!(
        route(&t, "city.vehicle.abandoned", 1.5, 0.5, n, "app")
            .1
            .as_deref(),
        Some("abandoned-g2")
    );
    // An explicit priority beats specificity, only where it applies (critical urgency).
    assert_eq!(
        route(
            &t,
            "city.vehicle.abandoned",
            1.5,
            0.5,
            Urgency::Critical,
            "app"
        )
        .1
        .as_deref(),
        Some("vehicle-s1-forced")
    );
    // Source filter.
    assert_eq!(route(&t, "consult.tax", 0.5, 0.5, n, "hotline").0, "d");
    assert_eq!(
        route(&t, "consult.tax", 0.5, 0.5, n, "app").2,
        Outcome::NoRule
    );
    // A full tie goes to the rule written first.
    assert_eq!(
        route(&t, "city.water.leak", 0.5, 0.5, n, "app")
            .1
            .as_deref(),
        Some("first")
    );
}

#[test]
fn label_matchers_all_must_hold() {
    let t = table();
    let route_with = |pairs: &[(&str, &str)]| {
        let labels: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let q = RouteQuery {
            category: "city.water.leak",
            target: RouteTarget::Grid("G1"),
            urgency: Urgency::Normal,
            source: "app",
            excluded: &[],
            labels: &labels,
            now_ms: 0,
        };
        let d = t.route(&q);
        t.rules[d.rule.unwrap() as usize].id.clone()
    };
    assert_eq!(
        route_with(&[("channel", "wechat"), ("plate", "宁B12345")]),
        "wechat-plates"
    );
    assert_eq!(
        route_with(&[("channel", "wechat"), ("plate", "京A12345")]),
        "first",
        "regex is anchored"
    );
    assert_eq!(
        route_with(&[("channel", "wechat")]),
        "first",
        "a missing label is empty"
    );
    assert_eq!(
        route_with(&[("channel", "wechat"), ("plate", "宁B1"), ("vip", "yes")]),
        "first"
    );
    assert_eq!(
        route_with(&[("channel", "wechat"), ("plate", "宁B1"), ("note", "A TEST")]),
        "first"
    );
    assert_eq!(
        route_with(&[("channel", "wechat"), ("plate", "宁B1"), ("note", "real")]),
        "wechat-plates"
    );

    let bad = RULES.replace(r#"matches: "宁B.*""#, r#"matches: "宁B(""#);
    let err = RoutingTable::load(TableSources {
        grids_geojson: &grids(),
        rules_yaml: &bad,
        calendar_yaml: None,
        regions_geojson: None,
    })
    .unwrap_err();
    assert_eq!(err.issues[0].code, "bad_label_matcher");
}

#[test]
fn time_windows_use_the_working_calendar() {
    let t = table();
    let at = |date: &str, hh: i64| {
        let day = gridroute_core::calendar::parse_date(date).unwrap();
        // Local time is UTC+8.
        day * 86_400_000 + (hh - 8) * 3_600_000
    };
    let rule_at = |now_ms: i64| {
        let q = RouteQuery {
            category: "city.noise.bar",
            target: RouteTarget::Grid("G1"),
            urgency: Urgency::Normal,
            source: "app",
            excluded: &[],
            labels: &(),
            now_ms,
        };
        t.rules[t.route(&q).rule.unwrap() as usize].id.clone()
    };
    assert_eq!(
        rule_at(at("2025-10-13", 10)),
        "office-hours",
        "Monday morning"
    );
    assert_eq!(rule_at(at("2025-10-13", 13)), "after-hours", "lunch break");
    assert_eq!(
        rule_at(at("2025-10-13", 20)),
        "after-hours",
        "Monday evening"
    );
    assert_eq!(rule_at(at("2025-10-12", 10)), "after-hours", "Sunday");
    assert_eq!(
        rule_at(at("2025-10-11", 10)),
        "office-hours",
        "make-up Saturday"
    );
    assert_eq!(
        rule_at(at("2025-10-03", 10)),
        "after-hours",
        "National Day holiday"
    );
}

#[test]
fn continue_rules_join_as_co_handlers() {
    let t = table();
    let q = |grid| RouteQuery {
        category: "city.noise.bar",
        target: RouteTarget::Grid(grid),
        urgency: Urgency::Normal,
        source: "app",
        excluded: &[],
        labels: &(),
        // A Monday morning: office-hours wins.
        now_ms: gridroute_core::calendar::parse_date("2025-10-13").unwrap() * 86_400_000
            + 2 * 3_600_000,
    };
    let ids = |v: Vec<gridroute_core::rules::DeptId>| {
        v.into_iter()
            .map(|d| t.departments[d as usize].id.clone())
            .collect::<Vec<_>>()
    };
    // noise-watch has a lower priority, so office-hours wins; as a `continue` rule that matched,
    // noise-watch adds its department and co-handlers, without repeating the primary (c).
    let d = t.route(&q("G1"));
    assert_eq!(t.rules[d.rule.unwrap() as usize].id, "office-hours");
    assert_eq!(ids(t.co_handlers(&q("G1"), &d)), ["b", "a"]);
    // A report the continue rule does not match gets no extra co-handlers.
    let water = RouteQuery {
        category: "city.water.leak",
        ..q("G1")
    };
    let dw = t.route(&water);
    assert!(t.co_handlers(&water, &dw).is_empty());
}

#[test]
fn fallbacks_go_to_the_right_command_centre() {
    let t = table();
    // No rule in street 2: its own command centre; in street 1: the default.
    assert_eq!(
        route(&t, "civil.dispute", 2.5, 0.5, Urgency::Normal, "app").0,
        "street2-centre"
    );
    assert_eq!(
        route(&t, "civil.dispute", 0.5, 0.5, Urgency::Normal, "app").0,
        "centre"
    );
    let (dept, rule, outcome) = route(
        &t,
        "city.vehicle.abandoned",
        9.0,
        9.0,
        Urgency::Normal,
        "app",
    );
    assert_eq!(
        (dept.as_str(), rule, outcome),
        ("centre", None, Outcome::OutsideGrids)
    );
    let q = RouteQuery {
        category: "city.vehicle",
        target: RouteTarget::Grid("S1"),
        urgency: Urgency::Normal,
        source: "",
        excluded: &[],
        labels: &(),
        now_ms: 0,
    };
    assert_eq!(
        t.route(&q).outcome,
        Outcome::UnknownGrid,
        "a street is not a grid"
    );
}

#[test]
fn excluded_departments_are_skipped() {
    let t = table();
    let c = t.department("c").unwrap();
    let b = t.department("b").unwrap();
    fn q(excluded: &[gridroute_core::rules::DeptId]) -> RouteQuery<'_> {
        RouteQuery {
            category: "city.vehicle.abandoned",
            target: RouteTarget::Grid("G1"),
            urgency: Urgency::Normal,
            source: "app",
            excluded,
            labels: &(),
            now_ms: 0,
        }
    }
    assert_eq!(t.departments[t.route(&q(&[c])).department as usize].id, "b");
    assert_eq!(
        t.departments[t.route(&q(&[c, b])).department as usize].id,
        "a"
    );
    let a = t.department("a").unwrap();
    let d = t.route(&q(&[a, b, c]));
    assert_eq!(
        (t.departments[d.department as usize].id.as_str(), d.outcome),
        ("centre", Outcome::NoRule)
    );
    let reasons = t.explain(&q(&[c]), &t.route(&q(&[c])));
    assert!(
        reasons.iter().any(|r| r.contains("excluded: c")),
        "{reasons:?}"
    );
}

#[test]
fn points_just_outside_snap_within_the_accuracy_radius() {
    let t = table();
    let q = |accuracy_m: f64| RouteQuery {
        category: "city.vehicle.abandoned",
        // 0.0002 degrees east of G3's outer edge at latitude 0.5: about 22 m.
        target: RouteTarget::Point {
            lng: 3.0002,
            lat: 0.5,
            crs: Crs::Gcj02,
            accuracy_m,
        },
        urgency: Urgency::Normal,
        source: "app",
        excluded: &[],
        labels: &(),
        now_ms: 0,
    };
    // Unstated accuracy: the table default of 50 m.
    let d = t.route(&q(0.0));
    assert_eq!((d.outcome, d.snapped_m), (Outcome::Matched, Some(23)));
    assert_eq!(t.regions.node(d.grid.unwrap()).code, "G3");
    assert!(
        t.explain(&q(0.0), &d)[0].contains("snapped"),
        "{:?}",
        t.explain(&q(0.0), &d)
    );
    // A tighter stated accuracy: too far, the command centre takes it.
    let d = t.route(&q(10.0));
    assert_eq!((d.outcome, d.snapped_m), (Outcome::OutsideGrids, None));
    assert!(t.explain(&q(10.0), &d)[0].contains("none within 10 m"));
    // A huge stated accuracy is capped (500 m by default): 0.01 degrees is about 1.1 km.
    let far = RouteQuery {
        target: RouteTarget::Point {
            lng: 3.01,
            lat: 0.5,
            crs: Crs::Gcj02,
            accuracy_m: 5000.0,
        },
        ..q(0.0)
    };
    assert_eq!(t.route(&far).outcome, Outcome::OutsideGrids);
}

#[test]
fn shared_borders_have_one_deterministic_answer() {
    let t = table();
    for _ in 0..3 {
        assert_eq!(t.grids.locate(1.0, 0.5).unwrap().code, "G1");
        assert_eq!(t.grids.locate(2.0, 1.0).unwrap().code, "G2");
    }
}

#[test]
fn a_bad_table_is_rejected_whole_with_every_reason() {
    let bad_grids = format!(
        r#"{{"type":"FeatureCollection","features":[{},{},{},{}]}}"#,
        square("G1", PATH_S1, 0.0, 0.0, 1.0, 1.0),
        square("G1", PATH_S1, 1.0, 0.0, 2.0, 1.0),
        r#"{"type":"Feature","properties":{"code":"G9","path":[{"code":"D","name":"Elsewhere","level":"district"}]},"geometry":{"type":"Polygon","coordinates":[[[0,0],[1,0],[0,0]]]}}"#,
        r#"{"type":"Feature","properties":{"code":"G8","path":[{"code":"D","name":"District","level":"district"}]},"geometry":{"type":"Point","coordinates":[0,0]}}"#,
    );
    let bad_rules = RULES
        .replace("department: d}", "department: nobody}")
        .replace("regions: [G2]", "regions: [G404]")
        .replace(
            "category: city.water, department: b",
            "category: City.Water, department: b, sla: gold",
        );
    let err = RoutingTable::load(TableSources {
        grids_geojson: &bad_grids,
        rules_yaml: &bad_rules,
        calendar_yaml: None,
        regions_geojson: None,
    })
    .unwrap_err();
    let mut codes: Vec<(&str, &str)> = err
        .issues
        .iter()
        .filter(|i| i.severity == Severity::Error)
        .map(|i| (i.code, i.subject.as_str()))
        .collect();
    codes.sort_unstable();
    assert_eq!(
        codes,
        [
            ("bad_category", "second"),
            ("bad_geometry", "G8"),
            ("duplicate_grid", "G1"),
            ("inconsistent_region", "D"),
            ("unknown_department", "abandoned-g2"),
            ("unknown_department", "after-hours"),
            ("unknown_department", "hotline"),
            ("unknown_region", "abandoned-g2"),
            ("unknown_region", "command_centres.S2"),
            ("unknown_sla_policy", "second"),
        ]
    );
    assert!(err.to_string().contains("rejected with 10 error(s)"));

    let err = RoutingTable::load(TableSources {
        grids_geojson: "not json",
        rules_yaml: "name: [",
        calendar_yaml: None,
        regions_geojson: None,
    })
    .unwrap_err();
    let codes: Vec<&str> = err.issues.iter().map(|i| i.code).collect();
    assert!(codes.contains(&"rules_unparsable"));
    let err = RoutingTable::load(TableSources {
        grids_geojson: "not json",
        rules_yaml: RULES,
        calendar_yaml: None,
        regions_geojson: None,
    })
    .unwrap_err();
    assert_eq!(err.issues[0].code, "grids_unparsable");
}

#[test]
fn every_structural_error_code_is_reported() {
    let grids = format!(
        r#"{{"type":"FeatureCollection","features":[{},{},{}]}}"#,
        square("G1", PATH_S1, 0.0, 0.0, 1.0, 1.0),
        r#"{"type":"Feature","properties":{"name":"no code"},"geometry":null}"#,
        r#"{"type":"Feature","properties":{"code":"G7"},"geometry":{"type":"Polygon","coordinates":[[[5,5],[6,5],[6,6],[5,6],[5,5]]]}}"#,
    );
    let rules = r#"
name: broken
crs: mercator
snap_radius_m: -5
departments:
  - {id: a, name: A}
  - {id: a, name: A again}
  - {id: "", name: Nameless}
default_command_centre: a
sla_policies:
  std: {accept: 4 hours, resolve: 1.5wd}
default_sla: {normal: std, high: std, critical: std}
rules:
  - {id: r1, category: city, department: a}
  - {id: r1, category: city.x, department: a}
"#;
    let calendar = "timezone: Asia/Shanghai\nholidays: [{date: 2025-02-30}]\n";
    let err = RoutingTable::load(TableSources {
        grids_geojson: &grids,
        rules_yaml: rules,
        calendar_yaml: Some(calendar),
        regions_geojson: Some("{"),
    })
    .unwrap_err();
    let mut codes: Vec<&str> = err.issues.iter().map(|i| i.code).collect();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(
        codes,
        [
            "bad_calendar",
            "bad_duration",
            "bad_snap_radius",
            "duplicate_department",
            "duplicate_rule",
            "empty_department_id",
            "missing_code",
            "missing_parent",
            "regions_unparsable",
            "unknown_crs",
            "unknown_sla_policy",
        ],
        "{err}"
    );
}

#[test]
fn unused_departments_are_a_warning_not_an_error() {
    let rules = RULES.replace(
        "  - {id: d, name: D}",
        "  - {id: d, name: D}\n  - {id: idle, name: Idle}",
    );
    let t = RoutingTable::load(TableSources {
        grids_geojson: &grids(),
        rules_yaml: &rules,
        calendar_yaml: None,
        regions_geojson: None,
    })
    .unwrap();
    let w: Vec<(&str, &str)> = t
        .warnings
        .iter()
        .map(|w| (w.code, w.subject.as_str()))
        .collect();
    assert_eq!(w, [("unused_department", "idle")]);
}

#[test]
fn the_cell_index_agrees_with_the_exact_method_on_a_million_points() {
    let t = sample();
    let mut rng = gridroute_core::synth::Rng::new(99);
    let mut mismatches = 0;
    for _ in 0..1_000_000 {
        let (x, y) = (106.05 + rng.unit() * 0.5, 38.82 + rng.unit() * 0.51);
        if t.grids.locate(x, y).map(|g| &g.code) != t.grids.locate_exact(x, y).map(|g| &g.code) {
            mismatches += 1;
        }
    }
    assert_eq!(mismatches, 0);
}

fn sample() -> RoutingTable {
    RoutingTable::load(TableSources {
        grids_geojson: include_str!("../../../deploy/sample/dawukou/grids.geojson"),
        rules_yaml: include_str!("../../../deploy/sample/dawukou/rules.yaml"),
        calendar_yaml: None,
        regions_geojson: None,
    })
    .unwrap()
}

#[test]
fn the_dawukou_sample_has_the_article_shape() {
    let t = sample();
    let levels = |l: &str| t.regions.iter().filter(|(_, n)| n.level == l).count();
    assert_eq!(levels("district"), 1);
    assert_eq!(levels("street"), 11);
    assert_eq!(levels("community") + levels("village"), 62);
    assert_eq!(levels("village"), 12);
    assert_eq!(levels("grid"), 317);
    assert_eq!(t.departments.len(), 10);
    // Every grid's interior point routes to that grid, with a four-level path.
    for g in t.grids.grids() {
        let p = g.shape.interior_point().unwrap();
        assert_eq!(t.grids.locate(p.x(), p.y()).unwrap().code, g.code);
        assert_eq!(t.regions.path(g.region).len(), 4);
    }
}

#[test]
fn the_sample_passes_the_geometry_checks() {
    let t = sample();
    let started = std::time::Instant::now();
    let issues = gridroute_core::checks::check_geometry(&t);
    assert!(issues.is_empty(), "{issues:?}");
    eprintln!("geometry checks of 317 grids: {:?}", started.elapsed());
}

#[test]
fn overlaps_gaps_and_bowties_are_reported() {
    let grids = format!(
        r#"{{"type":"FeatureCollection","features":[{},{},{},{}]}}"#,
        // G1 and G2 overlap by a 0.5 x 1 degree strip.
        square("G1", PATH_S1, 0.0, 0.0, 1.0, 1.0),
        square("G2", PATH_S1, 0.5, 0.0, 2.0, 1.0),
        // A ring of four grids in street 2 around an empty square.
        r#"{"type":"Feature","properties":{"code":"G3","path":[{"code":"D","name":"District","level":"district"},{"code":"S2","name":"Street 2","level":"street"},{"code":"C2","name":"Community 2","level":"community"}]},"geometry":{"type":"Polygon","coordinates":[[[3,0],[6,0],[6,3],[3,3],[3,0]],[[4,1],[5,1],[5,2],[4,2],[4,1]]]}}"#,
        // A bow-tie: self-intersecting ring.
        r#"{"type":"Feature","properties":{"code":"G4","path":[{"code":"D","name":"District","level":"district"},{"code":"S2","name":"Street 2","level":"street"},{"code":"C2","name":"Community 2","level":"community"}]},"geometry":{"type":"Polygon","coordinates":[[[7,0],[8,1],[8,0],[7,1],[7,0]]]}}"#,
    );
    let t = RoutingTable::load(TableSources {
        grids_geojson: &grids,
        rules_yaml: RULES,
        calendar_yaml: None,
        regions_geojson: None,
    })
    .unwrap();
    let issues = gridroute_core::checks::check_geometry(&t);
    let mut codes: Vec<(&str, &str)> = issues
        .iter()
        .map(|i| (i.code, i.subject.as_str()))
        .collect();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(
        codes,
        [
            ("gap_in_parent", "C2"),
            ("invalid_geometry", "G4"),
            ("overlapping_grids", "G1,G2")
        ],
        "{issues:?}"
    );
}

#[test]
fn index_agrees_with_brute_force_on_every_vertex_and_edge_midpoint() {
    let t = sample();
    let brute = |x: f64, y: f64| {
        let c = geo::coord! { x: x, y: y };
        t.grids
            .grids()
            .iter()
            .find(|g| g.shape.coordinate_position(&c) != CoordPos::Outside)
            .map(|g| g.code.clone())
    };
    let mut checked = 0;
    for g in t.grids.grids() {
        for p in &g.shape.0 {
            for l in p.exterior().lines() {
                let mid = ((l.start.x + l.end.x) / 2.0, (l.start.y + l.end.y) / 2.0);
                for (x, y) in [(l.start.x, l.start.y), mid] {
                    assert_eq!(
                        t.grids.locate(x, y).map(|g| g.code.clone()),
                        brute(x, y),
                        "({x}, {y})"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 4000, "{checked}");
}

#[test]
fn grids_outside_their_parents_polygon_are_reported() {
    // Street 1's official outline covers x 0..1.9: grid G2 (x 1..2) sticks out of it. Community 2
    // is given x 2..3.5, of which its one grid G3 covers only x 2..3.
    let regions = r#"{"type":"FeatureCollection","features":[
        {"type":"Feature","properties":{"code":"S1"},"geometry":{"type":"Polygon","coordinates":[[[0,0],[1.9,0],[1.9,1],[0,1],[0,0]]]}},
        {"type":"Feature","properties":{"code":"C2"},"geometry":{"type":"Polygon","coordinates":[[[2,0],[3.5,0],[3.5,1],[2,1],[2,0]]]}}]}"#;
    let t = RoutingTable::load(TableSources {
        grids_geojson: &grids(),
        rules_yaml: RULES,
        calendar_yaml: None,
        regions_geojson: Some(regions),
    })
    .unwrap();
    let mut codes: Vec<(&str, String)> = gridroute_core::checks::check_geometry(&t)
        .into_iter()
        .map(|i| (i.code, i.subject))
        .collect();
    codes.sort();
    assert_eq!(
        codes,
        [
            ("gap_in_parent", "C2".to_owned()),
            ("grid_outside_parent", "G2".to_owned())
        ]
    );

    let unknown = r#"{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"code":"S9"},"geometry":{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,0]]]}}]}"#;
    let err = RoutingTable::load(TableSources {
        grids_geojson: &grids(),
        rules_yaml: RULES,
        calendar_yaml: None,
        regions_geojson: Some(unknown),
    })
    .unwrap_err();
    assert_eq!(err.issues[0].code, "unknown_region");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]
    /// The index agrees with a brute-force scan of every grid.
    #[test]
    fn index_agrees_with_brute_force(x in 106.05f64..106.55, y in 38.82f64..39.33) {
        let t = SAMPLE.with(|s| s.clone());
        let c = geo::coord! { x: x, y: y };
        let brute = t.grids.grids().iter().find(|g| g.shape.coordinate_position(&c) != CoordPos::Outside).map(|g| g.code.clone());
        prop_assert_eq!(t.grids.locate(x, y).map(|g| g.code.clone()), brute);
    }
}

thread_local! {
    static SAMPLE: std::rc::Rc<RoutingTable> = std::rc::Rc::new(sample());
}

#[test]
fn the_category_catalogue_is_checked_and_defaults_to_what_the_rules_name() {
    let load = |rules: &str| {
        RoutingTable::load(TableSources {
            grids_geojson: &grids(),
            rules_yaml: rules,
            calendar_yaml: None,
            regions_geojson: None,
        })
    };
    // Without a catalogue: every category a rule names, its code as its name.
    let t = table();
    let codes: Vec<&str> = t.categories.iter().map(|c| c.code.as_str()).collect();
    assert!(
        codes.contains(&"city.noise") && codes.contains(&"city.water"),
        "{codes:?}"
    );
    assert!(t.categories.iter().all(|c| c.name == c.code));
    // A catalogue with its attributes.
    let with = format!(
        "{RULES}categories:\n  - {{code: city.noise, name: 噪声, attributes: [{{code: when, description: 时段, datatype: singlevaluelist, required: true, values: [{{key: night, name: 夜间}}]}}]}}\n"
    );
    let t = load(&with).unwrap();
    assert_eq!(t.categories.len(), 1);
    assert_eq!(t.categories[0].attributes[0].values[0].key, "night");
    // Listed twice, a bad code, a list without values: rejected whole, each named.
    let bad = format!(
        "{RULES}categories:\n  - {{code: city.noise, name: a}}\n  - {{code: city.noise, name: b}}\n  - {{code: Not-A-Code, name: c}}\n  - {{code: city.water, name: d, attributes: [{{code: kind, description: x, datatype: multivaluelist}}]}}\n"
    );
    let err = load(&bad).unwrap_err();
    let codes: Vec<(&str, &str)> = err
        .issues
        .iter()
        .map(|i| (i.code, i.subject.as_str()))
        .collect();
    assert!(
        codes.contains(&("duplicate_category", "categories.city.noise")),
        "{codes:?}"
    );
    assert!(
        codes.contains(&("bad_category", "categories.Not-A-Code")),
        "{codes:?}"
    );
    assert!(
        codes.contains(&("bad_attribute", "categories.city.water.attributes.kind")),
        "{codes:?}"
    );
}

#[test]
fn an_address_alone_goes_to_the_default_command_centre_with_the_reason() {
    let t = table();
    let q = RouteQuery {
        category: "city.water",
        target: RouteTarget::Address("人民路 12 号"),
        urgency: Urgency::Normal,
        source: "hotline",
        excluded: &[],
        labels: &(),
        now_ms: 0,
    };
    let d = t.route(&q);
    assert_eq!(d.outcome, Outcome::Unlocated);
    assert_eq!(d.department, t.default_command_centre);
    assert!(t.explain(&q, &d)[0].contains("only an address"));
}
