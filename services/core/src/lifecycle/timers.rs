//! What a due SLA timer does: the states each kind takes effect in, its timeline entry, its
//! notice, its flag on the record, and the rest of the case's schedule. Planned here like every
//! other change and applied by the same script: nothing about timers is decided in Lua.
//!
//! A timer fires once: firing takes it off the record's schedule, in the same atomic change as
//! its effects, and a timer that is not on the schedule does nothing.

use super::{Event, EventKind, Notice, NoticeKind, Plan, Record, Status, Timers};
use crate::sla::{Millis, Timer, TimerKind};

/// The states in which a timer kind takes effect.
pub fn applies_in(kind: TimerKind) -> &'static [Status] {
    use Status::*;
    match kind {
        TimerKind::Accept => &[Dispatched, Reopened],
        TimerKind::Verify => &[Resolved],
        TimerKind::Warn(_)
        | TimerKind::Urge
        | TimerKind::Supervise(_)
        | TimerKind::PublicReport => &[Dispatched, Accepted, InProgress, Reopened],
    }
}

/// The actor of the timeline entries timers make.
pub const TIMER_ACTOR: &str = "sla-timer";

/// What a claimed timer comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Firing {
    /// Nothing: it is not in the case's schedule (it fired already, or the schedule was
    /// replaced), or it is not due yet (a deadline moved; the new head is in the timer set).
    Nothing,
    /// It leaves the schedule without effect, because the case is in a state the kind does not
    /// apply in; these timers remain.
    Skip(Vec<Timer>),
    /// It takes effect: the plan, and the time it was due.
    Fire(Box<Plan>, Millis),
}

/// What the timer `kind` for `target` does when it is claimed at `now`.
pub fn fire(rec: &Record, kind: TimerKind, target: &str, now: Millis) -> Firing {
    let Some(at) = rec
        .timers
        .iter()
        .position(|t| t.kind == kind && t.target == target)
    else {
        return Firing::Nothing;
    };
    let due = rec.timers[at].due;
    if due > now {
        return Firing::Nothing;
    }
    let rest: Vec<Timer> = rec
        .timers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != at)
        .map(|(_, t)| t.clone())
        .collect();
    let Some(status) = rec.status.filter(|s| applies_in(kind).contains(s)) else {
        return Firing::Skip(rest);
    };
    let name = kind.name();
    let (event, notice, flag, text): (_, _, Option<(&'static str, String)>, String) = match kind {
        TimerKind::Accept => (
            EventKind::AcceptOverdue,
            NoticeKind::AcceptOverdue,
            Some(("accept_breached", "1".into())),
            "the accept deadline has passed".into(),
        ),
        TimerKind::Warn(pct) => (
            EventKind::Warning,
            NoticeKind::Warning,
            None,
            format!("{pct}% of the time allowed to resolve has passed"),
        ),
        TimerKind::Urge => (
            EventKind::Urged,
            NoticeKind::Urge,
            Some(("resolve_breached", "1".into())),
            "the resolve deadline has passed (催办)".into(),
        ),
        TimerKind::Supervise(level) => (
            EventKind::Supervised,
            NoticeKind::Supervise,
            Some(("supervised", level.to_string())),
            format!("overdue case under supervision, level {level} (督办)"),
        ),
        TimerKind::PublicReport => (
            EventKind::PublicReport,
            NoticeKind::PublicReport,
            Some(("public_report", "1".into())),
            "overdue case reported publicly (通报)".into(),
        ),
        TimerKind::Verify => (
            EventKind::VerifyOverdue,
            NoticeKind::VerifyOverdue,
            None,
            "verification is overdue".into(),
        ),
    };
    let mut p = Plan::new(
        status,
        Event {
            kind: event,
            actor: TIMER_ACTOR.to_owned(),
            actor_kind: "",
            user: String::new(),
            detail: format!("{name}: {text}"),
            department: target.to_owned(),
        },
    );
    // A kind may fire again in one cycle when a deadline moved it (a merge); it is listed once.
    let mut fired = rec.fired.clone();
    if !fired.contains(&name) {
        fired.push(name);
    }
    p.set.push(("fired", fired.join(",")));
    p.set.extend(flag);
    p.timers = Timers::Replace {
        timers: rest,
        fresh: false,
    };
    p.notices.push(Notice {
        department: target.to_owned(),
        kind: notice,
        note: text,
    });
    Firing::Fire(Box::new(p), due)
}
