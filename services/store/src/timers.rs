//! Firing SLA timers. The head of each running case's schedule is a member of its partition's
//! timer set, scored by due time; any replica may fire any of them:
//! 1. `claim_timers.lua` moves due members to the claimed set with a lease (the Redis clock
//!    decides what is due, whatever a replica's own clock says);
//! 2. the records are read in one pipeline, and the core plans each timer
//!    ([`gridroute_core::lifecycle::timers::fire`]);
//! 3. each plan is applied by `apply.lua` like any action, only if the record is unchanged,
//!    together with the next step of the schedule and the removal of the claim.
//!
//! A replica that stops after claiming leaves the claims to lapse; they are claimed again and
//! planned from the record, which says whether the timer already fired.

use std::time::Duration;

use gridroute_core::{
    RoutingTable,
    lifecycle::timers::{self, Firing},
    sla::TimerKind,
};

use crate::{
    Result, Store, StoreError, codec,
    ops::{ApplyBatch, Applying, Ops, Snapshot, b},
    schedule, scripts,
};

/// How long a claim holds before any replica may claim the timer again: far longer than a
/// batch takes to apply, short enough that a replica's crash delays its timers by seconds.
pub const CLAIM_LEASE: Duration = Duration::from_secs(10);

/// How often a timer is planned again when its record changed between read and apply.
const MAX_ATTEMPTS: usize = 3;

/// Most timers one `apply.lua` call applies: the call's own cost is paid once for them, and the
/// pause other clients see stays around a millisecond.
const PLANS_PER_CALL: usize = 64;

/// The record fields a timer's plan reads or its application needs.
const FIELDS: [&str; 6] = ["status", "v", "timers", "fired", "dept", "regions"];

/// What `apply.lua` answers for one plan: a code and its detail.
type Applied = (i64, Vec<u8>);

/// One timer that took effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    /// Its kind, e.g. `warn50`, `urge`, `supervise1`.
    pub kind: String,
    /// The department notified.
    pub department: String,
    /// How late it fired after its due time, in ms.
    pub lateness_ms: i64,
}

/// A claimed member of the timer set.
struct Claim {
    member: String,
    id: String,
    kind: TimerKind,
    target: String,
}

