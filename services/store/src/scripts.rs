//! The Lua scripts and how they run. Each script touches the keys of one partition only (one
//! hash slot), so it is atomic on a single Redis and on Redis Cluster. Scripts are loaded once
//! per process and called by SHA inside pipelines; a call that finds the server's script cache
//! empty (restart, failover, a new cluster node) loads them and is sent again.
//!
//! What the scripts know of the lifecycle comes from the core, as arguments: no state name,
//! transition or protobuf layout is written in Lua.

use std::sync::OnceLock;

use redis::Script;

use crate::{Result, Store, StoreError};

/// A script with the name its metrics and errors use.
pub struct Named {
    /// The file name without `.lua`.
    pub name: &'static str,
    code: &'static str,
    script: OnceLock<Script>,
}

impl Named {
    const fn new(name: &'static str, code: &'static str) -> Self {
        Self {
            name,
            code,
            script: OnceLock::new(),
        }
    }

    /// Its Lua source.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The SHA-1 it is called by.
    pub fn hash(&self) -> &str {
        self.script
            .get_or_init(|| Script::new(self.code))
            .get_hash()
    }
}

impl std::fmt::Debug for Named {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.lua", self.name)
    }
}

macro_rules! scripts {
    ($($(#[$doc:meta])* $id:ident = $file:literal $(after $prelude:literal)?;)*) => {
        $(
            $(#[$doc])*
            pub static $id: Named = Named::new(
                $file,
                concat!(
                    $(include_str!(concat!("lua/", $prelude, ".lua")),)?
                    include_str!(concat!("lua/", $file, ".lua"))
                ),
            );
        )*
        /// Every script, for loading.
        pub static ALL: &[&Named] = &[$(&$id),*];
    };
}

scripts! {
    /// Accept a batch of reports (and dispatch those routed inline).
    REPORT = "report" after "batch_index";
    /// Dispatch a batch of routed entries.
    DISPATCH = "dispatch" after "batch_index";
    /// Move an entry to the dead-letter stream.
    DEAD_LETTER = "dead_letter";
    /// Apply a planned lifecycle change if the record is unchanged.
    APPLY = "apply";
    /// Publish a routing table version.
    PUBLISH_TABLE = "publish_table";
    /// Claim the due SLA timers of a partition.
    CLAIM_TIMERS = "claim_timers";
    /// Mark a routed entry as merged into an open incident (the duplicate's side).
    MERGE_ENTRY = "merge_entry";
    /// Trim a stream to its retention window, remembering where.
    TRIM_STREAM = "trim_stream";
    /// Trim an ingest stream's acknowledged entries from its head.
    TRIM_ACKED = "trim_acked";
    /// Remove an archived incident if its record is unchanged.
    REMOVE_ARCHIVED = "remove_archived";
    /// Fold a reporter's points ledger past its newest entries into a carried total.
    FOLD_POINTS = "fold_points";
}

/// Appends `EVALSHA` of `script` to a pipeline. Pipelines cannot fall back to EVAL by
/// themselves: [`Store::run_scripts`] loads the scripts and retries once on `NOSCRIPT`.
pub(crate) fn evalsha(pipe: &mut redis::Pipeline, script: &Named, keys: &[String], args: &[&[u8]]) {
    let size = Size::of(keys) + Size::of(args);
    let mut cmd = evalsha_cmd(script, keys.len(), size);
    for k in keys {
        cmd.arg(k);
    }
    for a in args {
        cmd.arg(*a);
    }
    pipe.add_command(cmd);
}

/// `EVALSHA <script> <numkeys>`, for a caller that writes its `numkeys` keys and then its
/// arguments into it and then adds it to a pipeline. `size` is about how many arguments
/// (keys included) and bytes the caller will write: the command's buffers are allocated once
/// at that size, where growing them as a batch of a hundred incidents fills them copied the
/// whole call several times over (docs/PERFORMANCE.md).
pub(crate) fn evalsha_cmd(script: &Named, numkeys: usize, size: Size) -> redis::Cmd {
    let mut cmd = redis::Cmd::with_capacity(size.args + 3, size.bytes + 64);
    cmd.arg("EVALSHA").arg(script.hash()).arg(numkeys);
    cmd
}

/// [`evalsha_cmd`] written in RESP, for the router's own connection (`resp::RespCall`).
pub(crate) fn evalsha_resp(script: &Named, numkeys: usize, size: Size) -> crate::resp::RespCall {
    use redis::{RedisWrite, ToRedisArgs};
    let mut call = crate::resp::RespCall::with_capacity(size.args + 3, size.bytes + 64);
    call.write_arg(b"EVALSHA");
    call.write_arg(script.hash().as_bytes());
    numkeys.write_redis_args(&mut call);
    call
}

/// About how many arguments and bytes a part of a command writes (see [`evalsha_cmd`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Size {
    pub args: usize,
    pub bytes: usize,
}

impl Size {
    /// One argument of `bytes` bytes.
    pub fn arg(bytes: usize) -> Self {
        Self { args: 1, bytes }
    }

    /// The arguments `args`, as they are.
    pub fn of<T: AsRef<[u8]>>(args: &[T]) -> Self {
        args.iter().map(|a| Self::arg(a.as_ref().len())).sum()
    }
}

impl std::ops::Add for Size {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self {
            args: self.args + o.args,
            bytes: self.bytes + o.bytes,
        }
    }
}

impl std::iter::Sum for Size {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::default(), |a, b| a + b)
    }
}

