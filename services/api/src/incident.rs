//! IncidentService: report, batch report, get, list, watch, reporters' feedback and points.
//! Reports come from the calling reporting system; reads return only what the caller may see,
//! with the reporter's contact masked unless the caller needs it.

use gridroute_core::{
    access::{self, Principal},
    lifecycle::Command,
};
use gridroute_proto::v1::{self as pb, incident_service_server::IncidentService};
use gridroute_store::{StoreError, ingest::Accepted, query, subscribe::Cursor};
use gridroute_telemetry::{names, trace_context};
use tonic::{Request, Response, Status, Streaming};

use crate::{
    ApiError, ApiState, actions, authz, now_ms, privacy, records, scope, streaming, validate,
};

/// Reports per Redis round trip in a ReportIncidents stream.
const STREAM_CHUNK: usize = 256;
/// Most items in one ReportIncidents stream: the results are held until the stream ends.
pub const MAX_STREAM_ITEMS: usize = 100_000;

/// The IncidentService implementation.
#[derive(Debug, Clone)]
pub struct Incidents(pub ApiState);

fn count(outcome: &'static str, n: u64) {
    metrics::counter!(names::REPORTS_TOTAL, "outcome" => outcome).increment(n);
}

/// A report sent by `who`: its `source_system` must be the caller (or empty: it becomes the
/// caller), then it is validated and normalised.
fn admit_report(
    who: &Principal,
    report: &mut pb::ReportIncidentRequest,
    state: &ApiState,
) -> Result<(), ApiError> {
    authz::claim("source_system", &report.source_system, who)?;
    report.source_system.clone_from(&who.id);
    validate::report(report, &state.tables.load(), now_ms(), "", true)
}

