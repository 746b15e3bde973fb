//! The access policy: for every RPC of `gridroute.v1`, which kinds of principal may call it,
//! on which incidents (the scope, enforced by the handler through `gridroute_core::access`
//! and the lifecycle), and whether a call is a privileged act written to the audit trail.
//!
//! The authorization layer ([`crate::authz`]) refuses a call whose principal kind is not in
//! the method's row before any handler runs; a method missing from the table is refused to
//! everyone (fail closed). `docs/ACCESS.md` shows this table as [`markdown`] renders it; a test
//! keeps the two equal.

use gridroute_core::access::Kind::{self, *};

/// One row of the policy.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// The service, e.g. `gridroute.v1.IncidentService`.
    pub service: &'static str,
    /// The method, e.g. `ReportIncident`.
    pub method: &'static str,
    /// Who may call it.
    pub kinds: &'static [Kind],
    /// On what (the handler enforces it).
    pub scope: &'static str,
    /// Whether every call is written to the audit trail (denied calls always are).
    pub audited: bool,
}

const ACTORS: &[Kind] = &[Department, CommandCentre];
const READERS: &[Kind] = &[Department, CommandCentre, GridWorker, SourceSystem, Auditor];
const EVERYONE: &[Kind] = &[
    SourceSystem,
    Department,
    GridWorker,
    CommandCentre,
    TableAdmin,
    Auditor,
];

const fn rule(
    service: &'static str,
    method: &'static str,
    kinds: &'static [Kind],
    scope: &'static str,
    audited: bool,
) -> Rule {
    Rule {
        service,
        method,
        kinds,
        scope,
        audited,
    }
}

const INC: &str = "gridroute.v1.IncidentService";
const DIS: &str = "gridroute.v1.DispatchService";
const SUP: &str = "gridroute.v1.SupervisionService";
const RTE: &str = "gridroute.v1.RoutingService";
const TAB: &str = "gridroute.v1.TableService";
const AUD: &str = "gridroute.v1.AuditService";

/// Scope texts shared by several rows.
const PRIMARY: &str = "incidents it handles as primary department";
const CENTRE: &str = "incidents in its region subtree (the default centre: all)";

/// The policy, one row per RPC.
pub const POLICY: &[Rule] = &[
    rule(
        INC,
        "ReportIncident",
        &[SourceSystem],
        "reports as itself (`source_system` = its id)",
        false,
    ),
    rule(
        INC,
        "ReportIncidents",
        &[SourceSystem],
        "reports as itself (`source_system` = its id)",
        false,
    ),
    rule(
        INC,
        "GetIncident",
        READERS,
        "department: incidents it handles, co-handles or returned; command centre: those and its region subtree; grid worker: its grids; source system: its reports; auditor: all (contacts masked)",
        false,
    ),
    rule(
        INC,
        "ListIncidents",
        &[Department, CommandCentre, Auditor],
        "department: its own list; command centre: its region subtree; auditor: all",
        false,
    ),
    rule(
        INC,
        "WatchIncidents",
        &[Department, CommandCentre, Auditor],
        "department: events of its incidents; command centre: its region subtree; auditor: all",
        false,
    ),
    rule(
        INC,
        "SubmitFeedback",
        &[SourceSystem],
        "incidents it reported",
        false,
    ),
    rule(
        INC,
        "GetReporterPoints",
        &[SourceSystem],
        "its own reporters",
        false,
    ),
    rule(DIS, "Subscribe", ACTORS, "its own dispatch stream", false),
    rule(DIS, "AcceptIncident", ACTORS, PRIMARY, false),
    rule(DIS, "ResolveIncident", ACTORS, PRIMARY, false),
    rule(DIS, "ReturnIncident", ACTORS, PRIMARY, false),
    rule(
        DIS,
        "AddProgress",
        ACTORS,
        "incidents it handles as primary or co-handler",
        false,
    ),
    rule(DIS, "RequestExtension", ACTORS, PRIMARY, false),
    rule(DIS, "RequestSuspension", ACTORS, PRIMARY, false),
    rule(
        DIS,
        "ResumeIncident",
        ACTORS,
        "primary department, or a command centre of the incident's region",
        false,
    ),
    rule(SUP, "ArbitrateIncident", &[CommandCentre], CENTRE, true),
    rule(SUP, "DecideRequest", &[CommandCentre], CENTRE, true),
    rule(
        SUP,
        "VerifyIncident",
        &[CommandCentre, GridWorker],
        "command centre: its region subtree; grid worker: incidents in its own grids",
        true,
    ),
    rule(SUP, "CloseIncident", &[CommandCentre], CENTRE, true),
    rule(SUP, "CancelIncident", &[CommandCentre], CENTRE, true),
    rule(SUP, "UnmergeIncident", &[CommandCentre], CENTRE, true),
    rule(
        SUP,
        "GetStats",
        &[Department, CommandCentre, Auditor],
        "department: its own figures; command centre: its region subtree; auditor: all",
        false,
    ),
    rule(RTE, "ExplainRoute", EVERYONE, "creates nothing", false),
    rule(
        TAB,
        "PublishTable",
        &[TableAdmin],
        "the routing table",
        true,
    ),
    rule(
        TAB,
        "GetTableInfo",
        &[TableAdmin, Auditor],
        "the routing table",
        false,
    ),
    rule(
        TAB,
        "RollbackTable",
        &[TableAdmin],
        "the routing table",
        true,
    ),
    rule(
        TAB,
        "DiffTable",
        &[TableAdmin],
        "the routing table and recent incidents (categories and routes, no reports)",
        true,
    ),
    rule(AUD, "ListAuditRecords", &[Auditor], "the audit trail", true),
];

