//! The only code that talks to PostgreSQL: the archive of closed incidents.
//!
//! Redis holds the live record; a case closed (or cancelled) longer than the hot period moves
//! here (`gridroute_router::archive` moves it) and is read from here by `GetIncident`,
//! `ListIncidents` and `GetStats` once Redis no longer has it. One row per incident:
//! - written with the Redis record's version; writing the same version again changes nothing,
//!   so a mover killed between writing a row and removing the record from Redis repeats
//!   nothing when it (or another replica) tries again;
//! - the record is kept whole (protobuf, with its timeline) and the figures `GetStats` needs
//!   as columns, so that statistics over months and years are SQL aggregates;
//! - the reporter's contact is a column of its own, erased (PIPL) the retention period after
//!   the case closed, like the Redis side does.
//!
//! The schema lives in `migrations/`, applied in order by [`Archive::migrate`]
//! (`gridroute archive migrate`, and every start of `serve` with an archive).

pub mod local;
mod schema;
mod tls;

use std::collections::HashMap;

use gridroute_proto::v1 as pb;
use gridroute_store::stats::{RowFigures, Totals};
use prost::Message;
use tokio_postgres::types::ToSql;

pub use schema::MIGRATIONS;

/// How long to wait for a connection or a statement before the archive counts as unavailable.
pub const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Errors of the archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// PostgreSQL cannot be reached or timed out: retry later.
    #[error("archive unavailable: {0}")]
    Unavailable(String),
    /// PostgreSQL answered with an error that retrying will not fix, or a row did not decode.
    #[error("archive error: {0}")]
    Internal(String),
    /// The URL is not a PostgreSQL connection string.
    #[error("archive URL: {0}")]
    BadUrl(String),
}

/// What went wrong, in words an operator can act on: the server's own message and code (never
/// its `DETAIL`, which can quote a row's values, personal data among them), or the chain of
/// causes (a TLS failure's reason, say), which the error's own message leaves out.
fn described(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {} ({})", db.severity(), db.message(), db.code().code());
    }
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let said = c.to_string();
        if !out.contains(&said) {
            out.push_str(": ");
            out.push_str(&said);
        }
        cause = c.source();
    }
    out
}

impl From<tokio_postgres::Error> for ArchiveError {
    fn from(e: tokio_postgres::Error) -> Self {
        metrics::counter!(gridroute_telemetry::names::ARCHIVE_ERRORS_TOTAL).increment(1);
        if e.as_db_error().is_some() {
            Self::Internal(described(&e))
        } else {
            Self::Unavailable(described(&e))
        }
    }
}

impl From<deadpool_postgres::PoolError> for ArchiveError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        metrics::counter!(gridroute_telemetry::names::ARCHIVE_ERRORS_TOTAL).increment(1);
        match &e {
            deadpool_postgres::PoolError::Backend(b) => {
                Self::Unavailable(format!("connecting: {}", described(b)))
            }
            _ => Self::Unavailable(e.to_string()),
        }
    }
}

pub type Result<T, E = ArchiveError> = std::result::Result<T, E>;

/// A connection pool to the archive database.
#[derive(Clone)]
pub struct Archive {
    pool: deadpool_postgres::Pool,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive").finish_non_exhaustive()
    }
}

/// One incident as the mover hands it over.
#[derive(Debug, Clone)]
pub struct ArchivedIncident {
    /// The whole record with its timeline; the reporter's contact, if any, in
    /// `report.reporter` (the archive keeps it apart).
    pub incident: pb::Incident,
    /// The Redis record's version it was read at.
    pub version: String,
    pub reported_ms: i64,
    pub closed_ms: i64,
    /// The department handling it (`dept`).
    pub department: String,
    /// Its region codes, district to grid.
    pub regions: Vec<String>,
    /// What it adds to `GetStats`.
    pub figures: RowFigures,
}

/// Filters of a list; empty fields do not filter (as `gridroute_store::query::ListFilter`).
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub region_code: String,
    pub department: String,
    pub statuses: Vec<pb::IncidentStatus>,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
}

/// Where an archive list page ended: the last incident returned (newest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCursor {
    pub reported_ms: i64,
    pub incident_id: String,
}

impl ListCursor {
    const PREFIX: &str = "a~";

    /// Parses a token of [`ListCursor::token`].
    pub fn parse(token: &str) -> Option<Self> {
        let (ms, id) = token.strip_prefix(Self::PREFIX)?.split_once('~')?;
        Some(Self {
            reported_ms: ms.parse().ok()?,
            incident_id: id.to_owned(),
        })
    }

