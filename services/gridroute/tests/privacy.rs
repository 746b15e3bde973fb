//! Reporters' personal data (PIPL) against a real server and a real Redis: the contact is
//! shown unmasked only to those who need it, kept in the record alone (no stream carries it),
//! and erased a (here shortened) retention period after the case closes.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use common::{Env, grid_point, next_dispatch, report};
use gridroute_proto::v1 as pb;

const PHONE: &str = "13800000000";

fn contact(inc: &pb::Incident) -> pb::ReporterContact {
    inc.report
        .as_ref()
        .unwrap()
        .reporter
        .clone()
        .unwrap_or_default()
}

async fn get(env: &Env, who: &str, id: &str) -> pb::Incident {
    env.get_as(who, id).await.unwrap()
}

/// Every value of every key of the deployment but the records' `contact` fields, as bytes.
async fn everything_but_contacts(env: &Env) -> Vec<u8> {
    let mut r = env.redis().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut r)
        .await
        .unwrap();
    let mut all = Vec::new();
    for k in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&k)
            .query_async(&mut r)
            .await
            .unwrap();
        let mut cmd = match kind.as_str() {
            "stream" => redis::cmd("XRANGE"),
            "hash" => redis::cmd("HGETALL"),
            "list" | "zset" => redis::cmd(if kind == "list" { "LRANGE" } else { "ZRANGE" }),
            "set" => redis::cmd("SMEMBERS"),
            _ => redis::cmd("GET"),
        };
        cmd.arg(&k);
        match kind.as_str() {
            "stream" => {
                cmd.arg("-").arg("+");
            }
            "list" | "zset" => {
                cmd.arg(0).arg(-1);
            }
            _ => {}
        }
        let value: redis::Value = cmd.query_async(&mut r).await.unwrap();
        all.extend(k.as_bytes());
        if kind == "hash" {
            // A record's own contact field is where the contact belongs; leave it out.
            let fields: std::collections::HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
                .arg(&k)
                .query_async(&mut r)
                .await
                .unwrap();
            for (f, v) in fields.into_iter().filter(|(f, _)| f != "contact") {
                all.extend(f.into_bytes());
                all.extend(v);
            }
        } else {
            flatten(&value, &mut all);
        }
    }
    all
}

/// The raw bytes of every string in a reply.
fn flatten(v: &redis::Value, out: &mut Vec<u8>) {
    match v {
        redis::Value::BulkString(b) => out.extend(b),
        redis::Value::SimpleString(s) => out.extend(s.as_bytes()),
        redis::Value::Array(items) | redis::Value::Set(items) => {
            for i in items {
                flatten(i, out);
            }
        }
        redis::Value::Map(pairs) => {
            for (a, b) in pairs {
                flatten(a, out);
                flatten(b, out);
            }
        }
        other => out.extend(format!("{other:?}").into_bytes()),
    }
}

fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_are_unmasked_only_for_those_who_need_them() {
    let env = Env::start().await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    // Fire lanes: emergency management is primary, property office and police co-handle.
    let mut primary = env.subscribe("emergency-management").await;
    let mut co = env.subscribe("property-office").await;
    let id = env
        .report(report("p-1", "city.fire_lane.blocked", lng, lat))
        .await;
    env.wait_status(&id, pb::IncidentStatus::Dispatched).await;

    for who in [
        "source_system:resident-app",
        "department:emergency-management",
        "command_centre:command-centre",
    ] {
        let c = contact(&get(&env, who, &id).await);
        assert_eq!(
            (c.name.as_str(), c.phone.as_str(), c.reporter_id.as_str()),
            ("马先生", PHONE, "r-1"),
            "{who} needs the contact"
        );
    }
    for who in [
        "department:property-office",
        "grid_worker:gw-640202001001001",
        "auditor:inspector",
    ] {
        let Ok(inc) = env
            .incidents()
            .await
            .get_incident(env.as_(
                who,
                pb::GetIncidentRequest {
                    incident_id: id.clone(),
                },
            ))
            .await
        else {
            continue; // the grid worker of another grid does not see the incident at all
        };
        let c = contact(&inc.into_inner());
        assert_eq!(
            (c.name.as_str(), c.phone.as_str(), c.reporter_id.as_str()),
            ("马**", "138****0000", "****"),
            "{who} sees it masked"
        );
    }
    // Lists are masked the same way.
    let listed = env
        .incidents()
        .await
        .list_incidents(env.as_("auditor:inspector", pb::ListIncidentsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(contact(&listed.incidents[0]).phone, "138****0000");
    // The primary's dispatch carries the contact; the co-handler's does not.
    let d = next_dispatch(&mut primary).await;
    assert_eq!(d.report.unwrap().reporter.unwrap().phone, PHONE);
    let d = next_dispatch(&mut co).await;
    assert_eq!(d.role, pb::DispatchRole::CoHandler as i32);
    assert!(d.report.unwrap().reporter.is_none());

    // No stream, index, timeline or audit record holds it: only the record's contact field.
    let everything = everything_but_contacts(&env).await;
    assert!(
        holds(&everything, "city.fire_lane.blocked") && holds(&everything, "zombie car"),
        "the scan sees stored reports"
    );
    for secret in [PHONE, "马先生"] {
        assert!(
            !holds(&everything, secret),
            "{secret} stored outside the record's contact"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn co_handlers_see_contacts_where_the_deployment_allows_it() {
    let env = Env::with_security(&[], |s| s.co_handlers_see_contact = true).await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let mut co = env.subscribe("property-office").await;
    let id = env
        .report(report("p-2", "city.fire_lane.blocked", lng, lat))
        .await;
    env.wait_status(&id, pb::IncidentStatus::Dispatched).await;
    assert_eq!(
        contact(&get(&env, "department:property-office", &id).await).phone,
        PHONE
    );
    let d = next_dispatch(&mut co).await;
    assert_eq!(d.report.unwrap().reporter.unwrap().phone, PHONE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_are_erased_a_retention_period_after_closing() {
    let env = Env::start().await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let closed = env
        .report(report("r-closed", "city.sanitation", lng, lat))
        .await;
    let open = env
        .report(report("r-open", "city.sanitation", lng, lat))
        .await;
    env.wait_status(&closed, pb::IncidentStatus::Dispatched)
        .await;
    env.wait_status(&open, pb::IncidentStatus::Dispatched).await;
    env.supervision()
        .await
        .cancel_incident(env.as_(
            "command_centre:command-centre",
            pb::CancelIncidentRequest {
                incident_id: closed.clone(),
                reason: "reported in error".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let retention = Duration::from_secs(2);
    let (stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(gridroute_router::retention_loop(
        env.store.clone(),
        retention,
        Duration::from_millis(200),
        rx,
    ));
    // Not before the period is over.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let who = "source_system:resident-app";
    assert_eq!(contact(&get(&env, who, &closed).await).phone, PHONE);
    // Then erased, with a timeline entry, an event, and nothing left in Redis.
    let mut erased = None;
    for _ in 0..60 {
        let inc = get(&env, who, &closed).await;
        if inc.report.as_ref().unwrap().reporter.is_none() {
            erased = Some(inc);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let inc = erased.expect("the contact is erased after the retention period");
    let last = inc.timeline.last().unwrap();
    assert_eq!(last.kind, "contact_erased");
    let _ = stop.send(true);
    // The open case keeps its contact.
    assert_eq!(contact(&get(&env, who, &open).await).phone, PHONE);
    let mut r = env.redis().await;
    let p = gridroute_store::keys::partition_of(&closed, common::PARTITIONS).unwrap();
    let field: Option<Vec<u8>> = redis::cmd("HGET")
        .arg(env.store.keys().incident(p, &closed))
        .arg("contact")
        .query_async(&mut r)
        .await
        .unwrap();
    assert!(field.is_none());
    type Entry = (String, Vec<(String, Vec<u8>)>);
    let events: Vec<Entry> = redis::cmd("XRANGE")
        .arg(env.store.keys().events(p))
        .arg("-")
        .arg("+")
        .query_async(&mut r)
        .await
        .unwrap();
    let kinds: Vec<String> = events
        .iter()
        .flat_map(|(_, fields)| fields.iter().filter(|(f, _)| f == "e"))
        .map(|(_, e)| gridroute_store::codec::event_from_stored(e).unwrap().kind)
        .collect();
    assert!(kinds.iter().any(|k| k == "contact_erased"), "{kinds:?}");
}
