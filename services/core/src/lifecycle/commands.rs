//! One function per command: the plan of what it changes, given that the caller may act and
//! the incident is in a state the command is legal from (the dispatcher in the parent module
//! checked both, and the arguments).

use super::{
    Caller, Ctx, EventKind, Notice, NoticeKind, Pending, Plan, Record, Refusal, Status, Timers,
    base_plan,
};
use crate::sla::{SlaPolicy, Timer, TimerKind, parse_span};

/// Everything a command's plan may need besides its own arguments.
pub(super) struct Act<'a> {
    pub(super) ctx: &'a Ctx<'a>,
    pub(super) rec: &'a Record,
    pub(super) caller: &'a Caller,
    /// The incident's state.
    pub(super) status: Status,
    /// The department the caller acts as ('' for grid workers and systems).
    pub(super) acting: &'a str,
    /// Whether the caller is the incident's primary department.
    pub(super) is_primary: bool,
    pub(super) policy: &'a SlaPolicy,
}

impl Act<'_> {
    fn plan(&self, status: Status, kind: EventKind, detail: String) -> Plan {
        base_plan(status, kind, self.caller, detail)
    }

    fn now(&self) -> String {
        self.ctx.now.to_string()
    }

    fn primary(&self) -> String {
        self.rec.department.clone()
    }
}

pub(super) fn accept(a: &Act<'_>, note: &str) -> Plan {
    let mut p = a.plan(Status::Accepted, EventKind::Accepted, note.to_owned());
    p.set.push(("accepted_at", a.now()));
    p.clear.push("accept_due");
    p.timers = Timers::Remove(vec![TimerKind::Accept]);
    p
}

pub(super) fn progress(a: &Act<'_>, note: &str) -> Plan {
    let next = if a.is_primary && matches!(a.status, Status::Accepted | Status::InProgress) {
        Status::InProgress
    } else {
        a.status
    };
    let mut p = a.plan(next, EventKind::Progress, note.to_owned());
    if !a.is_primary {
        p.notices.push(Notice {
            department: a.primary(),
            kind: NoticeKind::Progress,
            note: format!("{}: {note}", a.acting),
        });
    }
    p
}

pub(super) fn resolve(a: &Act<'_>, note: &str) -> Plan {
    let (ctx, rec) = (a.ctx, a.rec);
    let mut p = a.plan(Status::Resolved, EventKind::Resolved, note.to_owned());
    p.set.push(("resolved_at", a.now()));
    p.clear.extend(["accept_due", "pending"]);
    let verify_by = a.policy.verify.after(&ctx.table.calendar, ctx.now);
    p.set.push(("verify_due", verify_by.to_string()));
    p.timers = Timers::Replace {
        timers: vec![Timer {
            due: verify_by,
            kind: TimerKind::Verify,
            target: ctx.centre(rec),
        }],
        fresh: false,
    };
    for co in &rec.co_handlers {
        p.notices.push(Notice {
            department: co.clone(),
            kind: NoticeKind::Resolved,
            note: note.to_owned(),
        });
    }
    p.close_duplicates = true;
    p.fan_out = true;
    p
}

pub(super) fn return_(a: &Act<'_>, reason: &str, note: &str) -> Result<Plan, Refusal> {
    let (ctx, rec) = (a.ctx, a.rec);
    if rec.locked {
        return Err(Refusal::Precondition(
            "assigned by arbitration: this department cannot return it".into(),
        ));
    }
    let mut returned = rec.returned_by.clone();
    if !returned.iter().any(|r| r == a.acting) {
        returned.push(a.acting.to_owned());
    }
    let detail = format!("{reason}: {note}");
    let mut p = if returned.len() as u32 >= ctx.table.max_returns {
        let centre = ctx.centre(rec);
        let mut p = a.plan(Status::Arbitration, EventKind::Returned, detail.clone());
        p.set.push(("dept", centre.clone()));
        p.notices.push(Notice {
            department: centre,
            kind: NoticeKind::ArbitrationNeeded,
            note: format!(
                "returned {} times (last by {}: {detail}); name the department that must handle it",
                returned.len(),
                a.acting
            ),
        });
        p
    } else {
        let mut p = a.plan(Status::Returned, EventKind::Returned, detail);
        p.clear.push("dept");
        p.reroute = Some(returned.clone());
        p
    };
    p.set.push(("returned_by", returned.join(",")));
    p.clear
        .extend(["accept_due", "resolve_due", "accepted_at", "pending"]);
    p.timers = Timers::Replace {
        timers: Vec::new(),
        fresh: true,
    };
    Ok(p)
}

