//! The scopes of the read RPCs that filter by region (ListIncidents, WatchIncidents,
//! GetStats): one validation of region codes for all of them, and a command centre kept to its
//! region subtree.

use gridroute_core::{
    RoutingTable,
    access::{self, Kind, Principal},
};

use crate::{ApiError, error::quoted};

/// The region a call of `who` covers: the requested one, validated against the table in
/// force, and for a command centre (other than the default centre) within its authority; a
/// centre that names none gets its own region when it has exactly one.
pub fn region(
    who: &Principal,
    table: &RoutingTable,
    requested: String,
) -> Result<String, ApiError> {
    if !requested.is_empty() && table.regions.find(&requested).is_none() {
        return Err(ApiError::field(
            "region_code",
            format!(
                "{} is not a region of routing table {}",
                quoted(&requested),
                table.version
            ),
        ));
    }
    if who.kind != Kind::CommandCentre || access::is_default_centre(table, &who.id) {
        return Ok(requested);
    }
    if requested.is_empty() {
        let mut roots = access::centre_roots(table, &who.id);
        return match roots.len() {
            1 => Ok(roots.remove(0)),
            0 => Err(ApiError::PermissionDenied(format!(
                "{} is not a command centre of routing table {}",
                who.label(),
                table.version
            ))),
            _ => Err(ApiError::field(
                "region_code",
                format!("required: one of {}", roots.join(", ")),
            )),
        };
    }
    if access::centre_covers_region(table, &who.id, &requested) {
        Ok(requested)
    } else {
        Err(ApiError::PermissionDenied(format!(
            "{} has no authority over region {}",
            who.label(),
            quoted(&requested)
        )))
    }
}
