//! The Lua scripts, loaded once per process and called by SHA. Each touches the keys of one
//! partition only (one hash slot), so it is atomic on a single Redis and on Redis Cluster.

use std::sync::LazyLock;

use redis::Script;

const SOURCES: [&str; 8] = [
    include_str!("lua/report.lua"),
    include_str!("lua/dispatch.lua"),
    include_str!("lua/dead_letter.lua"),
    include_str!("lua/apply.lua"),
    include_str!("lua/publish_table.lua"),
    include_str!("lua/fire_timers.lua"),
    include_str!("lua/merge_into.lua"),
    include_str!("lua/merge_entry.lua"),
];

/// Accept a report.
pub static REPORT: LazyLock<Script> = LazyLock::new(|| Script::new(SOURCES[0]));
/// Dispatch a routed entry.
pub static DISPATCH: LazyLock<Script> = LazyLock::new(|| Script::new(SOURCES[1]));
/// Move an entry to the dead-letter stream.
pub static DEAD_LETTER: LazyLock<Script> = LazyLock::new(|| Script::new(SOURCES[2]));
/// Apply a planned lifecycle change if the record is unchanged.
pub static APPLY: LazyLock<Script> = LazyLock::new(|| Script::new(SOURCES[3]));
/// Publish a routing table version.
pub static PUBLISH_TABLE: LazyLock<Script> = LazyLock::new(|| Script::new(SOURCES[4]));
/// Fire the due timers of a partition.
pub static FIRE_TIMERS: LazyLock<Script> = LazyLock::new(|| Script::new(SOURCES[5]));
/// Merge a duplicate into an open incident (the open incident's side).
pub static MERGE_INTO: LazyLock<Script> = LazyLock::new(|| Script::new(SOURCES[6]));
/// Mark a routed entry as merged (the duplicate's side).
pub static MERGE_ENTRY: LazyLock<Script> = LazyLock::new(|| Script::new(SOURCES[7]));

/// Appends `EVALSHA` of `script` to a pipeline. Pipelines cannot fall back to EVAL by
/// themselves, so callers run [`ensure_loaded`] first and retry once on `NOSCRIPT`.
pub(crate) fn evalsha(
    pipe: &mut redis::Pipeline,
    script: &Script,
    keys: &[String],
    args: &[&[u8]],
) {
    let cmd = pipe.cmd("EVALSHA").arg(script.get_hash()).arg(keys.len());
    for k in keys {
        cmd.arg(k);
    }
    for a in args {
        cmd.arg(*a);
    }
}

/// Loads every script into the server's script cache (after a restart or a failover the cache
/// is empty).
pub(crate) async fn ensure_loaded(
    conn: &mut impl redis::aio::ConnectionLike,
) -> redis::RedisResult<()> {
    // One command each: on a cluster, SCRIPT LOAD goes to every primary, which a pipeline
    // (routed as a unit) would not do.
    for code in SOURCES {
        redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(code)
            .query_async::<()>(conn)
            .await?;
    }
    Ok(())
}
