//! Open311 GeoReport v2 for civic apps (FixMyStreet, SeeClickFix and their mobile apps):
//! services from the routing table's category catalogue, service requests as gridroute
//! incidents. Every call goes through the same RPCs, authentication and authorization as the
//! gRPC API: `api_key` is the reporting system's bearer token (an `authorization` header works
//! too).
//!
//! Choices where the specification leaves room: a request's id is the incident id, known at
//! once, so `POST requests` answers `service_request_id` (and `tokens/{token}` answers for the
//! token equal to it); a request with `address_string` but no `lat`/`long` goes to the command
//! centre, which places it (gridroute does not geocode); `status` is `closed` once the
//! incident is resolved, verified, closed, cancelled or merged; listing without
//! `service_request_id` needs a principal that may list incidents (department, command centre,
//! auditor).

use std::collections::HashMap;

use axum::{
    extract::{Path, Query, State},
    response::{IntoResponse, Response},
};
use gridroute_api::authz::Connection;
use gridroute_core::{RoutingTable, rules::CategorySpec};
use gridroute_proto::v1 as pb;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use tonic::Status;

use crate::Face;

/// The two formats of every Open311 resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Xml,
}

/// `name.json` / `name.xml` → (name, format).
fn split(file: &str) -> Option<(&str, Format)> {
    match file.rsplit_once('.')? {
        (name, "json") => Some((name, Format::Json)),
        (name, "xml") => Some((name, Format::Xml)),
        _ => None,
    }
}

/// An Open311 error list with its HTTP status.
fn error(format: Format, status: StatusCode, description: &str) -> Response {
    let code = status.as_u16();
    let list = json!([{"code": code, "description": description}]);
    let mut r = render(format, "errors", "error", &list);
    *r.status_mut() = status;
    r
}

fn from_status(format: Format, s: &Status) -> Response {
    let status = crate::transcode::http_status(s.code());
    let mut r = error(format, status, s.message());
    crate::transcode::set_retry_after(&mut r, s);
    r
}

