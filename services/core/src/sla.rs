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
    /// Time allowed from resolve to verification.
    pub verify: Span,
    /// Warnings to the department at these percentages of the time allowed to resolve.
    pub warn_at: Vec<u8>,
    /// What happens after the resolve deadline passes, in order.
    pub escalation: Vec<EscalationStep>,
}

/// One step of an escalation chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EscalationStep {
    /// What the step does.
    pub kind: StepKind,
    /// How long after the resolve deadline it fires.
    pub after: After,
}

/// What an escalation step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// 催办: the department is urged to act.
    Urge,
    /// 督办: the command centre one level further up the region tree supervises the case.
    Supervise,
    /// 通报: the case is reported publicly (to the top command centre and the events stream).
    PublicReport,
}

impl StepKind {
    /// Parses the name used in `rules.yaml`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "urge" => Some(Self::Urge),
            "supervise" => Some(Self::Supervise),
            "public_report" => Some(Self::PublicReport),
            _ => None,
        }
    }
}

/// When an escalation step fires, counted from the resolve deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// At the deadline itself.
    Zero,
    /// A span after the deadline.
    Span(Span),
    /// A percentage of the time allowed to resolve, counted on the policy's resolve clock.
    Percent(u32),
}

impl After {
    /// Parses `0`, a span (`4wh`, `2h`) or a percentage of the resolve allowance (`50%`).
    pub fn parse(text: &str, working_day_ms: i64) -> Option<Self> {
        let t = text.trim();
        if t == "0" || t == "0%" {
            return Some(Self::Zero);
        }
        if let Some(p) = t.strip_suffix('%') {
            return p
                .trim()
                .parse()
                .ok()
                .filter(|&p| p > 0 && p <= 10_000)
                .map(Self::Percent);
        }
        parse_span(t, working_day_ms).map(Self::Span)
    }
}

/// The escalation chain used when a policy names none: urge at the deadline, supervision one
/// level up after a further 25 % of the allowance, the next level after 50 %, and a public
/// report after 100 %.
pub const DEFAULT_ESCALATION: [EscalationStep; 4] = [
    EscalationStep {
        kind: StepKind::Urge,
        after: After::Zero,
    },
    EscalationStep {
        kind: StepKind::Supervise,
        after: After::Percent(25),
    },
    EscalationStep {
        kind: StepKind::Supervise,
        after: After::Percent(50),
    },
    EscalationStep {
        kind: StepKind::PublicReport,
        after: After::Percent(100),
    },
];

/// Default warning thresholds, in percent of the time allowed to resolve.
pub const DEFAULT_WARN_AT: [u8; 2] = [50, 80];

/// What a pending timer does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimerKind {
    /// The accept deadline passed: the department is urged to accept.
    Accept,
    /// A warning at this percentage of the resolve allowance.
    Warn(u8),
    /// The resolve deadline passed (urge).
    Urge,
    /// Supervision at this level up the tree (1 = the nearest command centre above).
    Supervise(u8),
    /// Public report.
    PublicReport,
    /// Verification is overdue.
    Verify,
}

/// The kind's name, as in the record's schedule and the timer set (`warn50`, `supervise2`),
/// written without an allocation of its own.
impl std::fmt::Display for TimerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Accept => f.write_str("accept"),
            Self::Warn(p) => write!(f, "warn{p}"),
            Self::Urge => f.write_str("urge"),
            Self::Supervise(l) => write!(f, "supervise{l}"),
            Self::PublicReport => f.write_str("public"),
            Self::Verify => f.write_str("verify"),
        }
    }
}

impl TimerKind {
    /// The name stored in the timer's member (`<id>|<kind>|<department>`); the firing script
    /// keys its behaviour on the prefix before the digits.
    pub fn name(self) -> String {
        self.to_string()
    }

    /// Parses [`TimerKind::name`].
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "accept" => Some(Self::Accept),
            "urge" => Some(Self::Urge),
            "public" => Some(Self::PublicReport),
            "verify" => Some(Self::Verify),
            t => {
                if let Some(p) = t.strip_prefix("warn") {
                    p.parse().ok().map(Self::Warn)
                } else {
                    t.strip_prefix("supervise")?
                        .parse()
                        .ok()
                        .map(Self::Supervise)
                }
            }
        }
    }
}

