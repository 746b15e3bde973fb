//! Accepting reports: the idempotency check, the incident record and the ingest entry are
//! written by one script, and the caller is answered only after Redis has accepted it.

use gridroute_proto::v1 as pb;
use prost::Message;

use gridroute_core::lifecycle::EventKind;

use crate::{
    Result, Store, StoreError,
    dispatch::DispatchWrite,
    keys::{self, kind},
    scripts,
    transact::{Answers, Prepared},
};
use gridroute_core::lifecycle::Status;

/// Routes a report in the process that accepts it (`gridroute serve --inline-routing`): given
/// the report, its new incident id, its partition and the dispatch time (Redis' clock, ms), the
/// dispatch to write in the same script call, or `None` to queue it for the routers.
pub type InlineRoute =
    std::sync::Arc<dyn Fn(&Reporting<'_>, &str, u16, i64) -> Option<DispatchWrite> + Send + Sync>;

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
    /// from many callers): in one transaction with [`Store::with_transactions`], else grouped
    /// by partition, each group of up to [`REPORTS_PER_SCRIPT`] one script call, all calls in
    /// one pipeline.
    pub async fn report_traced(&self, reports: &[Reporting<'_>]) -> Result<Vec<Result<Accepted>>> {
        if reports.is_empty() {
            return Ok(Vec::new());
        }
        let k = self.keys();
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
        // Inline routing: each report's dispatch, decided before the call (a report that
        // turns out to be a retry drops its own).
        let routed: Vec<Option<DispatchWrite>> = match &self.inline {
            Some(route) => {
                let now = self.clock_ms().await?;
                reports
                    .iter()
                    .zip(partitions.iter().zip(&ids))
                    .map(|(r, (&p, id))| route(r, id, p, now))
                    .collect()
            }
            None => reports.iter().map(|_| None).collect(),
        };
        let prepared: Vec<Prepared<'_>> = reports
            .iter()
            .zip(partitions.iter().zip(ids.iter()))
            .zip(routed)
            .map(|((&reporting, (&partition, id)), routed)| {
                Prepared::new(reporting, partition, id.clone(), routed)
            })
            .collect();
        let (mut answers, replicated) = if self.transactions_for("report", prepared.len()) {
            // Boxed: the callers' futures nest deep enough as it is.
            Box::pin(self.report_transaction(&prepared)).await?
        } else {
            let answers = self.report_scripts(&prepared).await?;
            let replicated =
                !answers.iter().any(Result::is_ok) || self.replicated("report").await?;
            (answers, replicated)
        };
        // With a durability setting, a report is acknowledged only once the replicas have it;
        // otherwise the caller retries with the same request id (the record may exist, and
        // the retry then finds it).
        if !replicated {
            for a in answers.iter_mut().filter(|a| a.is_ok()) {
                *a = Err(StoreError::Unavailable(
                    "the report is not yet on enough replicas; retry with the same request_id"
                        .into(),
                ));
            }
        }
        Ok(answers
            .into_iter()
            .zip(&ids)
            .map(|(a, ours)| match a? {
                (0, id) => Ok(Accepted::New(id)),
                (3, id) => {
                    // Dispatched by the call that recorded it: no time between the two.
                    use gridroute_telemetry::names;
                    metrics::counter!(names::DISPATCHES_TOTAL, "outcome" => "dispatched_inline")
                        .increment(1);
                    metrics::histogram!(names::REPORT_TO_DISPATCH_SECONDS).record(0.0);
                    Ok(Accepted::New(id))
                }
                (1, id) if id == *ours => Ok(Accepted::New(id)),
                (1, id) => Ok(Accepted::Duplicate(id)),
                (_, id) => Err(StoreError::IdempotencyConflict { incident_id: id }),
            })
            .collect())
    }
}

/// About how many arguments and bytes one report writes into its `lua/report.lua` call.
fn report_size(k: &keys::Keys, r: &Prepared<'_>) -> scripts::Size {
    use scripts::Size;
    let rep = r.reporting.report;
    let key = |piece: usize| Size::arg(k.part_len() + kind::IDEMPOTENCY.len() + piece + 1);
    key(rep.source_system.len() + rep.request_id.len())
        + key(r.id.len())
        + Size::arg(r.hash.len())
        + Size::arg(r.id.len())
        + Size::arg(r.bytes.len())
        + Size::arg(r.event.len())
        + Size::arg(r.reporting.traceparent.len())
        + Size::arg(r.contact.len())
        + Size::arg(1)
        + r.routed
            .as_ref()
            .map_or(Size::default(), |w| crate::dispatch::dispatch_size(k, w))
}

impl Store {
    /// Accepts prepared reports with `lua/report.lua`: one script call per partition and
    /// [`REPORTS_PER_SCRIPT`] reports, all in one pipeline.
    async fn report_scripts(&self, reports: &[Prepared<'_>]) -> Result<Answers> {
        let k = self.keys();
        let ttl = self.claim_ttl().to_string();
        let groups =
            scripts::partition_groups(reports.iter().map(|r| r.partition), REPORTS_PER_SCRIPT);
        let build = |pipe: &mut redis::Pipeline, p: u16, members: &[usize]| {
            // Keys and arguments written straight into the call's command (as the routers'
            // dispatch calls do): every key of the call, then every argument.
            let own = [k.ingest(p), k.events(p), k.sla(p), k.index_all(p)];
            let count = members.iter().map(|&i| {
                2 + reports[i]
                    .routed
                    .as_ref()
                    .map_or(0, crate::dispatch::dispatch_key_count)
            });
            let size = scripts::Size::of(&own)
                + members.iter().map(|&i| report_size(k, &reports[i])).sum()
                + scripts::Size {
                    args: 3,
                    bytes: ttl.len() + 32,
                };
            let mut call =
                scripts::evalsha_cmd(&scripts::REPORT, own.len() + count.sum::<usize>(), size);
            let cmd = &mut call;
            for key in &own {
                cmd.arg(key);
            }
            for &i in members {
                let r = &reports[i];
                let rep = r.reporting.report;
                k.write_part(
                    cmd,
                    p,
                    &[kind::IDEMPOTENCY, &rep.source_system, ":", &rep.request_id],
                );
                k.write_part(cmd, p, &[kind::INCIDENT, &r.id]);
                if let Some(w) = &r.routed {
                    crate::dispatch::dispatch_keys(k, w, cmd);
                }
            }
            cmd.arg(&ttl)
                .arg(Status::Reported.as_str())
                .arg(Status::Dispatched.as_str());
            let mut scratch = String::new();
            for &i in members {
                let r = &reports[i];
                cmd.arg(&r.hash)
                    .arg(&r.id)
                    .arg(r.bytes.as_slice())
                    .arg(r.event.as_slice())
                    .arg(r.reporting.traceparent)
                    .arg(r.contact.as_slice());
                match &r.routed {
                    Some(w) => {
                        cmd.arg("1");
                        crate::dispatch::dispatch_args(w, cmd, &mut scratch);
                    }
                    None => {
                        cmd.arg("");
                    }
                }
            }
            pipe.add_command(call);
        };
        self.run_batched("report", reports.len(), groups, None, build)
            .await
    }
}

/// The stored timeline entry of a report (the record's `tl0`), recorded for `person` (the
/// caller's token subject; '' for a certificate alone).
pub fn reported_event(r: &pb::ReportIncidentRequest, person: &str) -> Vec<u8> {
    crate::codec::stored_event(pb::TimelineEvent {
        kind: EventKind::Reported.as_str().into(),
        r#type: gridroute_mapping::timeline_kind(EventKind::Reported) as i32,
        actor: r.source_system.clone(),
        actor_kind: "source_system".into(),
        user: person.to_owned(),
        detail: format!("category {}", r.category),
        ..Default::default()
    })
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
