//! Requests a careless or hostile client sends, against a real server: answers stay small and
//! precise (capped field violations, quoted and cut values), spans cannot overflow the
//! calendar, and nothing panics.

#![allow(clippy::unwrap_used)]

use crate::common;

use common::{Env, grid_point, report};
use gridroute_proto::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn violations_are_capped_and_values_cut() {
    let env = Env::start().await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let mut i = env.incidents().await;
    let mut many_urls = report("v-1", "city.sanitation", lng, lat);
    many_urls.attachment_urls = (0..50).map(|n| format!("ftp://{n}")).collect();
    let mut many_labels = report("v-2", "city.sanitation", lng, lat);
    many_labels.labels = (0..2000)
        .map(|n| (format!("{n}{}", "k".repeat(100)), "v".into()))
        .collect();
    for (what, r) in [("50 bad URLs", many_urls), ("2000 bad labels", many_labels)] {
        let e = i.report_incident(env.signed(r)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
        let bad = e.get_details_bad_request().unwrap();
        assert_eq!(bad.field_violations.len(), 21, "{what}");
        assert!(
            bad.field_violations[20].description.contains("more"),
            "{what}: {:?}",
            bad.field_violations[20]
        );
        assert!(
            e.details().len() + e.message().len() < 8 * 1024,
            "{what}: {} bytes of details",
            e.details().len()
        );
        assert!(
            bad.field_violations
                .iter()
                .all(|v| v.field.chars().count() <= 80),
            "{what}: echoed keys are cut"
        );
    }
    // A grid code is quoted in its message.
    let mut unknown = report("v-3", "city.sanitation", lng, lat);
    unknown.location = Some(pb::Location {
        kind: Some(pb::location::Kind::GridCode("9 9".into())),
        ..Default::default()
    });
    let e = i.report_incident(env.signed(unknown)).await.unwrap_err();
    assert!(e.message().contains("\"9 9\" is not a grid"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_extension_is_invalid_and_a_granted_one_never_panics() {
    let env = Env::start().await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let id = env
        .report(report("x-1", "city.vehicle.abandoned", lng, lat))
        .await;
    env.wait_status(&id, pb::IncidentStatus::Dispatched).await;
    let mut d = env.dispatches().await;
    let ask = |span: &str| pb::RequestExtensionRequest {
        incident_id: id.clone(),
        department_id: "property-office".into(),
        reason: "waiting for the owner".into(),
        extension: span.into(),
        request_id: String::new(),
    };
    let e = d
        .request_extension(env.signed(ask("5000wd")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("at most 366wd"), "{e:?}");
    // The longest allowed span, then a grant of the longest: the server answers (it used to
    // panic in the calendar and leave the request pending).
    d.request_extension(env.signed(ask("366wd"))).await.unwrap();
    let mut s = env.supervision().await;
    let e = s
        .decide_request(env.signed(pb::DecideRequestRequest {
            incident_id: id.clone(),
            department_id: "command-centre".into(),
            approve: true,
            granted_extension: "99999wd".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let inc = s
        .decide_request(env.signed(pb::DecideRequestRequest {
            incident_id: id.clone(),
            department_id: "command-centre".into(),
            approve: true,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(inc.pending.is_none());
    assert!(inc.resolve_deadline.unwrap().seconds > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_needs_no_request_id_nor_source() {
    let env = Env::start().await;
    let (_, _, lng, lat) = grid_point(&env.table(), false);
    let mut r = report("", "city.fire_lane.blocked", lng, lat);
    r.source_system.clear();
    for who in [
        "auditor:inspector",
        "department:water-affairs",
        "source_system:resident-app",
    ] {
        let d = env
            .routing()
            .await
            .explain_route(env.as_(
                who,
                pb::ExplainRouteRequest {
                    report: Some(r.clone()),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .decision
            .unwrap();
        assert_eq!(d.department_id, "emergency-management", "{who}");
    }
}

/// A client that knows only the endpoint learns the error-detail messages from reflection and
/// decodes an error's details with them: which field is wrong and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_details_decode_with_the_descriptors_reflection_serves() {
    use prost::Message;
    use prost_reflect::{DescriptorPool, DynamicMessage, Value};
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let env = Env::start().await;
    // As grpcurl does: the file of each symbol, then every file it imports, by name.
    let ask = |request: MessageRequest| {
        let channel = env.channel();
        async move {
            let req = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(request.clone()),
            };
            let mut stream = ServerReflectionClient::new(channel.await)
                .server_reflection_info(tokio_stream::iter(vec![req]))
                .await
                .unwrap()
                .into_inner();
            match stream.message().await.unwrap().unwrap().message_response {
                Some(MessageResponse::FileDescriptorResponse(f)) => f
                    .file_descriptor_proto
                    .iter()
                    .map(|b| prost_types::FileDescriptorProto::decode(b.as_slice()).unwrap())
                    .collect::<Vec<_>>(),
                other => panic!("reflection does not know {request:?}: {other:?}"),
            }
        }
    };
    let mut files: Vec<prost_types::FileDescriptorProto> = Vec::new();
    let mut wanted: Vec<MessageRequest> = [
        "google.rpc.Status",
        "google.rpc.BadRequest",
        "google.rpc.RetryInfo",
    ]
    .into_iter()
    .map(|s| MessageRequest::FileContainingSymbol(s.into()))
    .collect();
    while let Some(request) = wanted.pop() {
        for f in ask(request).await {
            if files.iter().any(|g| g.name == f.name) {
                continue;
            }
            for dep in &f.dependency {
                if !files
                    .iter()
                    .any(|g| g.name.as_deref() == Some(dep.as_str()))
                {
                    wanted.push(MessageRequest::FileByFilename(dep.clone()));
                }
            }
            files.push(f);
        }
    }
    let mut pool = DescriptorPool::new();
    pool.add_file_descriptor_protos(files).unwrap();

    // A report with a bad grid code and no category.
    let mut r = report("details-1", "", 0.0, 0.0);
    r.location = Some(pb::Location {
        kind: Some(pb::location::Kind::GridCode("no such grid!".into())),
        ..Default::default()
    });
    let e = env
        .incidents()
        .await
        .report_incident(env.signed(r))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let status = DynamicMessage::decode(
        pool.get_message_by_name("google.rpc.Status").unwrap(),
        e.details(),
    )
    .unwrap();
    let Some(Value::List(details)) = status.get_field_by_name("details").map(|v| v.into_owned())
    else {
        panic!("no details in {status:?}")
    };
    let mut fields = Vec::new();
    for any in details {
        let Value::Message(any) = any else { continue };
        let url = any
            .get_field_by_name("type_url")
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned();
        let name = url.rsplit('/').next().unwrap();
        let desc = pool
            .get_message_by_name(name)
            .unwrap_or_else(|| panic!("{name} is not among the served descriptors"));
        let value = any.get_field_by_name("value").unwrap();
        let detail = DynamicMessage::decode(desc, value.as_bytes().unwrap().clone()).unwrap();
        if name == "google.rpc.BadRequest" {
            let Some(Value::List(violations)) = detail
                .get_field_by_name("field_violations")
                .map(|v| v.into_owned())
            else {
                panic!("no violations")
            };
            for v in violations {
                let Value::Message(v) = v else { continue };
                fields.push((
                    v.get_field_by_name("field")
                        .unwrap()
                        .as_str()
                        .unwrap()
                        .to_owned(),
                    v.get_field_by_name("description")
                        .unwrap()
                        .as_str()
                        .unwrap()
                        .to_owned(),
                ));
            }
        }
    }
    assert!(fields.iter().any(|(f, _)| f == "category"), "{fields:?}");
    let grid = fields
        .iter()
        .find(|(f, _)| f.contains("grid_code"))
        .unwrap_or_else(|| panic!("{fields:?}"));
    assert!(
        grid.1.contains("\"no such grid!\""),
        "the value is quoted: {grid:?}"
    );
}
