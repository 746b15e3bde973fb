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

use std::collections::HashSet;

use crate::{
    RoutingTable,
    access::Kind,
    region::RegionId,
    sla::{Clock, Escalation, Millis, SlaPolicy, Span, Timer, TimerKind, parse_span},
};

/// Where an incident stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Accepted by gridroute, waiting for a router.
    Reported,
    /// Sent to its primary department; the accept and resolve clocks run.
    Dispatched,
    /// The primary department confirmed it handles the case (签收).
    Accepted,
    /// The primary department reported progress.
    InProgress,
    /// The work is done (办结); waiting for verification.
    Resolved,
    /// The grid worker or the command centre checked the work (核查).
    Verified,
    /// Closed (结案).
    Closed,
    /// Returned by a department (退单), waiting to be routed again.
    Returned,
    /// Returned too often: the command centre decides who handles it (审定).
    Arbitration,
    /// Paused with the command centre's approval (挂起); no clock runs.
    Suspended,
    /// A duplicate, merged into another open incident (并案).
    Merged,
    /// Withdrawn by the command centre.
    Cancelled,
    /// Verification failed or the reporter was dissatisfied: back with the department.
    Reopened,
}

impl Status {
    /// Every status.
    pub const ALL: [Self; 13] = [
        Self::Reported,
        Self::Dispatched,
        Self::Accepted,
        Self::InProgress,
        Self::Resolved,
        Self::Verified,
        Self::Closed,
        Self::Returned,
        Self::Arbitration,
        Self::Suspended,
        Self::Merged,
        Self::Cancelled,
        Self::Reopened,
    ];

    /// The name stored in Redis and used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reported => "reported",
            Self::Dispatched => "dispatched",
            Self::Accepted => "accepted",
            Self::InProgress => "in_progress",
            Self::Resolved => "resolved",
            Self::Verified => "verified",
            Self::Closed => "closed",
            Self::Returned => "returned",
            Self::Arbitration => "arbitration",
            Self::Suspended => "suspended",
            Self::Merged => "merged",
            Self::Cancelled => "cancelled",
            Self::Reopened => "reopened",
        }
    }

    /// Parses [`Status::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// What the caller asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// 签收.
    Accept {
        /// Timeline note.
        note: String,
    },
    /// A progress note; the primary's first one moves the case to in progress.
    Progress {
        /// What was done.
        note: String,
    },
    /// 办结.
    Resolve {
        /// What was done.
        note: String,
    },
    /// 退单.
    Return {
        /// Structured reason code.
        reason: String,
        /// Explanation.
        note: String,
    },
    /// 审定: the command centre names the department that must handle the case.
    Arbitrate {
        /// The department.
        assignee: String,
        /// Why.
        note: String,
    },
    /// 延期 request.
    RequestExtension {
        /// How much more time, e.g. `2wd`.
        span: String,
        /// Why.
        reason: String,
    },
    /// 挂起 request.
    RequestSuspension {
        /// Why.
        reason: String,
    },
    /// The command centre decides the pending request.
    Decide {
        /// Approve or reject.
        approve: bool,
        /// Why.
        note: String,
        /// For extensions: grant this span instead of the one asked for.
        granted: Option<String>,
    },
    /// Ends a suspension.
    Resume {
        /// Why.
        note: String,
    },
    /// 核查.
    Verify {
        /// Whether the work holds up.
        passed: bool,
        /// What was found.
        note: String,
    },
    /// The reporter's satisfaction.
    Feedback {
        /// 1 (very dissatisfied) to 5 (very satisfied).
        satisfaction: u8,
        /// Free text.
        comment: String,
    },
    /// 结案.
    Close {
        /// Note.
        note: String,
    },
    /// Withdraws the case.
    Cancel {
        /// Why.
        reason: String,
    },
    /// Undoes a merge: the incident is routed on its own.
    Unmerge {
        /// Why.
        note: String,
    },
}

