//! Routing table versions in Redis, and keeping the table in force in every replica's memory.
//!
//! A version is content-addressed (its name plus a hash of its sources), stored once, and made
//! the one in force by one script that also records the history and notifies replicas on a
//! pub/sub channel. Replicas also poll the current version every second, so a missed
//! notification (a reconnect) delays a swap by at most that long. A new version is loaded and
//! validated off the routing path, then swapped in whole; the old one is dropped later on a
//! blocking thread, so a large table never pauses routing while it is freed.

use std::{sync::Arc, time::Duration};

use gridroute_core::{
    RoutingTable,
    table::{SharedTable, TableSources},
};
use gridroute_telemetry::names;
use redis::AsyncCommands;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tracing::{info, warn};

use crate::{Result, Store, StoreError, scripts};

/// Versions kept in the history (and restorable by rollback).
pub const HISTORY_LEN: usize = 100;
/// How often replicas check the version in force, besides notifications.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How long a replaced table is kept before it is freed, so that batches still routing with it
/// finish first and the free happens on a blocking thread, not in a router.
const RETIRE_AFTER: Duration = Duration::from_secs(5);

/// The files of a table version, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    /// `grids.geojson`.
    pub grids: String,
    /// `rules.yaml`.
    pub rules: String,
    /// `calendar.yaml`; empty = the built-in calendar.
    pub calendar: String,
    /// `regions.geojson` (optional polygons of parent regions); empty = none.
    pub regions: String,
}

impl Sources {
    /// The core's view of these files.
    pub fn as_table_sources(&self) -> TableSources<'_> {
        TableSources {
            grids_geojson: &self.grids,
            rules_yaml: &self.rules,
            calendar_yaml: (!self.calendar.is_empty()).then_some(self.calendar.as_str()),
            regions_geojson: (!self.regions.is_empty()).then_some(self.regions.as_str()),
        }
    }
}

/// One entry of the publication history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The version made current.
    pub version: String,
    /// When (Redis clock, ms).
    pub published_ms: i64,
    /// Who published it (the person).
    pub published_by: String,
    /// The principal that published it (`table_admin`, …); '' in entries older than principals.
    pub principal: String,
    /// Why.
    pub note: String,
}

/// Who publishes a version, from the caller's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publisher {
    /// The person (a token's subject).
    pub person: String,
    /// The principal, `kind:id`.
    pub principal: String,
}

impl Publisher {
    /// gridroute itself (the table a replica starts with).
    pub fn system() -> Self {
        Self {
            person: "gridroute".into(),
            principal: "system".into(),
        }
    }
}

/// What a publication did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// The version is now in force; the previous one (if any) is given.
    Changed {
        /// The version in force before.
        previous: Option<String>,
    },
    /// The version was already in force.
    Unchanged,
    /// Bootstrap only: another version is in force and was kept.
    Kept {
        /// The version in force.
        current: String,
    },
}

impl Store {
    /// The version in force, if any was ever published.
    pub async fn current_table_version(&self) -> Result<Option<String>> {
        let mut c = self.conn();
        Ok(c.get(self.keys().table_current()).await?)
    }

    /// A stored version's sources.
    pub async fn table_sources(&self, version: &str) -> Result<Option<Sources>> {
        let mut c = self.conn();
        let key = format!("{}{version}", self.keys().table_version_prefix());
        let (grids, rules, calendar, regions): (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        ) = redis::cmd("HMGET")
            .arg(key)
            .arg("grids")
            .arg("rules")
            .arg("calendar")
            .arg("regions")
            .query_async(&mut c)
            .await?;
        Ok(grids.zip(rules).map(|(grids, rules)| Sources {
            grids,
            rules,
            calendar: calendar.unwrap_or_default(),
            regions: regions.unwrap_or_default(),
        }))
    }

