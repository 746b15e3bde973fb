//! `--html`: a self-contained page with throughput-over-time and latency-over-time charts
//! (inline SVG, no scripts, no downloads) and the text summary.

use std::fmt::Write as _;

/// One second of the run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// Seconds since the start.
    pub t: f64,
    /// Calls completed in that second.
    pub rate: f64,
    /// Errors in that second.
    pub errors: f64,
    /// Latency p50 / p99 / max of the calls completed in that second, ms.
    pub p50: f64,
    /// p99.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

/// A line: name, colour, value of a sample.
type Series<'a> = (&'a str, &'a str, fn(&Sample) -> f64);

fn chart(title: &str, unit: &str, samples: &[Sample], series: &[Series<'_>]) -> String {
    let (w, h, left, bottom) = (760.0, 260.0, 60.0, 30.0);
    let t_max = samples.iter().map(|s| s.t).fold(1.0, f64::max);
    let y_max = samples
        .iter()
        .flat_map(|s| series.iter().map(move |(_, _, f)| f(s)))
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.1;
    let x = |t: f64| left + (w - left - 10.0) * t / t_max;
    let y = |v: f64| (h - bottom) - (h - bottom - 10.0) * v / y_max;
    let mut svg = format!(
        "<h2>{title}</h2><svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='11'>\
         <line x1='{left}' y1='{}' x2='{}' y2='{}' stroke='#999'/><line x1='{left}' y1='10' x2='{left}' y2='{}' stroke='#999'/>",
        h - bottom,
        w - 10.0,
        h - bottom,
        h - bottom
    );
    for i in 0..=4 {
        let v = y_max * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            "<text x='4' y='{:.1}'>{v:.1} {unit}</text>",
            y(v) + 4.0
        );
    }
    let _ = write!(
        svg,
        "<text x='{}' y='{}'>{t_max:.0} s</text>",
        w - 40.0,
        h - 8.0
    );
    for (i, (name, color, f)) in series.iter().enumerate() {
        let points: Vec<String> = samples
            .iter()
            .map(|s| format!("{:.1},{:.1}", x(s.t), y(f(s))))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill='none' stroke='{color}' stroke-width='1.5' points='{}'/>\
             <text x='{}' y='{}' fill='{color}'>{name}</text>",
            points.join(" "),
            left + 10.0 + 90.0 * i as f64,
            h - 8.0
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The page.
pub fn page(title: &str, samples: &[Sample], summary: &str) -> String {
    let escaped = summary.replace('&', "&amp;").replace('<', "&lt;");
    format!(
        "<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>\
         <body style='font-family:sans-serif'><h1>{title}</h1>{}{}<h2>Summary</h2><pre>{escaped}</pre></body></html>\n",
        chart(
            "Throughput over time",
            "/s",
            samples,
            &[
                ("completed/s", "#1f77b4", |s| s.rate),
                ("errors/s", "#d62728", |s| s.errors)
            ]
        ),
        chart(
            "Latency over time",
            "ms",
            samples,
            &[
                ("p50", "#2ca02c", |s| s.p50),
                ("p99", "#ff7f0e", |s| s.p99),
                ("max", "#9467bd", |s| s.max)
            ]
        ),
    )
}
