//! The one place where errors become gRPC statuses. Handlers return [`ApiError`] with `?`.
//!
//! Error details stay small whatever the request: at most [`MAX_VIOLATIONS`] field violations
//! per answer (the last one says how many more there were), and values echoed back are quoted
//! and cut to [`MAX_ECHO_CHARS`] (a client's HTTP/2 stack refuses trailers of many kilobytes,
//! and would report RESOURCE_EXHAUSTED instead of the real INVALID_ARGUMENT).

use std::time::Duration;

use gridroute_core::lifecycle::Refusal;
use gridroute_store::StoreError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// Most field violations in one answer.
pub const MAX_VIOLATIONS: usize = 20;
/// Longest value echoed back in a message, in characters.
pub const MAX_ECHO_CHARS: usize = 64;

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed; one violation per offending field.
    #[error("invalid request: {}", summary(.0))]
    Invalid(Vec<FieldViolation>),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The archive (PostgreSQL) refused or failed.
    #[error(transparent)]
    Archive(#[from] gridroute_archive::ArchiveError),
    /// The service cannot serve this now (no table loaded, too many subscribers).
    #[error("{0}")]
    Unavailable(String),
    /// The caller is not identified.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller may not do this (or the thing does not exist and it may not know that).
    #[error("{0}")]
    PermissionDenied(String),
    /// Entries after the caller's stream cursor were trimmed (the retention window): resuming
    /// would skip them silently, so the caller must resync (ListIncidents).
    #[error("{message}")]
    CursorExpired {
        /// What happened, for a person.
        message: String,
        /// The oldest cursor from which nothing is missing.
        resume: String,
    },
    /// The caller used up its rate or its open streams; retry after the given time.
    #[error("{message}")]
    Exhausted {
        /// What was used up.
        message: String,
        /// When to try again.
        retry_after: Duration,
    },
}

fn summary(v: &[FieldViolation]) -> String {
    let shown: Vec<String> = v
        .iter()
        .take(MAX_VIOLATIONS)
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect();
    let mut text = shown.join("; ");
    if v.len() > MAX_VIOLATIONS {
        text.push_str(&format!("; and {} more", v.len() - MAX_VIOLATIONS));
    }
    text
}

/// A value as it may appear in a message: quoted, escaped, and cut to [`MAX_ECHO_CHARS`].
pub fn quoted(value: &str) -> String {
    let cut: String = value.chars().take(MAX_ECHO_CHARS).collect();
    if cut.len() < value.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

/// The violations of an answer: the first [`MAX_VIOLATIONS`], and one more saying how many
/// were left out.
fn capped(mut v: Vec<FieldViolation>) -> Vec<FieldViolation> {
    if v.len() > MAX_VIOLATIONS {
        let more = v.len() - MAX_VIOLATIONS;
        v.truncate(MAX_VIOLATIONS);
        v.push(FieldViolation::new(
            "",
            format!("and {more} more problems not listed"),
        ));
    }
    v
}

/// When a caller refused because Redis is full should try again.
pub const STORAGE_FULL_RETRY: Duration = Duration::from_secs(5);

/// The `ErrorInfo.reason` of a refused stale cursor; `metadata.resume_cursor` holds the oldest
/// cursor from which nothing is missing.
pub const CURSOR_EXPIRED: &str = "CURSOR_EXPIRED";

impl ApiError {
    /// A single-field violation.
    pub fn field(field: &str, description: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldViolation::new(field, description)])
    }
}

/// A RESOURCE_EXHAUSTED status with a `google.rpc.RetryInfo`.
pub fn exhausted(message: impl Into<String>, retry_after: Duration) -> Status {
    Status::with_error_details(
        Code::ResourceExhausted,
        message,
        ErrorDetails::with_retry_info(Some(retry_after)),
    )
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Invalid(violations) => {
                let message = format!("invalid request: {}", summary(&violations));
                Status::with_error_details(
                    Code::InvalidArgument,
                    message,
                    ErrorDetails::with_bad_request(capped(violations)),
                )
            }
            ApiError::CursorExpired { message, resume } => {
                let mut details = ErrorDetails::new();
                details
                    .set_error_info(
                        CURSOR_EXPIRED,
                        "gridroute",
                        std::collections::HashMap::from([("resume_cursor".to_owned(), resume)]),
                    )
                    .add_bad_request_violation("cursor", message.clone());
                Status::with_error_details(Code::OutOfRange, message, details)
            }
            ApiError::Unavailable(m) => Status::unavailable(m),
            ApiError::Archive(gridroute_archive::ArchiveError::Unavailable(m)) => {
                tracing::warn!(error = %m, "archive unavailable");
                Status::unavailable("the archive is unavailable; retry later")
            }
            ApiError::Archive(e) => {
                tracing::error!(error = %e, "archive error");
                Status::internal("internal archive error")
            }
            ApiError::Unauthenticated(m) => Status::unauthenticated(m),
            ApiError::PermissionDenied(m) => Status::permission_denied(m),
            ApiError::Exhausted {
                message,
                retry_after,
            } => exhausted(message, retry_after),
            ApiError::Store(s) => match s {
                StoreError::Unavailable(m) => {
                    tracing::warn!(error = %m, "storage unavailable");
                    Status::unavailable("storage is unavailable; retry with the same request_id")
                }
                StoreError::Full(m) => {
                    tracing::warn!(error = %m, "storage full");
                    exhausted(
                        "storage is full; nothing was stored: retry later with the same request_id",
                        STORAGE_FULL_RETRY,
                    )
                }
                StoreError::Internal(m) | StoreError::Corrupt(m) | StoreError::NoGroup(m) => {
                    tracing::error!(error = %m, "storage error");
                    Status::internal("internal storage error")
                }
                StoreError::NotFound(id) => {
                    Status::not_found(format!("incident {} not found", quoted(&id)))
                }
                StoreError::UnknownVersion(v) => {
                    Status::not_found(format!("table version {} not found", quoted(&v)))
                }
                StoreError::InvalidToken(_) => Status::from(ApiError::field(
                    "page_token",
                    "not a token this service issued; start again without one",
                )),
                e @ StoreError::IdempotencyConflict { .. } => Status::already_exists(e.to_string()),
                StoreError::Refused(r) => match r {
                    Refusal::NotPermitted(m) => Status::permission_denied(m),
                    Refusal::Invalid { field, why } => Status::from(ApiError::field(field, why)),
                    r @ (Refusal::WrongState { .. } | Refusal::Precondition(_)) => {
                        Status::failed_precondition(r.to_string())
                    }
                },
                e @ StoreError::RequestIdReused { .. } => Status::already_exists(e.to_string()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_and_echoes_stay_small() {
        let many: Vec<FieldViolation> = (0..2000)
            .map(|i| FieldViolation::new(format!("labels[k{i}]"), "too long"))
            .collect();
        let status = Status::from(ApiError::Invalid(many));
        let details = status.get_error_details();
        let bad = details.bad_request().expect("bad request detail");
        assert_eq!(bad.field_violations.len(), MAX_VIOLATIONS + 1);
        assert!(
            bad.field_violations[MAX_VIOLATIONS]
                .description
                .contains("1980 more")
        );
        assert!(status.message().len() < 1000, "{}", status.message().len());
        assert_eq!(quoted("a\"b"), "\"a\\\"b\"");
        assert!(quoted(&"x".repeat(500)).chars().count() < 70);
    }
}
