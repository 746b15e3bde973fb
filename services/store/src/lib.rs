//! The only code that talks to Redis.
//!
//! Layout:
//! - [`keys`]: the key layout; every partition's keys share one hash tag (Cluster-ready).
//! - [`scripts`]: the Lua scripts (named, loaded once, run in pipelines) that make each change
//!   atomic; none of them knows a state, a transition or a protobuf layout: the core's
//!   lifecycle passes them what they need.
//! - [`conn`]: connections (single server, Sentinel, Cluster); `resp`: the router's own
//!   connection for its ingest reads and dispatch calls on one Redis.
//! - [`codec`]: how records and timelines are encoded in Redis and read back.
//! - [`ingest`]: accepting reports (idempotency + ingest stream).
//! - [`transact`]: the same without a script, in a `WATCH`/`MULTI`/`EXEC` transaction
//!   (`--transactions`).
//! - [`consumer`]: the router's side of the ingest streams: consumer groups, batches, claims,
//!   dead letters.
//! - [`dispatch`]: writing routed entries (record, indexes, department streams, schedule head).
//! - [`merge`]: a duplicate report joining an open incident.
//! - [`lifecycle`]: applying lifecycle actions planned by the core (accept … close); `ops`
//!   turns any plan into the commands `apply.lua` runs.
//! - [`schedule`]: how a case's SLA schedule is kept (record field + head in the timer set).
//! - [`timers`]: claiming due SLA timers and applying what the core plans for each.
//! - [`stats`]: the figures a command centre reports.
//! - [`query`]: reading the shared record (get, list).
//! - [`subscribe`]: reading a department's dispatch streams, or the events streams, from a
//!   cursor; [`events`]: the events entries' two forms (one per change, one per batch).
//! - [`tables`]: routing table versions, history and change notifications.
//! - [`audit`]: the audit trail (a stream trimmed by age).
//! - [`retention`]: erasing reporters' contact details a retention period after closing.
//! - [`archive`]: Redis' side of moving closed incidents to the archive (PostgreSQL).
//! - [`retry`]: the one back-off used when Redis does not answer.
//! - [`local`]: a private `redis-server` for `gridroute dev` and tests.
//!
//! Nothing here decides where an incident goes: that is the core's job.

pub mod archive;
pub mod audit;
pub mod codec;
pub mod compact;
pub mod conn;
pub mod consumer;
pub mod dispatch;
mod dispatch_tx;
pub mod events;
pub mod ingest;
pub mod keys;
pub mod lifecycle;
pub mod local;
pub mod merge;
mod ops;
pub mod query;
mod resp;
pub mod retention;
pub mod retry;
pub mod schedule;
pub mod scripts;
pub mod stats;
pub mod subscribe;
pub mod tables;
pub mod timers;
pub mod transact;

use std::time::Duration;

use redis::AsyncCommands;

pub use keys::Keys;

/// How long one Redis command may take before it counts as unavailable. Long enough for a
/// large pipelined batch on a busy server, short enough that callers get UNAVAILABLE promptly.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for a TCP connection to Redis.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Errors of the store, already sorted by what the caller should do about them.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis cannot be reached, timed out, or is loading: retry later.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// Redis reached its `maxmemory` and refuses writes (`noeviction`): nothing was written;
    /// retry once memory is freed.
    #[error("redis is out of memory: {0}")]
    Full(String),
    /// Redis answered with an error that retrying will not fix.
    #[error("redis error: {0}")]
    Internal(String),
    /// The consumer group is gone (Redis restarted without persistence, or the stream was
    /// deleted): recreate it with [`Store::ensure_groups`].
    #[error("consumer group missing: {0}")]
    NoGroup(String),
    /// The incident does not exist.
    #[error("incident {0:?} not found")]
    NotFound(String),
    /// The routing table version does not exist (or is no longer kept).
    #[error("table version {0:?} not found")]
    UnknownVersion(String),
    /// The idempotency key was used before with another payload.
    #[error("request_id already used for incident {incident_id:?} with a different payload")]
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
    /// A page token that this store did not issue.
    #[error("page_token {0:?} is not a token this service issued")]
    InvalidToken(String),
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
        } else if e.code() == Some("OOM") {
            Self::Full(e.to_string())
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
    target: conn::Target,
    conn: conn::Conn,
    keys: Keys,
    replication: Option<Replication>,
    clock: std::sync::Arc<std::sync::Mutex<Option<ClockSample>>>,
    /// Routes reports in the accepting process (`--inline-routing`); `None`: reports queue in
    /// the ingest streams for the routers.
    inline: Option<ingest::InlineRoute>,
    /// Writes reports, and routers' first dispatches, by transaction instead of the scripts
    /// (`--transactions`).
    transactions: bool,
    /// The fewest writes a batch needs to go by transaction; smaller batches take the script
    /// (`--transaction-min-batch`).
    transaction_min_batch: usize,
    /// The connections those transactions run on.
    tx_conns: std::sync::Arc<transact::TxConns>,
    /// Transactions write a batch's changes as one events entry per partition
    /// (`--packed-events`, [`events`]).
    packed_events: bool,
    /// Transactions write region index entries down to this level of a grid's path, the
    /// finer codes in the field names of the last (`--region-index-depth`; 0: every level).
    region_index_depth: usize,
    /// Idempotency claims are written without an expiry and kept as long as their incident's
    /// record is in Redis (`--claims-with-records`, [`Store::with_claims_kept`]).
    claims_kept: bool,
}

