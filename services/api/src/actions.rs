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

/// A request message for an action on one incident: where it keeps the incident id, its
/// idempotency key, and the identity fields it may carry (each must be empty or the caller's).
pub trait OnIncident {
    /// Takes the incident id, the request id and the identity fields out of the message.
    fn take_ids(&mut self) -> (String, String, Vec<(&'static str, String)>);
}

macro_rules! on_incident {
    ($($t:ty => [$($field:ident),*]),* $(,)?) => {$(
        impl OnIncident for $t {
            fn take_ids(&mut self) -> (String, String, Vec<(&'static str, String)>) {
                (
                    std::mem::take(&mut self.incident_id),
                    std::mem::take(&mut self.request_id),
                    vec![$((stringify!($field), std::mem::take(&mut self.$field))),*],
                )
            }
        }
    )*};
}

on_incident!(
    pb::AcceptIncidentRequest => [department_id],
    pb::ResolveIncidentRequest => [department_id],
    pb::ReturnIncidentRequest => [department_id],
    pb::AddProgressRequest => [department_id],
    pb::RequestExtensionRequest => [department_id],
    pb::RequestSuspensionRequest => [department_id],
    pb::ResumeIncidentRequest => [department_id],
    pb::ArbitrateIncidentRequest => [department_id],
    pb::DecideRequestRequest => [department_id],
    pb::VerifyIncidentRequest => [department_id, grid_worker_id],
    pb::CloseIncidentRequest => [department_id],
    pb::CancelIncidentRequest => [department_id],
    pb::UnmergeIncidentRequest => [department_id],
    pb::SubmitFeedbackRequest => [source_system],
);

/// Runs the action a request describes for `who`: `command` turns the rest of the message
/// into the command (or refuses a field); the answer is the incident as it is afterwards.
pub async fn run<T: OnIncident>(
    state: &ApiState,
    who: Caller,
    mut msg: T,
    command: impl FnOnce(T) -> Result<Command, ApiError>,
) -> Result<pb::Incident, ApiError> {
    let (incident_id, request_id, claims) = msg.take_ids();
    let command = command(msg)?;
    act(state, who, incident_id, request_id, command, &claims).await
}

/// Runs one action for `who` and returns the incident as it is afterwards.
async fn act(
    state: &ApiState,
    who: Caller,
    incident_id: String,
    request_id: String,
    command: Command,
    claims: &[(&'static str, String)],
) -> Result<pb::Incident, ApiError> {
    for (field, value) in claims {
        authz::claim(field, value, &who)?;
    }
    validate::incident_id(&incident_id)?;
    validate::action_request_id(&request_id)?;
    let table = state.tables.load_full();
    let action = command.name();
    let req = ActRequest {
        incident_id,
        request_id,
        caller: who,
        command,
    };
    match state.store.act(&table, &req).await {
        Ok(Acted::Applied) => tracing::debug!(action, "applied"),
        Ok(Acted::Repeated) => tracing::debug!(action, "repeated request id: nothing changed"),
        Err(StoreError::NotFound(id)) => {
            // An archived case takes no more actions; say so to those who may read it.
            if let Some(archived) = state.archived(&id).await?
                && gridroute_core::access::can_read(&req.caller, &privacy::facts(&archived), &table)
            {
                return Err(StoreError::Refused(Refusal::Precondition(format!(
                    "incident {id} is archived (closed long ago): it takes no more actions"
                )))
                .into());
            }
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
