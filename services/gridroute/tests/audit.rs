//! The audit trail and the abuse limits against a real server: a table publish names the
//! token's person, refusals are recorded, no field forges another; rates and open streams per
//! principal are capped with RESOURCE_EXHAUSTED and a RetryInfo.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::{collections::HashMap, time::Duration};

use common::{Env, sample_sources};
use gridroute_api::limits::{LimitConfig, Limits, Rate};
use gridroute_core::access::Kind;
use gridroute_proto::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt;

/// The records an auditor reads, once there are at least `n` (refusals are written by a
/// background writer: wait for them).
async fn audit_n(env: &Env, filter: pb::ListAuditRecordsRequest, n: usize) -> Vec<pb::AuditRecord> {
    let mut records = Vec::new();
    for _ in 0..50 {
        records = env
            .audit()
            .await
            .list_audit_records(env.as_("auditor:inspector", filter.clone()))
            .await
            .unwrap()
            .into_inner()
            .records;
        if records.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    records
}

async fn audit(env: &Env, filter: pb::ListAuditRecordsRequest) -> Vec<pb::AuditRecord> {
    audit_n(env, filter, 1).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_publish_is_audited_with_the_tokens_person() {
    let env = Env::start().await;
    let s = sample_sources();
    let changed = s.rules.replace("max_returns: 2", "max_returns: 3");
    let published = env
        .table_admin()
        .await
        .publish_table(env.as_person(
            "table_admin:ops",
            "li.ming",
            pb::PublishTableRequest {
                sources: Some(pb::TableSources {
                    grids_geojson: s.grids.clone(),
                    rules_yaml: changed,
                    ..Default::default()
                }),
                note: "three returns before arbitration".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(published.changed);
    let records = audit(
        &env,
        pb::ListAuditRecordsRequest {
            method: "gridroute.v1.TableService/PublishTable".into(),
            ..Default::default()
        },
    )
    .await;
    let r = &records[0];
    assert_eq!(
        (r.principal.as_str(), r.person.as_str(), r.outcome.as_str()),
        ("table_admin:ops", "li.ming", "OK")
    );
    assert!(r.reason.contains(&published.version), "{r:?}");
    assert!(r.time.is_some() && !r.peer.is_empty());
    // The history says who, from the token, and why.
    let info = env
        .table_admin()
        .await
        .get_table_info(env.as_("auditor:inspector", pb::GetTableInfoRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            info.history[0].published_by.as_str(),
            info.history[0].principal.as_str(),
            info.history[0].note.as_str()
        ),
        (
            "li.ming",
            "table_admin:ops",
            "three returns before arbitration"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_recorded_and_no_field_forges_another() {
    let env = Env::start().await;
    // A department trying to publish; an anonymous caller; a department reading another's.
    let err = env
        .table_admin()
        .await
        .publish_table(env.as_(
            "department:water-affairs",
            pb::PublishTableRequest::default(),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let _ = env
        .incidents()
        .await
        .get_incident(pb::GetIncidentRequest {
            incident_id: "x".into(),
        })
        .await
        .unwrap_err();
    let err = env
        .incidents()
        .await
        .get_incident(env.as_(
            "department:water-affairs",
            pb::GetIncidentRequest {
                incident_id: "01JDXK3M4P5Q6R7S8T9V0W1X2Y-1".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let seen: Vec<(String, String, String)> = audit_n(
        &env,
        pb::ListAuditRecordsRequest {
            outcome: "PERMISSION_DENIED".into(),
            ..Default::default()
        },
        2,
    )
    .await
    .into_iter()
    .map(|r| (r.principal, r.method, r.target))
    .collect();
    assert!(
        seen.contains(&(
            "department:water-affairs".into(),
            "gridroute.v1.TableService/PublishTable".into(),
            String::new()
        )),
        "{seen:?}"
    );
    assert!(
        seen.contains(&(
            "department:water-affairs".into(),
            "gridroute.v1.IncidentService/GetIncident".into(),
            "01JDXK3M4P5Q6R7S8T9V0W1X2Y-1".into()
        )),
        "{seen:?}"
    );
    let anonymous = audit(
        &env,
        pb::ListAuditRecordsRequest {
            principal: "anonymous".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(anonymous[0].outcome, "UNAUTHENTICATED");
    // A person whose name tries to look like several fields is stored as one value.
    let sly = "li|auditor:x|OK|forged";
    let err = env
        .table_admin()
        .await
        .rollback_table(env.as_person("table_admin:ops", sly, pb::RollbackTableRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "no earlier version: {err:?}");
    assert!(err.message().contains("table version"), "{err:?}");
    let rollbacks = audit(
        &env,
        pb::ListAuditRecordsRequest {
            method: "gridroute.v1.TableService/RollbackTable".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(rollbacks.len(), 1);
    assert_eq!(
        (
            rollbacks[0].principal.as_str(),
            rollbacks[0].person.as_str(),
            rollbacks[0].outcome.as_str()
        ),
        ("table_admin:ops", sly, "NOT_FOUND")
    );
    // Pages: one record at a time, each once.
    let mut token = String::new();
    let mut ids = Vec::new();
    loop {
        let page = env
            .audit()
            .await
            .list_audit_records(env.as_(
                "auditor:inspector",
                pb::ListAuditRecordsRequest {
                    page_size: 1,
                    page_token: token.clone(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        ids.extend(page.records.into_iter().map(|r| r.record_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(ids, unique);
    assert!(ids.len() >= 4, "{ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rates_and_streams_are_capped_per_principal() {
    let env = Env::with_security(&[], |s| {
        s.limits = Limits::new(LimitConfig {
            rates: HashMap::from([(
                Kind::Department,
                Rate {
                    per_second: 2.0,
                    burst: 3.0,
                },
            )]),
            streams_per_principal: 1,
        });
    })
    .await;
    let ask = || pb::GetStatsRequest::default();
    let mut s = env.supervision().await;
    let who = "department:water-affairs";
    for _ in 0..3 {
        s.get_stats(env.as_(who, ask())).await.unwrap();
    }
    let err = s.get_stats(env.as_(who, ask())).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    let retry = err.get_details_retry_info().expect("a RetryInfo");
    let after = retry.retry_delay.unwrap();
    assert!(
        after > Duration::ZERO && after <= Duration::from_secs(1),
        "{after:?}"
    );
    // Another department has its own bucket; the first gets calls back after the delay.
    s.get_stats(env.as_("department:property-office", ask()))
        .await
        .unwrap();
    tokio::time::sleep(after).await;
    s.get_stats(env.as_(who, ask())).await.unwrap();

    // One open stream per principal here.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let first = env
        .dispatches()
        .await
        .subscribe(env.as_(
            "department:property-office",
            pb::SubscribeRequest::default(),
        ))
        .await
        .unwrap();
    let second = env
        .dispatches()
        .await
        .subscribe(env.as_(
            "department:property-office",
            pb::SubscribeRequest::default(),
        ))
        .await
        .unwrap_err();
    assert_eq!(second.code(), Code::ResourceExhausted);
    drop(first);
    let mut again = Err(second);
    for _ in 0..50 {
        again = env
            .dispatches()
            .await
            .subscribe(env.as_(
                "department:property-office",
                pb::SubscribeRequest::default(),
            ))
            .await;
        if again.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        again.is_ok(),
        "the place is free again once the stream is gone"
    );
}
