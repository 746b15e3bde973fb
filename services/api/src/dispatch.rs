//! DispatchService: departments subscribe to their dispatches and accept, resolve or return.

use std::pin::Pin;

use gridroute_proto::v1::{self as pb, dispatch_service_server::DispatchService};
use gridroute_store::{lifecycle::Action, subscribe::Cursor};
use gridroute_telemetry::names;
use tokio::sync::mpsc;
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};
use tracing::{Instrument, debug, info_span};

use crate::{ApiError, ApiState, observed, validate};

/// Dispatches buffered per subscriber before the reader waits for the client: bounds memory
/// per slow subscriber while keeping a batch of reads in flight.
const SUBSCRIBER_BUFFER: usize = 256;
/// Dispatches read per round trip.
const SUBSCRIBER_READ: usize = 128;

/// The DispatchService implementation.
#[derive(Debug, Clone)]
pub struct Dispatches(pub ApiState);

/// Completes when the server starts shutting down.
async fn stopping(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

type DispatchStream = Pin<Box<dyn Stream<Item = Result<pb::Dispatch, Status>> + Send>>;

impl Dispatches {
    async fn act(
        &self,
        incident_id: &str,
        department: &str,
        action: Action,
        detail: String,
    ) -> Result<pb::Incident, ApiError> {
        validate::incident_id(incident_id)?;
        validate::department("department_id", department, &self.0.tables.load())?;
        self.0
            .store
            .transition(incident_id, department, action, &detail)
            .await?;
        Ok(self.0.store.get_incident(incident_id).await?)
    }
}

#[tonic::async_trait]
impl DispatchService for Dispatches {
    type SubscribeStream = DispatchStream;

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
            let permit = state.subscribers.clone().try_acquire_owned().map_err(|_| {
                ApiError::Unavailable(
                    "too many subscribers on this replica; retry on another".into(),
                )
            })?;
            let mut reader = state
                .store
                .dispatch_reader(&r.department_id, cursor, state.subscribe_block)
                .await?;
            let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
            let department = r.department_id.clone();
            let mut shutdown = state.shutdown.clone();
            tokio::spawn(
                async move {
                    let _permit = permit;
                    let gauge = metrics::gauge!(names::SUBSCRIBERS);
                    gauge.increment(1.0);
                    loop {
                        let batch = tokio::select! {
                            b = reader.next_batch(SUBSCRIBER_READ) => b,
                            () = tx.closed() => break,
                            () = stopping(&mut shutdown) => {
                                let bye = Status::unavailable("server shutting down; resubscribe with your last cursor");
                                let _ = tx.send(Err(bye)).await;
                                break;
                            }
                        };
                        match batch {
                            Ok(dispatches) => {
                                let n = dispatches.len() as u64;
                                for d in dispatches {
                                    if tx.send(Ok(d)).await.is_err() {
                                        break;
                                    }
                                }
                                metrics::counter!(names::DELIVERED_TOTAL).increment(n);
                            }
                            Err(e) => {
                                let _ = tx.send(Err(Status::from(ApiError::Store(e)))).await;
                                break;
                            }
                        }
                    }
                    gauge.decrement(1.0);
                    debug!("subscriber gone");
                }
                .instrument(info_span!("subscribe", department = %department)),
            );
            Ok(Box::pin(ReceiverStream::new(rx)) as DispatchStream)
        })
        .await
    }

    async fn accept_incident(
        &self,
        request: Request<pb::AcceptIncidentRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        observed("AcceptIncident", async {
            let r = request.into_inner();
            self.act(&r.incident_id, &r.department_id, Action::Accept, r.note)
                .await
        })
        .await
    }

    async fn resolve_incident(
        &self,
        request: Request<pb::ResolveIncidentRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        observed("ResolveIncident", async {
            let r = request.into_inner();
            if r.note.trim().is_empty() {
                return Err(ApiError::field("note", "required: what was done"));
            }
            let mut detail = r.note;
            if !r.evidence_urls.is_empty() {
                detail = format!("{detail} (evidence: {})", r.evidence_urls.join(" "));
            }
            self.act(&r.incident_id, &r.department_id, Action::Resolve, detail)
                .await
        })
        .await
    }

    async fn return_incident(
        &self,
        request: Request<pb::ReturnIncidentRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        observed("ReturnIncident", async {
            let r = request.into_inner();
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
            let detail = format!("{}: {}", reason.as_str_name(), r.note);
            self.act(&r.incident_id, &r.department_id, Action::Return, detail)
                .await
        })
        .await
    }
}
