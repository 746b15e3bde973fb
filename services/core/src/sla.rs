//! SLA policies: how long a department has to accept and to resolve an incident, counted in
//! working time on the table's calendar or in wall-clock time.
//!
//! Spans are written with a unit: `wd` working days, `wh` working hours, `wm` working minutes
//! (decimals allowed: `1.5wd`), or wall-clock `d`, `h`, `m`, `s` (combinable: `1h30m`), for
//! urgent cases that run day and night. One working day is the calendar's working time per day
//! (7 h with the default 08:30-12:00 and 14:30-18:00). The resolve clock starts at dispatch, not
//! at accept, so delaying acceptance gains nothing.

use crate::calendar::WorkCalendar;

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// How a span is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// Every millisecond counts.
    Wall,
    /// Only working time on the calendar counts.
    Working,
}

/// A time allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Length in milliseconds (of working time for [`Clock::Working`]).
    pub ms: i64,
    /// How it is counted.
    pub clock: Clock,
}

impl Span {
    /// The instant at which the span has elapsed after `start`.
    pub fn after(&self, cal: &WorkCalendar, start: Millis) -> Millis {
        match self.clock {
            Clock::Wall => start.saturating_add(self.ms),
            Clock::Working => cal.add_working(start, self.ms),
        }
    }
}

/// One SLA policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlaPolicy {
    /// Its name, as rules refer to it.
    pub name: String,
    /// Time allowed from dispatch to accept.
    pub accept: Span,
    /// Time allowed from dispatch to resolve.
    pub resolve: Span,
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
    pub fn deadlines(&self, cal: &WorkCalendar, dispatched_at: Millis) -> Deadlines {
        Deadlines {
            accept_by: self.accept.after(cal, dispatched_at),
            resolve_by: self.resolve.after(cal, dispatched_at),
        }
    }
}

/// Parses a span (`1.5wd`, `4wh`, `30wm`, `4h`, `1h30m`, `2d`) given the working time of one
/// working day in ms.
pub fn parse_span(text: &str, working_day_ms: i64) -> Option<Span> {
    let t = text.trim();
    for (suffix, unit) in [
        ("wd", working_day_ms as f64),
        ("wh", 3_600_000.0),
        ("wm", 60_000.0),
    ] {
        if let Some(n) = t.strip_suffix(suffix) {
            let v: f64 = n.trim().parse().ok()?;
            let ms = (v * unit).round();
            return (v.is_finite() && (1.0..1e15).contains(&ms)).then_some(Span {
                ms: ms as i64,
                clock: Clock::Working,
            });
        }
    }
    parse_duration(t).map(|ms| Span {
        ms,
        clock: Clock::Wall,
    })
}

/// Parses a wall-clock duration: `30m`, `4h`, `1h30m`, `2d`, `45s`, into milliseconds.
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
    fn spans() {
        let wd = 7 * 3_600_000;
        assert_eq!(
            parse_span("30m", wd),
            Some(Span {
                ms: 1_800_000,
                clock: Clock::Wall
            })
        );
        assert_eq!(
            parse_span("1h30m", wd),
            Some(Span {
                ms: 5_400_000,
                clock: Clock::Wall
            })
        );
        assert_eq!(
            parse_span("2d", wd),
            Some(Span {
                ms: 172_800_000,
                clock: Clock::Wall
            })
        );
        assert_eq!(
            parse_span("1.5wd", wd),
            Some(Span {
                ms: wd * 3 / 2,
                clock: Clock::Working
            })
        );
        assert_eq!(
            parse_span("4wh", wd),
            Some(Span {
                ms: 4 * 3_600_000,
                clock: Clock::Working
            })
        );
        assert_eq!(
            parse_span("90wm", wd),
            Some(Span {
                ms: 5_400_000,
                clock: Clock::Working
            })
        );
        for bad in [
            "", "30", "h", "3x", "0m", "-1h", "0wd", "-1wd", "xwd", "infwd",
        ] {
            assert_eq!(parse_span(bad, wd), None, "{bad}");
        }
    }

    #[test]
    fn resolve_clock_starts_at_dispatch() {
        let cal = WorkCalendar::cn_default();
        let p = SlaPolicy {
            name: "s".into(),
            accept: Span {
                ms: 10,
                clock: Clock::Wall,
            },
            resolve: Span {
                ms: 100,
                clock: Clock::Wall,
            },
        };
        assert_eq!(
            p.deadlines(&cal, 1000),
            Deadlines {
                accept_by: 1010,
                resolve_by: 1100
            }
        );
    }
}
