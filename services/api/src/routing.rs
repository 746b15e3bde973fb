//! RoutingService: explain how a report would be routed, creating nothing.

use gridroute_core::access::Kind;
use gridroute_proto::v1::{self as pb, routing_service_server::RoutingService};
use tonic::{Request, Response, Status};

use crate::{ApiError, ApiState, now_ms, validate};

/// The RoutingService implementation.
#[derive(Debug, Clone)]
pub struct Routing(pub ApiState);

#[tonic::async_trait]
impl RoutingService for Routing {
    async fn explain_route(
        &self,
        request: Request<pb::ExplainRouteRequest>,
    ) -> Result<Response<pb::ExplainRouteResponse>, Status> {
        self.0
            .call("ExplainRoute", request, |who, r| async move {
                let mut report = r
                    .report
                    .ok_or_else(|| ApiError::field("report", "required"))?;
                let table = self.0.tables.load_full();
                // A reporting system explains its own reports unless it names another source.
                if report.source_system.is_empty() && who.kind == Kind::SourceSystem {
                    report.source_system.clone_from(&who.id);
                }
                validate::report(&mut report, &table, now_ms(), "report.", false)?;
                let q = gridroute_mapping::route_query(now_ms(), &report, &[], table.crs)
                    .ok_or_else(|| ApiError::field("report.location", "required"))?;
                let d = table.route(&q);
                Ok(pb::ExplainRouteResponse {
                    decision: Some(gridroute_mapping::decision_message(&table, &q, &d)),
                })
            })
            .await
    }
}