/// One reading of Redis' clock (`TIME`), and when it was taken on this host's monotonic clock
/// (the middle of the round trip).
#[derive(Debug, Clone, Copy)]
struct ClockSample {
    server_us: i64,
    at: std::time::Instant,
    /// Half the round trip of the reading: how far the estimate may be off either way.
    half_rtt_us: i64,
}

/// How old a reading of Redis' clock may be before [`Store::clock_ms`] reads it again. The
/// monotonic clock drifts by microseconds in that time; Redis' clock stepping is seen within it.
const CLOCK_RESAMPLE: Duration = Duration::from_secs(1);

/// A durability setting: writes count as done only once this many replicas have them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replication {
    /// Replicas that must acknowledge (`WAIT numreplicas`).
    pub replicas: u32,
    /// How long to wait for them.
    pub timeout: Duration,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("keys", &self.keys)
            .field("cluster", &self.target.is_cluster())
            .finish_non_exhaustive()
    }
}

/// The hash tag of a command: the first `{…}` in its arguments (every gridroute key has one),
/// or nothing for keyless commands.
fn hash_tag(cmd: &redis::Cmd) -> Vec<u8> {
    cmd.args_iter()
        .find_map(|a| match a {
            redis::Arg::Simple(b) => {
                let open = b.iter().position(|&c| c == b'{')?;
                let close = b[open..].iter().position(|&c| c == b'}')?;
                Some(b[open + 1..open + close].to_vec())
            }
            _ => None,
        })
        .unwrap_or_default()
}

impl Store {
    /// Connects to Redis (one server, or a cluster for `redis+cluster://` URLs) and checks (or
    /// records, on first use) the number of partitions, which must never change for a
    /// deployment: ids and keys depend on it.
    pub async fn connect(url: &str, prefix: &str, partitions: u16) -> Result<Self> {
        let target = conn::Target::parse(url)?;
        let mut conn = target.connect().await?;
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
        Ok(Self {
            target,
            conn,
            keys,
            replication: None,
            clock: Default::default(),
            inline: None,
            transactions: false,
            transaction_min_batch: 1,
            tx_conns: Default::default(),
            packed_events: false,
            region_index_depth: 0,
            claims_kept: false,
        })
    }

    /// Makes reports count as accepted, and dispatches as done, only once `r.replicas`
    /// replicas have them (`WAIT`), so that a failover to a replica cannot lose them. Not on
    /// Redis Cluster: `WAIT` concerns one connection to one primary.
    pub fn with_replication(mut self, r: Replication) -> Result<Self> {
        if r.replicas > 0 && self.target.is_cluster() {
            return Err(StoreError::Internal(
                "waiting for replicas is not supported on Redis Cluster".into(),
            ));
        }
        self.replication = Some(r).filter(|r| r.replicas > 0);
        Ok(self)
    }

