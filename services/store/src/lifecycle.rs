//! Applying lifecycle actions: read the record, let the core plan the change, apply the plan
//! atomically with one script that checks the record has not changed meanwhile (optimistic
//! concurrency on the record's version) and records the request id, so retries are harmless.
//! How a plan becomes Redis commands is in `ops`.

use gridroute_core::{
    RoutingTable,
    lifecycle::{self, Caller, Command, Ctx, Plan},
};

use crate::{
    Result, Store, StoreError, codec, keys,
    ops::{Applying, Change, NOW, Ops, b, closes},
};
use gridroute_core::lifecycle::EventKind;

/// How often a plan is recomputed when the record changed between read and apply.
const MAX_ATTEMPTS: usize = 5;

/// One action on one incident.
#[derive(Debug, Clone)]
pub struct ActRequest {
    /// The incident.
    pub incident_id: String,
    /// Idempotency key ('' = none).
    pub request_id: String,
    /// Who acts.
    pub caller: Caller,
    /// What they ask.
    pub command: Command,
}

/// What an action did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acted {
    /// Applied now.
    Applied,
    /// This request id was applied before; nothing changed.
    Repeated,
}

impl Store {
    /// Applies an action. `Refused` errors carry the core's reason.
    pub async fn act(&self, table: &RoutingTable, req: &ActRequest) -> Result<Acted> {
        let k = self.keys();
        let id = req.incident_id.as_str();
        let p = keys::partition_of(id, k.partitions())
            .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
        let rq_field = (!req.request_id.is_empty()).then(|| format!("rq:{}", req.request_id));
        for _ in 0..MAX_ATTEMPTS {
            let snap = self.snapshot(p, id).await?;
            if let Some(f) = &rq_field
                && let Some(prev) = snap.fields.get(f)
            {
                return repeated(prev, req.command.name());
            }
            let ctx = Ctx {
                table,
                now: snap.now,
            };
            let plan = lifecycle::plan(&ctx, &snap.rec, &req.caller, &req.command)
                .map_err(StoreError::Refused)?;
            let ops = self.plan_ops(p, id, &snap, &plan, table)?;
            let mut pipe = redis::pipe();
            ops.call(
                &mut pipe,
                &Applying {
                    version: &snap.version,
                    request_field: rq_field.as_deref().unwrap_or(""),
                    action: req.command.name(),
                    planned_at: Some(snap.now),
                },
            );
            let (code, detail): (i64, Vec<u8>) = self.run_script(&mut pipe, "act").await?;
            match code {
                1 => {
                    metrics::counter!(gridroute_telemetry::names::TRANSITIONS_TOTAL,
                        "action" => req.command.name(), "status" => plan.status.as_str())
                    .increment(1);
                    if plan.status == lifecycle::Status::Resolved
                        && let Ok(start) = snap.text("first_dispatched_at").parse::<i64>()
                    {
                        let working = table.calendar.working_between(start, snap.now);
                        metrics::histogram!(gridroute_telemetry::names::RESOLVE_WORKING_SECONDS,
                            "department" => snap.rec.department.clone())
                        .record(working as f64 / 1000.0);
                    }
                    if plan.fan_out && !snap.rec.merged.is_empty() {
                        self.fan_out(id, &snap.rec.merged, &plan).await;
                    }
                    if plan.status == lifecycle::Status::Reported
                        && !snap.rec.merged_into.is_empty()
                    {
                        self.forget_merged(&snap.rec.merged_into, id).await?;
                    }
                    return Ok(Acted::Applied);
                }
                0 => return repeated(&detail, req.command.name()),
                -2 => return Err(StoreError::NotFound(id.to_owned())),
                // The record changed under us: plan again from a fresh read.
                _ => {
                    metrics::counter!(gridroute_telemetry::names::TRANSITION_CONFLICTS_TOTAL)
                        .increment(1);
                }
            }
        }
        Err(StoreError::Unavailable(format!(
            "incident {id} changed {MAX_ATTEMPTS} times while the action was applied; retry"
        )))
    }

    /// Tells the incidents merged into `id` about its outcome (best effort: the outcome is on
    /// `id`'s own record and events either way, and each merged record points to it).
    async fn fan_out(&self, id: &str, merged: &[String], plan: &Plan) {
        let k = self.keys();
        for m in merged {
            let Some(p) = keys::partition_of(m, k.partitions()) else {
                continue;
            };
            let event = codec::event_bytes(
                EventKind::Outcome,
                "router",
                &format!(
                    "{id} (this report's case) is {}: {}",
                    plan.status.as_str(),
                    plan.event.detail
                ),
                "",
            );
            let mut ops = Ops::new(k.incident(p, m));
            ops.record(
                k,
                p,
                m,
                event,
                &Change {
                    status: "merged",
                    department: "",
                    regions: "",
                    merged: None,
                },
            );
            if closes(plan.status) {
                // A merged report's case is over when the case it joined is.
                ops.op("ZADD", k.closed(p), vec![NOW.to_vec(), b(m.as_str())]);
                ops.op("ZADD", k.archive_due(p), vec![NOW.to_vec(), b(m.as_str())]);
            }
            if let Err(e) = self.apply_unconditional(ops).await {
                tracing::warn!(incident = %m, error = %e, "could not note the outcome on a merged incident");
            }
        }
    }

