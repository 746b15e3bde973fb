//! Metadata sent with every call: `--metadata key=value` (repeatable) and the caller's bearer
//! token (`--token`, or one per role from `--tokens`), sent as `authorization: Bearer …`.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use tonic::{
    body::Body,
    codegen::{
        Service,
        http::{HeaderName, HeaderValue, Request},
    },
    transport::Channel,
};

/// A channel that adds the same headers to every request.
#[derive(Debug, Clone)]
pub struct WithMetadata {
    inner: Channel,
    headers: Arc<Vec<(HeaderName, HeaderValue)>>,
}

impl WithMetadata {
    /// Wraps `inner`.
    pub fn new(inner: Channel, headers: Arc<Vec<(HeaderName, HeaderValue)>>) -> Self {
        Self { inner, headers }
    }

    /// The same connection presenting `token` instead of the token it had (if any).
    pub fn with_token(&self, token: &str) -> Result<Self, String> {
        let value = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .map_err(|e| format!("token: {e}"))?;
        let mut headers: Vec<_> = self
            .headers
            .iter()
            .filter(|(k, _)| *k != tonic::codegen::http::header::AUTHORIZATION)
            .cloned()
            .collect();
        headers.push((tonic::codegen::http::header::AUTHORIZATION, value));
        Ok(Self {
            inner: self.inner.clone(),
            headers: Arc::new(headers),
        })
    }
}

/// Tokens by principal (`department:water-affairs` → token), as `gridroute dev` writes them to
/// `target/gridroute-dev/tokens.json`.
pub fn tokens(path: &std::path::Path) -> Result<std::collections::HashMap<String, String>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("--tokens {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("--tokens {}: {e}", path.display()))
}

/// Parses `--metadata` pairs and the token into headers; the error names the bad pair.
pub fn headers(
    pairs: &[String],
    token: Option<&str>,
) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let mut out = Vec::new();
    for pair in pairs {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("--metadata {pair:?}: expected key=value"))?;
        let name = HeaderName::from_bytes(k.trim().to_ascii_lowercase().as_bytes())
            .map_err(|e| format!("--metadata {pair:?}: {e}"))?;
        let value =
            HeaderValue::from_str(v.trim()).map_err(|e| format!("--metadata {pair:?}: {e}"))?;
        out.push((name, value));
    }
    if let Some(t) = token.filter(|t| !t.is_empty()) {
        let value =
            HeaderValue::from_str(&format!("Bearer {t}")).map_err(|e| format!("--token: {e}"))?;
        out.push((tonic::codegen::http::header::AUTHORIZATION, value));
    }
    Ok(out)
}

impl Service<Request<Body>> for WithMetadata {
    type Response = <Channel as Service<Request<Body>>>::Response;
    type Error = <Channel as Service<Request<Body>>>::Error;
    type Future = <Channel as Service<Request<Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        for (k, v) in self.headers.iter() {
            req.headers_mut().insert(k.clone(), v.clone());
        }
        Service::call(&mut self.inner, req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_and_token_become_headers() {
        let h = headers(&["X-GridRoute-User=inspector 7".into()], Some("abc")).unwrap();
        assert_eq!(h[0].0.as_str(), "x-gridroute-user");
        assert_eq!(h[0].1, "inspector 7");
        assert_eq!(h[1].0.as_str(), "authorization");
        assert_eq!(h[1].1, "Bearer abc");
        assert!(
            headers(&["no-equals".into()], None)
                .unwrap_err()
                .contains("key=value")
        );
    }

    /// A server that admits only calls carrying the token and the user, on a real socket.
    #[tokio::test]
    async fn every_call_carries_the_metadata() {
        use gridroute_proto::v1::{
            self as pb, incident_service_client::IncidentServiceClient,
            incident_service_server::IncidentServiceServer,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let check = |req: tonic::Request<()>| {
            let m = req.metadata();
            let ok = m.get("authorization").is_some_and(|v| v == "Bearer s3cret")
                && m.get("x-gridroute-user").is_some_and(|v| v == "lt");
            if ok {
                Ok(req)
            } else {
                Err(tonic::Status::unauthenticated("token and user required"))
            }
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(IncidentServiceServer::with_interceptor(
                    crate::echo::Echo,
                    check,
                ))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let report = pb::ReportIncidentRequest {
            request_id: "m-1".into(),
            ..Default::default()
        };
        let bare = IncidentServiceClient::new(channel.clone())
            .report_incident(report.clone())
            .await
            .unwrap_err();
        assert_eq!(bare.code(), tonic::Code::Unauthenticated);
        let h = Arc::new(headers(&["x-gridroute-user=lt".into()], Some("s3cret")).unwrap());
        let answer = IncidentServiceClient::new(WithMetadata::new(channel, h))
            .report_incident(report)
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.incident_id, "m-1");
    }
}
