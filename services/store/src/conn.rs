//! One Redis or a Redis Cluster, behind one connection type.
//!
//! `redis://` / `rediss://` URLs name a single Redis (reconnecting `ConnectionManager`);
//! `redis+cluster://h1:p1,h2:p2/` / `rediss+cluster://…` name seed nodes of a Redis Cluster.
//! Every script touches one partition (one hash slot), so scripts run unchanged on a cluster;
//! what differs is pipelining: a cluster pipeline must stay in one slot, so commands over
//! several partitions go through [`Store::query_partitioned`](crate::Store), which sends one
//! pipeline per partition.

use std::time::Duration;

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
}

impl Target {
    /// Parses a Redis URL (see the module documentation).
    pub(crate) fn parse(url: &str) -> Result<Self> {
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
            Self::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_secs(1));
                Ok(Conn::Single(
                    ConnectionManager::new_with_config((**client).clone(), config).await?,
                ))
            }
            Self::Cluster(_) => self.cluster(RESPONSE_TIMEOUT).await,
        }
    }

    /// A dedicated connection for blocking reads, whose response timeout outlasts `block`.
    pub(crate) async fn blocking(&self, block: Duration) -> Result<Conn> {
        match self {
            Self::Single(client) => {
                let cfg = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(block + RESPONSE_TIMEOUT));
                Ok(Conn::Blocking(
                    client
                        .get_multiplexed_async_connection_with_config(&cfg)
                        .await?,
                ))
            }
            Self::Cluster(_) => self.cluster(block + RESPONSE_TIMEOUT).await,
        }
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

    /// The client of a single Redis (pub/sub); none for a cluster.
    pub(crate) fn single(&self) -> Option<&redis::Client> {
        match self {
            Self::Single(c) => Some(&**c),
            Self::Cluster(_) => None,
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
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Single(_) => "Conn::Single",
            Self::Blocking(_) => "Conn::Blocking",
            Self::Cluster(_) => "Conn::Cluster",
        })
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Blocking(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
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
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Blocking(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
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
    }
}
