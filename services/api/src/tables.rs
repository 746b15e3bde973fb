//! TableService: validate, compare, publish and roll back routing tables.

use gridroute_core::access::Principal;
use gridroute_core::{
    RoutingTable, checks,
    table::{Severity, TableIssue, TableSources},
};
use gridroute_proto::v1::{self as pb, table_service_server::TableService};
use gridroute_store::{
    query::ListFilter,
    tables::{Published, Publisher},
};
use tonic::{Request, Response, Status};
use tonic_types::FieldViolation;

use crate::{ApiError, ApiState, authz};

/// Recent incidents replayed by DiffTable when the caller names no number and gives no reports.
pub const DEFAULT_REPLAY: usize = 1000;
/// Most incidents one DiffTable call replays.
pub const MAX_REPLAY: usize = 100_000;
/// Largest table accepted over the API (a 100,000-grid city is about 60 MB of GeoJSON).
pub const MAX_TABLE_BYTES: usize = 256 * 1024 * 1024;

/// The TableService implementation.
#[derive(Debug, Clone)]
pub struct Tables(pub ApiState);

fn issue_message(i: &TableIssue) -> pb::TableIssue {
    pb::TableIssue {
        severity: match i.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
        .into(),
        code: i.code.into(),
        subject: i.subject.clone(),
        message: i.message.clone(),
    }
}

/// Loads and fully checks a candidate table off the async workers (large tables take seconds).
/// Errors become one field violation each.
async fn admit(sources: Option<pb::TableSources>, field: &str) -> Result<RoutingTable, ApiError> {
    let s = sources.ok_or_else(|| ApiError::field(field, "required"))?;
    let field = field.to_owned();
    tokio::task::spawn_blocking(move || {
        let table = RoutingTable::load(TableSources {
            grids_geojson: &s.grids_geojson,
            rules_yaml: &s.rules_yaml,
            calendar_yaml: Some(&s.calendar_yaml),
            regions_geojson: Some(&s.regions_geojson),
        })
        .map_err(|e| violations(&field, &e.issues))?;
        let mut table = table;
        let geometry = checks::check_geometry(&table);
        if geometry.iter().any(|i| i.severity == Severity::Error) {
            return Err(violations(&field, &geometry));
        }
        // Warnings of the geometry (gaps a `gaps: warn` table accepts) are listed with the
        // others, and so is a working calendar that ends before the longest SLA span from now:
        // a push never stops a running city, `tables validate` refuses it offline.
        table.warnings.extend(geometry);
        table
            .warnings
            .extend(table.calendar_shortfall(crate::now_ms()));
        Ok(table)
    })
    .await
    .map_err(|e| ApiError::Unavailable(e.to_string()))?
}

fn violations(field: &str, issues: &[TableIssue]) -> ApiError {
    ApiError::Invalid(
        issues
            .iter()
            .filter(|i| i.severity == Severity::Error)
            .map(|i| {
                FieldViolation::new(
                    format!("{field}.{}", i.subject),
                    format!("[{}] {}", i.code, i.message),
                )
            })
            .collect(),
    )
}

impl Tables {
    async fn info(&self) -> Result<pb::TableInfo, ApiError> {
        let store = &self.0.store;
        Ok(pb::TableInfo {
            current_version: store.current_table_version().await?.unwrap_or_default(),
            replica_version: self.0.tables.load().version.clone(),
            history: store
                .table_history()
                .await?
                .into_iter()
                .map(|h| pb::TableHistoryEntry {
                    version: h.version,
                    publish_time: Some(gridroute_mapping::timestamp(h.published_ms)),
                    published_by: h.published_by,
                    note: h.note,
                    principal: h.principal,
                })
                .collect(),
        })
    }
}

/// Who publishes, from the caller's credentials (a `published_by` in the request may only
/// repeat them).
fn publisher(who: &Principal, published_by: &str) -> Result<Publisher, ApiError> {
    authz::claim("published_by", published_by, who)?;
    Ok(Publisher {
        person: if who.person.is_empty() {
            who.label()
        } else {
            who.person.clone()
        },
        principal: who.label(),
    })
}

