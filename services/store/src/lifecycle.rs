//! Applying lifecycle actions: read the record, let the core plan the change, apply the plan
//! atomically with one script that checks the record has not changed meanwhile (optimistic
//! concurrency on the record's version) and records the request id, so retries are harmless.
//!
//! The plan's parts become plain Redis commands on keys of the incident's partition: fields,
//! timeline, events stream, timers, notices on department streams, a new ingest entry for a
//! re-route, the reporter's points.

use std::collections::HashMap;

use gridroute_core::{
    RoutingTable,
    lifecycle::{self, Caller, Command, Ctx, Plan, Record, Timers},
    sla::Timer,
};
use gridroute_proto::v1 as pb;
use prost::Message;

use crate::{
    EVENTS_MAX_LEN, Result, Store, StoreError, codec,
    consumer::{DISPATCH_STREAM_MAX_LEN, timer_head, timer_list, timer_member},
    keys, scripts,
};

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

/// A record as read, with what applying a plan needs besides the core's view.
pub(crate) struct Snapshot {
    pub(crate) rec: Record,
    pub(crate) version: String,
    pub(crate) fields: HashMap<String, Vec<u8>>,
    pub(crate) report: Option<pb::ReportIncidentRequest>,
    pub(crate) decision: pb::RouteDecision,
    pub(crate) now: i64,
}

impl Snapshot {
    pub(crate) fn text(&self, k: &str) -> &str {
        self.fields
            .get(k)
            .and_then(|v| std::str::from_utf8(v).ok())
            .unwrap_or("")
    }
}

/// Builds the flat operation list of `apply.lua`.
pub(crate) struct Ops {
    keys: Vec<String>,
    args: Vec<Vec<u8>>,
    count: usize,
}

/// What an events-stream entry says of the incident after a change.
pub(crate) struct Change<'a> {
    /// Its status.
    pub(crate) status: &'a str,
    /// The department handling it.
    pub(crate) department: &'a str,
    /// Its region codes (comma-separated).
    pub(crate) regions: &'a str,
    /// The incidents merged into it, when the change concerns them too.
    pub(crate) merged: Option<&'a str>,
}

/// Replaced by the Redis time in ms.
pub(crate) const NOW: &[u8] = b"\0NOW";

impl Ops {
    pub(crate) fn new(incident_key: String) -> Self {
        Self {
            keys: vec![incident_key],
            args: Vec::new(),
            count: 0,
        }
    }

    fn key(&mut self, key: String) -> usize {
        if let Some(i) = self.keys.iter().position(|k| *k == key) {
            return i + 1;
        }
        self.keys.push(key);
        self.keys.len()
    }

    pub(crate) fn op(&mut self, cmd: &str, key: String, args: Vec<Vec<u8>>) {
        let i = self.key(key);
        self.args.push(cmd.as_bytes().to_vec());
        self.args.push(i.to_string().into_bytes());
        self.args.push(args.len().to_string().into_bytes());
        self.args.extend(args);
        self.count += 1;
    }

    /// A timeline entry of incident `id` (stamped by the script), and the same change on its
    /// partition's events stream (WatchIncidents).
    pub(crate) fn record(
        &mut self,
        k: &crate::Keys,
        p: u16,
        id: &str,
        event: Vec<u8>,
        c: &Change<'_>,
    ) {
        self.op("RPUSH", k.timeline(p, id), vec![Self::stamped(&event)]);
        let mut entry = vec![
            b("MAXLEN"),
            b("~"),
            b(EVENTS_MAX_LEN),
            b("*"),
            b("id"),
            b(id),
            b("s"),
            b(c.status),
            b("d"),
            b(c.department),
            b("r"),
            b(c.regions),
            b("e"),
            event,
        ];
        if let Some(m) = c.merged {
            entry.extend([b("m"), b(m)]);
        }
        self.op("XADD", k.events(p), entry);
    }

