//! The shared record across Redis and the archive: reads look in Redis first and, for what is
//! no longer there, in the archive (PostgreSQL), so that callers see one record whatever its
//! age. Authorization and masking are the callers' (the handlers'), the same for both.
//!
//! - One incident: Redis, then the archive.
//! - Lists: Redis' part first (newest first, as its indexes give it), then the archive's
//!   (newest report first); a page token says which part and where (`a~…` for the
//!   archive's). An incident moved while a client pages through may show in both parts.
//! - Statistics: Redis' totals and the archive's add up; the 90th percentile is taken over
//!   both parts' resolutions together.

use gridroute_archive::{ListCursor, ListQuery, StatsQuery};
use gridroute_core::calendar::WorkCalendar;
use gridroute_proto::v1 as pb;
use gridroute_store::{StoreError, query, stats::StatsFilter};
use gridroute_telemetry::names;

use crate::{ApiState, error::ApiError};

/// Whether `token` is a page token of [`ApiState::list_records`].
pub fn is_page_token(token: &str) -> bool {
    query::is_page_token(token) || ListCursor::parse(token).is_some()
}

fn archive_read(call: &'static str) {
    metrics::counter!(names::ARCHIVE_READS_TOTAL, "call" => call).increment(1);
}

impl ApiState {
    /// One incident, live or archived; `StoreError::NotFound` when neither has it.
    pub(crate) async fn read_incident(&self, id: &str) -> Result<pb::Incident, ApiError> {
        match self.store.get_incident(id).await {
            Err(StoreError::NotFound(_)) => match self.archived(id).await? {
                Some(i) => Ok(i),
                None => Err(StoreError::NotFound(id.to_owned()).into()),
            },
            other => Ok(other?),
        }
    }

    /// An archived incident (none without an archive).
    pub(crate) async fn archived(&self, id: &str) -> Result<Option<pb::Incident>, ApiError> {
        let Some(archive) = &self.archive else {
            return Ok(None);
        };
        let found = archive.get(id).await?;
        if found.is_some() {
            archive_read("get");
        }
        Ok(found)
    }

    /// A page of incidents, Redis' first, then the archive's, and the next page's token.
    pub(crate) async fn list_records(
        &self,
        f: &query::ListFilter,
        page_size: usize,
        token: &str,
    ) -> Result<(Vec<pb::Incident>, String), ApiError> {
        let archived = ListCursor::parse(token);
        let (mut out, next) = match &archived {
            Some(_) => (Vec::new(), String::new()),
            None => self.store.list_incidents(f, page_size, token).await?,
        };
        let Some(archive) = &self.archive else {
            if archived.is_some() {
                return Err(ApiError::field(
                    "page_token",
                    "an archive token, and this deployment has no archive",
                ));
            }
            return Ok((out, next));
        };
        if !next.is_empty() {
            return Ok((out, next));
        }
        // Redis' part is over: the archive's starts (or goes on).
        let start = ListCursor {
            reported_ms: i64::MAX,
            incident_id: String::new(),
        };
        let after = archived.unwrap_or(start);
        if out.len() == page_size {
            return Ok((out, after.token()));
        }
        let q = ListQuery {
            region_code: f.region_code.clone(),
            department: f.department.clone(),
            statuses: f.statuses.clone(),
            start_ms: f.start_ms,
            end_ms: f.end_ms,
        };
        let (rows, more) = archive
            .list(&q, page_size - out.len(), Some(&after))
            .await?;
        archive_read("list");
        out.extend(rows);
        Ok((out, more.map(|c| c.token()).unwrap_or_default()))
    }

    /// The figures of a selection over Redis and the archive.
    pub(crate) async fn stats_over_all(
        &self,
        f: &StatsFilter,
        calendar: &WorkCalendar,
    ) -> Result<pb::Stats, ApiError> {
        let mut totals = self.store.stats_totals(f, calendar).await?;
        if let Some(archive) = &self.archive {
            let q = StatsQuery {
                department: f.department.clone(),
                region_code: f.region_code.clone(),
                start_ms: f.start_ms,
                end_ms: f.end_ms,
            };
            let part = archive.totals(&q, &totals.resolve_hours).await?;
            archive_read("stats");
            totals.merge(part);
        }
        Ok(totals.finish())
    }
}
