//! Reports accepted by transactions (`gridroute serve --transactions`): exactly once when
//! replicas race on the same request ids (in batches larger than one transaction, too), once
//! when a batch names a request id twice, and queued for the routers as the script queues them;
//! the routers then dispatch them by transaction too, writing what the script writes.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::HashSet;

use common::{Env, PARTITIONS, Writes, field_names, grid_point, report};
use gridroute_proto::v1 as pb;
use gridroute_store::{Store, StoreError, ingest::Accepted};

/// A replica's store: its own connections, inline routing, reports written by transactions.
async fn replica(env: &Env) -> Store {
    Store::connect(&env.redis.url(), "gr", PARTITIONS)
        .await
        .unwrap()
        .with_inline_route(gridroute_router::inline_route(env.tables.clone()))
        .with_transactions(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_racing_on_the_same_request_ids_write_each_incident_once() {
    // More than one transaction's worth (128) for the replica that sends them all at once.
    const N: usize = 150;
    let env = Env::writing(None, Writes::inline().by_transactions(true)).await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let reports: Vec<pb::ReportIncidentRequest> = (0..N)
        .map(|i| report(&format!("race-{i}"), "city.vehicle.abandoned", lng, lat))
        .collect();
    // Three replicas send the same reports at once, in batches of different sizes, so that
    // their transactions watch overlapping claims.
    let mut tasks = tokio::task::JoinSet::new();
    for (r, size) in [(0, 7), (1, 13), (2, N)] {
        let (store, reports) = (replica(&env).await, reports.clone());
        tasks.spawn(async move {
            let mut answers = Vec::new();
            for chunk in reports.chunks(size) {
                // As a client: what is answered UNAVAILABLE (claims contended past the
                // retries) is sent again, and each request keeps its first answer.
                let mut got: Vec<Option<Accepted>> = vec![None; chunk.len()];
                while got.iter().any(Option::is_none) {
                    let (todo, again): (Vec<usize>, Vec<pb::ReportIncidentRequest>) = got
                        .iter()
                        .enumerate()
                        .filter(|(_, g)| g.is_none())
                        .map(|(i, _)| (i, chunk[i].clone()))
                        .unzip();
                    let res = store.report_batch(&again, "", "").await.unwrap();
                    for (i, a) in todo.into_iter().zip(res) {
                        match a {
                            Ok(a) => got[i] = Some(a),
                            Err(StoreError::Unavailable(_)) => {}
                            Err(e) => panic!("request {i}: {e}"),
                        }
                    }
                }
                answers.extend(got.into_iter().flatten());
            }
            (r, answers)
        });
    }
    let mut by_replica = Vec::new();
    while let Some(done) = tasks.join_next().await {
        by_replica.push(done.unwrap());
    }
    // Every replica names the same incident for each request; exactly one of them was told
    // it was new.
    for i in 0..N {
        let ids: HashSet<&str> = by_replica.iter().map(|(_, a)| a[i].incident_id()).collect();
        assert_eq!(ids.len(), 1, "request {i}: {ids:?}");
        let new = by_replica
            .iter()
            .filter(|(_, a)| matches!(a[i], Accepted::New(_)))
            .count();
        assert_eq!(new, 1, "request {i} accepted as new once");
    }
    // One record, one dispatch, two events per incident; nothing left for a router.
    let k = env.store.keys().clone();
    let ids: HashSet<String> = by_replica[0]
        .1
        .iter()
        .map(|a| a.incident_id().to_owned())
        .collect();
    for id in &ids {
        let rec = env.record(id).await;
        assert_eq!(rec["status"], b"dispatched");
        assert_eq!(rec["v"], b"1");
    }
    let dept =
        String::from_utf8(env.record(ids.iter().next().unwrap()).await["dept"].clone()).unwrap();
    assert_eq!(env.dispatch_count(&dept).await, N as u64);
    assert_eq!(env.stream_len(|p| k.events(p)).await, 2 * N as u64);
    assert_eq!(env.stream_len(|p| k.ingest(p)).await, 0);
    let records: usize = {
        let mut c = env.redis().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("gr:*:inc:*")
            .query_async(&mut c)
            .await
            .unwrap();
        keys.len()
    };
    assert_eq!(records, N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_request_id_twice_in_one_batch_is_one_incident() {
    let env = Env::writing(None, Writes::inline().by_transactions(true)).await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let once = report("twice-1", "city.vehicle.abandoned", lng, lat);
    let mut changed = once.clone();
    changed.description = "another payload under the same request id".into();
    let answers = env
        .report_batch(vec![once.clone(), once.clone(), changed])
        .await;
    assert_eq!(answers.accepted_count, 2);
    assert_eq!(answers.rejected_count, 1);
    let (a, b) = (&answers.results[0], &answers.results[1]);
    assert_eq!(a.incident_id, b.incident_id);
    assert!(!a.duplicate_request && b.duplicate_request);
    assert_eq!(
        answers.results[2].code,
        tonic::Code::AlreadyExists as i32,
        "the same request id with another payload is refused: {:?}",
        answers.results[2]
    );
    let k = env.store.keys().clone();
    assert_eq!(env.stream_len(|p| k.events(p)).await, 2);
    let dept = String::from_utf8(env.record(&a.incident_id).await["dept"].clone()).unwrap();
    assert_eq!(env.dispatch_count(&dept).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_a_transaction_queues_are_routed_as_the_scripts_are() {
    let mut by_script = Env::without_router().await;
    let mut by_tx = Env::writing(None, Writes::default().by_transactions(true)).await;
    let (_, _, lng, lat) = grid_point(&by_script.table(), false);
    let r = report("queued-1", "city.sanitation", lng, lat);
    let (a, b) = (
        by_script.report(r.clone()).await,
        by_tx.report(r.clone()).await,
    );
    // Queued alike: the same record fields, one ingest entry each.
    let (ra, rb) = (by_script.record(&a).await, by_tx.record(&b).await);
    assert_eq!(field_names(&ra), field_names(&rb));
    for name in ["report", "status", "gen"] {
        assert_eq!(ra[name], rb[name], "{name}");
    }
    let k = by_tx.store.keys().clone();
    assert_eq!(by_tx.stream_len(|p| k.ingest(p)).await, 1);
    assert_eq!(by_tx.stream_len(|p| k.events(p)).await, 1);
    // A router dispatches each; a retry of the report answers the same incident.
    for env in [&mut by_script, &mut by_tx] {
        env.spawn_router(common::fast_router("router-a"));
    }
    by_script
        .wait_status(&a, pb::IncidentStatus::Dispatched)
        .await;
    by_tx.wait_status(&b, pb::IncidentStatus::Dispatched).await;
    let (ra, rb) = (by_script.record(&a).await, by_tx.record(&b).await);
    // The router's dispatch by transaction writes the script's fields but `dept_at`, which a
    // first dispatch does without (its one department-index entry counts).
    let mut expected = field_names(&ra);
    expected.retain(|f| *f != "dept_at");
    assert_eq!(
        field_names(&rb),
        expected,
        "the router's dispatch writes the same fields"
    );
    for name in ["status", "dept", "decision", "regions", "v", "ix", "timers"] {
        assert_eq!(ra[name], rb[name], "{name}");
    }
    let dept = String::from_utf8(rb["dept"].clone()).unwrap();
    assert_eq!(by_tx.dispatch_count(&dept).await, 1);
    assert_eq!(by_tx.report(r).await, b);
    assert_eq!(by_tx.stream_len(|p| k.events(p)).await, 2);
    // Its ingest entry acknowledged: nothing left to route (the router trims the entry later).
    let stats = by_tx.store.ingest_stats().await.unwrap();
    assert_eq!((stats.lag, stats.pending), (0, 0));
}

/// Every event of a watch from the start, until `n` arrived.
async fn watched(env: &Env, cursor: &str, n: usize) -> Vec<pb::IncidentEvent> {
    let mut watch = env
        .incidents()
        .await
        .watch_incidents(env.signed(pb::WatchIncidentsRequest {
            cursor: cursor.to_owned(),
            start: pb::WatchStart::Earliest as i32,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while out.len() < n {
        let e = tokio::time::timeout(std::time::Duration::from_secs(10), watch.message())
            .await
            .expect("events keep coming")
            .unwrap()
            .expect("the watch stays open");
        out.push(e);
    }
    // Nothing more than the changes written.
    let more = tokio::time::timeout(std::time::Duration::from_millis(600), watch.message()).await;
    assert!(more.is_err(), "an event beyond the {n} written: {more:?}");
    out
}

/// `--packed-events`: the API's transactions write a batch's changes as one events entry per
/// partition. A watch reads them beside entries of the first form (one per change, as an
/// earlier release or a replica without the switch writes them), and resumes from a cursor
/// inside a packed entry with exactly what follows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_packed_per_batch_are_watched_and_resumed_inside_an_entry() {
    let env = Env::writing(
        None,
        Writes::inline().by_transactions(true).packed_events(true),
    )
    .await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let reports: Vec<pb::ReportIncidentRequest> = (0..45)
        .map(|i| report(&format!("packed-{i}"), "city.vehicle.abandoned", lng, lat))
        .collect();
    // Five reports by a replica without the switch: an entry per change.
    let unpacked = replica(&env).await;
    for a in unpacked.report_batch(&reports[..5], "", "").await.unwrap() {
        assert!(matches!(a.unwrap(), Accepted::New(_)));
    }
    // Forty through the API: reported and dispatched, packed.
    let answers = env.report_batch(reports[5..].to_vec()).await;
    assert_eq!(answers.accepted_count, 40);
    let mut c = env.redis().await;
    let (mut single, mut packed, mut changes) = (0, 0, 0);
    for p in 0..PARTITIONS {
        let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(env.store.keys().events(p))
            .arg("-")
            .arg("+")
            .query_async(&mut c)
            .await
            .unwrap();
        for e in entries.ids {
            match e.get::<Vec<u8>>(gridroute_store::events::PACKED_FIELD) {
                Some(v) => {
                    packed += 1;
                    changes += gridroute_store::events::unpack(&v).unwrap().changes.len();
                }
                None => single += 1,
            }
        }
    }
    assert_eq!((single, changes), (10, 80));
    assert!(packed < 40, "{packed} packed entries for 80 changes");

    // From the start: every change once, each incident reported, then dispatched.
    let all = watched(&env, "", 90).await;
    let mut seen: Vec<(String, i32)> = Vec::new();
    for e in &all {
        let key = (e.incident_id.clone(), e.status);
        assert!(!seen.contains(&key), "{key:?} twice");
        if e.status == pb::IncidentStatus::Dispatched as i32 {
            let reported = (e.incident_id.clone(), pb::IncidentStatus::Reported as i32);
            assert!(seen.contains(&reported), "dispatched before reported");
            assert!(!e.region_codes.is_empty() && !e.department_id.is_empty());
        }
        assert!(e.event.as_ref().is_some_and(|t| !t.kind.is_empty()));
        seen.push(key);
    }
    // From a cursor inside a packed entry (`<id>~<n>`), and from each form's last change of
    // its kind: exactly the changes not yet delivered at that cursor.
    let inside = all
        .iter()
        .position(|e| e.cursor.contains('~'))
        .expect("a cursor inside a packed entry");
    assert!(
        gridroute_store::subscribe::Cursor::parse(&all[inside].cursor, PARTITIONS).is_ok(),
        "a cursor the server issues parses"
    );
    for from in [inside, inside + 1, 4, 89] {
        let rest = watched(&env, &all[from].cursor, 89 - from).await;
        let got: HashSet<(String, i32)> = rest
            .iter()
            .map(|e| (e.incident_id.clone(), e.status))
            .collect();
        let expected: HashSet<(String, i32)> = all[from + 1..]
            .iter()
            .map(|e| (e.incident_id.clone(), e.status))
            .collect();
        assert_eq!(got, expected, "resumed after event {from}");
    }
}

/// `--region-index-depth 2`: reports routed inline are indexed down to the street, and
/// ListIncidents and GetStats of each level of their grid's path, from the district to the
/// grid, still find every one of them, page by page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regions_below_the_index_depth_are_listed_through_the_street() {
    let env = Env::writing(
        None,
        Writes::inline().by_transactions(true).region_index_depth(2),
    )
    .await;
    let (grid, path, lng, lat) = grid_point(&env.table(), false);
    let reports: Vec<pb::ReportIncidentRequest> = (0..12)
        .map(|i| report(&format!("depth-{i}"), "city.vehicle.abandoned", lng, lat))
        .collect();
    let answers = env.report_batch(reports).await;
    assert_eq!(answers.accepted_count, 12);
    let ids: HashSet<String> = answers
        .results
        .iter()
        .map(|r| r.incident_id.clone())
        .collect();
    // Nothing in the community's or the grid's own index.
    let k = env.store.keys().clone();
    assert_eq!(env.stream_len(|p| k.index_region(p, &grid)).await, 0);
    assert_eq!(env.stream_len(|p| k.index_region(p, &path[2])).await, 0);
    let mut incidents = env.incidents().await;
    let mut regions = path.clone();
    if regions.last() != Some(&grid) {
        regions.push(grid.clone());
    }
    assert_eq!(
        regions.len(),
        4,
        "district, street, community, grid: {regions:?}"
    );
    for region in &regions {
        let (mut listed, mut token) = (Vec::new(), String::new());
        loop {
            let page = incidents
                .list_incidents(env.signed(pb::ListIncidentsRequest {
                    region_code: region.clone(),
                    page_size: 5,
                    page_token: token,
                    ..Default::default()
                }))
                .await
                .unwrap()
                .into_inner();
            listed.extend(page.incidents.into_iter().map(|i| i.incident_id));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(listed.len(), 12, "{region}: {listed:?}");
        assert_eq!(listed.into_iter().collect::<HashSet<_>>(), ids, "{region}");
        let stats = env
            .supervision()
            .await
            .get_stats(env.signed(pb::GetStatsRequest {
                region_code: region.clone(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(stats.incident_count, 12, "{region}");
    }
}
