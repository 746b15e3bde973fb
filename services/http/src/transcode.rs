//! HTTP/JSON ↔ gRPC: a request found by its binding becomes the RPC's request message (path
//! variables, query parameters, JSON body, in the proto3 JSON mapping), which is called in
//! process through the same authorization layer and service implementation as a gRPC call; the
//! answer becomes JSON, Server-Sent Events for streams, or an error with the HTTP status of its
//! gRPC code.

use std::{collections::VecDeque, convert::Infallible, time::Instant};

use axum::response::{
    IntoResponse, Response,
    sse::{Event, KeepAlive, Sse},
};
use bytes::{Buf, Bytes, BytesMut};
use futures_util::stream::{self, Stream, StreamExt};
use gridroute_api::authz::{AuthService, Connection};
use gridroute_telemetry::names;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use prost::Message;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, Kind, MessageDescriptor, SerializeOptions,
};
use serde_json::{Map, Value, json};
use tonic::{Code, Status, body::Body as GrpcBody, service::Routes};
use tower::ServiceExt;
use tracing::Instrument;

use crate::bindings::{Binding, Bindings, Found};

/// The largest request body (a routing table is the largest request there is).
pub const MAX_BODY_BYTES: usize = gridroute_api::tables::MAX_TABLE_BYTES;

/// The gRPC services behind the authorization layer, as the HTTP face calls them.
pub type Grpc = AuthService<Routes>;

/// What the HTTP face needs to transcode: the descriptors, the bindings, the services.
#[derive(Debug, Clone)]
pub struct Transcoder {
    pool: DescriptorPool,
    bindings: Bindings,
    grpc: Grpc,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

/// The proto3 JSON gridroute writes: field names as in the protos (the same as gRPC clients
/// see), enums by name, 64-bit integers as strings, every field present.
fn json_options() -> SerializeOptions {
    SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(false)
}

impl Transcoder {
    /// A transcoder calling `grpc`; streams end when `shutdown` turns true.
    pub fn new(
        pool: DescriptorPool,
        bindings: Bindings,
        grpc: Grpc,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            pool,
            bindings,
            grpc,
            shutdown,
        }
    }