    /// Publishes a validated version. With `bootstrap`, only when no version is in force yet.
    /// `by` names who publishes (the person and the principal, from the caller's credentials).
    pub async fn publish_table(
        &self,
        version: &str,
        sources: Option<&Sources>,
        by: &Publisher,
        note: &str,
        bootstrap: bool,
    ) -> Result<Published> {
        let k = self.keys();
        let keys = [
            k.table_current(),
            k.table_history(),
            format!("{}{version}", k.table_version_prefix()),
        ];
        let empty = Sources::default();
        let src = sources.unwrap_or(&empty);
        let history = HISTORY_LEN.to_string();
        // Who and why as one JSON object: a `|` or a quote in any of them cannot forge another.
        let who = serde_json::json!({"by": by.person, "principal": by.principal, "note": note})
            .to_string();
        let mut pipe = redis::pipe();
        scripts::evalsha(
            &mut pipe,
            &scripts::PUBLISH_TABLE,
            &keys,
            &[
                version.as_bytes(),
                src.grids.as_bytes(),
                src.rules.as_bytes(),
                who.as_bytes(),
                b"",
                k.table_channel().as_bytes(),
                if bootstrap { b"1" } else { b"0" },
                k.table_version_prefix().as_bytes(),
                history.as_bytes(),
                src.calendar.as_bytes(),
                src.regions.as_bytes(),
            ],
        );
        let (code, other): (i64, String) = self.run_script(&mut pipe, "publish_table").await?;
        match code {
            1 => Ok(Published::Changed {
                previous: (!other.is_empty()).then_some(other),
            }),
            0 => Ok(Published::Unchanged),
            2 => Ok(Published::Kept { current: other }),
            _ => Err(StoreError::UnknownVersion(version.to_owned())),
        }
    }

    /// The publication history, newest first.
    pub async fn table_history(&self) -> Result<Vec<HistoryEntry>> {
        let mut c = self.conn();
        let raw: Vec<String> = c.lrange(self.keys().table_history(), 0, -1).await?;
        Ok(raw
            .into_iter()
            .filter_map(|e| {
                let mut parts = e.splitn(3, '|');
                let version = parts.next()?.to_owned();
                let published_ms = parts.next()?.parse().ok()?;
                let rest = parts.next().unwrap_or("");
                let (published_by, principal, note) =
                    match serde_json::from_str::<serde_json::Value>(rest) {
                        Ok(v) if v.is_object() => {
                            let f = |k: &str| {
                                v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_owned()
                            };
                            (f("by"), f("principal"), f("note"))
                        }
                        // Entries written before who-and-why became JSON: `by|note`.
                        _ => {
                            let (by, note) = rest.split_once('|').unwrap_or((rest, ""));
                            (by.to_owned(), String::new(), note.to_owned())
                        }
                    };
                Some(HistoryEntry {
                    version,
                    published_ms,
                    published_by,
                    principal,
                    note,
                })
            })
            .collect())
    }

    /// Makes `to` (default: the version in force before the current one) the one in force again.
    pub async fn rollback_table(&self, to: Option<&str>, by: &Publisher) -> Result<String> {
        let target = match to {
            Some(v) => v.to_owned(),
            None => {
                let current = self.current_table_version().await?.unwrap_or_default();
                self.table_history()
                    .await?
                    .into_iter()
                    .map(|h| h.version)
                    .find(|v| *v != current)
                    .ok_or_else(|| StoreError::UnknownVersion("(an earlier version)".into()))?
            }
        };
        self.publish_table(&target, None, by, "rollback", false)
            .await?;
        Ok(target)
    }