    /// The page token: `a~<reported ms>~<incident id>`.
    pub fn token(&self) -> String {
        format!("{}{}~{}", Self::PREFIX, self.reported_ms, self.incident_id)
    }
}

/// What `GetStats` counts (as `gridroute_store::stats::StatsFilter`; 0 = no bound).
#[derive(Debug, Clone, Default)]
pub struct StatsQuery {
    pub department: String,
    pub region_code: String,
    pub start_ms: i64,
    pub end_ms: i64,
}

fn bound(ms: Option<i64>, default: i64) -> i64 {
    ms.filter(|m| *m > 0).unwrap_or(default)
}

impl Archive {
    /// A pool for `url` (`postgres://user:password@host:port/database`, or libpq's
    /// `key=value` form). `sslmode=verify-full` (or `require`, `verify-ca`: each verifies the
    /// server's certificate) asks for TLS, `sslrootcert=<PEM file>` names a private CA
    /// (`tls.rs`). Nothing is connected until the first call.
    pub fn connect(url: &str) -> Result<Self> {
        let (url, tls) = tls::split_url(url)?;
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| ArchiveError::BadUrl(e.to_string()))?;
        config.connect_timeout(TIMEOUT);
        config.application_name("gridroute");
        if tls.is_none() && config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            // `sslmode = require` (spaces around `=`) reached the parser without being read
            // above: refused, not quietly plain.
            return Err(ArchiveError::BadUrl(
                "sslmode: write it as sslmode=verify-full, without spaces around '='".into(),
            ));
        }
        let tls = match tls {
            Some(tls) => {
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                tls
            }
            None => {
                config.ssl_mode(tokio_postgres::config::SslMode::Disable);
                tls::Tls::none()
            }
        };
        let manager = deadpool_postgres::Manager::from_config(
            config,
            tls,
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(8)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(TIMEOUT))
            .create_timeout(Some(TIMEOUT))
            .build()
            .map_err(|e| ArchiveError::BadUrl(e.to_string()))?;
        Ok(Self { pool })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        Ok(self.pool.get().await?)
    }

    /// Whether the archive answers.
    pub async fn ping(&self) -> Result<()> {
        self.client().await?.simple_query("SELECT 1").await?;
        Ok(())
    }

    /// Writes rows (one transaction): a row already there at the same version is left as it
    /// is, one of an older version is replaced. Returns how many rows were written.
    pub async fn put(&self, rows: &[ArchivedIncident], now_ms: i64) -> Result<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let stmt = tx
            .prepare_cached(
                "INSERT INTO incidents (incident_id, version, reported_ms, closed_ms, archived_ms,
                    status, category, department, regions, returned_by, state_name, arbitration,
                    reopened, satisfaction, accepted, accepted_on_time, breached, ever_resolved,
                    resolve_working_ms, record, contact)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                    $17, $18, $19, $20, $21)
                 ON CONFLICT (incident_id) DO UPDATE SET version = excluded.version,
                    reported_ms = excluded.reported_ms, closed_ms = excluded.closed_ms,
                    archived_ms = excluded.archived_ms, status = excluded.status,
                    category = excluded.category, department = excluded.department,
                    regions = excluded.regions, returned_by = excluded.returned_by,
                    state_name = excluded.state_name, arbitration = excluded.arbitration,
                    reopened = excluded.reopened, satisfaction = excluded.satisfaction,
                    accepted = excluded.accepted, accepted_on_time = excluded.accepted_on_time,
                    breached = excluded.breached, ever_resolved = excluded.ever_resolved,
                    resolve_working_ms = excluded.resolve_working_ms, record = excluded.record,
                    contact = excluded.contact
                 WHERE incidents.version <> excluded.version",
            )
            .await?;
        let mut written = 0;
        for row in rows {
            let mut incident = row.incident.clone();
            let contact = incident
                .report
                .as_mut()
                .and_then(|r| r.reporter.take())
                .map(|c| c.encode_to_vec());
            let f = &row.figures;
            let satisfaction = f.satisfaction.map(|s| s as i32);
            let params: [&(dyn ToSql + Sync); 21] = [
                &incident.incident_id,
                &row.version,
                &row.reported_ms,
                &row.closed_ms,
                &now_ms,
                &incident.status,
                &incident.report.as_ref().map_or("", |r| r.category.as_str()),
                &row.department,
                &row.regions,
                &f.returned_by,
                &f.state,
                &f.arbitration,
                &f.reopened,
                &satisfaction,
                &f.accepted,
                &f.accepted_on_time,
                &f.breached,
                &f.ever_resolved,
                &f.resolve_working_ms,
                &incident.encode_to_vec(),
                &contact,
            ];
            written += tx.execute(&stmt, &params).await?;
        }
        tx.commit().await?;
        Ok(written)
    }

    /// Removes the row of `id` if it was written at `version` (the record changed in Redis
    /// after the mover read it: Redis stays the truth).
    pub async fn forget(&self, id: &str, version: &str) -> Result<bool> {
        let n = self
            .client()
            .await?
            .execute(
                "DELETE FROM incidents WHERE incident_id = $1 AND version = $2",
                &[&id, &version],
            )
            .await?;
        Ok(n > 0)
    }

    /// How many incidents the archive holds.
    pub async fn count(&self) -> Result<i64> {
        let row = self
            .client()
            .await?
            .query_one("SELECT count(*) FROM incidents", &[])
            .await?;
        Ok(row.get(0))
    }

    /// One archived incident, with the reporter's contact (if kept) in `report.reporter`, as
    /// the store returns a live one: the API masks it for callers who may not read it.
    pub async fn get(&self, id: &str) -> Result<Option<pb::Incident>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT record, contact FROM incidents WHERE incident_id = $1",
                &[&id],
            )
            .await?;
        row.map(|r| decode(r.get(0), r.get(1))).transpose()
    }

    /// A page of archived incidents, newest report first, after `after`; and the cursor of
    /// the next page (`None` at the end).
    pub async fn list(
        &self,
        f: &ListQuery,
        page_size: usize,
        after: Option<&ListCursor>,
    ) -> Result<(Vec<pb::Incident>, Option<ListCursor>)> {
        let statuses: Vec<i32> = f.statuses.iter().map(|s| *s as i32).collect();
        let (after_ms, after_id) =
            after.map_or((i64::MAX, ""), |c| (c.reported_ms, c.incident_id.as_str()));
        let limit = page_size as i64 + 1;
        let rows = self
            .client()
            .await?
            .query(
                "SELECT record, contact, reported_ms, incident_id FROM incidents
                 WHERE ($1 = '' OR (department = $1 AND status <> $8))
                   AND ($2 = '' OR $2 = ANY(regions))
                   AND (cardinality($3::int4[]) = 0 OR status = ANY($3))
                   AND reported_ms >= $4 AND reported_ms < $5
                   AND (reported_ms, incident_id) < ($6, $7)
                 ORDER BY reported_ms DESC, incident_id DESC
                 LIMIT $9",
                &[
                    &f.department,
                    &f.region_code,
                    &statuses,
                    &bound(f.start_ms, i64::MIN),
                    &bound(f.end_ms, i64::MAX),
                    &after_ms,
                    &after_id,
                    &(pb::IncidentStatus::Returned as i32),
                    &limit,
                ],
            )
            .await?;
        let more = rows.len() > page_size;
        let mut out = Vec::with_capacity(page_size);
        let mut last = None;
        for r in rows.into_iter().take(page_size) {
            out.push(decode(r.get(0), r.get(1))?);
            last = Some(ListCursor {
                reported_ms: r.get(2),
                incident_id: r.get(3),
            });
        }
        Ok((out, last.filter(|_| more)))
    }

    /// The archive's part of `GetStats`: its totals, with the 90th percentile of resolve
    /// time taken over its resolutions and `hot_hours` (Redis' part) together, so that the
    /// figure is exact over both.
    pub async fn totals(&self, f: &StatsQuery, hot_hours: &[f64]) -> Result<Totals> {
        let client = self.client().await?;
        // $1 department, $2 region, $3 start, $4 end.
        const SELECTION: &str = "reported_ms >= $3 AND reported_ms < $4
              AND ($2 = '' OR $2 = ANY(regions))
              AND ($1 = '' OR department = $1 OR $1 = ANY(returned_by))";
        const COUNTED: &str = "($1 = '' OR department = $1)";
        let params: [&(dyn ToSql + Sync); 4] = [
            &f.department,
            &f.region_code,
            &bound(Some(f.start_ms), i64::MIN),
            &bound(Some(f.end_ms), i64::MAX),
        ];
        let sums = client
            .query_one(
                &format!(
                    "SELECT count(*) FILTER (WHERE {COUNTED}),
                        count(resolve_working_ms) FILTER (WHERE {COUNTED}),
                        count(*) FILTER (WHERE {COUNTED} AND resolve_working_ms IS NOT NULL AND NOT breached),
                        sum(resolve_working_ms::float8 / 3600000.0::float8) FILTER (WHERE {COUNTED}),
                        count(*) FILTER (WHERE {COUNTED} AND accepted),
                        count(*) FILTER (WHERE {COUNTED} AND accepted_on_time),
                        CASE WHEN $1 = '' THEN coalesce(sum(cardinality(returned_by)), 0)
                             ELSE count(*) FILTER (WHERE $1 = ANY(returned_by)) END,
                        count(*) FILTER (WHERE {COUNTED} AND arbitration),
                        count(*) FILTER (WHERE {COUNTED} AND reopened),
                        count(*) FILTER (WHERE {COUNTED} AND ever_resolved),
                        coalesce(sum(satisfaction) FILTER (WHERE {COUNTED}), 0),
                        count(satisfaction) FILTER (WHERE {COUNTED}),
                        count(*) FILTER (WHERE {COUNTED} AND breached)
                     FROM incidents WHERE {SELECTION}"
                ),
                &params,
            )
            .await?;
        let by_status = client
            .query(
                &format!(
                    "SELECT state_name, count(*) FROM incidents
                     WHERE {SELECTION} AND {COUNTED} GROUP BY state_name"
                ),
                &params,
            )
            .await?;
        let hot: Vec<f64> = hot_hours.to_vec();
        let p90 = client
            .query_one(
                &format!(
                    "SELECT percentile_disc(0.9) WITHIN GROUP (ORDER BY h) FROM (
                        SELECT resolve_working_ms::float8 / 3600000.0::float8 AS h FROM incidents
                        WHERE {SELECTION} AND {COUNTED} AND resolve_working_ms IS NOT NULL
                        UNION ALL SELECT unnest($5::float8[])) AS resolutions"
                ),
                &[params[0], params[1], params[2], params[3], &hot],
            )
            .await?;
        Ok(Totals {
            incident_count: sums.get(0),
            resolved_count: sums.get(1),
            resolved_on_time: sums.get(2),
            resolve_hours_sum: sums.get::<_, Option<f64>>(3).unwrap_or(0.0),
            resolve_hours_p90: p90.get(0),
            accepted: sums.get(4),
            accepted_on_time: sums.get(5),
            returns: sums.get(6),
            arbitrations: sums.get(7),
            reopened: sums.get(8),
            ever_resolved: sums.get(9),
            satisfaction_sum: sums.get(10),
            satisfaction_count: sums.get(11),
            breached: sums.get(12),
            by_status: by_status
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
                .collect::<HashMap<_, _>>(),
            resolve_hours: Vec::new(),
            truncated: false,
        })
    }

    /// Erases the reporter's contact of archived incidents closed before `closed_before_ms`
    /// (at most `limit`), noting it on each record's timeline with `note`. Returns how many.
    pub async fn erase_contacts(
        &self,
        closed_before_ms: i64,
        now_ms: i64,
        limit: i64,
        note: &(dyn Fn(&mut pb::Incident) + Sync),
    ) -> Result<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let rows = tx
            .query(
                "SELECT incident_id, record FROM incidents
                 WHERE contact IS NOT NULL AND closed_ms < $1
                 ORDER BY closed_ms LIMIT $2 FOR UPDATE SKIP LOCKED",
                &[&closed_before_ms, &limit],
            )
            .await?;
        let mut erased = 0;
        for r in rows {
            let id: String = r.get(0);
            let mut incident = pb::Incident::decode(r.get::<_, &[u8]>(1))
                .map_err(|e| ArchiveError::Internal(format!("record of {id}: {e}")))?;
            note(&mut incident);
            erased += tx
                .execute(
                    "UPDATE incidents SET contact = NULL, contact_erased_ms = $2, record = $3
                     WHERE incident_id = $1",
                    &[&id, &now_ms, &incident.encode_to_vec()],
                )
                .await?;
        }
        tx.commit().await?;
        Ok(erased)
    }
}

/// A stored record with its contact joined back.
fn decode(record: &[u8], contact: Option<&[u8]>) -> Result<pb::Incident> {
    let mut incident = pb::Incident::decode(record)
        .map_err(|e| ArchiveError::Internal(format!("archived record: {e}")))?;
    if let (Some(bytes), Some(report)) = (contact, incident.report.as_mut()) {
        report.reporter = Some(
            pb::ReporterContact::decode(bytes)
                .map_err(|e| ArchiveError::Internal(format!("archived contact: {e}")))?,
        );
    }
    Ok(incident)
}
