//! Accepting reports: the idempotency check, the incident record and the ingest entry are
//! written by one script, and the caller is answered only after Redis has accepted it.

use gridroute_proto::v1 as pb;
use prost::Message;

use crate::{EVENTS_MAX_LEN, Result, Store, StoreError, keys, scripts};

/// How long a `request_id` stays bound to its incident: a retry within this window returns the
/// original incident. A week covers every realistic retry and outage of a calling system.
pub const IDEMPOTENCY_TTL_SECS: u64 = 7 * 24 * 3600;

/// Most reports one script call accepts. A script blocks Redis while it runs; an incident
/// costs 45-60 µs of Redis time in its two scripts together (docs/PERFORMANCE.md), so this
/// bounds the pause other clients see to a few milliseconds.
pub const REPORTS_PER_SCRIPT: usize = 128;

/// One report to accept, with its caller's trace context and person.
#[derive(Debug, Clone, Copy)]
pub struct Reporting<'a> {
    /// The validated report.
    pub report: &'a pb::ReportIncidentRequest,
    /// W3C traceparent ('' = none).
    pub traceparent: &'a str,
    /// The person reporting (the token's subject; '' for a certificate alone).
    pub person: &'a str,
}

/// What happened to one accepted report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// A new incident.
    New(String),
    /// A retry of a report already accepted: the original incident.
    Duplicate(String),
}

impl Accepted {
    /// The incident id.
    pub fn incident_id(&self) -> &str {
        match self {
            Self::New(id) | Self::Duplicate(id) => id,
        }
    }
}

impl Store {
    /// Accepts validated reports in one pipelined round trip. The outer error means Redis is
    /// unavailable and nothing is known to be accepted (a retry is safe: it is idempotent); the
    /// inner results are per report. `traceparent` (W3C, '' = none) travels in the ingest
    /// entries so that routing continues the caller's trace; `person` (the caller's token
    /// subject) is recorded on the report's timeline entry.
    pub async fn report_batch(
        &self,
        reports: &[pb::ReportIncidentRequest],
        traceparent: &str,
        person: &str,
    ) -> Result<Vec<Result<Accepted>>> {
        let traced: Vec<_> = reports
            .iter()
            .map(|r| Reporting {
                report: r,
                traceparent,
                person,
            })
            .collect();
        self.report_traced(&traced).await
    }

