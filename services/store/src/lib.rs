//! The only code that talks to Redis.
//!
//! Layout:
//! - [`keys`]: the key layout; every partition's keys share one hash tag (Cluster-ready).
//! - [`scripts`]: the Lua scripts that make each state change atomic.
//! - [`codec`]: how records, timelines and dispatches are encoded in Redis, and the mapping
//!   between the core's decisions and the API's messages.
//! - [`ingest`]: accepting reports (idempotency + ingest stream).
//! - [`consumer`]: the router's side: consumer groups, batches, claims, dispatch, dead letters.
//! - [`lifecycle`]: applying lifecycle actions planned by the core (accept … close).
//! - [`timers`]: firing due SLA timers (warnings, urges, supervision, public reports).
//! - [`stats`]: the figures a command centre reports.
//! - [`query`]: reading the shared record (get, list).
//! - [`subscribe`]: reading a department's dispatch streams from a cursor.
//! - [`local`]: a private `redis-server` for `gridroute dev` and tests.
//!
//! Nothing here decides where an incident goes: that is the core's job.

pub mod codec;
pub mod consumer;
pub mod ingest;
pub mod keys;
pub mod lifecycle;
pub mod local;
pub mod query;
pub mod scripts;
pub mod stats;
pub mod subscribe;
pub mod tables;
pub mod timers;

use std::time::Duration;

use redis::{AsyncCommands, Client, aio::ConnectionManager, aio::ConnectionManagerConfig};

pub use keys::Keys;

/// How long one Redis command may take before it counts as unavailable. Long enough for a
/// large pipelined batch on a busy server, short enough that callers get UNAVAILABLE promptly.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for a TCP connection to Redis.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest retained history of a partition's events stream (WatchIncidents).
pub const EVENTS_STREAM_MAX_LEN: u64 = 1_000_000;
pub(crate) const EVENTS_MAX_LEN: &str = "1000000";

/// Errors of the store, already sorted by what the caller should do about them.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis cannot be reached, timed out, or is loading: retry later.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// Redis answered with an error that retrying will not fix.
    #[error("redis error: {0}")]
    Internal(String),
    /// The consumer group is gone (Redis restarted without persistence, or the stream was
    /// deleted): recreate it with [`Store::ensure_groups`].
    #[error("consumer group missing: {0}")]
    NoGroup(String),
    /// The incident does not exist.
    #[error("incident {0} not found")]
    NotFound(String),
    /// The idempotency key was used before with another payload.
    #[error("request_id already used for incident {incident_id} with a different payload")]
    IdempotencyConflict {
        /// The incident created by the first use of the key.
        incident_id: String,
    },
    /// The lifecycle refused the action (who, state or arguments).
    #[error(transparent)]
    Refused(#[from] gridroute_core::lifecycle::Refusal),
    /// The request id was used before for another action on this incident.
    #[error("request_id already used for {action} on this incident")]
    RequestIdReused {
        /// The action it was used for.
        action: String,
    },
    /// A value in Redis could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        let transient = e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || matches!(
                e.code(),
                Some("LOADING" | "BUSY" | "TRYAGAIN" | "CLUSTERDOWN" | "MASTERDOWN" | "READONLY")
            );
        if transient {
            Self::Unavailable(e.to_string())
        } else if e.code() == Some("NOGROUP") {
            Self::NoGroup(e.to_string())
        } else {
            Self::Internal(e.to_string())
        }
    }
}

/// Result of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A handle to the store: cheap to clone, shared by every task of a process.
#[derive(Clone)]
pub struct Store {
    client: Client,
    conn: ConnectionManager,
    keys: Keys,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Connects to Redis and checks (or records, on first use) the number of partitions, which
    /// must never change for a deployment: ids and keys depend on it.
    pub async fn connect(url: &str, prefix: &str, partitions: u16) -> Result<Self> {
        let client = Client::open(url).map_err(|e| StoreError::Internal(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let mut conn = ConnectionManager::new_with_config(client.clone(), config).await?;
        let keys = Keys::new(prefix, partitions);
        let set: bool = conn.hset_nx(keys.meta(), "partitions", partitions).await?;
        if !set {
            let stored: u16 = conn.hget(keys.meta(), "partitions").await?;
            if stored != partitions {
                return Err(StoreError::Internal(format!(
                    "this deployment has {stored} partitions; --partitions {partitions} would orphan data"
                )));
            }
        }
        Ok(Self { client, conn, keys })
    }

    /// The key layout.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// A multiplexed connection for ordinary commands.
    pub(crate) fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// A dedicated connection for blocking reads (XREAD BLOCK would stall a shared one). Its
    /// response timeout is longer than any block it issues, so that no reply is ever dropped
    /// while entries are in flight.
    pub(crate) async fn blocking_conn(
        &self,
        block: Duration,
    ) -> Result<redis::aio::MultiplexedConnection> {
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(block + RESPONSE_TIMEOUT));
        Ok(self
            .client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await?)
    }

    /// Round trip to Redis, for health checks.
    pub async fn ping(&self) -> Result<()> {
        let mut c = self.conn();
        let _: String = redis::cmd("PING").query_async(&mut c).await?;
        Ok(())
    }

    /// Redis server time in milliseconds: the one clock every replica agrees on.
    pub async fn server_time_ms(&self) -> Result<i64> {
        let mut c = self.conn();
        let (s, us): (i64, i64) = redis::cmd("TIME").query_async(&mut c).await?;
        Ok(s * 1000 + us / 1000)
    }
}

pub(crate) fn record_error(op: &'static str, e: &StoreError) {
    metrics::counter!(gridroute_telemetry::names::REDIS_ERRORS_TOTAL, "op" => op).increment(1);
    tracing::debug!(op, error = %e, "redis operation failed");
}
