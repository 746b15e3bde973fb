//! A whole routing table: the region tree, the grid index, the departments, SLA policies and
//! rules, loaded from `grids.geojson` and `rules.yaml` and validated as one.
//!
//! Loading never stops at the first problem: every issue found is reported with a stable code
//! and the offending id, and a table with any error is rejected whole, so the table in force
//! stays in force. Warnings are listed and do not block.

use std::{collections::HashMap, fmt};

use geo::MultiPolygon;

use crate::{
    calendar::WorkCalendar,
    crs::Crs,
    grid_index::GridIndex,
    region::{RegionId, RegionTree},
    rules::{Department, DeptId, GapsSpec, PointsSpec, PolicyId, Rule, Urgency},
    sla::SlaPolicy,
};

mod geojson;
pub mod holes;
pub mod horizon;
mod load;

pub use geojson::parse_geometry;
pub use holes::{Area, Declared, Hole};

/// How serious an issue is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The table is rejected.
    Error,
    /// Listed; the table is still usable.
    Warning,
}

/// One problem found in a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableIssue {
    /// Error or warning.
    pub severity: Severity,
    /// Stable machine-readable code, e.g. `duplicate_grid`.
    pub code: &'static str,
    /// The offending id (grid code, rule id, department id, file).
    pub subject: String,
    /// What is wrong, for a person.
    pub message: String,
}

impl fmt::Display for TableIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{sev} [{}] {}: {}",
            self.code, self.subject, self.message
        )
    }
}

/// A table rejected with every reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("routing table rejected with {} error(s): {}", .issues.iter().filter(|i| i.severity == Severity::Error).count(), .issues.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct TableError {
    /// Every issue, errors and warnings.
    pub issues: Vec<TableIssue>,
}

/// The sources of a table, as read from its directory.
#[derive(Debug, Clone, Copy)]
pub struct TableSources<'a> {
    /// `grids.geojson`.
    pub grids_geojson: &'a str,
    /// `rules.yaml`.
    pub rules_yaml: &'a str,
    /// `calendar.yaml`; `None` (or empty) = the built-in China 2024-2026 calendar.
    pub calendar_yaml: Option<&'a str>,
    /// `regions.geojson`: optional official outlines of parent regions (checked against their
    /// grids; a report in an outline but in no grid goes to that region's command centre), and
    /// areas declared outside the grids (`"outside": true`).
    pub regions_geojson: Option<&'a str>,
}

/// A loaded, validated routing table. Immutable: a new version is a new table, swapped in whole.
#[derive(Debug)]
pub struct RoutingTable {
    /// Table name from `rules.yaml`.
    pub name: String,
    /// Version: the name plus a hash of both sources, so equal content has an equal version.
    pub version: String,
    /// Coordinate system of the polygons.
    pub crs: Crs,
    /// The region tree.
    pub regions: RegionTree,
    /// The leaf grids.
    pub grids: GridIndex,
    /// Which regions are leaf grids with a polygon.
    pub(crate) is_grid: Vec<bool>,
    /// Departments.
    pub departments: Vec<Department>,
    dept_by_id: HashMap<String, DeptId>,
    /// Compiled rules, in file order.
    pub rules: Vec<Rule>,
    /// Rules with two or more category segments, by their first two segments.
    pub(crate) rule_buckets: HashMap<String, Vec<u32>>,
    /// Rules with fewer than two category segments: candidates for every report.
    pub(crate) shallow_rules: Vec<u32>,
    /// Command centre for points outside every grid.
    pub default_command_centre: DeptId,
    /// The nearest command centre up the tree, per region (precomputed: fallbacks are common).
    centre_of_region: Vec<DeptId>,
    /// SLA policies.
    pub sla_policies: Vec<SlaPolicy>,
    pub(crate) default_sla: [PolicyId; 3],
    /// The working calendar of SLA deadlines and rule time windows.
    pub calendar: WorkCalendar,
    /// Grid workers named by each grid.
    grid_workers: HashMap<RegionId, Vec<String>>,
    /// Official outlines of parent regions, when the table gives them.
    pub region_shapes: Vec<(RegionId, MultiPolygon<f64>)>,
    /// Areas `regions.geojson` declares outside the grids.
    pub declared_outside: Vec<Declared>,
    /// The holes in the union of the grids.
    pub holes: Vec<Hole>,
    /// What admission does with gaps.
    pub gaps: GapsSpec,
    /// Snapping radius when a report states no accuracy, in metres.
    pub snap_radius_m: f64,
    /// Largest snapping radius a report's stated accuracy may ask for, in metres.
    pub max_snap_radius_m: f64,
    /// Returns after which an incident goes to arbitration.
    pub max_returns: u32,
    /// Duplicate-detection policies.
    pub duplicates: Vec<DuplicatePolicy>,
    /// Reporter points.
    pub points: PointsSpec,
    /// The categories apps list: `rules.yaml`'s `categories`, or, without it, every category a
    /// rule names (its code as its name).
    pub categories: Vec<crate::rules::CategorySpec>,
    /// Warnings found while loading.
    pub warnings: Vec<TableIssue>,
}

