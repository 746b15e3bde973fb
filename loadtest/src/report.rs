//! The summary: text for people, JSON with the fields ghz users know, and `--fail-if`
//! thresholds for release pipelines.

use std::{collections::BTreeMap, sync::atomic::Ordering, time::Duration};

use hdrhistogram::Histogram;
use serde_json::json;

use crate::Shared;

/// Lifecycle scenario: accept, resolve and dispatch → resolved latencies, and errors.
type Lifecycle = (Histogram<u64>, Histogram<u64>, Histogram<u64>, u64);

/// What one run measured.
#[derive(Debug)]
pub struct Summary {
    count: u64,
    ok: u64,
    total: Duration,
    codes: BTreeMap<String, u64>,
    latency: Histogram<u64>,
    e2e: Option<(Histogram<u64>, u64, u64)>,
    /// accept, resolve, dispatch → resolved, errors.
    lifecycle: Option<Lifecycle>,
    /// Open loop: how late calls started against the schedule (the load generator's own delay).
    send_delay: Option<Histogram<u64>>,
}

const QUANTILES: [(&str, f64); 5] = [
    ("p50", 0.5),
    ("p90", 0.9),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("max", 1.0),
];

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

impl Summary {
    /// Collects the shared counters after a run.
    pub fn collect(
        s: &Shared,
        total: Duration,
        e2e: bool,
        lifecycle: bool,
        open_loop: bool,
    ) -> Self {
        let empty = || Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("valid bounds");
        let received = s.received.load(Ordering::Relaxed);
        Self {
            count: s.sent.load(Ordering::Relaxed),
            ok: s.ok.load(Ordering::Relaxed),
            total,
            codes: s.codes.lock().map(|c| c.clone()).unwrap_or_default(),
            latency: s
                .latency
                .lock()
                .map(|h| h.clone())
                .unwrap_or_else(|_| empty()),
            lifecycle: lifecycle.then(|| {
                let get = |h: &std::sync::Mutex<Histogram<u64>>| {
                    h.lock().map(|h| h.clone()).unwrap_or_else(|_| empty())
                };
                (
                    get(&s.accept),
                    get(&s.resolve),
                    get(&s.full_loop),
                    s.lifecycle_errors.load(Ordering::Relaxed),
                )
            }),
            send_delay: open_loop.then(|| {
                s.send_delay
                    .lock()
                    .map(|h| h.clone())
                    .unwrap_or_else(|_| empty())
            }),
            e2e: e2e.then(|| {
                let lost = s.lost();
                (
                    s.e2e.lock().map(|h| h.clone()).unwrap_or_else(|_| empty()),
                    received,
                    lost,
                )
            }),
        }
    }

    fn rps(&self) -> f64 {
        self.ok as f64 / self.total.as_secs_f64().max(1e-9)
    }

