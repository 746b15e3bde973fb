//! Request validation: every problem of a request is reported at once, as field violations, and
//! a valid report is normalised (defaults filled in) before it is hashed for idempotency, so a
//! retry that spells a default explicitly is still the same request.

use gridroute_core::{RoutingTable, category};
use gridroute_proto::v1 as pb;
use tonic_types::FieldViolation;

use crate::error::ApiError;

/// Longest request id.
pub const MAX_REQUEST_ID_LEN: usize = 128;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 4000;
/// Most attachment URLs per report.
pub const MAX_ATTACHMENTS: usize = 10;
/// Longest attachment URL.
pub const MAX_URL_LEN: usize = 2048;
/// Most labels per report.
pub const MAX_LABELS: usize = 32;
/// Longest label key or value, and longest contact field, in characters.
pub const MAX_SHORT_TEXT: usize = 64;
/// How far in the future `occurred_time` may lie (clock skew of reporting devices).
pub const MAX_FUTURE_SKEW_MS: i64 = 5 * 60 * 1000;

struct Violations(Vec<FieldViolation>);

impl Violations {
    fn add(&mut self, field: &str, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }
}

fn is_token(s: &str, extra: &[u8]) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

/// Validates and normalises a report. `prefix` names the report's position in the request
/// (e.g. `report.` for ExplainRoute). `creates` is false for ExplainRoute, whose report creates
/// nothing: its request id and source system are optional (the source only selects rules).
pub fn report(
    r: &mut pb::ReportIncidentRequest,
    table: &RoutingTable,
    now_ms: i64,
    prefix: &str,
    creates: bool,
) -> Result<(), ApiError> {
    let mut v = Violations(Vec::new());
    let f = |name: &str| format!("{prefix}{name}");
    if r.request_id.is_empty() {
        if creates {
            v.add(
                &f("request_id"),
                "required: a caller-chosen idempotency key",
            );
        }
    } else if !is_request_id(&r.request_id) {
        v.add(&f("request_id"), REQUEST_ID_RULE);
    }
    if r.source_system.is_empty() {
        if creates {
            v.add(
                &f("source_system"),
                "required: the system sending the report",
            );
        }
    } else if r.source_system.len() > MAX_SHORT_TEXT || !is_token(&r.source_system, b"._-") {
        v.add(&f("source_system"), "1-64 characters of A-Z a-z 0-9 . _ -");
    }
    if r.category.is_empty() {
        v.add(&f("category"), "required, e.g. city.vehicle.abandoned");
    } else if !category::is_valid(&r.category) {
        v.add(
            &f("category"),
            "lower-case dot-separated segments of a-z 0-9 _, e.g. city.vehicle.abandoned",
        );
    }
    match r.location.as_ref() {
        None => v.add(
            &f("location"),
            "required: a point, a grid code or an address",
        ),
        Some(loc) => {
            match loc.kind.as_ref() {
                // Only an address: the command centre places it.
                None if !loc.address.trim().is_empty() => {}
                None => v.add(
                    &f("location"),
                    "set point or grid_code (or, failing both, an address)",
                ),
                Some(pb::location::Kind::Point(p)) => {
                    if !p.latitude.is_finite() || !(-90.0..=90.0).contains(&p.latitude) {
                        v.add(&f("location.point.latitude"), "must be within [-90, 90]");
                    }
                    if !p.longitude.is_finite() || !(-180.0..=180.0).contains(&p.longitude) {
                        v.add(&f("location.point.longitude"), "must be within [-180, 180]");
                    }
                }
                Some(pb::location::Kind::GridCode(code)) => {
                    if code.is_empty() {
                        v.add(&f("location.grid_code"), "must not be empty");
                    } else if !table.regions.find(code).is_some_and(|id| table.is_grid(id)) {
                        v.add(
                            &f("location.grid_code"),
                            format!(
                                "{} is not a grid of routing table {}",
                                crate::error::quoted(code),
                                table.version
                            ),
                        );
                    }
                }
            }
            if pb::CoordinateSystem::try_from(loc.coordinate_system).is_err() {
                v.add(
                    &f("location.coordinate_system"),
                    "unknown coordinate system",
                );
            }
            if !loc.accuracy_meters.is_finite() || loc.accuracy_meters < 0.0 {
                v.add(
                    &f("location.accuracy_meters"),
                    "must be a non-negative number of metres",
                );
            }
            if loc.address.chars().count() > 512 {
                v.add(&f("location.address"), "at most 512 characters");
            }
        }
    }
    if r.description.chars().count() > MAX_DESCRIPTION_CHARS {
        v.add(
            &f("description"),
            format!("at most {MAX_DESCRIPTION_CHARS} characters"),
        );
    }
    if let Some(c) = &r.reporter {
        for (name, value) in [
            ("name", &c.name),
            ("phone", &c.phone),
            ("reporter_id", &c.reporter_id),
        ] {
            if value.chars().count() > 128 {
                v.add(&f(&format!("reporter.{name}")), "at most 128 characters");
            }
        }
    }
    if r.attachment_urls.len() > MAX_ATTACHMENTS {
        v.add(
            &f("attachment_urls"),
            format!("at most {MAX_ATTACHMENTS} URLs"),
        );
    }
    for (i, url) in r.attachment_urls.iter().enumerate() {
        if url.len() > MAX_URL_LEN
            || !(url.starts_with("https://") || url.starts_with("http://"))
            || url.contains(char::is_whitespace)
        {
            v.add(
                &f(&format!("attachment_urls[{i}]")),
                "must be an http or https URL of at most 2048 characters",
            );
        }
    }
    match pb::Urgency::try_from(r.urgency) {
        Err(_) => v.add(&f("urgency"), "unknown urgency"),
        Ok(pb::Urgency::Unspecified) => r.urgency = pb::Urgency::Normal as i32,
        Ok(_) => {}
    }
    if let Some(t) = &r.occurred_time {
        if !(0..1_000_000_000).contains(&t.nanos) || t.seconds < 0 {
            v.add(&f("occurred_time"), "not a valid timestamp");
        } else if gridroute_mapping::millis(t) > now_ms + MAX_FUTURE_SKEW_MS {
            v.add(&f("occurred_time"), "lies in the future");
        }
    }
    if r.labels.len() > MAX_LABELS {
        v.add(&f("labels"), format!("at most {MAX_LABELS} labels"));
    }
    for (k, val) in &r.labels {
        if k.is_empty()
            || k.chars().count() > MAX_SHORT_TEXT
            || val.chars().count() > MAX_SHORT_TEXT
        {
            let shown: String = k.chars().take(crate::error::MAX_ECHO_CHARS).collect();
            v.add(
                &f(&format!("labels[{shown}]")),
                "keys of 1-64 and values of at most 64 characters",
            );
        }
    }
    if v.0.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Invalid(v.0))
    }
}

/// Validates a department id against the table in force.
pub fn department(field: &str, id: &str, table: &RoutingTable) -> Result<(), ApiError> {
    if id.is_empty() {
        return Err(ApiError::field(field, "required"));
    }
    if table.department(id).is_none() {
        return Err(ApiError::field(
            field,
            format!(
                "unknown department {} in routing table {}",
                crate::error::quoted(id),
                table.version
            ),
        ));
    }
    Ok(())
}

/// Validates an incident id's shape (unknown ids are NOT_FOUND later).
pub fn incident_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() {
        return Err(ApiError::field("incident_id", "required"));
    }
    if id.len() > 64 || !is_token(id, b"-") {
        return Err(ApiError::field("incident_id", "not an incident id"));
    }
    Ok(())
}

/// What a request id may be.
const REQUEST_ID_RULE: &str = "1-128 characters of A-Z a-z 0-9 . _ : -";

fn is_request_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID_LEN && is_token(id, b"._:-")
}

/// Validates an optional action request id (the same rule as a report's).
pub fn action_request_id(id: &str) -> Result<(), ApiError> {
    if !id.is_empty() && !is_request_id(id) {
        return Err(ApiError::field("request_id", REQUEST_ID_RULE));
    }
    Ok(())
}
