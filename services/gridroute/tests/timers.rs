//! SLA timers follow the deadlines they belong to, whatever moved them: a merge that brings a
//! case's resolve deadline forward brings its urge forward with it.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::{Duration, Instant};

use common::{Env, grid_point, report};
use gridroute_proto::v1 as pb;

/// Duplicates of `test.dup` merge; normal reports get 8 s to resolve with a warning at half
/// time (4 s: the head of the schedule, ahead of the urge), critical ones 2 s (the rule written
/// first wins a tie), both with an urge at the deadline.
fn rules() -> String {
    gridroute_benches::DAWUKOU_RULES
        .replace(
            "sla_policies:\n",
            "sla_policies:\n  test_slow: {accept: 1h, resolve: 8s, verify: 1h, warn_at: [50], escalation: [{step: urge, after: '0'}]}\n  test_fast: {accept: 1h, resolve: 2s, verify: 1h, warn_at: [], escalation: [{step: urge, after: '0'}]}\n",
        )
        .replace(
            "rules:\n",
            "rules:\n  - id: dup-fast\n    category: test.dup\n    urgencies: [critical]\n    department: water-affairs\n    sla: test_fast\n  - id: dup-slow\n    category: test.dup\n    department: water-affairs\n    sla: test_slow\n",
        )
        .replace(
            "# duplicates:\n#   - {category: city.vehicle.abandoned, within_m: 50, window: 24h}",
            "duplicates:\n  - {category: test.dup, within_m: 50, window: 24h}",
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_that_moves_the_deadline_forward_moves_the_urge_with_it() {
    let env = Env::with_rules(&rules()).await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let mut water = env.subscribe("water-affairs").await;
    let a = env.report(report("m-slow", "test.dup", lng, lat)).await;
    let first = env.wait_status(&a, pb::IncidentStatus::Dispatched).await;
    let old_due = first.resolve_deadline.unwrap().seconds;
    let mut critical = report("m-fast", "test.dup", lng, lat);
    critical.urgency = pb::Urgency::Critical as i32;
    let b = env.report(critical).await;
    env.wait_status(&b, pb::IncidentStatus::Merged).await;
    let merged = env.wait_status(&a, pb::IncidentStatus::Dispatched).await;
    assert_eq!(merged.merged_incident_ids, std::slice::from_ref(&b));
    let new_due = merged.resolve_deadline.unwrap();
    assert!(
        new_due.seconds < old_due,
        "the merge kept the earlier deadline"
    );
    // The urge of the case arrives at its new deadline, not at the old one.
    let started = Instant::now();
    let urge = loop {
        let d = tokio::time::timeout(Duration::from_secs(15), water.message())
            .await
            .expect("the urge arrives")
            .unwrap()
            .unwrap();
        if d.kind == pb::DispatchKind::Urge as i32 {
            break d;
        }
    };
    assert_eq!(urge.incident_id, a);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let new_due_s = new_due.seconds as f64 + f64::from(new_due.nanos) / 1e9;
    assert!(
        now - new_due_s < 1.5 && (old_due as f64) - now > 3.0,
        "urge {:.1} s after the new deadline, {:.1} s before the old one (waited {:?})",
        now - new_due_s,
        old_due as f64 - now,
        started.elapsed()
    );
}

/// A replica that claimed a due timer and stopped before applying it leaves a claim; when the
/// claim lapses another replica fires the timer, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_claimed_by_a_replica_that_stopped_fires_once_its_claim_lapses() {
    let mut env = Env::with_rules(&rules()).await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let mut water = env.subscribe("water-affairs").await;
    let mut fast = report("claim-1", "test.dup", lng, lat);
    fast.urgency = pb::Urgency::Critical as i32;
    let id = env.report(fast).await;
    env.wait_status(&id, pb::IncidentStatus::Dispatched).await;
    // The replica stops; what it claimed just before stays claimed for the rest of its lease.
    env.stop_routers().await;
    let p = gridroute_store::keys::partition_of(&id, env.store.keys().partitions()).unwrap();
    let (sla, claimed) = (env.store.keys().sla(p), env.store.keys().sla_claimed(p));
    let mut c = env.redis().await;
    let member = format!("{id}|urge|water-affairs");
    let due: f64 = redis::cmd("ZSCORE")
        .arg(&sla)
        .arg(&member)
        .query_async(&mut c)
        .await
        .unwrap();
    let now = env.store.server_time_ms().await.unwrap();
    let lapses = now + 4_000;
    let _: () = redis::pipe()
        .atomic()
        .zrem(&sla, &member)
        .zadd(&claimed, &member, lapses)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(
        env.store.pending_timers().await.unwrap(),
        1,
        "a claim is still pending"
    );
    env.spawn_router(common::fast_router("after"));
    let urge = loop {
        let d = tokio::time::timeout(Duration::from_secs(15), water.message())
            .await
            .expect("the urge arrives after the claim lapses")
            .unwrap()
            .unwrap();
        if d.kind == pb::DispatchKind::Urge as i32 {
            break d;
        }
    };
    assert_eq!(urge.incident_id, id);
    let fired_at = env.store.server_time_ms().await.unwrap();
    assert!(
        fired_at >= lapses && (fired_at as f64) > due,
        "fired at {fired_at}, claim lapsed at {lapses}, due {due}"
    );
    // Once: no second urge, and nothing left claimed or pending.
    let again = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            let d = water.message().await.unwrap().unwrap();
            if d.kind == pb::DispatchKind::Urge as i32 {
                return d;
            }
        }
    })
    .await;
    assert!(again.is_err(), "the urge fired twice");
    let left: Vec<String> = redis::cmd("ZRANGE")
        .arg(&claimed)
        .arg(0)
        .arg(-1)
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(left.is_empty(), "claims left: {left:?}");
    let next: Vec<String> = redis::cmd("ZRANGE")
        .arg(&sla)
        .arg(0)
        .arg(-1)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(
        next,
        [format!("{id}|accept|water-affairs")],
        "the next step is the head"
    );
    let inc = env.wait_status(&id, pb::IncidentStatus::Dispatched).await;
    let urged = inc.timeline.iter().filter(|e| e.kind == "urged").count();
    assert_eq!(urged, 1, "{:?}", inc.timeline);
}

