//! One HTTP(S) GET with a timeout and a size limit: all the key set needs from a provider, so
//! no general HTTP client is pulled in. TLS uses the public roots (webpki-roots) plus, when
//! given, a city's private CA.

use std::{sync::Arc, time::Duration};

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};

/// The body of `url`, or why not. `ca_pem` adds trusted CA certificates for https.
pub async fn get(
    url: &str,
    ca_pem: Option<&[u8]>,
    timeout: Duration,
    max_bytes: usize,
) -> Result<Vec<u8>, String> {
    tokio::time::timeout(timeout, fetch(url, ca_pem, max_bytes))
        .await
        .map_err(|_| format!("{url}: no answer within {} s", timeout.as_secs()))?
}

async fn fetch(url: &str, ca_pem: Option<&[u8]>, max_bytes: usize) -> Result<Vec<u8>, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(format!("{url}: only https:// and http:// URLs")),
    };
    let host = uri
        .host()
        .ok_or_else(|| format!("{url}: no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let path = uri
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    let authority = uri
        .authority()
        .map_or(host.clone(), |a| a.as_str().to_owned());
    let request = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("{url}: {e}"))?;
    if tls {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(ca_pem)?));
        let name = ServerName::try_from(host.clone()).map_err(|e| format!("{url}: {e}"))?;
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("{url}: TLS: {e}"))?;
        send(url, TokioIo::new(stream), request, max_bytes).await
    } else {
        send(url, TokioIo::new(tcp), request, max_bytes).await
    }
}

async fn send<T>(
    url: &str,
    io: T,
    request: http::Request<Empty<Bytes>>,
    max_bytes: usize,
) -> Result<Vec<u8>, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let driver = tokio::spawn(conn);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), max_bytes)
        .collect()
        .await
        .map_err(|e| format!("{url}: {e}"))?
        .to_bytes();
    driver.abort();
    if !status.is_success() {
        return Err(format!("{url}: HTTP {status}"));
    }
    Ok(body.to_vec())
}

fn client_config(ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = ca_pem {
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| format!("CA file: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("CA certificate: {e}"))?;
        }
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}