/// One pending timer: when, what, and for which department (by id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer {
    /// When it fires (ms).
    pub due: Millis,
    /// What it does.
    pub kind: TimerKind,
    /// The department it notifies.
    pub target: String,
}

/// A timer as planned, its department borrowed from the table ([`SlaPolicy::plan`]): for a
/// caller that only writes the schedule out (the router, once per incident), without a string
/// per timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedTimer<'a> {
    /// When it fires (ms).
    pub due: Millis,
    /// What it does.
    pub kind: TimerKind,
    /// The department it notifies.
    pub target: &'a str,
}

impl PlannedTimer<'_> {
    /// The owned timer.
    pub fn to_timer(self) -> Timer {
        Timer {
            due: self.due,
            kind: self.kind,
            target: self.target.to_owned(),
        }
    }
}

impl Timer {
    /// The timer as a [`PlannedTimer`] borrowing its department.
    pub fn planned(&self) -> PlannedTimer<'_> {
        PlannedTimer {
            due: self.due,
            kind: self.kind,
            target: &self.target,
        }
    }
}

/// Who escalation reaches, nearest first.
#[derive(Debug, Clone, Default)]
pub struct Escalation<'a> {
    /// The primary department (warnings, urges).
    pub primary: &'a str,
    /// Command centres up the region tree, nearest first (supervision); never empty in a
    /// loaded table: it ends with the default command centre.
    pub supervisors: &'a [String],
    /// Where public reports go (the top command centre).
    pub public: &'a str,
}

impl Span {
    /// `pct` percent of this span, counted from `start` on the span's clock.
    fn percent_after(&self, cal: &WorkCalendar, start: Millis, allowed: i64, pct: u32) -> Millis {
        let part = (i128::from(allowed) * i128::from(pct) / 100) as i64;
        match self.clock {
            Clock::Wall => start.saturating_add(part),
            Clock::Working => cal.add_working(start, part),
        }
    }
}

/// Deadlines of one dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// Accept by.
    pub accept_by: Millis,
    /// Resolve by.
    pub resolve_by: Millis,
}

impl Span {
    /// Whether a deadline `due` counted on this span's clock is an estimate: working time
    /// counted past the last day the calendar's holiday schedule covers.
    pub fn estimated(&self, cal: &WorkCalendar, due: Millis) -> bool {
        self.clock == Clock::Working && !cal.covers(due)
    }
}

impl Deadlines {
    /// Whether either deadline of a dispatch under `policy` is an estimate.
    pub fn estimated(&self, policy: &SlaPolicy, cal: &WorkCalendar) -> bool {
        policy.accept.estimated(cal, self.accept_by)
            || policy.resolve.estimated(cal, self.resolve_by)
    }
}

/// What the timeline says of deadlines counted past the calendar's horizon.
pub fn estimate_note(cal: &WorkCalendar) -> String {
    cal.covered_until().map_or_else(String::new, |d| {
        format!(
            "; deadline estimated: counted past the working calendar's last day ({}) on plain \
             Monday-Friday weeks",
            crate::calendar::format_date(d)
        )
    })
}

impl SlaPolicy {
    /// Deadlines for a dispatch at `dispatched_at`.
    pub fn deadlines(&self, cal: &WorkCalendar, dispatched_at: Millis) -> Deadlines {
        Deadlines {
            accept_by: self.accept.after(cal, dispatched_at),
            resolve_by: self.resolve.after(cal, dispatched_at),
        }
    }

    /// The time allowed between two instants on the resolve clock.
    pub fn allowed(&self, cal: &WorkCalendar, start: Millis, end: Millis) -> i64 {
        match self.resolve.clock {
            Clock::Wall => (end - start).max(0),
            Clock::Working => cal.working_between(start, end),
        }
    }

    /// Every timer of a running case: the accept deadline (when `accept_by` is given), the
    /// warnings between `start` and `resolve_by`, and the escalation chain after `resolve_by`.
    /// Percentages count on the resolve clock, so a deadline moved by an extension or a
    /// suspension moves its warnings and escalations with it.
    pub fn timers(
        &self,
        cal: &WorkCalendar,
        start: Millis,
        accept_by: Option<Millis>,
        resolve_by: Millis,
        to: &Escalation<'_>,
    ) -> Vec<Timer> {
        self.plan(cal, start, accept_by, resolve_by, to)
            .into_iter()
            .map(PlannedTimer::to_timer)
            .collect()
    }