/// A parking report in a grid, once dispatched: its incident id and partition.
async fn dispatched(env: &Env, request_id: &str) -> (String, u16) {
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let id = env
        .report(report(request_id, "city.vehicle.illegal_parking", lng, lat))
        .await;
    env.wait_status(&id, pb::IncidentStatus::Dispatched).await;
    let p = gridroute_store::keys::partition_of(&id, common::PARTITIONS).unwrap();
    (id, p)
}

/// The score of `member` in the sorted set `key`.
async fn score(c: &mut redis::aio::MultiplexedConnection, key: &str, member: &str) -> Option<f64> {
    redis::cmd("ZSCORE")
        .arg(key)
        .arg(member)
        .query_async(c)
        .await
        .unwrap()
}

/// Waits until the router's timer loop (every 50 ms) has claimed `member`, then checks that it
/// is still claimed a while later: not released, which would drop it.
async fn stays_claimed(c: &mut redis::aio::MultiplexedConnection, claimed: &str, member: &str) {
    let mut seen = false;
    for _ in 0..60 {
        if score(c, claimed, member).await.is_some() {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen, "{member} was claimed");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        score(c, claimed, member).await.is_some(),
        "{member}'s claim was released: the step would be lost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_written_by_a_newer_release_is_left_claimed_not_dropped() {
    let env = Env::start().await;
    let (id, p) = dispatched(&env, "newer-1").await;
    let k = env.store.keys();
    let (sla, claimed, record) = (k.sla(p), k.sla_claimed(p), k.incident(p, &id));
    let mut c = env.redis().await;
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(&sla)
        .arg(0)
        .arg(-1)
        .query_async(&mut c)
        .await
        .unwrap();
    let head = members.into_iter().find(|m| m.starts_with(&id)).unwrap();
    // A step this release does not know (as a rolling upgrade's newer replica may write), and
    // the head due now.
    let schedule: String = redis::cmd("HGET")
        .arg(&record)
        .arg("timers")
        .query_async(&mut c)
        .await
        .unwrap();
    // The first step is written whole (`kind|department|due`): due at once.
    let (first, rest) = schedule.split_once(',').unwrap_or((&schedule, ""));
    let (step, _) = first.rsplit_once('|').unwrap();
    let newer = format!("{step}|1,{rest},z9||+10");
    // And a timer-set member of a kind this release does not know, due at once too.
    let unknown = format!("{id}|z9|command-centre");
    let _: () = redis::pipe()
        .cmd("HSET")
        .arg(&record)
        .arg("timers")
        .arg(&newer)
        .ignore()
        .cmd("ZADD")
        .arg(&sla)
        .arg(1)
        .arg(&head)
        .arg(1)
        .arg(&unknown)
        .ignore()
        .query_async(&mut c)
        .await
        .unwrap();
    // Both are claimed and left claimed: the claims lapse and a replica that reads them fires
    // them. Nothing fired, nothing rewritten.
    stays_claimed(&mut c, &claimed, &head).await;
    stays_claimed(&mut c, &claimed, &unknown).await;
    let after: String = redis::cmd("HGET")
        .arg(&record)
        .arg("timers")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(
        after, newer,
        "the schedule was rewritten without the newer step"
    );
    let inc = env.wait_status(&id, pb::IncidentStatus::Dispatched).await;
    assert_eq!(inc.timeline.len(), 2, "{:?}", inc.timeline);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_its_record_does_not_hold_due_is_released_at_once() {
    let env = Env::start().await;
    let (id, p) = dispatched(&env, "stale-1").await;
    let k = env.store.keys();
    let (sla, claimed) = (k.sla(p), k.sla_claimed(p));
    let mut c = env.redis().await;
    // A member due now for a step the record's schedule does not have (left over, as after a
    // change of plan): nothing to fire, and nothing else in the round to apply.
    let stale = format!("{id}|verify|command-centre");
    let _: () = redis::cmd("ZADD")
        .arg(&sla)
        .arg(1)
        .arg(&stale)
        .query_async(&mut c)
        .await
        .unwrap();
    let mut released = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if score(&mut c, &sla, &stale).await.is_none()
            && score(&mut c, &claimed, &stale).await.is_none()
        {
            released = true;
            break;
        }
    }
    assert!(
        released,
        "the claim of a timer with nothing to fire was kept"
    );
}
