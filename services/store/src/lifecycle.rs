//! What departments do to their incidents: accept (签收), resolve (办结) and return (退单).
//! Each is one script: the state check, the new state, the timeline entry and the timers change
//! together. Repeating an action already applied is not an error (idempotent retries).

use crate::{Result, Store, StoreError, codec, keys, scripts};

/// A department's action on an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Accept: the accept clock stops.
    Accept,
    /// Resolve: every clock stops.
    Resolve,
    /// Return: the incident is routed again without this department.
    Return,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Self::Accept => "accept",
            Self::Resolve => "resolve",
            Self::Return => "return",
        }
    }
    fn event(self) -> &'static str {
        match self {
            Self::Accept => "accepted",
            Self::Resolve => "resolved",
            Self::Return => "returned",
        }
    }
}

impl Store {
    /// Applies `action` by `department` to an incident; `detail` goes to the timeline.
    pub async fn transition(
        &self,
        incident_id: &str,
        department: &str,
        action: Action,
        detail: &str,
    ) -> Result<()> {
        let k = self.keys();
        let p = keys::partition_of(incident_id, k.partitions())
            .ok_or_else(|| StoreError::NotFound(incident_id.to_owned()))?;
        let keys = [
            k.incident(p, incident_id),
            k.timeline(p, incident_id),
            k.sla(p),
            k.ingest(p),
        ];
        let event = codec::event_bytes(action.event(), department, detail, department);
        let mut pipe = redis::pipe();
        scripts::evalsha(
            &mut pipe,
            &scripts::TRANSITION,
            &keys,
            &[
                action.as_str().as_bytes(),
                department.as_bytes(),
                incident_id.as_bytes(),
                &event,
            ],
        );
        let (code, status): (i64, String) = self.run_script(&mut pipe, "transition").await?;
        match code {
            0 | 1 => Ok(()),
            -1 => Err(StoreError::NotFound(incident_id.to_owned())),
            -2 => Err(StoreError::NotPrimary {
                incident_id: incident_id.to_owned(),
                department: department.to_owned(),
            }),
            _ => Err(StoreError::WrongState {
                incident_id: incident_id.to_owned(),
                status,
                action: action.as_str(),
            }),
        }
    }
}
