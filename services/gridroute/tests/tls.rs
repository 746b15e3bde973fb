//! TLS on both sides of the real binary: `rediss://` to a redis-server that speaks only TLS
//! (its certificate signed by a private CA the process trusts through SSL_CERT_FILE, as an
//! operator adds the CA to the trust store of the image or VM), and a gRPC endpoint that
//! speaks only TLS (`--tls-cert`, `--tls-key`), called by a client and by `gridroute health`
//! that trust the same CA. Certificates come from the openssl CLI.

#![allow(clippy::unwrap_used)]

use crate::common;

use common::process::{Child, ServeAuth, serve_command, wait_serving};

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use gridroute_proto::v1::{self as pb, incident_service_client::IncidentServiceClient};
use gridroute_store::local::{LocalRedis, free_port};
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let ok = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl is installed")
        .success();
    assert!(ok, "openssl {args:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_grpc_over_tls_against_a_tls_only_redis() {
    let dir = std::env::temp_dir().join(format!("gridroute-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let days = ["-days", "2"];
    openssl(
        &dir,
        &[
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-subj",
                "/CN=gridroute test CA",
            ][..],
            &days,
        ]
        .concat(),
    );
    openssl(
        &dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        &dir,
        &[
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-extfile",
                "ext",
            ][..],
            &days,
        ]
        .concat(),
    );
    let redis = LocalRedis::start_tls(
        &dir.join("server.pem"),
        &dir.join("server.key"),
        &dir.join("ca.pem"),
    )
    .unwrap();

    let (grpc, metrics) = (free_port().unwrap(), free_port().unwrap());
    let auth = ServeAuth::new("tls");
    let redis_url = format!("rediss://localhost:{}/", redis.port());
    let child = serve_command(&redis_url, grpc, Some(metrics), &auth)
        .arg("--tls-cert")
        .arg(dir.join("server.pem"))
        .arg("--tls-key")
        .arg(dir.join("server.key"))
        .env("SSL_CERT_FILE", dir.join("ca.pem"))
        .spawn()
        .expect("the binary starts");
    let _child = Child(child);
    let addr = format!("https://localhost:{grpc}");
    let tls = tonic::transport::ClientTlsConfig::new().ca_certificate(
        tonic::transport::Certificate::from_pem(std::fs::read(dir.join("ca.pem")).unwrap()),
    );
    let mut channel = None;
    for _ in 0..200 {
        let endpoint = Channel::from_shared(addr.clone())
            .unwrap()
            .tls_config(tls.clone())
            .unwrap();
        if let Ok(c) = endpoint.connect().await {
            channel = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let channel =
        channel.expect("gRPC port opens over TLS: the process connected to Redis over TLS");
    wait_serving(channel.clone()).await;
    // The CLI's health check over TLS, trusting the CA through GRIDROUTE_CA_CERT.
    let health_cli = Command::new(env!("CARGO_BIN_EXE_gridroute"))
        .args(["health", "--addr", &addr])
        .env("GRIDROUTE_CA_CERT", dir.join("ca.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(health_cli.success(), "gridroute health over https");
    // Plain HTTP/2 is not served.
    let plain = Channel::from_shared(format!("http://127.0.0.1:{grpc}"))
        .unwrap()
        .connect()
        .await;
    if let Ok(c) = plain {
        let r = HealthClient::new(c)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await;
        assert!(r.is_err(), "a plaintext call must fail");
    }
    // A report goes through both TLS connections and is routed.
    let mut c = IncidentServiceClient::new(channel);
    let id = c
        .report_incident(auth.signed(pb::ReportIncidentRequest {
            request_id: "tls-1".into(),
            source_system: "resident-app".into(),
            category: "city.sanitation".into(),
            location: Some(pb::Location {
                kind: Some(pb::location::Kind::GridCode(
                    gridroute_benches::dawukou().grids.grids()[0].code.clone(),
                )),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .incident_id;
    let mut routed = false;
    for _ in 0..100 {
        let inc = c
            .get_incident(auth.signed(pb::GetIncidentRequest {
                incident_id: id.clone(),
            }))
            .await
            .unwrap()
            .into_inner();
        if inc.status == pb::IncidentStatus::Dispatched as i32 {
            routed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(routed, "routed through rediss://");
    let _ = std::fs::remove_dir_all(&dir);
}