impl Incidents {
    async fn flush(
        &self,
        person: &str,
        chunk: &mut Vec<(usize, pb::ReportIncidentRequest)>,
        results: &mut [pb::ReportResult],
    ) -> Result<(), ApiError> {
        if chunk.is_empty() {
            return Ok(());
        }
        let reports: Vec<pb::ReportIncidentRequest> =
            chunk.iter().map(|(_, r)| r.clone()).collect();
        let replies = self
            .0
            .store
            .report_batch(
                &reports,
                &trace_context::traceparent(&tracing::Span::current()),
                person,
            )
            .await
            .inspect_err(|_| count("unavailable", reports.len() as u64))?;
        for ((i, _), reply) in chunk.drain(..).zip(replies) {
            let res = &mut results[i];
            match reply {
                Ok(a) => {
                    count(
                        if matches!(a, Accepted::New(_)) {
                            "accepted"
                        } else {
                            "duplicate_request"
                        },
                        1,
                    );
                    res.duplicate_request = matches!(a, Accepted::Duplicate(_));
                    res.incident_id = a.incident_id().to_owned();
                }
                Err(e) => {
                    count("conflict", 1);
                    let status = Status::from(ApiError::Store(e));
                    res.code = status.code() as i32;
                    res.message = status.message().to_owned();
                }
            }
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl IncidentService for Incidents {
    async fn report_incident(
        &self,
        request: Request<pb::ReportIncidentRequest>,
    ) -> Result<Response<pb::ReportIncidentResponse>, Status> {
        self.0
            .call("ReportIncident", request, |who, mut report| async move {
                admit_report(&who, &mut report, &self.0).inspect_err(|_| count("invalid", 1))?;
                let tp = trace_context::traceparent(&tracing::Span::current());
                let accepted = self
                    .0
                    .reports
                    .report(report, tp, who.person.clone())
                    .await
                    .inspect_err(|e| {
                        count(
                            if matches!(e, StoreError::IdempotencyConflict { .. }) {
                                "conflict"
                            } else {
                                "unavailable"
                            },
                            1,
                        )
                    })?;
                count(
                    if matches!(accepted, Accepted::New(_)) {
                        "accepted"
                    } else {
                        "duplicate_request"
                    },
                    1,
                );
                Ok(pb::ReportIncidentResponse {
                    duplicate_request: matches!(accepted, Accepted::Duplicate(_)),
                    incident_id: accepted.incident_id().to_owned(),
                })
            })
            .await
    }

    async fn report_incidents(
        &self,
        request: Request<Streaming<pb::ReportIncidentRequest>>,
    ) -> Result<Response<pb::ReportIncidentsResponse>, Status> {
        self.0
            .call("ReportIncidents", request, |who, mut stream| async move {
                let mut results: Vec<pb::ReportResult> = Vec::new();
                let mut chunk = Vec::with_capacity(STREAM_CHUNK);
                while let Some(item) = stream
                    .message()
                    .await
                    .map_err(|s| ApiError::field("stream", s.message().to_owned()))?
                {
                    if results.len() >= MAX_STREAM_ITEMS {
                        return Err(ApiError::field(
                            "stream",
                            format!("at most {MAX_STREAM_ITEMS} items per stream"),
                        ));
                    }
                    // Each item counts against the caller's rate: past it, the stream slows
                    // down to the rate (HTTP/2 flow control holds the client back).
                    while let Err(wait) = self.0.security.limits.take(&who, 1.0) {
                        tokio::time::sleep(wait).await;
                    }
                    let mut report = item;
                    let i = results.len();
                    results.push(pb::ReportResult {
                        request_id: report.request_id.clone(),
                        ..Default::default()
                    });
                    match admit_report(&who, &mut report, &self.0) {
                        Ok(()) => chunk.push((i, report)),
                        Err(e) => {
                            count("invalid", 1);
                            let status = Status::from(e);
                            results[i].code = status.code() as i32;
                            results[i].message = status.message().to_owned();
                        }
                    }
                    if chunk.len() >= STREAM_CHUNK {
                        self.flush(&who.person, &mut chunk, &mut results).await?;
                    }
                }
                self.flush(&who.person, &mut chunk, &mut results).await?;
                let accepted = results.iter().filter(|r| r.code == 0).count() as i64;
                Ok(pb::ReportIncidentsResponse {
                    rejected_count: results.len() as i64 - accepted,
                    accepted_count: accepted,
                    results,
                })
            })
            .await
    }

    async fn get_incident(
        &self,
        request: Request<pb::GetIncidentRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        self.0
            .call("GetIncident", request, |who, r| async move {
                let id = r.incident_id;
                validate::incident_id(&id)?;
                let table = self.0.tables.load_full();
                let mut incident = match self.0.read_incident(&id).await {
                    Ok(i) => i,
                    Err(ApiError::Store(StoreError::NotFound(_))) => {
                        return Err(authz::unseen(&who, &table, &id, false));
                    }
                    Err(e) => return Err(e),
                };
                if !access::can_read(&who, &privacy::facts(&incident), &table) {
                    return Err(authz::unseen(&who, &table, &id, true));
                }
                privacy::present(
                    &mut incident,
                    &who,
                    &table,
                    self.0.security.co_handlers_see_contact,
                );
                Ok(incident)
            })
            .await
    }

    async fn list_incidents(
        &self,
        request: Request<pb::ListIncidentsRequest>,
    ) -> Result<Response<pb::ListIncidentsResponse>, Status> {
        self.0
            .call("ListIncidents", request, |who, r| async move {
                let table = self.0.tables.load_full();
                let mut violations = Vec::new();
                if r.page_size < 0 || r.page_size as usize > query::MAX_PAGE_SIZE {
                    violations.push(tonic_types::FieldViolation::new(
                        "page_size",
                        format!("between 0 and {}", query::MAX_PAGE_SIZE),
                    ));
                }
                if !r.page_token.is_empty() && !records::is_page_token(&r.page_token) {
                    violations.push(tonic_types::FieldViolation::new(
                        "page_token",
                        "not a token returned by ListIncidents",
                    ));
                }
                let mut statuses = Vec::new();
                for (i, s) in r.statuses.iter().enumerate() {
                    match pb::IncidentStatus::try_from(*s) {
                        Ok(pb::IncidentStatus::Unspecified) | Err(_) => {
                            violations.push(tonic_types::FieldViolation::new(
                                format!("statuses[{i}]"),
                                "unknown status",
                            ));
                        }
                        Ok(s) => statuses.push(s),
                    }
                }
                let start_ms = r.start_time.as_ref().map(gridroute_mapping::millis);
                let end_ms = r.end_time.as_ref().map(gridroute_mapping::millis);
                if let (Some(s), Some(e)) = (start_ms, end_ms)
                    && s >= e
                {
                    violations.push(tonic_types::FieldViolation::new(
                        "end_time",
                        "must be after start_time",
                    ));
                }
                if !violations.is_empty() {
                    return Err(ApiError::Invalid(violations));
                }
                let department = scope::department(&who, &table, r.department_id)?;
                let region_code = scope::region(&who, &table, r.region_code)?;
                let filter = query::ListFilter {
                    region_ancestors: scope::ancestors(&table, &region_code),
                    region_code,
                    department,
                    statuses,
                    start_ms,
                    end_ms,
                };
                let size = if r.page_size == 0 {
                    query::DEFAULT_PAGE_SIZE
                } else {
                    r.page_size as usize
                };
                let (mut incidents, next_page_token) =
                    self.0.list_records(&filter, size, &r.page_token).await?;
                let co_see = self.0.security.co_handlers_see_contact;
                for inc in &mut incidents {
                    privacy::present(inc, &who, &table, co_see);
                }
                Ok(pb::ListIncidentsResponse {
                    incidents,
                    next_page_token,
                })
            })
            .await
    }

    type WatchIncidentsStream = streaming::BoxStream<pb::IncidentEvent>;

    async fn watch_incidents(
        &self,
        request: Request<pb::WatchIncidentsRequest>,
    ) -> Result<Response<Self::WatchIncidentsStream>, Status> {
        let state = self.0.clone();
        self.0
            .call("WatchIncidents", request, |who, r| async move {
                let table = state.tables.load_full();
                let department = scope::department(&who, &table, r.department_id)?;
                let region_code = scope::region(&who, &table, r.region_code)?;
                let partitions = state.store.keys().partitions();
                let cursor = if r.cursor.is_empty() {
                    match pb::WatchStart::try_from(r.start) {
                        Ok(pb::WatchStart::Earliest) => Cursor::earliest(partitions),
                        Ok(_) => state.store.latest_event_cursor().await?,
                        Err(_) => return Err(ApiError::field("start", "unknown start position")),
                    }
                } else {
                    let cursor = Cursor::parse(&r.cursor, partitions)
                        .map_err(|e| ApiError::field("cursor", e.to_string()))?;
                    if let Some(resume) = state.store.events_trimmed_after(&cursor).await? {
                        return Err(streaming::cursor_expired("events", &resume));
                    }
                    cursor
                };
                let permit = streaming::permit(&state, &who)?;
                let reader = state
                    .store
                    .event_reader(&region_code, &department, cursor, state.subscribe_block)
                    .await?;
                let span =
                    tracing::info_span!("watch", region = %region_code, department = %department);
                Ok(streaming::spawn(&state, reader, permit, span))
            })
            .await
    }

    async fn submit_feedback(
        &self,
        request: Request<pb::SubmitFeedbackRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        self.0
            .call("SubmitFeedback", request, |who, r| {
                actions::run(&self.0, who, r, |r| {
                    Ok(Command::Feedback {
                        satisfaction: u8::try_from(r.satisfaction).unwrap_or(0),
                        comment: r.comment,
                    })
                })
            })
            .await
    }

    async fn get_reporter_points(
        &self,
        request: Request<pb::GetReporterPointsRequest>,
    ) -> Result<Response<pb::ReporterPoints>, Status> {
        self.0
            .call("GetReporterPoints", request, |who, r| async move {
                authz::claim("source_system", &r.source_system, &who)?;
                if r.reporter_id.is_empty() || r.reporter_id.chars().count() > 128 {
                    return Err(ApiError::field(
                        "reporter_id",
                        "required, at most 128 characters",
                    ));
                }
                let (total, entries) = self
                    .0
                    .store
                    .reporter_points(&who.id, &r.reporter_id, 100)
                    .await?;
                Ok(pb::ReporterPoints {
                    total,
                    entries: entries
                        .into_iter()
                        .map(|(ms, incident_id, points, category)| pb::PointsEntry {
                            time: Some(gridroute_mapping::timestamp(ms)),
                            incident_id,
                            points,
                            category,
                        })
                        .collect(),
                })
            })
            .await
    }
}