    /// [`SlaPolicy::timers`], each borrowing its department from `to`.
    pub fn plan<'a>(
        &self,
        cal: &WorkCalendar,
        start: Millis,
        accept_by: Option<Millis>,
        resolve_by: Millis,
        to: &Escalation<'a>,
    ) -> Vec<PlannedTimer<'a>> {
        let mut out = Vec::with_capacity(1 + self.warn_at.len() + self.escalation.len());
        if let Some(due) = accept_by {
            out.push(PlannedTimer {
                due,
                kind: TimerKind::Accept,
                target: to.primary,
            });
        }
        let allowed = self.allowed(cal, start, resolve_by);
        for &p in &self.warn_at {
            out.push(PlannedTimer {
                due: self
                    .resolve
                    .percent_after(cal, start, allowed, u32::from(p)),
                kind: TimerKind::Warn(p),
                target: to.primary,
            });
        }
        let full = self.resolve.ms;
        let mut level = 0u8;
        for step in &self.escalation {
            let due = match step.after {
                After::Zero => resolve_by,
                After::Span(s) => s.after(cal, resolve_by),
                After::Percent(p) => self.resolve.percent_after(cal, resolve_by, full, p),
            };
            let (kind, target) = match step.kind {
                StepKind::Urge => (TimerKind::Urge, to.primary),
                StepKind::Supervise => {
                    let i = usize::from(level).min(to.supervisors.len().saturating_sub(1));
                    level = level.saturating_add(1);
                    (
                        TimerKind::Supervise(level),
                        to.supervisors.get(i).map_or(to.public, String::as_str),
                    )
                }
                StepKind::PublicReport => (TimerKind::PublicReport, to.public),
            };
            out.push(PlannedTimer { due, kind, target });
        }
        out
    }
}

/// Longest span anywhere (policies, extensions): a year, `366d` on the wall clock or `366wd`
/// of working time. Longer spans are refused rather than carried into deadline arithmetic.
pub const MAX_SPAN_DAYS: i64 = 366;

/// Parses a span (`1.5wd`, `4wh`, `30wm`, `4h`, `1h30m`, `2d`) given the working time of one
/// working day in ms. `None` for anything else, including spans longer than
/// [`MAX_SPAN_DAYS`].
pub fn parse_span(text: &str, working_day_ms: i64) -> Option<Span> {
    let span = parse_unbounded(text, working_day_ms)?;
    let limit = match span.clock {
        Clock::Working => MAX_SPAN_DAYS.saturating_mul(working_day_ms.max(1)),
        Clock::Wall => MAX_SPAN_DAYS * 86_400_000,
    };
    (span.ms <= limit).then_some(span)
}

fn parse_unbounded(text: &str, working_day_ms: i64) -> Option<Span> {
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
            verify: Span {
                ms: 50,
                clock: Clock::Wall,
            },
            warn_at: DEFAULT_WARN_AT.to_vec(),
            escalation: DEFAULT_ESCALATION.to_vec(),
        };
        assert_eq!(
            p.deadlines(&cal, 1000),
            Deadlines {
                accept_by: 1010,
                resolve_by: 1100
            }
        );
        let sup = ["street".to_owned(), "district".to_owned()];
        let to = Escalation {
            primary: "dept",
            supervisors: &sup,
            public: "district",
        };
        let timers: Vec<(i64, String, String)> = p
            .timers(&cal, 1000, Some(1010), 1100, &to)
            .into_iter()
            .map(|t| (t.due, t.kind.name(), t.target))
            .collect();
        let want = [
            (1010, "accept", "dept"),
            (1050, "warn50", "dept"),
            (1080, "warn80", "dept"),
            (1100, "urge", "dept"),
            (1125, "supervise1", "street"),
            (1150, "supervise2", "district"),
            (1200, "public", "district"),
        ];
        assert_eq!(timers.len(), want.len());
        for (got, (due, kind, target)) in timers.iter().zip(want) {
            assert_eq!((got.0, got.1.as_str(), got.2.as_str()), (due, kind, target));
            assert_eq!(
                TimerKind::parse(kind).map(TimerKind::name).as_deref(),
                Some(kind)
            );
        }
    }
}