pub(super) fn arbitrate(a: &Act<'_>, assignee: &str, note: &str) -> Plan {
    let ctx = a.ctx;
    let mut p = a.plan(
        Status::Dispatched,
        EventKind::Arbitrated,
        format!("assigned to {assignee}: {note}"),
    );
    let d = a.policy.deadlines(&ctx.table.calendar, ctx.now);
    p.set.extend([
        ("dept", assignee.to_owned()),
        ("locked", "1".to_owned()),
        ("dispatched_at", a.now()),
        ("accept_due", d.accept_by.to_string()),
        ("resolve_due", d.resolve_by.to_string()),
    ]);
    p.timers = Timers::Replace {
        timers: ctx.timers(
            a.rec,
            assignee,
            ctx.now,
            Some(d.accept_by),
            d.resolve_by,
            true,
        ),
        fresh: true,
    };
    p.assign = Some(assignee.to_owned());
    p
}

fn nothing_pending(a: &Act<'_>) -> Result<(), Refusal> {
    match a.rec.pending {
        Some(_) => Err(Refusal::Precondition(
            "a request is already waiting for the command centre".into(),
        )),
        None => Ok(()),
    }
}

pub(super) fn request_extension(a: &Act<'_>, span: &str, reason: &str) -> Result<Plan, Refusal> {
    nothing_pending(a)?;
    let mut p = a.plan(
        a.status,
        EventKind::ExtensionRequested,
        format!("{span}: {reason}"),
    );
    p.set.push(("pending", format!("extension|{span}")));
    p.notices.push(Notice {
        department: a.ctx.centre(a.rec),
        kind: NoticeKind::RequestPending,
        note: format!("{} asks for {span} more: {reason}", a.acting),
    });
    Ok(p)
}

pub(super) fn request_suspension(a: &Act<'_>, reason: &str) -> Result<Plan, Refusal> {
    nothing_pending(a)?;
    let mut p = a.plan(a.status, EventKind::SuspensionRequested, reason.to_owned());
    p.set.push(("pending", "suspension|".to_owned()));
    p.notices.push(Notice {
        department: a.ctx.centre(a.rec),
        kind: NoticeKind::RequestPending,
        note: format!("{} asks to suspend: {reason}", a.acting),
    });
    Ok(p)
}

pub(super) fn decide(
    a: &Act<'_>,
    approve: bool,
    note: &str,
    granted: Option<&str>,
) -> Result<Plan, Refusal> {
    let (ctx, rec, policy) = (a.ctx, a.rec, a.policy);
    let Some(pending) = &rec.pending else {
        return Err(Refusal::Precondition(
            "no request is waiting for a decision".into(),
        ));
    };
    let (kind, mut p) = match (pending, approve) {
        (_, false) => (
            EventKind::RequestRejected,
            a.plan(a.status, EventKind::RequestRejected, note.to_owned()),
        ),
        (Pending::Extension(asked), true) => {
            let span_text = granted.unwrap_or(asked);
            let span = parse_span(span_text, ctx.table.calendar.working_ms_per_day()).ok_or_else(
                || Refusal::Invalid {
                    field: "granted_extension",
                    why: format!("stored request {span_text:?} is not a span"),
                },
            )?;
            let due = span.after(&ctx.table.calendar, rec.resolve_due.unwrap_or(ctx.now));
            let mut p = a.plan(
                a.status,
                EventKind::ExtensionApproved,
                format!("{span_text}: {note}"),
            );
            p.set.push(("resolve_due", due.to_string()));
            p.timers = Timers::Replace {
                timers: ctx.timers(
                    rec,
                    &rec.department,
                    rec.dispatched_at.unwrap_or(ctx.now),
                    rec.accept_due.filter(|_| rec.accepted_at.is_none()),
                    due,
                    false,
                ),
                fresh: false,
            };
            (EventKind::ExtensionApproved, p)
        }
        (Pending::Suspension, true) => {
            let mut p = a.plan(Status::Suspended, EventKind::Suspended, note.to_owned());
            let accept_left = rec
                .accept_due
                .filter(|_| rec.accepted_at.is_none())
                .map(|d| ctx.span_left(policy.accept, d));
            let resolve_left = ctx.span_left(policy.resolve, rec.resolve_due.unwrap_or(ctx.now));
            p.set.push(("prev_status", a.status.as_str().to_owned()));
            p.set.push((
                "paused",
                format!(
                    "{}|{resolve_left}",
                    accept_left.map(|a| a.to_string()).unwrap_or_default()
                ),
            ));
            p.timers = Timers::Replace {
                timers: Vec::new(),
                fresh: false,
            };
            (EventKind::Suspended, p)
        }
    };
    p.clear.push("pending");
    p.notices.push(Notice {
        department: a.primary(),
        kind: NoticeKind::RequestDecided,
        note: format!("{kind}: {note}"),
    });
    Ok(p)
}

