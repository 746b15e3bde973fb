//! How a case's SLA schedule is kept in Redis. The record holds the whole schedule in its
//! `timers` field (`<kind>|<department>|<due ms>,...`, earliest first); the partition's timer
//! set holds only its head, as the member `<incident>|<kind>|<department>` scored by due time.
//! One member per running case, not one per step: firing the head puts the next step there.

use gridroute_core::sla::{Timer, TimerKind};

/// The member of a timer in the timer set: `<incident>|<kind>|<department>`.
pub fn member(incident_id: &str, t: &Timer) -> String {
    format!("{incident_id}|{}|{}", t.kind, t.target)
}

/// A timer-set member's parts: incident id, kind, department.
pub fn parse_member(member: &str) -> Option<(&str, TimerKind, &str)> {
    let (id, rest) = member.split_once('|')?;
    let (kind, target) = rest.split_once('|')?;
    Some((id, TimerKind::parse(kind)?, target))
}

/// The record's schedule of its pending timers, earliest first.
pub fn encode(timers: &[Timer]) -> String {
    use std::fmt::Write;
    let mut sorted: Vec<&Timer> = timers.iter().collect();
    sorted.sort_by_key(|t| t.due);
    // One buffer for the whole schedule: the router writes one per incident, and a string per
    // entry joined afterwards was a measurable share of its CPU.
    let mut out = String::with_capacity(timers.iter().map(|t| t.target.len() + 28).sum());
    for (i, t) in sorted.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{}|{}|{}", t.kind, t.target, t.due);
    }
    out
}

/// Parses [`encode`]; entries that do not parse are skipped.
pub fn decode(text: &str) -> Vec<Timer> {
    text.split(',').filter_map(parse_entry).collect()
}

/// One entry of a schedule, `<kind>|<department>|<due ms>`.
fn parse_entry(entry: &str) -> Option<Timer> {
    let mut it = entry.rsplitn(2, '|');
    let due = it.next()?.parse().ok()?;
    let (kind, target) = it.next()?.split_once('|')?;
    Some(Timer {
        due,
        kind: TimerKind::parse(kind)?,
        target: target.to_owned(),
    })
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
        assert_eq!(text, "warn50|water|10,urge|water|affairs|20");
        let back = decode(&text);
        assert_eq!(back, [timers[1].clone(), timers[0].clone()]);
        assert_eq!(head(&timers), Some(&timers[1]));
        let m = member("inc-1", &timers[0]);
        assert_eq!(
            parse_member(&m),
            Some(("inc-1", TimerKind::Urge, "water|affairs"))
        );
        assert!(decode("").is_empty());
        assert!(parse_member("nonsense").is_none());
    }
}
