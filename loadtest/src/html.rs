//! `--html`: a self-contained page (inline SVG, no scripts, no downloads) with throughput,
//! call latency and report → subscriber latency over time, a percentile spectrum of both
//! (HdrHistogram style: log scale out to p99.99 and beyond), the figures as a table, and the
//! text summary. With `--compare BASELINE.json` (an earlier run's `--json`) the baseline is
//! drawn dashed on every chart and beside every figure, so that a before/after is one page.
//!
//! Every chart is an `<svg id=…>`; every line a `<polyline data-series=… data-values=…>`
//! carrying the numbers it draws, and the table's cells carry `data-value`: a browser test
//! checks the page without reading pixels.

use std::fmt::Write as _;

use serde_json::{Value, json};

/// One second of the run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
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
    /// Report → subscriber p50 / p99 of the dispatches that arrived in that second, ms (0:
    /// none, or no subscribers in this scenario).
    pub e2e_p50: f64,
    /// p99.
    pub e2e_p99: f64,
}

/// The percentiles of the spectrum (HdrHistogram's log-scale steps to p99.999).
pub const SPECTRUM: [f64; 14] = [
    0.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.995, 99.999, 99.9999, 100.0,
];

/// Latency in ms at each percentile of [`SPECTRUM`].
pub type Spectrum = Vec<(f64, f64)>;

/// A line of a time chart: name, colour, the value of a sample.
type TimeSeries = (&'static str, &'static str, fn(&Sample) -> f64);

/// A run as the page draws it: its seconds and its percentile spectra (percentile, ms).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Run {
    pub samples: Vec<Sample>,
    pub call: Spectrum,
    pub e2e: Spectrum,
}

impl Run {
    /// The run's part of `--json` (`series`, `spectrum`).
    pub fn to_json(&self) -> Value {
        let pairs = |v: &[(f64, f64)]| {
            v.iter()
                .map(|(p, ms)| json!({"percentile": p, "ms": ms}))
                .collect::<Vec<_>>()
        };
        json!({
            "series": self.samples.iter().map(|s| json!({
                "t": s.t, "rate": s.rate, "errors": s.errors, "p50": s.p50, "p99": s.p99,
                "max": s.max, "e2eP50": s.e2e_p50, "e2eP99": s.e2e_p99,
            })).collect::<Vec<_>>(),
            "spectrum": {"call": pairs(&self.call), "endToEnd": pairs(&self.e2e)},
        })
    }

    /// Reads the part [`Run::to_json`] wrote into an earlier run's `--json` file.
    pub fn from_json(v: &Value) -> Result<Self, String> {
        let num = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(0.0);
        let series = v
            .get("series")
            .and_then(Value::as_array)
            .ok_or("no \"series\": not the --json of a gridroute-loadtest run with charts")?;
        let pairs = |name: &str| -> Vec<(f64, f64)> {
            v.pointer(&format!("/spectrum/{name}"))
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|p| (num(p, "percentile"), num(p, "ms")))
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok(Self {
            samples: series
                .iter()
                .map(|s| Sample {
                    t: num(s, "t"),
                    rate: num(s, "rate"),
                    errors: num(s, "errors"),
                    p50: num(s, "p50"),
                    p99: num(s, "p99"),
                    max: num(s, "max"),
                    e2e_p50: num(s, "e2eP50"),
                    e2e_p99: num(s, "e2eP99"),
                })
                .collect(),
            call: pairs("call"),
            e2e: pairs("endToEnd"),
        })
    }

    fn has_e2e(&self) -> bool {
        !self.e2e.is_empty()
    }
}