impl Command {
    /// Stable name of the action (idempotency records, metrics).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Accept { .. } => "accept",
            Self::Progress { .. } => "progress",
            Self::Resolve { .. } => "resolve",
            Self::Return { .. } => "return",
            Self::Arbitrate { .. } => "arbitrate",
            Self::RequestExtension { .. } => "request_extension",
            Self::RequestSuspension { .. } => "request_suspension",
            Self::Decide { .. } => "decide",
            Self::Resume { .. } => "resume",
            Self::Verify { .. } => "verify",
            Self::Feedback { .. } => "feedback",
            Self::Close { .. } => "close",
            Self::Cancel { .. } => "cancel",
            Self::Unmerge { .. } => "unmerge",
        }
    }
}

/// Who acts: the authenticated principal (never a name taken from the request body).
pub use crate::access::Principal as Caller;

/// A request waiting for the command centre.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// More time, by this span.
    Extension(String),
    /// A pause.
    Suspension,
}

/// What a snapshot of an incident record says, as far as the lifecycle needs.
#[derive(Debug, Clone, Default)]
pub struct Record {
    /// Current state.
    pub status: Option<Status>,
    /// Routing generation (bumped on every re-route).
    pub generation: u64,
    /// The department handling the case (the primary, or the arbitrating centre).
    pub department: String,
    /// Co-handlers (协办).
    pub co_handlers: Vec<String>,
    /// Leaf grid code, when routed into a grid.
    pub grid: String,
    /// The grid's workers.
    pub grid_workers: Vec<String>,
    /// SLA policy name.
    pub policy: String,
    /// The report's source system.
    pub source_system: String,
    /// The reporter's id in the source system.
    pub reporter_id: String,
    /// The report's category.
    pub category: String,
    /// Departments that returned the case.
    pub returned_by: Vec<String>,
    /// Assigned by arbitration: cannot be returned.
    pub locked: bool,
    /// When it was last dispatched.
    pub dispatched_at: Option<Millis>,
    /// Accept deadline, while not accepted.
    pub accept_due: Option<Millis>,
    /// Resolve deadline.
    pub resolve_due: Option<Millis>,
    /// When it was accepted in this cycle.
    pub accepted_at: Option<Millis>,
    /// State before a suspension.
    pub prev_status: Option<Status>,
    /// Working or wall time left on the accept and resolve clocks when suspended.
    pub paused: Option<(Option<i64>, i64)>,
    /// A request waiting for the command centre.
    pub pending: Option<Pending>,
    /// Pending timer kinds that have already fired in this cycle.
    pub fired: HashSet<String>,
    /// Incidents merged into this one.
    pub merged: Vec<String>,
    /// The incident this one was merged into.
    pub merged_into: String,
    /// The reporter's satisfaction, once given.
    pub satisfaction: Option<u8>,
    /// How often the case was reopened.
    pub reopened: u32,
}

/// What a department or system is told, on its dispatch stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    /// A case to handle (after arbitration, or reopened).
    Assigned,
    /// Reopened with a warning flag.
    Reopened,
    /// A case waits for arbitration.
    ArbitrationNeeded,
    /// A request (extension, suspension) waits for a decision.
    RequestPending,
    /// The command centre decided a request.
    RequestDecided,
    /// A co-handler or the primary added progress.
    Progress,
    /// The primary resolved the case.
    Resolved,
    /// The case was cancelled.
    Cancelled,
}

/// One notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The department it goes to.
    pub department: String,
    /// What it is.
    pub kind: NoticeKind,
    /// Free text.
    pub note: String,
}

/// How the pending timers change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timers {
    /// Untouched.
    Keep,
    /// These kinds are cancelled.
    Remove(Vec<TimerKind>),
    /// Every pending timer is replaced by these; `fresh` starts a new cycle (forgets which
    /// kinds fired).
    Replace {
        /// The new timers.
        timers: Vec<Timer>,
        /// Whether a new cycle starts.
        fresh: bool,
    },
}

/// A timeline entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What happened, e.g. `accepted`.
    pub kind: &'static str,
    /// Who did it: the principal's id.
    pub actor: String,
    /// The kind of principal that did it (`department`, `command_centre`, …).
    pub actor_kind: &'static str,
    /// The person, if known.
    pub user: String,
    /// Note, reason, decision.
    pub detail: String,
    /// The department concerned.
    pub department: String,
}

