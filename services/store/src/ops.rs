//! From a core plan to Redis: a snapshot of the record the plan is made from, and the plain
//! Redis commands its parts become on keys of the incident's partition (fields, schedule and
//! timer set, timeline, events stream, notices on department streams, a new ingest entry for a
//! re-route, the merged set, the reporter's points). `apply.lua` runs them atomically, only if
//! the record's version is still the snapshot's.

use std::collections::HashMap;

use gridroute_core::{
    RoutingTable,
    lifecycle::{self, Plan, Record, Timers},
    sla::Timer,
};
use gridroute_proto::v1 as pb;
use prost::Message;

use crate::{Result, Store, StoreError, codec, schedule, scripts};

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

/// The conditions of one `apply.lua` call.
pub(crate) struct Applying<'a> {
    /// The record's version the plan was made from (`*`: whatever it is).
    pub(crate) version: &'a str,
    /// The record field remembering the request id ('' = none).
    pub(crate) request_field: &'a str,
    /// The action's name, kept under the request id.
    pub(crate) action: &'a str,
    /// The time the plan was made for (ms); `None`: the Redis time when it is applied.
    pub(crate) planned_at: Option<i64>,
}

impl<'a> Applying<'a> {
    /// A change without a request id, stamped when applied.
    pub(crate) fn note(version: &'a str) -> Self {
        Self {
            version,
            request_field: "",
            action: "note",
            planned_at: None,
        }
    }
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

    /// Replaces the case's schedule `current` by `next`: moves the head in the timer set, and
    /// returns the record field and value to set.
    pub(crate) fn reschedule(
        &mut self,
        k: &crate::Keys,
        p: u16,
        id: &str,
        current: &[Timer],
        next: &[Timer],
    ) -> [Vec<u8>; 2] {
        let old_head = schedule::head(current);
        let new_head = schedule::head(next);
        if old_head != new_head {
            if let Some(h) = old_head {
                self.op("ZREM", k.sla(p), vec![b(schedule::member(id, h))]);
            }
            if let Some(h) = new_head {
                self.op(
                    "ZADD",
                    k.sla(p),
                    vec![b(h.due.to_string()), b(schedule::member(id, h))],
                );
            }
        }
        [b("timers"), b(schedule::encode(next))]
    }

    /// Appends the `apply.lua` call of these operations alone to a pipeline.
    pub(crate) fn call(self, pipe: &mut redis::Pipeline, a: &Applying<'_>) {
        let mut batch = ApplyBatch::default();
        batch.push(self, a);
        batch.call(pipe);
    }

    /// `NOW|bytes`: a timeline entry stamped by the script.
    pub(crate) fn stamped(bytes: &[u8]) -> Vec<u8> {
        let mut v = b"\0NOW|".to_vec();
        v.extend_from_slice(bytes);
        v
    }
}

/// Several plans of one partition in one `apply.lua` call; each is checked and applied on its
/// own, and answers on its own.
#[derive(Default)]
pub(crate) struct ApplyBatch {
    keys: Vec<String>,
    args: Vec<Vec<u8>>,
    plans: usize,
}

impl ApplyBatch {
    /// Adds a plan's operations.
    pub(crate) fn push(&mut self, ops: Ops, a: &Applying<'_>) {
        let at = a.planned_at.map(|t| t.to_string()).unwrap_or_default();
        self.args.extend([
            b(ops.keys.len().to_string()),
            b(a.version),
            b(a.request_field),
            b(a.action),
            b(at),
            b(ops.count.to_string()),
        ]);
        self.keys.extend(ops.keys);
        self.args.extend(ops.args);
        self.plans += 1;
    }

    /// How many plans it holds.
    pub(crate) fn len(&self) -> usize {
        self.plans
    }

    /// Appends the call to a pipeline; it answers with a code and a detail per plan.
    pub(crate) fn call(self, pipe: &mut redis::Pipeline) {
        let plans = self.plans.to_string();
        let mut args: Vec<&[u8]> = vec![plans.as_bytes()];
        args.extend(self.args.iter().map(Vec::as_slice));
        scripts::evalsha(pipe, &scripts::APPLY, &self.keys, &args);
    }
}

pub(crate) fn b(s: impl Into<String>) -> Vec<u8> {
    s.into().into_bytes()
}

impl Store {
    /// Reads incident `id` of partition `p` with the Redis time.
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

