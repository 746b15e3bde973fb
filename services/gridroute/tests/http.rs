//! The HTTP/JSON face over a real socket, as a script that knows only the endpoint and the
//! README would use it: every RPC answers through the same authorization, the closed loop runs
//! over JSON, errors carry the HTTP status of their gRPC code with the field violations, event
//! streams resume with `Last-Event-ID`, and the OpenAPI document is the one checked in.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use common::{
    Env,
    http::{Events, call, send},
};
use http::{Method, StatusCode};
use serde_json::{Value, json};

fn report_json(env: &Env, request_id: &str) -> Value {
    let (_, _, lng, lat) = common::grid_point(&env.table(), false);
    json!({
        "request_id": request_id,
        "category": "city.vehicle.abandoned",
        "location": {"point": {"latitude": lat, "longitude": lng}},
        "description": "zombie car, flat tyres, two months",
        "reporter": {"name": "马先生", "phone": "13800000000", "reporter_id": "r-1"},
        "urgency": "URGENCY_NORMAL",
    })
}

async fn get(env: &Env, path: &str, who: &str) -> common::http::Answer {
    call(
        &env.http_addr,
        Method::GET,
        path,
        Some(&env.token(who)),
        None,
        &[],
    )
    .await
}

async fn post(env: &Env, path: &str, who: &str, body: Value) -> common::http::Answer {
    call(
        &env.http_addr,
        Method::POST,
        path,
        Some(&env.token(who)),
        Some(&body),
        &[],
    )
    .await
}