    /// Accepts reports that each carry their own trace context and person (reports gathered
    /// from many callers). Reports are grouped by partition, and each group of up to
    /// [`REPORTS_PER_SCRIPT`] is one script call; all calls go out in one pipeline.
    pub async fn report_traced(&self, reports: &[Reporting<'_>]) -> Result<Vec<Result<Accepted>>> {
        if reports.is_empty() {
            return Ok(Vec::new());
        }
        let k = self.keys();
        let ttl = IDEMPOTENCY_TTL_SECS.to_string();
        let partitions: Vec<u16> = reports
            .iter()
            .map(|r| k.partition_for(&r.report.source_system, &r.report.request_id))
            .collect();
        // Each report's id is chosen once: when a failed batch call is run again member by
        // member, a member the failed call had already written answers with this same id, and
        // is then this call's own new incident, not a duplicate of an earlier request.
        let ids: Vec<String> = partitions
            .iter()
            .map(|&p| keys::incident_id(&ulid::Ulid::new().to_string(), p))
            .collect();
        let groups = partition_groups(partitions.iter().copied(), REPORTS_PER_SCRIPT);
        let build = |pipe: &mut redis::Pipeline, p: u16, members: &[usize]| {
            let mut keys = vec![k.ingest(p), k.events(p)];
            let mut args: Vec<Vec<u8>> = vec![ttl.clone().into_bytes(), EVENTS_MAX_LEN.into()];
            for &i in members {
                let Reporting {
                    report: r,
                    traceparent: tp,
                    person,
                } = reports[i];
                let id = &ids[i];
                let (bytes, contact) = split_contact(r);
                // The payload's identity covers the contact too: the same request id with
                // another contact is another request.
                let hash = format!(
                    "{:016x}",
                    gridroute_core::table::fnv1a(&bytes)
                        ^ gridroute_core::table::fnv1a(&contact).rotate_left(1)
                );
                let event = pb::TimelineEvent {
                    kind: "reported".into(),
                    actor: r.source_system.clone(),
                    actor_kind: "source_system".into(),
                    user: person.to_owned(),
                    detail: format!("category {}", r.category),
                    ..Default::default()
                }
                .encode_to_vec();
                keys.extend([
                    k.idempotency(p, &r.source_system, &r.request_id),
                    k.incident(p, id),
                ]);
                args.extend([
                    hash.into_bytes(),
                    id.clone().into_bytes(),
                    bytes,
                    event,
                    tp.into(),
                    contact,
                ]);
            }
            let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            scripts::evalsha(pipe, &scripts::REPORT, &keys, &args);
        };
        let answers: Vec<Result<(i64, String)>> = self
            .run_batched("report", reports.len(), groups, build)
            .await?;
        Ok(answers
            .into_iter()
            .zip(&ids)
            .map(|(a, ours)| match a? {
                (0, id) => Ok(Accepted::New(id)),
                (1, id) if id == *ours => Ok(Accepted::New(id)),
                (1, id) => Ok(Accepted::Duplicate(id)),
                (_, id) => Err(StoreError::IdempotencyConflict { incident_id: id }),
            })
            .collect())
    }

    /// Runs a pipeline of EVALSHA calls and returns one result per call: a script that fails
    /// fails alone (its neighbours in the pipeline ran). Calls that found the server's script
    /// cache empty (restart, failover, a new cluster node) are sent again once, after loading
    /// the scripts. The outer error means the pipeline as a whole did not get an answer (Redis
    /// unreachable). On a cluster the calls go out as one pipeline per partition.
    pub(crate) async fn run_scripts<T: redis::FromRedisValue>(
        &self,
        pipe: &mut redis::Pipeline,
        op: &'static str,
    ) -> Result<Vec<Result<T>>> {
        let started = std::time::Instant::now();
        let mut values = self
            .raw_pipe(pipe, true)
            .await
            .map_err(StoreError::from)
            .inspect_err(|e| crate::record_error(op, e))?;
        let noscript =
            |v: &redis::Value| matches!(v, redis::Value::ServerError(e) if e.code() == "NOSCRIPT");
        if values.iter().any(noscript) {
            let mut c = self.conn();
            scripts::ensure_loaded(&mut c)
                .await
                .map_err(StoreError::from)?;
            let again: Vec<usize> = (0..values.len())
                .filter(|&i| noscript(&values[i]))
                .collect();
            let cmds: Vec<&redis::Cmd> = pipe.cmd_iter().collect();
            let mut retry = redis::pipe();
            for &i in &again {
                retry.add_command(cmds[i].clone());
            }
            let answers = self
                .raw_pipe(&retry, true)
                .await
                .map_err(StoreError::from)
                .inspect_err(|e| crate::record_error(op, e))?;
            for (i, v) in again.into_iter().zip(answers) {
                values[i] = v;
            }
        }
        metrics::histogram!(gridroute_telemetry::names::REDIS_DURATION_SECONDS, "op" => op)
            .record(started.elapsed().as_secs_f64());
        Ok(values
            .into_iter()
            .map(|v| {
                match v {
                    redis::Value::ServerError(e) => {
                        Err(StoreError::from(redis::RedisError::from(e)))
                    }
                    v => {
                        redis::from_redis_value(v).map_err(|e| StoreError::Internal(e.to_string()))
                    }
                }
                .inspect_err(|e| crate::record_error(op, e))
            })
            .collect())
    }

    /// Runs batched script calls: `groups` are the partition and the members (indexes into the
    /// caller's items) of each call, and `build` appends the call for a group to a pipeline. Each call answers
    /// with one `T` per member. A call that fails (a script error stops the whole script) is
    /// run again one member per call, so that one bad member fails alone and its neighbours,
    /// written or not, get their own answer (the scripts are idempotent). Returns one result
    /// per item; `items` is how many there are.
    pub(crate) async fn run_batched<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        items: usize,
        groups: Vec<(u16, Vec<usize>)>,
        build: impl Fn(&mut redis::Pipeline, u16, &[usize]),
    ) -> Result<Vec<Result<T>>> {
        let mut out: Vec<Option<Result<T>>> = (0..items).map(|_| None).collect();
        let mut pending = groups;
        for round in 0..2 {
            if pending.is_empty() {
                break;
            }
            let mut pipe = redis::pipe();
            for (p, members) in &pending {
                build(&mut pipe, *p, members);
            }
            let replies: Vec<Result<Vec<T>>> = self.run_scripts(&mut pipe, op).await?;
            let mut again = Vec::new();
            for ((p, members), reply) in pending.into_iter().zip(replies) {
                match reply {
                    Ok(answers) if answers.len() == members.len() => {
                        for (i, a) in members.into_iter().zip(answers) {
                            out[i] = Some(Ok(a));
                        }
                    }
                    Err(_) if round == 0 && members.len() > 1 => {
                        again.extend(members.into_iter().map(|i| (p, vec![i])));
                    }
                    other => {
                        let e = match other {
                            Err(e) => e,
                            Ok(a) => StoreError::Internal(format!(
                                "{} answers for {} members",
                                a.len(),
                                members.len()
                            )),
                        };
                        let (why, retry) = (e.to_string(), matches!(e, StoreError::Unavailable(_)));
                        for i in members {
                            out[i] = Some(Err(if retry {
                                StoreError::Unavailable(why.clone())
                            } else {
                                StoreError::Internal(why.clone())
                            }));
                        }
                    }
                }
            }
            pending = again;
        }
        Ok(out
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(StoreError::Internal("no answer".into()))))
            .collect())
    }

    /// Runs a single script call through [`Self::run_scripts`].
    pub(crate) async fn run_script<T: redis::FromRedisValue>(
        &self,
        pipe: &mut redis::Pipeline,
        op: &'static str,
    ) -> Result<T> {
        self.run_scripts(pipe, op)
            .await?
            .pop()
            .unwrap_or_else(|| Err(StoreError::Internal("empty reply".into())))
    }
}

