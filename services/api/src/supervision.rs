//! SupervisionService: what command centres do (arbitrate, decide requests, verify, close,
//! cancel, undo merges) and the figures they report.

use gridroute_core::lifecycle::Command;
use gridroute_proto::v1::{self as pb, supervision_service_server::SupervisionService};
use gridroute_store::{codec, stats::StatsFilter};
use tonic::{Request, Response, Status};

use crate::{ApiError, ApiState, actions, now_ms, observed};

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
        observed(
            "ArbitrateIncident",
            actions::run(&self.0, request, |r| {
                if r.assignee_department_id.is_empty() {
                    return Err(ApiError::field(
                        "assignee_department_id",
                        "required: the department that must handle it",
                    ));
                }
                let command = Command::Arbitrate {
                    assignee: r.assignee_department_id,
                    note: r.note,
                };
                Ok(actions::by(
                    r.department_id,
                    r.incident_id,
                    r.request_id,
                    command,
                ))
            }),
        )
        .await
    }

    async fn decide_request(
        &self,
        request: Request<pb::DecideRequestRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        observed(
            "DecideRequest",
            actions::run(&self.0, request, |r| {
                let command = Command::Decide {
                    approve: r.approve,
                    note: r.note,
                    granted: Some(r.granted_extension).filter(|g| !g.is_empty()),
                };
                Ok(actions::by(
                    r.department_id,
                    r.incident_id,
                    r.request_id,
                    command,
                ))
            }),
        )
        .await
    }

    async fn verify_incident(
        &self,
        request: Request<pb::VerifyIncidentRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        observed(
            "VerifyIncident",
            actions::run(&self.0, request, |r| {
                if r.department_id.is_empty() && r.grid_worker_id.is_empty() {
                    return Err(ApiError::field(
                        "department_id",
                        "required: a command centre, or give grid_worker_id",
                    ));
                }
                let command = Command::Verify {
                    passed: r.passed,
                    note: r.note,
                };
                let mut req = actions::by(r.department_id, r.incident_id, r.request_id, command);
                req.caller.grid_worker = r.grid_worker_id;
                Ok(req)
            }),
        )
        .await
    }

    async fn close_incident(
        &self,
        request: Request<pb::CloseIncidentRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        observed(
            "CloseIncident",
            actions::run(&self.0, request, |r| {
                let command = Command::Close { note: r.note };
                Ok(actions::by(
                    r.department_id,
                    r.incident_id,
                    r.request_id,
                    command,
                ))
            }),
        )
        .await
    }

    async fn cancel_incident(
        &self,
        request: Request<pb::CancelIncidentRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        observed(
            "CancelIncident",
            actions::run(&self.0, request, |r| {
                let command = Command::Cancel { reason: r.reason };
                Ok(actions::by(
                    r.department_id,
                    r.incident_id,
                    r.request_id,
                    command,
                ))
            }),
        )
        .await
    }

    async fn unmerge_incident(
        &self,
        request: Request<pb::UnmergeIncidentRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        observed(
            "UnmergeIncident",
            actions::run(&self.0, request, |r| {
                let command = Command::Unmerge { note: r.note };
                Ok(actions::by(
                    r.department_id,
                    r.incident_id,
                    r.request_id,
                    command,
                ))
            }),
        )
        .await
    }

    async fn get_stats(
        &self,
        request: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::Stats>, Status> {
        observed("GetStats", async {
            let r = request.into_inner();
            let table = self.0.tables.load_full();
            let mut v = Vec::new();
            if !r.department_id.is_empty() && table.department(&r.department_id).is_none() {
                v.push(tonic_types::FieldViolation::new(
                    "department_id",
                    "unknown department",
                ));
            }
            if !r.region_code.is_empty() && table.regions.find(&r.region_code).is_none() {
                v.push(tonic_types::FieldViolation::new(
                    "region_code",
                    "not a region of the routing table in force",
                ));
            }
            let end_ms = r.end_time.as_ref().map_or_else(now_ms, codec::millis);
            let start_ms = r
                .start_time
                .as_ref()
                .map_or(end_ms - DEFAULT_STATS_WINDOW_MS, codec::millis);
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
                department: r.department_id,
                region_code: r.region_code,
                start_ms,
                end_ms,
            };
            Ok(self.0.store.stats(&filter, &table.calendar).await?)
        })
        .await
    }
}
