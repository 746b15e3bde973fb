//! The incident lifecycle: states, who may do what in which state, and the plan of every change.
//!
//! ```text
//! reported ─route─▶ dispatched ─accept─▶ accepted ─progress─▶ in_progress ─resolve─▶ resolved
//!    ▲  │               │  ▲                 │                                   │  verify ok
//!    │  └─duplicate─▶ merged                 └───── return ──▶ returned ─route─┘ ▼
//!    └──── unmerge ─────┘  │                   (N-th return ▶ arbitration ─arbitrate─▶ dispatched)
//!                          │                                               verified ─close/feedback─▶ closed
//!   suspended ◀─approve suspension─ (any active state) ─resume─▶ back      │ verify failed / dissatisfied
//!   cancelled ◀─cancel─ (any open state)                                    ▼ reopened (warning flag)
//! ```
//!
//! Everything here is pure: [`plan`] reads a snapshot of the record ([`Record`]) and returns a
//! [`Plan`] (fields to set, timers, timeline event, notices) or a [`Refusal`]. The store applies
//! the plan atomically, only if the record has not changed since the snapshot was read.
//!
//! This module is the only place that knows states, transitions and timer effects:
//! - `model`: the vocabulary ([`Status`], [`Command`], [`Record`], [`Plan`], [`Refusal`]);
//! - [`events`]: the kinds of timeline entries ([`EventKind`]);
//! - this file: [`plan`], which checks who may act, the arguments and the state, then hands
//!   over to
//! - `commands`: one function per command, the plan of what it changes;
//! - [`timers`]: what a due SLA timer does ([`timers::fire`]);
//! - [`merge`]: a duplicate report joining an open case ([`merge::merge`]).

use crate::{
    RoutingTable,
    access::Kind,
    region::RegionId,
    sla::{Clock, Escalation, Millis, SlaPolicy, Span, Timer, parse_span},
};

mod commands;
pub mod events;
pub mod merge;
mod model;
pub mod timers;

pub use events::EventKind;
pub use model::*;

/// What a valid extension span looks like.
const SPAN_HELP: &str = "a span like 2wd, 4wh or 8h, at most 366wd or 366d";

/// The states from which an action is legal.
pub fn legal_from(command: &Command) -> &'static [Status] {
    use Status::*;
    match command {
        Command::Accept { .. } => &[Dispatched, Reopened],
        Command::Progress { .. } => &[Dispatched, Accepted, InProgress, Reopened],
        Command::Resolve { .. } => &[Dispatched, Accepted, InProgress, Reopened],
        Command::Return { .. } => &[Dispatched, Accepted],
        Command::Arbitrate { .. } => &[Arbitration],
        Command::RequestExtension { .. } | Command::RequestSuspension { .. } => {
            &[Dispatched, Accepted, InProgress, Reopened]
        }
        Command::Decide { .. } => &[Dispatched, Accepted, InProgress, Reopened],
        Command::Resume { .. } => &[Suspended],
        Command::Verify { .. } => &[Resolved],
        Command::Feedback { .. } => &[Resolved, Verified, Closed],
        Command::Close { .. } => &[Verified],
        Command::Cancel { .. } => &[
            Dispatched,
            Accepted,
            InProgress,
            Returned,
            Arbitration,
            Suspended,
            Reopened,
        ],
        Command::Unmerge { .. } => &[Merged],
    }
}

/// What the planner needs besides the record.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// The table in force.
    pub table: &'a RoutingTable,
    /// Now (the Redis clock).
    pub now: Millis,
}

