//! The archive of closed incidents against a private PostgreSQL and a private redis-server:
//! the mover takes closed cases out of Redis (index entries too), and `GetIncident`,
//! `ListIncidents` and `GetStats` answer the same as before, with the same masking; a mover
//! killed mid-batch repeats nothing and skips nothing; a case that changes while it is moved
//! stays in Redis; contacts are erased in the archive when their retention ends; a backup of
//! the archive restores whole; Redis holds no more keys after cycles of cases that close and
//! age out.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::{collections::BTreeSet, time::Duration};

use common::{Env, grid_point, report};
use gridroute_archive::{Archive, local::LocalPostgres};
use gridroute_proto::v1 as pb;
use gridroute_router::{ArchiveSettings, archive::move_once};
use tonic::Code;

/// The value of a counter this process recorded (a Prometheus recorder installed on first
/// use, as `gridroute serve` installs one; tests of this file share it, so compare increases).
fn counted(name: &str) -> f64 {
    static RECORDER: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    let handle = RECORDER.get_or_init(|| {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .unwrap()
    });
    common::metric_value(&handle.render(), name)
}

/// Settings that archive at once (hot period 0) and keep contacts `retention` long.
fn at_once(retention: Duration) -> ArchiveSettings {
    ArchiveSettings {
        hot_period: Duration::ZERO,
        contact_retention: retention,
        every: Duration::from_secs(60),
        batch: 7,
    }
}

const YEAR: Duration = Duration::from_secs(365 * 86_400);

async fn archive() -> (LocalPostgres, Archive) {
    let pg = tokio::task::spawn_blocking(LocalPostgres::start)
        .await
        .unwrap()
        .expect("a private PostgreSQL starts");
    let archive = Archive::connect(&pg.url()).unwrap();
    assert_eq!(archive.migrate().await.unwrap(), vec![1]);
    assert!(archive.migrate().await.unwrap().is_empty(), "applied once");
    (pg, archive)
}

/// Runs an action again while the caller's rate limit refuses it (long runs act faster than a
/// grid worker's rate).
macro_rules! acted {
    ($call:expr) => {
        loop {
            match $call.await {
                Err(e) if e.code() == Code::ResourceExhausted => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => break other.unwrap(),
            }
        }
    };
}

/// Reports `n` incidents and closes them: even ones resolved, verified and closed, odd ones
/// cancelled. Returns their ids.
async fn closed_incidents(env: &Env, prefix: &str, n: usize) -> Vec<String> {
    let (grid, _, lng, lat) = grid_point(&env.table(), false);
    let (mut d, mut s) = (env.dispatches().await, env.supervision().await);
    let mut ids = Vec::new();
    for i in 0..n {
        let id = env
            .report(report(
                &format!("{prefix}-{i}"),
                "city.vehicle.illegal_parking",
                lng,
                lat,
            ))
            .await;
        let inc = env.wait_status(&id, pb::IncidentStatus::Dispatched).await;
        let dept = inc.decision.unwrap().department_id;
        if i % 2 == 0 {
            acted!(d.resolve_incident(env.signed(pb::ResolveIncidentRequest {
                incident_id: id.clone(),
                department_id: dept.clone(),
                note: "towed".into(),
                request_id: format!("r-{prefix}-{i}"),
                ..Default::default()
            })));
            acted!(s.verify_incident(env.signed(pb::VerifyIncidentRequest {
                incident_id: id.clone(),
                grid_worker_id: format!("gw-{grid}"),
                passed: true,
                note: "gone".into(),
                request_id: format!("v-{prefix}-{i}"),
                ..Default::default()
            })));
            acted!(s.close_incident(env.signed(pb::CloseIncidentRequest {
                incident_id: id.clone(),
                note: "done".into(),
                request_id: format!("c-{prefix}-{i}"),
                ..Default::default()
            })));
        } else {
            acted!(s.cancel_incident(env.signed(pb::CancelIncidentRequest {
                incident_id: id.clone(),
                reason: "reported twice by phone".into(),
                request_id: format!("x-{prefix}-{i}"),
                ..Default::default()
            })));
        }
        ids.push(id);
    }
    // The mover takes what closed strictly before the instant it starts (Redis clock, ms):
    // a pass started in the very millisecond of the last close would leave that one for the
    // next pass, as it should, and the tests below expect every case moved by one pass.
    tokio::time::sleep(Duration::from_millis(3)).await;
    ids
}