impl Store {
    /// Fires up to `limit` due timers of a partition with the routing table in force. Timers of
    /// incidents that moved on (a warning for a resolved case) leave the schedule without
    /// effect.
    pub async fn fire_due_timers(
        &self,
        partition: u16,
        limit: usize,
        table: &RoutingTable,
    ) -> Result<Vec<Fired>> {
        let p = partition;
        let k = self.keys();
        let mut pipe = redis::pipe();
        let lease = CLAIM_LEASE.as_millis().to_string();
        scripts::evalsha(
            &mut pipe,
            &scripts::CLAIM_TIMERS,
            &[k.sla(p), k.sla_claimed(p)],
            &[limit.to_string().as_bytes(), lease.as_bytes()],
        );
        let reply: Vec<redis::Value> = self.run_script(&mut pipe, "claim_timers").await?;
        let mut it = reply.into_iter();
        let now: i64 = match it.next() {
            Some(v) => crate::decoded(v)?,
            None => return Err(StoreError::Internal("claim_timers reply".into())),
        };
        let mut release = Vec::new();
        let mut todo = Vec::new();
        for v in it {
            let member: String = crate::decoded(v)?;
            match schedule::parse_member(&member) {
                Some((id, kind, target)) => todo.push(Claim {
                    id: id.to_owned(),
                    kind,
                    target: target.to_owned(),
                    member,
                }),
                // A kind of a newer release: left claimed, as an unreadable schedule is below.
                None => {
                    metrics::counter!(gridroute_telemetry::names::TIMERS_UNREADABLE_TOTAL)
                        .increment(1);
                    tracing::warn!(
                        partition = p,
                        "an SLA timer this release cannot read; left to a newer replica"
                    );
                }
            }
        }
        let mut fired = Vec::new();
        for _ in 0..MAX_ATTEMPTS {
            if todo.is_empty() {
                break;
            }
            let snaps = self.timer_snapshots(p, &todo, now).await?;
            let mut pipe = redis::pipe();
            let mut batch = ApplyBatch::default();
            let mut applying = Vec::new();
            for (c, snap) in todo.into_iter().zip(snaps) {
                let Some(snap) = snap else {
                    release.push(c.member);
                    continue;
                };
                if !schedule::readable(snap.text("timers")) {
                    // Written by a newer release: left claimed, so that the claim lapses and a
                    // replica that reads the whole schedule fires it (a rolling upgrade).
                    metrics::counter!(gridroute_telemetry::names::TIMERS_UNREADABLE_TOTAL)
                        .increment(1);
                    tracing::warn!(partition = p, incident = %c.id, "an SLA schedule this release cannot read; left to a newer replica");
                    continue;
                }
                let (mut ops, due) = match timers::fire(&snap.rec, c.kind, &c.target, now) {
                    Firing::Nothing => {
                        release.push(c.member);
                        continue;
                    }
                    Firing::Skip(rest) => {
                        let mut ops = Ops::new(k.incident(p, &c.id));
                        let set = ops.reschedule(k, p, &c.id, &snap.rec.timers, &rest);
                        ops.op("HSET", k.incident(p, &c.id), set.to_vec());
                        (ops, None)
                    }
                    Firing::Fire(plan, due) => {
                        (self.plan_ops(p, &c.id, &snap, &plan, table)?, Some(due))
                    }
                };
                ops.op("ZREM", k.sla_claimed(p), vec![b(c.member.as_str())]);
                batch.push(
                    ops,
                    &Applying {
                        version: &snap.version,
                        request_field: "",
                        action: "timer",
                        planned_at: Some(now),
                    },
                );
                applying.push((c, due));
                if batch.len() == PLANS_PER_CALL {
                    std::mem::take(&mut batch).call(&mut pipe);
                }
            }
            if batch.len() > 0 {
                batch.call(&mut pipe);
            }
            // Nothing to apply (every claim released or left): an empty pipeline is an error,
            // which would return before the releases below.
            let calls: Vec<Result<Vec<Applied>>> = if applying.is_empty() {
                Vec::new()
            } else {
                self.run_scripts(&mut pipe, "fire_timers").await?
            };
            let results = calls.into_iter().flat_map(|call| match call {
                Ok(answers) => answers.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(e.to_string()); PLANS_PER_CALL],
            });
            let mut again = Vec::new();
            for ((c, due), r) in applying.into_iter().zip(results) {
                match r {
                    Ok((1, _)) => {
                        if let Some(due) = due {
                            fired.push(Fired {
                                kind: c.kind.name(),
                                department: c.target,
                                lateness_ms: now - due,
                            });
                        }
                    }
                    // Changed since it was read: plan again.
                    Ok((-1, _)) => again.push(c),
                    Ok(_) => release.push(c.member),
                    // Left claimed: the claim lapses and the timer is planned again.
                    Err(e) => {
                        tracing::warn!(partition = p, error = %e, "could not apply a timer");
                    }
                }
            }
            todo = again;
        }
        if !release.is_empty() {
            let mut c = self.conn();
            redis::cmd("ZREM")
                .arg(k.sla_claimed(p))
                .arg(&release)
                .query_async::<()>(&mut c)
                .await
                .map_err(StoreError::from)?;
        }
        Ok(fired)
    }

    /// The records of claimed timers, as far as firing needs them (`None`: gone).
    async fn timer_snapshots(
        &self,
        p: u16,
        claims: &[Claim],
        now: i64,
    ) -> Result<Vec<Option<Snapshot>>> {
        let k = self.keys();
        let mut pipe = redis::pipe();
        for c in claims {
            pipe.cmd("HMGET").arg(k.incident(p, &c.id)).arg(&FIELDS[..]);
            pipe.smembers(k.merged(p, &c.id));
        }
        let replies: Vec<redis::Value> = self.query_pipe(&pipe).await?;
        let mut out = Vec::with_capacity(claims.len());
        let mut it = replies.into_iter();
        while let (Some(values), Some(merged)) = (it.next(), it.next()) {
            let values: Vec<Option<Vec<u8>>> = crate::decoded(values)?;
            let merged: Vec<String> = crate::decoded(merged)?;
            let fields: codec::Fields = FIELDS
                .iter()
                .zip(values)
                .filter_map(|(f, v)| Some(((*f).to_owned(), v?)))
                .collect();
            if !fields.contains_key("status") {
                out.push(None);
                continue;
            }
            let decision = Default::default();
            let rec = codec::record_from_fields(&fields, None, &decision, merged);
            out.push(Some(Snapshot {
                rec,
                version: fields
                    .get("v")
                    .map_or_else(|| "0".into(), |v| String::from_utf8_lossy(v).into_owned()),
                fields,
                report: None,
                decision,
                now,
            }));
        }
        Ok(out)
    }

    /// Pending timers over every partition (claimed ones included).
    pub async fn pending_timers(&self) -> Result<u64> {
        let k = self.keys();
        let mut pipe = redis::pipe();
        for p in 0..k.partitions() {
            pipe.zcard(k.sla(p));
            pipe.zcard(k.sla_claimed(p));
        }
        let counts: Vec<u64> = self.query_pipe(&pipe).await?;
        Ok(counts.into_iter().sum())
    }
}