    /// Turns a plan made from `snap` into the operations of `apply.lua`.
    pub(crate) fn plan_ops(
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
        // Timers: the record keeps the schedule; the timer set only its head.
        let current = &snap.rec.timers;
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
            set.extend(ops.reschedule(k, p, id, current, &next));
        }
        let mut clear: Vec<Vec<u8>> = plan.clear.iter().map(|f| b(*f)).collect();
        if fresh {
            clear.push(b("fired"));
        }
        // The decision delivered with this generation's dispatches stays readable for a
        // subscriber replaying them (`decision.<gen>`, read by the dispatch reader) once an
        // arbitration or a re-route replaces it.
        let delivered = format!("decision.{}", snap.rec.generation);
        if (plan.assign.is_some() || plan.reroute.is_some())
            && !snap.fields.contains_key(&delivered)
            && let Some(d) = snap.fields.get("decision")
        {
            set.push(b(delivered));
            set.push(d.clone());
        }
        // A new primary: its dispatch, its index, and a decision that names it.
        let mut decision = snap.decision.clone();
        if let Some(assignee) = &plan.assign {
            decision.department_id.clone_from(assignee);
            decision
                .reasons
                .push(format!("assigned to {assignee} by arbitration"));
            set.push(b("decision"));
            set.push(codec::decision_bytes(&mut decision, snap.report.as_ref()));
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
        let event = codec::stored_event(pb::TimelineEvent {
            time: None,
            kind: plan.event.kind.as_str().to_owned(),
            r#type: gridroute_mapping::timeline_kind(plan.event.kind) as i32,
            actor: plan.event.actor.clone(),
            detail: plan.event.detail.clone(),
            department_id: plan.event.department.clone(),
            user: plan.event.user.clone(),
            actor_kind: plan.event.actor_kind.to_owned(),
        });
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
        let notify = |ops: &mut Ops, department: &str, msg: pb::Dispatch| {
            ops.op(
                "XADD",
                k.dispatch(p, department),
                vec![b("*"), b("id"), b(id), b("d"), msg.encode_to_vec()],
            );
        };
        let report = &snap.report;
        if let Some(assignee) = &plan.assign {
            let num = |f: &str| {
                plan.set
                    .iter()
                    .find(|(k, _)| *k == f)
                    .and_then(|(_, v)| v.parse::<i64>().ok())
                    .map(gridroute_mapping::timestamp)
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
                    dispatched_time: Some(gridroute_mapping::timestamp(snap.now)),
                    accept_deadline: num("accept_due"),
                    resolve_deadline: num("resolve_due"),
                    kind: pb::DispatchKind::Assigned as i32,
                    note: plan.event.detail.clone(),
                    deadline_estimated: plan
                        .set
                        .iter()
                        .any(|(k, _)| *k == gridroute_core::lifecycle::ESTIMATED_FIELD),
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
                    kind: gridroute_mapping::notice_kind(n.kind) as i32,
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
        if let Some(dup) = &plan.merge {
            ops.op("SADD", k.merged(p, id), vec![b(dup.as_str())]);
        }
        if plan.close_duplicates && !snap.text("geo").is_empty() {
            ops.op("ZREM", snap.text("geo").to_owned(), vec![b(id)]);
        }
        // The retention clock of the reporter's contact starts when the case closes; a case
        // reopened after closing leaves the list again.
        // So does its time in Redis before the archive takes it.
        if closes(plan.status) {
            ops.op("ZADD", k.closed(p), vec![NOW.to_vec(), b(id)]);
            ops.op("ZADD", k.archive_due(p), vec![NOW.to_vec(), b(id)]);
        } else if snap.rec.status.is_some_and(closes) {
            ops.op("ZREM", k.closed(p), vec![b(id)]);
            ops.op("ZREM", k.archive_due(p), vec![b(id)]);
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

    /// Applies operations with `apply.lua` if the record's version is still `version` (`*`:
    /// whatever it is). Returns the script's code: 1 applied, -1 changed meanwhile, -2 gone.
    pub(crate) async fn apply_ops(&self, ops: Ops, version: &str) -> Result<i64> {
        let mut pipe = redis::pipe();
        ops.call(&mut pipe, &Applying::note(version));
        self.run_script::<(i64, Vec<u8>)>(&mut pipe, "act")
            .await
            .map(|(code, _)| code)
    }
}

/// Whether a case in this state is over: its reporter's contact is erased a retention period
/// later.
pub(crate) fn closes(s: lifecycle::Status) -> bool {
    matches!(s, lifecycle::Status::Closed | lifecycle::Status::Cancelled)
}
