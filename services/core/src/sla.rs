//! SLA policies: how long a department has to accept and to resolve an incident.
//!
//! Durations are wall-clock for now and are written like `30m`, `4h`, `1h30m` or `2d`. The
//! resolve clock starts at dispatch, not at accept, so delaying acceptance gains nothing.

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// One SLA policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlaPolicy {
    /// Its name, as rules refer to it.
    pub name: String,
    /// Time allowed from dispatch to accept, in milliseconds.
    pub accept_ms: i64,
    /// Time allowed from dispatch to resolve, in milliseconds.
    pub resolve_ms: i64,
}

/// Deadlines of one dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// Accept by.
    pub accept_by: Millis,
    /// Resolve by.
    pub resolve_by: Millis,
}

impl SlaPolicy {
    /// Deadlines for a dispatch at `dispatched_at`.
    pub fn deadlines(&self, dispatched_at: Millis) -> Deadlines {
        Deadlines {
            accept_by: dispatched_at + self.accept_ms,
            resolve_by: dispatched_at + self.resolve_ms,
        }
    }
}

/// Parses `30m`, `4h`, `1h30m`, `2d`, `45s` into milliseconds.
pub fn parse_duration(text: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut num: Option<i64> = None;
    for ch in text.trim().chars() {
        if let Some(d) = ch.to_digit(10) {
            num = Some(
                num.unwrap_or(0)
                    .checked_mul(10)?
                    .checked_add(i64::from(d))?,
            );
            continue;
        }
        let unit = match ch {
            'd' => 86_400_000,
            'h' => 3_600_000,
            'm' => 60_000,
            's' => 1_000,
            _ => return None,
        };
        total = total.checked_add(num.take()?.checked_mul(unit)?)?;
    }
    if num.is_some() || total <= 0 {
        None
    } else {
        Some(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30m"), Some(1_800_000));
        assert_eq!(parse_duration("1h30m"), Some(5_400_000));
        assert_eq!(parse_duration("2d"), Some(172_800_000));
        for bad in ["", "30", "h", "3x", "0m", "-1h"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn resolve_clock_starts_at_dispatch() {
        let p = SlaPolicy {
            name: "s".into(),
            accept_ms: 10,
            resolve_ms: 100,
        };
        assert_eq!(
            p.deadlines(1000),
            Deadlines {
                accept_by: 1010,
                resolve_by: 1100
            }
        );
    }
}