/// Every incident ListIncidents returns, in pages of `size`.
async fn list_all(env: &Env, size: i32) -> Vec<String> {
    let mut incidents = env.incidents().await;
    let (mut ids, mut token) = (Vec::new(), String::new());
    loop {
        let page = incidents
            .list_incidents(env.signed(pb::ListIncidentsRequest {
                page_size: size,
                page_token: token,
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        ids.extend(page.incidents.into_iter().map(|i| i.incident_id));
        if page.next_page_token.is_empty() {
            return ids;
        }
        token = page.next_page_token;
    }
}

async fn stats(env: &Env) -> pb::Stats {
    stats_of(env, "", "").await
}

/// Figures of the last hour as the default command centre reads them, for one department
/// and region subtree ("": any).
async fn stats_of(env: &Env, department: &str, region: &str) -> pb::Stats {
    let hour = 3_600;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    env.supervision()
        .await
        .get_stats(env.as_(
            &common::command_centre(&env.table()),
            pb::GetStatsRequest {
                start_time: Some(prost_types::Timestamp {
                    seconds: now - hour,
                    nanos: 0,
                }),
                end_time: Some(prost_types::Timestamp {
                    seconds: now + hour,
                    nanos: 0,
                }),
                department_id: department.to_owned(),
                region_code: region.to_owned(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
}

/// Whether Redis still has an incident's record.
async fn in_redis(env: &Env, id: &str) -> bool {
    let k = env.store.keys();
    let p = gridroute_store::keys::partition_of(id, k.partitions()).unwrap();
    let mut r = env.redis().await;
    redis::cmd("EXISTS")
        .arg(k.incident(p, id))
        .query_async::<bool>(&mut r)
        .await
        .unwrap()
}

/// Index entries of every partition's `all` index, and whether each names a live record.
async fn index_all(env: &Env) -> Vec<bool> {
    let k = env.store.keys();
    let mut r = env.redis().await;
    let mut out = Vec::new();
    for p in 0..k.partitions() {
        let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
            .arg(k.index_all(p))
            .arg("-")
            .arg("+")
            .query_async(&mut r)
            .await
            .unwrap();
        for (_, fields) in entries {
            let mut live = false;
            for f in fields.chunks_exact(2).filter(|f| f[0] == "i") {
                live |= in_redis(env, &f[1]).await;
            }
            out.push(live);
        }
    }
    out
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9 * a.abs().max(1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_incidents_move_to_the_archive_and_every_read_answers_as_before() {
    let (_pg, archive) = archive().await;
    let env = Env::with_archive(archive.clone()).await;
    let closed = closed_incidents(&env, "arc", 10).await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let open = env
        .report(report("arc-open", "city.vehicle.illegal_parking", lng, lat))
        .await;
    env.wait_status(&open, pb::IncidentStatus::Dispatched).await;

    // What callers see before: the command centre (contact shown), the handling department
    // and the reporting system.
    let centre = common::command_centre(&env.table());
    let dept = env
        .get_as(&centre, &closed[0])
        .await
        .unwrap()
        .decision
        .unwrap()
        .department_id;
    let readers = [
        centre.clone(),
        format!("department:{dept}"),
        "source_system:resident-app".to_owned(),
    ];
    let mut before = Vec::new();
    for id in &closed {
        for who in &readers {
            before.push(env.get_as(who, id).await.map_err(|e| e.code()));
        }
    }
    assert!(
        before.iter().any(|r| r.as_ref().is_ok_and(|i| i
            .report
            .as_ref()
            .unwrap()
            .reporter
            .is_some())),
        "someone may read the contact"
    );
    let listed_before: BTreeSet<String> = list_all(&env, 4).await.into_iter().collect();
    let stats_before = stats(&env).await;
    assert_eq!(stats_before.incident_count, 11);
    assert_eq!(stats_before.resolved_count, 5);
    // A department's figures in a region subtree count only what lies in it.
    let (_, path, _, _) = grid_point(&env.table(), false);
    let (_, elsewhere, _, _) = grid_point(&env.table(), true);
    assert_ne!(path[1], elsewhere[1], "two streets");
    let here = stats_of(&env, &dept, &path[1]).await.incident_count;
    assert_eq!(here, 11);
    assert_eq!(stats_of(&env, &dept, &elsewhere[1]).await.incident_count, 0);

    // One pass moves the ten closed cases (in rounds of 7 per partition), not the open one.
    let table = env.table();
    let moved = move_once(&env.store, &archive, &table.calendar, &at_once(YEAR))
        .await
        .unwrap();
    assert_eq!(moved.archived, 10, "{moved:?}");
    assert_eq!(archive.count().await.unwrap(), 10);
    for id in &closed {
        assert!(!in_redis(&env, id).await, "{id} left Redis");
    }
    assert!(in_redis(&env, &open).await);
    // Index entries that named only archived cases are gone; the open case's stays.
    let entries = index_all(&env).await;
    assert!(entries.iter().all(|live| *live), "{entries:?}");
    assert!(!entries.is_empty());
    assert!(moved.index_entries >= 10, "{moved:?}");
    // The department's dispatches replayed from the start: a dispatch entry holds only its
    // head and reads the report and decision from the record, so one whose incident moved to
    // the archive arrives as the head (GetIncident has the rest), and the stream goes on.
    let without_record = counted(gridroute_telemetry::names::DISPATCHES_WITHOUT_RECORD_TOTAL);
    let mut replay = env.subscribe(&dept).await;
    let mut heads = BTreeSet::new();
    while let Ok(Ok(Some(d))) = tokio::time::timeout(Duration::from_secs(2), replay.message()).await
    {
        if d.kind == pb::DispatchKind::New as i32 && closed.contains(&d.incident_id) {
            assert!(d.decision.is_none() && d.report.is_none(), "{d:?}");
            assert!(d.resolve_deadline.is_some() && d.dispatched_time.is_some());
            heads.insert(d.incident_id);
        }
    }
    assert!(heads.contains(&closed[0]), "{heads:?}");
    // Operators see such deliveries counted (docs/OPERATIONS.md).
    assert!(
        counted(gridroute_telemetry::names::DISPATCHES_WITHOUT_RECORD_TOTAL)
            >= without_record + heads.len() as f64
    );

    // Every read answers as before: same records, same masking, same refusals.
    let mut after = Vec::new();
    for id in &closed {
        for who in &readers {
            after.push(env.get_as(who, id).await.map_err(|e| e.code()));
        }
    }
    assert_eq!(after, before);
    let listed_after = list_all(&env, 4).await;
    assert_eq!(listed_after.len(), 11, "no duplicates: {listed_after:?}");
    assert_eq!(
        listed_after.iter().cloned().collect::<BTreeSet<_>>(),
        listed_before
    );
    assert_eq!(listed_after[0], open, "Redis' part first");
    let stats_after = stats(&env).await;
    assert_eq!(stats_after.incident_count, stats_before.incident_count);
    assert_eq!(stats_after.by_status, stats_before.by_status);
    assert_eq!(stats_after.resolved_count, stats_before.resolved_count);
    assert_eq!(stats_after.breached, stats_before.breached);
    assert_eq!(stats_after.returns, stats_before.returns);
    assert!(close(
        stats_after.resolve_working_hours_avg,
        stats_before.resolve_working_hours_avg
    ));
    assert!(close(
        stats_after.resolve_working_hours_p90,
        stats_before.resolve_working_hours_p90
    ));
    assert!(close(
        stats_after.resolve_on_time_rate,
        stats_before.resolve_on_time_rate
    ));
    assert_eq!(stats_of(&env, &dept, &path[1]).await.incident_count, here);
    assert_eq!(stats_of(&env, &dept, &elsewhere[1]).await.incident_count, 0);
    // Filters apply to the archive's part too.
    let cancelled = env
        .incidents()
        .await
        .list_incidents(env.signed(pb::ListIncidentsRequest {
            statuses: vec![pb::IncidentStatus::Cancelled as i32],
            page_size: 50,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.incidents.len(), 5);

    // An archived case takes no more actions.
    let err = env
        .supervision()
        .await
        .cancel_incident(env.signed(pb::CancelIncidentRequest {
            incident_id: closed[0].clone(),
            reason: "again".into(),
            request_id: "x-again".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("archived"), "{err:?}");

    // The archive erases contacts when their retention ends, and says so on the timeline.
    let moved = move_once(
        &env.store,
        &archive,
        &table.calendar,
        &at_once(Duration::ZERO),
    )
    .await
    .unwrap();
    assert_eq!(moved.contacts_erased, 10, "{moved:?}");
    let inc = env.get_as(&centre, &closed[0]).await.unwrap();
    assert!(inc.report.unwrap().reporter.is_none());
    assert_eq!(inc.timeline.last().unwrap().kind, "contact_erased");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mover_killed_mid_batch_repeats_nothing_and_skips_nothing() {
    let (_pg, archive) = archive().await;
    let env = Env::with_archive(archive.clone()).await;
    let ids = closed_incidents(&env, "kill", 24).await;
    let table = env.table();

    // Killed after writing rows, before removing anything from Redis.
    let candidates = env.store.archive_candidates(i64::MAX, 3).await.unwrap();
    assert!(!candidates.is_empty());
    let rows: Vec<_> = candidates
        .iter()
        .map(|c| gridroute_router::archive::row(c, &table.calendar))
        .collect();
    archive.put(&rows, 0).await.unwrap();

    // Killed at many points of passes.
    for delay_ms in [1u64, 3, 5, 8, 12, 20, 30, 50] {
        let (store, archive, table) = (env.store.clone(), archive.clone(), table.clone());
        let pass = tokio::spawn(async move {
            move_once(&store, &archive, &table.calendar, &at_once(YEAR))
                .await
                .unwrap()
        });
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        pass.abort();
        let _ = pass.await;
    }
    // Two movers at once finish the work.
    let settings = at_once(YEAR);
    let (a, b) = tokio::join!(
        move_once(&env.store, &archive, &table.calendar, &settings),
        move_once(&env.store, &archive, &table.calendar, &settings),
    );
    a.unwrap();
    b.unwrap();
    assert_eq!(archive.count().await.unwrap(), 24, "one row each");
    for id in &ids {
        assert!(!in_redis(&env, id).await, "{id} left Redis");
        let inc = archive.get(id).await.unwrap().expect("archived");
        assert_eq!(&inc.incident_id, id);
        assert!(
            inc.status == pb::IncidentStatus::Closed as i32
                || inc.status == pb::IncidentStatus::Cancelled as i32
        );
    }
    let due = env.store.archive_due_count(i64::MAX).await.unwrap();
    assert_eq!(due, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_that_changes_while_it_is_moved_stays_in_redis() {
    let (_pg, archive) = archive().await;
    let env = Env::with_archive(archive.clone()).await;
    let ids = closed_incidents(&env, "chg", 1).await;
    let table = env.table();
    let candidates = env.store.archive_candidates(i64::MAX, 10).await.unwrap();
    assert_eq!(candidates.len(), 1);
    let c = &candidates[0];
    archive
        .put(&[gridroute_router::archive::row(c, &table.calendar)], 0)
        .await
        .unwrap();
    // The record changes after it was read (as an action would bump its version).
    let k = env.store.keys();
    let mut r = env.redis().await;
    let _: i64 = redis::cmd("HINCRBY")
        .arg(k.incident(c.partition, &ids[0]))
        .arg("v")
        .arg(1)
        .query_async(&mut r)
        .await
        .unwrap();
    assert_eq!(
        env.store.remove_archived(c).await.unwrap(),
        gridroute_store::archive::Removal::Changed
    );
    assert!(in_redis(&env, &ids[0]).await);
    // The mover forgets the stale row, and the next pass archives the current version.
    let moved = move_once(&env.store, &archive, &table.calendar, &at_once(YEAR))
        .await
        .unwrap();
    assert_eq!(moved.archived, 1, "{moved:?}");
    assert!(!in_redis(&env, &ids[0]).await);
    assert_eq!(archive.count().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_backup_restores_whole() {
    let (pg, archive) = archive().await;
    let env = Env::with_archive(archive.clone()).await;
    let ids = closed_incidents(&env, "bak", 6).await;
    let table = env.table();
    let moved = move_once(&env.store, &archive, &table.calendar, &at_once(YEAR))
        .await
        .unwrap();
    assert_eq!(moved.archived, 6, "{moved:?}");
    let before: Vec<pb::Incident> = {
        let mut v = Vec::new();
        for id in &ids {
            v.push(archive.get(id).await.unwrap().unwrap());
        }
        v
    };
    // Back up as docs/OPERATIONS.md says (custom format, whole database).
    let dump = std::env::temp_dir().join(format!("gridroute-archive-{}.dump", pg.port()));
    let out = pg
        .command("pg_dump")
        .args(["--format=custom", "--dbname", &pg.url(), "--file"])
        .arg(&dump)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(archive);
    drop(pg);

    // A new server, the backup restored, the schema checked.
    let (fresh_pg, _) = {
        let pg = tokio::task::spawn_blocking(LocalPostgres::start)
            .await
            .unwrap()
            .unwrap();
        (pg, ())
    };
    let out = fresh_pg
        .command("pg_restore")
        .args(["--no-owner", "--dbname", &fresh_pg.url()])
        .arg(&dump)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(&dump);
    let restored = Archive::connect(&fresh_pg.url()).unwrap();
    assert!(restored.migrate().await.unwrap().is_empty(), "schema kept");
    assert_eq!(restored.count().await.unwrap(), 6);
    for inc in before {
        assert_eq!(restored.get(&inc.incident_id).await.unwrap().unwrap(), inc);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keeps_no_more_keys_as_cases_close_and_age_out() {
    let (_pg, archive) = archive().await;
    let env = Env::with_archive(archive.clone()).await;
    let table = env.table();
    let cycles: usize = std::env::var("GRIDROUTE_SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let per_cycle: usize = std::env::var("GRIDROUTE_SOAK_INCIDENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let mut r = env.redis().await;
    let mut sizes = Vec::new();
    for cycle in 0..cycles {
        closed_incidents(&env, &format!("soak{cycle}"), per_cycle).await;
        // A pass moves a bounded amount; the next takes the rest.
        while env.store.archive_due_count(i64::MAX).await.unwrap() > 0 {
            move_once(&env.store, &archive, &table.calendar, &at_once(YEAR))
                .await
                .unwrap();
        }
        let used_before = env.store.memory_stats().await.unwrap().0;
        // The windows pass, as they do in a long run: stream entries older than the stream
        // retention are trimmed, idempotency keys expire (7 days), and audit records older
        // than the audit retention (400 days) are trimmed.
        let departments: Vec<String> = table.departments.iter().map(|d| d.id.clone()).collect();
        env.store.trim_streams(0, &departments).await.unwrap();
        let now = env.store.server_time_ms().await.unwrap();
        let _: i64 = redis::cmd("XTRIM")
            .arg(env.store.keys().audit())
            .arg("MINID")
            .arg(format!("{now}-0"))
            .query_async(&mut r)
            .await
            .unwrap();
        let idem: Vec<String> = redis::cmd("KEYS")
            .arg("*:idem:*")
            .query_async(&mut r)
            .await
            .unwrap();
        if !idem.is_empty() {
            let _: i64 = redis::cmd("DEL")
                .arg(&idem)
                .query_async(&mut r)
                .await
                .unwrap();
        }
        let all: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut r)
            .await
            .unwrap();
        let keys = all.len() as u64;
        let used = env.store.memory_stats().await.unwrap().0;
        let mut index_entries = 0u64;
        let k = env.store.keys();
        for p in 0..k.partitions() {
            let n: u64 = redis::cmd("XLEN")
                .arg(k.index_all(p))
                .query_async(&mut r)
                .await
                .unwrap();
            index_entries += n;
        }
        println!(
            "cycle {cycle}: {} archived in all; used_memory {used_before} with the cycle's stream, idempotency and audit entries, {used} after their windows; {keys} keys, {index_entries} index entries",
            archive.count().await.unwrap()
        );
        sizes.push((keys, index_entries));
        if cycle + 1 == cycles {
            // Where the memory is, for docs/PERFORMANCE.md.
            let mut usage = Vec::new();
            for key in &all {
                let bytes: Option<u64> = redis::cmd("MEMORY")
                    .arg("USAGE")
                    .arg(key)
                    .query_async(&mut r)
                    .await
                    .unwrap();
                usage.push((bytes.unwrap_or(0), key.clone()));
            }
            usage.sort_unstable_by(|a, b| b.cmp(a));
            println!("largest keys: {:?}", &usage[..usage.len().min(6)]);
        }
    }
    assert_eq!(archive.count().await.unwrap() as usize, cycles * per_cycle);
    // After the first cycle has created every per-partition key, nothing grows.
    let (keys, entries) = sizes[1];
    for (cycle, s) in sizes.iter().enumerate().skip(1) {
        assert!(s.0 <= keys, "cycle {cycle}: {sizes:?}");
        assert_eq!(s.1, entries, "cycle {cycle}: {sizes:?}");
    }
    assert_eq!(entries, 0, "every index entry named an archived case");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_points_ledger_keeps_its_newest_entries_and_its_exact_total() {
    let env = Env::start().await;
    let k = env.store.keys();
    let mut r = env.redis().await;
    // 150 awards of 1..=150 points in partition 1, newest first.
    let ledger = k.points(1, "resident-app", "r-9");
    for i in 1..=150 {
        let _: i64 = redis::cmd("LPUSH")
            .arg(&ledger)
            .arg(format!("{}|inc-{i}-1|{i}|city.vehicle", 1_000 + i))
            .query_async(&mut r)
            .await
            .unwrap();
    }
    let points = || async {
        env.incidents()
            .await
            .get_reporter_points(env.signed(pb::GetReporterPointsRequest {
                source_system: "resident-app".into(),
                reporter_id: "r-9".into(),
            }))
            .await
            .unwrap()
            .into_inner()
    };
    let before = points().await;
    assert_eq!(before.total, 150 * 151 / 2);
    let report = pb::ReportIncidentRequest {
        source_system: "resident-app".into(),
        reporter: Some(pb::ReporterContact {
            reporter_id: "r-9".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(env.store.fold_points(1, Some(&report)).await.unwrap(), 50);
    assert_eq!(env.store.fold_points(1, Some(&report)).await.unwrap(), 0);
    let len: u64 = redis::cmd("LLEN")
        .arg(&ledger)
        .query_async(&mut r)
        .await
        .unwrap();
    assert_eq!(len, 100);
    let after = points().await;
    assert_eq!(after.total, before.total, "folded entries still count");
    assert_eq!(
        after.entries, before.entries,
        "the newest entries are shown as before"
    );
}

/// Migrates a new `archive`, closes two incidents (ids starting with `prefix`) and moves them
/// there: both leave Redis. The environment and their ids, for the caller's reads.
async fn two_cases_moved(archive: &Archive, prefix: &str) -> (Env, Vec<String>) {
    assert_eq!(archive.migrate().await.unwrap(), vec![1]);
    let env = Env::with_archive(archive.clone()).await;
    let ids = closed_incidents(&env, prefix, 2).await;
    let table = env.table();
    let moved = move_once(&env.store, archive, &table.calendar, &at_once(YEAR))
        .await
        .unwrap();
    assert_eq!(moved.archived, 2, "{moved:?}");
    for id in &ids {
        assert!(!in_redis(&env, id).await, "{id} left Redis");
    }
    (env, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_over_tls_verifies_the_server_and_moves_cases_as_over_plain_tcp() {
    let pki = common::pki::Pki::new();
    let (cert, key) = pki.leaf("127.0.0.1", &[], true);
    let ca = pki.ca.pem();
    let pg = tokio::task::spawn_blocking(move || LocalPostgres::start_with_tls(&cert, &key))
        .await
        .unwrap()
        .expect("a private PostgreSQL with TLS starts");
    let ca_file = std::env::temp_dir().join(format!("gridroute-archive-ca-{}.pem", pg.port()));
    std::fs::write(&ca_file, &ca).unwrap();

    // The server refuses plain TCP, and a server certificate no root vouches for is refused
    // by gridroute before anything is sent.
    let plain = Archive::connect(&pg.url()).unwrap();
    let e = plain.ping().await.unwrap_err().to_string();
    assert!(
        e.contains("no encryption") || e.contains("pg_hba"),
        "plain TCP refused: {e}"
    );
    let unverified = Archive::connect(&format!("{}?sslmode=require", pg.url())).unwrap();
    let e = unverified.ping().await.unwrap_err().to_string();
    assert!(e.contains("UnknownIssuer"), "unknown CA refused: {e}");

    // With the CA, the archive works: a closed case moves there and reads back.
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        pg.url(),
        ca_file.display()
    );
    let archive = Archive::connect(&url).unwrap();
    let (env, ids) = two_cases_moved(&archive, "tls").await;
    let table = env.table();
    for id in &ids {
        let archived = archive.get(id).await.unwrap().expect("archived");
        assert_eq!(&archived.incident_id, id);
        let read = env
            .get_as(&common::command_centre(&table), id)
            .await
            .unwrap();
        assert_eq!(
            read.status, archived.status,
            "GetIncident reads the archive"
        );
    }
    let _ = std::fs::remove_file(&ca_file);
}

/// A PostgreSQL that authenticates its TCP clients by certificate (`pg_hba.conf`'s `cert`):
/// without `sslcert`/`sslkey` the archive is refused, with a certificate for another user too,
/// and with the database user's certificate it migrates and moves cases as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_presents_a_client_certificate_when_postgres_asks_for_one() {
    let pki = common::pki::Pki::new();
    let (cert, key) = pki.leaf("127.0.0.1", &[], true);
    let ca = pki.ca.pem();
    let client_ca = ca.clone();
    let pg = tokio::task::spawn_blocking(move || {
        LocalPostgres::start_with_client_certs(&cert, &key, &client_ca)
    })
    .await
    .unwrap()
    .expect("a private PostgreSQL with client certificates starts");
    let dir = std::env::temp_dir().join(format!("gridroute-archive-client-{}", pg.port()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let ca_file = file("ca.pem", &ca);
    let user = pki.leaf("postgres", &[], false);
    let other = pki.leaf("someone-else", &[], false);
    let base = format!("{}?sslmode=verify-full&sslrootcert={ca_file}", pg.url());
    let with = |name: &str, (cert, key): &(String, String)| {
        let cert = file(&format!("{name}.crt"), cert);
        let key = file(&format!("{name}.key"), key);
        format!("{base}&sslcert={cert}&sslkey={key}")
    };

    let without = Archive::connect(&base).unwrap();
    let e = without.ping().await.unwrap_err().to_string();
    assert!(
        e.contains("requires a valid client certificate"),
        "no client certificate refused: {e}"
    );
    let refused = Archive::connect(&with("other", &other)).unwrap();
    let e = refused.ping().await.unwrap_err().to_string();
    assert!(
        e.contains("certificate authentication failed"),
        "another user's certificate refused: {e}"
    );

    let archive = Archive::connect(&with("user", &user)).unwrap();
    let (_env, ids) = two_cases_moved(&archive, "client-cert").await;
    for id in &ids {
        assert!(archive.get(id).await.unwrap().is_some(), "{id} archived");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A PostgreSQL that authenticates by password (SCRAM-SHA-256) over TLS: with
/// `channel_binding=require` the archive connects, which it can only do by binding the
/// exchange to the server's certificate (SCRAM-SHA-256-PLUS), and a wrong password is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_binds_its_password_exchange_to_the_tls_channel() {
    let pki = common::pki::Pki::new();
    let (cert, key) = pki.leaf("127.0.0.1", &[], true);
    let pg = tokio::task::spawn_blocking(move || {
        LocalPostgres::start_with_password(&cert, &key, "s3cret-archive")
    })
    .await
    .unwrap()
    .expect("a private PostgreSQL with passwords over TLS starts");
    let ca_file = std::env::temp_dir().join(format!("gridroute-archive-scram-{}.pem", pg.port()));
    std::fs::write(&ca_file, pki.ca.pem()).unwrap();
    let url = |password: &str| {
        format!(
            "postgres://postgres:{password}@127.0.0.1:{}/postgres?sslmode=verify-full&sslrootcert={}&channel_binding=require",
            pg.port(),
            ca_file.display()
        )
    };

    let archive = Archive::connect(&url("s3cret-archive")).unwrap();
    archive.ping().await.expect("SCRAM with channel binding");
    assert_eq!(archive.migrate().await.unwrap(), vec![1]);

    let wrong = Archive::connect(&url("wrong")).unwrap();
    let e = wrong.ping().await.unwrap_err().to_string();
    assert!(e.contains("password authentication failed"), "{e}");
    let _ = std::fs::remove_file(&ca_file);
}
