//! Who a caller is, which incidents it may see, and who may read a reporter's personal data.
//!
//! A [`Principal`] is what authentication produced from the caller's credentials (a bearer
//! token or a client certificate); nothing in a request body can change it. Which methods a
//! kind of principal may call is the API's policy table; what is decided here needs the
//! incident and the routing table, and is the same for every method:
//! - [`can_read`]: whether the caller may see an incident at all (else PERMISSION_DENIED,
//!   whether or not it exists, so that ids cannot be probed);
//! - [`sees_contact`]: whether it may read the reporter's contact details unmasked
//!   (PIPL: only those who need them);
//! - [`mask_contact`]: what everyone else sees instead.

use crate::{RoutingTable, region::RegionId};

/// The kinds of principal, each with its own rights (docs/ACCESS.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A system that reports incidents (a resident app, the 12345 hotline).
    SourceSystem,
    /// A department that handles incidents.
    Department,
    /// A grid worker (网格员), who verifies work in their own grids.
    GridWorker,
    /// A command centre: a department with authority over its region subtree.
    CommandCentre,
    /// Publishes, rolls back and replays routing tables.
    TableAdmin,
    /// Reads figures, lists and the audit trail; changes nothing.
    Auditor,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Self; 6] = [
        Self::SourceSystem,
        Self::Department,
        Self::GridWorker,
        Self::CommandCentre,
        Self::TableAdmin,
        Self::Auditor,
    ];

    /// The name used in tokens, certificate maps, configuration and the audit trail.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SourceSystem => "source_system",
            Self::Department => "department",
            Self::GridWorker => "grid_worker",
            Self::CommandCentre => "command_centre",
            Self::TableAdmin => "table_admin",
            Self::Auditor => "auditor",
        }
    }

    /// Parses [`Kind::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// Whether principals of this kind must name an id (a department, a system, a worker).
    pub fn needs_id(self) -> bool {
        !matches!(self, Self::TableAdmin | Self::Auditor)
    }

    /// Whether the principal acts as the department named by its id (receives that
    /// department's dispatches, handles its incidents). A command centre is a department too.
    pub fn is_department(self) -> bool {
        matches!(self, Self::Department | Self::CommandCentre)
    }
}

/// Longest principal id accepted (ids become parts of Redis keys and audit records).
pub const MAX_ID_LEN: usize = 128;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    /// What it is.
    pub kind: Kind,
    /// Which one: a department id, a source system, a grid worker id ('' for kinds without).
    pub id: String,
    /// The person acting (the token's `sub`), recorded beside the principal on every timeline
    /// entry, event and audit record; '' when a certificate alone identified a system.
    pub person: String,
}

/// Why a principal's text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadPrincipal {
    /// Not `kind:id` with a known kind.
    #[error(
        "unknown principal kind {0:?} (one of source_system, department, grid_worker, command_centre, table_admin, auditor)"
    )]
    Kind(String),
    /// The kind needs an id and none was given, or the id is malformed.
    #[error("principal {0:?} needs an id of 1-128 characters of [A-Za-z0-9._:-]")]
    Id(String),
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
}

impl Principal {
    /// A principal of `kind` named `id`, with no person.
    pub fn new(kind: Kind, id: &str) -> Self {
        Self {
            kind,
            id: id.to_owned(),
            person: String::new(),
        }
    }

    /// The same principal with `person` acting.
    #[must_use]
    pub fn with_person(mut self, person: &str) -> Self {
        self.person = person.to_owned();
        self
    }

    /// Parses `kind:id` (or `kind` alone for kinds without an id).
    pub fn parse(text: &str) -> Result<Self, BadPrincipal> {
        let (kind, id) = text.split_once(':').unwrap_or((text, ""));
        let kind = Kind::parse(kind).ok_or_else(|| BadPrincipal::Kind(kind.to_owned()))?;
        if (kind.needs_id() || !id.is_empty()) && !valid_id(id) {
            return Err(BadPrincipal::Id(text.to_owned()));
        }
        Ok(Self::new(kind, id))
    }

    /// `kind:id` (or `kind`), as in tokens and the audit trail.
    pub fn label(&self) -> String {
        if self.id.is_empty() {
            self.kind.as_str().to_owned()
        } else {
            format!("{}:{}", self.kind.as_str(), self.id)
        }
    }

    /// The department this principal acts as, if any.
    pub fn department(&self) -> Option<&str> {
        self.kind.is_department().then_some(self.id.as_str())
    }
}

/// What visibility needs to know of an incident.
#[derive(Debug, Clone, Copy, Default)]
pub struct Facts<'a> {
    /// The department handling it now ('' while being routed).
    pub department: &'a str,
    /// Its co-handlers (协办).
    pub co_handlers: &'a [String],
    /// Departments that returned it (they handled it once).
    pub returned_by: &'a [String],
    /// Its leaf grid code ('' when outside every grid).
    pub grid: &'a str,
    /// The grid's workers.
    pub grid_workers: &'a [String],
    /// The system that reported it.
    pub source_system: &'a str,
}

fn grid_of(table: &RoutingTable, facts: &Facts<'_>) -> Option<RegionId> {
    (!facts.grid.is_empty())
        .then(|| table.regions.find(facts.grid))
        .flatten()
}