    fn error_rate(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            (self.count - self.ok.min(self.count)) as f64 / self.count as f64
        }
    }

    /// The value of a threshold metric: latencies in ms, rates in reports/s, shares in 0..1.
    fn metric(&self, name: &str) -> Option<f64> {
        let h = &self.latency;
        Some(match name {
            "p50" => ms(h.value_at_quantile(0.5)),
            "p90" => ms(h.value_at_quantile(0.9)),
            "p99" => ms(h.value_at_quantile(0.99)),
            "p999" | "p99.9" => ms(h.value_at_quantile(0.999)),
            "max" => ms(h.max()),
            "avg" | "mean" => h.mean() / 1e6,
            "rps" => self.rps(),
            "error_rate" => self.error_rate(),
            "errors" => (self.count - self.ok.min(self.count)) as f64,
            "lost" => self.e2e.as_ref().map_or(0.0, |e| e.2 as f64),
            "e2e_p99" => ms(self.e2e.as_ref()?.0.value_at_quantile(0.99)),
            "e2e_p999" => ms(self.e2e.as_ref()?.0.value_at_quantile(0.999)),
            "lifecycle_errors" => self.lifecycle.as_ref().map_or(0.0, |l| l.3 as f64),
            "resolve_p99" => ms(self.lifecycle.as_ref()?.1.value_at_quantile(0.99)),
            "send_delay_p99" => ms(self.send_delay.as_ref()?.value_at_quantile(0.99)),
            _ => return None,
        })
    }

    /// A summary for people.
    pub fn text(&self) -> String {
        let mut out = format!(
            "\nSummary\n  reports:    {} sent, {} ok, {:.3} % errors\n  duration:   {:.2} s\n  throughput: {:.0} reports/s\n  latency:   ",
            self.count,
            self.ok,
            self.error_rate() * 100.0,
            self.total.as_secs_f64(),
            self.rps()
        );
        for (name, q) in QUANTILES {
            out.push_str(&format!(
                " {name} {:.3} ms",
                ms(self.latency.value_at_quantile(q))
            ));
        }
        out.push_str("\n  status codes:");
        for (code, n) in &self.codes {
            out.push_str(&format!(" {code}={n}"));
        }
        if let Some((h, received, lost)) = &self.e2e {
            out.push_str(&format!(
                "\n  report → dispatch: {received} received, {lost} lost (not arrived within --drain);"
            ));
            for (name, q) in QUANTILES {
                out.push_str(&format!(" {name} {:.3} ms", ms(h.value_at_quantile(q))));
            }
        }
        if let Some(h) = &self.send_delay {
            out.push_str("\n  send delay: ");
            for (name, q) in QUANTILES {
                out.push_str(&format!(" {name} {:.3} ms", ms(h.value_at_quantile(q))));
            }
            out.push_str(" (how late calls started against the open-loop schedule: the load generator's own delay, part of every latency above)");
        }
        if let Some((a, r, l, errors)) = &self.lifecycle {
            for (name, h) in [("accept", a), ("resolve", r), ("dispatch → resolved", l)] {
                out.push_str(&format!("\n  {name}: {} done;", h.len()));
                for (q_name, q) in QUANTILES {
                    out.push_str(&format!(" {q_name} {:.3} ms", ms(h.value_at_quantile(q))));
                }
            }
            out.push_str(&format!("\n  lifecycle errors: {errors}"));
        }
        out.push('\n');
        out
    }

    /// A JSON summary with ghz's field names (durations in nanoseconds).
    /// The percentile spectra of call latency and (with subscribers) report → subscriber
    /// latency, in ms, at [`crate::html::SPECTRUM`].
    pub fn spectra(&self) -> (crate::html::Spectrum, crate::html::Spectrum) {
        let spectrum = |h: &Histogram<u64>| {
            if h.is_empty() {
                return Vec::new();
            }
            crate::html::SPECTRUM
                .iter()
                .map(|p| (*p, ms(h.value_at_quantile(p / 100.0))))
                .collect()
        };
        (
            spectrum(&self.latency),
            self.e2e
                .as_ref()
                .map(|(h, _, _)| spectrum(h))
                .unwrap_or_default(),
        )
    }

    pub fn json(&self) -> serde_json::Value {
        let dist = |h: &Histogram<u64>| {
            [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9]
                .iter()
                .map(|p| json!({"percentage": p, "latency": h.value_at_quantile(p / 100.0)}))
                .collect::<Vec<_>>()
        };
        let mut v = json!({
            "count": self.count,
            "total": self.total.as_nanos() as u64,
            "average": self.latency.mean() as u64,
            "fastest": self.latency.min(),
            "slowest": self.latency.max(),
            "rps": self.rps(),
            "errorRate": self.error_rate(),
            "latencyDistribution": dist(&self.latency),
            "statusCodeDistribution": self.codes,
        });
        if let Some((a, r, l, errors)) = &self.lifecycle {
            v["lifecycle"] = json!({
                "accept": {"count": a.len(), "latencyDistribution": dist(a)},
                "resolve": {"count": r.len(), "latencyDistribution": dist(r)},
                "dispatchToResolved": {"count": l.len(), "latencyDistribution": dist(l)},
                "errors": errors,
            });
        }
        if let Some(h) = &self.send_delay {
            v["sendDelay"] = json!({"latencyDistribution": dist(h), "slowest": h.max()});
        }
        if let Some((h, received, lost)) = &self.e2e {
            v["endToEnd"] = json!({"received": received, "lost": lost, "latencyDistribution": dist(h), "slowest": h.max()});
        }
        v
    }
}