/// A compiled duplicate-detection policy.
#[derive(Debug, Clone, PartialEq)]
pub struct DuplicatePolicy {
    /// Category prefix.
    pub category: String,
    /// Largest distance, in metres.
    pub within_m: f64,
    /// Largest time between the reports, in ms.
    pub window_ms: i64,
}

/// FNV-1a, 64 bit: a stable content hash for table versions (std's hasher is not stable).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

impl RoutingTable {
    /// The grid workers a grid names (empty when it names none).
    pub fn workers(&self, grid: RegionId) -> &[String] {
        self.grid_workers.get(&grid).map_or(&[], Vec::as_slice)
    }

    /// The department with this id.
    pub fn department(&self, id: &str) -> Option<DeptId> {
        self.dept_by_id.get(id).copied()
    }

    /// The catalogue entry of a category code.
    pub fn category(&self, code: &str) -> Option<&crate::rules::CategorySpec> {
        self.categories.iter().find(|c| c.code == code)
    }

    /// Whether the region is a leaf grid with a polygon.
    pub fn is_grid(&self, region: RegionId) -> bool {
        self.is_grid.get(region as usize).copied().unwrap_or(false)
    }

    /// The SLA policy used when a rule names none.
    pub fn default_policy(&self, urgency: Urgency) -> PolicyId {
        self.default_sla[match urgency {
            Urgency::Normal => 0,
            Urgency::High => 1,
            Urgency::Critical => 2,
        }]
    }

    /// The command centres above a grid, nearest first, ending with the default command centre:
    /// who supervises (督办) a late case, level by level.
    pub fn supervisors(&self, grid: Option<RegionId>) -> Vec<DeptId> {
        let mut out: Vec<DeptId> = Vec::new();
        if let Some(g) = grid {
            for r in self.regions.path(g).into_iter().rev() {
                let c = self.command_centre_for(r);
                if !out.contains(&c) {
                    out.push(c);
                }
            }
        }
        if !out.contains(&self.default_command_centre) {
            out.push(self.default_command_centre);
        }
        out
    }

    /// Whether `dept` is a command centre with authority over incidents in `grid` (any centre on
    /// the path up the tree, or the default one).
    pub fn is_centre_for(&self, dept: DeptId, grid: Option<RegionId>) -> bool {
        self.supervisors(grid).contains(&dept)
    }

    /// The duplicate-detection policy for a category: the longest matching prefix.
    pub fn duplicate_policy(&self, category: &str) -> Option<&DuplicatePolicy> {
        self.duplicates
            .iter()
            .filter(|d| crate::category::covers(&d.category, category))
            .max_by_key(|d| d.category.len())
    }

    /// Points a verified report of this category earns its reporter.
    pub fn points_for(&self, category: &str) -> u32 {
        self.points
            .categories
            .iter()
            .filter(|(c, _)| crate::category::covers(c, category))
            .max_by_key(|(c, _)| c.len())
            .map_or(self.points.default, |(_, &p)| p)
    }

    /// The policy with this name.
    pub fn policy(&self, name: &str) -> Option<&SlaPolicy> {
        self.sla_policies.iter().find(|p| p.name == name)
    }

    /// The command centre responsible for a region: the nearest one up the tree.
    pub fn command_centre_for(&self, region: RegionId) -> DeptId {
        self.centre_of_region
            .get(region as usize)
            .copied()
            .unwrap_or(self.default_command_centre)
    }
}

/// The table in force, shared by every task of a process and swapped whole: a reader holds one
/// complete version for as long as it needs it, so no incident is routed against a mix.
pub type SharedTable = std::sync::Arc<arc_swap::ArcSwap<RoutingTable>>;

/// Wraps a table for sharing.
pub fn shared(table: RoutingTable) -> SharedTable {
    std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(table))
}
