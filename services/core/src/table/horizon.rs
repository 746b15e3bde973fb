//! The working calendar's horizon against the table's SLA policies: whether a case dispatched
//! now could get a deadline counted past the last day the holiday schedule covers (where only
//! plain Monday-Friday weeks are counted, so Spring Festival would count as working days).

use crate::{
    calendar::format_date,
    sla::{Clock, Escalation, Millis, SlaPolicy},
    table::{RoutingTable, Severity, TableIssue},
};

/// The code of the issue [`RoutingTable::calendar_shortfall`] returns.
pub const CALENDAR_HORIZON: &str = "calendar_horizon";

impl SlaPolicy {
    /// Whether any of the policy's spans counts working time (and so depends on the schedule).
    pub fn counts_working_time(&self) -> bool {
        [self.accept, self.resolve, self.verify]
            .iter()
            .any(|s| s.clock == Clock::Working)
    }

    /// The latest instant the policy counts to for a case dispatched at `now`: the last
    /// escalation step or the verification deadline after resolving at the last moment.
    pub fn reach(&self, table: &RoutingTable, now: Millis) -> Millis {
        let cal = &table.calendar;
        let d = self.deadlines(cal, now);
        let last_timer = self
            .timers(
                cal,
                now,
                Some(d.accept_by),
                d.resolve_by,
                &Escalation::default(),
            )
            .into_iter()
            .map(|t| t.due)
            .max()
            .unwrap_or(d.resolve_by);
        last_timer.max(self.verify.after(cal, d.resolve_by))
    }
}

impl RoutingTable {
    /// A warning when a case dispatched at `now_ms` could get a deadline (or an escalation)
    /// counted past the calendar's last covered day under some working-time policy; `None` when
    /// the calendar covers every policy's reach or has no horizon. Names the policy that
    /// reaches furthest.
    pub fn calendar_shortfall(&self, now_ms: Millis) -> Option<TableIssue> {
        let horizon = self.calendar.horizon_ms()?;
        let last = self.calendar.covered_until()?;
        let (policy, reach) = self
            .sla_policies
            .iter()
            .filter(|p| p.counts_working_time())
            .map(|p| (p, p.reach(self, now_ms)))
            .max_by_key(|(_, r)| *r)?;
        if reach <= horizon {
            return None;
        }
        let day = |ms: Millis| format_date(self.calendar.local(ms).0);
        Some(TableIssue {
            severity: Severity::Warning,
            code: CALENDAR_HORIZON,
            subject: "calendar.yaml".into(),
            message: format!(
                "the working calendar covers days until {} but SLA policy {:?} counts until {} \
                 for a case dispatched on {}: deadlines past {} count plain Monday-Friday weeks \
                 and are marked as estimates; add the next year's holiday schedule (State \
                 Council notice) to calendar.yaml",
                format_date(last),
                policy.name,
                day(reach),
                day(now_ms),
                format_date(last),
            ),
        })
    }
}
