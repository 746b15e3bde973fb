//! The scopes of the read RPCs that filter by department and region (ListIncidents,
//! WatchIncidents, GetStats): a department is held to its own department, a command centre
//! to its region subtree, and region codes are validated alike for all of them.

use gridroute_core::{
    RoutingTable,
    access::{self, Kind, Principal},
};

use crate::{ApiError, authz, error::quoted};

/// The department filter a call of `who` uses: a department's own (a request naming another
/// is PERMISSION_DENIED); for command centres and auditors the requested one ('' = any),
/// which must be a department of the table in force.
pub fn department(
    who: &Principal,
    table: &RoutingTable,
    requested: String,
) -> Result<String, ApiError> {
    let department = if who.kind == Kind::Department {
        authz::claim("department_id", &requested, who)?;
        who.id.clone()
    } else {
        requested
    };
    if !department.is_empty() && table.department(&department).is_none() {
        return Err(ApiError::field(
            "department_id",
            format!(
                "unknown department {} in routing table {}",
                quoted(&department),
                table.version
            ),
        ));
    }
    Ok(department)
}

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

/// The codes above `region` in the table's region tree, from the root down (empty for a root,
/// no region, or a code the table does not know): where the store may find the region's
/// incidents indexed under their finer codes (`--region-index-depth`).
pub fn ancestors(table: &RoutingTable, region: &str) -> Vec<String> {
    let Some(node) = table.regions.find(region) else {
        return Vec::new();
    };
    let mut path = table.regions.path(node);
    path.pop();
    path.into_iter()
        .map(|id| table.regions.node(id).code.clone())
        .collect()
}
