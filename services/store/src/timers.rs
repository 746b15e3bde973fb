//! Firing SLA timers. Timers are members of a sorted set per partition, scored by due time;
//! any replica may fire any of them. One script claims the due members and applies their
//! effects (timeline, events, notice to the department, flags on the record) with the Redis
//! clock, so each fires exactly once and a replica's own clock does not matter.

use crate::{
    EVENTS_MAX_LEN, Result, Store, StoreError, consumer::DISPATCH_STREAM_MAX_LEN, scripts,
};

/// One timer that took effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    /// Its kind, e.g. `warn50`, `urge`, `supervise1`.
    pub kind: String,
    /// The department notified.
    pub department: String,
    /// How late it fired after its due time, in ms.
    pub lateness_ms: i64,
}

impl Store {
    /// Fires up to `limit` due timers of a partition. Timers of incidents that moved on (a
    /// warning for a resolved case) are dropped without effect.
    pub async fn fire_due_timers(&self, partition: u16, limit: usize) -> Result<Vec<Fired>> {
        let k = self.keys();
        let mut pipe = redis::pipe();
        let prefix = k.partition_prefix(partition);
        scripts::evalsha(
            &mut pipe,
            &scripts::FIRE_TIMERS,
            &[k.sla(partition)],
            &[
                prefix.as_bytes(),
                limit.to_string().as_bytes(),
                DISPATCH_STREAM_MAX_LEN.to_string().as_bytes(),
                EVENTS_MAX_LEN.as_bytes(),
            ],
        );
        let flat: Vec<redis::Value> = self.run_script(&mut pipe, "fire_timers").await?;
        let text = |v: &redis::Value| match v {
            redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            redis::Value::SimpleString(s) => s.clone(),
            _ => String::new(),
        };
        flat.chunks(3)
            .map(|c| match c {
                [kind, dept, late] => Ok(Fired {
                    kind: text(kind),
                    department: text(dept),
                    lateness_ms: match late {
                        redis::Value::Int(n) => *n,
                        other => text(other).parse().unwrap_or(0),
                    },
                }),
                _ => Err(StoreError::Internal("fire_timers reply".into())),
            })
            .collect()
    }

    /// Pending timers over every partition.
    pub async fn pending_timers(&self) -> Result<u64> {
        let k = self.keys();
        let mut pipe = redis::pipe();
        for p in 0..k.partitions() {
            pipe.zcard(k.sla(p));
        }
        let counts: Vec<u64> = self.query_pipe(&pipe).await?;
        Ok(counts.into_iter().sum())
    }
}