    /// `NOW|bytes`: a timeline entry stamped by the script.
    pub(crate) fn stamped(bytes: &[u8]) -> Vec<u8> {
        let mut v = b"\0NOW|".to_vec();
        v.extend_from_slice(bytes);
        v
    }
}

pub(crate) fn b(s: impl Into<String>) -> Vec<u8> {
    s.into().into_bytes()
}

impl Store {
    pub(crate) async fn snapshot(&self, p: u16, id: &str) -> Result<Snapshot> {
        let k = self.keys();
        let mut c = self.conn();
        let (fields, merged, (s, us)): (codec::Fields, Vec<String>, (i64, i64)) = redis::pipe()
            .hgetall(k.incident(p, id))
            .smembers(k.merged(p, id))
            .cmd("TIME")
            .query_async(&mut c)
            .await
            .map_err(StoreError::from)
            .inspect_err(|e| crate::record_error("act", e))?;
        if fields.is_empty() {
            return Err(StoreError::NotFound(id.to_owned()));
        }
        let (report, decision) = codec::decode_parts(&fields)?;
        let rec = codec::record_from_fields(&fields, report.as_ref(), &decision, merged);
        let version = fields
            .get("v")
            .and_then(|v| std::str::from_utf8(v).ok())
            .unwrap_or("0")
            .to_owned();
        Ok(Snapshot {
            rec,
            version,
            fields,
            report,
            decision,
            now: s * 1000 + us / 1000,
        })
    }

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
            let ops = self.ops(p, id, &snap, &plan, table)?;
            let mut pipe = redis::pipe();
            let planned_at = snap.now.to_string();
            let mut args: Vec<&[u8]> = vec![
                snap.version.as_bytes(),
                rq_field.as_deref().unwrap_or("").as_bytes(),
                req.command.name().as_bytes(),
                planned_at.as_bytes(),
            ];
            let count = ops.count.to_string();
            args.push(count.as_bytes());
            args.extend(ops.args.iter().map(Vec::as_slice));
            scripts::evalsha(&mut pipe, &scripts::APPLY, &ops.keys, &args);
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

