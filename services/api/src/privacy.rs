//! Reporters' personal data in answers: an incident or a dispatch leaves the API with the
//! reporter's contact unmasked only for a caller entitled to it
//! (`gridroute_core::access::sees_contact`); everyone else gets it masked.

use gridroute_core::{
    RoutingTable,
    access::{self, Facts, Principal},
};
use gridroute_proto::v1 as pb;

/// What visibility needs of an incident as the API returns it.
pub fn facts(inc: &pb::Incident) -> Facts<'_> {
    let decision = inc.decision.as_ref();
    Facts {
        department: &inc.department_id,
        co_handlers: decision.map_or(&[][..], |d| &d.co_department_ids),
        returned_by: &inc.returned_by,
        grid: decision
            .and_then(|d| d.region_path.last())
            .map_or("", |r| r.code.as_str()),
        grid_workers: decision.map_or(&[][..], |d| &d.grid_workers),
        source_system: inc.report.as_ref().map_or("", |r| r.source_system.as_str()),
    }
}

/// A contact as callers who may not read it see it.
pub fn mask(c: &mut pb::ReporterContact) {
    c.name = access::mask_name(&c.name);
    c.phone = access::mask_phone(&c.phone);
    c.reporter_id = access::mask_id(&c.reporter_id);
}

/// Masks the incident's contact unless `who` may read it.
pub fn present(inc: &mut pb::Incident, who: &Principal, table: &RoutingTable, co_see: bool) {
    if access::sees_contact(who, &facts(inc), table, co_see) {
        return;
    }
    if let Some(c) = inc.report.as_mut().and_then(|r| r.reporter.as_mut()) {
        mask(c);
    }
}

/// Whether a subscriber receives the reporter's contact with this dispatch (one that carries
/// the report: a new case, whose report the record supplies, or an assignment): the primary
/// department does, co-handlers when the deployment allows it.
pub fn dispatch_gets_contact(d: &pb::Dispatch, co_see: bool) -> bool {
    (d.report.is_some() || d.kind == pb::DispatchKind::New as i32)
        && match pb::DispatchRole::try_from(d.role) {
            Ok(pb::DispatchRole::Primary) => true,
            Ok(pb::DispatchRole::CoHandler) => co_see,
            _ => false,
        }
}