/// Everything one action changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The state afterwards.
    pub status: Status,
    /// Fields to set on the record.
    pub set: Vec<(&'static str, String)>,
    /// Fields to remove.
    pub clear: Vec<&'static str>,
    /// Timer changes.
    pub timers: Timers,
    /// The timeline entry (also published on the events stream).
    pub event: Event,
    /// Notices to departments.
    pub notices: Vec<Notice>,
    /// Route the incident again (new generation), excluding these departments.
    pub reroute: Option<Vec<String>>,
    /// Dispatch the case to this department as its new primary.
    pub assign: Option<String>,
    /// Points for the reporter.
    pub points: u32,
    /// Drop the incident from duplicate detection (it is no longer open).
    pub close_duplicates: bool,
    /// Tell the incidents merged into this one about the outcome.
    pub fan_out: bool,
}

/// Why an action is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The caller may not do this to this incident (PERMISSION_DENIED).
    #[error("{0}")]
    NotPermitted(String),
    /// Not in this state (FAILED_PRECONDITION).
    #[error("incident is {status}; cannot {action}")]
    WrongState {
        /// Current state.
        status: &'static str,
        /// The action.
        action: &'static str,
    },
    /// A request field is wrong (INVALID_ARGUMENT).
    #[error("{field}: {why}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        why: String,
    },
    /// A request is already pending, or none is (FAILED_PRECONDITION).
    #[error("{0}")]
    Precondition(String),
}

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

