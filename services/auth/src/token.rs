//! Bearer tokens: JWTs signed by the city's identity provider, verified against its key set.
//!
//! Checks, in order, each with its own error: the token's shape and header, the algorithm
//! (RS256, ES256 or EdDSA only: `none` and the HMAC family are refused, so a public key can
//! never be used as an HMAC secret), the key id against the key set (refreshed once, rate-
//! limited, when the id is unknown), the key's type against the algorithm, the signature,
//! then `exp`, `nbf` (with a small leeway), `iss` and `aud`, and last the claims that name the
//! principal. A verified token is cached by its SHA-256 until it expires, so a caller's calls
//! after the first cost one hash and one map lookup.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::Engine as _;
use dashmap::DashMap;
use gridroute_core::access::{BadPrincipal, Principal};
use jsonwebtoken::{Algorithm, Validation, errors::ErrorKind};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::jwks::{Keys, Lookup};

/// Longest token accepted; anything longer is refused before it is decoded.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Most verified tokens remembered per process (a few hundred bytes each). When full the cache
/// starts over: tokens are then verified again, nothing else changes.
pub const MAX_CACHED_TOKENS: usize = 65_536;
/// Longest person (`sub`) accepted.
pub const MAX_PERSON_LEN: usize = 128;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The server takes no bearer tokens (no key set configured).
    #[error("this server is not configured for bearer tokens")]
    NotConfigured,
    /// Not a JWT, or a part of it does not decode.
    #[error("malformed: {0}")]
    Malformed(&'static str),
    /// `alg: none`.
    #[error("algorithm none is not accepted")]
    AlgNone,
    /// Any algorithm but RS256, ES256 and EdDSA (HMAC in particular).
    #[error("algorithm {0:?} is not accepted (RS256, ES256 or EdDSA)")]
    Algorithm(String),
    /// No `kid` while the key set holds several keys of the token's type.
    #[error("the header names no key id (kid) and the key set holds several keys")]
    NoKeyId,
    /// No key set could be loaded yet (the identity provider is unreachable since start).
    #[error("the key set is not loaded yet")]
    NoKeys,
    /// The `kid` is not in the key set, even after a refresh.
    #[error("key id {0:?} is not in the key set")]
    UnknownKey(String),
    /// The key named by `kid` is of another type than the algorithm.
    #[error("key {kid:?} does not fit algorithm {alg}")]
    KeyType {
        /// The key id.
        kid: String,
        /// The token's algorithm.
        alg: String,
    },
    /// The signature does not verify.
    #[error("signature does not verify")]
    Signature,
    /// Past `exp` (beyond the leeway).
    #[error("expired")]
    Expired,
    /// Before `nbf` (beyond the leeway).
    #[error("not valid yet (nbf)")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("issuer is not the one this server trusts")]
    Issuer,
    /// `aud` does not name this server.
    #[error("audience does not include this server")]
    Audience,
    /// A required claim is absent.
    #[error("the {0} claim is missing")]
    MissingClaim(String),
    /// A claim has the wrong type.
    #[error("the {0} claim has the wrong type")]
    ClaimType(String),
    /// No claim names a gridroute principal.
    #[error(
        "names no gridroute principal (a `{0}` claim `kind:id`, or a `gridroute:<kind>:<id>` role or scope)"
    )]
    NoPrincipal(String),
    /// Several different principals are named.
    #[error("names more than one gridroute principal")]
    AmbiguousPrincipal,
    /// The principal named is malformed.
    #[error("{0}")]
    Principal(#[from] BadPrincipal),
    /// The person claim is too long or holds control characters.
    #[error("the person claim must be 1-128 printable characters")]
    Person,
}