/// Whether a command centre named `centre` has authority over the incident: it is a centre on
/// the path up the region tree from its grid, or the default centre.
pub fn centre_over(table: &RoutingTable, centre: &str, facts: &Facts<'_>) -> bool {
    table
        .department(centre)
        .is_some_and(|d| table.is_centre_for(d, grid_of(table, facts)))
}

/// Whether `p` may see the incident at all.
pub fn can_read(p: &Principal, facts: &Facts<'_>, table: &RoutingTable) -> bool {
    let handles = |id: &str| {
        facts.department == id
            || facts.co_handlers.iter().any(|c| c == id)
            || facts.returned_by.iter().any(|c| c == id)
    };
    match p.kind {
        Kind::Auditor => true,
        Kind::TableAdmin => false,
        Kind::SourceSystem => facts.source_system == p.id,
        Kind::GridWorker => facts.grid_workers.contains(&p.id),
        Kind::Department => handles(&p.id),
        Kind::CommandCentre => handles(&p.id) || centre_over(table, &p.id, facts),
    }
}

/// Whether `p` may read the reporter's contact details unmasked: the reporting system, the
/// primary department, the co-handlers when `co_handlers_see` (a deployment setting), and
/// the command centres above the incident.
pub fn sees_contact(
    p: &Principal,
    facts: &Facts<'_>,
    table: &RoutingTable,
    co_handlers_see: bool,
) -> bool {
    match p.kind {
        Kind::SourceSystem => facts.source_system == p.id,
        Kind::Department | Kind::CommandCentre => {
            (!facts.department.is_empty() && facts.department == p.id)
                || (co_handlers_see && facts.co_handlers.contains(&p.id))
                || (p.kind == Kind::CommandCentre && centre_over(table, &p.id, facts))
        }
        Kind::GridWorker | Kind::TableAdmin | Kind::Auditor => false,
    }
}

/// Whether a command centre's authority covers `region_code` (any level of the tree): some
/// region on the path from the tree's root down to it names this centre, or the centre is the
/// table's default centre (the whole city).
pub fn centre_covers_region(table: &RoutingTable, centre: &str, region_code: &str) -> bool {
    let Some(d) = table.department(centre) else {
        return false;
    };
    match table.regions.find(region_code) {
        Some(r) => table.is_centre_for(d, Some(r)),
        None => false,
    }
}

/// The top regions of a command centre's authority: the regions the table names it for whose
/// parent has another centre. Empty for a department that is no centre (and for the default
/// centre, whose authority is everything).
pub fn centre_roots(table: &RoutingTable, centre: &str) -> Vec<String> {
    let Some(d) = table.department(centre) else {
        return Vec::new();
    };
    table
        .regions
        .iter()
        .filter(|(id, node)| {
            table.command_centre_for(*id) == d
                && node
                    .parent
                    .is_none_or(|parent| table.command_centre_for(parent) != d)
        })
        .filter(|(_, node)| !(node.parent.is_none() && d == table.default_command_centre))
        .map(|(_, node)| node.code.clone())
        .collect()
}

/// Whether a command centre is the table's default centre (authority over everything).
pub fn is_default_centre(table: &RoutingTable, centre: &str) -> bool {
    table
        .department(centre)
        .is_some_and(|d| d == table.default_command_centre)
}

/// A phone number with all but its first three and last four digits hidden
/// (`13812341234` → `138****1234`); short numbers keep only their last two characters.
pub fn mask_phone(phone: &str) -> String {
    let chars: Vec<char> = phone.chars().collect();
    let n = chars.len();
    if n == 0 {
        return String::new();
    }
    let (head, tail) = if n >= 11 {
        (3, 4)
    } else if n > 4 {
        (0, 2)
    } else {
        (0, 0)
    };
    chars
        .iter()
        .enumerate()
        .map(|(i, &c)| if i < head || i >= n - tail { c } else { '*' })
        .collect()
}

/// A name with all but its first character hidden (`马先生` → `马**`).
pub fn mask_name(name: &str) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| if i == 0 { c } else { '*' })
        .collect()
}

/// An identifier hidden whole (its length is not revealed).
pub fn mask_id(id: &str) -> String {
    if id.is_empty() {
        String::new()
    } else {
        "****".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_parse_and_print() {
        let p = Principal::parse("department:property-office").expect("valid");
        assert_eq!(p.kind, Kind::Department);
        assert_eq!(p.label(), "department:property-office");
        assert_eq!(
            Principal::parse("auditor").expect("valid").label(),
            "auditor"
        );
        assert!(matches!(
            Principal::parse("root:x"),
            Err(BadPrincipal::Kind(_))
        ));
        assert!(matches!(
            Principal::parse("department"),
            Err(BadPrincipal::Id(_))
        ));
        assert!(matches!(
            Principal::parse("department:a b"),
            Err(BadPrincipal::Id(_))
        ));
    }

    #[test]
    fn masks_hide_all_but_a_hint() {
        assert_eq!(mask_phone("13812341234"), "138****1234");
        assert_eq!(mask_phone("+8613812341234"), "+86*******1234");
        assert_eq!(mask_phone("110120"), "****20");
        assert_eq!(mask_phone("119"), "***");
        assert_eq!(mask_name("马先生"), "马**");
        assert_eq!(mask_id("r-1"), "****");
        assert_eq!(mask_id(""), "");
    }
}
