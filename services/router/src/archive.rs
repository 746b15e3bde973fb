//! Moving closed incidents from Redis to the archive (PostgreSQL) once they have been closed
//! longer than the hot period, and erasing reporters' contacts in the archive when their
//! retention ends.
//!
//! One pass, per partition oldest closing first: read each due incident whole, write the
//! batch to the archive (one transaction), then remove each from Redis if its record is still
//! the version written; one that changed in between stays, and its row is forgotten. Index
//! entries naming only archived incidents are removed after. Every router runs the mover:
//! two passes over one incident write one row (same version: no change) and remove it once.
//! A mover killed anywhere leaves either the record in Redis (the next pass writes the same row
//! again, which changes nothing) or the row alone (done): it repeats nothing and skips nothing.

use std::{collections::BTreeSet, time::Duration};

use gridroute_archive::{Archive, ArchiveError, ArchivedIncident};
use gridroute_core::{calendar::WorkCalendar, lifecycle::EventKind, table::SharedTable};
use gridroute_proto::v1 as pb;
use gridroute_store::{
    Store, StoreError,
    archive::{ArchiveCandidate, Removal},
    stats::row_figures,
};
use gridroute_telemetry::names;
use tokio::sync::watch;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::retention::{millis, sweep_every};

/// When incidents move, and how much one pass does.
#[derive(Debug, Clone)]
pub struct ArchiveSettings {
    /// How long a closed incident stays in Redis.
    pub hot_period: Duration,
    /// How long after closing the reporter's contact is erased (the same period as in Redis).
    pub contact_retention: Duration,
    /// How often a pass runs.
    pub every: Duration,
    /// Incidents read per partition in one round of a pass.
    pub batch: usize,
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    /// Written to the archive and removed from Redis.
    pub archived: u64,
    /// Written, then found changed in Redis: stays there.
    pub changed: u64,
    /// Index entries removed.
    pub index_entries: u64,
    /// Contacts erased in the archive.
    pub contacts_erased: u64,
}

/// Why a pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

/// Index entries read per stream when looking for ones to remove.
const INDEX_SCAN: usize = 2_000;
/// Most rounds of one pass (a backlog drains over several passes).
const MAX_ROUNDS: usize = 20;

/// The row of a candidate.
pub fn row(c: &ArchiveCandidate, calendar: &WorkCalendar) -> ArchivedIncident {
    ArchivedIncident {
        incident: c.incident.clone(),
        version: c.version.clone(),
        reported_ms: c.text("reported_at").parse().unwrap_or(c.closed_ms),
        closed_ms: c.closed_ms,
        department: c.text("dept").to_owned(),
        regions: c
            .text("regions")
            .split(',')
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .collect(),
        figures: row_figures(|n| c.text(n), calendar).unwrap_or_default(),
    }
}

/// One pass: moves what is due (in rounds of `batch` per partition while full rounds come
/// back), then erases the archive's contacts past retention.
pub async fn move_once(
    store: &Store,
    archive: &Archive,
    calendar: &WorkCalendar,
    s: &ArchiveSettings,
) -> Result<Moved, MoveError> {
    let mut out = Moved::default();
    let now = store.server_time_ms().await?;
    let cutoff = now - millis(s.hot_period);
    for _ in 0..MAX_ROUNDS {
        let candidates = store.archive_candidates(cutoff, s.batch).await?;
        if candidates.is_empty() {
            break;
        }
        let rows: Vec<ArchivedIncident> = candidates.iter().map(|c| row(c, calendar)).collect();
        archive.put(&rows, now).await?;
        let mut streams = BTreeSet::new();
        for c in &candidates {
            match store.remove_archived(c).await? {
                Removal::Removed => {
                    out.archived += 1;
                    streams.extend(store.index_streams_of(c));
                }
                Removal::Changed => {
                    out.changed += 1;
                    archive.forget(&c.incident.incident_id, &c.version).await?;
                }
                Removal::Gone => {}
            }
        }
        out.index_entries += store.compact_indexes(&streams, cutoff, INDEX_SCAN).await?;
        // Another round while some partition may hold more than it gave.
        let mut per_partition = std::collections::HashMap::<u16, usize>::new();
        for c in &candidates {
            *per_partition.entry(c.partition).or_default() += 1;
        }
        if per_partition.values().all(|n| *n < s.batch) {
            break;
        }
    }
    let retention = millis(s.contact_retention);
    let days = retention as f64 / 86_400_000.0;
    let note = move |incident: &mut pb::Incident| {
        if let Some(r) = incident.report.as_mut() {
            r.reporter = None;
        }
        let kind = EventKind::ContactErased;
        incident.timeline.push(pb::TimelineEvent {
            time: Some(gridroute_mapping::timestamp(now)),
            kind: kind.as_str().to_owned(),
            actor: "router".into(),
            detail: format!(
                "the reporter's contact details were erased {days:.0} days after the case closed (retention)"
            ),
            r#type: gridroute_mapping::timeline_kind(kind) as i32,
            ..Default::default()
        });
    };
    loop {
        let n = archive
            .erase_contacts(now - retention, now, 500, &note)
            .await?;
        out.contacts_erased += n;
        if n < 500 {
            break;
        }
    }
    if out.contacts_erased > 0 {
        metrics::counter!(names::CONTACTS_ERASED_TOTAL).increment(out.contacts_erased);
    }
    let due = store.archive_due_count(cutoff).await?;
    metrics::gauge!(names::ARCHIVE_DUE).set(due as f64);
    Ok(out)
}

/// Runs [`move_once`] every `settings.every` until `shutdown` turns true; the calendar is the
/// current table's (working time to resolve is kept as it was measured when archived).
pub async fn archive_loop(
    store: Store,
    archive: Archive,
    tables: SharedTable,
    settings: ArchiveSettings,
    shutdown: watch::Receiver<bool>,
) {
    sweep_every(settings.every, shutdown, || async {
        let table = tables.load_full();
        match move_once(&store, &archive, &table.calendar, &settings).await {
            Ok(m) if m == Moved::default() => {}
            Ok(m) => info!(
                archived = m.archived,
                changed = m.changed,
                index_entries = m.index_entries,
                contacts_erased = m.contacts_erased,
                "closed incidents moved to the archive"
            ),
            Err(MoveError::Archive(e)) => warn!(error = %e, "archive pass failed"),
            Err(e) => debug!(error = %e, "archive pass failed"),
        }
    })
    .instrument(info_span!("archive"))
    .await;
}
