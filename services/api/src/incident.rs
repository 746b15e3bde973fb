//! IncidentService: report, batch report, get, list, watch, reporters' feedback and points.

use gridroute_proto::v1::{self as pb, incident_service_server::IncidentService};
use gridroute_store::{StoreError, codec, ingest::Accepted, query};
use gridroute_telemetry::names;
use tonic::{Request, Response, Status, Streaming};

use gridroute_core::lifecycle::Command;
use gridroute_store::subscribe::Cursor;

use gridroute_telemetry::trace_context;

use crate::{
    ApiError, ApiState, actions, caller_trace, now_ms, observed, observed_from, streaming, validate,
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

impl Incidents {
    async fn flush(
        &self,
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
        let parent = caller_trace(request.metadata());
        observed_from("ReportIncident", &parent, async {
            let mut report = request.into_inner();
            validate::report(&mut report, &self.0.tables.load(), now_ms(), "", true)
                .inspect_err(|_| count("invalid", 1))?;
            let tp = trace_context::traceparent(&tracing::Span::current());
            let accepted = self.0.reports.report(report, tp).await.inspect_err(|e| {
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
        let parent = caller_trace(request.metadata());
        let mut stream = request.into_inner();
        observed_from("ReportIncidents", &parent, async {
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
                let mut report = item;
                let i = results.len();
                results.push(pb::ReportResult {
                    request_id: report.request_id.clone(),
                    ..Default::default()
                });
                match validate::report(&mut report, &self.0.tables.load(), now_ms(), "", true) {
                    Ok(()) => chunk.push((i, report)),
                    Err(e) => {
                        count("invalid", 1);
                        let status = Status::from(e);
                        results[i].code = status.code() as i32;
                        results[i].message = status.message().to_owned();
                    }
                }
                if chunk.len() >= STREAM_CHUNK {
                    self.flush(&mut chunk, &mut results).await?;
                }
            }
            self.flush(&mut chunk, &mut results).await?;
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
        observed("GetIncident", async {
            let id = request.into_inner().incident_id;
            validate::incident_id(&id)?;
            Ok(self.0.store.get_incident(&id).await?)
        })
        .await
    }

    async fn list_incidents(
        &self,
        request: Request<pb::ListIncidentsRequest>,
    ) -> Result<Response<pb::ListIncidentsResponse>, Status> {
        observed("ListIncidents", async {
            let r = request.into_inner();
            let mut violations = Vec::new();
            if r.page_size < 0 || r.page_size as usize > query::MAX_PAGE_SIZE {
                violations.push(tonic_types::FieldViolation::new(
                    "page_size",
                    format!("between 0 and {}", query::MAX_PAGE_SIZE),
                ));
            }
            if !r.page_token.is_empty() && !query::is_page_token(&r.page_token) {
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
            let start_ms = r.start_time.as_ref().map(codec::millis);
            let end_ms = r.end_time.as_ref().map(codec::millis);
            if let (Some(s), Some(e)) = (start_ms, end_ms)
                && s >= e
            {
                violations.push(tonic_types::FieldViolation::new(
                    "end_time",
                    "must be after start_time",
                ));
            }
            if !r.department_id.is_empty()
                && self.0.tables.load().department(&r.department_id).is_none()
            {
                violations.push(tonic_types::FieldViolation::new(
                    "department_id",
                    "unknown department",
                ));
            }
            if !violations.is_empty() {
                return Err(ApiError::Invalid(violations));
            }
            let filter = query::ListFilter {
                region_code: r.region_code,
                department: r.department_id,
                statuses,
                start_ms,
                end_ms,
            };
            let size = if r.page_size == 0 {
                query::DEFAULT_PAGE_SIZE
            } else {
                r.page_size as usize
            };
            let (incidents, next_page_token) = self
                .0
                .store
                .list_incidents(&filter, size, &r.page_token)
                .await?;
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
        observed("WatchIncidents", async move {
            let r = request.into_inner();
            let table = state.tables.load_full();
            if !r.department_id.is_empty() {
                validate::department("department_id", &r.department_id, &table)?;
            }
            if !r.region_code.is_empty() && table.regions.find(&r.region_code).is_none() {
                return Err(ApiError::field(
                    "region_code",
                    format!("{} is not a region of routing table {}", r.region_code, table.version),
                ));
            }
            let partitions = state.store.keys().partitions();
            let cursor = if r.cursor.is_empty() {
                match pb::WatchStart::try_from(r.start) {
                    Ok(pb::WatchStart::Earliest) => Cursor::earliest(partitions),
                    Ok(_) => state.store.latest_event_cursor().await?,
                    Err(_) => return Err(ApiError::field("start", "unknown start position")),
                }
            } else {
                Cursor::parse(&r.cursor, partitions)
                    .map_err(|e| ApiError::field("cursor", e.to_string()))?
            };
            let permit = streaming::permit(&state)?;
            let reader = state
                .store
                .event_reader(&r.region_code, &r.department_id, cursor, state.subscribe_block)
                .await?;
            let span = tracing::info_span!("watch", region = %r.region_code, department = %r.department_id);
            Ok(streaming::spawn(&state, reader, permit, span))
        })
        .await
    }

    async fn submit_feedback(
        &self,
        request: Request<pb::SubmitFeedbackRequest>,
    ) -> Result<Response<pb::Incident>, Status> {
        observed(
            "SubmitFeedback",
            actions::run(&self.0, request, |r| {
                if r.source_system.is_empty() {
                    return Err(ApiError::field(
                        "source_system",
                        "required: the system that reported the incident",
                    ));
                }
                let command = Command::Feedback {
                    satisfaction: u8::try_from(r.satisfaction).unwrap_or(0),
                    comment: r.comment,
                };
                let mut req = actions::by(String::new(), r.incident_id, r.request_id, command);
                req.caller.source_system = r.source_system;
                Ok(req)
            }),
        )
        .await
    }

    async fn get_reporter_points(
        &self,
        request: Request<pb::GetReporterPointsRequest>,
    ) -> Result<Response<pb::ReporterPoints>, Status> {
        observed("GetReporterPoints", async {
            let r = request.into_inner();
            let mut v = Vec::new();
            if r.source_system.is_empty() {
                v.push(tonic_types::FieldViolation::new(
                    "source_system",
                    "required",
                ));
            }
            if r.reporter_id.is_empty() || r.reporter_id.chars().count() > 128 {
                v.push(tonic_types::FieldViolation::new(
                    "reporter_id",
                    "required, at most 128 characters",
                ));
            }
            if !v.is_empty() {
                return Err(ApiError::Invalid(v));
            }
            let (total, entries) = self
                .0
                .store
                .reporter_points(&r.source_system, &r.reporter_id, 100)
                .await?;
            Ok(pb::ReporterPoints {
                total,
                entries: entries
                    .into_iter()
                    .map(|(ms, incident_id, points, category)| pb::PointsEntry {
                        time: Some(codec::timestamp(ms)),
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
