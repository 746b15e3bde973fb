//! Open311 GeoReport v2 over a real socket, by a small client that follows the specification's
//! text (form-encoded POST, `.json` and `.xml` resources, the error list): the services come
//! from the table's category catalogue, a request becomes an incident routed like any other,
//! and reading it back shows the department, the deadline, then `closed` once it is resolved.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::Duration;

use common::{Env, http::call};
use gridroute_core::crs::{Crs, convert};
use http::{Method, StatusCode};
use serde_json::Value;

/// POSTs a form as the specification says (application/x-www-form-urlencoded).
async fn post_form(env: &Env, path: &str, form: &[(&str, &str)]) -> common::http::Answer {
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let stream = tokio::net::TcpStream::connect(&env.http_addr)
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(Method::POST)
        .uri(path)
        .header("host", &env.http_addr)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    common::http::Answer {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

async fn get(env: &Env, path: &str) -> common::http::Answer {
    call(&env.http_addr, Method::GET, path, None, None, &[]).await
}

/// A WGS-84 point (what phones send) inside a grid of the sample (whose tables are GCJ-02).
fn phone_point(env: &Env) -> (String, String) {
    let (_, _, lng, lat) = common::grid_point(&env.table(), false);
    let (lng, lat) = convert(Crs::Gcj02, Crs::Wgs84, lng, lat);
    (format!("{lat:.7}"), format!("{lng:.7}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_come_from_the_category_catalogue_in_json_and_xml() {
    let env = Env::without_router().await;
    let r = get(&env, "/open311/v2/services.json").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let services = r.body.as_array().unwrap();
    let car = services
        .iter()
        .find(|s| s["service_code"] == "city.vehicle.abandoned")
        .unwrap();
    assert_eq!(car["service_name"], "僵尸车");
    assert_eq!(car["metadata"], true);
    assert_eq!(car["type"], "realtime");
    let xml = get(&env, "/open311/v2/services.xml").await;
    assert_eq!(xml.headers["content-type"], "text/xml; charset=utf-8");
    assert!(xml.text.starts_with("<?xml"), "{}", xml.text);
    assert!(
        xml.text.contains("<service><service_code>city.vehicle.abandoned</service_code><service_name>僵尸车</service_name>"),
        "{}",
        xml.text
    );
    // A definition with a list attribute and its values.
    let def = get(
        &env,
        "/open311/v2/services/city.environment.noise.construction.json",
    )
    .await;
    assert_eq!(def.status, StatusCode::OK, "{}", def.text);
    let attr = &def.body["attributes"][0];
    assert_eq!(attr["code"], "time_of_day");
    assert_eq!(attr["datatype"], "singlevaluelist");
    assert_eq!(attr["required"], true);
    assert_eq!(attr["values"][1]["key"], "night");
    let def_xml = get(
        &env,
        "/open311/v2/services/city.environment.noise.construction.xml",
    )
    .await;
    assert!(
        def_xml
            .text
            .contains("<values><value><key>day</key><name>白天</name></value>"),
        "{}",
        def_xml.text
    );
    let missing = get(&env, "/open311/v2/services/no.such.json").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.body[0]["code"], 404, "{}", missing.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_round_trip_shows_the_department_the_deadline_then_closed() {
    let env = Env::start().await;
    let key = env.token("source_system:resident-app");
    let (lat, long) = phone_point(&env);
    let posted = post_form(
        &env,
        "/open311/v2/requests.json",
        &[
            ("api_key", &key),
            ("service_code", "city.vehicle.abandoned"),
            ("lat", &lat),
            ("long", &long),
            ("address_string", "大武口区 某小区东门"),
            ("description", "zombie car, flat tyres"),
            ("first_name", "Ma"),
            ("phone", "13800000000"),
            ("media_url", "https://example.gov/photo.jpg"),
            ("attribute[plate_number]", "宁B12345"),
        ],
    )
    .await;
    assert_eq!(posted.status, StatusCode::OK, "{}", posted.text);
    let id = posted.body[0]["service_request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Read back (as the reporting system) until routed: the department and the deadline.
    let path = format!("/open311/v2/requests/{id}.json?api_key={key}");
    let mut request = Value::Null;
    for _ in 0..100 {
        let r = get(&env, &path).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        request = r.body[0].clone();
        if request["agency_responsible"] != "" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(request["status"], "open", "{request}");
    assert_eq!(request["service_code"], "city.vehicle.abandoned");
    assert_eq!(request["service_name"], "僵尸车");
    assert_eq!(request["address"], "大武口区 某小区东门");
    assert_eq!(request["media_url"], "https://example.gov/photo.jpg");
    let incident = env
        .wait_status(&id, gridroute_proto::v1::IncidentStatus::Dispatched)
        .await;
    let dept = incident.department_id.clone();
    let table = env.table();
    let name = &table.departments[table.department(&dept).unwrap() as usize].name;
    assert_eq!(request["agency_responsible"], name.as_str(), "{request}");
    let expected = request["expected_datetime"].as_str().unwrap();
    assert_eq!(
        expected,
        incident.resolve_deadline.unwrap().to_string(),
        "the resolve deadline"
    );
    assert!(
        request["requested_datetime"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    // The department resolves it (over gRPC): Open311 shows it closed, with the note.
    let mut d = env.dispatches().await;
    d.resolve_incident(env.as_(
        &format!("department:{dept}"),
        gridroute_proto::v1::ResolveIncidentRequest {
            incident_id: id.clone(),
            note: "towed away".into(),
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    let r = get(&env, &path).await;
    assert_eq!(r.body[0]["status"], "closed", "{}", r.text);
    assert_eq!(r.body[0]["status_notes"], "towed away");
    // The same in XML, and the token resource answers with the id.
    let xml = get(
        &env,
        &format!("/open311/v2/requests/{id}.xml?api_key={key}"),
    )
    .await;
    assert!(
        xml.text
            .contains(&format!("<request><service_request_id>{id}</service_request_id><status>closed</status><status_notes>towed away</status_notes><service_name>僵尸车</service_name>")),
        "{}",
        xml.text
    );
    let token = get(&env, &format!("/open311/v2/tokens/{id}.json?api_key={key}")).await;
    assert_eq!(
        token.body[0]["service_request_id"],
        id.as_str(),
        "{}",
        token.text
    );
    // A department lists its requests, filtered by service and status.
    let dept_key = env.token(&format!("department:{dept}"));
    let listed = get(
        &env,
        &format!(
            "/open311/v2/requests.json?api_key={dept_key}&service_code=city.vehicle.abandoned&status=closed"
        ),
    )
    .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    let ids: Vec<&str> = listed
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["service_request_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()]);
    let none = get(
        &env,
        &format!("/open311/v2/requests.json?api_key={dept_key}&status=open"),
    )
    .await;
    assert_eq!(none.body, serde_json::json!([]), "{}", none.text);
    // An address without coordinates: the command centre places it.
    let posted = post_form(
        &env,
        "/open311/v2/requests.json",
        &[
            ("api_key", &key),
            ("service_code", "city.vehicle.abandoned"),
            ("address_string", "大武口区 人民路 12 号"),
        ],
    )
    .await;
    assert_eq!(posted.status, StatusCode::OK, "{}", posted.text);
    let id = posted.body[0]["service_request_id"].as_str().unwrap();
    let incident = env
        .wait_status(id, gridroute_proto::v1::IncidentStatus::Dispatched)
        .await;
    let decision = incident.decision.unwrap();
    assert_eq!(decision.department_id, "command-centre");
    assert_eq!(
        decision.outcome,
        gridroute_proto::v1::RouteOutcome::Unlocated as i32
    );
    assert!(
        decision.reasons[0].contains("only an address"),
        "{:?}",
        decision.reasons
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_the_specifications_error_list_with_http_codes() {
    let env = Env::without_router().await;
    let key = env.token("source_system:resident-app");
    let (lat, long) = phone_point(&env);
    let base = [
        ("api_key", key.as_str()),
        ("lat", lat.as_str()),
        ("long", long.as_str()),
    ];
    // No service_code.
    let r = post_form(&env, "/open311/v2/requests.json", &base).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body[0]["code"], 400, "{}", r.text);
    assert!(
        r.body[0]["description"]
            .as_str()
            .unwrap()
            .contains("service_code")
    );
    // A required attribute missing; a value not in the list.
    let mut form = base.to_vec();
    form.push(("service_code", "city.environment.noise.construction"));
    let r = post_form(&env, "/open311/v2/requests.json", &form).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.text.contains("time_of_day"), "{}", r.text);
    form.push(("attribute[time_of_day]", "dusk"));
    let r = post_form(&env, "/open311/v2/requests.xml", &form).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(
        r.text.starts_with("<?xml") && r.text.contains("<errors><error><code>400</code>"),
        "{}",
        r.text
    );
    // No location at all.
    let r = post_form(
        &env,
        "/open311/v2/requests.json",
        &[
            ("api_key", &key),
            ("service_code", "city.vehicle.abandoned"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.text.contains("address_string"), "{}", r.text);
    // No key, or a key that is not a token: 401; a department's key may not report: 403.
    let mut form = base.to_vec();
    form[0] = ("api_key", "");
    form.push(("service_code", "city.vehicle.abandoned"));
    let r = post_form(&env, "/open311/v2/requests.json", &form).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    assert_eq!(r.body[0]["code"], 401);
    let dept_key = env.token("department:water-affairs");
    form[0] = ("api_key", &dept_key);
    let r = post_form(&env, "/open311/v2/requests.json", &form).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    // A reporting system may not list every request, and may not read another's.
    let r = get(&env, &format!("/open311/v2/requests.json?api_key={key}")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = get(
        &env,
        &format!("/open311/v2/requests/01JZZZZZZZZZZZZZZZZZZZZZZZ.json?api_key={key}"),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = get(&env, "/open311/v2/services.csv").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
}
