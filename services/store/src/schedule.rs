//! How a case's SLA schedule is kept in Redis. The record holds the whole schedule in its
//! `timers` field (`<kind>|<department>|<due ms>,...`, earliest first, the kind by its short
//! code; after the first entry the department is left out when it repeats and the due time is
//! `+<ms>` after the one before); the partition's timer
//! set holds only its head, as the member `<incident>|<kind>|<department>` scored by due time.
//! One member per running case, not one per step: firing the head puts the next step there.

use gridroute_core::sla::{Millis, PlannedTimer, Timer, TimerKind};

/// The member of a timer in the timer set: `<incident>|<kind>|<department>`.
pub fn member(incident_id: &str, t: &Timer) -> String {
    let mut out = String::with_capacity(incident_id.len() + t.target.len() + 14);
    write_member(&mut out, incident_id, t.planned());
    out
}

/// Appends the [`member`] of a timer to `out`.
fn write_member(out: &mut String, incident_id: &str, t: PlannedTimer<'_>) {
    // The kind's name ([`TimerKind::name`]) written without the formatting machinery: the
    // router writes one member per incident.
    let mut n = itoa::Buffer::new();
    out.push_str(incident_id);
    out.push('|');
    match t.kind {
        TimerKind::Accept => out.push_str("accept"),
        TimerKind::Warn(pct) => {
            out.push_str("warn");
            out.push_str(n.format(pct));
        }
        TimerKind::Urge => out.push_str("urge"),
        TimerKind::Supervise(level) => {
            out.push_str("supervise");
            out.push_str(n.format(level));
        }
        TimerKind::PublicReport => out.push_str("public"),
        TimerKind::Verify => out.push_str("verify"),
    }
    out.push('|');
    out.push_str(t.target);
}

/// A timer-set member's parts: incident id, kind, department.
pub fn parse_member(member: &str) -> Option<(&str, TimerKind, &str)> {
    let (id, rest) = member.split_once('|')?;
    let (kind, target) = rest.split_once('|')?;
    Some((id, TimerKind::parse(kind)?, target))
}

/// The record's schedule of its pending timers, earliest first. Each entry after the first
/// leaves out a department equal to the one before it and gives its due time as `+<ms>` after
/// the one before it. The sample tables' standard policy has seven steps over two
/// departments: 265 bytes written whole, 128 so (it lives in every running case's record).
pub fn encode(timers: &[Timer]) -> String {
    let mut planned: Vec<PlannedTimer<'_>> = timers.iter().map(Timer::planned).collect();
    sorted_text(&mut planned)
}

/// The [`encode`]d text of `timers`, sorted here by due time (ties in their order). Numbers
/// are written without the formatting machinery: the router writes one schedule per incident,
/// and it was a measurable share of its CPU.
fn sorted_text(timers: &mut [PlannedTimer<'_>]) -> String {
    timers.sort_by_key(|t| t.due);
    let mut text = String::with_capacity(timers.iter().map(|t| t.target.len() + 20).sum());
    write_schedule(&mut text, timers.iter().copied());
    text
}

/// A dispatch's schedule in the forms it is written: the record's `timers` field
/// ([`encode`]) and the head for the timer set (due ms and [`member`]). Built once when the
/// dispatch is planned, from timers that borrow their departments from the table, so that
/// routing an incident allocates no string per timer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    /// The record's `timers` field.
    pub text: String,
    /// The earliest timer, as its due time and timer-set member; `None` without timers.
    pub head: Option<(Millis, String)>,
}