    /// Waits until the configured replicas have every write this process sent so far (the
    /// writes went over the same multiplexed connection, so `WAIT` covers them). `Ok(true)`
    /// without a setting; `Ok(false)` when fewer replicas acknowledged in time.
    pub(crate) async fn replicated(&self, op: &'static str) -> Result<bool> {
        self.replicated_on(&mut self.conn(), op).await
    }

    /// [`Store::replicated`] for the writes sent over `c` (`WAIT` covers one connection's).
    pub(crate) async fn replicated_on(
        &self,
        c: &mut impl redis::aio::ConnectionLike,
        op: &'static str,
    ) -> Result<bool> {
        let Some(r) = self.replication else {
            return Ok(true);
        };
        let started = std::time::Instant::now();
        let acked: u32 = redis::cmd("WAIT")
            .arg(r.replicas)
            .arg(r.timeout.as_millis() as u64)
            .query_async(c)
            .await?;
        Ok(Self::waited(r, op, started, acked))
    }

    /// [`Store::replicated`] for the writes sent over the router's own connection.
    pub(crate) async fn replicated_direct(
        &self,
        direct: &mut resp::Direct,
        op: &'static str,
    ) -> Result<bool> {
        let Some(r) = self.replication else {
            return Ok(true);
        };
        let started = std::time::Instant::now();
        let acked = direct.wait(r.replicas, r.timeout).await?;
        Ok(Self::waited(r, op, started, acked))
    }

    /// Records a `WAIT` that `acked` replicas answered; whether they were enough.
    fn waited(r: Replication, op: &'static str, started: std::time::Instant, acked: u32) -> bool {
        let ok = acked >= r.replicas;
        metrics::histogram!(gridroute_telemetry::names::REPLICATION_WAIT_SECONDS, "op" => op)
            .record(started.elapsed().as_secs_f64());
        metrics::counter!(gridroute_telemetry::names::REPLICATION_WAITS_TOTAL, "op" => op, "outcome" => if ok { "replicated" } else { "short" })
            .increment(1);
        ok
    }

    /// Routes the reports this handle accepts in the accepting process, and dispatches each in
    /// the script call that accepts it (one call instead of report, read and dispatch), where
    /// `route` gives a dispatch; the others queue for the routers as before.
    pub fn with_inline_route(mut self, route: ingest::InlineRoute) -> Self {
        self.inline = Some(route);
        self
    }

    /// Accepts reports, and dispatches first routes on a router's own connection, with plain
    /// commands in `MULTI`/`EXEC` transactions instead of the report and dispatch scripts: the
    /// same record (but `dept_at` on a first dispatch), less Redis CPU per incident
    /// (docs/PERFORMANCE.md). One Redis or Sentinel; on Redis Cluster the scripts stay.
    /// Readers of every release read what it writes.
    pub fn with_transactions(mut self, on: bool) -> Self {
        self.transactions = on;
        self
    }

    /// With transactions on, batches of fewer than `n` writes (a group commit's reports, a
    /// router's first dispatches of one partition) still take the script: a transaction costs
    /// two round trips where the script costs one, which only pays where batches are large
    /// (docs/PERFORMANCE.md, "Small batches by script"). 0 and 1 mean every batch.
    pub fn with_transaction_min_batch(mut self, n: usize) -> Self {
        self.transaction_min_batch = n.max(1);
        self
    }

    /// Makes the transactions (`--transactions`) write each batch's changes as one events
    /// entry per partition instead of one per change ([`events`]). Readers of this release
    /// read both forms, readers of earlier ones only the first: an expand/contract switch,
    /// turned on once no replica of an earlier release runs (docs/OPERATIONS.md).
    pub fn with_packed_events(mut self, on: bool) -> Self {
        self.packed_events = on;
        self
    }

    /// Writes idempotency claims without an expiry: a claim is kept as long as its incident's
    /// record is in Redis, and the archive mover gives it [`ingest::IDEMPOTENCY_TTL_SECS`]
    /// when it removes the record ([`Store::remove_archived`]). An expiry per report is about
    /// a tenth of Redis' CPU per incident (docs/PERFORMANCE.md, "Where the idempotency claims
    /// are kept"); the price is the claim's memory for every incident held beyond a week.
    /// Replicas with and without it can run side by side.
    pub fn with_claims_kept(mut self, on: bool) -> Self {
        self.claims_kept = on;
        self
    }

