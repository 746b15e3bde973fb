//! Everything a caller presents is parsed without a panic and refused with a reason: any bytes
//! as an authorization header, any text as a token, tokens with any header and any claims,
//! any JSON as claims, any text as a key set or a certificate map, any bytes as a certificate.

#![allow(clippy::unwrap_used)]

use std::{sync::Arc, time::Duration};

use base64::Engine as _;
use gridroute_auth::{
    bearer,
    certs::CertMap,
    dev::{DEV_AUDIENCE, DEV_ISSUER, DevKeys},
    jwks::{JwksSource, KeySet, Keys},
    token::{ClaimMapping, TokenConfig, Verifier},
};
use gridroute_core::access::Principal;
use proptest::prelude::*;
use serde_json::Value;

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,24}".prop_map(Value::String),
        "gridroute:[a-z_]{0,14}:[a-z-]{0,10}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::hash_map(
                prop_oneof![
                    Just("sub".to_owned()),
                    Just("gridroute".to_owned()),
                    Just("roles".to_owned()),
                    Just("scope".to_owned()),
                    Just("kind".to_owned()),
                    Just("id".to_owned()),
                    Just("exp".to_owned()),
                    Just("alg".to_owned()),
                    Just("kid".to_owned()),
                    "\\PC{0,8}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn verifier() -> (DevKeys, Verifier) {
    let keys = DevKeys::generate().unwrap();
    let v = Verifier::new(
        TokenConfig {
            issuer: Some(DEV_ISSUER.into()),
            audience: Some(DEV_AUDIENCE.into()),
            ..TokenConfig::default()
        },
        Arc::new(Keys::new(JwksSource::Inline(keys.jwks()))),
    );
    (keys, v)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn any_header_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = bearer(&bytes);
    }

    #[test]
    fn any_claims(claims in json()) {
        let _ = ClaimMapping::default().principal(&claims);
    }

    #[test]
    fn any_text_as_keys_maps_principals_and_certificates(text in "\\PC{0,300}", der in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = KeySet::parse(&text);
        let _ = CertMap::from_yaml(&text);
        let _ = Principal::parse(&text);
        if let Ok(map) = CertMap::from_yaml("certificates:\n  - {subject_cn: x, principal: auditor}\n") {
            let _ = map.identify(&der);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Any token text, and tokens with any header and claims, signed or not: refused with a
    /// reason (or, when correctly signed with sane claims, accepted), never a panic.
    #[test]
    fn any_token(text in "\\PC{0,200}", header in json(), claims in json(), sign in any::<bool>()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (keys, v) = verifier();
            v.keys().load().await.unwrap();
            let _ = v.verify(&text).await;
            let unsigned = format!("{}.{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()), b64(b"sig"));
            prop_assert!(v.verify(&unsigned).await.is_err());
            if sign {
                let t = keys.sign(&claims);
                let _ = v.verify(&t).await;
            }
            let _ = keys.token(&Principal::parse("auditor").unwrap(), Duration::from_secs(5));
            Ok(())
        })?;
    }
}
