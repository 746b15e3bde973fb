//! Client certificates as identities, with the real binary: over mutual TLS a certificate the
//! map names identifies its system without a token; a verified certificate no entry names is
//! refused; a token on the same connection wins over the certificate; the HTTP face over TLS
//! identifies by the same certificate.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use common::{
    pki::Pki,
    process::{Child, ServeAuth, temp_dir},
};
use gridroute_proto::v1::{self as pb, incident_service_client::IncidentServiceClient};
use gridroute_store::local::{LocalRedis, free_port};
use tonic::{
    Code,
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};

async fn channel(addr: &str, ca: &str, client: Option<&(String, String)>) -> Channel {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some((cert, key)) = client {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    for _ in 0..200 {
        let endpoint = Channel::from_shared(addr.to_owned())
            .unwrap()
            .tls_config(tls.clone())
            .unwrap();
        if let Ok(c) = endpoint.connect().await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{addr} never opened");
}

fn report(rid: &str) -> pb::ReportIncidentRequest {
    pb::ReportIncidentRequest {
        request_id: rid.into(),
        category: "city.sanitation".into(),
        location: Some(pb::Location {
            kind: Some(pb::location::Kind::GridCode(
                gridroute_benches::dawukou().grids.grids()[0].code.clone(),
            )),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapped_certificate_identifies_its_system_and_an_unmapped_one_is_refused() {
    let dir = temp_dir("mtls");
    let pki = Pki::new();
    let (server_cert, server_key) = pki.leaf("localhost", &["localhost"], true);
    let hotline = pki.leaf("hotline-gateway", &["hotline.gateway.example"], false);
    let stranger = pki.leaf("someone-else", &["stranger.example"], false);
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let ca_pem = pki.ca.pem();
    let map = write(
        "certs.yaml",
        "certificates:\n  - san_dns: hotline.gateway.example\n    principal: source_system:12345-hotline\n",
    );
    let redis = LocalRedis::start().unwrap();
    let auth = ServeAuth::new("mtls");
    let (grpc, metrics, http) = (
        free_port().unwrap(),
        free_port().unwrap(),
        free_port().unwrap(),
    );
    let child = Command::new(env!("CARGO_BIN_EXE_gridroute"))
        .args([
            "serve",
            "--redis-url",
            &redis.url(),
            "--grpc-addr",
            &format!("127.0.0.1:{grpc}"),
            "--http-addr",
            &format!("127.0.0.1:{http}"),
            "--metrics-addr",
            &format!("127.0.0.1:{metrics}"),
            "--tls-cert",
            &write("server.pem", &server_cert),
            "--tls-key",
            &write("server.key", &server_key),
            "--tls-client-ca",
            &write("ca.pem", &ca_pem),
            "--tls-client-optional",
            "--cert-map",
            &map,
        ])
        .args(auth.args())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _child = Child(child);
    let addr = format!("https://localhost:{grpc}");

    // The hotline's certificate alone: it reports as 12345-hotline, and reads its report.
    let mut hotline_client =
        IncidentServiceClient::new(channel(&addr, &ca_pem, Some(&hotline)).await);
    let id = hotline_client
        .report_incident(report("m-1"))
        .await
        .unwrap()
        .into_inner()
        .incident_id;
    let inc = hotline_client
        .get_incident(pb::GetIncidentRequest {
            incident_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(inc.report.unwrap().source_system, "12345-hotline");
    assert_eq!(inc.timeline[0].user, "cert:hotline.gateway.example");

    // A verified certificate that no entry names.
    let e = IncidentServiceClient::new(channel(&addr, &ca_pem, Some(&stranger)).await)
        .report_incident(report("m-2"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("not mapped"), "{e:?}");

    // No certificate and no token; then a token on the hotline's connection wins.
    let e = IncidentServiceClient::new(channel(&addr, &ca_pem, None).await)
        .report_incident(report("m-3"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = hotline_client
        .report_incident(auth.req("department:water-affairs", report("m-4")))
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::PermissionDenied,
        "a department may not report, whatever certificate carries it"
    );

    // The HTTP face over TLS: the same certificate identifies the same system.
    let http_addr = format!("127.0.0.1:{http}");
    let got = https_get(
        &http_addr,
        &ca_pem,
        Some(&hotline),
        &format!("/v1/incidents/{id}"),
    )
    .await;
    assert_eq!(got.0, 200, "{}", got.1);
    assert!(got.1.contains("12345-hotline"), "{}", got.1);
    let none = https_get(&http_addr, &ca_pem, None, &format!("/v1/incidents/{id}")).await;
    assert_eq!(none.0, 401, "{}", none.1);
    let stranger = https_get(&http_addr, &ca_pem, Some(&stranger), "/v1/stats").await;
    assert_eq!(stranger.0, 401, "{}", stranger.1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A GET over HTTPS (HTTP/1.1) with an optional client certificate: status and body.
async fn https_get(
    addr: &str,
    ca_pem: &str,
    client: Option<&(String, String)>,
    path: &str,
) -> (u16, String) {
    use http_body_util::BodyExt;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let mut tcp = None;
    for _ in 0..200 {
        if let Ok(s) = tokio::net::TcpStream::connect(addr).await {
            tcp = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp.expect("the HTTP port opens"),
        )
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", "localhost")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}
