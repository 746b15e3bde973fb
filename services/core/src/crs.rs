//! Coordinate systems used in China: WGS-84 (GPS), GCJ-02 (consumer maps and the shipped
//! boundary data) and BD-09 (Baidu). Reports say which one their point is in; each table says
//! its own; the router converts the point into the table's system before the lookup.
//!
//! The GCJ-02 transform is the widely published approximation of the official algorithm
//! (sub-metre agreement); its inverse is solved by fixed-point iteration. Outside China the
//! GCJ-02 offset is not applied, as the official maps do.

use std::f64::consts::PI;

/// A coordinate system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Crs {
    /// WGS-84.
    Wgs84,
    /// GCJ-02, the default of gridroute's tables.
    #[default]
    Gcj02,
    /// BD-09.
    Bd09,
}

impl Crs {
    /// Parses `wgs84`, `gcj02` or `bd09`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
            "wgs84" => Some(Self::Wgs84),
            "gcj02" => Some(Self::Gcj02),
            "bd09" => Some(Self::Bd09),
            _ => None,
        }
    }
}

const A: f64 = 6_378_245.0;
const EE: f64 = 0.006_693_421_622_965_943;
const X_PI: f64 = PI * 3000.0 / 180.0;

fn out_of_china(lng: f64, lat: f64) -> bool {
    !(72.004..=137.8347).contains(&lng) || !(0.8293..=55.8271).contains(&lat)
}

fn transform_lat(x: f64, y: f64) -> f64 {
    let mut r = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * x.abs().sqrt();
    r += (20.0 * (6.0 * x * PI).sin() + 20.0 * (2.0 * x * PI).sin()) * 2.0 / 3.0;
    r += (20.0 * (y * PI).sin() + 40.0 * (y / 3.0 * PI).sin()) * 2.0 / 3.0;
    r += (160.0 * (y / 12.0 * PI).sin() + 320.0 * (y * PI / 30.0).sin()) * 2.0 / 3.0;
    r
}

fn transform_lng(x: f64, y: f64) -> f64 {
    let mut r = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * x.abs().sqrt();
    r += (20.0 * (6.0 * x * PI).sin() + 20.0 * (2.0 * x * PI).sin()) * 2.0 / 3.0;
    r += (20.0 * (x * PI).sin() + 40.0 * (x / 3.0 * PI).sin()) * 2.0 / 3.0;
    r += (150.0 * (x / 12.0 * PI).sin() + 300.0 * (x / 30.0 * PI).sin()) * 2.0 / 3.0;
    r
}

fn wgs84_to_gcj02(lng: f64, lat: f64) -> (f64, f64) {
    if out_of_china(lng, lat) {
        return (lng, lat);
    }
    let dlat = transform_lat(lng - 105.0, lat - 35.0);
    let dlng = transform_lng(lng - 105.0, lat - 35.0);
    let radlat = lat / 180.0 * PI;
    let magic = 1.0 - EE * radlat.sin() * radlat.sin();
    let sqrt_magic = magic.sqrt();
    let dlat = dlat * 180.0 / ((A * (1.0 - EE)) / (magic * sqrt_magic) * PI);
    let dlng = dlng * 180.0 / (A / sqrt_magic * radlat.cos() * PI);
    (lng + dlng, lat + dlat)
}

fn gcj02_to_wgs84(lng: f64, lat: f64) -> (f64, f64) {
    if out_of_china(lng, lat) {
        return (lng, lat);
    }
    // Fixed-point iteration: find w with f(w) = g. Converges to < 1e-9 degrees in a few steps.
    let (mut x, mut y) = (lng, lat);
    for _ in 0..8 {
        let (gx, gy) = wgs84_to_gcj02(x, y);
        x -= gx - lng;
        y -= gy - lat;
    }
    (x, y)
}

fn bd09_to_gcj02(lng: f64, lat: f64) -> (f64, f64) {
    let x = lng - 0.0065;
    let y = lat - 0.006;
    let z = (x * x + y * y).sqrt() - 0.00002 * (y * X_PI).sin();
    let theta = y.atan2(x) - 0.000003 * (x * X_PI).cos();
    (z * theta.cos(), z * theta.sin())
}

fn gcj02_to_bd09(lng: f64, lat: f64) -> (f64, f64) {
    let z = (lng * lng + lat * lat).sqrt() + 0.00002 * (lat * X_PI).sin();
    let theta = lat.atan2(lng) + 0.000003 * (lng * X_PI).cos();
    (z * theta.cos() + 0.0065, z * theta.sin() + 0.006)
}

/// Converts a point (longitude, latitude) from one system to another.
pub fn convert(from: Crs, to: Crs, lng: f64, lat: f64) -> (f64, f64) {
    if from == to {
        return (lng, lat);
    }
    let (gx, gy) = match from {
        Crs::Gcj02 => (lng, lat),
        Crs::Wgs84 => wgs84_to_gcj02(lng, lat),
        Crs::Bd09 => bd09_to_gcj02(lng, lat),
    };
    match to {
        Crs::Gcj02 => (gx, gy),
        Crs::Wgs84 => gcj02_to_wgs84(gx, gy),
        Crs::Bd09 => gcj02_to_bd09(gx, gy),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metres(a: (f64, f64), b: (f64, f64)) -> f64 {
        let dy = (a.1 - b.1) * 111_320.0;
        let dx = (a.0 - b.0) * 111_320.0 * (a.1.to_radians()).cos();
        (dx * dx + dy * dy).sqrt()
    }

    #[test]
    fn offsets_are_of_the_known_size_and_round_trip() {
        // Dawukou district centre.
        let wgs = (106.3826, 39.0149);
        let gcj = convert(Crs::Wgs84, Crs::Gcj02, wgs.0, wgs.1);
        let off = metres(wgs, gcj);
        assert!((100.0..800.0).contains(&off), "GCJ-02 offset {off} m");
        let back = convert(Crs::Gcj02, Crs::Wgs84, gcj.0, gcj.1);
        assert!(metres(back, wgs) < 0.01);
        let bd = convert(Crs::Wgs84, Crs::Bd09, wgs.0, wgs.1);
        assert!((500.0..2000.0).contains(&metres(bd, gcj)), "BD-09 offset");
        let back = convert(Crs::Bd09, Crs::Wgs84, bd.0, bd.1);
        assert!(metres(back, wgs) < 1.0);
    }

    #[test]
    fn known_reference_point() {
        // Reference pairs (WGS-84 → GCJ-02) from the test suite of the eviltransform library.
        for (wlat, wlng, glat, glng) in [
            (
                31.177_427_6,
                121.527_210_6,
                31.175_303_983_645_97,
                121.531_541_859_215,
            ),
            (
                22.543_847,
                113.912_316,
                22.540_796_131_694_766,
                113.917_176_480_836_3,
            ),
            (
                39.911_954,
                116.377_817,
                39.913_345_455_360_69,
                116.384_047_224_556_57,
            ),
        ] {
            let (x, y) = convert(Crs::Wgs84, Crs::Gcj02, wlng, wlat);
            assert!(
                (x - glng).abs() < 1e-6 && (y - glat).abs() < 1e-6,
                "{x} {y}"
            );
        }
    }

    #[test]
    fn outside_china_unchanged() {
        assert_eq!(convert(Crs::Wgs84, Crs::Gcj02, 2.35, 48.85), (2.35, 48.85));
    }
}
