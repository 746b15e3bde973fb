//! Streams keep entries for a retention window, by age: a subscriber or a watcher whose cursor
//! points before what was trimmed is refused with OUT_OF_RANGE and the cursor to resume from,
//! never served a silent gap.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use common::{Env, grid_point, next_dispatch, report};
use gridroute_proto::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt;

/// Reports one incident and returns it once dispatched.
async fn dispatched(env: &Env, request_id: &str) -> pb::Incident {
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let id = env
        .report(report(request_id, "city.sanitation", lng, lat))
        .await;
    env.wait_status(&id, pb::IncidentStatus::Dispatched).await
}

async fn subscribe(
    env: &Env,
    department: &str,
    cursor: &str,
) -> Result<tonic::Streaming<pb::Dispatch>, tonic::Status> {
    env.dispatches()
        .await
        .subscribe(env.signed(pb::SubscribeRequest {
            department_id: department.into(),
            cursor: cursor.into(),
            start: pb::SubscribeStart::Earliest as i32,
        }))
        .await
        .map(tonic::Response::into_inner)
}

/// The cursor an OUT_OF_RANGE refusal says to resume from, after checking its details.
fn resume_cursor(status: &tonic::Status) -> String {
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "CURSOR_EXPIRED");
    let violations = &details.bad_request().expect("BadRequest").field_violations;
    assert_eq!(violations[0].field, "cursor");
    assert!(status.message().contains("ListIncidents"), "{status:?}");
    info.metadata["resume_cursor"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_trimmed_by_age_and_old_cursors_are_refused_with_where_to_resume() {
    let env = Env::start().await;
    let first = dispatched(&env, "trim-1").await;
    let department = first.department_id.clone();
    let mut stream = subscribe(&env, &department, "").await.unwrap();
    let d1 = next_dispatch(&mut stream).await;
    assert_eq!(d1.incident_id, first.incident_id);
    drop(stream);

    // Older than the window: trimmed. Newer: kept.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = dispatched(&env, "trim-2").await;
    assert_eq!(second.department_id, department);
    let departments: Vec<String> = env
        .table()
        .departments
        .iter()
        .map(|d| d.id.clone())
        .collect();
    let removed = env.store.trim_streams(1000, &departments).await.unwrap();
    assert!(
        removed >= 2,
        "the first dispatch and its events entries: {removed}"
    );

    // From the start: only what is retained.
    let mut stream = subscribe(&env, &department, "").await.unwrap();
    let d = next_dispatch(&mut stream).await;
    assert_eq!(d.incident_id, second.incident_id, "the trimmed one is gone");
    drop(stream);

    // A cursor taken before the trimmed entry: OUT_OF_RANGE, not a silent gap.
    let before_first = vec!["0-1"; common::PARTITIONS as usize].join(".");
    let err = subscribe(&env, &department, &before_first)
        .await
        .unwrap_err();
    let resume = resume_cursor(&err);
    // Resuming where it says delivers everything retained, from the oldest.
    let mut stream = subscribe(&env, &department, &resume).await.unwrap();
    assert_eq!(
        next_dispatch(&mut stream).await.incident_id,
        second.incident_id
    );
    drop(stream);
    // The cursor of the trimmed dispatch itself is fine: nothing after it was lost.
    let mut stream = subscribe(&env, &department, &d1.cursor).await.unwrap();
    assert_eq!(
        next_dispatch(&mut stream).await.incident_id,
        second.incident_id
    );
    drop(stream);

    // The same for the events streams (WatchIncidents).
    let watch = |cursor: String| async {
        env.incidents()
            .await
            .watch_incidents(env.signed(pb::WatchIncidentsRequest {
                cursor,
                ..Default::default()
            }))
            .await
            .map(tonic::Response::into_inner)
    };
    let err = watch(before_first.clone()).await.unwrap_err();
    let resume = resume_cursor(&err);
    let mut events = watch(resume).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(10), events.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(e.incident_id, second.incident_id, "oldest retained event");

    // Over HTTP the refusal is 400 with the same details.
    let r = common::http::call(
        &env.http_addr,
        http::Method::GET,
        &format!("/v1/dispatches:subscribe?department_id={department}&cursor={before_first}"),
        Some(&env.token(&format!("department:{department}"))),
        None,
        &[],
    )
    .await;
    assert_eq!(r.status, http::StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.body["error"]["status"], "OUT_OF_RANGE", "{}", r.text);
    assert!(r.text.contains("CURSOR_EXPIRED"), "{}", r.text);
}