pub(super) fn resume(a: &Act<'_>, note: &str) -> Plan {
    let (ctx, rec, policy) = (a.ctx, a.rec, a.policy);
    let back = rec.prev_status.unwrap_or(Status::Dispatched);
    let (accept_left, resolve_left) = rec.paused.unwrap_or((None, 0));
    let accept_by = accept_left.map(|a| ctx.span_after(policy.accept, a));
    let resolve_by = ctx.span_after(policy.resolve, resolve_left);
    let mut p = a.plan(back, EventKind::Resumed, note.to_owned());
    if let Some(a) = accept_by {
        p.set.push(("accept_due", a.to_string()));
    }
    p.set.push(("resolve_due", resolve_by.to_string()));
    p.clear.extend(["prev_status", "paused"]);
    p.timers = Timers::Replace {
        timers: ctx.timers(
            rec,
            &rec.department,
            rec.dispatched_at.unwrap_or(ctx.now),
            accept_by,
            resolve_by,
            false,
        ),
        fresh: false,
    };
    if !a.is_primary {
        p.notices.push(Notice {
            department: a.primary(),
            kind: NoticeKind::RequestDecided,
            note: format!("resumed: {note}"),
        });
    }
    p
}

pub(super) fn verify(a: &Act<'_>, passed: bool, note: &str) -> Plan {
    if !passed {
        return reopen(a, EventKind::VerificationFailed, note.to_owned());
    }
    let mut p = a.plan(Status::Verified, EventKind::Verified, note.to_owned());
    p.set.push(("verified_at", a.now()));
    p.clear.push("verify_due");
    p.timers = Timers::Replace {
        timers: Vec::new(),
        fresh: false,
    };
    if !a.rec.reporter_id.is_empty() {
        p.points = a.ctx.table.points_for(&a.rec.category);
    }
    p.fan_out = true;
    p
}

pub(super) fn feedback(a: &Act<'_>, satisfaction: u8, comment: &str) -> Result<Plan, Refusal> {
    if a.rec.satisfaction.is_some() {
        return Err(Refusal::Precondition(
            "feedback was already given for this resolution".into(),
        ));
    }
    let detail = format!("satisfaction {satisfaction}/5: {comment}");
    if satisfaction <= 2 {
        let mut p = reopen(a, EventKind::Dissatisfied, detail);
        p.set.push(("last_satisfaction", satisfaction.to_string()));
        return Ok(p);
    }
    let next = if a.status == Status::Verified {
        Status::Closed
    } else {
        a.status
    };
    // Feedback that closes the case is the case's `closed` entry: every closing is one.
    let (kind, detail) = if next == Status::Closed {
        (
            EventKind::Closed,
            format!("closed by the reporter's feedback: {detail}"),
        )
    } else {
        (EventKind::Feedback, detail)
    };
    let mut p = a.plan(next, kind, detail);
    p.set.push(("satisfaction", satisfaction.to_string()));
    if next == Status::Closed {
        p.set.push(("closed_at", a.now()));
        p.fan_out = true;
    }
    Ok(p)
}

pub(super) fn close(a: &Act<'_>, note: &str) -> Plan {
    let mut p = a.plan(Status::Closed, EventKind::Closed, note.to_owned());
    p.set.push(("closed_at", a.now()));
    p.fan_out = true;
    p
}

pub(super) fn cancel(a: &Act<'_>, reason: &str) -> Plan {
    let mut p = a.plan(Status::Cancelled, EventKind::Cancelled, reason.to_owned());
    p.set.push(("cancelled_at", a.now()));
    p.timers = Timers::Replace {
        timers: Vec::new(),
        fresh: false,
    };
    p.close_duplicates = true;
    if !a.rec.department.is_empty() && a.rec.department != a.acting {
        p.notices.push(Notice {
            department: a.primary(),
            kind: NoticeKind::Cancelled,
            note: reason.to_owned(),
        });
    }
    p.fan_out = true;
    p
}

pub(super) fn unmerge(a: &Act<'_>, note: &str) -> Plan {
    let mut p = a.plan(
        Status::Reported,
        EventKind::Unmerged,
        format!("from {}: {note}", a.rec.merged_into),
    );
    p.clear.push("merged_into");
    p.reroute = Some(a.rec.returned_by.clone());
    p
}

/// Back to the primary department with a warning flag and fresh clocks.
fn reopen(a: &Act<'_>, kind: EventKind, detail: String) -> Plan {
    let (ctx, rec) = (a.ctx, a.rec);
    let d = a.policy.deadlines(&ctx.table.calendar, ctx.now);
    let mut p = a.plan(Status::Reopened, kind, detail.clone());
    p.set.extend([
        ("dispatched_at", ctx.now.to_string()),
        ("accept_due", d.accept_by.to_string()),
        ("resolve_due", d.resolve_by.to_string()),
        ("reopened", (rec.reopened + 1).to_string()),
        ("warning", "1".to_owned()),
    ]);
    p.clear.extend([
        "accepted_at",
        "resolved_at",
        "verified_at",
        "verify_due",
        "satisfaction",
    ]);
    p.timers = Timers::Replace {
        timers: ctx.timers(
            rec,
            &rec.department,
            ctx.now,
            Some(d.accept_by),
            d.resolve_by,
            true,
        ),
        fresh: true,
    };
    p.notices.push(Notice {
        department: rec.department.clone(),
        kind: NoticeKind::Reopened,
        note: format!("{kind}: {detail}"),
    });
    p
}
