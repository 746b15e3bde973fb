//! Group commit for unary reports. Concurrent `ReportIncident` calls are gathered into batches
//! and each batch is accepted by one pipelined round trip (one script call per partition), so
//! that a busy API pays Redis's per-call cost once per batch instead of once per report.
//!
//! Batches form by themselves: a call waits only while [`IN_FLIGHT`] batches are already at
//! Redis, so a quiet API sends each report at once (a batch of one) and a busy one sends
//! larger batches, never waiting on a timer.

use std::sync::{Arc, OnceLock};

use gridroute_proto::v1 as pb;
use gridroute_store::{
    Store, StoreError,
    ingest::{Accepted, Reporting},
};
use gridroute_telemetry::names;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Batches at Redis at the same time.
pub const IN_FLIGHT: usize = 4;
/// Most reports in one batch.
pub const MAX_BATCH: usize = 256;
/// Reports waiting for a batch before callers wait to enqueue (backpressure).
const QUEUE: usize = 8 * MAX_BATCH;

type Reply = oneshot::Sender<Result<Accepted, StoreError>>;

struct Job {
    report: pb::ReportIncidentRequest,
    traceparent: String,
    person: String,
    reply: Reply,
}

/// The shared queue of unary reports; cheap to clone.
#[derive(Debug, Clone)]
pub struct Coalescer {
    store: Store,
    queue: Arc<OnceLock<mpsc::Sender<Job>>>,
}

impl Coalescer {
    /// A coalescer writing through `store`. Its batching task starts with the first report, on
    /// the runtime that serves it.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            queue: Arc::new(OnceLock::new()),
        }
    }

    /// Accepts one validated report, batched with whatever other reports are waiting.
    pub async fn report(
        &self,
        report: pb::ReportIncidentRequest,
        traceparent: String,
        person: String,
    ) -> Result<Accepted, StoreError> {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(run(self.store.clone(), rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        let job = Job {
            report,
            traceparent,
            person,
            reply,
        };
        let gone = || StoreError::Unavailable("report queue stopped".into());
        queue.send(job).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

async fn run(store: Store, mut rx: mpsc::Receiver<Job>) {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        // Everything that queued while the previous batches were at Redis goes in this one.
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        metrics::histogram!(names::REPORT_BATCH_SIZE).record(jobs.len() as f64);
        let store = store.clone();
        tokio::spawn(async move {
            let reports: Vec<_> = jobs
                .iter()
                .map(|j| Reporting {
                    report: &j.report,
                    traceparent: &j.traceparent,
                    person: &j.person,
                })
                .collect();
            let answers = store.report_traced(&reports).await;
            drop(reports);
            match answers {
                Ok(answers) => {
                    for (job, answer) in jobs.into_iter().zip(answers) {
                        let _ = job.reply.send(answer);
                    }
                }
                Err(e) => {
                    let why = e.to_string();
                    for job in jobs {
                        let _ = job.reply.send(Err(StoreError::Unavailable(why.clone())));
                    }
                }
            }
            drop(permit);
        });
    }
}