/// Reports one incident over HTTP and waits until it is dispatched; its id and department.
async fn reported(env: &Env, request_id: &str) -> (String, String) {
    let r = post(
        env,
        "/v1/incidents",
        "source_system:resident-app",
        report_json(env, request_id),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let id = r.body["incident_id"].as_str().unwrap().to_owned();
    for _ in 0..100 {
        let inc = get(
            env,
            &format!("/v1/incidents/{id}"),
            "command_centre:command-centre",
        )
        .await;
        assert_eq!(inc.status, StatusCode::OK, "{}", inc.text);
        if inc.body["status"] == "INCIDENT_STATUS_DISPATCHED" {
            return (id, inc.body["department_id"].as_str().unwrap().to_owned());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{id} was not dispatched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_answers_over_http_through_the_same_authentication() {
    let env = Env::start().await;
    let doc = gridroute_http::openapi_document().unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let mut calls = 0;
    for (template, ops) in paths {
        let path = template
            .replace("{incident_id}", "01JZZZZZZZZZZZZZZZZZZZZZZZ")
            .replace("{reporter_id}", "r-1");
        for verb in ops.as_object().unwrap().keys() {
            let method = Method::from_bytes(verb.to_ascii_uppercase().as_bytes()).unwrap();
            let body = (method == Method::POST).then(|| {
                if path.ends_with(":batchReport") {
                    json!([])
                } else {
                    json!({})
                }
            });
            let r = call(&env.http_addr, method, &path, None, body.as_ref(), &[]).await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{verb} {path}: {}",
                r.text
            );
            assert_eq!(r.body["error"]["status"], "UNAUTHENTICATED", "{}", r.text);
            assert_eq!(r.body["error"]["code"], 401);
            calls += 1;
        }
    }
    assert_eq!(calls, 28, "every RPC of gridroute.v1 has its HTTP binding");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_closed_loop_runs_over_json() {
    let env = Env::start().await;
    let (id, dept) = reported(&env, "http-1").await;
    let who = format!("department:{dept}");
    // The primary department reads the reporter's phone; another department may not read it.
    let seen = get(&env, &format!("/v1/incidents/{id}"), &who).await;
    assert_eq!(
        seen.body["report"]["reporter"]["phone"], "13800000000",
        "{}",
        seen.text
    );
    assert_eq!(seen.body["status"], "INCIDENT_STATUS_DISPATCHED");
    let accepted = post(
        &env,
        &format!("/v1/incidents/{id}:accept"),
        &who,
        json!({"note": "on our way"}),
    )
    .await;
    assert_eq!(accepted.status, StatusCode::OK, "{}", accepted.text);
    assert_eq!(accepted.body["status"], "INCIDENT_STATUS_ACCEPTED");
    let resolved = post(
        &env,
        &format!("/v1/incidents/{id}:resolve"),
        &who,
        json!({"note": "towed", "request_id": "res-1"}),
    )
    .await;
    assert_eq!(
        resolved.body["status"], "INCIDENT_STATUS_RESOLVED",
        "{}",
        resolved.text
    );
    // Timeline entries carry their typed kind, timestamps in RFC 3339.
    let timeline = resolved.body["timeline"].as_array().unwrap();
    assert!(
        timeline
            .iter()
            .any(|e| e["type"] == "TIMELINE_KIND_ACCEPTED")
    );
    let at = timeline[0]["time"].as_str().unwrap();
    assert!(at.ends_with('Z') && at.contains('T'), "{at}");
    // Lists and figures take their filters from the query string.
    let listed = get(
        &env,
        &format!("/v1/incidents?department_id={dept}&page_size=10"),
        &who,
    )
    .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    let ids: Vec<&str> = listed.body["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["incident_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()]);
    let stats = get(&env, &format!("/v1/stats?department_id={dept}"), &who).await;
    assert_eq!(stats.status, StatusCode::OK, "{}", stats.text);
    assert_eq!(
        stats.body["incident_count"], "1",
        "int64 as a string: {}",
        stats.text
    );
    assert_eq!(stats.body["by_status"]["INCIDENT_STATUS_RESOLVED"], "1");
    // A batch of reports is a JSON array.
    let batch = post(
        &env,
        "/v1/incidents:batchReport",
        "source_system:resident-app",
        json!([report_json(&env, "http-b1"), report_json(&env, "http-b2")]),
    )
    .await;
    assert_eq!(batch.status, StatusCode::OK, "{}", batch.text);
    assert_eq!(
        batch.body["results"].as_array().unwrap().len(),
        2,
        "{}",
        batch.text
    );
    // Explaining a route and reading the table need no incident.
    let explained = post(
        &env,
        "/v1/routes:explain",
        "source_system:resident-app",
        json!({"report": report_json(&env, "explain-1")}),
    )
    .await;
    assert_eq!(explained.status, StatusCode::OK, "{}", explained.text);
    assert_eq!(explained.body["decision"]["department_id"], dept.as_str());
    let table = get(&env, "/v1/tables/current", "table_admin:ops").await;
    assert_eq!(table.status, StatusCode::OK, "{}", table.text);
    assert_eq!(
        table.body["current_version"].as_str().unwrap(),
        env.table().version
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_the_http_status_of_their_grpc_code_and_the_field_violations() {
    let env = Env::start().await;
    // INVALID_ARGUMENT → 400 with the field violations of google.rpc.BadRequest.
    let mut bad = report_json(&env, "bad-1");
    bad["category"] = json!("");
    let r = post(&env, "/v1/incidents", "source_system:resident-app", bad).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.body["error"]["status"], "INVALID_ARGUMENT");
    let details = r.body["error"]["details"].as_array().unwrap();
    let bad_request = details
        .iter()
        .find(|d| d["@type"] == "type.googleapis.com/google.rpc.BadRequest")
        .unwrap_or_else(|| panic!("{}", r.text));
    assert!(
        bad_request["field_violations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["field"] == "category"),
        "{}",
        r.text
    );
    // A field that does not exist is named.
    let mut unknown = report_json(&env, "bad-2");
    unknown["colour"] = json!("red");
    let r = post(&env, "/v1/incidents", "source_system:resident-app", unknown).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.text.contains("colour"), "{}", r.text);
    // Not JSON at all.
    let r = call(
        &env.http_addr,
        Method::POST,
        "/v1/incidents",
        Some(&env.token("source_system:resident-app")),
        None,
        &[],
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "an empty report: {}",
        r.text
    );
    // UNAUTHENTICATED → 401, with the failed check and never the token.
    let r = call(
        &env.http_addr,
        Method::GET,
        "/v1/stats",
        Some("not.a.token"),
        None,
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    assert!(!r.text.contains("not.a.token"), "{}", r.text);
    // ALREADY_EXISTS → 409: the same request id with another payload.
    let (id, dept) = reported(&env, "dup-1").await;
    let mut other = report_json(&env, "dup-1");
    other["description"] = json!("something else");
    let r = post(&env, "/v1/incidents", "source_system:resident-app", other).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    // PERMISSION_DENIED → 403: another department's incident, existing or not.
    let other_dept = if dept == "water-affairs" {
        "department:property-office"
    } else {
        "department:water-affairs"
    };
    let r = get(&env, &format!("/v1/incidents/{id}"), other_dept).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = post(
        &env,
        &format!("/v1/incidents/{id}:accept"),
        other_dept,
        json!({}),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    // FAILED_PRECONDITION → 400: resolving twice is not a state the incident is in.
    let who = format!("department:{dept}");
    let r = post(
        &env,
        &format!("/v1/incidents/{id}:verify"),
        "command_centre:command-centre",
        json!({"passed": true}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(
        r.body["error"]["status"], "FAILED_PRECONDITION",
        "{}",
        r.text
    );
    // NOT_FOUND → 404: no such path; 405 with Allow: a path with other verbs.
    let r = get(&env, "/v1/nowhere", &who).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = call(
        &env.http_addr,
        Method::DELETE,
        &format!("/v1/incidents/{id}"),
        Some(&env.token(&who)),
        None,
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{}", r.text);
    assert_eq!(r.headers["allow"], "GET");
    assert_eq!(r.body["error"]["code"], 405, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_with_retry_after() {
    use gridroute_api::limits::{LimitConfig, Limits, Rate};
    use gridroute_core::access::Kind;
    let env = Env::with_security(&[], |s| {
        s.limits = Limits::new(LimitConfig {
            rates: std::collections::HashMap::from([(
                Kind::Auditor,
                Rate {
                    per_second: 0.5,
                    burst: 1.0,
                },
            )]),
            streams_per_principal: 4,
        });
    })
    .await;
    let first = get(&env, "/v1/stats", "auditor:inspector").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let second = get(&env, "/v1/stats", "auditor:inspector").await;
    assert_eq!(
        second.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        second.text
    );
    let after: u64 = second.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&after), "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_event_streams_that_resume_after_the_last_event_id() {
    let env = Env::start().await;
    let (first, dept) = reported(&env, "sse-1").await;
    let who = format!("department:{dept}");
    let token = env.token(&who);
    let open = |headers: Vec<(&'static str, String)>| {
        let (addr, token) = (env.http_addr.clone(), token.clone());
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            send(
                &addr,
                Method::GET,
                "/v1/dispatches:subscribe",
                Some(&token),
                None,
                &h,
            )
            .await
        }
    };
    let response = open(vec![]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut events = Events::new(response);
    let e = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .unwrap()
        .unwrap();
    let dispatch: Value = serde_json::from_str(&e.data).unwrap();
    assert_eq!(dispatch["incident_id"], first.as_str());
    assert_eq!(
        e.id,
        dispatch["cursor"].as_str().unwrap(),
        "the id is the cursor"
    );
    assert_eq!(dispatch["kind"], "DISPATCH_KIND_NEW");
    drop(events);
    // While disconnected, a second incident; resuming after the first delivers only it.
    let (second, _) = reported(&env, "sse-2").await;
    let response = open(vec![("last-event-id", e.id.clone())]).await;
    let mut events = Events::new(response);
    let next = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .unwrap()
        .unwrap();
    let dispatch: Value = serde_json::from_str(&next.data).unwrap();
    assert_eq!(dispatch["incident_id"], second.as_str(), "{}", next.data);
    // Another department's stream is refused before it starts.
    let other = if dept == "water-affairs" {
        "department:property-office"
    } else {
        "department:water-affairs"
    };
    let r = call(
        &env.http_addr,
        Method::GET,
        &format!("/v1/dispatches:subscribe?department_id={dept}"),
        Some(&env.token(other)),
        None,
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_served_and_is_the_one_checked_in() {
    let env = Env::without_router().await;
    let r = call(
        &env.http_addr,
        Method::GET,
        "/openapi.json",
        None,
        None,
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let generated = gridroute_http::openapi_document().unwrap();
    assert_eq!(r.body, generated);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    let pretty = serde_json::to_string_pretty(&generated).unwrap() + "\n";
    if checked_in != pretty {
        if std::env::var_os("GRIDROUTE_BLESS").is_some() {
            std::fs::write(path, &pretty).unwrap();
        } else {
            panic!(
                "docs/openapi.json is not what the protos generate: run \
                 GRIDROUTE_BLESS=1 cargo test -p gridroute --test integration -- http::openapi"
            );
        }
    }
    assert_eq!(generated["openapi"], "3.0.3");
    assert!(generated["paths"]["/v1/incidents/{incident_id}:accept"]["post"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_is_an_event_stream_and_storage_down_is_503() {
    let mut env = Env::start().await;
    let centre = "command_centre:command-centre";
    let token = env.token(centre);
    let response = send(
        &env.http_addr,
        Method::GET,
        "/v1/incidents:watch?start=WATCH_START_EARLIEST",
        Some(&token),
        None,
        &[],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut events = Events::new(response);
    let (id, _) = reported(&env, "watch-1").await;
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        let e = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .unwrap()
            .unwrap();
        let event: Value = serde_json::from_str(&e.data).unwrap();
        assert_eq!(event["incident_id"], id.as_str());
        assert_eq!(e.id, event["cursor"].as_str().unwrap());
        kinds.push(event["event"]["type"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        kinds,
        ["TIMELINE_KIND_REPORTED", "TIMELINE_KIND_DISPATCHED"]
    );
    drop(events);
    // Storage unreachable: UNAVAILABLE, 503, never a 200 with nothing in it.
    env.redis.stop();
    let r = get(&env, &format!("/v1/incidents/{id}"), centre).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(r.body["error"]["status"], "UNAVAILABLE", "{}", r.text);
}