impl Written {
    /// The written forms of `timers` (sorted here by due time, ties in their order) for the
    /// incident `incident_id`.
    pub fn plan(incident_id: &str, timers: &mut [PlannedTimer<'_>]) -> Self {
        let text = sorted_text(timers);
        let head = timers.first().map(|&t| {
            let mut member = String::with_capacity(incident_id.len() + t.target.len() + 14);
            write_member(&mut member, incident_id, t);
            (t.due, member)
        });
        Self { text, head }
    }

    /// The written forms of owned timers (tests, tools).
    pub fn of(incident_id: &str, timers: &[Timer]) -> Self {
        let mut planned: Vec<PlannedTimer<'_>> = timers.iter().map(Timer::planned).collect();
        Self::plan(incident_id, &mut planned)
    }
}

fn write_schedule<'a>(out: &mut String, timers: impl Iterator<Item = PlannedTimer<'a>>) {
    let mut n = itoa::Buffer::new();
    let mut prev: Option<PlannedTimer<'a>> = None;
    for t in timers {
        if prev.is_some() {
            out.push(',');
        }
        match t.kind {
            TimerKind::Accept => out.push('a'),
            TimerKind::Warn(pct) => {
                out.push('w');
                out.push_str(n.format(pct));
            }
            TimerKind::Urge => out.push('u'),
            TimerKind::Supervise(level) => {
                out.push('s');
                out.push_str(n.format(level));
            }
            TimerKind::PublicReport => out.push('p'),
            TimerKind::Verify => out.push('v'),
        }
        out.push('|');
        match prev {
            None => {
                out.push_str(t.target);
                out.push('|');
                out.push_str(n.format(t.due));
            }
            Some(p) => {
                if p.target != t.target {
                    out.push_str(t.target);
                }
                out.push_str("|+");
                out.push_str(n.format(t.due - p.due));
            }
        }
        prev = Some(t);
    }
}

/// Parses [`encode`] (and schedules written before entries were relative: every entry
/// whole); entries that do not parse are skipped.
pub fn decode(text: &str) -> Vec<Timer> {
    let mut out: Vec<Timer> = Vec::new();
    for entry in text.split(',') {
        if let Some(t) = parse_entry(entry, out.last()) {
            out.push(t);
        }
    }
    out
}

/// Whether every step of a stored schedule reads. One that does not was written by a newer
/// release: a replica that fired from the rest, or wrote the rest back, would drop that step.
pub fn readable(text: &str) -> bool {
    text.split(',').filter(|e| !e.is_empty()).count() == decode(text).len()
}

/// One entry of a schedule, `<kind>|<department>|<due ms>`, where an empty department and a
/// due time `+<ms>` are relative to the entry before.
fn parse_entry(entry: &str, prev: Option<&Timer>) -> Option<Timer> {
    let mut it = entry.rsplitn(2, '|');
    let due = it.next()?;
    let due = match (due.strip_prefix('+'), prev) {
        (Some(delta), Some(p)) => p.due.checked_add(delta.parse().ok()?)?,
        (Some(_), None) => return None,
        (None, _) => due.parse().ok()?,
    };
    let (kind, target) = it.next()?.split_once('|')?;
    let target = match (target, prev) {
        ("", Some(p)) => p.target.clone(),
        _ => target.to_owned(),
    };
    Some(Timer {
        due,
        kind: parse_kind(kind)?,
        target,
    })
}

/// A kind as the schedule writes it (`a`, `w50`, `u`, `s1`, `p`, `v`), or by its full name
/// (schedules written before the short codes).
fn parse_kind(text: &str) -> Option<TimerKind> {
    let number = |rest: &str| rest.parse::<u8>().ok();
    match text {
        "a" => Some(TimerKind::Accept),
        "u" => Some(TimerKind::Urge),
        "p" => Some(TimerKind::PublicReport),
        "v" => Some(TimerKind::Verify),
        t => match (t.strip_prefix('w'), t.strip_prefix('s')) {
            (Some(pct), _) if number(pct).is_some() => number(pct).map(TimerKind::Warn),
            (_, Some(level)) if number(level).is_some() => number(level).map(TimerKind::Supervise),
            _ => TimerKind::parse(t),
        },
    }
}