    /// Keeps `shared` equal to the version in force until shutdown: follows notifications and
    /// polls every [`POLL_INTERVAL`]. A version that fails to load is logged and counted, and
    /// the table in memory stays in force.
    pub async fn sync_tables(&self, shared: SharedTable, mut shutdown: watch::Receiver<bool>) {
        // On a cluster, only polling: the one-second poll bounds the swap delay either way.
        let pubsub = match self.single_client() {
            Some(client) => Some(client.get_async_pubsub().await),
            None => None,
        };
        let mut notifications = match pubsub {
            None => None,
            Some(Ok(mut ps)) => match ps.subscribe(self.keys().table_channel()).await {
                Ok(()) => Some(ps.into_on_message()),
                Err(e) => {
                    warn!(error = %e, "table notifications unavailable; polling only");
                    None
                }
            },
            Some(Err(e)) => {
                warn!(error = %e, "table notifications unavailable; polling only");
                None
            }
        };
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                Some(_) = async { match notifications.as_mut() { Some(n) => n.next().await, None => std::future::pending().await } } => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            if let Err(e) = self.refresh_table(&shared).await {
                warn!(error = %e, "checking the table version failed");
            }
        }
    }

    /// Loads the version in force into `shared` if it differs from the one held.
    pub async fn refresh_table(&self, shared: &SharedTable) -> Result<bool> {
        let Some(version) = self.current_table_version().await? else {
            return Ok(false);
        };
        if shared.load().version == version {
            return Ok(false);
        }
        let Some(src) = self.table_sources(&version).await? else {
            return Err(StoreError::Corrupt(format!(
                "table version {version} is in force but its sources are missing"
            )));
        };
        let loaded =
            tokio::task::spawn_blocking(move || RoutingTable::load(src.as_table_sources()))
                .await
                .map_err(|e| StoreError::Internal(e.to_string()))?;
        match loaded {
            Ok(table) => {
                let new_version = table.version.clone();
                observe_table(Some(&shared.load().version), &table);
                let old = shared.swap(Arc::new(table));
                metrics::counter!(names::TABLE_LOADS_TOTAL, "outcome" => "loaded").increment(1);
                info!(from = %old.version, to = %new_version, "routing table swapped");
                tokio::spawn(async move {
                    tokio::time::sleep(RETIRE_AFTER).await;
                    let _ = tokio::task::spawn_blocking(move || drop(old)).await;
                });
                Ok(true)
            }
            Err(e) => {
                metrics::counter!(names::TABLE_LOADS_TOTAL, "outcome" => "rejected").increment(1);
                warn!(version = %version, error = %e, "table in force failed to load; keeping the current one");
                Ok(false)
            }
        }
    }
}

/// Publishes what a process knows of the table it now holds: its version
/// (`gridroute_table_info`, the previous one set to 0) and the horizon of its working calendar
/// (`gridroute_calendar_covered_until_timestamp_seconds`; absent when the calendar has none).
/// Logs a warning when the calendar ends before the longest SLA span from now: the city keeps
/// running, with deadlines past the horizon marked as estimates.
pub fn observe_table(old_version: Option<&str>, table: &RoutingTable) {
    if let Some(old) = old_version.filter(|o| *o != table.version) {
        metrics::gauge!(names::TABLE_INFO, "version" => old.to_owned()).set(0.0);
    }
    metrics::gauge!(names::TABLE_INFO, "version" => table.version.clone()).set(1.0);
    if let Some(h) = table.calendar.horizon_ms() {
        metrics::gauge!(names::CALENDAR_COVERED_UNTIL).set(h as f64 / 1000.0);
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    if let Some(issue) = table.calendar_shortfall(now_ms) {
        warn!(version = %table.version, "{}", issue.message);
    }
}

impl Store {
    /// At start: publishes `sources` (already loaded into `shared`) when no version is in force
    /// yet; otherwise the version in force in Redis wins and is loaded into `shared`, so a
    /// restarted replica never reverts a table pushed since it was configured.
    pub async fn bootstrap_table(&self, shared: &SharedTable, sources: &Sources) -> Result<()> {
        let version = shared.load().version.clone();
        match self
            .publish_table(
                &version,
                Some(sources),
                &Publisher::system(),
                "first table of this deployment",
                true,
            )
            .await?
        {
            Published::Kept { current } if current != version => {
                info!(configured = %version, in_force = %current, "a published table is in force; using it");
                self.refresh_table(shared).await?;
            }
            _ => {}
        }
        Ok(())
    }
}
