//! What every lifecycle action has in common: validation of the ids, the caller's identity
//! (department, grid worker or source system from the request, the person from the
//! `x-gridroute-user` metadata), the store call, and the incident as the answer.

use gridroute_core::lifecycle::{Caller, Command, Refusal};
use gridroute_proto::v1 as pb;
use gridroute_store::{
    StoreError,
    lifecycle::{ActRequest, Acted},
};
use tonic::{Request, metadata::MetadataMap};

use crate::{ApiError, ApiState, validate};

/// Metadata key naming the person who acts, for the audit trail.
pub const USER_METADATA: &str = "x-gridroute-user";

/// The person named in the request metadata (at most 128 characters).
pub fn user(meta: &MetadataMap) -> String {
    meta.get(USER_METADATA)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(128).collect())
        .unwrap_or_default()
}

/// A department's action on an incident.
pub fn by(
    department: String,
    incident_id: String,
    request_id: String,
    command: Command,
) -> ActRequest {
    ActRequest {
        incident_id,
        request_id,
        caller: Caller {
            department,
            ..Caller::default()
        },
        command,
    }
}

/// Runs the action a request describes: `build` takes the message apart into the action (or
/// refuses a field), the person comes from the metadata, and the answer is the incident as it
/// is afterwards.
pub async fn run<T>(
    state: &ApiState,
    request: Request<T>,
    build: impl FnOnce(T) -> Result<ActRequest, ApiError>,
) -> Result<pb::Incident, ApiError> {
    let user = user(request.metadata());
    let mut req = build(request.into_inner())?;
    req.caller.user = user;
    act(state, req).await
}

/// Runs one action and returns the incident as it is afterwards.
pub async fn act(state: &ApiState, req: ActRequest) -> Result<pb::Incident, ApiError> {
    validate::incident_id(&req.incident_id)?;
    validate::action_request_id(&req.request_id)?;
    let table = state.tables.load_full();
    let caller = &req.caller;
    if !caller.department.is_empty()
        || (caller.grid_worker.is_empty() && caller.source_system.is_empty())
    {
        validate::department("department_id", &caller.department, &table)?;
    }
    let action = req.command.name();
    match state.store.act(&table, &req).await {
        Ok(Acted::Applied) => tracing::debug!(action, "applied"),
        Ok(Acted::Repeated) => tracing::debug!(action, "repeated request id: nothing changed"),
        Err(StoreError::Refused(Refusal::Invalid { field, why })) => {
            return Err(ApiError::field(field, why));
        }
        Err(e) => return Err(e.into()),
    }
    Ok(state.store.get_incident(&req.incident_id).await?)
}