impl Ctx<'_> {
    fn grid(&self, rec: &Record) -> Option<RegionId> {
        self.table.regions.find(&rec.grid)
    }

    fn is_centre(&self, rec: &Record, dept: &str) -> bool {
        self.table
            .department(dept)
            .is_some_and(|d| self.table.is_centre_for(d, self.grid(rec)))
    }

    /// The command centre that decides for this incident: the nearest one up the tree.
    pub fn centre(&self, rec: &Record) -> String {
        let d = self
            .grid(rec)
            .map_or(self.table.default_command_centre, |g| {
                self.table.command_centre_for(g)
            });
        self.table.departments[d as usize].id.clone()
    }

    fn policy<'p>(&'p self, rec: &Record) -> &'p SlaPolicy {
        self.table.policy(&rec.policy).unwrap_or_else(|| {
            &self.table.sla_policies
                [self.table.default_policy(crate::rules::Urgency::Normal) as usize]
        })
    }

    /// The timers of a running case for `primary`, without kinds that already fired and are
    /// due by now (they would fire twice).
    fn timers(
        &self,
        rec: &Record,
        primary: &str,
        start: Millis,
        accept_by: Option<Millis>,
        resolve_by: Millis,
        fresh: bool,
    ) -> Vec<Timer> {
        let supervisors: Vec<String> = self
            .table
            .supervisors(self.grid(rec))
            .into_iter()
            .map(|d| self.table.departments[d as usize].id.clone())
            .filter(|d| d != primary)
            .collect();
        let public = self.table.departments[self.table.default_command_centre as usize]
            .id
            .clone();
        let to = Escalation {
            primary,
            supervisors: &supervisors,
            public: &public,
        };
        self.policy(rec)
            .timers(&self.table.calendar, start, accept_by, resolve_by, &to)
            .into_iter()
            .filter(|t| fresh || t.due > self.now || !rec.fired.contains(&t.kind.name()))
            .collect()
    }

    fn span_left(&self, span: Span, due: Millis) -> i64 {
        match span.clock {
            Clock::Wall => (due - self.now).max(0),
            Clock::Working => self.table.calendar.working_between(self.now, due),
        }
    }

    fn span_after(&self, span: Span, ms: i64) -> Millis {
        match span.clock {
            Clock::Wall => self.now + ms,
            Clock::Working => self.table.calendar.add_working(self.now, ms),
        }
    }
}

/// A plan whose timeline entry names the caller.
fn base_plan(status: Status, kind: EventKind, caller: &Caller, detail: String) -> Plan {
    Plan::new(
        status,
        Event {
            kind,
            actor: caller.id.clone(),
            actor_kind: caller.kind.as_str(),
            user: caller.person.clone(),
            detail,
            department: caller.department().unwrap_or_default().to_owned(),
        },
    )
}

fn required(field: &'static str, text: &str, what: &str) -> Result<(), Refusal> {
    if text.trim().is_empty() {
        Err(Refusal::Invalid {
            field,
            why: format!("required: {what}"),
        })
    } else {
        Ok(())
    }
}

