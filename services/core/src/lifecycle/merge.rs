//! A duplicate report merged into an open incident (并案): the case gains it, and keeps the
//! earlier of the two resolve deadlines, with every timer that counts from it.

use super::{Ctx, Event, EventKind, Plan, Record, Refusal, Status, Timers};
use crate::sla::Millis;

/// The states in which an incident takes duplicates.
pub const TAKES_DUPLICATES: [Status; 5] = [
    Status::Dispatched,
    Status::Accepted,
    Status::InProgress,
    Status::Reopened,
    Status::Suspended,
];

/// A report found to duplicate an open incident.
#[derive(Debug, Clone, Copy)]
pub struct Duplicate<'a> {
    /// Its incident id.
    pub id: &'a str,
    /// When it was reported (ms).
    pub reported_at: Millis,
    /// The category's duplicate window (ms): older incidents take no duplicates.
    pub window_ms: i64,
    /// The resolve deadline it would have had on its own.
    pub resolve_by: Millis,
}

/// The merge of `dup` into the incident `rec`: `Ok(None)` when it was merged already, a refusal
/// when the incident takes no duplicates (not open, or older than the window).
pub fn merge(ctx: &Ctx<'_>, rec: &Record, dup: &Duplicate<'_>) -> Result<Option<Plan>, Refusal> {
    let status = rec.status.ok_or(Refusal::WrongState {
        status: "unknown",
        action: "merge",
    })?;
    if !TAKES_DUPLICATES.contains(&status) {
        return Err(Refusal::WrongState {
            status: status.as_str(),
            action: "merge",
        });
    }
    if rec
        .reported_at
        .is_some_and(|r| r < dup.reported_at.saturating_sub(dup.window_ms))
    {
        return Err(Refusal::Precondition(
            "older than the duplicate window".into(),
        ));
    }
    if rec.merged.iter().any(|m| m == dup.id) {
        return Ok(None);
    }
    let mut p = Plan::new(
        status,
        Event {
            kind: EventKind::DuplicateMerged,
            actor: "router".into(),
            actor_kind: "",
            user: String::new(),
            detail: format!("{} merged into this incident", dup.id),
            department: String::new(),
        },
    );
    p.merge = Some(dup.id.to_owned());
    // The case keeps the earlier deadline, and its warnings and escalations move with it (a
    // suspended case has no running clock to move).
    if status != Status::Suspended && rec.resolve_due.is_some_and(|d| dup.resolve_by < d) {
        p.set.push(("resolve_due", dup.resolve_by.to_string()));
        p.timers = Timers::Replace {
            timers: ctx.timers(
                rec,
                &rec.department,
                rec.dispatched_at.unwrap_or(ctx.now),
                rec.accept_due.filter(|_| rec.accepted_at.is_none()),
                dup.resolve_by,
                false,
            ),
            fresh: false,
        };
    }
    super::mark_estimates(ctx, ctx.policy(rec), &mut p);
    Ok(Some(p))
}
