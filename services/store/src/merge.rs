//! Merging a duplicate report into an open incident of the same category nearby (并案). The
//! open incident's side is a lifecycle change like any other: the core plans it
//! ([`gridroute_core::lifecycle::merge::merge`]: still open? recent enough? the earlier
//! deadline, and the schedule that counts from it) and `apply.lua` applies it if the record is
//! unchanged. Then `merge_entry.lua` marks the duplicate merged and acknowledges its entry.

use gridroute_core::{
    RoutingTable,
    lifecycle::{
        self, Ctx,
        merge::{Duplicate, merge},
    },
};

use crate::{
    Result, Store, StoreError, codec, dispatch::DispatchWrite, keys::ROUTER_GROUP, ops::Applying,
    scripts,
};
use gridroute_core::lifecycle::EventKind;

/// How often the merge is planned again when the open incident changed between read and apply.
const MAX_ATTEMPTS: usize = 5;

/// What a duplicate report is merged into.
#[derive(Debug, Clone)]
pub struct MergeWrite {
    /// The routed entry of the duplicate.
    pub write: DispatchWrite,
    /// Its report time (ms).
    pub reported_ms: i64,
    /// The open incident to merge into.
    pub into: String,
    /// Duplicate window of the policy (ms).
    pub window_ms: i64,
}

impl Store {
    /// Merges a duplicate into an open incident: first on the open incident's side, then on the
    /// duplicate's side, which acknowledges its entry. `Ok(false)`: the incident takes no
    /// duplicates (no longer open, or older than the window); route the duplicate normally.
    pub async fn merge(&self, m: &MergeWrite, table: &RoutingTable) -> Result<bool> {
        let k = self.keys();
        let Some(pa) = crate::keys::partition_of(&m.into, k.partitions()) else {
            return Ok(false);
        };
        let w = &m.write;
        let dup = Duplicate {
            id: &w.incident_id,
            reported_at: m.reported_ms,
            window_ms: m.window_ms,
            resolve_by: w.resolve_due_ms,
        };
        let mut taken = false;
        for _ in 0..MAX_ATTEMPTS {
            let snap = match self.snapshot(pa, &m.into).await {
                Err(StoreError::NotFound(_)) => return Ok(false),
                other => other?,
            };
            let ctx = Ctx {
                table,
                now: snap.now,
            };
            let plan = match merge(&ctx, &snap.rec, &dup) {
                Err(_) => return Ok(false),
                // Merged by an earlier delivery of this entry.
                Ok(None) => {
                    taken = true;
                    break;
                }
                Ok(Some(plan)) => plan,
            };
            let ops = self.plan_ops(pa, &m.into, &snap, &plan, table)?;
            let mut pipe = redis::pipe();
            ops.call(
                &mut pipe,
                &Applying {
                    version: &snap.version,
                    request_field: "",
                    action: "merge",
                    planned_at: Some(snap.now),
                },
            );
            match self
                .run_script::<(i64, Vec<u8>)>(&mut pipe, "merge")
                .await?
                .0
            {
                1 => {
                    taken = true;
                    break;
                }
                -2 => return Ok(false),
                _ => metrics::counter!(gridroute_telemetry::names::TRANSITION_CONFLICTS_TOTAL)
                    .increment(1),
            }
        }
        if !taken {
            return Err(StoreError::Unavailable(format!(
                "incident {} changed {MAX_ATTEMPTS} times while a duplicate was merged; retry",
                m.into
            )));
        }
        let p = w.partition;
        let event = codec::event_bytes(
            EventKind::Merged,
            "router",
            &format!("duplicate of {}: the case continues there", m.into),
            "",
        );
        let routable = lifecycle::ROUTABLE.map(lifecycle::Status::as_str).join(",");
        let mut pipe = redis::pipe();
        scripts::evalsha(
            &mut pipe,
            &scripts::MERGE_ENTRY,
            &[
                k.ingest(p),
                k.incident(p, &w.incident_id),
                k.timeline(p, &w.incident_id),
                k.events(p),
            ],
            &[
                ROUTER_GROUP.as_bytes(),
                w.entry_id.as_bytes(),
                w.generation.as_bytes(),
                m.into.as_bytes(),
                &event,
                &w.decision,
                w.region_codes.join(",").as_bytes(),
                w.incident_id.as_bytes(),
                routable.as_bytes(),
                lifecycle::Status::Merged.as_str().as_bytes(),
            ],
        );
        self.run_script::<i64>(&mut pipe, "merge").await?;
        Ok(true)
    }
}
