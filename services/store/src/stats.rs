//! The figures a command centre reports, computed from the records at query time: a selection
//! (department, region subtree, report-time window) is read through the same index streams as
//! lists, so any calendar change applies to past cases too and no counter can drift from the
//! records. A selection is capped at [`MAX_STATS_INCIDENTS`] (newest first); beyond that the
//! answer says it is truncated. What each figure means is written on the `Stats` message of
//! the contract (`supervision_service.proto`); each is attributed to the department that did
//! it: with a department, `returns` counts the returns that department made.

use gridroute_core::{calendar::WorkCalendar, lifecycle::Status};
use gridroute_proto::v1 as pb;

use crate::{Result, Store};

/// Most incidents one GetStats call reads.
pub const MAX_STATS_INCIDENTS: usize = 200_000;

const FIELDS: [&str; 16] = [
    "regions",
    "status",
    "reported_at",
    "dept_at",
    "dept",
    "first_dispatched_at",
    "accepted_at",
    "accept_breached",
    "resolved_at",
    "resolve_due",
    "resolve_breached",
    "returned_by",
    "reopened",
    "satisfaction",
    "locked",
    "last_satisfaction",
];

/// What to count.
#[derive(Debug, Clone, Default)]
pub struct StatsFilter {
    /// Handled by this department (now).
    pub department: String,
    /// In this region subtree.
    pub region_code: String,
    /// The codes above `region_code`, from the root down (see `query::ListFilter`).
    pub region_ancestors: Vec<String>,
    /// Reported at or after (ms).
    pub start_ms: i64,
    /// Reported before (ms).
    pub end_ms: i64,
}

impl Store {
    /// Figures for one selection; `calendar` measures working time.
    pub async fn stats(&self, f: &StatsFilter, calendar: &WorkCalendar) -> Result<pb::Stats> {
        Ok(self.stats_totals(f, calendar).await?.finish())
    }

    /// The totals behind [`Store::stats`], to be merged with the archive's.
    pub async fn stats_totals(&self, f: &StatsFilter, calendar: &WorkCalendar) -> Result<Totals> {
        let k = self.keys();
        let scan = self
            .index_scan(
                &f.department,
                &f.region_code,
                &f.region_ancestors,
                (f.start_ms > 0).then_some(f.start_ms),
                (f.end_ms > 0).then_some(f.end_ms),
            )
            .await?;
        let mut entries = Vec::new();
        let mut cursor = None;
        loop {
            let (chunk, more, _) = self.scan_index(&scan, cursor.as_ref(), 10_000).await?;
            cursor = chunk.last().map(|e| e.at);
            // Place holders: entries of an ancestor's index naming none of the region's.
            entries.extend(chunk.into_iter().filter(|e| !e.id.is_empty()));
            if !more || entries.len() > MAX_STATS_INCIDENTS {
                break;
            }
        }
        let truncated = entries.len() > MAX_STATS_INCIDENTS;
        entries.truncate(MAX_STATS_INCIDENTS);
        let mut totals = Totals {
            truncated,
            ..Totals::default()
        };
        let mut returned_here = std::collections::HashSet::new();
        for chunk in entries.chunks(1000) {
            let mut pipe = redis::pipe();
            for e in chunk {
                pipe.cmd("HMGET")
                    .arg(k.incident(e.at.partition, &e.id))
                    .arg(&FIELDS[..]);
            }
            let rows: Vec<Vec<Option<String>>> = self.query_pipe(&pipe).await?;
            for (e, row) in chunk.iter().zip(rows) {
                let text = |name: &str| {
                    FIELDS
                        .iter()
                        .position(|f| *f == name)
                        .and_then(|i| row.get(i).and_then(Option::as_deref))
                        .unwrap_or("")
                };
                // Gone from Redis (archived): the archive counts it.
                let Some(row) = row_figures(text, calendar) else {
                    continue;
                };
                if !scan.in_window(text) || !in_region(text("regions"), &f.region_code) {
                    continue;
                }
                if f.department.is_empty() {
                    totals.returns += row.returned_by.len() as i64;
                } else if row.returned_by.contains(&f.department)
                    && returned_here.insert(e.id.clone())
                {
                    // Every incident ever assigned to the department is in its index: those it
                    // returned count as its returns, whoever handles them now.
                    totals.returns += 1;
                }
                if !scan.counts(e, text) {
                    continue;
                }
                if !f.department.is_empty() && text("dept") != f.department {
                    continue;
                }
                totals.add(&row);
            }
        }
        Ok(totals)
    }
}