/// A list of objects as JSON, or as XML under `<root>` with one `<item>` per object.
fn render(format: Format, root: &str, item: &str, list: &Value) -> Response {
    match format {
        Format::Json => (
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            list.to_string(),
        )
            .into_response(),
        Format::Xml => {
            let mut out = format!("<?xml version=\"1.0\" encoding=\"utf-8\"?><{root}>");
            for v in list.as_array().into_iter().flatten() {
                xml_element(&mut out, item, v);
            }
            out.push_str(&format!("</{root}>"));
            ([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], out).into_response()
        }
    }
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The order of elements in the specification's examples (for requests, services, service
/// definitions, attributes, values and errors); other keys follow.
const ORDER: [&[&str]; 6] = [
    &[
        "service_request_id",
        "token",
        "status",
        "status_notes",
        "service_name",
        "service_code",
        "description",
        "agency_responsible",
        "service_notice",
        "requested_datetime",
        "updated_datetime",
        "expected_datetime",
        "address",
        "address_id",
        "zipcode",
        "lat",
        "long",
        "media_url",
        "account_id",
    ],
    &[
        "service_code",
        "service_name",
        "description",
        "metadata",
        "type",
        "keywords",
        "group",
    ],
    &["service_code", "attributes"],
    &[
        "variable",
        "code",
        "datatype",
        "required",
        "datatype_description",
        "order",
        "description",
        "values",
    ],
    &["key", "name"],
    &["code", "description"],
];

fn ordered(o: &serde_json::Map<String, Value>) -> Vec<(&String, &Value)> {
    let order = ORDER
        .iter()
        .find(|order| o.keys().all(|k| order.contains(&k.as_str())))
        .copied()
        .unwrap_or(&[]);
    let mut items: Vec<(&String, &Value)> = o.iter().collect();
    items.sort_by_key(|(k, _)| order.iter().position(|x| x == k).unwrap_or(usize::MAX));
    items
}

/// One element: objects become child elements, arrays repeat their singular child (`values` →
/// `value`, `attributes` → `attribute`), null is empty.
fn xml_element(out: &mut String, name: &str, v: &Value) {
    out.push_str(&format!("<{name}>"));
    match v {
        Value::Null => {}
        Value::Object(o) => {
            for (k, v) in ordered(o) {
                xml_element(out, k, v);
            }
        }
        Value::Array(items) => {
            let child = name.strip_suffix('s').unwrap_or(name);
            for i in items {
                xml_element(out, child, i);
            }
        }
        Value::String(s) => out.push_str(&xml_escape(s)),
        other => out.push_str(&other.to_string()),
    }
    out.push_str(&format!("</{name}>"));
}

fn service_json(c: &CategorySpec) -> Value {
    json!({
        "service_code": c.code,
        "service_name": c.name,
        "description": c.description,
        "metadata": !c.attributes.is_empty(),
        "type": "realtime",
        "keywords": c.keywords.join(","),
        "group": c.group,
    })
}

fn definition_json(c: &CategorySpec) -> Value {
    let attributes: Vec<Value> = c
        .attributes
        .iter()
        .enumerate()
        .map(|(i, a)| {
            json!({
                "variable": true,
                "code": a.code,
                "datatype": a.datatype.as_str(),
                "required": a.required,
                "datatype_description": "",
                "order": i + 1,
                "description": a.description,
                "values": a.values.iter().map(|v| json!({"key": v.key, "name": v.name})).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({"service_code": c.code, "attributes": attributes})
}

/// The caller's credentials: `api_key` as a bearer token, else its own `authorization` header.
fn credentials(api_key: Option<&str>, headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    if let Some(k) = api_key.filter(|k| !k.is_empty())
        && let Ok(v) = HeaderValue::from_str(&format!("Bearer {k}"))
    {
        out.insert(header::AUTHORIZATION, v);
    } else if let Some(v) = headers.get(header::AUTHORIZATION) {
        out.insert(header::AUTHORIZATION, v.clone());
    }
    for name in ["traceparent", "tracestate"] {
        if let Some(v) = headers.get(name) {
            out.insert(name, v.clone());
        }
    }
    out
}

/// `GET /open311/v2/{services|requests}.{json|xml}`.
pub(crate) async fn get_collection(
    State(face): State<Face>,
    crate::Peer(conn): crate::Peer,
    Path(file): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let Some((name, format)) = split(&file) else {
        return error(Format::Json, StatusCode::NOT_FOUND, "use .json or .xml");
    };
    match name {
        "services" => {
            let table = face.tables.load();
            let list: Vec<Value> = table.categories.iter().map(service_json).collect();
            render(format, "services", "service", &Value::Array(list))
        }
        "requests" => list_requests(&face, &conn, &q, &headers, format).await,
        _ => error(format, StatusCode::NOT_FOUND, "no such resource"),
    }
}

/// `GET /open311/v2/services/{code}.{json|xml}`: the service definition.
pub(crate) async fn get_service(State(face): State<Face>, Path(file): Path<String>) -> Response {
    let Some((code, format)) = split(&file) else {
        return error(Format::Json, StatusCode::NOT_FOUND, "use .json or .xml");
    };
    let table = face.tables.load();
    match table.category(code) {
        Some(c) => match format {
            Format::Json => (
                [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
                definition_json(c).to_string(),
            )
                .into_response(),
            Format::Xml => {
                let mut out = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>");
                xml_element(&mut out, "service_definition", &definition_json(c));
                ([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], out).into_response()
            }
        },
        None => error(
            format,
            StatusCode::NOT_FOUND,
            &format!("no service {code:?}"),
        ),
    }
}

/// `POST /open311/v2/requests.{json|xml}` (form-encoded): a new report.
pub(crate) async fn post_request(
    State(face): State<Face>,
    crate::Peer(conn): crate::Peer,
    Path(file): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(("requests", format)) = split(&file) else {
        return error(Format::Json, StatusCode::NOT_FOUND, "no such resource");
    };
    let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let Some(code) = field("service_code") else {
        return error(format, StatusCode::BAD_REQUEST, "service_code is required");
    };
    let table = face.tables.load();
    let Some(service) = table.category(&code) else {
        return error(
            format,
            StatusCode::BAD_REQUEST,
            &format!("service_code {code:?} is not a service of this city"),
        );
    };
    // A point when the app has one; an address alone goes to the command centre, which places
    // it (gridroute does not geocode).
    let point = match (field("lat"), field("long")) {
        (Some(lat), Some(long)) => match (lat.parse::<f64>(), long.parse::<f64>()) {
            (Ok(lat), Ok(long)) => Some(pb::location::Kind::Point(pb::LatLng {
                latitude: lat,
                longitude: long,
            })),
            _ => {
                return error(
                    format,
                    StatusCode::BAD_REQUEST,
                    "lat and long are WGS-84 decimal degrees",
                );
            }
        },
        (None, None) if field("address_string").is_some() => None,
        _ => {
            return error(
                format,
                StatusCode::BAD_REQUEST,
                "a location is required: lat and long, or address_string",
            );
        }
    };
    let labels = match attributes(service, &form) {
        Ok(l) => l,
        Err(why) => return error(format, StatusCode::BAD_REQUEST, &why),
    };
    let name = [field("first_name"), field("last_name")]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    let report = pb::ReportIncidentRequest {
        // Open311 has no idempotency key: each POST is a new report.
        request_id: format!("open311-{}", ulid::Ulid::new()),
        category: code.clone(),
        location: Some(pb::Location {
            kind: point,
            coordinate_system: pb::CoordinateSystem::Wgs84 as i32,
            address: field("address_string").unwrap_or_default(),
            ..Default::default()
        }),
        description: field("description").unwrap_or_default(),
        reporter: Some(pb::ReporterContact {
            name,
            phone: field("phone").unwrap_or_default(),
            reporter_id: field("account_id")
                .or_else(|| field("email"))
                .or_else(|| field("device_id"))
                .unwrap_or_default(),
        }),
        attachment_urls: field("media_url").into_iter().collect(),
        urgency: pb::Urgency::Normal as i32,
        labels,
        ..Default::default()
    };
    let creds = credentials(field("api_key").as_deref(), &headers);
    let answer: Result<pb::ReportIncidentResponse, Status> = face
        .transcoder
        .unary(
            "/gridroute.v1.IncidentService/ReportIncident",
            &report,
            &creds,
            conn.clone(),
        )
        .await;
    match answer {
        Ok(r) => render(
            format,
            "service_requests",
            "request",
            &json!([{
                "service_request_id": r.incident_id,
                "service_notice": "",
                "account_id": Value::Null,
            }]),
        ),
        Err(s) => from_status(format, &s),
    }
}

/// The attributes of a form (`attribute[code]`, `attribute[code][]` for several values) as
/// report labels `attribute.code`, checked against the service definition.
fn attributes(
    service: &CategorySpec,
    form: &[(String, String)],
) -> Result<HashMap<String, String>, String> {
    let mut given: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in form {
        if let Some(rest) = k.strip_prefix("attribute[") {
            let code = rest.trim_end_matches("[]").trim_end_matches(']');
            given.entry(code.to_owned()).or_default().push(v.clone());
        }
    }
    let mut labels = HashMap::new();
    for a in &service.attributes {
        let values = given.remove(&a.code).unwrap_or_default();
        let values: Vec<String> = values.into_iter().filter(|v| !v.is_empty()).collect();
        if values.is_empty() {
            if a.required {
                return Err(format!(
                    "attribute[{}] is required: {}",
                    a.code, a.description
                ));
            }
            continue;
        }
        if a.datatype.is_list()
            && let Some(bad) = values
                .iter()
                .find(|v| !a.values.iter().any(|x| &x.key == *v))
        {
            return Err(format!(
                "attribute[{}]: {bad:?} is not one of its values",
                a.code
            ));
        }
        labels.insert(format!("attribute.{}", a.code), values.join(","));
    }
    if let Some(code) = given.keys().next() {
        return Err(format!(
            "attribute[{code}] is not an attribute of {}",
            service.code
        ));
    }
    Ok(labels)
}

/// An incident as an Open311 service request.
fn request_json(table: &RoutingTable, inc: &pb::Incident) -> Value {
    use pb::IncidentStatus as S;
    let status = S::try_from(inc.status).unwrap_or_default();
    let closed = matches!(
        status,
        S::Resolved | S::Verified | S::Closed | S::Cancelled | S::Merged
    );
    let report = inc.report.clone().unwrap_or_default();
    let (lat, long) = match report.location.as_ref().and_then(|l| l.kind.clone()) {
        Some(pb::location::Kind::Point(p)) => (json!(p.latitude), json!(p.longitude)),
        _ => (Value::Null, Value::Null),
    };
    let time = |t: &Option<prost_types::Timestamp>| {
        t.as_ref()
            .map_or(Value::Null, |t| Value::String(t.to_string()))
    };
    let last = inc.timeline.last();
    // The department handling it; once it is closed (or merged), the one the decision named.
    let name = |id: &str| {
        table
            .department(id)
            .map(|d| table.departments[d as usize].name.clone())
    };
    let agency = name(&inc.department_id)
        .or_else(|| inc.decision.as_ref().and_then(|d| name(&d.department_id)))
        .unwrap_or_default();
    let service_name = table
        .category(&report.category)
        .map_or_else(|| report.category.clone(), |c| c.name.clone());
    json!({
        "service_request_id": inc.incident_id,
        "status": if closed { "closed" } else { "open" },
        "status_notes": last.map(|e| e.detail.clone()).unwrap_or_default(),
        "service_name": service_name,
        "service_code": report.category,
        "description": report.description,
        "agency_responsible": agency,
        "service_notice": "",
        "requested_datetime": time(&inc.reported_time),
        "updated_datetime": last.map_or(Value::Null, |e| time(&e.time)),
        "expected_datetime": time(&inc.resolve_deadline),
        "address": report.location.as_ref().map(|l| l.address.clone()).unwrap_or_default(),
        "address_id": "",
        "zipcode": "",
        "lat": lat,
        "long": long,
        "media_url": report.attachment_urls.first().cloned().unwrap_or_default(),
    })
}

async fn get_incident(
    face: &Face,
    conn: &Connection,
    creds: &HeaderMap,
    id: &str,
) -> Result<pb::Incident, Status> {
    face.transcoder
        .unary(
            "/gridroute.v1.IncidentService/GetIncident",
            &pb::GetIncidentRequest {
                incident_id: id.to_owned(),
            },
            creds,
            conn.clone(),
        )
        .await
}

fn rfc3339(text: &str) -> Result<prost_types::Timestamp, String> {
    text.parse::<prost_types::Timestamp>()
        .map_err(|_| format!("{text:?} is not a W3C date-time (2026-12-02T09:30:00Z)"))
}

async fn list_requests(
    face: &Face,
    conn: &Connection,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    format: Format,
) -> Response {
    let creds = credentials(q.get("api_key").map(String::as_str), headers);
    let table = face.tables.load_full();
    let mut incidents = Vec::new();
    if let Some(ids) = q.get("service_request_id").filter(|s| !s.is_empty()) {
        for id in ids.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match get_incident(face, conn, &creds, id).await {
                Ok(i) => incidents.push(i),
                Err(s) => return from_status(format, &s),
            }
        }
    } else {
        // The specification's default window: the last 90 days; at most 1000 requests.
        let now = std::time::SystemTime::now();
        let start = match q.get("start_date") {
            Some(t) => match rfc3339(t) {
                Ok(t) => t,
                Err(why) => return error(format, StatusCode::BAD_REQUEST, &why),
            },
            None => prost_types::Timestamp::from(now - std::time::Duration::from_secs(90 * 86_400)),
        };
        let end = match q.get("end_date").map(|t| rfc3339(t)).transpose() {
            Ok(t) => t,
            Err(why) => return error(format, StatusCode::BAD_REQUEST, &why),
        };
        let mut page_token = String::new();
        loop {
            let page: Result<pb::ListIncidentsResponse, Status> = face
                .transcoder
                .unary(
                    "/gridroute.v1.IncidentService/ListIncidents",
                    &pb::ListIncidentsRequest {
                        start_time: Some(start),
                        end_time: end,
                        page_size: 500,
                        page_token: page_token.clone(),
                        ..Default::default()
                    },
                    &creds,
                    conn.clone(),
                )
                .await;
            match page {
                Ok(p) => {
                    incidents.extend(p.incidents);
                    if p.next_page_token.is_empty() || incidents.len() >= 1000 {
                        break;
                    }
                    page_token = p.next_page_token;
                }
                Err(s) => return from_status(format, &s),
            }
        }
    }
    let codes: Vec<&str> = q
        .get("service_code")
        .map(|c| c.split(',').map(str::trim).collect())
        .unwrap_or_default();
    let wanted_status = q.get("status").map(String::as_str);
    let list: Vec<Value> = incidents
        .iter()
        .map(|i| request_json(&table, i))
        .filter(|r| codes.is_empty() || codes.contains(&r["service_code"].as_str().unwrap_or("")))
        .filter(|r| {
            wanted_status
                .is_none_or(|s| s.split(',').any(|s| r["status"].as_str() == Some(s.trim())))
        })
        .take(1000)
        .collect();
    render(format, "service_requests", "request", &Value::Array(list))
}

/// `GET /open311/v2/requests/{id}.{json|xml}` and `GET /open311/v2/tokens/{token}.{json|xml}`.
pub(crate) async fn get_one(
    State(face): State<Face>,
    crate::Peer(conn): crate::Peer,
    Path((kind, file)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let Some((id, format)) = split(&file) else {
        return error(Format::Json, StatusCode::NOT_FOUND, "use .json or .xml");
    };
    let creds = credentials(q.get("api_key").map(String::as_str), &headers);
    let inc = match get_incident(&face, &conn, &creds, id).await {
        Ok(i) => i,
        Err(s) => return from_status(format, &s),
    };
    match kind.as_str() {
        "requests" => {
            let table = face.tables.load_full();
            render(
                format,
                "service_requests",
                "request",
                &json!([request_json(&table, &inc)]),
            )
        }
        "tokens" => render(
            format,
            "service_requests",
            "request",
            &json!([{"service_request_id": inc.incident_id, "token": id}]),
        ),
        _ => error(format, StatusCode::NOT_FOUND, "no such resource"),
    }
}