    /// Turns a plan into the operations of `apply.lua`.
    fn ops(
        &self,
        p: u16,
        id: &str,
        snap: &Snapshot,
        plan: &Plan,
        table: &RoutingTable,
    ) -> Result<Ops> {
        let k = self.keys();
        let inc = k.incident(p, id);
        let mut ops = Ops::new(inc.clone());
        let mut set: Vec<Vec<u8>> = vec![b("status"), b(plan.status.as_str())];
        for (f, v) in &plan.set {
            set.push(b(*f));
            set.push(b(v.clone()));
        }
        // Timers: cancel the old members, add the new ones, remember the list on the record.
        // The schedule on the record (earliest first); only its head is in the timer set.
        let current: Vec<Timer> = snap
            .text("timers")
            .split(',')
            .filter_map(parse_timer)
            .collect();
        let fresh = matches!(plan.timers, Timers::Replace { fresh: true, .. });
        let next: Option<Vec<Timer>> = match &plan.timers {
            Timers::Keep => None,
            Timers::Remove(kinds) => Some(
                current
                    .iter()
                    .filter(|t| !kinds.contains(&t.kind))
                    .cloned()
                    .collect(),
            ),
            Timers::Replace { timers, .. } => Some(timers.clone()),
        };
        if let Some(next) = next {
            let old_head = timer_head(&current);
            let new_head = timer_head(&next);
            if old_head != new_head {
                if let Some(h) = old_head {
                    ops.op("ZREM", k.sla(p), vec![b(timer_member(id, h))]);
                }
                if let Some(h) = new_head {
                    ops.op(
                        "ZADD",
                        k.sla(p),
                        vec![b(h.due.to_string()), b(timer_member(id, h))],
                    );
                }
            }
            set.push(b("timers"));
            set.push(b(timer_list(&next)));
        }
        let mut clear: Vec<Vec<u8>> = plan.clear.iter().map(|f| b(*f)).collect();
        if fresh {
            clear.push(b("fired"));
        }
        // A new primary: its dispatch, its index, and a decision that names it.
        let mut decision = snap.decision.clone();
        if let Some(assignee) = &plan.assign {
            decision.department_id.clone_from(assignee);
            decision
                .reasons
                .push(format!("assigned to {assignee} by arbitration"));
            set.push(b("decision"));
            set.push(decision.encode_to_vec());
            set.push(b("dept_at"));
            set.push(NOW.to_vec());
            ops.op(
                "XADD",
                k.index_department(p, assignee),
                vec![b("*"), b("i"), b(id)],
            );
        }
        // A re-route starts a new routing generation: the router dispatches only the entry
        // that carries it.
        let generation = (snap.rec.generation + 1).to_string();
        if plan.reroute.is_some() {
            set.push(b("gen"));
            set.push(b(generation.clone()));
        }
        ops.op("HSET", inc.clone(), set);
        if !clear.is_empty() {
            ops.op("HDEL", inc.clone(), clear);
        }
        let event = pb::TimelineEvent {
            time: None,
            kind: plan.event.kind.to_owned(),
            actor: plan.event.actor.clone(),
            detail: plan.event.detail.clone(),
            department_id: plan.event.department.clone(),
            user: plan.event.user.clone(),
            actor_kind: plan.event.actor_kind.to_owned(),
        }
        .encode_to_vec();
        let dept_after = plan
            .set
            .iter()
            .find(|(f, _)| *f == "dept")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| {
                if plan.clear.contains(&"dept") {
                    String::new()
                } else {
                    snap.rec.department.clone()
                }
            });
        ops.record(
            k,
            p,
            id,
            event,
            &Change {
                status: plan.status.as_str(),
                department: &dept_after,
                regions: snap.text("regions"),
                merged: Some(&snap.rec.merged.join(",")),
            },
        );
        let maxlen = DISPATCH_STREAM_MAX_LEN.to_string();
        let notify = |ops: &mut Ops, department: &str, msg: pb::Dispatch| {
            ops.op(
                "XADD",
                k.dispatch(p, department),
                vec![
                    b("MAXLEN"),
                    b("~"),
                    b(maxlen.clone()),
                    b("*"),
                    b("id"),
                    b(id),
                    b("d"),
                    msg.encode_to_vec(),
                ],
            );
        };
        let report = &snap.report;
        if let Some(assignee) = &plan.assign {
            let num = |f: &str| {
                plan.set
                    .iter()
                    .find(|(k, _)| *k == f)
                    .and_then(|(_, v)| v.parse::<i64>().ok())
                    .map(codec::timestamp)
            };
            notify(
                &mut ops,
                assignee,
                pb::Dispatch {
                    incident_id: id.to_owned(),
                    department_id: assignee.clone(),
                    role: pb::DispatchRole::Primary as i32,
                    decision: Some(decision.clone()),
                    report: report.clone(),
                    dispatched_time: Some(codec::timestamp(snap.now)),
                    accept_deadline: num("accept_due"),
                    resolve_deadline: num("resolve_due"),
                    kind: pb::DispatchKind::Assigned as i32,
                    note: plan.event.detail.clone(),
                    ..Default::default()
                },
            );
        }
        for n in &plan.notices {
            if n.department.is_empty() || table.department(&n.department).is_none() {
                continue;
            }
            notify(
                &mut ops,
                &n.department,
                pb::Dispatch {
                    incident_id: id.to_owned(),
                    department_id: n.department.clone(),
                    kind: codec::notice_kind(n.kind) as i32,
                    note: n.note.clone(),
                    ..Default::default()
                },
            );
        }
        if let Some(excluded) = &plan.reroute {
            let mut entry = vec![
                b("*"),
                b("id"),
                b(id),
                b("g"),
                b(generation),
                b("t"),
                NOW.to_vec(),
                b("r"),
                snap.fields.get("report").cloned().unwrap_or_default(),
                b("x"),
                b(excluded.join(",")),
            ];
            if plan.status == lifecycle::Status::Reported {
                // Un-merged: route on its own, without looking for duplicates again.
                entry.push(b("nm"));
                entry.push(b("1"));
            }
            ops.op("XADD", k.ingest(p), entry);
        }
        if plan.close_duplicates && !snap.text("geo").is_empty() {
            ops.op("ZREM", snap.text("geo").to_owned(), vec![b(id)]);
        }
        // The retention clock of the reporter's contact starts when the case closes; a case
        // reopened after closing leaves the list again.
        if closes(plan.status) {
            ops.op("ZADD", k.closed(p), vec![NOW.to_vec(), b(id)]);
        } else if snap.rec.status.is_some_and(closes) {
            ops.op("ZREM", k.closed(p), vec![b(id)]);
        }
        if plan.points > 0
            && let Some(r) = &report
            && !snap.rec.reporter_id.is_empty()
        {
            let key = k.points(p, &r.source_system, &snap.rec.reporter_id);
            ops.op(
                "LPUSH",
                key,
                vec![Ops::stamped(
                    format!("{id}|{}|{}", plan.points, r.category).as_bytes(),
                )],
            );
        }
        Ok(ops)
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
                "outcome",
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
            "unmerged",
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