    /// Serves one HTTP request under `/v1/`.
    pub async fn handle(&self, conn: Connection, req: http::Request<axum::body::Body>) -> Response {
        let started = Instant::now();
        let (parts, body) = req.into_parts();
        let (binding, vars) = match self.bindings.find(&parts.method, parts.uri.path()) {
            Found::Rpc(b, vars) => (b, vars),
            Found::WrongVerb(allowed) => {
                let allow = allowed
                    .iter()
                    .map(http::Method::as_str)
                    .collect::<Vec<_>>()
                    .join(", ");
                let status = Status::unimplemented(format!(
                    "{} is not allowed on {}: use {allow}",
                    parts.method,
                    parts.uri.path()
                ));
                let mut r = json_response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &error_body(&self.pool, &status, StatusCode::METHOD_NOT_ALLOWED),
                );
                if let Ok(v) = HeaderValue::from_str(&allow) {
                    r.headers_mut().insert(header::ALLOW, v);
                }
                record("unmatched", r.status(), started);
                return r;
            }
            Found::Nothing => {
                let r = error_response(
                    &self.pool,
                    &Status::not_found(format!("no such path: {:?}", parts.uri.path())),
                );
                record("unmatched", r.status(), started);
                return r;
            }
        };
        let span = tracing::info_span!(
            "http.request",
            http.method = %parts.method,
            http.route = %binding.template,
            rpc.method = %binding.grpc_path,
        );
        let r = self
            .call(binding, vars, conn, parts, body)
            .instrument(span)
            .await;
        record(&binding.template, r.status(), started);
        r
    }

    /// Calls the RPC at `grpc_path` in process with `messages` (one, or a client stream), the
    /// caller's `headers` as metadata and its connection.
    async fn invoke<M: Message>(
        &self,
        grpc_path: &str,
        messages: &[M],
        headers: &HeaderMap,
        conn: Connection,
    ) -> http::Response<GrpcBody> {
        let mut frames = BytesMut::new();
        for m in messages {
            let len = m.encoded_len();
            frames.extend_from_slice(&[0]);
            frames.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
            m.encode(&mut frames).unwrap_or_default();
        }
        let mut req = http::Request::new(GrpcBody::new(http_body_util::Full::new(frames.freeze())));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = http::Uri::try_from(grpc_path).unwrap_or_default();
        *req.version_mut() = http::Version::HTTP_2;
        copy_metadata(headers, req.headers_mut());
        req.extensions_mut().insert(conn);
        match self.grpc.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        }
    }

    /// Calls a unary RPC with a typed request (Open311's calls), as [`Self::handle`] does for
    /// JSON: same metadata, same authorization.
    pub async fn unary<Req: Message, Res: Message + Default>(
        &self,
        grpc_path: &str,
        request: &Req,
        headers: &HeaderMap,
        conn: Connection,
    ) -> Result<Res, Status> {
        let response = self
            .invoke(grpc_path, std::slice::from_ref(request), headers, conn)
            .await;
        let mut data = unary_answer(response).await?;
        let payload =
            frame_payload(&mut data).ok_or_else(|| Status::internal("no response message"))?;
        Res::decode(payload).map_err(|e| Status::internal(e.to_string()))
    }

    async fn call(
        &self,
        binding: &Binding,
        vars: Vec<(String, String)>,
        conn: Connection,
        parts: http::request::Parts,
        body: axum::body::Body,
    ) -> Response {
        let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
            Ok(b) => b,
            Err(e) => {
                return error_response(
                    &self.pool,
                    &Status::invalid_argument(format!("request body: {e}")),
                );
            }
        };
        let messages = match request_messages(binding, vars, &parts, &body) {
            Ok(m) => m,
            Err(status) => return error_response(&self.pool, &status),
        };
        let response = self
            .invoke(&binding.grpc_path, &messages, &parts.headers, conn)
            .await;
        if let Some(status) = Status::from_header_map(response.headers())
            && status.code() != Code::Ok
        {
            return error_response(&self.pool, &status);
        }
        let output = binding.method.output();
        if binding.server_streaming() {
            let events = sse_events(
                response.into_body(),
                output,
                self.pool.clone(),
                self.shutdown.clone(),
            );
            return Sse::new(events)
                .keep_alive(KeepAlive::default())
                .into_response();
        }
        let mut data = match unary_answer(response).await {
            Ok(d) => d,
            Err(status) => return error_response(&self.pool, &status),
        };
        match next_message(&mut data, &output) {
            Some(Ok(m)) => json_response(StatusCode::OK, &to_json(&m)),
            Some(Err(e)) => error_response(&self.pool, &Status::internal(e)),
            None => error_response(&self.pool, &Status::internal("no response message")),
        }
    }
}

/// The body of a unary RPC's answer (its length-prefixed message), or the status it failed
/// with, whether in the headers (trailers-only) or in the trailers.
async fn unary_answer(response: http::Response<GrpcBody>) -> Result<Bytes, Status> {
    if let Some(status) = Status::from_header_map(response.headers())
        && status.code() != Code::Ok
    {
        return Err(status);
    }
    let collected = response
        .into_body()
        .collect()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    if let Some(status) = collected.trailers().and_then(Status::from_header_map)
        && status.code() != Code::Ok
    {
        return Err(status);
    }
    Ok(collected.to_bytes())
}

/// Counts an HTTP request by its route template and status.
pub(crate) fn record(route: &str, status: StatusCode, started: Instant) {
    metrics::counter!(
        names::HTTP_REQUESTS_TOTAL,
        "route" => route.to_owned(),
        "status" => status.as_u16().to_string()
    )
    .increment(1);
    metrics::histogram!(names::HTTP_DURATION_SECONDS, "route" => route.to_owned())
        .record(started.elapsed().as_secs_f64());
}

