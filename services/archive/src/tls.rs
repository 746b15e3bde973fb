//! TLS to PostgreSQL (rustls), asked for in the archive URL as libpq users write it:
//! `?sslmode=verify-full&sslrootcert=/etc/gridroute/pg-ca.pem`.
//!
//! Whenever the archive uses TLS it verifies the server's certificate chain and name, as
//! libpq's `verify-full` does: `require`, `verify-ca` and `verify-full` all mean that here,
//! because the archive carries reporters' personal data (PIPL) and an unverified channel
//! protects it from no one who can intercept it. The roots are the public web roots
//! (`webpki-roots`) and the certificates of `sslrootcert`, if given. `sslcert` and `sslkey`
//! (both, PEM, the key not encrypted) present a client certificate to a server that asks for
//! one. Over TLS, SCRAM passwords are bound to the channel (`tls-server-end-point`). Without
//! `sslmode`, or
//! with `disable`, `allow` or `prefer`, the connection is plain, as before: gridroute does not
//! try TLS and fall back (docs/OPERATIONS.md, "Archive").

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

use crate::ArchiveError;

/// The URL without the TLS parameters gridroute reads itself, and the TLS they ask for
/// (`None`: plain).
pub(crate) fn split_url(url: &str) -> Result<(String, Option<Tls>), ArchiveError> {
    let bad = |why: String| ArchiveError::BadUrl(why);
    let mut params = Params::default();
    let keep = |key: &str, value: &str, p: &mut Params| {
        let slot = match key {
            "sslmode" => &mut p.mode,
            "sslrootcert" => &mut p.root,
            "sslcert" => &mut p.cert,
            "sslkey" => &mut p.key,
            _ => return true,
        };
        *slot = Some(value.to_owned());
        false
    };
    let rest = if let Some((base, query)) = url
        .split_once('?')
        .filter(|_| url.starts_with("postgres://") || url.starts_with("postgresql://"))
    {
        let kept: Vec<&str> = query
            .split('&')
            .filter(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                keep(k, v, &mut params)
            })
            .collect();
        if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        }
    } else if url.contains("://") {
        url.to_owned()
    } else {
        // The key=value form (`host=… user=… sslmode=…`): the two parameters' pairs are cut
        // out, every other byte kept as written (a quoted password may hold spaces).
        let mut rest = String::with_capacity(url.len());
        let mut at = 0;
        for (start, end) in pairs(url) {
            let pair = &url[start..end];
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if !keep(k.trim(), unquoted(v.trim()).as_str(), &mut params) {
                rest.push_str(&url[at..start]);
                at = end;
            }
        }
        rest.push_str(&url[at..]);
        rest
    };
    let client = match (params.cert.as_deref(), params.key.as_deref()) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        (Some(_), None) => return Err(bad("sslcert without sslkey: give both".into())),
        (None, Some(_)) => return Err(bad("sslkey without sslcert: give both".into())),
    };
    let tls = match params.mode.as_deref() {
        None | Some("disable" | "allow" | "prefer") => {
            for (name, given) in [
                ("sslrootcert", params.root.is_some()),
                ("sslcert", client.is_some()),
            ] {
                if given {
                    return Err(bad(format!(
                        "{name} without sslmode=verify-full (or require): the connection would be plain"
                    )));
                }
            }
            None
        }
        Some("require" | "verify-ca" | "verify-full") => {
            Some(Tls::new(params.root.as_deref(), client)?)
        }
        Some("") => {
            return Err(bad(
                "sslmode without a value: write sslmode=verify-full, without spaces around '='"
                    .into(),
            ));
        }
        Some(other) => {
            return Err(bad(format!(
                "sslmode={other}: disable, allow, prefer, require, verify-ca or verify-full"
            )));
        }
    };
    Ok((rest, tls))
}

/// The TLS parameters of an archive URL, as libpq names them.
#[derive(Default)]
struct Params {
    mode: Option<String>,
    root: Option<String>,
    /// The client certificate (PEM, the chain to present) and its private key (PEM, not
    /// encrypted), for a server whose `pg_hba.conf` asks for one (`cert`, `clientcert=…`).
    cert: Option<String>,
    key: Option<String>,
}

