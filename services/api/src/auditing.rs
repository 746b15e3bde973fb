//! AuditService: auditors read the audit trail (privileged acts and refused calls).

use gridroute_proto::v1::{self as pb, audit_service_server::AuditService};
use gridroute_store::audit;
use tonic::{Request, Response, Status};

use crate::{ApiError, ApiState};

/// Page size when the caller gives none.
pub const DEFAULT_PAGE_SIZE: usize = 100;

/// The AuditService implementation.
#[derive(Debug, Clone)]
pub struct Audits(pub ApiState);

#[tonic::async_trait]
impl AuditService for Audits {
    async fn list_audit_records(
        &self,
        request: Request<pb::ListAuditRecordsRequest>,
    ) -> Result<Response<pb::ListAuditRecordsResponse>, Status> {
        self.0
            .call("ListAuditRecords", request, |_who, r| async move {
                let mut v = Vec::new();
                if r.page_size < 0 || r.page_size as usize > audit::MAX_PAGE_SIZE {
                    v.push(tonic_types::FieldViolation::new(
                        "page_size",
                        format!("between 0 and {}", audit::MAX_PAGE_SIZE),
                    ));
                }
                if !r.page_token.is_empty() && !audit::is_page_token(&r.page_token) {
                    v.push(tonic_types::FieldViolation::new(
                        "page_token",
                        "not a token returned by ListAuditRecords",
                    ));
                }
                let start_ms = r.start_time.as_ref().map(gridroute_mapping::millis);
                let end_ms = r.end_time.as_ref().map(gridroute_mapping::millis);
                if let (Some(s), Some(e)) = (start_ms, end_ms)
                    && s >= e
                {
                    v.push(tonic_types::FieldViolation::new(
                        "end_time",
                        "must be after start_time",
                    ));
                }
                if !v.is_empty() {
                    return Err(ApiError::Invalid(v));
                }
                let filter = audit::Filter {
                    start_ms,
                    end_ms,
                    principal: r.principal,
                    method: r.method,
                    outcome: r.outcome,
                };
                let size = match r.page_size {
                    0 => DEFAULT_PAGE_SIZE,
                    n => n as usize,
                };
                let (records, next_page_token) = self
                    .0
                    .store
                    .audit_list(&filter, size, &r.page_token)
                    .await?;
                Ok(pb::ListAuditRecordsResponse {
                    records,
                    next_page_token,
                })
            })
            .await
    }
}