/// Loads every script into the server's script cache (after a restart or a failover the cache
/// is empty).
pub(crate) async fn ensure_loaded(
    conn: &mut impl redis::aio::ConnectionLike,
) -> redis::RedisResult<()> {
    // One command each: on a cluster, SCRIPT LOAD goes to every primary, which a pipeline
    // (routed as a unit) would not do.
    for s in ALL {
        redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(s.code)
            .query_async::<()>(conn)
            .await?;
    }
    Ok(())
}

impl Store {
    /// Runs a pipeline of EVALSHA calls and returns one result per call: a script that fails
    /// fails alone (its neighbours in the pipeline ran). Calls that found the server's script
    /// cache empty (restart, failover, a new cluster node) are sent again once, after loading
    /// the scripts. The outer error means the pipeline as a whole did not get an answer (Redis
    /// unreachable). On a cluster the calls go out as one pipeline per partition.
    pub(crate) async fn run_scripts<T: redis::FromRedisValue>(
        &self,
        pipe: &mut redis::Pipeline,
        op: &'static str,
    ) -> Result<Vec<Result<T>>> {
        self.run_calls(pipe, op, None).await
    }

    /// [`Self::run_scripts`] for calls of either form ([`Calls`]), over the router's own
    /// connection when `direct` is given.
    pub(crate) async fn run_calls<T: redis::FromRedisValue, C: Calls>(
        &self,
        calls: &C,
        op: &'static str,
        mut direct: Option<&mut crate::resp::Direct>,
    ) -> Result<Vec<Result<T>>> {
        let started = std::time::Instant::now();
        let mut values = calls
            .send(self, direct.as_deref_mut())
            .await
            .inspect_err(|e| crate::record_error(op, e))?;
        let noscript =
            |v: &redis::Value| matches!(v, redis::Value::ServerError(e) if e.code() == "NOSCRIPT");
        if values.iter().any(noscript) {
            let mut c = self.conn();
            ensure_loaded(&mut c).await.map_err(StoreError::from)?;
            let again: Vec<usize> = (0..values.len())
                .filter(|&i| noscript(&values[i]))
                .collect();
            let answers = calls
                .subset(&again)
                .send(self, direct)
                .await
                .inspect_err(|e| crate::record_error(op, e))?;
            for (i, v) in again.into_iter().zip(answers) {
                values[i] = v;
            }
        }
        metrics::histogram!(gridroute_telemetry::names::REDIS_DURATION_SECONDS, "op" => op)
            .record(started.elapsed().as_secs_f64());
        Ok(values
            .into_iter()
            .map(|v| {
                match v {
                    redis::Value::ServerError(e) => {
                        Err(StoreError::from(redis::RedisError::from(e)))
                    }
                    v => crate::decoded(v),
                }
                .inspect_err(|e| crate::record_error(op, e))
            })
            .collect())
    }

    /// Runs batched script calls: `groups` are the partition and the members (indexes into the
    /// caller's items) of each call, and `build` appends the call for a group to a pipeline. Each call answers
    /// with one `T` per member. A call that fails (a script error stops the whole script) is
    /// run again one member per call, so that one bad member fails alone and its neighbours,
    /// written or not, get their own answer (the scripts are idempotent). Returns one result
    /// per item; `items` is how many there are.
    /// Calls of either form ([`Calls`]); over the router's own connection when `direct` is
    /// given.
    pub(crate) async fn run_batched<T: redis::FromRedisValue, C: Calls>(
        &self,
        op: &'static str,
        items: usize,
        groups: Vec<(u16, Vec<usize>)>,
        mut direct: Option<&mut crate::resp::Direct>,
        build: impl Fn(&mut C, u16, &[usize]),
    ) -> Result<Vec<Result<T>>> {
        let mut out: Vec<Option<Result<T>>> = (0..items).map(|_| None).collect();
        let mut pending = groups;
        for round in 0..2 {
            if pending.is_empty() {
                break;
            }
            let mut calls = C::default();
            for (p, members) in &pending {
                build(&mut calls, *p, members);
            }
            let replies: Vec<Result<Vec<T>>> =
                self.run_calls(&calls, op, direct.as_deref_mut()).await?;
            let mut again = Vec::new();
            for ((p, members), reply) in pending.into_iter().zip(replies) {
                match reply {
                    Ok(answers) if answers.len() == members.len() => {
                        for (i, a) in members.into_iter().zip(answers) {
                            out[i] = Some(Ok(a));
                        }
                    }
                    Err(_) if round == 0 && members.len() > 1 => {
                        again.extend(members.into_iter().map(|i| (p, vec![i])));
                    }
                    other => {
                        let e = match other {
                            Err(e) => e,
                            Ok(a) => StoreError::Internal(format!(
                                "{} answers for {} members",
                                a.len(),
                                members.len()
                            )),
                        };
                        // Every member gets the same kind of error (what the caller should do
                        // about it), with the same text.
                        let why = e.to_string();
                        for i in members {
                            out[i] = Some(Err(match e {
                                StoreError::Unavailable(_) => StoreError::Unavailable(why.clone()),
                                StoreError::Full(_) => StoreError::Full(why.clone()),
                                _ => StoreError::Internal(why.clone()),
                            }));
                        }
                    }
                }
            }
            pending = again;
        }
        Ok(out
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(StoreError::Internal("no answer".into()))))
            .collect())
    }

    /// Runs a single script call through [`Self::run_scripts`].
    pub(crate) async fn run_script<T: redis::FromRedisValue>(
        &self,
        pipe: &mut redis::Pipeline,
        op: &'static str,
    ) -> Result<T> {
        self.run_scripts(pipe, op)
            .await?
            .pop()
            .unwrap_or_else(|| Err(StoreError::Internal("empty reply".into())))
    }
}