impl TokenError {
    /// A short fixed label for metrics and audit records.
    pub fn label(&self) -> &'static str {
        match self {
            Self::NotConfigured => "token_not_configured",
            Self::Malformed(_) => "token_malformed",
            Self::AlgNone => "token_alg_none",
            Self::Algorithm(_) => "token_algorithm",
            Self::NoKeyId => "token_no_kid",
            Self::NoKeys => "token_no_keys",
            Self::UnknownKey(_) => "token_unknown_kid",
            Self::KeyType { .. } => "token_key_type",
            Self::Signature => "token_signature",
            Self::Expired => "token_expired",
            Self::NotYetValid => "token_not_yet_valid",
            Self::Issuer => "token_issuer",
            Self::Audience => "token_audience",
            Self::MissingClaim(_) | Self::ClaimType(_) => "token_claims",
            Self::NoPrincipal(_) | Self::AmbiguousPrincipal | Self::Principal(_) => {
                "token_principal"
            }
            Self::Person => "token_person",
        }
    }
}

/// Which claims carry the principal and the person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMapping {
    /// The person acting (default `sub`).
    pub person: String,
    /// A claim holding the principal as `kind:id` or `{"kind": …, "id": …}` (default
    /// `gridroute`).
    pub principal: String,
    /// A claim listing roles (array or space-separated); a role `gridroute:<kind>:<id>` names
    /// the principal when the principal claim is absent (default `roles`).
    pub roles: String,
    /// The OAuth scope claim, read like `roles` (default `scope`).
    pub scope: String,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        Self {
            person: "sub".into(),
            principal: "gridroute".into(),
            roles: "roles".into(),
            scope: "scope".into(),
        }
    }
}

impl ClaimMapping {
    /// The principal and person the claims name.
    pub fn principal(&self, claims: &Value) -> Result<Principal, TokenError> {
        let person = match claims.get(&self.person) {
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err(TokenError::ClaimType(self.person.clone())),
            None => return Err(TokenError::MissingClaim(self.person.clone())),
        };
        if person.is_empty()
            || person.chars().count() > MAX_PERSON_LEN
            || person.chars().any(char::is_control)
        {
            return Err(TokenError::Person);
        }
        let mut found: Vec<Principal> = Vec::new();
        match claims.get(&self.principal) {
            Some(Value::String(s)) => found.push(Principal::parse(s)?),
            Some(Value::Object(o)) => {
                let kind = o.get("kind").and_then(Value::as_str).unwrap_or("");
                let id = o.get("id").and_then(Value::as_str).unwrap_or("");
                let text = if id.is_empty() {
                    kind.to_owned()
                } else {
                    format!("{kind}:{id}")
                };
                found.push(Principal::parse(&text)?);
            }
            Some(_) => return Err(TokenError::ClaimType(self.principal.clone())),
            None => {
                for claim in [&self.roles, &self.scope] {
                    for entry in entries(claims.get(claim)) {
                        if let Some(rest) = entry.strip_prefix("gridroute:") {
                            let p = Principal::parse(rest)?;
                            if !found.contains(&p) {
                                found.push(p);
                            }
                        }
                    }
                }
            }
        }
        match found.len() {
            0 => Err(TokenError::NoPrincipal(self.principal.clone())),
            1 => Ok(found.remove(0).with_person(person)),
            _ => Err(TokenError::AmbiguousPrincipal),
        }
    }
}

/// The strings of a roles or scope claim: an array of strings, or one space-separated string.
fn entries(v: Option<&Value>) -> Vec<&str> {
    match v {
        Some(Value::String(s)) => s.split_whitespace().collect(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// What a token's claims are checked against.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    /// The issuer (`iss`) trusted; `None` accepts any (not recommended).
    pub issuer: Option<String>,
    /// This server's audience (`aud`); `None` accepts any (not recommended).
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// Where the principal and person are.
    pub claims: ClaimMapping,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(30),
            claims: ClaimMapping::default(),
        }
    }
}

/// A verified token's principal, until it expires, under the key set generation it was
/// verified with.
#[derive(Debug, Clone)]
struct Cached {
    principal: Principal,
    exp: u64,
    generation: u64,
}

/// Verifies bearer tokens.
#[derive(Debug)]
pub struct Verifier {
    config: TokenConfig,
    keys: Arc<Keys>,
    cache: DashMap<[u8; 32], Cached>,
}

