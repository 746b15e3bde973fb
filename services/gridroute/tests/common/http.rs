//! A plain HTTP/1.1 client for the HTTP face, as a third-party script would call it: a socket,
//! a request line, headers, JSON.

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// An answer: status, headers, body as JSON (`Null` when the body is not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

/// Sends one request on its own connection; `token` as a bearer token, `body` as JSON.
pub async fn call(
    addr: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> Answer {
    let response = send(addr, method, path, token, body, headers).await;
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Answer {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        text,
    }
}

/// Sends one request and returns the response with its body unread (for event streams).
pub async fn send(
    addr: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> http::Response<hyper::body::Incoming> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let payload = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    sender
        .send_request(req.body(Full::new(payload)).unwrap())
        .await
        .unwrap()
}

/// One Server-Sent Event.
#[derive(Debug, Clone, Default)]
pub struct Sse {
    pub event: String,
    pub id: String,
    pub data: String,
}

/// Reads Server-Sent Events off a response body.
pub struct Events {
    body: hyper::body::Incoming,
    buf: String,
}

impl Events {
    pub fn new(response: http::Response<hyper::body::Incoming>) -> Self {
        Self {
            body: response.into_body(),
            buf: String::new(),
        }
    }

    /// The next event (comments and keep-alives skipped), or None when the stream ends.
    pub async fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut e = Sse::default();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("data:") {
                        e.data.push_str(v.trim_start());
                    } else if let Some(v) = line.strip_prefix("id:") {
                        e.id = v.trim_start().to_owned();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        e.event = v.trim_start().to_owned();
                    }
                }
                if e.data.is_empty() {
                    continue;
                }
                return Some(e);
            }
            let frame = self.body.frame().await?.ok()?;
            if let Ok(data) = frame.into_data() {
                self.buf.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }
}