#[tonic::async_trait]
impl TableService for Tables {
    async fn publish_table(
        &self,
        request: Request<pb::PublishTableRequest>,
    ) -> Result<Response<pb::PublishTableResponse>, Status> {
        self.0
            .call("PublishTable", request, |who, r| async move {
                let by = publisher(&who, &r.published_by)?;
                let sources = r.sources.clone();
                let table = admit(r.sources, "sources").await?;
                let mut resp = pb::PublishTableResponse {
                    version: table.version.clone(),
                    warnings: table
                        .warnings
                        .iter()
                        .filter(|w| w.severity == Severity::Warning)
                        .map(issue_message)
                        .collect(),
                    grid_count: table.grids.grids().len() as i32,
                    rule_count: table.rules.len() as i32,
                    ..Default::default()
                };
                if r.validate_only {
                    return Ok(resp);
                }
                let s = sources.unwrap_or_default();
                match self
                    .0
                    .store
                    .publish_table(
                        &table.version,
                        Some(&gridroute_store::tables::Sources {
                            grids: s.grids_geojson,
                            rules: s.rules_yaml,
                            calendar: s.calendar_yaml,
                            regions: s.regions_geojson,
                        }),
                        &by,
                        &r.note,
                        false,
                    )
                    .await?
                {
                    Published::Changed { previous } => {
                        resp.changed = true;
                        resp.previous_version = previous.unwrap_or_default();
                    }
                    Published::Unchanged | Published::Kept { .. } => {}
                }
                Ok(resp)
            })
            .await
    }

    async fn get_table_info(
        &self,
        request: Request<pb::GetTableInfoRequest>,
    ) -> Result<Response<pb::TableInfo>, Status> {
        self.0
            .call("GetTableInfo", request, |_who, _r| self.info())
            .await
    }

    async fn rollback_table(
        &self,
        request: Request<pb::RollbackTableRequest>,
    ) -> Result<Response<pb::TableInfo>, Status> {
        self.0
            .call("RollbackTable", request, |who, r| async move {
                let by = publisher(&who, &r.published_by)?;
                let to = (!r.version.is_empty()).then_some(r.version.as_str());
                self.0.store.rollback_table(to, &by).await?;
                self.info().await
            })
            .await
    }

    async fn diff_table(
        &self,
        request: Request<pb::DiffTableRequest>,
    ) -> Result<Response<pb::DiffTableResponse>, Status> {
        self.0
            .call("DiffTable", request, |_who, r| async move {
                if r.replay_recent < 0 || r.replay_recent as usize > MAX_REPLAY {
                    return Err(ApiError::field(
                        "replay_recent",
                        format!("between 0 and {MAX_REPLAY}"),
                    ));
                }
                let candidate = admit(r.candidate, "candidate").await?;
                let current = self.0.tables.load_full();
                let now = crate::now_ms();
                let replay = match (r.replay_recent, r.reports.is_empty()) {
                    (0, true) => DEFAULT_REPLAY,
                    (n, _) => n as usize,
                };
                // Recent incidents (their original reports and exclusions), newest first.
                let mut items: Vec<(String, i32, pb::ReportIncidentRequest, Vec<String>)> =
                    Vec::new();
                let mut token = String::new();
                while items.len() < replay {
                    let page = (replay - items.len()).min(gridroute_store::query::MAX_PAGE_SIZE);
                    let (incidents, next) = self
                        .0
                        .store
                        .list_incidents(&ListFilter::default(), page, &token)
                        .await?;
                    for inc in incidents {
                        if let (Some(report), true) = (inc.report, inc.decision.is_some()) {
                            items.push((inc.incident_id, -1, report, inc.returned_by));
                        }
                    }
                    if next.is_empty() {
                        break;
                    }
                    token = next;
                }
                for (i, report) in r.reports.into_iter().enumerate() {
                    items.push((String::new(), i as i32, report, Vec::new()));
                }
                let mut changes = Vec::new();
                let mut compared = 0;
                for (incident_id, report_index, report, returned_by) in &items {
                    let route = |t: &RoutingTable| {
                        let excluded: Vec<_> =
                            returned_by.iter().filter_map(|d| t.department(d)).collect();
                        let q = gridroute_mapping::route_query(now, report, &excluded, t.crs)?;
                        let d = t.route(&q);
                        Some(gridroute_mapping::decision_message(t, &q, &d))
                    };
                    let (Some(a), Some(b)) = (route(&current), route(&candidate)) else {
                        continue;
                    };
                    compared += 1;
                    let grid = |d: &pb::RouteDecision| d.region_path.last().map(|r| r.code.clone());
                    if a.department_id != b.department_id || grid(&a) != grid(&b) {
                        changes.push(pb::RouteChange {
                            incident_id: incident_id.clone(),
                            report_index: *report_index,
                            category: report.category.clone(),
                            current: Some(a),
                            candidate: Some(b),
                        });
                    }
                }
                Ok(pb::DiffTableResponse {
                    current_version: current.version.clone(),
                    candidate_version: candidate.version.clone(),
                    compared,
                    changes,
                    warnings: candidate
                        .warnings
                        .iter()
                        .filter(|w| w.severity == Severity::Warning)
                        .map(issue_message)
                        .collect(),
                })
            })
            .await
    }
}