/// The headers an HTTP request passes to the RPC as metadata: credentials, trace context, the
/// rest of the caller's own headers; never those that describe the HTTP message itself.
fn copy_metadata(from: &HeaderMap, to: &mut HeaderMap) {
    const NOT_METADATA: [&str; 14] = [
        "host",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "transfer-encoding",
        "content-type",
        "content-length",
        "content-encoding",
        "accept",
        "accept-encoding",
        "grpc-encoding",
        "grpc-accept-encoding",
        "last-event-id",
    ];
    for (name, value) in from {
        if !NOT_METADATA.contains(&name.as_str()) {
            to.append(name.clone(), value.clone());
        }
    }
    to.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    to.insert(header::TE, HeaderValue::from_static("trailers"));
}

/// The request message(s) of a call: the JSON body (an array for a client stream), the query
/// string for fields the body does not carry, the path variables, and `Last-Event-ID` as the
/// cursor of a stream that resumes.
fn request_messages(
    binding: &Binding,
    vars: Vec<(String, String)>,
    parts: &http::request::Parts,
    body: &Bytes,
) -> Result<Vec<DynamicMessage>, Status> {
    let input = binding.method.input();
    let parsed: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(body)
            .map_err(|e| Status::invalid_argument(format!("the body is not JSON: {e}")))?
    };
    let bodies: Vec<Map<String, Value>> = match (binding.body.as_deref(), parsed) {
        (None, Value::Null) => vec![Map::new()],
        (None, _) => {
            return Err(Status::invalid_argument(format!(
                "{} {} takes no body: give the fields as query parameters",
                binding.verb, binding.template
            )));
        }
        (Some(_), Value::Null) if binding.method.is_client_streaming() => Vec::new(),
        (Some(_), Value::Null) => vec![Map::new()],
        (Some("*"), Value::Array(items)) if binding.method.is_client_streaming() => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::Object(o) => Ok(o),
                _ => Err(Status::invalid_argument(format!(
                    "item {i} of the body is not an object"
                ))),
            })
            .collect::<Result<_, _>>()?,
        (Some(_), _) if binding.method.is_client_streaming() => {
            return Err(Status::invalid_argument(
                "the body is a JSON array of requests",
            ));
        }
        (Some("*"), Value::Object(o)) => vec![o],
        (Some("*"), _) => {
            return Err(Status::invalid_argument("the body is a JSON object"));
        }
        (Some(field), v) => {
            let mut o = Map::new();
            o.insert(field.to_owned(), v);
            vec![o]
        }
    };
    let query = if binding.body.as_deref() == Some("*") {
        Map::new()
    } else {
        query_fields(&input, parts.uri.query().unwrap_or(""))?
    };
    let last_event_id = parts
        .headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty());
    bodies
        .into_iter()
        .map(|mut o| {
            for (k, v) in &query {
                o.entry(k.clone()).or_insert_with(|| v.clone());
            }
            for (field, value) in &vars {
                o.insert(field.clone(), Value::String(value.clone()));
            }
            if let Some(id) = last_event_id
                && input.get_field_by_name("cursor").is_some()
                && o.get("cursor").is_none_or(|c| c.as_str() == Some(""))
            {
                o.insert("cursor".into(), Value::String(id.to_owned()));
            }
            DynamicMessage::deserialize_with_options(
                input.clone(),
                Value::Object(o),
                &DeserializeOptions::new().deny_unknown_fields(true),
            )
            .map_err(|e| {
                let mut s = Status::invalid_argument(format!("{}: {e}", input.name()));
                if let Some(field) = unknown_field(&e.to_string()) {
                    s = field_violation(field, &e.to_string());
                }
                s
            })
        })
        .collect()
}

