//! What every lifecycle action has in common: the identity fields of the request checked
//! against the authenticated caller, the ids validated, the store call (the core decides
//! whether this caller may do this to this incident), and the incident as the answer, masked
//! for the caller.

use gridroute_core::lifecycle::{Caller, Command, Refusal};
use gridroute_proto::v1 as pb;
use gridroute_store::{
    StoreError,
    lifecycle::{ActRequest, Acted},
};

use crate::{ApiError, ApiState, authz, privacy, validate};

/// One action as a request describes it.
#[derive(Debug)]
pub struct Action {
    /// The incident.
    pub incident_id: String,
    /// Idempotency key ('' = none).
    pub request_id: String,
    /// What to do.
    pub command: Command,
    /// Identity fields of the request body (field name, value): each must be empty or the
    /// caller's own.
    pub claims: Vec<(&'static str, String)>,
}

impl Action {
    /// An action whose request names the acting department in `department_id`.
    pub fn by_department(
        department_id: String,
        incident_id: String,
        request_id: String,
        command: Command,
    ) -> Self {
        Self {
            incident_id,
            request_id,
            command,
            claims: vec![("department_id", department_id)],
        }
    }
}

/// Builds the action a request describes (`build` takes the message apart, or refuses a
/// field) and runs it for `who`.
pub async fn run(
    state: &ApiState,
    who: Caller,
    build: impl FnOnce() -> Result<Action, ApiError>,
) -> Result<pb::Incident, ApiError> {
    act(state, who, build()?).await
}

/// Runs one action for `who` and returns the incident as it is afterwards.
pub async fn act(state: &ApiState, who: Caller, a: Action) -> Result<pb::Incident, ApiError> {
    for (field, value) in &a.claims {
        authz::claim(field, value, &who)?;
    }
    validate::incident_id(&a.incident_id)?;
    validate::action_request_id(&a.request_id)?;
    let table = state.tables.load_full();
    let action = a.command.name();
    let req = ActRequest {
        incident_id: a.incident_id,
        request_id: a.request_id,
        caller: who,
        command: a.command,
    };
    match state.store.act(&table, &req).await {
        Ok(Acted::Applied) => tracing::debug!(action, "applied"),
        Ok(Acted::Repeated) => tracing::debug!(action, "repeated request id: nothing changed"),
        Err(StoreError::NotFound(id)) => {
            return Err(authz::unseen(&req.caller, &table, &id, false));
        }
        Err(StoreError::Refused(Refusal::Invalid { field, why })) => {
            return Err(ApiError::field(field, why));
        }
        Err(e) => return Err(e.into()),
    }
    let mut incident = state.store.get_incident(&req.incident_id).await?;
    privacy::present(
        &mut incident,
        &req.caller,
        &table,
        state.security.co_handlers_see_contact,
    );
    Ok(incident)
}
