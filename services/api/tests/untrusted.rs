//! Any report a client can send is validated without a panic, and the answer stays small:
//! arbitrary text in every field, any number in every number, any enum value, any count of
//! labels and attachments. Identity checks and region scopes take any text too.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use gridroute_api::{ApiError, authz, scope, validate};
use gridroute_core::access::{Kind, Principal};
use gridroute_proto::v1 as pb;
use proptest::prelude::*;
use tonic_types::StatusExt;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,40}",
        "[a-z0-9._:-]{0,140}",
        Just(String::new()),
        "\\PC{150,300}",
    ]
}

fn report() -> impl Strategy<Value = pb::ReportIncidentRequest> {
    (
        (text(), text(), text(), text()),
        (
            any::<f64>(),
            any::<f64>(),
            any::<f64>(),
            any::<i32>(),
            any::<i32>(),
        ),
        (any::<bool>(), text(), text()),
        prop::collection::vec(text(), 0..14),
        prop::collection::hash_map(text(), text(), 0..40),
        (any::<i64>(), any::<i32>(), any::<bool>()),
        (text(), text(), text()),
    )
        .prop_map(
            |(
                (request_id, source_system, category, description),
                (lat, lng, accuracy, crs, urgency),
                (grid, grid_code, address),
                attachment_urls,
                labels,
                (seconds, nanos, occurred),
                (name, phone, reporter_id),
            )| pb::ReportIncidentRequest {
                request_id,
                source_system,
                category,
                description,
                location: Some(pb::Location {
                    kind: Some(if grid {
                        pb::location::Kind::GridCode(grid_code)
                    } else {
                        pb::location::Kind::Point(pb::LatLng {
                            latitude: lat,
                            longitude: lng,
                        })
                    }),
                    coordinate_system: crs,
                    accuracy_meters: accuracy,
                    address,
                }),
                reporter: Some(pb::ReporterContact {
                    name,
                    phone,
                    reporter_id,
                }),
                attachment_urls,
                urgency,
                occurred_time: occurred.then_some(prost_types::Timestamp { seconds, nanos }),
                labels: labels.into_iter().collect::<HashMap<_, _>>(),
            },
        )
}

thread_local! {
    static TABLE: gridroute_core::RoutingTable = gridroute_benches::dawukou();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    #[test]
    fn any_report_is_validated_without_panic_and_answered_small(mut r in report(), now in any::<i64>()) {
        TABLE.with(|t| {
            if let Err(e) = validate::report(&mut r, t, now, "", true) {
                let status = tonic::Status::from(e);
                prop_assert_eq!(status.code(), tonic::Code::InvalidArgument);
                let bad = status.get_details_bad_request().unwrap();
                prop_assert!(bad.field_violations.len() <= 21);
                prop_assert!(status.message().len() + status.details().len() < 16 * 1024);
            }
            Ok(())
        })?;
    }

    #[test]
    fn identity_fields_and_regions_take_any_text(value in text(), kind in 0usize..6, id in text()) {
        let who = Principal::new(Kind::ALL[kind], &id);
        for field in ["department_id", "grid_worker_id", "source_system", "published_by", "other"] {
            let r = authz::claim(field, &value, &who);
            if value.is_empty() {
                prop_assert!(r.is_ok());
            }
            if let Err(e) = r {
                prop_assert!(matches!(e, ApiError::PermissionDenied(_)));
            }
        }
        TABLE.with(|t| {
            let _ = scope::region(&who, t, value.clone());
        });
    }
}