/// The earliest timer of a schedule: the one in the timer set.
pub fn head(timers: &[Timer]) -> Option<&Timer> {
    timers.iter().min_by_key(|t| t.due)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_survives_its_encoding_and_departments_may_hold_bars() {
        let timers = vec![
            Timer {
                due: 20,
                kind: TimerKind::Urge,
                target: "water|affairs".into(),
            },
            Timer {
                due: 10,
                kind: TimerKind::Warn(50),
                target: "water".into(),
            },
        ];
        let text = encode(&timers);
        assert_eq!(text, "w50|water|10,u|water|affairs|+10");
        // As the router writes it: planned timers, sorted once, with the head's member.
        let written = Written::of("inc-1", &timers);
        assert_eq!(written.text, text);
        assert_eq!(written.head, Some((10, member("inc-1", &timers[1]))));
        assert_eq!(Written::of("inc-1", &[]), Written::default());
        let back = decode(&text);
        assert_eq!(back, [timers[1].clone(), timers[0].clone()]);
        assert_eq!(head(&timers), Some(&timers[1]));
        let m = member("inc-1", &timers[0]);
        assert_eq!(
            parse_member(&m),
            Some(("inc-1", TimerKind::Urge, "water|affairs"))
        );
        assert!(decode("").is_empty());
        assert!(readable("") && readable(&text));
        // A step a newer release may write: this one leaves the whole schedule alone.
        assert!(!readable("w50|water|10,z9||+10"));
        assert!(!readable("urge||+10"));
        // A relative entry with nothing before it does not parse.
        assert!(decode("urge||+10").is_empty());
        assert!(parse_member("nonsense").is_none());
    }

    #[test]
    fn kinds_are_short_codes_and_repeats_relative_and_old_schedules_still_read() {
        let t = |due, kind, target: &str| Timer {
            due,
            kind,
            target: target.into(),
        };
        let timers = vec![
            t(1_796_604_538_000, TimerKind::Accept, "urban-management"),
            t(1_796_609_038_000, TimerKind::Warn(50), "urban-management"),
            t(1_796_636_938_000, TimerKind::Urge, "urban-management"),
            t(1_796_698_588_000, TimerKind::Supervise(1), "command-centre"),
            t(1_796_717_038_000, TimerKind::Supervise(2), "command-centre"),
        ];
        let text = encode(&timers);
        assert_eq!(
            text,
            "a|urban-management|1796604538000,w50||+4500000,u||+27900000,\
             s1|command-centre|+61650000,s2||+18450000"
        );
        assert_eq!(decode(&text), timers);
        // As written before the short codes: kinds by their full names.
        let named = "accept|urban-management|1796604538000,warn50||+4500000,urge||+27900000,\
                     supervise1|command-centre|+61650000,supervise2||+18450000";
        assert_eq!(decode(named), timers);
        // As written before entries were relative: every entry whole.
        let whole = "accept|urban-management|1796604538000,warn50|urban-management|1796609038000,\
                     urge|urban-management|1796636938000,supervise1|command-centre|1796698588000,\
                     supervise2|command-centre|1796717038000";
        assert_eq!(decode(whole), timers);
    }

    /// A member names its kind as `TimerKind::name` does, for every kind (the firing script
    /// and `parse_member` read that name).
    #[test]
    fn members_name_their_kind_as_the_core_does() {
        let kinds = (0..=255u8)
            .flat_map(|n| [TimerKind::Warn(n), TimerKind::Supervise(n)])
            .chain([
                TimerKind::Accept,
                TimerKind::Urge,
                TimerKind::PublicReport,
                TimerKind::Verify,
            ]);
        for kind in kinds {
            let t = Timer {
                due: 1,
                kind,
                target: "water".into(),
            };
            let m = member("01J-3", &t);
            assert_eq!(m, format!("01J-3|{}|water", kind.name()));
            assert_eq!(parse_member(&m), Some(("01J-3", kind, "water")));
        }
    }
}
