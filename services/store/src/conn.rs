//! One Redis or a Redis Cluster, behind one connection type.
//!
//! `redis://` / `rediss://` URLs name a single Redis (reconnecting `ConnectionManager`);
//! `redis+cluster://h1:p1,h2:p2/` / `rediss+cluster://…` name seed nodes of a Redis Cluster;
//! `redis+sentinel://s1:26379,s2:26379/<service>[/<db>]` / `rediss+sentinel://…` name the
//! Sentinels that know the primary of `<service>`: the primary is asked of them at start and
//! again whenever it stops taking writes (a failover), and the connection is swapped.
//! Every script touches one partition (one hash slot), so scripts run unchanged on a cluster;
//! what differs is pipelining: a cluster pipeline must stay in one slot, so commands over
//! several partitions go through [`Store::query_partitioned`](crate::Store), which sends one
//! pipeline per partition.

use std::{sync::Arc, time::Duration};

use redis::{
    Cmd, Pipeline, RedisFuture, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
};

use crate::{CONNECT_TIMEOUT, RESPONSE_TIMEOUT, Result, StoreError};

/// Where Redis is.
#[derive(Clone)]
pub(crate) enum Target {
    /// One server.
    Single(Box<redis::Client>),
    /// Seed nodes of a cluster.
    Cluster(Vec<String>),
    /// A primary found through Sentinel.
    Sentinel(Arc<SentinelTarget>),
}

/// Sentinels and what to ask them.
pub(crate) struct SentinelTarget {
    sentinels: Vec<String>,
    service: String,
    tls: bool,
    username: Option<String>,
    password: Option<String>,
    db: i64,
}

impl SentinelTarget {
    fn parse(rest: &str, tls: bool) -> Result<Self> {
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((a, r)) => (Some(a), r),
            None => (None, rest),
        };
        let mut parts = rest.split('/');
        let hosts = parts.next().unwrap_or("");
        let service = parts.next().unwrap_or("").to_owned();
        let db = parts
            .next()
            .filter(|d| !d.is_empty())
            .map(str::parse)
            .transpose();
        let (Ok(db), false, false) = (db, service.is_empty(), hosts.is_empty()) else {
            return Err(StoreError::Internal(
                "a Sentinel URL is redis+sentinel://host:port[,host:port]/<service>[/<db>]".into(),
            ));
        };
        let (username, password) = match auth.map(|a| a.split_once(':').unwrap_or(("", a))) {
            None => (None, None),
            Some((u, p)) => ((!u.is_empty()).then(|| u.to_owned()), Some(p.to_owned())),
        };
        let scheme = if tls { "rediss" } else { "redis" };
        Ok(Self {
            sentinels: hosts
                .split(',')
                .map(|h| format!("{scheme}://{h}/"))
                .collect(),
            service,
            tls,
            username,
            password,
            db: db.unwrap_or(0),
        })
    }

    /// A client of the current primary, as the Sentinels say.
    async fn primary(&self) -> Result<redis::Client> {
        use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
        let mut info = redis::RedisConnectionInfo::default().set_db(self.db);
        if let Some(u) = &self.username {
            info = info.set_username(u);
        }
        if let Some(p) = &self.password {
            info = info.set_password(p);
        }
        let mut node = SentinelNodeConnectionInfo::default().set_redis_connection_info(info);
        if self.tls {
            node = node.set_tls_mode(redis::TlsMode::Secure);
        }
        let mut sentinel = SentinelClient::build(
            self.sentinels.clone(),
            self.service.clone(),
            Some(node),
            SentinelServerType::Master,
        )?;
        Ok(sentinel.async_get_client().await?)
    }
}

fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(1))
}

impl Target {
    /// Parses a Redis URL (see the module documentation).
    pub(crate) fn parse(url: &str) -> Result<Self> {
        for (scheme, tls) in [("redis+sentinel://", false), ("rediss+sentinel://", true)] {
            if let Some(rest) = url.strip_prefix(scheme) {
                return Ok(Self::Sentinel(Arc::new(SentinelTarget::parse(rest, tls)?)));
            }
        }
        let cluster = [
            ("redis+cluster://", "redis://"),
            ("rediss+cluster://", "rediss://"),
        ]
        .into_iter()
        .find_map(|(scheme, node)| url.strip_prefix(scheme).map(|rest| (node, rest)));
        match cluster {
            Some((node, rest)) => {
                let (hosts, tail) = rest.split_once('/').unwrap_or((rest, ""));
                let (auth, hosts) = match hosts.rsplit_once('@') {
                    Some((a, h)) => (format!("{a}@"), h),
                    None => (String::new(), hosts),
                };
                let nodes: Vec<String> = hosts
                    .split(',')
                    .filter(|h| !h.is_empty())
                    .map(|h| format!("{node}{auth}{h}/{tail}"))
                    .collect();
                if nodes.is_empty() {
                    return Err(StoreError::Internal(format!("no cluster nodes in {url}")));
                }
                Ok(Self::Cluster(nodes))
            }
            None => Ok(Self::Single(Box::new(
                redis::Client::open(url).map_err(|e| StoreError::Internal(e.to_string()))?,
            ))),
        }
    }

