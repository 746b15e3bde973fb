//! The one place where errors become gRPC statuses. Handlers return [`ApiError`] with `?`.

use gridroute_core::lifecycle::Refusal;
use gridroute_store::StoreError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed; one violation per offending field.
    #[error("invalid request: {}", .0.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldViolation>),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The service cannot serve this now (no table loaded, too many subscribers).
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// A single-field violation.
    pub fn field(field: &str, description: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldViolation::new(field, description)])
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Invalid(violations) => {
                let message = ApiError::Invalid(violations.clone()).to_string();
                Status::with_error_details(
                    Code::InvalidArgument,
                    message,
                    ErrorDetails::with_bad_request(violations),
                )
            }
            ApiError::Unavailable(m) => Status::unavailable(m),
            ApiError::Store(s) => match s {
                StoreError::Unavailable(m) => {
                    tracing::warn!(error = %m, "storage unavailable");
                    Status::unavailable("storage is unavailable; retry with the same request_id")
                }
                StoreError::Internal(m) | StoreError::Corrupt(m) | StoreError::NoGroup(m) => {
                    tracing::error!(error = %m, "storage error");
                    Status::internal("internal storage error")
                }
                StoreError::NotFound(id) => Status::not_found(format!("incident {id} not found")),
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
