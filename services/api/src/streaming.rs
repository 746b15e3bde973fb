//! Server-streaming RPCs (Subscribe, WatchIncidents): a task per stream reads batches from
//! Redis into a bounded channel, ends when the client goes away or the server shuts down (the
//! client resumes elsewhere from its last cursor), and counts what it delivered.

use std::pin::Pin;

use gridroute_core::access::Principal;
use gridroute_proto::v1 as pb;
use gridroute_store::{
    Result,
    subscribe::{DispatchReader, EventReader},
};
use gridroute_telemetry::{names, trace_context};
use tokio::sync::mpsc;
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::Status;
use tracing::{Instrument, Span, debug};

use crate::{ApiError, ApiState, limits::StreamGuard, privacy};

/// Items buffered per stream before the reader waits for the client: bounds memory per slow
/// client while keeping a batch of reads in flight.
const BUFFER: usize = 256;
/// Items read per round trip.
const READ: usize = 128;

/// A boxed server stream.
pub type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Something that yields batches from a cursor.
pub trait BatchReader: Send + 'static {
    /// What it yields.
    type Item: Send + 'static;
    /// The next batch, waiting up to the reader's block time.
    fn next_batch(&mut self, count: usize) -> impl Future<Output = Result<Vec<Self::Item>>> + Send;
    /// The W3C trace context an item carries, if any: its delivery continues that trace.
    fn traceparent(_item: &Self::Item) -> &str {
        ""
    }
}

/// A department's dispatches as its subscriber receives them: dispatch entries never carry the
/// reporter's contact (it lives once, in the record); the primary department (and co-handlers,
/// where the deployment allows it) get it from the record, in the same round trip per batch
/// that reads the report and decision.
#[derive(Debug)]
pub struct DispatchFeed {
    /// The department's streams.
    pub reader: DispatchReader,
    /// Whether co-handlers receive the contact.
    pub co_handlers_see_contact: bool,
}

impl BatchReader for DispatchFeed {
    type Item = pb::Dispatch;
    async fn next_batch(&mut self, count: usize) -> Result<Vec<pb::Dispatch>> {
        let co_see = self.co_handlers_see_contact;
        let mut batch = self
            .reader
            .next_batch(count, |d| privacy::dispatch_gets_contact(d, co_see))
            .await?;
        // Copies written before contacts had a field of their own may carry one: masked for
        // everyone not entitled.
        for d in &mut batch {
            if !privacy::dispatch_gets_contact(d, co_see)
                && let Some(c) = d.report.as_mut().and_then(|r| r.reporter.as_mut())
            {
                privacy::mask(c);
            }
        }
        Ok(batch)
    }
    fn traceparent(item: &pb::Dispatch) -> &str {
        &item.traceparent
    }
}

impl BatchReader for EventReader {
    type Item = pb::IncidentEvent;
    fn next_batch(
        &mut self,
        count: usize,
    ) -> impl Future<Output = Result<Vec<pb::IncidentEvent>>> + Send {
        EventReader::next_batch(self, count)
    }
}

/// Completes when the server starts shutting down.
async fn stopping(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Streams `reader`'s batches to the client. Holds its permits for its lifetime.
pub fn spawn<R: BatchReader>(
    state: &ApiState,
    mut reader: R,
    permit: Permit,
    span: Span,
) -> BoxStream<R::Item> {
    let (tx, rx) = mpsc::channel(BUFFER);
    let mut shutdown = state.shutdown.clone();
    tokio::spawn(
        async move {
            let _permit = permit;
            let gauge = metrics::gauge!(names::SUBSCRIBERS);
            gauge.increment(1.0);
            loop {
                let batch = tokio::select! {
                    b = reader.next_batch(READ) => b,
                    () = tx.closed() => break,
                    () = stopping(&mut shutdown) => {
                        let bye = Status::unavailable("server shutting down; resume with your last cursor");
                        let _ = tx.send(Err(bye)).await;
                        break;
                    }
                };
                match batch {
                    Ok(items) => {
                        let n = items.len() as u64;
                        for d in items {
                            let tp = R::traceparent(&d);
                            let sent = if tp.is_empty() {
                                tx.send(Ok(d)).await
                            } else {
                                let deliver = tracing::info_span!("deliver");
                                trace_context::set_parent(&deliver, tp);
                                tx.send(Ok(d)).instrument(deliver).await
                            };
                            if sent.is_err() {
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
            debug!("stream gone");
        }
        .instrument(span),
    );
    Box::pin(ReceiverStream::new(rx))
}

/// What an open stream holds: a place among the replica's streams and among its principal's.
#[derive(Debug)]
pub struct Permit {
    _replica: tokio::sync::OwnedSemaphorePermit,
    _principal: StreamGuard,
}

/// A stream permit for `who`: RESOURCE_EXHAUSTED when it already holds as many streams as a
/// principal may, UNAVAILABLE when this replica has too many streams.
pub fn permit(state: &ApiState, who: &Principal) -> Result<Permit, ApiError> {
    let limits = &state.security.limits;
    let principal = limits.open_stream(who).ok_or_else(|| ApiError::Exhausted {
        message: format!(
            "{} already holds {} open streams on this replica; close one first",
            who.label(),
            limits.streams_per_principal()
        ),
        retry_after: std::time::Duration::from_secs(1),
    })?;
    let replica = state.subscribers.clone().try_acquire_owned().map_err(|_| {
        ApiError::Unavailable("too many streams on this replica; retry on another".into())
    })?;
    Ok(Permit {
        _replica: replica,
        _principal: principal,
    })
}

/// The refusal of a cursor after which entries were trimmed from the `stream` streams
/// (`dispatch` or `events`): OUT_OF_RANGE with the oldest cursor from which nothing is missing.
pub(crate) fn cursor_expired(
    stream: &'static str,
    resume: &gridroute_store::subscribe::Cursor,
) -> ApiError {
    metrics::counter!(names::CURSORS_EXPIRED_TOTAL, "stream" => stream).increment(1);
    ApiError::CursorExpired {
        message: format!(
            "entries after this cursor are no longer retained on the {stream} streams \
             (retention window): read the current state with ListIncidents, then resume from \
             the cursor in the error details (ErrorInfo CURSOR_EXPIRED, metadata resume_cursor)"
        ),
        resume: resume.encode(),
    }
}