/// Plans `command` by `caller` on the incident `rec`: who may act first, then the arguments,
/// then the state; each command's own plan is in `commands`.
pub fn plan(
    ctx: &Ctx<'_>,
    rec: &Record,
    caller: &Caller,
    command: &Command,
) -> Result<Plan, Refusal> {
    let action = command.name();
    let status = rec.status.ok_or(Refusal::WrongState {
        status: "unknown",
        action,
    })?;
    // Who may act first (decided on the authenticated principal's kind and id): a caller who
    // may not act learns nothing else about the incident, not even whether its arguments
    // would do.
    let acting = caller.department().unwrap_or_default();
    let is_primary = !acting.is_empty() && acting == rec.department;
    let is_co_handler = !acting.is_empty() && rec.co_handlers.iter().any(|c| c == acting);
    let is_centre = caller.kind == Kind::CommandCentre && ctx.is_centre(rec, &caller.id);
    let allowed = match command {
        Command::Accept { .. }
        | Command::Resolve { .. }
        | Command::Return { .. }
        | Command::RequestExtension { .. }
        | Command::RequestSuspension { .. } => is_primary,
        Command::Progress { .. } => is_primary || is_co_handler,
        Command::Resume { .. } => is_primary || is_centre,
        Command::Verify { .. } => {
            is_centre || (caller.kind == Kind::GridWorker && rec.grid_workers.contains(&caller.id))
        }
        Command::Feedback { .. } => {
            caller.kind == Kind::SourceSystem && caller.id == rec.source_system
        }
        Command::Arbitrate { .. }
        | Command::Decide { .. }
        | Command::Close { .. }
        | Command::Cancel { .. }
        | Command::Unmerge { .. } => is_centre,
    };
    if !allowed {
        let who = match command {
            Command::Verify { .. } => {
                "a command centre of the incident's region or one of its grid workers"
            }
            Command::Feedback { .. } => "the source system that reported it",
            Command::Progress { .. } => "its primary department or a co-handler",
            Command::Resume { .. } => "its primary department or a command centre of its region",
            Command::Arbitrate { .. }
            | Command::Decide { .. }
            | Command::Close { .. }
            | Command::Cancel { .. }
            | Command::Unmerge { .. } => "a command centre of the incident's region",
            _ => "its primary department",
        };
        return Err(Refusal::NotPermitted(format!(
            "{} may not {action} this incident: only {who} may",
            caller.label()
        )));
    }
    // Then the arguments: a malformed request is INVALID_ARGUMENT whatever the state.
    match command {
        Command::Resolve { note } => required("note", note, "what was done")?,
        Command::Return { reason, note } => {
            required("reason", reason, "a structured reason code")?;
            required("note", note, "why this is not yours")?;
        }
        Command::Arbitrate { assignee, .. } if ctx.table.department(assignee).is_none() => {
            return Err(Refusal::Invalid {
                field: "assignee_department_id",
                why: format!("unknown department {assignee:?}"),
            });
        }
        Command::RequestExtension { span, reason } => {
            required("reason", reason, "why more time is needed")?;
            parse_span(span, ctx.table.calendar.working_ms_per_day()).ok_or_else(|| {
                Refusal::Invalid {
                    field: "extension",
                    why: SPAN_HELP.into(),
                }
            })?;
        }
        Command::RequestSuspension { reason } => required("reason", reason, "why to pause")?,
        Command::Decide {
            granted: Some(g), ..
        } if parse_span(g, ctx.table.calendar.working_ms_per_day()).is_none() => {
            return Err(Refusal::Invalid {
                field: "granted_extension",
                why: SPAN_HELP.into(),
            });
        }
        Command::Feedback { satisfaction, .. } if !(1..=5).contains(satisfaction) => {
            return Err(Refusal::Invalid {
                field: "satisfaction",
                why: "1 (very dissatisfied) to 5 (very satisfied)".into(),
            });
        }
        Command::Cancel { reason } => required("reason", reason, "why the case is withdrawn")?,
        _ => {}
    }
    if !legal_from(command).contains(&status) {
        return Err(Refusal::WrongState {
            status: status.as_str(),
            action,
        });
    }
    let a = commands::Act {
        ctx,
        rec,
        caller,
        status,
        acting,
        is_primary,
        policy: ctx.policy(rec),
    };
    let mut p = match command {
        Command::Accept { note } => commands::accept(&a, note),
        Command::Progress { note } => commands::progress(&a, note),
        Command::Resolve { note } => commands::resolve(&a, note),
        Command::Return { reason, note } => commands::return_(&a, reason, note)?,
        Command::Arbitrate { assignee, note } => commands::arbitrate(&a, assignee, note),
        Command::RequestExtension { span, reason } => {
            commands::request_extension(&a, span, reason)?
        }
        Command::RequestSuspension { reason } => commands::request_suspension(&a, reason)?,
        Command::Decide {
            approve,
            note,
            granted,
        } => commands::decide(&a, *approve, note, granted.as_deref())?,
        Command::Resume { note } => commands::resume(&a, note),
        Command::Verify { passed, note } => commands::verify(&a, *passed, note),
        Command::Feedback {
            satisfaction,
            comment,
        } => commands::feedback(&a, *satisfaction, comment)?,
        Command::Close { note } => commands::close(&a, note),
        Command::Cancel { reason } => commands::cancel(&a, reason),
        Command::Unmerge { note } => commands::unmerge(&a, note),
    };
    mark_estimates(ctx, a.policy, &mut p);
    Ok(p)
}

/// The record field that marks deadlines counted past the calendar's horizon ("1").
pub const ESTIMATED_FIELD: &str = "est";

/// Marks a plan that sets or clears deadlines: [`ESTIMATED_FIELD`] is set, and the timeline entry
/// says so, when a deadline it sets on working time lies past the last day the calendar covers;
/// otherwise the mark is cleared. Plans that touch no deadline keep the mark as it is.
fn mark_estimates(ctx: &Ctx<'_>, policy: &SlaPolicy, p: &mut Plan) {
    let span = |field: &str| match field {
        "accept_due" => Some(policy.accept),
        "resolve_due" => Some(policy.resolve),
        "verify_due" => Some(policy.verify),
        _ => None,
    };
    let touched = p.clear.iter().any(|f| span(f).is_some());
    let mut estimated = false;
    let mut sets = false;
    for (field, value) in &p.set {
        if let Some(s) = span(field) {
            sets = true;
            estimated |= value
                .parse::<Millis>()
                .is_ok_and(|due| s.estimated(&ctx.table.calendar, due));
        }
    }
    if estimated {
        p.set.push((ESTIMATED_FIELD, "1".to_owned()));
        p.event
            .detail
            .push_str(&crate::sla::estimate_note(&ctx.table.calendar));
    } else if sets || touched {
        p.clear.push(ESTIMATED_FIELD);
    }
}
