//! The working calendar's horizon: a table whose holiday schedule has run out is accepted with a
//! warning (a running city never stops), the deadlines counted past it are marked as estimates
//! in the record, its timeline and the dispatch, and `tables validate` refuses such a table.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::{Duration, Instant};

use common::{Env, grid_point, report};
use gridroute_benches::{DAWUKOU_GRIDS, DAWUKOU_RULES};
use gridroute_proto::v1 as pb;

/// A calendar whose schedule ended on 31 December 2025: every deadline from now on lies past it.
const ENDED: &str = "timezone: Asia/Shanghai
covered_until: 2025-12-31
holidays:
  - {date: 2025-10-01, name: National Day}
";

/// A calendar that covers far beyond any SLA span.
const COVERED: &str = "timezone: Asia/Shanghai
covered_until: 2099-12-31
holidays:
  - {date: 2025-10-01, name: National Day}
";

async fn publish(env: &Env, calendar: &str) -> pb::PublishTableResponse {
    let r = env
        .table_admin()
        .await
        .publish_table(env.signed(pb::PublishTableRequest {
            sources: Some(pb::TableSources {
                grids_geojson: DAWUKOU_GRIDS.into(),
                rules_yaml: DAWUKOU_RULES.into(),
                calendar_yaml: calendar.into(),
                ..Default::default()
            }),
            note: "calendar".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let started = Instant::now();
    while env.tables.load().version != r.version {
        assert!(started.elapsed() < Duration::from_secs(5), "never swapped");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    r
}

/// Reports one incident, waits for its dispatch and returns the record and the dispatch the
/// primary department received.
async fn dispatched(env: &Env, request_id: &str) -> (pb::Incident, pb::Dispatch) {
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let id = env
        .report(report(request_id, "city.sanitation", lng, lat))
        .await;
    let inc = env.wait_status(&id, pb::IncidentStatus::Dispatched).await;
    let mut stream = env
        .dispatches()
        .await
        .subscribe(env.signed(pb::SubscribeRequest {
            department_id: inc.department_id.clone(),
            start: pb::SubscribeStart::Earliest as i32,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    loop {
        let d = common::next_dispatch(&mut stream).await;
        if d.incident_id == id {
            return (inc, d);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_past_the_calendar_are_marked_as_estimates() {
    let env = Env::start().await;

    // A push of a calendar that has run out is accepted, with the reason as a warning.
    let r = publish(&env, ENDED).await;
    let w: Vec<_> = r
        .warnings
        .iter()
        .filter(|w| w.code == "calendar_horizon")
        .collect();
    assert_eq!(w.len(), 1, "{:?}", r.warnings);
    assert_eq!(w[0].severity, "warning");
    assert!(
        w[0].message.contains("covers days until 2025-12-31"),
        "{w:?}"
    );

    let (inc, d) = dispatched(&env, "est-1").await;
    assert!(inc.deadline_estimated, "the record says so");
    assert!(d.deadline_estimated, "the department's dispatch says so");
    let entry = inc
        .timeline
        .iter()
        .find(|e| e.r#type == pb::TimelineKind::Dispatched as i32)
        .unwrap();
    assert!(
        entry.detail.contains(
            "deadline estimated: counted past the working calendar's last day (2025-12-31)"
        ),
        "{entry:?}"
    );
    // The deadlines stand as counted (plain weeks): they are set, not withheld.
    assert!(inc.resolve_deadline.is_some() && inc.accept_deadline.is_some());

    // A calendar that covers the spans: exact deadlines, no mark, no warning.
    let r = publish(&env, COVERED).await;
    assert!(
        r.warnings.iter().all(|w| w.code != "calendar_horizon"),
        "{:?}",
        r.warnings
    );
    let (inc, d) = dispatched(&env, "est-2").await;
    assert!(!inc.deadline_estimated && !d.deadline_estimated);
    let entry = inc
        .timeline
        .iter()
        .find(|e| e.r#type == pb::TimelineKind::Dispatched as i32)
        .unwrap();
    assert!(!entry.detail.contains("estimated"), "{entry:?}");
}

#[test]
fn tables_validate_refuses_a_calendar_that_ends_before_the_longest_span() {
    let dir = common::process::temp_dir("calendar-validate");
    std::fs::write(dir.join("grids.geojson"), DAWUKOU_GRIDS).unwrap();
    std::fs::write(dir.join("rules.yaml"), DAWUKOU_RULES).unwrap();
    std::fs::write(dir.join("calendar.yaml"), ENDED).unwrap();
    let validate = |at: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_gridroute"))
            .args(["tables", "validate"])
            .arg(&dir)
            .args(["--at", at])
            .output()
            .unwrap()
    };
    // Cases dispatched early in 2025 end their longest escalation chain well within the year;
    // two days before the schedule ends, the chains reach past it.
    let far = validate("2025-01-02");
    assert!(
        far.status.success(),
        "{}",
        String::from_utf8_lossy(&far.stderr)
    );
    let late = validate("2025-12-30");
    assert!(!late.status.success());
    let err = String::from_utf8_lossy(&late.stderr);
    assert!(err.contains("[calendar_horizon]"), "{err}");
    assert!(err.contains("covers days until 2025-12-31"), "{err}");
    assert!(err.contains("State Council notice"), "{err}");
    let bad = validate("31/12/2025");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("write YYYY-MM-DD"));
}
