//! The vocabulary of the lifecycle: states ([`Status`]), commands ([`Command`]), the snapshot a
//! plan reads ([`Record`]) and what it returns ([`Plan`], [`Refusal`]).

use super::EventKind;
use crate::sla::{Millis, Timer, TimerKind};

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
    /// When it was reported.
    pub reported_at: Option<Millis>,
    /// The pending SLA timers (the case's schedule).
    pub timers: Vec<Timer>,
    /// Timer kinds that have already fired in this cycle, in firing order.
    pub fired: Vec<String>,
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
    /// The accept deadline passed.
    AcceptOverdue,
    /// Part of the time allowed to resolve has passed.
    Warning,
    /// The resolve deadline passed (催办).
    Urge,
    /// An overdue case is supervised (督办).
    Supervise,
    /// An overdue case is reported publicly (通报).
    PublicReport,
    /// Verification is overdue.
    VerifyOverdue,
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
    /// What happened.
    pub kind: EventKind,
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
    /// A duplicate report joins this case: its incident id.
    pub merge: Option<String>,
}

impl Plan {
    /// A plan that moves to `status` and records `event`, and changes nothing else yet.
    pub fn new(status: Status, event: Event) -> Self {
        Self {
            status,
            set: Vec::new(),
            clear: Vec::new(),
            timers: Timers::Keep,
            event,
            notices: Vec::new(),
            reroute: None,
            assign: None,
            points: 0,
            close_duplicates: false,
            fan_out: false,
            merge: None,
        }
    }
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

/// The states in which an incident waits for a router (its ingest entry is routed); routing
/// moves it to [`Status::Dispatched`], or to [`Status::Merged`] when it duplicates an open case.
pub const ROUTABLE: [Status; 2] = [Status::Reported, Status::Returned];

/// The record fields a re-route clears: the previous department's acceptance and the
/// escalations that fired for it do not carry over to the next one.
pub const REROUTE_CLEARS: [&str; 2] = ["fired", "accepted_at"];