/// One `--fail-if` condition.
#[derive(Debug, Clone)]
pub struct Threshold {
    metric: String,
    greater: bool,
    value: f64,
    text: String,
}

/// Parses `p99>5ms,error_rate>0.1%,rps<40000,lost>0`.
pub fn parse_thresholds(text: &str) -> Result<Vec<Threshold>, String> {
    text.split(',')
        .filter(|t| !t.trim().is_empty())
        .map(|t| {
            let t = t.trim();
            let (pos, greater) = match (t.find('>'), t.find('<')) {
                (Some(p), None) => (p, true),
                (None, Some(p)) => (p, false),
                _ => {
                    return Err(format!(
                        "--fail-if {t:?}: write metric>value or metric<value"
                    ));
                }
            };
            let metric = t[..pos].trim().to_owned();
            let raw = t[pos + 1..].trim();
            let (num, scale) = if let Some(n) = raw.strip_suffix("ms") {
                (n, 1.0)
            } else if let Some(n) = raw.strip_suffix("us") {
                (n, 1e-3)
            } else if let Some(n) = raw.strip_suffix('s') {
                (n, 1e3)
            } else if let Some(n) = raw.strip_suffix('%') {
                (n, 0.01)
            } else {
                (raw, 1.0)
            };
            let value = num
                .parse::<f64>()
                .map_err(|_| format!("--fail-if {t:?}: {raw:?} is not a number"))?
                * scale;
            Ok(Threshold {
                metric,
                greater,
                value,
                text: t.to_owned(),
            })
        })
        .collect()
}

/// The thresholds crossed (an unknown metric counts as crossed, so that typos fail loudly).
pub fn check(s: &Summary, thresholds: &[Threshold]) -> Vec<String> {
    thresholds
        .iter()
        .filter_map(|t| match s.metric(&t.metric) {
            None => Some(format!("{} (unknown metric)", t.text)),
            Some(v) if (t.greater && v > t.value) || (!t.greater && v < t.value) => {
                Some(format!("{} (measured {v:.4})", t.text))
            }
            Some(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::Summary;
    use crate::Shared;

    /// An open-loop run reports how late its calls started (text, JSON and `--fail-if`); a
    /// closed-loop run, whose calls have no schedule, does not.
    #[test]
    fn open_loop_runs_report_their_send_delay() {
        let s = Shared::new();
        for late_ms in [1, 2, 40] {
            let due = Instant::now() - Duration::from_millis(late_ms);
            if let Ok(mut h) = s.send_delay.lock() {
                h.saturating_record(due.elapsed().as_nanos() as u64);
            }
        }
        let open = Summary::collect(&s, Duration::from_secs(1), false, false, true);
        let slowest = open.json()["sendDelay"]["slowest"].as_u64().unwrap_or(0);
        assert!((40_000_000..41_000_000).contains(&slowest), "{slowest}");
        assert!(open.text().contains("send delay:"));
        let p99 = open.metric("send_delay_p99").unwrap_or(0.0);
        assert!((39.9..41.0).contains(&p99), "{p99}");
        let closed = Summary::collect(&s, Duration::from_secs(1), false, false, false);
        assert!(closed.json().get("sendDelay").is_none());
        assert!(!closed.text().contains("send delay"));
        assert!(closed.metric("send_delay_p99").is_none());
    }
}
