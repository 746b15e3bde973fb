//! DispatchService: departments subscribe to their dispatches and notices, and act on their
//! incidents: accept, progress, resolve, return, ask for more time or a pause, resume.

use gridroute_core::lifecycle::Command;
use gridroute_proto::v1::{self as pb, dispatch_service_server::DispatchService};
use gridroute_store::subscribe::Cursor;
use tonic::{Request, Response, Status};
use tracing::info_span;

use crate::{ApiError, ApiState, actions, observed, streaming, validate};

/// The DispatchService implementation.
#[derive(Debug, Clone)]
pub struct Dispatches(pub ApiState);

#[tonic::async_trait]
impl DispatchService for Dispatches {
    type SubscribeStream = streaming::BoxStream<pb::Dispatch>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let state = self.0.clone();
        observed("Subscribe", async move {
            let r = request.into_inner();
            validate::department("department_id", &r.department_id, &state.tables.load())?;
            let partitions = state.store.keys().partitions();
            let cursor = if r.cursor.is_empty() {
                match pb::SubscribeStart::try_from(r.start) {
                    Ok(pb::SubscribeStart::Latest) => {
                        state.store.latest_cursor(&r.department_id).await?
                    }
                    Ok(_) => Cursor::earliest(partitions),
                    Err(_) => return Err(ApiError::field("start", "unknown start position")),
                }
            } else {
                Cursor::parse(&r.cursor, partitions)
                    .map_err(|e| ApiError::field("cursor", e.to_string()))?
            };
            let permit = streaming::permit(&state)?;
            let reader = state
                .store
                .dispatch_reader(&r.department_id, cursor, state.subscribe_block)
                .await?;
            let span = info_span!("subscribe", department = %r.department_id);
            Ok(streaming::spawn(&state, reader, permit, span))
        })
        .await
    }

    async fn accept_incident(
        &self,
        request: Request<pb::AcceptIncidentRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        observed(
            "AcceptIncident",
            actions::run(&self.0, request, |r| {
                let command = Command::Accept { note: r.note };
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

    async fn resolve_incident(
        &self,
        request: Request<pb::ResolveIncidentRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        observed(
            "ResolveIncident",
            actions::run(&self.0, request, |r| {
                let mut note = r.note;
                if !r.evidence_urls.is_empty() && !note.trim().is_empty() {
                    note = format!("{note} (evidence: {})", r.evidence_urls.join(" "));
                }
                let command = Command::Resolve { note };
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

    async fn return_incident(
        &self,
        request: Request<pb::ReturnIncidentRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        observed(
            "ReturnIncident",
            actions::run(&self.0, request, |r| {
                let mut v = Vec::new();
                let reason =
                    pb::ReturnReason::try_from(r.reason).unwrap_or(pb::ReturnReason::Unspecified);
                if reason == pb::ReturnReason::Unspecified {
                    v.push(tonic_types::FieldViolation::new(
                        "reason",
                        "required: a structured reason code",
                    ));
                }
                if r.note.trim().is_empty() {
                    v.push(tonic_types::FieldViolation::new(
                        "note",
                        "required: why this is not yours",
                    ));
                }
                if !v.is_empty() {
                    return Err(ApiError::Invalid(v));
                }
                let command = Command::Return {
                    reason: reason.as_str_name().to_owned(),
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

    async fn add_progress(
        &self,
        request: Request<pb::AddProgressRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        observed(
            "AddProgress",
            actions::run(&self.0, request, |r| {
                if r.note.trim().is_empty() {
                    return Err(ApiError::field("note", "required: what was done"));
                }
                let command = Command::Progress { note: r.note };
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

    async fn request_extension(
        &self,
        request: Request<pb::RequestExtensionRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        observed(
            "RequestExtension",
            actions::run(&self.0, request, |r| {
                let command = Command::RequestExtension {
                    span: r.extension,
                    reason: r.reason,
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

    async fn request_suspension(
        &self,
        request: Request<pb::RequestSuspensionRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        observed(
            "RequestSuspension",
            actions::run(&self.0, request, |r| {
                let command = Command::RequestSuspension { reason: r.reason };
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

    async fn resume_incident(
        &self,
        request: Request<pb::ResumeIncidentRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        observed(
            "ResumeIncident",
            actions::run(&self.0, request, |r| {
                let command = Command::Resume { note: r.note };
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
}
