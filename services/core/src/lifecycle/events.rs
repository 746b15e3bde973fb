//! What a timeline entry records: one closed list, so that a client can tell every kind of
//! entry apart (the API's `TimelineKind`), while each entry keeps its text for people.

/// The kind of a timeline entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The report was accepted.
    Reported,
    /// Routed to a primary department.
    Dispatched,
    /// A duplicate report: merged into another open incident.
    Merged,
    /// Another report was merged into this incident.
    DuplicateMerged,
    /// A merge was undone.
    Unmerged,
    /// The ingest entry could not be processed: moved to the dead-letter stream.
    DeadLettered,
    /// The primary department accepted the case (签收).
    Accepted,
    /// Progress reported.
    Progress,
    /// Resolved (办结).
    Resolved,
    /// Returned by a department (退单).
    Returned,
    /// The command centre assigned the case (审定).
    Arbitrated,
    /// More time was asked for.
    ExtensionRequested,
    /// The extension was approved.
    ExtensionApproved,
    /// A pause was asked for.
    SuspensionRequested,
    /// The pause was approved: suspended.
    Suspended,
    /// The command centre rejected a request.
    RequestRejected,
    /// The suspension ended.
    Resumed,
    /// The work was verified (核查).
    Verified,
    /// Verification failed: reopened.
    VerificationFailed,
    /// The reporter's feedback, without closing the case.
    Feedback,
    /// The reporter was dissatisfied: reopened.
    Dissatisfied,
    /// Closed (结案), by the command centre or by the reporter's feedback.
    Closed,
    /// Withdrawn.
    Cancelled,
    /// The outcome of the case this report was merged into.
    Outcome,
    /// The accept deadline passed.
    AcceptOverdue,
    /// Part of the time to resolve passed.
    Warning,
    /// The resolve deadline passed (催办).
    Urged,
    /// Supervision of an overdue case (督办).
    Supervised,
    /// An overdue case reported publicly (通报).
    PublicReport,
    /// Verification is overdue.
    VerifyOverdue,
    /// The reporter's contact details were erased after the retention period.
    ContactErased,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [Self; 31] = [
        Self::Reported,
        Self::Dispatched,
        Self::Merged,
        Self::DuplicateMerged,
        Self::Unmerged,
        Self::DeadLettered,
        Self::Accepted,
        Self::Progress,
        Self::Resolved,
        Self::Returned,
        Self::Arbitrated,
        Self::ExtensionRequested,
        Self::ExtensionApproved,
        Self::SuspensionRequested,
        Self::Suspended,
        Self::RequestRejected,
        Self::Resumed,
        Self::Verified,
        Self::VerificationFailed,
        Self::Feedback,
        Self::Dissatisfied,
        Self::Closed,
        Self::Cancelled,
        Self::Outcome,
        Self::AcceptOverdue,
        Self::Warning,
        Self::Urged,
        Self::Supervised,
        Self::PublicReport,
        Self::VerifyOverdue,
        Self::ContactErased,
    ];

    /// The entry's text kind, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reported => "reported",
            Self::Dispatched => "dispatched",
            Self::Merged => "merged",
            Self::DuplicateMerged => "duplicate_merged",
            Self::Unmerged => "unmerged",
            Self::DeadLettered => "dead_lettered",
            Self::Accepted => "accepted",
            Self::Progress => "progress",
            Self::Resolved => "resolved",
            Self::Returned => "returned",
            Self::Arbitrated => "arbitrated",
            Self::ExtensionRequested => "extension_requested",
            Self::ExtensionApproved => "extension_approved",
            Self::SuspensionRequested => "suspension_requested",
            Self::Suspended => "suspended",
            Self::RequestRejected => "request_rejected",
            Self::Resumed => "resumed",
            Self::Verified => "verified",
            Self::VerificationFailed => "verification_failed",
            Self::Feedback => "feedback",
            Self::Dissatisfied => "dissatisfied",
            Self::Closed => "closed",
            Self::Cancelled => "cancelled",
            Self::Outcome => "outcome",
            Self::AcceptOverdue => "accept_overdue",
            Self::Warning => "warning",
            Self::Urged => "urged",
            Self::Supervised => "supervised",
            Self::PublicReport => "public_report",
            Self::VerifyOverdue => "verify_overdue",
            Self::ContactErased => "contact_erased",
        }
    }

    /// Parses [`EventKind::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::EventKind;

    #[test]
    fn every_kind_has_its_own_text() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
    }
}
