//! SupervisionService: what command centres do (arbitrate, decide requests, verify, close,
//! cancel, undo merges) and the figures they report. The centre is the authenticated caller
//! (a grid worker for verification); whether it has authority over the incident is the core's
//! call.

use gridroute_core::lifecycle::Command;
use gridroute_proto::v1::{self as pb, supervision_service_server::SupervisionService};
use gridroute_store::stats::StatsFilter;
use tonic::{Request, Response, Status};

use crate::{ApiError, ApiState, actions, now_ms, scope};

/// Default GetStats window when no start time is given.
const DEFAULT_STATS_WINDOW_MS: i64 = 30 * 24 * 3_600_000;

/// The SupervisionService implementation.
#[derive(Debug, Clone)]
pub struct Supervision(pub ApiState);

#[tonic::async_trait]
impl SupervisionService for Supervision {
    async fn arbitrate_incident(
        &self,
        request: Request<pb::ArbitrateIncidentRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        self.0
            .call("ArbitrateIncident", request, |who, r| {
                actions::run(&self.0, who, r, |r| {
                    if r.assignee_department_id.is_empty() {
                        return Err(ApiError::field(
                            "assignee_department_id",
                            "required: the department that must handle it",
                        ));
                    }
                    Ok(Command::Arbitrate {
                        assignee: r.assignee_department_id,
                        note: r.note,
                    })
                })
            })
            .await
    }

    async fn decide_request(
        &self,
        request: Request<pb::DecideRequestRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        self.0
            .call("DecideRequest", request, |who, r| {
                actions::run(&self.0, who, r, |r| {
                    Ok(Command::Decide {
                        approve: r.approve,
                        note: r.note,
                        granted: Some(r.granted_extension).filter(|g| !g.is_empty()),
                    })
                })
            })
            .await
    }

    async fn verify_incident(
        &self,
        request: Request<pb::VerifyIncidentRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        self.0
            .call("VerifyIncident", request, |who, r| {
                actions::run(&self.0, who, r, |r| {
                    Ok(Command::Verify {
                        passed: r.passed,
                        note: r.note,
                    })
                })
            })
            .await
    }

    async fn close_incident(
        &self,
        request: Request<pb::CloseIncidentRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        self.0
            .call("CloseIncident", request, |who, r| {
                actions::run(&self.0, who, r, |r| Ok(Command::Close { note: r.note }))
            })
            .await
    }

    async fn cancel_incident(
        &self,
        request: Request<pb::CancelIncidentRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        self.0
            .call("CancelIncident", request, |who, r| {
                actions::run(&self.0, who, r, |r| {
                    Ok(Command::Cancel { reason: r.reason })
                })
            })
            .await
    }

    async fn unmerge_incident(
        &self,
        request: Request<pb::UnmergeIncidentRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        self.0
            .call("UnmergeIncident", request, |who, r| {
                actions::run(&self.0, who, r, |r| Ok(Command::Unmerge { note: r.note }))
            })
            .await
    }

    async fn get_stats(
        &self,
        request: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::Stats>, Status> {
        self.0
            .call("GetStats", request, |who, r| async move {
                let table = self.0.tables.load_full();
                let mut v = Vec::new();
                let department = scope::department(&who, &table, r.department_id)?;
                let region_code = scope::region(&who, &table, r.region_code)?;
                let end_ms = r
                    .end_time
                    .as_ref()
                    .map_or_else(now_ms, gridroute_mapping::millis);
                let start_ms = r
                    .start_time
                    .as_ref()
                    .map_or(end_ms - DEFAULT_STATS_WINDOW_MS, gridroute_mapping::millis);
                if start_ms >= end_ms {
                    v.push(tonic_types::FieldViolation::new(
                        "end_time",
                        "must be after start_time",
                    ));
                }
                if !v.is_empty() {
                    return Err(ApiError::Invalid(v));
                }
                let filter = StatsFilter {
                    department,
                    region_ancestors: scope::ancestors(&table, &region_code),
                    region_code,
                    start_ms,
                    end_ms,
                };
                self.0.stats_over_all(&filter, &table.calendar).await
            })
            .await
    }
}
