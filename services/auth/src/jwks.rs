//! The key set (JWKS) tokens are verified against: from a file (a mounted Secret) or from the
//! identity provider's https URL. Loaded at start, reloaded every refresh interval and, when a
//! token names a key id the set lacks (the provider rotated its keys), at once, but at most once
//! per [`Keys::min_refresh`] for such reasons, so that made-up key ids cannot turn into a flood
//! of fetches. A load that fails keeps the keys in force.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwapOption;
use gridroute_telemetry::names;
use jsonwebtoken::{
    Algorithm, AlgorithmFamily, DecodingKey,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse},
};

/// Where the key set comes from.
#[derive(Debug, Clone)]
pub enum JwksSource {
    /// A JSON file, re-read at every refresh (a rotated Secret is picked up).
    File(PathBuf),
    /// The identity provider's JWKS endpoint.
    Url {
        /// `https://…` (or `http://` for a provider on the same host).
        url: String,
        /// PEM CA certificates to trust besides the public roots (a city's private CA).
        ca_pem: Option<Vec<u8>>,
    },
    /// A fixed key set (development keys, tests).
    Inline(String),
}

/// One usable verification key.
#[derive(Clone)]
pub struct Key {
    /// Its id, if the set gives one.
    pub kid: Option<String>,
    /// RSA, EC (P-256) or Ed25519.
    pub family: AlgorithmFamily,
    /// The algorithm the set binds the key to, if it does.
    pub alg: Option<Algorithm>,
    /// The key.
    pub decoding: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("family", &self.family)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// A parsed key set: the signature keys of supported types; everything else is skipped.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<Key>,
    raw: String,
}

/// The answer to "which key verifies this token".
#[derive(Debug)]
pub enum Lookup {
    /// This one.
    Found(Key),
    /// No key with that id (or, without an id, none of the token's type).
    Unknown,
    /// No id, and several keys of the token's type.
    Ambiguous,
    /// The key with that id is of another type than the token's algorithm.
    WrongType(String),
    /// No key set is loaded.
    NoKeys,
}

impl KeySet {
    /// Parses a JWKS document. Keys of unsupported types, HMAC (`oct`) keys and keys marked for
    /// encryption are skipped; a document with no usable key is an error.
    pub fn parse(json: &str) -> Result<Self, String> {
        let set: JwkSet = serde_json::from_str(json).map_err(|e| format!("not a JWKS: {e}"))?;
        let keys: Vec<Key> = set.keys.iter().filter_map(usable).collect();
        if keys.is_empty() {
            return Err("the key set holds no RSA, P-256 or Ed25519 signature key".into());
        }
        Ok(Self {
            keys,
            raw: json.to_owned(),
        })
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is no usable key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key for a token's `kid` and algorithm.
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> Lookup {
        let fits = |k: &Key| k.family == alg.family() && k.alg.is_none_or(|a| a == alg);
        match kid {
            Some(kid) => match self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)) {
                Some(k) if fits(k) => Lookup::Found(k.clone()),
                Some(_) => Lookup::WrongType(kid.to_owned()),
                None => Lookup::Unknown,
            },
            None => {
                let mut of_type = self.keys.iter().filter(|k| fits(k));
                match (of_type.next(), of_type.next()) {
                    (Some(k), None) => Lookup::Found(k.clone()),
                    (Some(_), Some(_)) => Lookup::Ambiguous,
                    (None, _) => Lookup::Unknown,
                }
            }
        }
    }
}

/// A JWK as a verification key, if it is one gridroute accepts.
fn usable(jwk: &Jwk) -> Option<Key> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let family = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            AlgorithmFamily::Ec
        }
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            AlgorithmFamily::Ed
        }
        _ => return None,
    };
    let alg = match jwk.common.key_algorithm {
        Some(a) => {
            let a = Algorithm::try_from(a).ok()?;
            if a.family() != family {
                return None;
            }
            Some(a)
        }
        None => None,
    };
    Some(Key {
        kid: jwk.common.key_id.clone(),
        family,
        alg,
        decoding: DecodingKey::from_jwk(jwk).ok()?,
    })
}

/// The key set in force and how it is kept fresh.
#[derive(Debug)]
pub struct Keys {
    source: JwksSource,
    current: ArcSwapOption<KeySet>,
    generation: AtomicU64,
    /// When a token's unknown key id last made the set load (the rate limit's clock).
    last_forced: std::sync::Mutex<Option<Instant>>,
    loading: tokio::sync::Mutex<()>,
    /// Least time between two loads triggered by unknown key ids.
    pub min_refresh: Duration,
}

/// How long one fetch of the key set may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest key set accepted (a provider's set is a few kilobytes).
pub const MAX_JWKS_BYTES: usize = 1 << 20;