/// The field a JSON error names, when it names one.
fn unknown_field(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

fn field_violation(field: &str, description: &str) -> Status {
    use tonic_types::{ErrorDetails, StatusExt};
    Status::with_error_details(
        Code::InvalidArgument,
        description.to_owned(),
        ErrorDetails::with_bad_request_violation(field, description),
    )
}

/// Query parameters as JSON fields of `input`: `a.b=x` sets the nested field, a repeated field
/// takes every value given, booleans and numbers become JSON values of their kind.
fn query_fields(input: &MessageDescriptor, query: &str) -> Result<Map<String, Value>, Status> {
    let mut out = Map::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let path: Vec<&str> = key.split('.').collect();
        let mut desc = input.clone();
        let mut obj = &mut out;
        for (i, name) in path.iter().enumerate() {
            let field = desc
                .get_field_by_name(name)
                .or_else(|| desc.get_field_by_json_name(name))
                .ok_or_else(|| {
                    field_violation(&key, &format!("no field {name:?} in {}", desc.name()))
                })?;
            let last = i + 1 == path.len();
            if !last {
                let Kind::Message(m) = field.kind() else {
                    return Err(field_violation(&key, &format!("{name:?} has no fields")));
                };
                desc = m;
                let next = obj
                    .entry(field.name().to_owned())
                    .or_insert_with(|| Value::Object(Map::new()));
                let Value::Object(next) = next else {
                    return Err(field_violation(&key, "given twice"));
                };
                obj = next;
                continue;
            }
            let v = match field.kind() {
                Kind::Bool => match value.as_ref() {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    other => Value::String(other.to_owned()),
                },
                Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 | Kind::Uint32 | Kind::Fixed32 => value
                    .parse::<i64>()
                    .map_or_else(|_| Value::String(value.to_string()), Value::from),
                Kind::Float | Kind::Double => value
                    .parse::<f64>()
                    .map_or_else(|_| Value::String(value.to_string()), Value::from),
                _ => Value::String(value.to_string()),
            };
            if field.is_list() {
                let list = obj
                    .entry(field.name().to_owned())
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(list) = list {
                    list.push(v);
                }
            } else {
                obj.insert(field.name().to_owned(), v);
            }
        }
    }
    Ok(out)
}

