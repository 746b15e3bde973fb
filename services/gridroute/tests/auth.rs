//! Trust, tried as other systems would, against a real server: every RPC of `gridroute.v1`
//! refuses anonymous callers (health and reflection stay open); every principal kind may call
//! exactly the RPCs docs/ACCESS.md gives it (the expectation below is written out by hand, not
//! read from the code); each token defect is UNAUTHENTICATED naming its check; bodies cannot
//! name someone else; each kind acts only in its scope; ids cannot be probed.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{Env, grid_point, keys::TestKey, report};
use gridroute_proto::v1 as pb;
use prost::Message;
use serde_json::json;
use tonic::{Code, Request, transport::Channel};

/// Who may call what, as docs/ACCESS.md says.
const EXPECTED: &[(&str, &[&str])] = &[
    ("IncidentService/ReportIncident", &["source_system"]),
    ("IncidentService/ReportIncidents", &["source_system"]),
    (
        "IncidentService/GetIncident",
        &[
            "source_system",
            "department",
            "grid_worker",
            "command_centre",
            "auditor",
        ],
    ),
    (
        "IncidentService/ListIncidents",
        &["department", "command_centre", "auditor"],
    ),
    (
        "IncidentService/WatchIncidents",
        &["department", "command_centre", "auditor"],
    ),
    ("IncidentService/SubmitFeedback", &["source_system"]),
    ("IncidentService/GetReporterPoints", &["source_system"]),
    (
        "DispatchService/Subscribe",
        &["department", "command_centre"],
    ),
    (
        "DispatchService/AcceptIncident",
        &["department", "command_centre"],
    ),
    (
        "DispatchService/ResolveIncident",
        &["department", "command_centre"],
    ),
    (
        "DispatchService/ReturnIncident",
        &["department", "command_centre"],
    ),
    (
        "DispatchService/AddProgress",
        &["department", "command_centre"],
    ),
    (
        "DispatchService/RequestExtension",
        &["department", "command_centre"],
    ),
    (
        "DispatchService/RequestSuspension",
        &["department", "command_centre"],
    ),
    (
        "DispatchService/ResumeIncident",
        &["department", "command_centre"],
    ),
    ("SupervisionService/ArbitrateIncident", &["command_centre"]),
    ("SupervisionService/DecideRequest", &["command_centre"]),
    (
        "SupervisionService/VerifyIncident",
        &["command_centre", "grid_worker"],
    ),
    ("SupervisionService/CloseIncident", &["command_centre"]),
    ("SupervisionService/CancelIncident", &["command_centre"]),
    ("SupervisionService/UnmergeIncident", &["command_centre"]),
    (
        "SupervisionService/GetStats",
        &["department", "command_centre", "auditor"],
    ),
    (
        "RoutingService/ExplainRoute",
        &[
            "source_system",
            "department",
            "grid_worker",
            "command_centre",
            "table_admin",
            "auditor",
        ],
    ),
    ("TableService/PublishTable", &["table_admin"]),
    ("TableService/GetTableInfo", &["table_admin", "auditor"]),
    ("TableService/RollbackTable", &["table_admin"]),
    ("TableService/DiffTable", &["table_admin"]),
    ("AuditService/ListAuditRecords", &["auditor"]),
];

/// One principal of each kind on the Dawukou sample.
const PRINCIPALS: &[(&str, &str)] = &[
    ("source_system", "source_system:resident-app"),
    ("department", "department:water-affairs"),
    ("grid_worker", "grid_worker:gw-640202001001001"),
    ("command_centre", "command_centre:command-centre"),
    ("table_admin", "table_admin:ops"),
    ("auditor", "auditor:inspector"),
];