/// The byte ranges of the `key=value` pairs of libpq's keyword form: separated by white space
/// outside single quotes, a backslash escaping the next character.
fn pairs(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (None, false, false);
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '\'' {
            quoted = !quoted;
        } else if c.is_whitespace() && !quoted {
            if let Some(s) = start.take() {
                out.push((s, i));
            }
            continue;
        }
        start.get_or_insert(i);
    }
    if let Some(s) = start {
        out.push((s, text.len()));
    }
    out
}

/// A keyword-form value without its quotes and escapes.
fn unquoted(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut escaped = false;
    for c in v.chars() {
        match c {
            _ if escaped => {
                out.push(c);
                escaped = false;
            }
            '\\' => escaped = true,
            '\'' => {}
            _ => out.push(c),
        }
    }
    out
}

/// A connector for `tokio_postgres` over rustls; `None` inside: never asked to connect (the
/// config says `sslmode=disable`).
#[derive(Clone)]
#[allow(missing_debug_implementations)]
pub struct Tls(Option<Arc<rustls::ClientConfig>>);

impl Tls {
    /// Plain connections only.
    pub(crate) fn none() -> Self {
        Self(None)
    }

    fn new(root: Option<&str>, client: Option<(&str, &str)>) -> Result<Self, ArchiveError> {
        let bad = |why: String| ArchiveError::BadUrl(why);
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = root {
            let pem = std::fs::read(path).map_err(|e| bad(format!("sslrootcert {path}: {e}")))?;
            let mut added = 0;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| bad(format!("sslrootcert {path}: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| bad(format!("sslrootcert {path}: {e}")))?;
                added += 1;
            }
            if added == 0 {
                return Err(bad(format!("sslrootcert {path}: no PEM certificate")));
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots);
        let config = match client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let (chain, private) = client_identity(cert, key)?;
                builder
                    .with_client_auth_cert(chain, private)
                    .map_err(|e| bad(format!("sslcert {cert} with sslkey {key}: {e}")))?
            }
        };
        Ok(Self(Some(Arc::new(config))))
    }
}

/// The certificate chain of `cert` and the private key of `key` (both PEM files).
fn client_identity(
    cert: &str,
    key: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ArchiveError> {
    let bad = |why: String| ArchiveError::BadUrl(why);
    let pem = std::fs::read(cert).map_err(|e| bad(format!("sslcert {cert}: {e}")))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("sslcert {cert}: {e}")))?;
    if chain.is_empty() {
        return Err(bad(format!("sslcert {cert}: no PEM certificate")));
    }
    let pem = std::fs::read(key).map_err(|e| bad(format!("sslkey {key}: {e}")))?;
    // An encrypted key (libpq's `sslpassword`) is not read: the error says there is no key.
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        bad(format!(
            "sslkey {key}: {e} (a PEM private key, not encrypted)"
        ))
    })?;
    Ok((chain, key))
}

/// The server's name as the certificate must show it (a host name or an IP address).
pub struct Connect {
    config: Option<Arc<rustls::ClientConfig>>,
    name: ServerName<'static>,
}

impl<S> MakeTlsConnect<S> for Tls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type TlsConnect = Connect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<Connect> {
        let name = ServerName::try_from(domain.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(Connect {
            config: self.0.clone(),
            name,
        })
    }
}

impl<S> TlsConnect<S> for Connect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Stream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let config = self.config.ok_or_else(|| {
                io::Error::other("TLS asked for by the server but not by the archive URL")
            })?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(self.name, stream)
                .await?;
            Ok(Stream(tls))
        })
    }
}

