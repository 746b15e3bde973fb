//! The archive's schema: numbered migrations, applied in order in one transaction under an
//! advisory lock, so that replicas starting together apply each once.

use crate::{Archive, Result};

/// Every migration: (version, name, SQL). Append only; never edit one that has shipped.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[(
    1,
    "incidents",
    include_str!("../migrations/0001_incidents.sql"),
)];

impl Archive {
    /// Applies the migrations not applied yet; returns their versions (empty: up to date).
    pub async fn migrate(&self) -> Result<Vec<i32>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('gridroute-archive-migrate'))",
            &[],
        )
        .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS gridroute_schema (
                version integer PRIMARY KEY,
                name text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await?;
        let done: Vec<i32> = tx
            .query("SELECT version FROM gridroute_schema", &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut applied = Vec::new();
        for (version, name, sql) in MIGRATIONS {
            if done.contains(version) {
                continue;
            }
            tx.batch_execute(sql).await?;
            tx.execute(
                "INSERT INTO gridroute_schema (version, name) VALUES ($1, $2)",
                &[version, name],
            )
            .await?;
            applied.push(*version);
        }
        tx.commit().await?;
        Ok(applied)
    }

    /// The newest migration applied (0: none).
    pub async fn schema_version(&self) -> Result<i32> {
        let client = self.client().await?;
        let exists: bool = client
            .query_one("SELECT to_regclass('gridroute_schema') IS NOT NULL", &[])
            .await?
            .get(0);
        if !exists {
            return Ok(0);
        }
        let row = client
            .query_one(
                "SELECT coalesce(max(version), 0) FROM gridroute_schema",
                &[],
            )
            .await?;
        Ok(row.get(0))
    }
}
