//! The one authorization step: a tower layer in front of every gRPC service. For each call it
//! 1. lets the open services through (health, reflection);
//! 2. identifies the caller from its credentials (bearer token, or a mapped client
//!    certificate): UNAUTHENTICATED with the failed check otherwise;
//! 3. looks the method up in the [policy](crate::policy): PERMISSION_DENIED when the caller's
//!    kind is not in its row, or the method is in no row at all;
//! 4. takes one call from the caller's rate: RESOURCE_EXHAUSTED with a RetryInfo otherwise;
//! 5. hands the handler an [`Authenticated`] caller in the request's extensions.
//!
//! Handlers then apply the row's scope (which incidents) through [`claim`], [`unseen`] and
//! `gridroute_core::access`; every refusal here or there is audited.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use gridroute_auth::{AuthError, Authenticator};
use gridroute_core::{
    RoutingTable,
    access::{self, Kind, Principal},
};
use gridroute_store::audit::Entry;
use gridroute_telemetry::names;
use tonic::{
    Status,
    body::Body,
    codegen::http,
    transport::server::{TcpConnectInfo, TlsConnectInfo},
};
use tower::{Layer, Service};

use crate::{
    ApiError,
    audit::{ANONYMOUS, AuditTrail},
    error::{exhausted, quoted},
    limits::Limits,
    policy::{self, Route, Rule},
};

/// Metadata naming the principal in `--insecure-no-auth` mode (development experiments only).
pub const INSECURE_PRINCIPAL_METADATA: &str = "x-gridroute-principal";
/// Metadata naming the person in `--insecure-no-auth` mode.
pub const INSECURE_USER_METADATA: &str = "x-gridroute-user";

/// How callers are identified.
#[derive(Debug, Clone)]
pub enum Identity {
    /// From their credentials: bearer tokens and/or client certificates.
    Credentials(Authenticator),
    /// From the `x-gridroute-principal` metadata, unverified: for experiments on a laptop,
    /// never the default, announced by a loud warning at start.
    Insecure,
}

/// Everything the authorization step and the handlers' scope checks share.
#[derive(Debug, Clone)]
pub struct Security {
    /// How callers are identified.
    pub identity: Identity,
    /// Rates and streams per principal.
    pub limits: Limits,
    /// Where privileged acts and refusals are recorded.
    pub audit: AuditTrail,
    /// Whether co-handlers (协办) read the reporter's contact unmasked (default: no).
    pub co_handlers_see_contact: bool,
}

/// The authenticated caller of a call, and the policy row that admitted it.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// Who.
    pub principal: Principal,
    /// The row of the method called.
    pub rule: &'static Rule,
}

/// The layer.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    security: Arc<Security>,
}

impl AuthLayer {
    /// The layer for `security`.
    pub fn new(security: Arc<Security>) -> Self {
        Self { security }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            security: self.security.clone(),
        }
    }
}

/// The layer's service.
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    security: Arc<Security>,
}

/// The connection of a call that came through another face (HTTP/JSON), set by that face in
/// the request's extensions: the caller's address and verified client certificates, as tonic's
/// transport records them for gRPC calls. Extensions are never read from the wire, so a caller
/// cannot forge one.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// The caller's address.
    pub peer: Option<std::net::SocketAddr>,
    /// The client certificate chain the TLS handshake verified, leaf first.
    pub certificates: Option<Arc<Vec<rustls_pki_types::CertificateDer<'static>>>>,
}

/// The caller's network address.
fn peer_addr(ext: &http::Extensions) -> Option<std::net::SocketAddr> {
    ext.get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.get_ref().remote_addr())
        })
        .or_else(|| ext.get::<Connection>().and_then(|c| c.peer))
}

/// The caller's network address as the audit trail writes it.
pub fn peer(ext: &http::Extensions) -> String {
    peer_addr(ext).map(|a| a.to_string()).unwrap_or_default()
}

/// What a request presents to be identified, taken from it before any await (a request body
/// cannot be held across one).
/// (Header values and certificates are reference-counted: taking them copies nothing.)
#[derive(Debug)]
struct Presented {
    path: http::uri::PathAndQuery,
    authorization: Option<http::HeaderValue>,
    certificates: Option<Arc<Vec<rustls_pki_types::CertificateDer<'static>>>>,
    insecure_principal: Option<http::HeaderValue>,
    insecure_user: Option<http::HeaderValue>,
    peer: Option<std::net::SocketAddr>,
}

impl Presented {
    fn of(req: &http::Request<Body>) -> Self {
        let header = |name: &str| req.headers().get(name).cloned();
        Self {
            path: req
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
            authorization: header("authorization"),
            certificates: req
                .extensions()
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(TlsConnectInfo::peer_certs)
                .or_else(|| {
                    req.extensions()
                        .get::<Connection>()
                        .and_then(|c| c.certificates.clone())
                }),
            insecure_principal: header(INSECURE_PRINCIPAL_METADATA),
            insecure_user: header(INSECURE_USER_METADATA),
            peer: peer_addr(req.extensions()),
        }
    }

    fn method(&self) -> &str {
        self.path.path().trim_start_matches('/')
    }
}