/// The script calls of one round trip: `redis::Cmd`s in a pipeline (sent on any connection),
/// or commands written in RESP for the router's own connection (`resp::RespCall`).
pub(crate) trait Calls: Default {
    /// The calls at `indexes`, to send again.
    fn subset(&self, indexes: &[usize]) -> Self;

    /// Sends the calls; one reply each, a failed call's `ServerError` in its place.
    async fn send(
        &self,
        store: &Store,
        direct: Option<&mut crate::resp::Direct>,
    ) -> Result<Vec<redis::Value>>;
}

impl Calls for redis::Pipeline {
    fn subset(&self, indexes: &[usize]) -> Self {
        let cmds: Vec<&redis::Cmd> = self.cmd_iter().collect();
        let mut p = redis::pipe();
        for &i in indexes {
            p.add_command(cmds[i].clone());
        }
        p
    }

    async fn send(
        &self,
        store: &Store,
        _: Option<&mut crate::resp::Direct>,
    ) -> Result<Vec<redis::Value>> {
        store.raw_pipe(self, true).await.map_err(StoreError::from)
    }
}

impl Calls for Vec<crate::resp::RespCall> {
    fn subset(&self, indexes: &[usize]) -> Self {
        indexes.iter().map(|&i| self[i].clone()).collect()
    }

    async fn send(
        &self,
        _: &Store,
        direct: Option<&mut crate::resp::Direct>,
    ) -> Result<Vec<redis::Value>> {
        let direct = direct.ok_or_else(|| {
            StoreError::Internal("commands written for a connection of its own, without one".into())
        })?;
        let bytes: Vec<&[u8]> = self.iter().map(crate::resp::RespCall::bytes).collect();
        direct.send(&bytes).await
    }
}

/// Groups items by partition (one script call touches one partition, one hash slot) in
/// chunks of at most `per_call`: the groups [`Store::run_batched`] takes.
pub(crate) fn partition_groups(
    partitions: impl Iterator<Item = u16>,
    per_call: usize,
) -> Vec<(u16, Vec<usize>)> {
    let mut by_partition: std::collections::BTreeMap<u16, Vec<usize>> = Default::default();
    for (i, p) in partitions.enumerate() {
        by_partition.entry(p).or_default().push(i);
    }
    by_partition
        .into_iter()
        .flat_map(|(p, members)| {
            members
                .chunks(per_call)
                .map(|c| (p, c.to_vec()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use gridroute_core::{lifecycle::Status, sla::TimerKind};

    use super::ALL;

    /// The lifecycle lives in the core: a script that named a state, a timer kind or encoded a
    /// protobuf field would be a second copy that can drift (as `merge_into.lua` once did).
    #[test]
    fn no_script_knows_states_timer_kinds_or_protobuf_layouts() {
        let timer_kinds = [
            TimerKind::Accept,
            TimerKind::Warn(50),
            TimerKind::Urge,
            TimerKind::Supervise(1),
            TimerKind::PublicReport,
            TimerKind::Verify,
        ]
        .map(|k| k.name().trim_end_matches(char::is_numeric).to_owned());
        for s in ALL {
            let code = s.code();
            for status in Status::ALL {
                for quoted in [
                    format!("'{}'", status.as_str()),
                    format!("\"{}\"", status.as_str()),
                ] {
                    assert!(!code.contains(&quoted), "{s:?} names the state {quoted}");
                }
            }
            for kind in &timer_kinds {
                for named in [
                    format!("'{kind}'"),
                    format!("|{kind}|"),
                    format!("{kind} = {{"),
                ] {
                    assert!(!code.contains(&named), "{s:?} names the timer kind {named}");
                }
            }
            for encoding in ["string.char", "varint", "struct.pack", "cmsgpack"] {
                assert!(
                    !code.contains(encoding),
                    "{s:?} encodes bytes by hand ({encoding})"
                );
            }
        }
    }
}
