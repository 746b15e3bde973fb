//! Keeping personal data no longer than needed (PIPL): a retention period after an incident
//! closes (or is cancelled), the reporter's contact is erased from its record, the only place
//! it is kept (dispatch copies, ingest entries and events never carry it). The timeline and
//! the events stream say that it was erased.
//!
//! Each partition keeps its closed incidents in a sorted set by closing time (written by the
//! same script as the closing action); a sweep takes those older than the period and erases
//! each with one optimistic-concurrency script, so two routers sweeping at once erase once.

use gridroute_proto::v1 as pb;
use gridroute_telemetry::names;
use prost::Message;

use crate::{
    Result, Store, StoreError, codec,
    ops::{Change, Ops, b},
};
use gridroute_core::lifecycle::EventKind;

/// Incidents erased per partition in one sweep: bounds the work of one call.
pub const ERASE_BATCH: usize = 100;

impl Store {
    /// Erases the reporter's contact of incidents closed more than `retention_ms` ago (at most
    /// [`ERASE_BATCH`] per partition). Returns how many were erased.
    pub async fn erase_expired_contacts(&self, retention_ms: i64) -> Result<usize> {
        let k = self.keys();
        let cutoff = self.server_time_ms().await? - retention_ms;
        let mut pipe = redis::pipe();
        for p in 0..k.partitions() {
            pipe.cmd("ZRANGEBYSCORE")
                .arg(k.closed(p))
                .arg("-inf")
                .arg(cutoff)
                .arg("LIMIT")
                .arg(0)
                .arg(ERASE_BATCH);
        }
        let due: Vec<Vec<String>> = self.query_pipe(&pipe).await?;
        let days = retention_ms as f64 / 86_400_000.0;
        let mut erased = 0;
        for (p, ids) in due.into_iter().enumerate() {
            for id in ids {
                if self.erase_contact(p as u16, &id, days).await? {
                    erased += 1;
                }
            }
        }
        if erased > 0 {
            metrics::counter!(names::CONTACTS_ERASED_TOTAL).increment(erased as u64);
        }
        Ok(erased)
    }

    /// Erases one incident's contact and takes it off the closed list. `false` when there
    /// was nothing to erase or the record changed meanwhile (the next sweep tries again).
    async fn erase_contact(&self, p: u16, id: &str, days: f64) -> Result<bool> {
        let k = self.keys();
        let snap = match self.snapshot(p, id).await {
            Ok(s) => s,
            Err(StoreError::NotFound(_)) => {
                let mut c = self.conn();
                let _: i64 = redis::cmd("ZREM")
                    .arg(k.closed(p))
                    .arg(id)
                    .query_async(&mut c)
                    .await?;
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        let mut ops = Ops::new(k.incident(p, id));
        let in_report = snap.report.as_ref().is_some_and(|r| r.reporter.is_some());
        let present = snap.fields.contains_key("contact") || in_report;
        if present {
            ops.op("HDEL", k.incident(p, id), vec![b("contact")]);
            if let Some(r) = snap.report.as_ref().filter(|_| in_report) {
                let bare = pb::ReportIncidentRequest {
                    reporter: None,
                    ..r.clone()
                };
                ops.op(
                    "HSET",
                    k.incident(p, id),
                    vec![b("report"), bare.encode_to_vec()],
                );
            }
            let event = codec::event_bytes(
                EventKind::ContactErased,
                "router",
                &format!(
                    "the reporter's contact details were erased {days:.0} days after the case closed (retention)"
                ),
                "",
            );
            ops.record(
                k,
                p,
                id,
                event,
                &Change {
                    status: snap.text("status"),
                    department: snap.text("dept"),
                    regions: snap.text("regions"),
                    merged: None,
                },
            );
        }
        ops.op("ZREM", k.closed(p), vec![b(id)]);
        let code = self.apply_ops(ops, &snap.version).await?;
        if code == 1 && present {
            // Last chance to know whose ledger this incident's points are in.
            let mut report = snap.report.clone();
            if let Some(r) = report.as_mut() {
                r.reporter = codec::contact(&snap.fields, snap.report.as_ref());
            }
            self.fold_points(p, report.as_ref()).await?;
        }
        Ok(code == 1 && present)
    }
}