    /// A shared, multiplexed connection with the default response timeout.
    pub(crate) async fn connect(&self) -> Result<Conn> {
        match self {
            Self::Single(client) => Ok(Conn::Single(
                ConnectionManager::new_with_config((**client).clone(), manager_config()).await?,
            )),
            Self::Cluster(_) => self.cluster(RESPONSE_TIMEOUT).await,
            Self::Sentinel(t) => {
                let client = t.primary().await?;
                let cm = ConnectionManager::new_with_config(client, manager_config()).await?;
                Ok(Conn::Sentinel(SentinelConn {
                    target: t.clone(),
                    current: Arc::new(arc_swap::ArcSwap::from_pointee(cm)),
                }))
            }
        }
    }

    /// A dedicated connection for blocking reads, whose response timeout outlasts `block`.
    /// Through Sentinel it goes to the primary of the moment; a reader whose connection fails
    /// reconnects and asks again.
    pub(crate) async fn blocking(&self, block: Duration) -> Result<Conn> {
        let client = match self {
            Self::Cluster(_) => return self.cluster(block + RESPONSE_TIMEOUT).await,
            Self::Single(c) => (**c).clone(),
            Self::Sentinel(t) => t.primary().await?,
        };
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(block + RESPONSE_TIMEOUT));
        Ok(Conn::Blocking(
            client
                .get_multiplexed_async_connection_with_config(&cfg)
                .await?,
        ))
    }

    /// The router's own connection for its ingest reads and dispatch calls (`resp`), where it
    /// serves this target: one Redis over plain TCP, directly or through Sentinel; `None`
    /// otherwise.
    pub(crate) async fn direct(&self, block: Duration) -> Result<Option<crate::resp::Direct>> {
        match self {
            Self::Cluster(_) => Ok(None),
            Self::Single(c) => crate::resp::Direct::connect(c.get_connection_info(), block).await,
            Self::Sentinel(t) => {
                let client = t.primary().await?;
                crate::resp::Direct::connect(client.get_connection_info(), block).await
            }
        }
    }

    /// A dedicated connection to one node of a cluster, for blocking reads of one hash slot's
    /// keys: to `at` (where a `MOVED` pointed), or else to the first seed that answers (which
    /// redirects when it does not hold the slot). Authentication and TLS are the seeds'.
    pub(crate) async fn cluster_node(
        &self,
        at: Option<&(String, u16)>,
        block: Duration,
    ) -> Result<MultiplexedConnection> {
        use redis::{ConnectionAddr, IntoConnectionInfo};
        let Self::Cluster(seeds) = self else {
            return Err(StoreError::Internal("not a cluster".into()));
        };
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(block + RESPONSE_TIMEOUT));
        let mut last = None;
        for seed in seeds {
            let mut info = seed.as_str().into_connection_info()?;
            if let Some((host, port)) = at {
                let addr = match info.addr().clone() {
                    ConnectionAddr::TcpTls {
                        insecure,
                        tls_params,
                        ..
                    } => ConnectionAddr::TcpTls {
                        host: host.clone(),
                        port: *port,
                        insecure,
                        tls_params,
                    },
                    _ => ConnectionAddr::Tcp(host.clone(), *port),
                };
                info = info.set_addr(addr);
            }
            match redis::Client::open(info)?
                .get_multiplexed_async_connection_with_config(&cfg)
                .await
            {
                Ok(c) => return Ok(c),
                Err(e) if at.is_none() => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map_or_else(
            || StoreError::Internal("no cluster seed".into()),
            Into::into,
        ))
    }

    async fn cluster(&self, response: Duration) -> Result<Conn> {
        let Self::Cluster(nodes) = self else {
            return Err(StoreError::Internal("not a cluster".into()));
        };
        let client = ClusterClient::builder(nodes.clone())
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(response)
            .build()?;
        Ok(Conn::Cluster(client.get_async_connection().await?))
    }

    /// Whether pipelines must stay within one partition.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// The client of a single Redis (pub/sub); none for a cluster or Sentinel (polling only).
    pub(crate) fn single(&self) -> Option<&redis::Client> {
        match self {
            Self::Single(c) => Some(&**c),
            Self::Cluster(_) | Self::Sentinel(_) => None,
        }
    }
}

/// A connection to one Redis or to a cluster.
#[derive(Clone)]
pub enum Conn {
    /// Shared, reconnecting connection to one Redis.
    Single(ConnectionManager),
    /// Dedicated connection to one Redis (blocking reads).
    Blocking(MultiplexedConnection),
    /// Cluster connection (routes each command or single-slot pipeline to its node).
    Cluster(ClusterConnection),
    /// The primary found through Sentinel, swapped after a failover.
    Sentinel(SentinelConn),
}

