//! The audit trail of privileged acts and refused calls: a structured log line at once, and a
//! record in Redis (`AuditService/ListAuditRecords` reads it back).
//!
//! Privileged acts are written before the caller is answered. Refusals are queued for a
//! writer that batches them, so that a flood of refused calls costs one round trip per batch;
//! when the queue is full (a flood faster than Redis takes it) records are dropped and counted,
//! and refusals of anonymous callers are recorded at most [`ANONYMOUS_PER_SECOND`] a second,
//! so that no one can fill Redis by knocking without credentials.

use std::{
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use gridroute_store::{Store, audit::Entry};
use gridroute_telemetry::names;
use tokio::sync::mpsc;

/// Records waiting for the writer.
const QUEUE: usize = 4096;
/// Most records written in one round trip.
const BATCH: usize = 256;
/// Refusals of anonymous callers recorded per second (the rest are counted only).
pub const ANONYMOUS_PER_SECOND: f64 = 100.0;

/// The audit trail of one API replica; cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditTrail {
    store: Store,
    retention: Duration,
    queue: Arc<OnceLock<mpsc::Sender<Entry>>>,
    anonymous: Arc<Mutex<(f64, Instant)>>,
}

impl AuditTrail {
    /// A trail written through `store`, keeping records for `retention`.
    pub fn new(store: Store, retention: Duration) -> Self {
        Self {
            store,
            retention,
            queue: Arc::new(OnceLock::new()),
            anonymous: Arc::new(Mutex::new((ANONYMOUS_PER_SECOND, Instant::now()))),
        }
    }

    fn log(e: &Entry) {
        // Debug formatting quotes and escapes every value: a newline in a person's name cannot
        // start a forged line of its own (the JSON format escapes them anyway).
        tracing::info!(
            target: "gridroute::audit",
            principal = ?e.principal,
            person = ?e.person,
            method = %e.method,
            target_id = ?e.target,
            outcome = %e.outcome,
            reason = ?e.reason,
            peer = %e.peer,
            "audit"
        );
    }

    fn retention_ms(&self) -> i64 {
        self.retention.as_millis().min(i64::MAX as u128) as i64
    }

    /// Records a privileged act now; the caller is answered after the record is stored (or
    /// after storing it failed, which is logged and counted: the act itself happened).
    pub async fn record_now(&self, e: Entry) {
        Self::log(&e);
        let outcome = match self.store.audit_append(&[e], self.retention_ms()).await {
            Ok(()) => "written",
            Err(err) => {
                tracing::error!(error = %err, "audit record not stored");
                "failed"
            }
        };
        metrics::counter!(names::AUDIT_RECORDS_TOTAL, "outcome" => outcome).increment(1);
    }

    /// Records a refusal without waiting.
    pub fn record(&self, e: Entry) {
        if e.principal == ANONYMOUS && !self.admit_anonymous() {
            metrics::counter!(names::AUDIT_RECORDS_TOTAL, "outcome" => "dropped").increment(1);
            return;
        }
        Self::log(&e);
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(write(self.store.clone(), self.retention_ms(), rx));
            tx
        });
        if queue.try_send(e).is_err() {
            metrics::counter!(names::AUDIT_RECORDS_TOTAL, "outcome" => "dropped").increment(1);
        }
    }

    fn admit_anonymous(&self) -> bool {
        let Ok(mut bucket) = self.anonymous.lock() else {
            return false;
        };
        let (tokens, at) = &mut *bucket;
        let now = Instant::now();
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * ANONYMOUS_PER_SECOND)
            .min(ANONYMOUS_PER_SECOND);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The principal of a caller that presented no valid credentials.
pub const ANONYMOUS: &str = "anonymous";

async fn write(store: Store, retention_ms: i64, mut rx: mpsc::Receiver<Entry>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        let outcome = match store.audit_append(&batch, retention_ms).await {
            Ok(()) => "written",
            Err(err) => {
                tracing::error!(error = %err, records = n, "audit records not stored");
                "failed"
            }
        };
        metrics::counter!(names::AUDIT_RECORDS_TOTAL, "outcome" => outcome).increment(n);
    }
}
