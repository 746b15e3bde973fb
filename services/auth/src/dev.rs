//! A development signing key and tokens made with it, so that `gridroute dev` runs with
//! authentication on and prints ready-to-use tokens, and tests can act as any principal. The
//! key is an Ed25519 key kept in a file under `target/` (reused across restarts, so printed
//! tokens keep working); it is never used outside development and tests.

use std::{
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::Engine as _;
use gridroute_core::access::Principal;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Issuer of development tokens.
pub const DEV_ISSUER: &str = "gridroute-dev";
/// Audience of development tokens (and the default audience of `gridroute dev`).
pub const DEV_AUDIENCE: &str = "gridroute";
/// File name of the development signing key (PKCS#8 PEM) inside its directory.
pub const KEY_FILE: &str = "dev-signing-key.pem";
/// File name of the development key set (JWKS) inside its directory.
pub const JWKS_FILE: &str = "dev-jwks.json";

/// A development signing key.
pub struct DevKeys {
    kid: String,
    pem: String,
    encoding: EncodingKey,
    public_raw: Vec<u8>,
}

impl std::fmt::Debug for DevKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevKeys")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl DevKeys {
    /// A fresh key.
    pub fn generate() -> Result<Self, String> {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(|e| e.to_string())?;
        Self::from_pem(&pair.serialize_pem())
    }

    /// A key from its PKCS#8 PEM.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let pair = rcgen::KeyPair::from_pem(pem).map_err(|e| format!("signing key: {e}"))?;
        let public_raw = pair.public_key_raw().to_vec();
        let digest = Sha256::digest(&public_raw);
        let kid = format!(
            "dev-{}",
            digest[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let encoding =
            EncodingKey::from_ed_pem(pem.as_bytes()).map_err(|e| format!("signing key: {e}"))?;
        Ok(Self {
            kid,
            pem: pem.to_owned(),
            encoding,
            public_raw,
        })
    }

    /// The key kept in `dir` (created, with its key set beside it, when absent).
    pub fn load_or_create(dir: &Path) -> Result<Self, String> {
        let path = dir.join(KEY_FILE);
        let keys = match std::fs::read_to_string(&path) {
            Ok(pem) => Self::from_pem(&pem)?,
            Err(_) => {
                let keys = Self::generate()?;
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                write_private(&path, keys.pem.as_bytes())?;
                keys
            }
        };
        std::fs::write(dir.join(JWKS_FILE), keys.jwks())
            .map_err(|e| format!("{}: {e}", dir.join(JWKS_FILE).display()))?;
        Ok(keys)
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key set (JWKS) that verifies this key's tokens.
    pub fn jwks(&self) -> String {
        json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA",
            "kid": self.kid, "x": b64(&self.public_raw),
        }]})
        .to_string()
    }

    /// Signs arbitrary claims with this key (EdDSA, this key's id).
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap_or_default()
    }

    /// A token for `principal`, valid for `ttl`, with the development issuer and audience.
    /// The person is the principal's person, or `dev-<kind>` when it has none.
    pub fn token(&self, principal: &Principal, ttl: Duration) -> String {
        let now = now_secs();
        let person = if principal.person.is_empty() {
            format!("dev-{}", principal.kind.as_str())
        } else {
            principal.person.clone()
        };
        self.sign(&json!({
            "iss": DEV_ISSUER,
            "aud": DEV_AUDIENCE,
            "sub": person,
            "gridroute": principal.label(),
            "iat": now,
            "nbf": now,
            "exp": now + ttl.as_secs(),
        }))
    }
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(bytes)
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        jwks::{JwksSource, Keys},
        token::{TokenConfig, TokenError, Verifier},
    };
    use gridroute_core::access::Kind;

    fn verifier(keys: &DevKeys) -> Verifier {
        Verifier::new(
            TokenConfig {
                issuer: Some(DEV_ISSUER.into()),
                audience: Some(DEV_AUDIENCE.into()),
                ..TokenConfig::default()
            },
            Arc::new(Keys::new(JwksSource::Inline(keys.jwks()))),
        )
    }

    #[tokio::test]
    async fn dev_tokens_verify_and_survive_a_restart() {
        let dir = std::env::temp_dir().join(format!("gridroute-dev-keys-{}", std::process::id()));
        let keys = DevKeys::load_or_create(&dir).expect("created");
        let again = DevKeys::load_or_create(&dir).expect("reloaded");
        assert_eq!(keys.kid(), again.kid(), "the same key after a restart");
        let v = verifier(&again);
        v.keys().load().await.expect("keys load");
        let p = Principal::new(Kind::Department, "water-affairs").with_person("li.na");
        let got = v
            .verify(&keys.token(&p, Duration::from_secs(60)))
            .await
            .expect("verifies");
        assert_eq!(got, p);
        // A cached token verifies again; a tampered one does not.
        let t = keys.token(&p, Duration::from_secs(60));
        assert_eq!(v.verify(&t).await.expect("cached"), p);
        let mut tampered = t.clone();
        tampered.push('A');
        assert_eq!(v.verify(&tampered).await, Err(TokenError::Signature));
        let _ = std::fs::remove_dir_all(dir);
    }
}
