//! What every lifecycle action has in common: validation of the ids, the caller's identity
//! (department, grid worker or source system from the request, the person from the
//! `x-gridroute-user` metadata), the store call, and the incident as the answer.

use gridroute_core::lifecycle::{Caller, Command, Refusal};
use gridroute_proto::v1 as pb;
use gridroute_store::{
    StoreError,
    lifecycle::{ActRequest, Acted},
};
use tonic::metadata::MetadataMap;

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

/// A caller acting for a department.
pub fn department(meta: &MetadataMap, department: &str) -> Caller {
    Caller {
        department: department.to_owned(),
        user: user(meta),
        ..Caller::default()
    }
}

/// Runs one action and returns the incident as it is afterwards.
pub async fn act(
    state: &ApiState,
    incident_id: &str,
    request_id: &str,
    caller: Caller,
    command: Command,
) -> Result<pb::Incident, ApiError> {
    validate::incident_id(incident_id)?;
    validate::action_request_id(request_id)?;
    let table = state.tables.load_full();
    if !caller.department.is_empty()
        || (caller.grid_worker.is_empty() && caller.source_system.is_empty())
    {
        validate::department("department_id", &caller.department, &table)?;
    }
    let action = command.name();
    let req = ActRequest {
        incident_id: incident_id.to_owned(),
        request_id: request_id.to_owned(),
        caller,
        command,
    };
    match state.store.act(&table, &req).await {
        Ok(Acted::Applied) => tracing::debug!(action, "applied"),
        Ok(Acted::Repeated) => tracing::debug!(action, "repeated request id: nothing changed"),
        Err(StoreError::Refused(Refusal::Invalid { field, why })) => {
            return Err(ApiError::field(field, why));
        }
        Err(e) => return Err(e.into()),
    }
    Ok(state.store.get_incident(incident_id).await?)
}
