//! GeoJSON geometry: Polygon and MultiPolygon, with every ring checked.

use geo::{LineString, MultiPolygon, Polygon};
use serde_json::Value;

/// Parses a GeoJSON Polygon or MultiPolygon geometry.
pub fn parse_geometry(g: &Value) -> Result<MultiPolygon<f64>, String> {
    let coords = g.get("coordinates").ok_or("geometry has no coordinates")?;
    match g.get("type").and_then(Value::as_str) {
        Some("Polygon") => Ok(MultiPolygon(vec![parse_polygon(coords)?])),
        Some("MultiPolygon") => coords
            .as_array()
            .ok_or("MultiPolygon coordinates are not an array")?
            .iter()
            .map(parse_polygon)
            .collect::<Result<Vec<_>, _>>()
            .map(MultiPolygon),
        other => Err(format!(
            "geometry type {other:?} is not Polygon or MultiPolygon"
        )),
    }
}

fn parse_polygon(v: &Value) -> Result<Polygon<f64>, String> {
    let rings = v.as_array().ok_or("polygon is not an array of rings")?;
    let mut parsed = rings
        .iter()
        .map(parse_ring)
        .collect::<Result<Vec<_>, _>>()?;
    if parsed.is_empty() {
        return Err("polygon has no ring".into());
    }
    let exterior = parsed.remove(0);
    Ok(Polygon::new(exterior, parsed))
}

fn parse_ring(v: &Value) -> Result<LineString<f64>, String> {
    let pts = v.as_array().ok_or("ring is not an array of positions")?;
    let mut coords = Vec::with_capacity(pts.len());
    for p in pts {
        let (Some(x), Some(y)) = (
            p.get(0).and_then(Value::as_f64),
            p.get(1).and_then(Value::as_f64),
        ) else {
            return Err("position is not [longitude, latitude]".into());
        };
        if !(-180.0..=180.0).contains(&x) || !(-90.0..=90.0).contains(&y) {
            return Err(format!("position [{x}, {y}] is out of range"));
        }
        coords.push((x, y));
    }
    if coords.len() < 4 {
        return Err(format!(
            "ring has {} positions; at least 4 are needed",
            coords.len()
        ));
    }
    if coords.first() != coords.last() {
        return Err("ring is not closed (first and last positions differ)".into());
    }
    Ok(LineString::from(coords))
}
