//! Signing keys of every accepted type, for token tests: RSA (a fixed test key: ring cannot
//! generate RSA), P-256 and Ed25519 (generated), with their JWKs.

use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
use serde_json::Value;

/// A signing key and its public JWK.
pub struct TestKey {
    pub alg: Algorithm,
    pub kid: String,
    pub encoding: EncodingKey,
    pub jwk: Value,
}

impl TestKey {
    fn new(alg: Algorithm, kid: &str, encoding: EncodingKey) -> Self {
        let mut jwk =
            serde_json::to_value(Jwk::from_encoding_key(&encoding, alg).unwrap()).unwrap();
        jwk["kid"] = Value::String(kid.to_owned());
        jwk["use"] = Value::String("sig".to_owned());
        Self {
            alg,
            kid: kid.to_owned(),
            encoding,
            jwk,
        }
    }

    /// The committed RSA test key (RS256).
    pub fn rsa(kid: &str) -> Self {
        let pem = include_bytes!("../fixtures/rsa-test-key.pem");
        Self::new(
            Algorithm::RS256,
            kid,
            EncodingKey::from_rsa_pem(pem).unwrap(),
        )
    }

    /// A fresh P-256 key (ES256).
    pub fn ec(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        Self::new(
            Algorithm::ES256,
            kid,
            EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
        )
    }

    /// A fresh Ed25519 key (EdDSA). Its JWK is built from the raw public key (rcgen's PKCS#8
    /// carries the public key too, which the JWK helper does not take).
    pub fn ed(kid: &str) -> Self {
        use base64::Engine as _;
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key_raw());
        Self {
            alg: Algorithm::EdDSA,
            kid: kid.to_owned(),
            encoding: EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).unwrap(),
            jwk: serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "use": "sig"}),
        }
    }

    /// A token with these claims, signed by this key under its kid.
    pub fn sign(&self, claims: &Value) -> String {
        let mut h = Header::new(self.alg);
        h.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&h, claims, &self.encoding).unwrap()
    }
}

/// A JWKS of these keys.
pub fn jwks(keys: &[&TestKey]) -> String {
    serde_json::json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}