/// The parts of a token header that decide how it is verified.
#[derive(Debug)]
struct Header {
    alg: Algorithm,
    kid: Option<String>,
}

fn b64(part: &str) -> Result<Vec<u8>, TokenError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| TokenError::Malformed("a part is not base64url"))
}

/// Reads and checks the header before anything else is trusted.
fn header(token: &str) -> Result<Header, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed("longer than 16 KiB"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("not three dot-separated parts"));
    };
    let raw = b64(h)?;
    let json: Value = serde_json::from_slice(&raw)
        .map_err(|_| TokenError::Malformed("the header is not a JSON object"))?;
    let alg = json
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(TokenError::Malformed("the header has no alg"))?;
    let alg = match alg {
        "RS256" => Algorithm::RS256,
        "ES256" => Algorithm::ES256,
        "EdDSA" => Algorithm::EdDSA,
        a if a.eq_ignore_ascii_case("none") => return Err(TokenError::AlgNone),
        other => return Err(TokenError::Algorithm(other.chars().take(16).collect())),
    };
    let kid = match json.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) => Some(k.chars().take(128).collect()),
        Some(_) => return Err(TokenError::Malformed("kid is not a string")),
    };
    Ok(Header { alg, kid })
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn alg_name(a: Algorithm) -> String {
    format!("{a:?}")
}

impl Verifier {
    /// A verifier of tokens signed by `keys`.
    pub fn new(config: TokenConfig, keys: Arc<Keys>) -> Self {
        Self {
            config,
            keys,
            cache: DashMap::new(),
        }
    }

    /// The key set.
    pub fn keys(&self) -> &Arc<Keys> {
        &self.keys
    }

    /// The principal a token names, or the first check it failed.
    pub async fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = now_secs();
        let generation = self.keys.generation();
        if let Some(hit) = self.cache.get(&digest) {
            if hit.generation == generation
                && now <= hit.exp.saturating_add(self.config.leeway.as_secs())
            {
                count("cached");
                return Ok(hit.principal.clone());
            }
            drop(hit);
            self.cache.remove(&digest);
        }
        let result = self.verify_uncached(token).await;
        match &result {
            Ok((principal, exp)) => {
                count("verified");
                if self.cache.len() >= MAX_CACHED_TOKENS {
                    self.cache.clear();
                }
                self.cache.insert(
                    digest,
                    Cached {
                        principal: principal.clone(),
                        exp: *exp,
                        generation,
                    },
                );
            }
            Err(e) => count(e.label()),
        }
        result.map(|(p, _)| p)
    }

    async fn verify_uncached(&self, token: &str) -> Result<(Principal, u64), TokenError> {
        let h = header(token)?;
        let key = match self.keys.find(h.kid.as_deref(), h.alg) {
            Lookup::Found(k) => k,
            Lookup::Unknown | Lookup::NoKeys if self.keys.refresh_for_unknown().await => {
                match self.keys.find(h.kid.as_deref(), h.alg) {
                    Lookup::Found(k) => k,
                    other => return Err(lookup_error(other, &h)),
                }
            }
            other => return Err(lookup_error(other, &h)),
        };
        let mut v = Validation::new(h.alg);
        v.leeway = self.config.leeway.as_secs();
        v.validate_nbf = true;
        let mut required = vec!["exp"];
        match &self.config.issuer {
            Some(iss) => {
                v.set_issuer(&[iss]);
                required.push("iss");
            }
            None => v.iss = None,
        }
        match &self.config.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        v.set_required_spec_claims(&required);
        let data = jsonwebtoken::decode::<Value>(token, &key.decoding, &v).map_err(|e| match e
            .kind()
        {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::ImmatureSignature => TokenError::NotYetValid,
            ErrorKind::InvalidIssuer => TokenError::Issuer,
            ErrorKind::InvalidAudience => TokenError::Audience,
            ErrorKind::InvalidSignature => TokenError::Signature,
            ErrorKind::MissingRequiredClaim(c) => TokenError::MissingClaim(c.clone()),
            ErrorKind::InvalidClaimFormat(c) => TokenError::ClaimType(c.clone()),
            ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidKeyFormat
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
            | ErrorKind::InvalidRsaKey(_) => TokenError::KeyType {
                kid: key.kid.clone().unwrap_or_default(),
                alg: alg_name(h.alg),
            },
            _ => TokenError::Malformed("the claims are not a JSON object"),
        })?;
        let principal = self.config.claims.principal(&data.claims)?;
        let exp = data.claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        Ok((principal, exp))
    }
}