/// Takes the next length-prefixed gRPC frame's payload off `buf`, if a whole one is there.
fn frame_payload(buf: &mut Bytes) -> Option<Bytes> {
    if buf.len() < 5 {
        return None;
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if buf.len() < 5 + len {
        return None;
    }
    buf.advance(5);
    Some(buf.split_to(len))
}

/// Takes the next message off `buf`, if a whole one is there.
fn next_message(
    buf: &mut Bytes,
    desc: &MessageDescriptor,
) -> Option<Result<DynamicMessage, String>> {
    let msg = frame_payload(buf)?;
    Some(DynamicMessage::decode(desc.clone(), msg).map_err(|e| e.to_string()))
}

/// A message as proto3 JSON.
pub fn to_json(m: &DynamicMessage) -> Value {
    m.serialize_with_options(serde_json::value::Serializer, &json_options())
        .unwrap_or(Value::Null)
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The HTTP status of a gRPC code (Google's mapping, as in `google/rpc/code.proto`).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error as Google's APIs write it over HTTP: `{"error": {"code", "message", "status",
/// "details"}}`, the details (field violations, retry info, …) in the proto3 JSON of
/// `google.protobuf.Any`.
pub fn error_json(pool: &DescriptorPool, status: &Status) -> Value {
    error_body(pool, status, http_status(status.code()))
}

/// [`error_json`] answered with another HTTP status than the code's (405).
fn error_body(pool: &DescriptorPool, status: &Status, http: StatusCode) -> Value {
    let details = pool
        .get_message_by_name("google.rpc.Status")
        .and_then(|desc| DynamicMessage::decode(desc, status.details()).ok())
        .map(|m| to_json(&m))
        .and_then(|v| v.get("details").cloned())
        .unwrap_or_else(|| json!([]));
    json!({"error": {
        "code": http.as_u16(),
        "message": status.message(),
        "status": gridroute_api::code_name(status.code()),
        "details": details,
    }})
}

/// The HTTP answer to a failed call; RESOURCE_EXHAUSTED carries `Retry-After`.
pub fn error_response(pool: &DescriptorPool, status: &Status) -> Response {
    let mut r = json_response(http_status(status.code()), &error_json(pool, status));
    set_retry_after(&mut r, status);
    r
}

/// `Retry-After` on a RESOURCE_EXHAUSTED answer: its RetryInfo's delay in whole seconds
/// (rounded up, at least 1).
pub fn set_retry_after(r: &mut Response, status: &Status) {
    use tonic_types::StatusExt;
    if status.code() != Code::ResourceExhausted {
        return;
    }
    let secs = status
        .get_details_retry_info()
        .and_then(|i| i.retry_delay)
        .map_or(1, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
        .max(1);
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
}

/// The messages of a server stream as Server-Sent Events: one `message` event per message,
/// its `cursor` as the event id (so that `Last-Event-ID` resumes after it), and an `error`
/// event with the JSON error if the stream fails.
fn sse_events(
    body: GrpcBody,
    output: MessageDescriptor,
    pool: DescriptorPool,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> impl Stream<Item = Result<Event, Infallible>> + Send {
    struct State {
        body: GrpcBody,
        buf: Bytes,
        ready: VecDeque<Event>,
        done: bool,
    }
    let state = State {
        body,
        buf: Bytes::new(),
        ready: VecDeque::new(),
        done: false,
    };
    let events = stream::unfold(state, move |mut s| {
        let output = output.clone();
        let pool = pool.clone();
        async move {
            loop {
                if let Some(e) = s.ready.pop_front() {
                    return Some((Ok(e), s));
                }
                if s.done {
                    return None;
                }
                match s.body.frame().await {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => {
                            let mut buf = BytesMut::from(&s.buf[..]);
                            buf.extend_from_slice(&data);
                            s.buf = buf.freeze();
                            while let Some(m) = next_message(&mut s.buf, &output) {
                                s.ready.push_back(match m {
                                    Ok(m) => message_event(&m),
                                    Err(e) => error_event(&pool, &Status::internal(e)),
                                });
                            }
                        }
                        Err(frame) => {
                            s.done = true;
                            if let Some(status) =
                                frame.trailers_ref().and_then(Status::from_header_map)
                                && status.code() != Code::Ok
                            {
                                s.ready.push_back(error_event(&pool, &status));
                            }
                        }
                    },
                    Some(Err(e)) => {
                        s.done = true;
                        s.ready
                            .push_back(error_event(&pool, &Status::unavailable(e.to_string())));
                    }
                    None => s.done = true,
                }
            }
        }
    });
    // A stream ends when the server stops, so that a graceful shutdown does not wait for
    // subscribers; they resume elsewhere with Last-Event-ID.
    let stop = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    events.take_until(Box::pin(stop))
}

fn message_event(m: &DynamicMessage) -> Event {
    let json = to_json(m);
    let mut e = Event::default().data(json.to_string());
    if let Some(cursor) = json.get("cursor").and_then(Value::as_str)
        && !cursor.is_empty()
    {
        e = e.id(cursor);
    }
    e
}

fn error_event(pool: &DescriptorPool, status: &Status) -> Event {
    Event::default()
        .event("error")
        .data(error_json(pool, status).to_string())
}

/// The gRPC services of `state` behind the one authorization layer, as the HTTP face calls
/// them.
pub fn grpc(state: gridroute_api::ApiState) -> Grpc {
    use tower::Layer;
    let security = state.security.clone();
    gridroute_api::authz::AuthLayer::new(security)
        .layer(gridroute_api::server::gridroute_routes(state))
}
