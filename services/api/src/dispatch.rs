//! DispatchService: departments subscribe to their dispatches and notices, and act on their
//! incidents: accept, progress, resolve, return, ask for more time or a pause, resume. The
//! department is the authenticated caller; `department_id` in a request may only repeat it.

use gridroute_core::lifecycle::Command;
use gridroute_proto::v1::{self as pb, dispatch_service_server::DispatchService};
use gridroute_store::subscribe::Cursor;
use tonic::{Request, Response, Status};
use tracing::info_span;

use crate::{ApiError, ApiState, actions, authz, streaming};

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
        self.0
            .call("Subscribe", request, |who, r| async move {
                authz::claim("department_id", &r.department_id, &who)?;
                let department = who.id.clone();
                if state.tables.load().department(&department).is_none() {
                    return Err(ApiError::PermissionDenied(format!(
                        "{} is not a department of the routing table in force",
                        who.label()
                    )));
                }
                let partitions = state.store.keys().partitions();
                let cursor = if r.cursor.is_empty() {
                    match pb::SubscribeStart::try_from(r.start) {
                        Ok(pb::SubscribeStart::Latest) => {
                            state.store.latest_cursor(&department).await?
                        }
                        Ok(_) => Cursor::earliest(partitions),
                        Err(_) => return Err(ApiError::field("start", "unknown start position")),
                    }
                } else {
                    let cursor = Cursor::parse(&r.cursor, partitions)
                        .map_err(|e| ApiError::field("cursor", e.to_string()))?;
                    if let Some(resume) = state
                        .store
                        .dispatches_trimmed_after(&department, &cursor)
                        .await?
                    {
                        return Err(streaming::cursor_expired("dispatch", &resume));
                    }
                    cursor
                };
                let permit = streaming::permit(&state, &who)?;
                let reader = state
                    .store
                    .dispatch_reader(&department, cursor, state.subscribe_block)
                    .await?;
                let feed = streaming::DispatchFeed {
                    reader,
                    co_handlers_see_contact: state.security.co_handlers_see_contact,
                };
                let span = info_span!("subscribe", department = %department);
                Ok(streaming::spawn(&state, feed, permit, span))
            })
            .await
    }

    async fn accept_incident(
        &self,
        request: Request<pb::AcceptIncidentRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        self.0
            .call("AcceptIncident", request, |who, r| {
                actions::run(&self.0, who, r, |r| Ok(Command::Accept { note: r.note }))
            })
            .await
    }

    async fn resolve_incident(
        &self,
        request: Request<pb::ResolveIncidentRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        self.0
            .call("ResolveIncident", request, |who, r| {
                actions::run(&self.0, who, r, |r| {
                    let mut note = r.note;
                    if !r.evidence_urls.is_empty() && !note.trim().is_empty() {
                        note = format!("{note} (evidence: {})", r.evidence_urls.join(" "));
                    }
                    Ok(Command::Resolve { note })
                })
            })
            .await
    }

    async fn return_incident(
        &self,
        request: Request<pb::ReturnIncidentRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        self.0
            .call("ReturnIncident", request, |who, r| {
                actions::run(&self.0, who, r, |r| {
                    let mut v = Vec::new();
                    let reason = pb::ReturnReason::try_from(r.reason)
                        .unwrap_or(pb::ReturnReason::Unspecified);
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
                    Ok(Command::Return {
                        reason: reason.as_str_name().to_owned(),
                        note: r.note,
                    })
                })
            })
            .await
    }

    async fn add_progress(
        &self,
        request: Request<pb::AddProgressRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        self.0
            .call("AddProgress", request, |who, r| {
                actions::run(&self.0, who, r, |r| {
                    if r.note.trim().is_empty() {
                        return Err(ApiError::field("note", "required: what was done"));
                    }
                    Ok(Command::Progress { note: r.note })
                })
            })
            .await
    }

    async fn request_extension(
        &self,
        request: Request<pb::RequestExtensionRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        self.0
            .call("RequestExtension", request, |who, r| {
                actions::run(&self.0, who, r, |r| {
                    Ok(Command::RequestExtension {
                        span: r.extension,
                        reason: r.reason,
                    })
                })
            })
            .await
    }

    async fn request_suspension(
        &self,
        request: Request<pb::RequestSuspensionRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        self.0
            .call("RequestSuspension", request, |who, r| {
                actions::run(&self.0, who, r, |r| {
                    Ok(Command::RequestSuspension { reason: r.reason })
                })
            })
            .await
    }

    async fn resume_incident(
        &self,
        request: Request<pb::ResumeIncidentRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        self.0
            .call("ResumeIncident", request, |who, r| {
                actions::run(&self.0, who, r, |r| Ok(Command::Resume { note: r.note }))
            })
            .await
    }
}
