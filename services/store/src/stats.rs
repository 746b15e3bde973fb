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

const FIELDS: [&str; 15] = [
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
    /// Reported at or after (ms).
    pub start_ms: i64,
    /// Reported before (ms).
    pub end_ms: i64,
}

impl Store {
    /// Figures for one selection; `calendar` measures working time.
    pub async fn stats(&self, f: &StatsFilter, calendar: &WorkCalendar) -> Result<pb::Stats> {
        let k = self.keys();
        let scan = self
            .index_scan(
                &f.department,
                &f.region_code,
                (f.start_ms > 0).then_some(f.start_ms),
                (f.end_ms > 0).then_some(f.end_ms),
            )
            .await?;
        let mut entries = Vec::new();
        let mut cursor = None;
        loop {
            let (chunk, more) = self.scan_index(&scan, cursor.as_ref(), 10_000).await?;
            cursor = chunk.last().map(|e| e.at);
            entries.extend(chunk);
            if !more || entries.len() > MAX_STATS_INCIDENTS {
                break;
            }
        }
        let mut out = pb::Stats {
            truncated: entries.len() > MAX_STATS_INCIDENTS,
            ..Default::default()
        };
        entries.truncate(MAX_STATS_INCIDENTS);
        let mut resolve_hours = Vec::new();
        let mut returned_here = std::collections::HashSet::new();
        let (mut accepted, mut accepted_on_time) = (0u64, 0u64);
        let (mut resolved_on_time, mut satisfaction_sum) = (0u64, 0i64);
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
                let get = |name: &str| Some(text(name)).filter(|s| !s.is_empty());
                let num = |name: &str| get(name).and_then(|s| s.parse::<i64>().ok());
                let Some(status) = get("status") else {
                    continue;
                };
                if !scan.in_window(text) {
                    continue;
                }
                let returned_by = get("returned_by").unwrap_or("");
                if f.department.is_empty() {
                    out.returns += returned_by.split(',').filter(|d| !d.is_empty()).count() as i64;
                } else if returned_by.split(',').any(|d| d == f.department)
                    && returned_here.insert(e.id.clone())
                {
                    // Every incident ever assigned to the department is in its index: those it
                    // returned count as its returns, whoever handles them now.
                    out.returns += 1;
                }
                if !scan.counts(e, text) {
                    continue;
                }
                if !f.department.is_empty() && get("dept") != Some(f.department.as_str()) {
                    continue;
                }
                out.incident_count += 1;
                let state = Status::parse(status).map_or(
                    pb::IncidentStatus::Unspecified,
                    gridroute_mapping::status_message,
                );
                *out.by_status
                    .entry(state.as_str_name().to_owned())
                    .or_default() += 1;
                if get("locked").is_some() || status == "arbitration" {
                    out.arbitrations += 1;
                }
                let reopened = num("reopened").unwrap_or(0) > 0;
                if reopened {
                    out.reopened += 1;
                }
                if let Some(s) = num("satisfaction").or_else(|| num("last_satisfaction")) {
                    out.satisfaction_count += 1;
                    satisfaction_sum += s;
                }
                if get("accepted_at").is_some() || get("accept_breached").is_some() {
                    accepted += 1;
                    if get("accept_breached").is_none() {
                        accepted_on_time += 1;
                    }
                }
                let resolved_at = num("resolved_at");
                let late = get("resolve_breached").is_some()
                    || matches!((resolved_at, num("resolve_due")), (Some(r), Some(d)) if r > d);
                if late {
                    out.breached += 1;
                }
                if resolved_at.is_some() || reopened {
                    out.ever_resolved_count += 1;
                }
                if let (Some(r), Some(start)) = (resolved_at, num("first_dispatched_at")) {
                    out.resolved_count += 1;
                    if !late {
                        resolved_on_time += 1;
                    }
                    resolve_hours.push(calendar.working_between(start, r) as f64 / 3_600_000.0);
                }
            }
        }
        if !resolve_hours.is_empty() {
            resolve_hours.sort_by(f64::total_cmp);
            out.resolve_working_hours_avg =
                resolve_hours.iter().sum::<f64>() / resolve_hours.len() as f64;
            let i =
                ((resolve_hours.len() as f64 * 0.9).ceil() as usize).clamp(1, resolve_hours.len());
            out.resolve_working_hours_p90 = resolve_hours[i - 1];
            out.resolve_on_time_rate = resolved_on_time as f64 / out.resolved_count as f64;
        }
        if out.ever_resolved_count > 0 {
            out.reopen_rate = out.reopened as f64 / out.ever_resolved_count as f64;
        }
        if accepted > 0 {
            out.accept_on_time_rate = accepted_on_time as f64 / accepted as f64;
        }
        if out.satisfaction_count > 0 {
            out.satisfaction_avg = satisfaction_sum as f64 / out.satisfaction_count as f64;
        }
        Ok(out)
    }
}
