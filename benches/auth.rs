//! What authentication costs a call: verifying a token the first time (signature, claims,
//! principal) for each accepted algorithm (EdDSA, RS256 with a 2048-bit key, ES256), and every
//! later call with the same token (a SHA-256 of the token and one map lookup). `make bench`
//! runs it; figures in docs/PERFORMANCE.md.

#![allow(clippy::unwrap_used, missing_docs)]

use std::{hint::black_box, sync::Arc, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use gridroute_auth::{
    dev::{DEV_AUDIENCE, DEV_ISSUER, DevKeys},
    jwks::{JwksSource, Keys},
    token::{TokenConfig, Verifier},
};
use gridroute_core::access::{Kind, Principal};
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
use serde_json::{Value, json};

/// An RS256 and an ES256 key with their key set (the RSA key is the tests' fixture).
fn other_keys() -> (Vec<(Algorithm, &'static str, EncodingKey)>, String) {
    let rsa = EncodingKey::from_rsa_pem(include_bytes!(
        "../services/gridroute/tests/fixtures/rsa-test-key.pem"
    ))
    .unwrap();
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let ec = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
    let keys = vec![(Algorithm::RS256, "rsa", rsa), (Algorithm::ES256, "ec", ec)];
    let jwks: Vec<Value> = keys
        .iter()
        .map(|(alg, kid, k)| {
            let mut j = serde_json::to_value(Jwk::from_encoding_key(k, *alg).unwrap()).unwrap();
            j["kid"] = json!(kid);
            j
        })
        .collect();
    (keys, json!({"keys": jwks}).to_string())
}

fn tokens(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let keys = DevKeys::generate().unwrap();
    let v = Arc::new(Verifier::new(
        TokenConfig {
            issuer: Some(DEV_ISSUER.into()),
            audience: Some(DEV_AUDIENCE.into()),
            ..TokenConfig::default()
        },
        Arc::new(Keys::new(JwksSource::Inline(keys.jwks()))),
    ));
    rt.block_on(v.keys().load()).unwrap();
    let p = Principal::new(Kind::SourceSystem, "12345-hotline").with_person("gateway");
    let token = keys.token(&p, Duration::from_secs(3600));
    rt.block_on(v.verify(&token)).unwrap();
    c.bench_function("token: cached (same token again)", |b| {
        b.iter(|| rt.block_on(v.verify(black_box(&token))).unwrap())
    });
    // A fresh token every iteration: the full check (the cache only fills).
    let mut n = 0u64;
    c.bench_function(
        "token: first use, EdDSA (signature, claims, principal)",
        |b| {
            b.iter_batched(
                || {
                    n += 1;
                    keys.token(&p, Duration::from_secs(3600 + n))
                },
                |t| rt.block_on(v.verify(&t)).unwrap(),
                criterion::BatchSize::SmallInput,
            )
        },
    );
}

fn algorithms(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (keys, jwks) = other_keys();
    let v = Verifier::new(
        TokenConfig::default(),
        Arc::new(Keys::new(JwksSource::Inline(jwks))),
    );
    rt.block_on(v.keys().load()).unwrap();
    for (alg, kid, key) in &keys {
        let mut n = 0u64;
        c.bench_function(&format!("token: first use, {alg:?}"), |b| {
            b.iter_batched(
                || {
                    n += 1;
                    let mut h = Header::new(*alg);
                    h.kid = Some((*kid).to_owned());
                    let claims = json!({"sub": "gateway", "gridroute": "source_system:12345-hotline", "exp": 4_000_000_000u64 + n});
                    jsonwebtoken::encode(&h, &claims, key).unwrap()
                },
                |t| rt.block_on(v.verify(&t)).unwrap(),
                criterion::BatchSize::SmallInput,
            )
        });
    }
}

criterion_group!(benches, tokens, algorithms);
criterion_main!(benches);