    /// The expiry of a new idempotency claim, in seconds (0: none, see
    /// [`Store::with_claims_kept`]).
    pub(crate) fn claim_ttl(&self) -> u64 {
        if self.claims_kept {
            0
        } else {
            ingest::IDEMPOTENCY_TTL_SECS
        }
    }

    /// Makes the transactions (`--transactions`) write region index entries only for the
    /// first `depth` levels of a grid's path (0: every level, the default), the last of them
    /// naming each incident under its finer codes (`<community>|<grid> <id>` instead of
    /// `i <id>`): one entry per street and batch instead of one per grid and community. Lists
    /// and figures of a finer region then also read that level's index (`query`), from the time
    /// [`Store::record_region_index_depth`] recorded: call it before writing.
    pub fn with_region_index_depth(mut self, depth: usize) -> Self {
        self.region_index_depth = depth;
        self
    }

    /// Records the region index depth in the deployment's `meta` hash, with the time it began
    /// (readers of a finer region read the level's index from then on), before anything is
    /// written with it. The first replica's depth stays: a replica asked for another one is
    /// refused, since readers would look for a region's incidents at the wrong level. Nothing
    /// to record with depth 0, or without transactions (the scripts write every level).
    pub async fn record_region_index_depth(&self) -> Result<()> {
        let depth = self.region_index_depth;
        if depth == 0 || !self.transactions() {
            return Ok(());
        }
        let k = self.keys();
        let now = self.server_time_ms().await?;
        let (recorded,): (usize,) = redis::pipe()
            .cmd("HSETNX")
            .arg(k.meta())
            .arg(query::META_REGION_DEPTH)
            .arg(depth)
            .ignore()
            .cmd("HSETNX")
            .arg(k.meta())
            .arg(query::META_REGION_SINCE)
            .arg(now)
            .ignore()
            .cmd("HGET")
            .arg(k.meta())
            .arg(query::META_REGION_DEPTH)
            .query_async(&mut self.conn())
            .await?;
        if recorded != depth {
            return Err(StoreError::Internal(format!(
                "this deployment indexes regions to depth {recorded}; --region-index-depth {depth} would index them where readers do not look"
            )));
        }
        tracing::info!(depth, "region index entries written down to this level");
        Ok(())
    }

