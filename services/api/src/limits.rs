//! Abuse limits per principal, per API replica: a token bucket on calls (RESOURCE_EXHAUSTED
//! with a `google.rpc.RetryInfo` saying when to come back) and a cap on open streams
//! (Subscribe, WatchIncidents). Limits are per replica: with N replicas behind a balancer a
//! principal gets up to N times the rate, which is what capacity planning wants anyway.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use dashmap::DashMap;
use gridroute_core::access::{Kind, Principal};

/// A token bucket's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Calls per second, sustained.
    pub per_second: f64,
    /// Calls allowed at once after a quiet spell.
    pub burst: f64,
}

/// The limits of a deployment.
#[derive(Debug, Clone)]
pub struct LimitConfig {
    /// Call rate per principal, by kind.
    pub rates: HashMap<Kind, Rate>,
    /// Most streams open at once per principal.
    pub streams_per_principal: usize,
}

impl Default for LimitConfig {
    /// Defaults sized for a city: reporting systems batch thousands of reports a second, a
    /// department's client makes a few calls a second, people even fewer.
    fn default() -> Self {
        let r = |per_second: f64, burst: f64| Rate { per_second, burst };
        Self {
            rates: HashMap::from([
                (Kind::SourceSystem, r(20_000.0, 40_000.0)),
                (Kind::Department, r(200.0, 400.0)),
                (Kind::CommandCentre, r(200.0, 400.0)),
                (Kind::GridWorker, r(20.0, 40.0)),
                (Kind::TableAdmin, r(10.0, 20.0)),
                (Kind::Auditor, r(50.0, 100.0)),
            ]),
            streams_per_principal: 16,
        }
    }
}

impl LimitConfig {
    /// Parses `kind=rate:burst,…` over the defaults (e.g. `department=50:100,auditor=5:10`).
    pub fn with_rates(mut self, text: &str) -> Result<Self, String> {
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (kind, spec) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected kind=rate:burst"))?;
            let kind = Kind::parse(kind.trim()).ok_or_else(|| format!("{kind:?}: unknown kind"))?;
            let (rate, burst) = spec.split_once(':').unwrap_or((spec, spec));
            let num = |s: &str| {
                s.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v > 0.0)
            };
            let (Some(per_second), Some(burst)) = (num(rate), num(burst)) else {
                return Err(format!("{part:?}: rate and burst must be positive numbers"));
            };
            self.rates.insert(kind, Rate { per_second, burst });
        }
        Ok(self)
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Most principals whose buckets are remembered; past it the oldest-idle state is simply
/// dropped (a principal then starts with a full bucket), so memory stays bounded.
const MAX_BUCKETS: usize = 100_000;

/// The limiter shared by every call of a replica. Buckets are kept per kind, keyed by the
/// principal's id, so that a call looks its bucket up without building a key.
#[derive(Debug, Clone)]
pub struct Limits {
    config: Arc<LimitConfig>,
    buckets: Arc<[DashMap<String, Bucket>; Kind::ALL.len()]>,
    streams: Arc<DashMap<String, usize>>,
}

impl Limits {
    /// Limits with `config`.
    pub fn new(config: LimitConfig) -> Self {
        Self {
            config: Arc::new(config),
            buckets: Arc::new(std::array::from_fn(|_| DashMap::new())),
            streams: Arc::new(DashMap::new()),
        }
    }

    /// Takes `n` calls' worth from the principal's bucket, or says how long until they are
    /// there.
    pub fn take(&self, p: &Principal, n: f64) -> Result<(), Duration> {
        let Some(rate) = self.config.rates.get(&p.kind).copied() else {
            return Ok(());
        };
        let now = Instant::now();
        let buckets = &self.buckets[Kind::ALL.iter().position(|k| *k == p.kind).unwrap_or(0)];
        let mut b = match buckets.get_mut(p.id.as_str()) {
            Some(b) => b,
            None => {
                if buckets.len() >= MAX_BUCKETS {
                    buckets.retain(|_, b| now.duration_since(b.at) < Duration::from_secs(1));
                }
                buckets.entry(p.id.clone()).or_insert(Bucket {
                    tokens: rate.burst,
                    at: now,
                })
            }
        };
        let refill = now.duration_since(b.at).as_secs_f64() * rate.per_second;
        b.tokens = (b.tokens + refill).min(rate.burst);
        b.at = now;
        if b.tokens >= n {
            b.tokens -= n;
            Ok(())
        } else {
            let missing = n - b.tokens;
            Err(Duration::from_secs_f64(
                (missing / rate.per_second).clamp(0.001, 3600.0),
            ))
        }
    }

    /// A place for one more open stream of this principal, held until the guard drops.
    pub fn open_stream(&self, p: &Principal) -> Option<StreamGuard> {
        let key = p.label();
        let mut n = self.streams.entry(key.clone()).or_insert(0);
        if *n >= self.config.streams_per_principal {
            return None;
        }
        *n += 1;
        Some(StreamGuard {
            streams: self.streams.clone(),
            key,
        })
    }

    /// The most streams a principal may hold open.
    pub fn streams_per_principal(&self) -> usize {
        self.config.streams_per_principal
    }
}

/// One open stream of a principal; dropping it frees the place.
#[derive(Debug)]
pub struct StreamGuard {
    streams: Arc<DashMap<String, usize>>,
    key: String,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if let Some(mut n) = self.streams.get_mut(&self.key) {
            *n = n.saturating_sub(1);
        }
        self.streams.remove_if(&self.key, |_, n| *n == 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill_and_streams_are_capped() {
        let limits = Limits::new(LimitConfig {
            rates: HashMap::from([(
                Kind::Department,
                Rate {
                    per_second: 1.0,
                    burst: 2.0,
                },
            )]),
            streams_per_principal: 1,
        });
        let p = Principal::new(Kind::Department, "water-affairs");
        assert!(limits.take(&p, 1.0).is_ok());
        assert!(limits.take(&p, 1.0).is_ok());
        let wait = limits.take(&p, 1.0).expect_err("the burst is spent");
        assert!(wait > Duration::from_millis(500) && wait <= Duration::from_secs(1));
        // Another principal has its own bucket; kinds without a rate are unlimited.
        assert!(
            limits
                .take(&Principal::new(Kind::Department, "other"), 1.0)
                .is_ok()
        );
        assert!(limits.take(&Principal::new(Kind::Auditor, ""), 1e9).is_ok());
        let g = limits.open_stream(&p).expect("first stream");
        assert!(limits.open_stream(&p).is_none());
        drop(g);
        assert!(limits.open_stream(&p).is_some());
    }

    #[test]
    fn rates_parse_over_the_defaults() {
        let c = LimitConfig::default()
            .with_rates("department=5:10, auditor=1")
            .expect("valid");
        assert_eq!(
            c.rates[&Kind::Department],
            Rate {
                per_second: 5.0,
                burst: 10.0
            }
        );
        assert_eq!(c.rates[&Kind::Auditor].burst, 1.0);
        assert!(LimitConfig::default().with_rates("wizard=1:1").is_err());
        assert!(
            LimitConfig::default()
                .with_rates("department=-1:1")
                .is_err()
        );
    }
}