    /// Applies operations with `apply.lua` if the record's version is still `version` (`*`:
    /// whatever it is). Returns the script's code: 1 applied, -1 changed meanwhile, -2 gone.
    pub(crate) async fn apply_ops(&self, ops: Ops, version: &str) -> Result<i64> {
        let mut pipe = redis::pipe();
        let count = ops.count.to_string();
        let mut args: Vec<&[u8]> = vec![version.as_bytes(), b"", b"note", b"", count.as_bytes()];
        args.extend(ops.args.iter().map(Vec::as_slice));
        scripts::evalsha(&mut pipe, &scripts::APPLY, &ops.keys, &args);
        self.run_script::<(i64, Vec<u8>)>(&mut pipe, "act")
            .await
            .map(|(code, _)| code)
    }

    /// A reporter's points: the total and the newest `limit` entries (time ms, incident,
    /// points, category), across every partition.
    pub async fn reporter_points(
        &self,
        source: &str,
        reporter: &str,
        limit: usize,
    ) -> Result<(i64, Vec<(i64, String, i64, String)>)> {
        let k = self.keys();
        let mut pipe = redis::pipe();
        for p in 0..k.partitions() {
            pipe.lrange(k.points(p, source, reporter), 0, -1);
        }
        let lists: Vec<Vec<String>> = self.query_pipe(&pipe).await?;
        let mut entries: Vec<(i64, String, i64, String)> = lists
            .into_iter()
            .flatten()
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
        let total = entries.iter().map(|e| e.2).sum();
        entries.sort_by_key(|e| std::cmp::Reverse(e.0));
        entries.truncate(limit);
        Ok((total, entries))
    }
}

/// Whether a case in this state is over: its reporter's contact is erased a retention period
/// later.
fn closes(s: lifecycle::Status) -> bool {
    matches!(s, lifecycle::Status::Closed | lifecycle::Status::Cancelled)
}

/// One entry of a record's timer schedule, `<kind>|<department>|<due ms>`.
fn parse_timer(entry: &str) -> Option<Timer> {
    let mut it = entry.rsplitn(2, '|');
    let due = it.next()?.parse().ok()?;
    let (kind, target) = it.next()?.split_once('|')?;
    Some(Timer {
        due,
        kind: gridroute_core::sla::TimerKind::parse(kind)?,
        target: target.to_owned(),
    })
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