    /// The key layout.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Whether the store is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.target.is_cluster()
    }

    /// A multiplexed connection for ordinary commands.
    pub(crate) fn conn(&self) -> conn::Conn {
        self.conn.clone()
    }

    /// The client of a single Redis, for pub/sub (none on a cluster).
    pub(crate) fn single_client(&self) -> Option<&redis::Client> {
        self.target.single()
    }

    /// A dedicated connection for blocking reads (XREAD BLOCK would stall a shared one). Its
    /// response timeout is longer than any block it issues, so that no reply is ever dropped
    /// while entries are in flight.
    pub(crate) async fn blocking_conn(&self, block: Duration) -> Result<conn::Conn> {
        self.target.blocking(block).await
    }

    /// Runs a pipeline whose commands may live in different partitions. On one Redis it goes as
    /// it is; on a cluster (where a pipeline must stay in one hash slot) it is split by hash
    /// tag into pipelines sent concurrently, and the answers come back in the original order.
    /// With `ignore_errors`, a failing command yields a `ServerError` value in its place.
    pub(crate) async fn raw_pipe(
        &self,
        pipe: &redis::Pipeline,
        ignore_errors: bool,
    ) -> redis::RedisResult<Vec<redis::Value>> {
        let mut c = self.conn();
        if !self.target.is_cluster() {
            if ignore_errors {
                // The raw answers, a failing command's `ServerError` in its place, without
                // copying the pipeline (its arguments can be megabytes for a batch).
                return redis::aio::ConnectionLike::req_packed_commands(
                    &mut c,
                    pipe,
                    0,
                    pipe.len(),
                )
                .await;
            }
            return pipe.query_async(&mut c).await;
        }
        let cmds: Vec<&redis::Cmd> = pipe.cmd_iter().collect();
        let mut groups: std::collections::BTreeMap<Vec<u8>, Vec<usize>> = Default::default();
        for (i, cmd) in cmds.iter().enumerate() {
            groups.entry(hash_tag(cmd)).or_default().push(i);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (_, idx) in groups {
            let mut p = redis::pipe();
            if ignore_errors {
                p.ignore_errors();
            }
            for &i in &idx {
                p.add_command(cmds[i].clone());
            }
            let mut c = c.clone();
            tasks.spawn(async move { (idx, p.query_async::<Vec<redis::Value>>(&mut c).await) });
        }
        let mut out = vec![redis::Value::Nil; cmds.len()];
        while let Some(done) = tasks.join_next().await {
            let (idx, values) =
                done.map_err(|e| redis::RedisError::from(std::io::Error::other(e.to_string())))?;
            for (i, v) in idx.into_iter().zip(values?) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// [`Self::raw_pipe`] with every answer converted to `T`.
    pub(crate) async fn query_pipe<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<Vec<T>> {
        self.raw_pipe(pipe, false)
            .await?
            .into_iter()
            .map(decoded)
            .collect()
    }

    /// Round trip to Redis, for health checks.
    pub async fn ping(&self) -> Result<()> {
        let mut c = self.conn();
        let _: String = redis::cmd("PING").query_async(&mut c).await?;
        Ok(())
    }

    /// Redis' memory: (`used_memory`, `maxmemory`, 0 = no limit) in bytes, from `INFO memory`
    /// of the node the connection reaches (on Redis Cluster, one node: watch every primary
    /// with a Redis exporter there).
    pub async fn memory_stats(&self) -> Result<(u64, u64)> {
        let mut c = self.conn();
        let info: String = redis::cmd("INFO").arg("memory").query_async(&mut c).await?;
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        Ok((field("used_memory"), field("maxmemory")))
    }

    /// Redis server time in milliseconds: the one clock every replica agrees on.
    pub async fn server_time_ms(&self) -> Result<i64> {
        Ok(self.read_clock().await?.server_us / 1000)
    }

    /// Redis server time in milliseconds without a round trip per call: the last reading of
    /// `TIME` (at most [`CLOCK_RESAMPLE`] old) plus the host's monotonic time since, accurate
    /// to half a round trip. The router stamps every batch with it: a `TIME` per batch was one
    /// of the round trips each incident paid alone at moderate rates.
    pub async fn clock_ms(&self) -> Result<i64> {
        let sample = self.clock_sample().await?;
        Ok((sample.server_us + sample.at.elapsed().as_micros() as i64) / 1000)
    }

    /// [`Store::clock_ms`] at its earliest: Redis' clock is at or past it (half the reading's
    /// round trip earlier than the estimate).
    pub(crate) async fn clock_floor_ms(&self) -> Result<i64> {
        let s = self.clock_sample().await?;
        Ok((s.server_us + s.at.elapsed().as_micros() as i64 - s.half_rtt_us) / 1000)
    }

    /// The last reading of Redis' clock, read again when older than [`CLOCK_RESAMPLE`].
    async fn clock_sample(&self) -> Result<ClockSample> {
        let last = *self.clock.lock().unwrap_or_else(|e| e.into_inner());
        Ok(match last {
            Some(s) if s.at.elapsed() < CLOCK_RESAMPLE => s,
            _ => {
                let s = self.read_clock().await?;
                *self.clock.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
                s
            }
        })
    }

    /// One reading of Redis' clock.
    async fn read_clock(&self) -> Result<ClockSample> {
        let mut c = self.conn();
        let sent = std::time::Instant::now();
        let (s, us): (i64, i64) = redis::cmd("TIME").query_async(&mut c).await?;
        let rtt = sent.elapsed();
        Ok(ClockSample {
            server_us: s * 1_000_000 + us,
            at: sent + rtt / 2,
            half_rtt_us: (rtt / 2).as_micros() as i64 + 1,
        })
    }
}

pub(crate) fn record_error(op: &'static str, e: &StoreError) {
    metrics::counter!(gridroute_telemetry::names::REDIS_ERRORS_TOTAL, "op" => op).increment(1);
    tracing::debug!(op, error = %e, "redis operation failed");
}

/// A reply converted to `T`; a reply of another shape is an internal error.
pub(crate) fn decoded<T: redis::FromRedisValue>(v: redis::Value) -> Result<T> {
    redis::from_redis_value(v).map_err(|e| StoreError::Internal(e.to_string()))
}
