//! `--protocol http`: reports as `POST /v1/incidents` with a JSON body (the proto3 JSON mapping
//! of the same messages), over HTTP/2 without TLS (h2c) connections to the HTTP face, so that
//! the HTTP/JSON report rate can be measured beside the gRPC one in the same run.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use bytes::Bytes;
use gridroute_proto::v1 as pb;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a report over HTTP answered: the incident id and whether it was a retry.
#[derive(Debug)]
pub struct Reported {
    pub incident_id: String,
    pub duplicate_request: bool,
}

/// Connections to the HTTP face, used in turn.
#[derive(Debug, Clone)]
pub struct HttpReports {
    senders: Arc<Vec<SendRequest<Full<Bytes>>>>,
    next: Arc<AtomicUsize>,
    authority: String,
    authorization: Option<String>,
    report: MessageDescriptor,
}

impl HttpReports {
    /// Opens `connections` h2c connections to `addr` (`http://host:port`).
    pub async fn connect(
        addr: &str,
        connections: usize,
        token: Option<&str>,
    ) -> Result<Self, BoxError> {
        let authority = addr
            .strip_prefix("http://")
            .ok_or("--http-addr: http://host:port (the HTTP face speaks plain HTTP)")?
            .trim_end_matches('/')
            .to_owned();
        let mut senders = Vec::new();
        for _ in 0..connections.max(1) {
            let stream = tokio::net::TcpStream::connect(&authority).await?;
            stream.set_nodelay(true)?;
            let (sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await?;
            tokio::spawn(conn);
            senders.push(sender);
        }
        let pool = DescriptorPool::decode(gridroute_proto::FILE_DESCRIPTOR_SET)?;
        let report = pool
            .get_message_by_name("gridroute.v1.ReportIncidentRequest")
            .ok_or("no ReportIncidentRequest in the descriptors")?;
        Ok(Self {
            senders: Arc::new(senders),
            next: Arc::new(AtomicUsize::new(0)),
            authority,
            authorization: token.map(|t| format!("Bearer {t}")),
            report,
        })
    }

    /// Reports one incident; Err is the gRPC code of the HTTP status.
    pub async fn report(&self, r: &pb::ReportIncidentRequest) -> Result<Reported, tonic::Code> {
        let message = DynamicMessage::decode(self.report.clone(), r.encode_to_vec().as_slice())
            .map_err(|_| tonic::Code::Internal)?;
        let body = message
            .serialize_with_options(
                serde_json::value::Serializer,
                &SerializeOptions::new().use_proto_field_name(true),
            )
            .map_err(|_| tonic::Code::Internal)?
            .to_string();
        let mut req = http::Request::post(format!("http://{}/v1/incidents", self.authority))
            .header("content-type", "application/json");
        if let Some(a) = &self.authorization {
            req = req.header("authorization", a);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| tonic::Code::Internal)?;
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.senders.len();
        let mut sender = self.senders[i].clone();
        let response = sender
            .send_request(req)
            .await
            .map_err(|_| tonic::Code::Unavailable)?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|_| tonic::Code::Unavailable)?
            .to_bytes();
        if !status.is_success() {
            return Err(match status.as_u16() {
                400 => tonic::Code::InvalidArgument,
                401 => tonic::Code::Unauthenticated,
                403 => tonic::Code::PermissionDenied,
                404 => tonic::Code::NotFound,
                409 => tonic::Code::AlreadyExists,
                429 => tonic::Code::ResourceExhausted,
                503 => tonic::Code::Unavailable,
                _ => tonic::Code::Unknown,
            });
        }
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|_| tonic::Code::Internal)?;
        Ok(Reported {
            incident_id: v["incident_id"].as_str().unwrap_or_default().to_owned(),
            duplicate_request: v["duplicate_request"].as_bool().unwrap_or(false),
        })
    }
}
