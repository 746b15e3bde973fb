//! Who is calling: turns a caller's credentials into a [`Principal`], or says exactly which
//! check failed. It never decides what a principal may do (that is the API's policy table and
//! the core's [`gridroute_core::access`]) and never logs a token.
//!
//! Layout:
//! - [`token`]: bearer tokens (JWT, the OIDC way): header checks, signature against the key
//!   set, `iss`/`aud`/`exp`/`nbf`, the claims that carry the principal, and a cache of verified
//!   tokens by their SHA-256.
//! - [`jwks`]: the key set (JWKS) from a file or an https URL, refreshed periodically and on an
//!   unknown key id (rate-limited).
//! - [`https`]: the one small HTTPS GET the key set needs.
//! - [`certs`]: client certificates (mTLS) mapped to principals by a configuration file.
//! - [`dev`]: a development signing key and ready-made tokens for `gridroute dev` and tests.

pub mod certs;
pub mod dev;
pub mod https;
pub mod jwks;
pub mod token;

use std::sync::Arc;

pub use gridroute_core::access::{Kind, Principal};

/// Why a caller could not be identified. Messages say which check failed and never repeat the
/// token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No bearer token and no mapped client certificate.
    #[error(
        "no credentials: send `authorization: Bearer <token>` or connect with a mapped client certificate"
    )]
    Missing,
    /// The authorization header is not `Bearer <token>`.
    #[error("authorization must be `Bearer <token>`")]
    Scheme,
    /// The token failed one of the checks.
    #[error("token rejected: {0}")]
    Token(#[from] token::TokenError),
    /// The client certificate is verified but not mapped to a principal (its identity, quoted).
    #[error("client certificate {0} is not mapped to a principal")]
    Unmapped(String),
    /// No key set could be loaded yet: the caller should retry (UNAVAILABLE, not their fault).
    #[error("the token key set is not available yet; retry")]
    KeysUnavailable,
}

impl AuthError {
    /// A short fixed label for metrics and audit records.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Scheme => "scheme",
            Self::Token(t) => t.label(),
            Self::Unmapped(_) => "certificate_unmapped",
            Self::KeysUnavailable => "keys_unavailable",
        }
    }
}

/// Everything that identifies callers: the token verifier (if tokens are configured) and the
/// certificate map (if certificates are).
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    /// Bearer tokens.
    pub tokens: Option<Arc<token::Verifier>>,
    /// Client certificates.
    pub certs: Option<Arc<certs::CertMap>>,
}

impl Authenticator {
    /// Identifies a caller from its `authorization` header value (if any) and the DER of its
    /// verified client certificate (if any). A token wins over a certificate: a person acting
    /// through a system's connection is that person, with the token's principal.
    pub async fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        peer_cert: Option<&[u8]>,
    ) -> Result<Principal, AuthError> {
        if let Some(header) = authorization {
            let token = bearer(header)?;
            let verifier = self
                .tokens
                .as_ref()
                .ok_or(token::TokenError::NotConfigured)?;
            return match verifier.verify(token).await {
                Ok(p) => Ok(p),
                Err(token::TokenError::NoKeys) => Err(AuthError::KeysUnavailable),
                Err(e) => Err(e.into()),
            };
        }
        if let (Some(der), Some(map)) = (peer_cert, self.certs.as_ref()) {
            return map.identify(der);
        }
        Err(AuthError::Missing)
    }
}

/// The token of an `authorization: Bearer <token>` header value (scheme case-insensitive).
pub fn bearer(header: &[u8]) -> Result<&str, AuthError> {
    let text = std::str::from_utf8(header).map_err(|_| AuthError::Scheme)?;
    let (scheme, token) = text.trim().split_once(' ').ok_or(AuthError::Scheme)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::Scheme);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_headers() {
        assert_eq!(bearer(b"Bearer abc.def.ghi"), Ok("abc.def.ghi"));
        assert_eq!(bearer(b"bearer  abc"), Ok("abc"));
        assert_eq!(bearer(b"Basic dXNlcjpwYXNz"), Err(AuthError::Scheme));
        assert_eq!(bearer(b"Bearer "), Err(AuthError::Scheme));
        assert_eq!(bearer(b"Bearer"), Err(AuthError::Scheme));
        assert_eq!(bearer(&[0xff, 0xfe]), Err(AuthError::Scheme));
    }
}