/// Whether a record's region codes (comma-separated) fall in the region subtree `region`
/// (empty: any region).
fn in_region(regions: &str, region: &str) -> bool {
    region.is_empty() || regions.split(',').any(|r| r == region)
}

/// What one incident adds to the figures, from its record's fields. The archive keeps the
/// same as columns, so that both count alike.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowFigures {
    /// Its state's enum name (`INCIDENT_STATUS_CLOSED`, …).
    pub state: String,
    /// Waiting for arbitration or assigned by it.
    pub arbitration: bool,
    /// Reopened at least once.
    pub reopened: bool,
    /// The latest feedback (1-5).
    pub satisfaction: Option<i64>,
    /// Accepted, or its accept deadline passed.
    pub accepted: bool,
    /// Accepted before the deadline.
    pub accepted_on_time: bool,
    /// The resolve deadline passed while open, or it was resolved after it.
    pub breached: bool,
    /// Resolved now or at some time (reopened since).
    pub ever_resolved: bool,
    /// Working time from first dispatch to the current resolution (`None`: not resolved).
    pub resolve_working_ms: Option<i64>,
    /// Every return, by the department that made it (one entry per return).
    pub returned_by: Vec<String>,
}

/// The figures of one record; `None` when it has no state (gone, or not a record).
pub fn row_figures<'a>(
    text: impl Fn(&str) -> &'a str,
    calendar: &WorkCalendar,
) -> Option<RowFigures> {
    let get = |name: &str| Some(text(name)).filter(|s| !s.is_empty());
    let num = |name: &str| get(name).and_then(|s| s.parse::<i64>().ok());
    let status = get("status")?;
    let state = Status::parse(status).map_or(
        pb::IncidentStatus::Unspecified,
        gridroute_mapping::status_message,
    );
    let reopened = num("reopened").unwrap_or(0) > 0;
    let resolved_at = num("resolved_at");
    let breached = get("resolve_breached").is_some()
        || matches!((resolved_at, num("resolve_due")), (Some(r), Some(d)) if r > d);
    Some(RowFigures {
        state: state.as_str_name().to_owned(),
        arbitration: get("locked").is_some() || status == "arbitration",
        reopened,
        satisfaction: num("satisfaction").or_else(|| num("last_satisfaction")),
        accepted: get("accepted_at").is_some() || get("accept_breached").is_some(),
        accepted_on_time: get("accepted_at").is_some() && get("accept_breached").is_none(),
        breached,
        ever_resolved: resolved_at.is_some() || reopened,
        resolve_working_ms: match (resolved_at, num("first_dispatched_at")) {
            (Some(r), Some(start)) => Some(calendar.working_between(start, r)),
            _ => None,
        },
        returned_by: get("returned_by")
            .unwrap_or("")
            .split(',')
            .filter(|d| !d.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// Running totals of a selection: Redis' part and the archive's add up before the ratios are
/// taken.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub incident_count: i64,
    pub by_status: std::collections::HashMap<String, i64>,
    pub resolved_count: i64,
    pub resolved_on_time: i64,
    /// Working hours of each resolution counted here (Redis' part).
    pub resolve_hours: Vec<f64>,
    /// Their sum, plus the archive's.
    pub resolve_hours_sum: f64,
    /// The 90th percentile over both parts, when the archive computed it.
    pub resolve_hours_p90: Option<f64>,
    pub accepted: i64,
    pub accepted_on_time: i64,
    pub returns: i64,
    pub arbitrations: i64,
    pub reopened: i64,
    pub ever_resolved: i64,
    pub satisfaction_sum: i64,
    pub satisfaction_count: i64,
    pub breached: i64,
    pub truncated: bool,
}

impl Totals {
    /// Counts one incident of the selection (returns are counted by the caller: who returned
    /// depends on the selection).
    pub fn add(&mut self, r: &RowFigures) {
        self.incident_count += 1;
        *self.by_status.entry(r.state.clone()).or_default() += 1;
        self.arbitrations += i64::from(r.arbitration);
        self.reopened += i64::from(r.reopened);
        if let Some(s) = r.satisfaction {
            self.satisfaction_count += 1;
            self.satisfaction_sum += s;
        }
        self.accepted += i64::from(r.accepted);
        self.accepted_on_time += i64::from(r.accepted_on_time);
        self.breached += i64::from(r.breached);
        self.ever_resolved += i64::from(r.ever_resolved);
        if let Some(ms) = r.resolve_working_ms {
            self.resolved_count += 1;
            self.resolved_on_time += i64::from(!r.breached);
            let hours = ms as f64 / 3_600_000.0;
            self.resolve_hours.push(hours);
            self.resolve_hours_sum += hours;
        }
    }

    /// Adds another part's totals (the archive's): its 90th percentile, when it has one, was
    /// taken over both parts.
    pub fn merge(&mut self, other: Totals) {
        self.incident_count += other.incident_count;
        for (state, n) in other.by_status {
            *self.by_status.entry(state).or_default() += n;
        }
        self.resolved_count += other.resolved_count;
        self.resolved_on_time += other.resolved_on_time;
        self.resolve_hours.extend(other.resolve_hours);
        self.resolve_hours_sum += other.resolve_hours_sum;
        self.resolve_hours_p90 = other.resolve_hours_p90.or(self.resolve_hours_p90);
        self.accepted += other.accepted;
        self.accepted_on_time += other.accepted_on_time;
        self.returns += other.returns;
        self.arbitrations += other.arbitrations;
        self.reopened += other.reopened;
        self.ever_resolved += other.ever_resolved;
        self.satisfaction_sum += other.satisfaction_sum;
        self.satisfaction_count += other.satisfaction_count;
        self.breached += other.breached;
        self.truncated |= other.truncated;
    }

    /// The figures of the contract.
    pub fn finish(mut self) -> pb::Stats {
        let mut out = pb::Stats {
            incident_count: self.incident_count,
            by_status: self.by_status.into_iter().collect(),
            resolved_count: self.resolved_count,
            returns: self.returns,
            arbitrations: self.arbitrations,
            reopened: self.reopened,
            satisfaction_count: self.satisfaction_count,
            breached: self.breached,
            ever_resolved_count: self.ever_resolved,
            truncated: self.truncated,
            ..Default::default()
        };
        if self.resolved_count > 0 {
            out.resolve_working_hours_avg = self.resolve_hours_sum / self.resolved_count as f64;
            out.resolve_working_hours_p90 = self.resolve_hours_p90.unwrap_or_else(|| {
                let v = &mut self.resolve_hours;
                v.sort_by(f64::total_cmp);
                let i = ((v.len() as f64 * 0.9).ceil() as usize).clamp(1, v.len());
                v[i - 1]
            });
            out.resolve_on_time_rate = self.resolved_on_time as f64 / self.resolved_count as f64;
        }
        if self.ever_resolved > 0 {
            out.reopen_rate = self.reopened as f64 / self.ever_resolved as f64;
        }
        if self.accepted > 0 {
            out.accept_on_time_rate = self.accepted_on_time as f64 / self.accepted as f64;
        }
        if self.satisfaction_count > 0 {
            out.satisfaction_avg = self.satisfaction_sum as f64 / self.satisfaction_count as f64;
        }
        out
    }
}