/// Every RPC of the contract: `Service/Method`, and whether the client or the server streams.
fn rpcs() -> Vec<(String, bool, bool)> {
    let set = prost_types::FileDescriptorSet::decode(gridroute_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut out = Vec::new();
    for file in &set.file {
        for s in &file.service {
            for m in &s.method {
                out.push((
                    format!("{}/{}", s.name(), m.name()),
                    m.client_streaming(),
                    m.server_streaming(),
                ));
            }
        }
    }
    out
}

/// Calls an RPC with an empty message (or an empty client stream), optionally with a token, and
/// returns the code of the answer.
async fn raw_call(
    channel: Channel,
    rpc: &(String, bool, bool),
    authorization: Option<&str>,
) -> Code {
    let (name, client_streams, server_streams) = rpc;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path: tonic::codegen::http::uri::PathAndQuery =
        format!("/gridroute.v1.{name}").parse().unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let with_auth = |r| authed(r, authorization);
    let result = match (client_streams, server_streams) {
        (true, _) => grpc
            .client_streaming(
                authed(Request::new(tokio_stream::empty::<()>()), authorization),
                path,
                codec,
            )
            .await
            .map(drop),
        (false, true) => grpc
            .server_streaming(with_auth(Request::new(())), path, codec)
            .await
            .map(drop),
        (false, false) => grpc
            .unary(with_auth(Request::new(())), path, codec)
            .await
            .map(drop),
    };
    result.err().map_or(Code::Ok, |s| s.code())
}

fn authed<T>(mut r: Request<T>, authorization: Option<&str>) -> Request<T> {
    if let Some(a) = authorization {
        r.metadata_mut().insert("authorization", a.parse().unwrap());
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_callers_reach_only_health_and_reflection() {
    let env = Env::start().await;
    let channel = env.channel().await;
    let rpcs = rpcs();
    assert_eq!(
        rpcs.len(),
        EXPECTED.len(),
        "the expectation covers every RPC"
    );
    for rpc in &rpcs {
        assert_eq!(
            raw_call(channel.clone(), rpc, None).await,
            Code::Unauthenticated,
            "{} without credentials",
            rpc.0
        );
        assert_eq!(
            raw_call(channel.clone(), rpc, Some("Basic dXNlcjpwYXNz")).await,
            Code::Unauthenticated,
            "{} with a password",
            rpc.0
        );
    }
    // Probes and discovery need no credentials.
    let health = tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await;
    assert!(health.is_ok(), "{health:?}");
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest,
    };
    let mut stream = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([ServerReflectionRequest {
            message_request: Some(MessageRequest::ListServices(String::new())),
            ..Default::default()
        }]))
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_may_call_exactly_what_the_policy_gives_it() {
    let env = Env::start().await;
    let channel = env.channel().await;
    for rpc in rpcs() {
        let allowed = EXPECTED
            .iter()
            .find(|(m, _)| *m == rpc.0)
            .unwrap_or_else(|| panic!("{} is missing from the expectation", rpc.0))
            .1;
        for (kind, who) in PRINCIPALS {
            let code = raw_call(
                channel.clone(),
                &rpc,
                Some(&format!("Bearer {}", env.token(who))),
            )
            .await;
            if allowed.contains(kind) {
                assert!(
                    code != Code::PermissionDenied && code != Code::Unauthenticated,
                    "{who} may call {}: got {code:?}",
                    rpc.0
                );
            } else {
                assert_eq!(code, Code::PermissionDenied, "{who} calling {}", rpc.0);
            }
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(who: &str) -> serde_json::Value {
    json!({
        "iss": "gridroute-dev", "aud": "gridroute", "sub": "li.na",
        "gridroute": who, "iat": now(), "exp": now() + 600,
    })
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_token_defect_is_unauthenticated_naming_its_check() {
    let (rsa, ec, ed) = (
        TestKey::rsa("rsa-1"),
        TestKey::ec("ec-1"),
        TestKey::ed("ed-1"),
    );
    let env = Env::with_security(&[&rsa, &ec, &ed], |_| {}).await;
    let c = env.incidents().await;
    let unknown = pb::GetIncidentRequest {
        incident_id: "01JDXK3M4P5Q6R7S8T9V0W1X2Y-1".into(),
    };
    let call = |token: String| {
        let mut c = c.clone();
        let req = unknown.clone();
        async move {
            let mut r = Request::new(req);
            r.metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            c.get_incident(r).await
        }
    };
    // Every accepted algorithm, as an auditor (who may learn that the incident does not exist).
    for key in [&rsa, &ec, &ed] {
        let e = call(key.sign(&claims("auditor:inspector")))
            .await
            .unwrap_err();
        assert_eq!(
            e.code(),
            Code::NotFound,
            "{:?} tokens are accepted: {e:?}",
            key.alg
        );
    }
    // Within the leeway (30 s) an expired token still passes.
    let mut late = claims("auditor:inspector");
    late["exp"] = json!(now() - 10);
    assert_eq!(
        call(ed.sign(&late)).await.unwrap_err().code(),
        Code::NotFound
    );

    let header = |h: serde_json::Value| b64(h.to_string().as_bytes());
    let body = b64(claims("auditor:inspector").to_string().as_bytes());
    // The public key as an HMAC secret (the HS/RS confusion).
    let hs = {
        let secret = rsa.jwk["n"].as_str().unwrap().as_bytes().to_vec();
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some("rsa-1".into());
        jsonwebtoken::encode(
            &h,
            &claims("auditor:inspector"),
            &jsonwebtoken::EncodingKey::from_secret(&secret).unwrap(),
        )
        .unwrap()
    };
    let mut expired = claims("auditor:inspector");
    expired["exp"] = json!(now() - 120);
    let mut early = claims("auditor:inspector");
    early["nbf"] = json!(now() + 120);
    let mut wrong_iss = claims("auditor:inspector");
    wrong_iss["iss"] = json!("https://idp.elsewhere.example");
    let mut wrong_aud = claims("auditor:inspector");
    wrong_aud["aud"] = json!("another-service");
    let mut no_exp = claims("auditor:inspector");
    no_exp.as_object_mut().unwrap().remove("exp");
    let mut no_principal = claims("auditor:inspector");
    no_principal.as_object_mut().unwrap().remove("gridroute");
    let mut two_roles = claims("auditor:inspector");
    two_roles.as_object_mut().unwrap().remove("gridroute");
    two_roles["roles"] = json!(["gridroute:auditor", "gridroute:table_admin"]);
    let stranger = TestKey::ed("ed-1");
    let rotated = TestKey::ed("ed-unknown");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "alg none",
            format!("{}.{body}.", header(json!({"alg": "none"}))),
            "algorithm none",
        ),
        ("HS/RS confusion", hs, "algorithm \"HS256\""),
        ("expired", ed.sign(&expired), "expired"),
        ("not yet valid", ed.sign(&early), "not valid yet"),
        ("wrong issuer", ed.sign(&wrong_iss), "issuer"),
        ("wrong audience", ed.sign(&wrong_aud), "audience"),
        ("no exp", ed.sign(&no_exp), "exp claim is missing"),
        (
            "unknown kid",
            rotated.sign(&claims("auditor:inspector")),
            "key id",
        ),
        (
            "another key under a known kid",
            stranger.sign(&claims("auditor:inspector")),
            "signature",
        ),
        (
            "RS256 header on an EC key",
            {
                let sig = ec.sign(&claims("auditor:inspector"));
                let mut parts = sig.split('.');
                let _ = parts.next();
                format!(
                    "{}.{}.{}",
                    header(json!({"alg": "RS256", "kid": "ec-1"})),
                    parts.next().unwrap(),
                    parts.next().unwrap()
                )
            },
            "does not fit",
        ),
        ("no principal", ed.sign(&no_principal), "principal"),
        ("two principals", ed.sign(&two_roles), "more than one"),
        ("not a JWT", "abc".into(), "malformed"),
        ("garbage parts", "a.b.c".into(), "malformed"),
        (
            "truncated",
            ed.sign(&claims("auditor:inspector"))[..40].to_owned(),
            "malformed",
        ),
    ];
    for (what, token, says) in cases {
        let e = call(token.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{what}: {e:?}");
        assert!(
            e.message().contains(says),
            "{what}: {:?} should say {says:?}",
            e.message()
        );
        if token.len() > 20 {
            assert!(
                !e.message().contains(&token[token.len() - 20..]),
                "{what}: the token is echoed"
            );
        }
    }
}

fn denied<T>(r: Result<T, tonic::Status>, what: &str) {
    let e = r.err().unwrap_or_else(|| panic!("{what} was allowed"));
    assert_eq!(e.code(), Code::PermissionDenied, "{what}: {e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_cannot_name_someone_else() {
    let env = Env::start().await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let id = env
        .report(report("b-1", "city.vehicle.abandoned", lng, lat))
        .await;
    env.wait_status(&id, pb::IncidentStatus::Dispatched).await;
    let mut i = env.incidents().await;
    let mut forged = report("b-2", "city.vehicle.abandoned", lng, lat);
    forged.source_system = "12345-hotline".into();
    denied(
        i.report_incident(env.as_("source_system:resident-app", forged))
            .await,
        "a report in another system's name",
    );
    let mut d = env.dispatches().await;
    // The incident is property-office's; water-affairs names it in the body.
    denied(
        d.accept_incident(env.as_(
            "department:water-affairs",
            pb::AcceptIncidentRequest {
                incident_id: id.clone(),
                department_id: "property-office".into(),
                ..Default::default()
            },
        ))
        .await,
        "accepting as another department",
    );
    denied(
        d.subscribe(env.as_(
            "department:water-affairs",
            pb::SubscribeRequest {
                department_id: "property-office".into(),
                ..Default::default()
            },
        ))
        .await,
        "subscribing to another department's dispatches",
    );
    denied(
        env.supervision()
            .await
            .verify_incident(env.as_(
                "command_centre:command-centre",
                pb::VerifyIncidentRequest {
                    incident_id: id.clone(),
                    grid_worker_id: "gw-640202001001001".into(),
                    passed: true,
                    ..Default::default()
                },
            ))
            .await,
        "a command centre verifying as a grid worker",
    );
    denied(
        i.get_reporter_points(env.as_(
            "source_system:resident-app",
            pb::GetReporterPointsRequest {
                source_system: "12345-hotline".into(),
                reporter_id: "r-1".into(),
            },
        ))
        .await,
        "another system's reporters' points",
    );
    denied(
        env.table_admin()
            .await
            .rollback_table(env.as_(
                "table_admin:ops",
                pb::RollbackTableRequest {
                    published_by: "ops|forged note".into(),
                    ..Default::default()
                },
            ))
            .await,
        "a rollback in someone else's name",
    );
    // Omitting the field is the caller's own; the accept by the right department passes.
    let inc = d
        .accept_incident(env.as_person(
            "department:property-office",
            "zhao.wei",
            pb::AcceptIncidentRequest {
                incident_id: id.clone(),
                request_id: "b-acc".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let last = inc.timeline.last().unwrap();
    assert_eq!(
        (
            last.actor.as_str(),
            last.actor_kind.as_str(),
            last.user.as_str()
        ),
        ("property-office", "department", "zhao.wei"),
        "the timeline names the principal and the token's person"
    );
}

/// The sample rules with a second command centre for one street.
fn street_rules(street: &str) -> String {
    gridroute_benches::DAWUKOU_RULES
        .replace(
            "  - {id: water-affairs, name: 水务局}\n",
            "  - {id: water-affairs, name: 水务局}\n  - {id: street-centre, name: 街道指挥中心}\n",
        )
        .replace(
            "  \"640202\": command-centre\n",
            &format!("  \"640202\": command-centre\n  \"{street}\": street-centre\n"),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_acts_only_in_its_scope_and_ids_cannot_be_probed() {
    let table = gridroute_benches::dawukou();
    let (grid_a, path_a, lng_a, lat_a) = grid_point(&table, false);
    let (grid_b, path_b, lng_b, lat_b) = grid_point(&table, true);
    assert_ne!(path_a[1], path_b[1], "two streets");
    let env = Env::with_rules(&street_rules(&path_a[1])).await;
    let a = env
        .report(report("s-a", "city.sanitation", lng_a, lat_a))
        .await;
    let b = env
        .report(report("s-b", "city.sanitation", lng_b, lat_b))
        .await;
    env.wait_status(&a, pb::IncidentStatus::Dispatched).await;
    env.wait_status(&b, pb::IncidentStatus::Dispatched).await;
    let i = env.incidents().await;
    let get = |who: &str, id: &str| {
        let mut i = i.clone();
        let r = env.as_(
            who,
            pb::GetIncidentRequest {
                incident_id: id.to_owned(),
            },
        );
        async move { i.get_incident(r).await }
    };
    let code = |r: Result<tonic::Response<pb::Incident>, tonic::Status>| {
        r.err().map_or(Code::Ok, |e| e.code())
    };
    // The street centre sees its street only; an unknown id looks like another street's.
    let street = "command_centre:street-centre";
    assert_eq!(code(get(street, &a).await), Code::Ok);
    let other = get(street, &b).await.unwrap_err();
    let unknown = get(street, "01JDXK3M4P5Q6R7S8T9V0W1X2Y-1")
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::PermissionDenied);
    assert_eq!(unknown.code(), Code::PermissionDenied);
    assert_eq!(
        other.message().replace(&b, "ID"),
        unknown
            .message()
            .replace("01JDXK3M4P5Q6R7S8T9V0W1X2Y-1", "ID"),
        "the same answer whether or not the incident exists"
    );
    // Who sees everything may learn that an id does not exist.
    for who in ["command_centre:command-centre", "auditor:inspector"] {
        assert_eq!(
            code(get(who, "01JDXK3M4P5Q6R7S8T9V0W1X2Y-1").await),
            Code::NotFound
        );
        assert_eq!(code(get(who, &b).await), Code::Ok);
    }
    // Departments see what they handle; grid workers their grids; systems their reports.
    assert_eq!(code(get("department:urban-management", &a).await), Code::Ok);
    assert_eq!(
        code(get("department:water-affairs", &a).await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(get(&format!("grid_worker:gw-{grid_a}"), &a).await),
        Code::Ok
    );
    assert_eq!(
        code(get(&format!("grid_worker:gw-{grid_a}"), &b).await),
        Code::PermissionDenied
    );
    assert_eq!(code(get("source_system:resident-app", &a).await), Code::Ok);
    assert_eq!(
        code(get("source_system:12345-hotline", &a).await),
        Code::PermissionDenied
    );

    // Lists and watches: the street centre's default is its street; another street is refused.
    let list = |who: &str, region: &str| {
        let mut i = i.clone();
        let r = env.as_(
            who,
            pb::ListIncidentsRequest {
                region_code: region.to_owned(),
                ..Default::default()
            },
        );
        async move { i.list_incidents(r).await }
    };
    let own = list(street, "").await.unwrap().into_inner();
    assert_eq!(
        own.incidents
            .iter()
            .map(|x| x.incident_id.clone())
            .collect::<Vec<_>>(),
        std::slice::from_ref(&a)
    );
    assert_eq!(
        list(street, &path_b[1]).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert_eq!(
        i.clone()
            .watch_incidents(env.as_(
                street,
                pb::WatchIncidentsRequest {
                    region_code: path_b[1].clone(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    let all = list("auditor:inspector", "").await.unwrap().into_inner();
    assert_eq!(all.incidents.len(), 2);
    // A department lists its own incidents only, whatever it asks for.
    let mut i = i.clone();
    let mine = i
        .list_incidents(env.as_(
            "department:water-affairs",
            pb::ListIncidentsRequest::default(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(mine.incidents.is_empty());
    assert_eq!(
        i.list_incidents(env.as_(
            "department:water-affairs",
            pb::ListIncidentsRequest {
                department_id: "urban-management".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err()
        .code(),
        Code::PermissionDenied
    );

    // Actions: the street centre cancels in its street, not in the other; a grid worker
    // verifies in its grid only; a department acts on its incidents only.
    let mut s = env.supervision().await;
    let cancel = |id: &str| pb::CancelIncidentRequest {
        incident_id: id.to_owned(),
        reason: "reported in error".into(),
        ..Default::default()
    };
    assert_eq!(
        s.cancel_incident(env.as_(street, cancel(&b)))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    let mut d = env.dispatches().await;
    assert_eq!(
        d.accept_incident(env.as_(
            "department:water-affairs",
            pb::AcceptIncidentRequest {
                incident_id: a.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err()
        .code(),
        Code::PermissionDenied
    );
    d.resolve_incident(env.as_(
        "department:urban-management",
        pb::ResolveIncidentRequest {
            incident_id: a.clone(),
            note: "swept".into(),
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    let verify = |id: &str| pb::VerifyIncidentRequest {
        incident_id: id.to_owned(),
        passed: true,
        note: "checked on site".into(),
        ..Default::default()
    };
    assert_eq!(
        s.verify_incident(env.as_(&format!("grid_worker:gw-{grid_b}"), verify(&a)))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    let verified = s
        .verify_incident(env.as_(&format!("grid_worker:gw-{grid_a}"), verify(&a)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verified.status, pb::IncidentStatus::Verified as i32);
    // Only the reporting system gives feedback.
    let feedback = pb::SubmitFeedbackRequest {
        incident_id: a.clone(),
        satisfaction: 5,
        ..Default::default()
    };
    assert_eq!(
        i.submit_feedback(env.as_("source_system:12345-hotline", feedback.clone()))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    let closed = i
        .submit_feedback(env.as_("source_system:resident-app", feedback))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(closed.status, pb::IncidentStatus::Closed as i32);
    assert_eq!(
        s.cancel_incident(env.as_(street, cancel(&a)))
            .await
            .unwrap_err()
            .code(),
        Code::FailedPrecondition,
        "authority in its street: the closed case is refused for its state, not for who asks"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_codes_are_validated_alike_everywhere() {
    let env = Env::start().await;
    let centre = "command_centre:command-centre";
    let mut i = env.incidents().await;
    let list = i
        .list_incidents(env.as_(
            centre,
            pb::ListIncidentsRequest {
                region_code: "*".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    let watch = i
        .watch_incidents(env.as_(
            centre,
            pb::WatchIncidentsRequest {
                region_code: "*".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    let stats = env
        .supervision()
        .await
        .get_stats(env.as_(
            centre,
            pb::GetStatsRequest {
                region_code: "*".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    for e in [list, watch, stats] {
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(
            e.message().contains("region_code: \"*\" is not a region"),
            "{e:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_insecure_experiment_mode_trusts_a_header_but_keeps_the_policy() {
    let env = Env::with_security(&[], |s| {
        s.identity = gridroute_api::authz::Identity::Insecure;
    })
    .await;
    let header = |who: &str| {
        let mut r = Request::new(pb::GetTableInfoRequest {});
        r.metadata_mut()
            .insert("x-gridroute-principal", who.parse().unwrap());
        r
    };
    let mut t = env.table_admin().await;
    assert!(t.get_table_info(header("auditor")).await.is_ok());
    assert_eq!(
        t.get_table_info(header("department:water-affairs"))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied,
        "the policy still applies"
    );
    assert_eq!(
        t.get_table_info(pb::GetTableInfoRequest {})
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated,
        "no principal named, none assumed"
    );
}