impl Keys {
    /// Keys from `source`, not loaded yet.
    pub fn new(source: JwksSource) -> Self {
        Self {
            source,
            current: ArcSwapOption::empty(),
            generation: AtomicU64::new(0),
            last_forced: std::sync::Mutex::new(None),
            loading: tokio::sync::Mutex::new(()),
            min_refresh: Duration::from_secs(10),
        }
    }

    /// Where the keys come from.
    pub fn source(&self) -> &JwksSource {
        &self.source
    }

    /// Bumped whenever the key set in force changes: tokens verified under an older set are
    /// verified again (a key removed from the set stops working at once).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether a key set is loaded.
    pub fn is_loaded(&self) -> bool {
        self.current.load().is_some()
    }

    /// The key for a token.
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> Lookup {
        match self.current.load().as_deref() {
            Some(set) => set.find(kid, alg),
            None => Lookup::NoKeys,
        }
    }

    async fn fetch(&self) -> Result<String, String> {
        match &self.source {
            JwksSource::Inline(json) => Ok(json.clone()),
            // A small file read; no need for tokio's fs module.
            JwksSource::File(path) => {
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
            }
            JwksSource::Url { url, ca_pem } => {
                let body = crate::https::get(url, ca_pem.as_deref(), FETCH_TIMEOUT, MAX_JWKS_BYTES)
                    .await?;
                String::from_utf8(body).map_err(|_| format!("{url}: the key set is not UTF-8"))
            }
        }
    }

    /// Loads the key set now; on failure the set in force stays. Returns the number of keys.
    pub async fn load(&self) -> Result<usize, String> {
        let _one_at_a_time = self.loading.lock().await;
        self.load_locked().await
    }

    async fn load_locked(&self) -> Result<usize, String> {
        let result = self.fetch().await.and_then(|json| KeySet::parse(&json));
        match result {
            Ok(set) => {
                let n = set.len();
                let unchanged = self
                    .current
                    .load()
                    .as_deref()
                    .is_some_and(|old| old.raw == set.raw);
                if unchanged {
                    metrics::counter!(names::AUTH_JWKS_LOADS_TOTAL, "outcome" => "unchanged")
                        .increment(1);
                } else {
                    self.current.store(Some(Arc::new(set)));
                    self.generation.fetch_add(1, Ordering::AcqRel);
                    metrics::counter!(names::AUTH_JWKS_LOADS_TOTAL, "outcome" => "ok").increment(1);
                    tracing::info!(keys = n, "token key set loaded");
                }
                metrics::gauge!(names::AUTH_JWKS_KEYS).set(n as f64);
                Ok(n)
            }
            Err(e) => {
                metrics::counter!(names::AUTH_JWKS_LOADS_TOTAL, "outcome" => "error").increment(1);
                tracing::warn!(error = %e, "token key set not loaded; the keys in force stay");
                Err(e)
            }
        }
    }

    /// Loads the key set again because a token named an unknown key, unless an unknown key
    /// made it load less than [`Self::min_refresh`] ago. Returns whether a load ran (and
    /// succeeded).
    pub async fn refresh_for_unknown(&self) -> bool {
        let _one_at_a_time = self.loading.lock().await;
        {
            let Ok(mut last) = self.last_forced.lock() else {
                return false;
            };
            if last.is_some_and(|t| t.elapsed() < self.min_refresh) {
                return false;
            }
            *last = Some(Instant::now());
        }
        self.load_locked().await.is_ok()
    }

    /// Reloads every `every` until `stop` turns true (retrying sooner while no set is loaded).
    pub async fn refresh_loop(
        self: Arc<Self>,
        every: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            let wait = if self.is_loaded() {
                every
            } else {
                every.min(Duration::from_secs(5))
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let _ = self.load().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_AND_ED: &str = r#"{"keys": [
        {"kty": "RSA", "kid": "r1", "use": "sig", "alg": "RS256",
         "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw",
         "e": "AQAB"},
        {"kty": "OKP", "crv": "Ed25519", "kid": "e1", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
        {"kty": "oct", "kid": "h1", "k": "c2VjcmV0"},
        {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"}
    ]}"#;

    #[test]
    fn only_signature_keys_of_accepted_types_are_kept() {
        let set = KeySet::parse(RSA_AND_ED).expect("parses");
        assert_eq!(set.len(), 2, "the HMAC and encryption keys are skipped");
        assert!(matches!(
            set.find(Some("r1"), Algorithm::RS256),
            Lookup::Found(_)
        ));
        assert!(matches!(
            set.find(Some("r1"), Algorithm::EdDSA),
            Lookup::WrongType(_)
        ));
        assert!(matches!(
            set.find(Some("h1"), Algorithm::HS256),
            Lookup::Unknown
        ));
        assert!(matches!(set.find(None, Algorithm::EdDSA), Lookup::Found(_)));
        assert!(matches!(set.find(None, Algorithm::ES256), Lookup::Unknown));
        assert!(KeySet::parse(r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#).is_err());
        assert!(KeySet::parse("not json").is_err());
    }
}