/// Services answered without credentials: health checks for probes, reflection for discovery.
pub const OPEN_SERVICES: &[&str] = &[
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// What the layer knows of a request path.
#[derive(Debug, Clone, Copy)]
pub enum Route {
    /// An open service: no credentials needed.
    Open,
    /// A method of the policy.
    Rule(&'static Rule),
    /// Anything else: authenticated, then refused to everyone.
    Unlisted,
}

/// Looks up a gRPC request path (`/package.Service/Method`).
pub fn route(path: &str) -> Route {
    let Some((service, method)) = path.trim_start_matches('/').split_once('/') else {
        return Route::Unlisted;
    };
    if OPEN_SERVICES.contains(&service) {
        return Route::Open;
    }
    POLICY
        .iter()
        .find(|r| r.service == service && r.method == method)
        .map_or(Route::Unlisted, Route::Rule)
}

/// The policy as the markdown table in `docs/ACCESS.md`.
pub fn markdown() -> String {
    let mut out = String::from("| method | ");
    out.push_str(
        &Kind::ALL
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(" | "),
    );
    out.push_str(" | on what | audited |\n|---|");
    out.push_str(&"---|".repeat(Kind::ALL.len() + 2));
    out.push('\n');
    for r in POLICY {
        let service = r.service.trim_start_matches("gridroute.v1.");
        out.push_str(&format!("| `{service}/{}` |", r.method));
        for k in Kind::ALL {
            out.push_str(if r.kinds.contains(&k) { " ✓ |" } else { " |" });
        }
        out.push_str(&format!(
            " {} | {} |\n",
            r.scope,
            if r.audited { "yes" } else { "denials" }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// Every RPC the contract declares has exactly one row, and every row is an RPC.
    #[test]
    fn every_rpc_has_one_rule() {
        let set = prost_types::FileDescriptorSet::decode(gridroute_proto::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let mut rpcs = Vec::new();
        for file in &set.file {
            for s in &file.service {
                for m in &s.method {
                    rpcs.push(format!("{}.{}/{}", file.package(), s.name(), m.name()));
                }
            }
        }
        let mut rows: Vec<String> = POLICY
            .iter()
            .map(|r| format!("{}/{}", r.service, r.method))
            .collect();
        rpcs.sort();
        rows.sort();
        assert_eq!(rpcs, rows);
    }

    #[test]
    fn paths_route_to_rules_open_services_or_nothing() {
        assert!(matches!(
            route("/gridroute.v1.IncidentService/ReportIncident"),
            Route::Rule(r) if r.kinds == [SourceSystem]
        ));
        assert!(matches!(route("/grpc.health.v1.Health/Check"), Route::Open));
        assert!(matches!(
            route("/gridroute.v1.IncidentService/DropDatabase"),
            Route::Unlisted
        ));
        assert!(matches!(route("garbage"), Route::Unlisted));
    }

    /// docs/ACCESS.md shows the policy exactly as enforced.
    #[test]
    fn the_documented_table_is_the_enforced_one() {
        let doc = include_str!("../../../docs/ACCESS.md");
        assert!(
            doc.contains(&markdown()),
            "docs/ACCESS.md is out of date; paste this table in:\n{}",
            markdown()
        );
    }
}