/// A report's bytes without the reporter's contact, and the contact's bytes ('' when none).
/// The contact is personal data: it is kept once, in the record's `contact` field, and never
/// travels in the ingest entry, the dispatch copies or the events, so that erasing it after the
/// retention period erases it everywhere.
pub fn split_contact(r: &pb::ReportIncidentRequest) -> (Vec<u8>, Vec<u8>) {
    match &r.reporter {
        None => (r.encode_to_vec(), Vec::new()),
        Some(contact) => {
            let bare = pb::ReportIncidentRequest {
                reporter: None,
                ..r.clone()
            };
            (bare.encode_to_vec(), contact.encode_to_vec())
        }
    }
}

/// Groups items by partition (one script call touches one partition, one hash slot) in
/// chunks of at most `per_call`: the groups [`Store::run_batched`] takes.
pub(crate) fn partition_groups(
    partitions: impl Iterator<Item = u16>,
    per_call: usize,
) -> Vec<(u16, Vec<usize>)> {
    let mut by_partition: std::collections::BTreeMap<u16, Vec<usize>> = Default::default();
    for (i, p) in partitions.enumerate() {
        by_partition.entry(p).or_default().push(i);
    }
    by_partition
        .into_iter()
        .flat_map(|(p, members)| {
            members
                .chunks(per_call)
                .map(|c| (p, c.to_vec()))
                .collect::<Vec<_>>()
        })
        .collect()
}