fn base_plan(status: Status, kind: &'static str, caller: &Caller, detail: String) -> Plan {
    Plan {
        status,
        set: Vec::new(),
        clear: Vec::new(),
        timers: Timers::Keep,
        event: Event {
            kind,
            actor: caller.id.clone(),
            actor_kind: caller.kind.as_str(),
            user: caller.person.clone(),
            detail,
            department: caller.department().unwrap_or_default().to_owned(),
        },
        notices: Vec::new(),
        reroute: None,
        assign: None,
        points: 0,
        close_duplicates: false,
        fan_out: false,
    }
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

/// Plans `command` by `caller` on the incident `rec`.
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
    let now = ctx.now.to_string();
    let policy = ctx.policy(rec);
    let primary = rec.department.clone();
    Ok(match command {
        Command::Accept { note } => {
            let mut p = base_plan(Status::Accepted, "accepted", caller, note.clone());
            p.set.push(("accepted_at", now));
            p.clear.push("accept_due");
            p.timers = Timers::Remove(vec![TimerKind::Accept]);
            p
        }
        Command::Progress { note } => {
            let next = if is_primary && matches!(status, Status::Accepted | Status::InProgress) {
                Status::InProgress
            } else {
                status
            };
            let mut p = base_plan(next, "progress", caller, note.clone());
            if !is_primary {
                p.notices.push(Notice {
                    department: primary,
                    kind: NoticeKind::Progress,
                    note: format!("{acting}: {note}"),
                });
            }
            p
        }
        Command::Resolve { note } => {
            let mut p = base_plan(Status::Resolved, "resolved", caller, note.clone());
            p.set.push(("resolved_at", now));
            p.clear.extend(["accept_due", "pending"]);
            let verify_by = policy.verify.after(&ctx.table.calendar, ctx.now);
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
                    note: note.clone(),
                });
            }
            p.close_duplicates = true;
            p.fan_out = true;
            p
        }
        Command::Return { reason, note } => {
            if rec.locked {
                return Err(Refusal::Precondition(
                    "assigned by arbitration: this department cannot return it".into(),
                ));
            }
            let mut returned = rec.returned_by.clone();
            if !returned.iter().any(|r| r == acting) {
                returned.push(acting.to_owned());
            }
            let detail = format!("{reason}: {note}");
            let arbitrate = returned.len() as u32 >= ctx.table.max_returns;
            let mut p = if arbitrate {
                let centre = ctx.centre(rec);
                let mut p = base_plan(Status::Arbitration, "returned", caller, detail.clone());
                p.set.push(("dept", centre.clone()));
                p.notices.push(Notice {
                    department: centre,
                    kind: NoticeKind::ArbitrationNeeded,
                    note: format!(
                        "returned {} times (last by {}: {detail}); name the department that must handle it",
                        returned.len(),
                        acting
                    ),
                });
                p
            } else {
                let mut p = base_plan(Status::Returned, "returned", caller, detail);
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
            p
        }
        Command::Arbitrate { assignee, note } => {
            let mut p = base_plan(
                Status::Dispatched,
                "arbitrated",
                caller,
                format!("assigned to {assignee}: {note}"),
            );
            let d = policy.deadlines(&ctx.table.calendar, ctx.now);
            p.set.extend([
                ("dept", assignee.clone()),
                ("locked", "1".to_owned()),
                ("dispatched_at", now),
                ("accept_due", d.accept_by.to_string()),
                ("resolve_due", d.resolve_by.to_string()),
            ]);
            p.timers = Timers::Replace {
                timers: ctx.timers(
                    rec,
                    assignee,
                    ctx.now,
                    Some(d.accept_by),
                    d.resolve_by,
                    true,
                ),
                fresh: true,
            };
            p.assign = Some(assignee.clone());
            p
        }
        Command::RequestExtension { .. } | Command::RequestSuspension { .. }
            if rec.pending.is_some() =>
        {
            return Err(Refusal::Precondition(
                "a request is already waiting for the command centre".into(),
            ));
        }
        Command::RequestExtension { span, reason } => {
            let mut p = base_plan(
                status,
                "extension_requested",
                caller,
                format!("{span}: {reason}"),
            );
            p.set.push(("pending", format!("extension|{span}")));
            p.notices.push(Notice {
                department: ctx.centre(rec),
                kind: NoticeKind::RequestPending,
                note: format!("{acting} asks for {span} more: {reason}"),
            });
            p
        }
        Command::RequestSuspension { reason } => {
            let mut p = base_plan(status, "suspension_requested", caller, reason.clone());
            p.set.push(("pending", "suspension|".to_owned()));
            p.notices.push(Notice {
                department: ctx.centre(rec),
                kind: NoticeKind::RequestPending,
                note: format!("{acting} asks to suspend: {reason}"),
            });
            p
        }
        Command::Decide {
            approve,
            note,
            granted,
        } => {
            let Some(pending) = &rec.pending else {
                return Err(Refusal::Precondition(
                    "no request is waiting for a decision".into(),
                ));
            };
            let (kind, mut p) = match (pending, approve) {
                (_, false) => (
                    "request_rejected",
                    base_plan(status, "request_rejected", caller, note.clone()),
                ),
                (Pending::Extension(asked), true) => {
                    let span_text = granted.as_deref().unwrap_or(asked);
                    let span = parse_span(span_text, ctx.table.calendar.working_ms_per_day())
                        .ok_or_else(|| Refusal::Invalid {
                            field: "granted_extension",
                            why: format!("stored request {span_text:?} is not a span"),
                        })?;
                    let old = rec.resolve_due.unwrap_or(ctx.now);
                    let due = span.after(&ctx.table.calendar, old);
                    let mut p = base_plan(
                        status,
                        "extension_approved",
                        caller,
                        format!("{span_text}: {note}"),
                    );
                    p.set.push(("resolve_due", due.to_string()));
                    p.timers = Timers::Replace {
                        timers: ctx.timers(
                            rec,
                            &primary,
                            rec.dispatched_at.unwrap_or(ctx.now),
                            rec.accept_due.filter(|_| rec.accepted_at.is_none()),
                            due,
                            false,
                        ),
                        fresh: false,
                    };
                    ("extension_approved", p)
                }
                (Pending::Suspension, true) => {
                    let mut p = base_plan(Status::Suspended, "suspended", caller, note.clone());
                    let accept_left = rec
                        .accept_due
                        .filter(|_| rec.accepted_at.is_none())
                        .map(|d| ctx.span_left(policy.accept, d));
                    let resolve_left =
                        ctx.span_left(policy.resolve, rec.resolve_due.unwrap_or(ctx.now));
                    p.set.push(("prev_status", status.as_str().to_owned()));
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
                    ("suspended", p)
                }
            };
            p.clear.push("pending");
            p.notices.push(Notice {
                department: primary,
                kind: NoticeKind::RequestDecided,
                note: format!("{kind}: {note}"),
            });
            p
        }
        Command::Resume { note } => {
            let back = rec.prev_status.unwrap_or(Status::Dispatched);
            let (accept_left, resolve_left) = rec.paused.unwrap_or((None, 0));
            let accept_by = accept_left.map(|a| ctx.span_after(policy.accept, a));
            let resolve_by = ctx.span_after(policy.resolve, resolve_left);
            let mut p = base_plan(back, "resumed", caller, note.clone());
            if let Some(a) = accept_by {
                p.set.push(("accept_due", a.to_string()));
            }
            p.set.push(("resolve_due", resolve_by.to_string()));
            p.clear.extend(["prev_status", "paused"]);
            p.timers = Timers::Replace {
                timers: ctx.timers(
                    rec,
                    &primary,
                    rec.dispatched_at.unwrap_or(ctx.now),
                    accept_by,
                    resolve_by,
                    false,
                ),
                fresh: false,
            };
            if !is_primary {
                p.notices.push(Notice {
                    department: primary,
                    kind: NoticeKind::RequestDecided,
                    note: format!("resumed: {note}"),
                });
            }
            p
        }
        Command::Verify { passed: true, note } => {
            let mut p = base_plan(Status::Verified, "verified", caller, note.clone());
            p.set.push(("verified_at", now));
            p.clear.push("verify_due");
            p.timers = Timers::Replace {
                timers: Vec::new(),
                fresh: false,
            };
            if !rec.reporter_id.is_empty() {
                p.points = ctx.table.points_for(&rec.category);
            }
            p.fan_out = true;
            p
        }
        Command::Verify {
            passed: false,
            note,
        } => reopen(ctx, rec, caller, "verification_failed", note.clone()),
        Command::Feedback {
            satisfaction,
            comment,
        } => {
            if rec.satisfaction.is_some() {
                return Err(Refusal::Precondition(
                    "feedback was already given for this resolution".into(),
                ));
            }
            let detail = format!("satisfaction {satisfaction}/5: {comment}");
            if *satisfaction <= 2 {
                let mut p = reopen(ctx, rec, caller, "dissatisfied", detail);
                p.set.push(("last_satisfaction", satisfaction.to_string()));
                p
            } else {
                let next = if status == Status::Verified {
                    Status::Closed
                } else {
                    status
                };
                let mut p = base_plan(next, "feedback", caller, detail);
                p.set.push(("satisfaction", satisfaction.to_string()));
                if next == Status::Closed {
                    p.set.push(("closed_at", now));
                    p.fan_out = true;
                }
                p
            }
        }
        Command::Close { note } => {
            let mut p = base_plan(Status::Closed, "closed", caller, note.clone());
            p.set.push(("closed_at", now));
            p.fan_out = true;
            p
        }
        Command::Cancel { reason } => {
            let mut p = base_plan(Status::Cancelled, "cancelled", caller, reason.clone());
            p.set.push(("cancelled_at", now));
            p.timers = Timers::Replace {
                timers: Vec::new(),
                fresh: false,
            };
            p.close_duplicates = true;
            if !rec.department.is_empty() && rec.department != acting {
                p.notices.push(Notice {
                    department: primary,
                    kind: NoticeKind::Cancelled,
                    note: reason.clone(),
                });
            }
            p.fan_out = true;
            p
        }
        Command::Unmerge { note } => {
            let mut p = base_plan(
                Status::Reported,
                "unmerged",
                caller,
                format!("from {}: {note}", rec.merged_into),
            );
            p.clear.push("merged_into");
            p.reroute = Some(rec.returned_by.clone());
            p
        }
    })
}

/// Back to the primary department with a warning flag and fresh clocks.
fn reopen(
    ctx: &Ctx<'_>,
    rec: &Record,
    caller: &Caller,
    kind: &'static str,
    detail: String,
) -> Plan {
    let policy = ctx.policy(rec);
    let d = policy.deadlines(&ctx.table.calendar, ctx.now);
    let mut p = base_plan(Status::Reopened, kind, caller, detail.clone());
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
