//! TLS on the HTTP face, with the same certificate, key and client CA as the gRPC port: a
//! client certificate verified here identifies its system exactly as on gRPC (the certificate
//! map), carried to the authorization layer in the request's [`Connection`].

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, extract::ConnectInfo};
use gridroute_api::authz::Connection;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use rustls::{
    RootCertStore, ServerConfig,
    server::{NoClientAuth, WebPkiClientVerifier},
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::{debug, warn};

use crate::HttpError;

/// The PEM files of the HTTP face's TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The server's certificate chain.
    pub cert_pem: Vec<u8>,
    /// Its private key.
    pub key_pem: Vec<u8>,
    /// The CA that signs client certificates (mutual TLS), if any.
    pub client_ca_pem: Option<Vec<u8>>,
    /// Whether clients may connect without a certificate (and present a token instead).
    pub client_optional: bool,
}

fn tls_error(e: impl std::fmt::Display) -> HttpError {
    HttpError::Tls(e.to_string())
}

/// The rustls configuration of `files`: HTTP/2 and HTTP/1.1 by ALPN.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, HttpError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = CertificateDer::pem_slice_iter(&files.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(tls_error)?;
    let key = PrivateKeyDer::from_pem_slice(&files.key_pem).map_err(tls_error)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?;
    let builder = match &files.client_ca_pem {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca) {
                roots.add(c.map_err(tls_error)?).map_err(tls_error)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if files.client_optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(verifier.build().map_err(tls_error)?)
        }
        None => builder.with_client_cert_verifier(Arc::new(NoClientAuth)),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(tls_error)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `app` over TLS on `listener` until `shutdown` completes.
pub async fn serve(
    app: Router,
    listener: tokio::net::TcpListener,
    config: Arc<ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    let acceptor = TlsAcceptor::from(config);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "HTTP accept failed");
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    debug!(error = %e, %peer, "TLS handshake failed");
                    return;
                }
            };
            let certificates =
                tls.get_ref().1.peer_certificates().map(|c| {
                    Arc::new(c.iter().map(|c| c.clone().into_owned()).collect::<Vec<_>>())
                });
            let conn = Connection {
                peer: Some(peer),
                certificates,
            };
            let service = app.map_request(move |req: http::Request<hyper::body::Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut().insert(conn.clone());
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                req
            });
            let service = TowerToHyperService::new(service);
            if let Err(e) = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await
            {
                debug!(error = %e, %peer, "HTTP connection ended");
            }
        });
    }
}