fn lookup_error(l: Lookup, h: &Header) -> TokenError {
    match l {
        Lookup::Found(_) | Lookup::Unknown => {
            TokenError::UnknownKey(h.kid.clone().unwrap_or_default())
        }
        Lookup::Ambiguous => TokenError::NoKeyId,
        Lookup::WrongType(kid) => TokenError::KeyType {
            kid,
            alg: alg_name(h.alg),
        },
        Lookup::NoKeys => TokenError::NoKeys,
    }
}

fn count(outcome: &'static str) {
    metrics::counter!(gridroute_telemetry::names::AUTH_TOKENS_TOTAL, "outcome" => outcome)
        .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridroute_core::access::Kind;
    use serde_json::json;

    #[test]
    fn principals_come_from_the_configured_claims() {
        let m = ClaimMapping::default();
        let p = m
            .principal(&json!({"sub": "wang.li", "gridroute": "department:water-affairs"}))
            .expect("principal");
        assert_eq!(
            (p.kind, p.id.as_str(), p.person.as_str()),
            (Kind::Department, "water-affairs", "wang.li")
        );
        let p = m
            .principal(&json!({"sub": "a", "gridroute": {"kind": "auditor"}}))
            .expect("object form");
        assert_eq!(p.kind, Kind::Auditor);
        let p = m
            .principal(&json!({"sub": "a", "roles": ["viewer", "gridroute:grid_worker:gw-7"]}))
            .expect("role");
        assert_eq!(p.label(), "grid_worker:gw-7");
        let p = m
            .principal(&json!({"sub": "a", "scope": "openid gridroute:table_admin"}))
            .expect("scope");
        assert_eq!(p.kind, Kind::TableAdmin);
        assert_eq!(
            m.principal(
                &json!({"sub": "a", "roles": ["gridroute:auditor", "gridroute:table_admin"]})
            ),
            Err(TokenError::AmbiguousPrincipal)
        );
        assert!(matches!(
            m.principal(&json!({"sub": "a"})),
            Err(TokenError::NoPrincipal(_))
        ));
        assert!(matches!(
            m.principal(&json!({"gridroute": "auditor"})),
            Err(TokenError::MissingClaim(_))
        ));
        assert_eq!(
            m.principal(&json!({"sub": "a\nforged", "gridroute": "auditor"})),
            Err(TokenError::Person)
        );
    }

    #[test]
    fn headers_are_checked_before_anything_else() {
        let enc = |v: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
        };
        let tok = |h: Value| format!("{}.e30.sig", enc(&h));
        assert_eq!(
            header(&tok(json!({"alg": "none"}))).unwrap_err(),
            TokenError::AlgNone
        );
        assert_eq!(
            header(&tok(json!({"alg": "HS256"}))).unwrap_err(),
            TokenError::Algorithm("HS256".into())
        );
        assert!(matches!(
            header("abc").unwrap_err(),
            TokenError::Malformed(_)
        ));
        assert!(matches!(
            header("a.b.c.d").unwrap_err(),
            TokenError::Malformed(_)
        ));
        assert!(matches!(
            header("!!.e30.sig").unwrap_err(),
            TokenError::Malformed(_)
        ));
        let ok = header(&tok(json!({"alg": "EdDSA", "kid": "k1"}))).expect("valid");
        assert_eq!((ok.alg, ok.kid.as_deref()), (Algorithm::EdDSA, Some("k1")));
    }
}
