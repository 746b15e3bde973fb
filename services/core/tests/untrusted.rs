//! Untrusted text never panics the core: routing tables (GeoJSON and YAML) and working
//! calendars come from operators' files and from the TableService, so arbitrary text and
//! damaged copies of real files must be refused with a reason, never crash a replica.

#![allow(clippy::unwrap_used)]

use gridroute_core::{RoutingTable, calendar::WorkCalendar, sla, table::TableSources};
use proptest::prelude::*;

const GRIDS: &str = include_str!("../../../deploy/sample/dawukou/grids.geojson");
const RULES: &str = include_str!("../../../deploy/sample/dawukou/rules.yaml");
const CALENDAR: &str = include_str!("../../../deploy/calendar/cn-2024-2026.yaml");

/// A damaged copy of `text`: some bytes changed, then cut somewhere (kept valid UTF-8).
fn damaged(text: &'static str) -> impl Strategy<Value = String> {
    (
        prop::collection::vec((0..text.len(), any::<u8>()), 0..8),
        0..=text.len(),
    )
        .prop_map(move |(flips, cut)| {
            let mut bytes = text.as_bytes().to_vec();
            for (at, b) in flips {
                bytes[at] = b;
            }
            bytes.truncate(cut.max(1));
            String::from_utf8_lossy(&bytes).into_owned()
        })
}

fn load(grids: &str, rules: &str, calendar: Option<&str>) {
    let _ = RoutingTable::load(TableSources {
        grids_geojson: grids,
        rules_yaml: rules,
        calendar_yaml: calendar,
        regions_geojson: None,
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn damaged_rules_are_refused_not_fatal(rules in damaged(RULES)) {
        load(GRIDS, &rules, None);
    }

    #[test]
    fn damaged_grids_are_refused_not_fatal(grids in damaged(GRIDS)) {
        load(&grids, RULES, None);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_text_as_a_table_is_refused_not_fatal(grids in "\\PC{0,200}", rules in "\\PC{0,200}") {
        load(&grids, &rules, None);
        load(GRIDS, &rules, None);
    }

    #[test]
    fn geojson_shaped_garbage_is_refused_not_fatal(
        coords in prop::collection::vec(any::<f64>(), 0..12),
        code in "\\PC{0,20}",
    ) {
        let ring: Vec<[f64; 2]> = coords.chunks(2).map(|c| [c[0], *c.get(1).unwrap_or(&0.0)]).collect();
        let grids = serde_json::json!({"type": "FeatureCollection", "features": [{
            "type": "Feature",
            "properties": {"code": code, "name": "x", "level": "grid", "path": [{"code": "1", "name": "d", "level": "district"}]},
            "geometry": {"type": "Polygon", "coordinates": [ring]},
        }]}).to_string();
        load(&grids, RULES, None);
    }

    #[test]
    fn damaged_calendars_are_refused_not_fatal(cal in damaged(CALENDAR)) {
        if let Ok(c) = WorkCalendar::from_yaml(&cal) {
            // Whatever loaded still answers deadline arithmetic without panicking.
            let _ = c.add_working(1_750_000_000_000, 3_600_000);
            let _ = c.working_between(1_750_000_000_000, 1_760_000_000_000);
        }
        load(GRIDS, RULES, Some(&cal));
    }

    #[test]
    fn any_text_as_a_calendar_or_span_is_refused_not_fatal(text in "\\PC{0,120}") {
        let _ = WorkCalendar::from_yaml(&text);
        let _ = sla::parse_span(&text, 7 * 3_600_000);
        let _ = sla::parse_duration(&text);
    }
}