    /// Removes `id` from the merged set of `into` (after an un-merge).
    async fn forget_merged(&self, into: &str, id: &str) -> Result<()> {
        let k = self.keys();
        let Some(p) = keys::partition_of(into, k.partitions()) else {
            return Ok(());
        };
        let event = codec::event_bytes(
            EventKind::Unmerged,
            "router",
            &format!("{id} is routed on its own again"),
            "",
        );
        let mut ops = Ops::new(k.incident(p, into));
        ops.op("SREM", k.merged(p, into), vec![b(id)]);
        ops.op("RPUSH", k.timeline(p, into), vec![Ops::stamped(&event)]);
        self.apply_unconditional(ops).await
    }

    async fn apply_unconditional(&self, ops: Ops) -> Result<()> {
        self.apply_ops(ops, "*").await.map(drop)
    }

    /// A reporter's points: the total and the newest `limit` entries (time ms, incident,
    /// points, category), across every partition. The total counts entries folded away
    /// ([`Store::fold_points`]).
    pub async fn reporter_points(
        &self,
        source: &str,
        reporter: &str,
        limit: usize,
    ) -> Result<(i64, Vec<(i64, String, i64, String)>)> {
        let k = self.keys();
        let mut pipe = redis::pipe();
        let field = format!("{source}:{reporter}");
        for p in 0..k.partitions() {
            pipe.lrange(k.points(p, source, reporter), 0, -1)
                .hget(k.points_carried(p), &field);
        }
        // Per partition, its list and its carried total.
        let answers: Vec<redis::Value> = self.query_pipe(&pipe).await?;
        let mut lists: Vec<String> = Vec::new();
        let mut carried = 0i64;
        for (i, v) in answers.into_iter().enumerate() {
            if i % 2 == 0 {
                lists.extend(redis::from_redis_value::<Vec<String>>(v).unwrap_or_default());
            } else {
                carried += redis::from_redis_value::<Option<i64>>(v)
                    .ok()
                    .flatten()
                    .unwrap_or(0);
            }
        }
        let mut entries: Vec<(i64, String, i64, String)> = lists
            .into_iter()
            .filter_map(|e| {
                let mut it = e.splitn(4, '|');
                Some((
                    it.next()?.parse().ok()?,
                    it.next()?.to_owned(),
                    it.next()?.parse().ok()?,
                    it.next().unwrap_or("").to_owned(),
                ))
            })
            .collect();
        let total = entries.iter().map(|e| e.2).sum::<i64>() + carried;
        entries.sort_by_key(|e| std::cmp::Reverse(e.0));
        entries.truncate(limit);
        Ok((total, entries))
    }
}

fn repeated(prev: &[u8], action: &'static str) -> Result<Acted> {
    if prev == action.as_bytes() {
        Ok(Acted::Repeated)
    } else {
        Err(StoreError::RequestIdReused {
            action: String::from_utf8_lossy(prev).into_owned(),
        })
    }
}

/// Entries a points ledger keeps per partition once its incident leaves Redis or its contact is
/// erased (`GetReporterPoints` shows the newest 100 across partitions): older ones are folded
/// into the carried total, so that Redis memory does not grow with a reporter's history.
pub const POINTS_KEPT: usize = 100;

impl Store {
    /// Folds the points ledger of an incident's reporter in partition `p` (see
    /// [`POINTS_KEPT`]); nothing without a reporter. Returns the entries folded.
    pub async fn fold_points(
        &self,
        p: u16,
        report: Option<&gridroute_proto::v1::ReportIncidentRequest>,
    ) -> Result<u64> {
        let Some((source, reporter)) = report.and_then(|r| {
            let id = &r.reporter.as_ref()?.reporter_id;
            (!id.is_empty()).then_some((r.source_system.as_str(), id.as_str()))
        }) else {
            return Ok(0);
        };
        let k = self.keys();
        let mut pipe = redis::pipe();
        crate::scripts::evalsha(
            &mut pipe,
            &crate::scripts::FOLD_POINTS,
            &[k.points(p, source, reporter), k.points_carried(p)],
            &[
                POINTS_KEPT.to_string().as_bytes(),
                format!("{source}:{reporter}").as_bytes(),
            ],
        );
        self.run_script(&mut pipe, "fold_points").await
    }
}