impl Security {
    /// Identifies a caller.
    async fn identify(&self, p: &Presented) -> Result<Principal, AuthError> {
        match &self.identity {
            Identity::Credentials(auth) => {
                let leaf = p
                    .certificates
                    .as_ref()
                    .and_then(|c| c.first())
                    .map(|c| c.as_ref());
                auth.authenticate(p.authorization.as_ref().map(|v| v.as_bytes()), leaf)
                    .await
            }
            Identity::Insecure => {
                let text = p
                    .insecure_principal
                    .as_ref()
                    .and_then(|v| v.to_str().ok())
                    .ok_or(AuthError::Missing)?;
                let person: String = p
                    .insecure_user
                    .as_ref()
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .chars()
                    .take(128)
                    .collect();
                Principal::parse(text)
                    .map(|principal| principal.with_person(&person))
                    .map_err(|e| AuthError::Token(e.into()))
            }
        }
    }

    /// Admits a call to a method (`None`: a path in no policy row) or refuses it.
    async fn admit(
        &self,
        presented: Presented,
        rule: Option<&'static Rule>,
    ) -> Result<Authenticated, Status> {
        let method = presented.method();
        let refuse = |principal: &str, person: &str, status: Status, why: &'static str| {
            metrics::counter!(names::AUTH_DENIED_TOTAL, "reason" => why, "kind" => kind_label(principal))
                .increment(1);
            self.audit.record(Entry {
                principal: principal.to_owned(),
                person: person.to_owned(),
                method: method.to_owned(),
                target: String::new(),
                outcome: crate::code_name(status.code()).to_owned(),
                reason: status.message().to_owned(),
                peer: presented.peer.map(|a| a.to_string()).unwrap_or_default(),
            });
            status
        };
        let principal = match self.identify(&presented).await {
            Ok(p) => p,
            Err(AuthError::KeysUnavailable) => {
                return Err(Status::unavailable(AuthError::KeysUnavailable.to_string()));
            }
            Err(e) => {
                let status = Status::unauthenticated(e.to_string());
                return Err(refuse(ANONYMOUS, "", status, "unauthenticated"));
            }
        };
        let label = principal.label();
        let Some(rule) = rule.filter(|r| r.kinds.contains(&principal.kind)) else {
            let status = Status::permission_denied(format!(
                "{label} may not call {method}{}",
                rule.map_or(String::new(), |r| format!(
                    " (allowed: {})",
                    r.kinds
                        .iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            ));
            return Err(refuse(
                &label,
                &principal.person,
                status,
                "permission_denied",
            ));
        };
        if let Err(wait) = self.limits.take(&principal, 1.0) {
            let status = exhausted(
                format!(
                    "rate limit of {label} reached; retry in {} ms",
                    wait.as_millis()
                ),
                wait,
            );
            return Err(refuse(&label, &principal.person, status, "rate_limited"));
        }
        Ok(Authenticated { principal, rule })
    }
}

fn kind_label(principal: &str) -> &'static str {
    let kind = principal.split(':').next().unwrap_or("");
    Kind::parse(kind).map_or("anonymous", Kind::as_str)
}

impl<S> Service<http::Request<Body>> for AuthService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        // The clone that was made ready is the one that serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let security = self.security.clone();
        Box::pin(async move {
            let rule = match policy::route(req.uri().path()) {
                Route::Open => return inner.call(req).await,
                Route::Rule(r) => Some(r),
                Route::Unlisted => None,
            };
            match security.admit(Presented::of(&req), rule).await {
                Ok(caller) => {
                    req.extensions_mut().insert(caller);
                    inner.call(req).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

/// The authenticated caller of a request (the layer always sets one before a handler runs).
pub fn caller(ext: &http::Extensions) -> Result<Authenticated, ApiError> {
    ext.get::<Authenticated>().cloned().ok_or_else(|| {
        ApiError::Unauthenticated("no credentials (the authorization layer is missing)".into())
    })
}

/// Checks an identity field of a request body against the caller: empty (taken from the
/// caller) or the caller's own id, for a field that fits the caller's kind. Anything else is
/// PERMISSION_DENIED: a body never names someone else.
pub fn claim(field: &'static str, value: &str, who: &Principal) -> Result<(), ApiError> {
    if value.is_empty() {
        return Ok(());
    }
    let fits = match field {
        "department_id" => who.kind.is_department(),
        "grid_worker_id" => who.kind == Kind::GridWorker,
        "source_system" => who.kind == Kind::SourceSystem,
        "published_by" => {
            return if value == who.person || value == who.label() || value == who.id {
                Ok(())
            } else {
                Err(ApiError::PermissionDenied(format!(
                    "published_by {} is not the caller ({}, {})",
                    quoted(value),
                    who.label(),
                    quoted(&who.person)
                )))
            };
        }
        _ => false,
    };
    if fits && value == who.id {
        Ok(())
    } else {
        Err(ApiError::PermissionDenied(format!(
            "{field} {} names someone else than the caller, {}",
            quoted(value),
            who.label()
        )))
    }
}

/// Whether the caller may see every incident (and so may learn that one does not exist).
pub fn sees_all(who: &Principal, table: &RoutingTable) -> bool {
    who.kind == Kind::Auditor
        || (who.kind == Kind::CommandCentre && access::is_default_centre(table, &who.id))
}

/// The refusal for an incident the caller may not see, or that does not exist: the same
/// PERMISSION_DENIED either way (ids cannot be probed), except for callers who see every
/// incident, who are told NOT_FOUND.
pub fn unseen(who: &Principal, table: &RoutingTable, id: &str, exists: bool) -> ApiError {
    if !exists && sees_all(who, table) {
        return ApiError::Store(gridroute_store::StoreError::NotFound(id.to_owned()));
    }
    ApiError::PermissionDenied(format!(
        "{} may not see or act on incident {} (or it does not exist)",
        who.label(),
        quoted(id)
    ))
}