/// A line to draw: name, colour, dashed (baseline), points (x, y).
struct Line {
    name: String,
    color: &'static str,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

/// Where a chart's x axis sits: seconds, or percentiles on a log scale.
#[derive(Clone, Copy)]
enum Axis {
    Seconds,
    Percentile,
}

/// x of a percentile on the log scale: log10(1 / (1 - p)), p100 drawn one decade past p99.9999.
fn log_x(percentile: f64) -> f64 {
    let rest = (1.0 - percentile / 100.0).max(1e-7);
    (1.0 / rest).log10()
}

fn chart(id: &str, title: &str, unit: &str, axis: Axis, lines: &[Line]) -> String {
    // The legend sits above the plot, three names a row.
    let top = 14.0 * lines.len().div_ceil(3) as f64 + 16.0;
    let (w, h, left, bottom) = (760.0, 240.0 + top, 70.0, 30.0);
    let x_of = |x: f64| match axis {
        Axis::Seconds => x,
        Axis::Percentile => log_x(x),
    };
    let x_max = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| x_of(p.0)))
        .fold(1.0, f64::max);
    let y_max = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.1;
    let x = |v: f64| left + (w - left - 10.0) * x_of(v) / x_max;
    let y = |v: f64| (h - bottom) - (h - bottom - top) * v / y_max;
    let mut svg = format!(
        "<h2>{title}</h2><svg id='{id}' xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='11' data-unit='{unit}'>\
         <line x1='{left}' y1='{b}' x2='{r}' y2='{b}' stroke='#999'/><line x1='{left}' y1='{top}' x2='{left}' y2='{b}' stroke='#999'/>",
        b = h - bottom,
        r = w - 10.0,
    );
    for i in 0..=4 {
        let v = y_max * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            "<text x='4' y='{:.1}'>{v:.1} {unit}</text>",
            y(v) + 4.0
        );
    }
    match axis {
        Axis::Seconds => {
            let _ = write!(
                svg,
                "<text x='{}' y='{}'>{x_max:.0} s</text>",
                w - 40.0,
                h - 8.0
            );
        }
        Axis::Percentile => {
            for p in [0.0, 90.0, 99.0, 99.9, 99.99, 99.999] {
                let _ = write!(
                    svg,
                    "<text x='{:.1}' y='{}'>p{p}</text>",
                    x(p) - 8.0,
                    h - bottom + 12.0
                );
            }
        }
    }
    for (i, l) in lines.iter().enumerate() {
        let points: Vec<String> = l
            .points
            .iter()
            .map(|&(px, py)| format!("{:.1},{:.1}", x(px), y(py)))
            .collect();
        let values: Vec<String> = l.points.iter().map(|p| format!("{:.3}", p.1)).collect();
        let dash = if l.dashed {
            " stroke-dasharray='5,4'"
        } else {
            ""
        };
        let _ = write!(
            svg,
            "<polyline data-series='{name}' data-values='{values}' fill='none' stroke='{color}' stroke-width='1.5'{dash} points='{points}'/>\
             <text x='{tx}' y='{ty}' fill='{color}'>{name}</text>",
            name = l.name,
            values = values.join(" "),
            color = l.color,
            points = points.join(" "),
            tx = left + 10.0 + 220.0 * (i % 3) as f64,
            ty = 14.0 + 14.0 * (i / 3) as f64,
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Lines of a time chart: each of `series` for the run, and dashed for the baseline.
fn over_time(run: &Run, baseline: Option<&Run>, series: &[TimeSeries]) -> Vec<Line> {
    let mut lines = Vec::new();
    for (r, dashed, suffix) in
        std::iter::once((run, false, "")).chain(baseline.map(|b| (b, true, " (baseline)")))
    {
        for (name, color, f) in series {
            lines.push(Line {
                name: format!("{name}{suffix}"),
                color,
                dashed,
                points: r.samples.iter().map(|s| (s.t, f(s))).collect(),
            });
        }
    }
    lines
}

/// The value at a percentile of a spectrum (the first point at or past it).
fn at(spectrum: &[(f64, f64)], percentile: f64) -> Option<f64> {
    spectrum
        .iter()
        .find(|(p, _)| *p >= percentile)
        .map(|(_, ms)| *ms)
}

fn figures(run: &Run, baseline: Option<&Run>) -> String {
    let mut t = String::from(
        "<h2>Figures</h2><table id='figures' border='1' cellpadding='4'><tr><th>latency (ms)</th>",
    );
    let cols = [50.0, 99.0, 99.9, 99.99];
    for p in cols {
        let _ = write!(t, "<th>p{p}</th>");
    }
    t.push_str("</tr>");
    let mut rows: Vec<(&str, &[(f64, f64)])> = vec![("call", &run.call)];
    if run.has_e2e() {
        rows.push(("report → subscriber", &run.e2e));
    }
    if let Some(b) = baseline {
        rows.push(("call (baseline)", &b.call));
        if b.has_e2e() {
            rows.push(("report → subscriber (baseline)", &b.e2e));
        }
    }
    for (name, spectrum) in rows {
        let _ = write!(t, "<tr data-row='{name}'><td>{name}</td>");
        for p in cols {
            match at(spectrum, p) {
                Some(v) => {
                    let _ = write!(
                        t,
                        "<td data-percentile='{p}' data-value='{v:.3}'>{v:.2}</td>"
                    );
                }
                None => t.push_str("<td></td>"),
            }
        }
        t.push_str("</tr>");
    }
    t.push_str("</table>");
    t
}

/// The page.
pub fn page(title: &str, run: &Run, baseline: Option<&Run>, summary: &str) -> String {
    let escaped = summary.replace('&', "&amp;").replace('<', "&lt;");
    let mut body = chart(
        "throughput",
        "Throughput over time",
        "/s",
        Axis::Seconds,
        &over_time(
            run,
            baseline,
            &[
                ("completed/s", "#1f77b4", |s| s.rate),
                ("errors/s", "#d62728", |s| s.errors),
            ],
        ),
    );
    body += &chart(
        "call-latency",
        "Call latency over time",
        "ms",
        Axis::Seconds,
        &over_time(
            run,
            baseline,
            &[
                ("p50", "#2ca02c", |s| s.p50),
                ("p99", "#ff7f0e", |s| s.p99),
                ("max", "#9467bd", |s| s.max),
            ],
        ),
    );
    if run.has_e2e() || baseline.is_some_and(Run::has_e2e) {
        body += &chart(
            "e2e-latency",
            "Report → subscriber latency over time",
            "ms",
            Axis::Seconds,
            &over_time(
                run,
                baseline,
                &[
                    ("e2e p50", "#17becf", |s| s.e2e_p50),
                    ("e2e p99", "#8c564b", |s| s.e2e_p99),
                ],
            ),
        );
    }
    let mut spectra = vec![Line {
        name: "call".into(),
        color: "#ff7f0e",
        dashed: false,
        points: run.call.clone(),
    }];
    if run.has_e2e() {
        spectra.push(Line {
            name: "report → subscriber".into(),
            color: "#8c564b",
            dashed: false,
            points: run.e2e.clone(),
        });
    }
    if let Some(b) = baseline {
        spectra.push(Line {
            name: "call (baseline)".into(),
            color: "#ff7f0e",
            dashed: true,
            points: b.call.clone(),
        });
        if b.has_e2e() {
            spectra.push(Line {
                name: "report → subscriber (baseline)".into(),
                color: "#8c564b",
                dashed: true,
                points: b.e2e.clone(),
            });
        }
    }
    body += &chart(
        "spectrum",
        "Latency by percentile",
        "ms",
        Axis::Percentile,
        &spectra,
    );
    body += &figures(run, baseline);
    format!(
        "<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>\
         <body style='font-family:sans-serif'><h1>{title}</h1>{body}<h2>Summary</h2><pre>{escaped}</pre></body></html>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_reads_back_from_its_json() {
        let run = Run {
            samples: vec![Sample {
                t: 1.0,
                rate: 900.0,
                errors: 0.0,
                p50: 1.5,
                p99: 4.0,
                max: 9.0,
                e2e_p50: 2.0,
                e2e_p99: 6.5,
            }],
            call: vec![(50.0, 1.5), (99.99, 12.0)],
            e2e: vec![(50.0, 2.0)],
        };
        assert_eq!(Run::from_json(&run.to_json()).unwrap(), run);
        assert!(Run::from_json(&json!({"count": 1})).is_err());
    }

    #[test]
    fn percentiles_spread_on_a_log_scale() {
        assert!(log_x(0.0).abs() < 1e-12);
        assert!((log_x(99.0) - 2.0).abs() < 1e-9);
        assert!((log_x(99.99) - 4.0).abs() < 1e-6);
        assert!(log_x(100.0) > log_x(99.9999));
    }
}