/// A TLS connection to PostgreSQL.
#[allow(missing_debug_implementations)]
pub struct Stream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for Stream<S> {
    /// SCRAM-SHA-256-PLUS binds the password exchange to this TLS channel with the server's
    /// certificate (`tls-server-end-point`, as libpq does), so that a man in the middle holding
    /// another certificate cannot relay it. `channel_binding=require` in the URL insists on it.
    fn channel_binding(&self) -> ChannelBinding {
        let (_, conn) = self.0.get_ref();
        conn.peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|cert| server_end_point(cert))
            .map_or_else(ChannelBinding::none, ChannelBinding::tls_server_end_point)
    }
}

/// RFC 5929's `tls-server-end-point`: the server's certificate hashed with the hash of its
/// signature algorithm, SHA-256 for MD5 and SHA-1. `None` for other signatures (Ed25519,
/// RSASSA-PSS, whose hash is in its parameters): SCRAM then goes without channel binding, and
/// `channel_binding=require` refuses the connection.
fn server_end_point(cert: &[u8]) -> Option<Vec<u8>> {
    use sha2::{Digest, Sha256, Sha384, Sha512};
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, parsed) = X509Certificate::from_der(cert).ok()?;
    match parsed.signature_algorithm.algorithm.to_id_string().as_str() {
        // RSA with MD5, SHA-1 and SHA-256; ECDSA with SHA-1 and SHA-256.
        "1.2.840.113549.1.1.4"
        | "1.2.840.113549.1.1.5"
        | "1.2.840.113549.1.1.11"
        | "1.2.840.10045.4.1"
        | "1.2.840.10045.4.3.2" => Some(Sha256::digest(cert).to_vec()),
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => Some(Sha384::digest(cert).to_vec()),
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => Some(Sha512::digest(cert).to_vec()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls_parameters_leave_the_url_and_choose_the_connection() {
        let (url, tls) = split_url("postgres://u:p@db:5432/archive").unwrap();
        assert_eq!(url, "postgres://u:p@db:5432/archive");
        assert!(tls.is_none());
        let (url, tls) =
            split_url("postgres://u@db/archive?connect_timeout=3&sslmode=verify-full").unwrap();
        assert_eq!(url, "postgres://u@db/archive?connect_timeout=3");
        assert!(tls.is_some());
        let (url, tls) = split_url("postgresql://u@db/archive?sslmode=prefer").unwrap();
        assert_eq!(url, "postgresql://u@db/archive");
        assert!(tls.is_none());
        let (url, tls) = split_url("host=db user=u sslmode=require dbname=archive").unwrap();
        assert_eq!(url, "host=db user=u  dbname=archive");
        assert!(tls.is_some());
        // A quoted value keeps its spaces; a quoted sslmode is read without its quotes.
        let (url, tls) =
            split_url("host=db password='two  spaces\\' here' sslmode='verify-full'").unwrap();
        assert_eq!(url, "host=db password='two  spaces\\' here' ");
        assert!(tls.is_some());
    }

    #[test]
    fn a_spaced_sslmode_is_refused_not_read_as_plain() {
        let e = crate::Archive::connect("host=db user=u sslmode = require")
            .expect_err("refused")
            .to_string();
        assert!(e.contains("without spaces"), "{e}");
    }

    #[test]
    fn unclear_tls_parameters_are_refused_with_the_reason() {
        for (url, why) in [
            ("postgres://db/a?sslmode=sometimes", "sslmode=sometimes"),
            ("postgres://db/a?sslrootcert=/ca.pem", "without sslmode"),
            (
                "postgres://db/a?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
                "/nonexistent/ca.pem",
            ),
            (
                "postgres://db/a?sslmode=verify-full&sslcert=/c.pem",
                "sslcert without sslkey",
            ),
            (
                "postgres://db/a?sslmode=verify-full&sslkey=/k.pem",
                "sslkey without sslcert",
            ),
            (
                "postgres://db/a?sslcert=/c.pem&sslkey=/k.pem",
                "sslcert without sslmode",
            ),
            (
                "host=db sslmode=verify-full sslcert=/nonexistent/c.pem sslkey=/k.pem",
                "/nonexistent/c.pem",
            ),
        ] {
            let e = split_url(url).err().expect(url).to_string();
            assert!(e.contains(why), "{url}: {e}");
        }
    }
}