/// A connection to the primary of a Sentinel-managed Redis.
#[derive(Clone)]
#[allow(missing_debug_implementations)]
pub struct SentinelConn {
    target: Arc<SentinelTarget>,
    current: Arc<arc_swap::ArcSwap<ConnectionManager>>,
}

impl SentinelConn {
    /// After an error or a reply that means "this is no longer the primary" (a replica
    /// refusing writes, or the old primary gone), asks the Sentinels again and swaps the
    /// connection. The failed call still fails: callers retry (idempotently) as after any
    /// UNAVAILABLE. A refusal can come as an error or, for a single command or a pipeline, as a
    /// reply that holds it (`readonly` looks there): a primary demoted outside Sentinel keeps
    /// its clients connected and answers each write so.
    async fn after<T>(
        &self,
        r: redis::RedisResult<T>,
        readonly: impl Fn(&T) -> bool,
    ) -> redis::RedisResult<T> {
        // Why this is no longer the primary, and the metric's reason; `None`: it still is.
        let lost = match &r {
            Err(e) if e.code() == Some("READONLY") => Some((e.to_string(), "readonly")),
            Err(e) if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() => {
                Some((e.to_string(), "connection"))
            }
            Err(_) => None,
            Ok(v) => readonly(v).then(|| {
                (
                    "READONLY: the server is a replica now".to_owned(),
                    "readonly",
                )
            }),
        };
        if let Some((why, reason)) = lost {
            match self.target.primary().await {
                Ok(client) => {
                    if let Ok(cm) =
                        ConnectionManager::new_with_config(client, manager_config()).await
                    {
                        self.current.store(Arc::new(cm));
                        metrics::counter!(
                            gridroute_telemetry::names::REDIS_PRIMARY_CHANGES_TOTAL,
                            "reason" => reason
                        )
                        .increment(1);
                        tracing::warn!(error = %why, "redis primary changed: reconnected through Sentinel");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "Sentinel did not name a primary"),
            }
        }
        r
    }
}

/// Whether a reply is a replica's refusal of a write (`READONLY`).
fn readonly(v: &Value) -> bool {
    matches!(v, Value::ServerError(e) if e.code() == "READONLY")
}

impl Conn {
    /// Sends one command and returns its reply as it came; an error reply becomes an error.
    /// `query_async` also walks and rebuilds every value of the reply looking for nested
    /// errors, which only a transaction's or a script's reply can hold: for a stream read of a
    /// hundred entries that walk was about 6 % of the router's instructions
    /// (docs/PERFORMANCE.md).
    pub(crate) async fn reply(&mut self, cmd: &Cmd) -> redis::RedisResult<Value> {
        match self.req_packed_command(cmd).await? {
            Value::ServerError(e) => Err(e.into()),
            v => Ok(v),
        }
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Single(_) => "Conn::Single",
            Self::Blocking(_) => "Conn::Blocking",
            Self::Cluster(_) => "Conn::Cluster",
            Self::Sentinel(_) => "Conn::Sentinel",
        })
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Blocking(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
            Self::Sentinel(s) => Box::pin(async move {
                let mut cm = (**s.current.load()).clone();
                let r = cm.req_packed_command(cmd).await;
                s.after(r, readonly).await
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Blocking(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Sentinel(s) => Box::pin(async move {
                let mut cm = (**s.current.load()).clone();
                let r = cm.req_packed_commands(pipeline, offset, count).await;
                s.after(r, |replies: &Vec<Value>| replies.iter().any(readonly))
                    .await
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Blocking(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
            Self::Sentinel(s) => s.target.db,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_name_every_seed_node() {
        let Ok(Target::Cluster(nodes)) =
            Target::parse("rediss+cluster://user:pw@10.0.0.1:6379,10.0.0.2:6380/")
        else {
            panic!("a cluster URL")
        };
        assert_eq!(
            nodes,
            [
                "rediss://user:pw@10.0.0.1:6379/",
                "rediss://user:pw@10.0.0.2:6380/"
            ]
        );
        assert!(matches!(
            Target::parse("redis://127.0.0.1:6379/0"),
            Ok(Target::Single(_))
        ));
        assert!(Target::parse("redis+cluster:///").is_err());
        let Ok(Target::Sentinel(t)) =
            Target::parse("redis+sentinel://:secret@10.0.0.1:26379,10.0.0.2:26379/mymaster/2")
        else {
            panic!("a Sentinel URL")
        };
        assert_eq!(
            t.sentinels,
            ["redis://10.0.0.1:26379/", "redis://10.0.0.2:26379/"]
        );
        assert_eq!(
            (t.service.as_str(), t.db, t.password.as_deref()),
            ("mymaster", 2, Some("secret"))
        );
        assert!(
            Target::parse("redis+sentinel://10.0.0.1:26379/").is_err(),
            "no service"
        );
    }
}
