//! The key set from an identity provider's https URL, against a real HTTPS server (a private
//! CA, as a city's provider often has): tokens verify, a rotated key is fetched when a token
//! names its unknown `kid`, made-up key ids do not turn into a flood of fetches, and a key
//! removed from the set stops working at the next load.

#![allow(clippy::unwrap_used)]

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use gridroute_auth::{
    dev::{DEV_AUDIENCE, DEV_ISSUER, DevKeys},
    jwks::{JwksSource, Keys},
    token::{TokenConfig, TokenError, Verifier},
};
use gridroute_core::access::{Kind, Principal};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTPS server answering every request with the current key set, counting requests.
struct Provider {
    url: String,
    ca_pem: String,
    jwks: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
}

impl Provider {
    async fn start(jwks: String) -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "city identity provider CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let jwks = Arc::new(Mutex::new(jwks));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (j, f) = (jwks.clone(), fetches.clone());
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let (acceptor, j, f) = (acceptor.clone(), j.clone(), f.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = vec![0; 4096];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        let n = tls.read(&mut buf).await.unwrap();
                        if n == 0 {
                            return;
                        }
                        got.extend_from_slice(&buf[..n]);
                    }
                    f.fetch_add(1, Ordering::SeqCst);
                    let body = j.lock().unwrap().clone();
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    tls.write_all(head.as_bytes()).await.unwrap();
                    tls.write_all(body.as_bytes()).await.unwrap();
                    tls.shutdown().await.ok();
                });
            }
        });
        Self {
            url: format!("https://localhost:{port}/.well-known/jwks.json"),
            ca_pem: ca.pem(),
            jwks,
            fetches,
        }
    }
}

fn verifier(p: &Provider) -> Verifier {
    Verifier::new(
        TokenConfig {
            issuer: Some(DEV_ISSUER.into()),
            audience: Some(DEV_AUDIENCE.into()),
            ..TokenConfig::default()
        },
        Arc::new(Keys::new(JwksSource::Url {
            url: p.url.clone(),
            ca_pem: Some(p.ca_pem.clone().into_bytes()),
        })),
    )
}

#[tokio::test]
async fn keys_come_from_the_providers_url_and_rotations_are_picked_up() {
    let (old, new) = (DevKeys::generate().unwrap(), DevKeys::generate().unwrap());
    let provider = Provider::start(old.jwks()).await;
    let v = verifier(&provider);
    v.keys().load().await.unwrap();
    assert_eq!(provider.fetches.load(Ordering::SeqCst), 1);
    let p = Principal::new(Kind::Department, "water-affairs").with_person("li.na");
    assert_eq!(
        v.verify(&old.token(&p, Duration::from_secs(60))).await,
        Ok(p.clone())
    );

    // The provider rotates: a token under the new kid makes one load, then verifies.
    *provider.jwks.lock().unwrap() = new.jwks();
    assert_eq!(
        v.verify(&new.token(&p, Duration::from_secs(60))).await,
        Ok(p.clone())
    );
    assert_eq!(provider.fetches.load(Ordering::SeqCst), 2);
    // The old key left the set: its tokens no longer verify (not even from the cache).
    assert!(matches!(
        v.verify(&old.token(&p, Duration::from_secs(61))).await,
        Err(TokenError::UnknownKey(_))
    ));

    // Made-up key ids right after a load make no further fetches (rate limit).
    let forger = DevKeys::generate().unwrap();
    for i in 0..20 {
        let t = forger.token(&p, Duration::from_secs(60 + i));
        assert!(matches!(v.verify(&t).await, Err(TokenError::UnknownKey(_))));
    }
    assert_eq!(
        provider.fetches.load(Ordering::SeqCst),
        2,
        "unknown kids within the rate limit fetch nothing"
    );
}

#[tokio::test]
async fn an_untrusted_provider_certificate_loads_nothing() {
    let keys = DevKeys::generate().unwrap();
    let provider = Provider::start(keys.jwks()).await;
    // Without the private CA, the provider's certificate is not trusted.
    let k = Keys::new(JwksSource::Url {
        url: provider.url.clone(),
        ca_pem: None,
    });
    let e = k.load().await.unwrap_err();
    assert!(e.contains("TLS"), "{e}");
    assert!(!k.is_loaded());
}
