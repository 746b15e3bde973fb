//! The route decision: report → leaf grid → department rule → primary department, co-handlers
//! and SLA policy. Never fails and never drops: when no rule matches, or the point lies outside
//! every grid, the command centre responsible for the place gets the incident.

use crate::{
    category,
    crs::Crs,
    region::RegionId,
    rules::{DeptId, PolicyId, Urgency},
    table::RoutingTable,
};

/// Where a report says the incident is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RouteTarget<'a> {
    /// A point (longitude, latitude) in the given coordinate system.
    Point {
        /// Longitude in degrees.
        lng: f64,
        /// Latitude in degrees.
        lat: f64,
        /// Its coordinate system.
        crs: Crs,
        /// The reporter's stated accuracy radius in metres (0 = not stated: the table's
        /// default snap radius applies).
        accuracy_m: f64,
    },
    /// A grid code.
    Grid(&'a str),
    /// Only an address, as the reporter gave it: no point, no grid (the table's default
    /// command centre places it; gridroute does not geocode).
    Address(&'a str),
}

/// What the router needs to know of a report.
#[derive(Debug, Clone, Copy)]
pub struct RouteQuery<'a> {
    /// Hierarchical category code.
    pub category: &'a str,
    /// Location.
    pub target: RouteTarget<'a>,
    /// Urgency.
    pub urgency: Urgency,
    /// Source system.
    pub source: &'a str,
    /// Departments that returned the incident: rules naming them as primary are skipped.
    pub excluded: &'a [DeptId],
    /// The report's labels (`&()` for none).
    pub labels: &'a dyn crate::rules::LabelSource,
    /// Routing time (ms since the epoch), for rules with time windows.
    pub now_ms: i64,
}

impl std::fmt::Debug for dyn crate::rules::LabelSource + '_ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LabelSource")
    }
}

/// Why the decision is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A rule matched.
    Matched,
    /// In a grid, no rule matched: the command centre of the place.
    NoRule,
    /// Outside every grid: the default command centre.
    OutsideGrids,
    /// The reported grid code is not a grid of the table: the default command centre.
    UnknownGrid,
    /// In no grid, but inside the table's area: a hole between grids (an enclave, a gap) or a
    /// part of a region's official outline that its grids do not cover. The command centre of
    /// the region around it.
    InHole,
    /// Only an address was given: the default command centre places it.
    Unlocated,
}

impl Outcome {
    /// Every outcome, each at the index of its discriminant (`outcome as usize`).
    pub const ALL: [Self; 6] = [
        Self::Matched,
        Self::NoRule,
        Self::OutsideGrids,
        Self::UnknownGrid,
        Self::InHole,
        Self::Unlocated,
    ];

    /// Stable lower-case name, for metric labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Matched => "matched",
            Self::NoRule => "no_rule",
            Self::OutsideGrids => "outside_grids",
            Self::UnknownGrid => "unknown_grid",
            Self::InHole => "in_hole",
            Self::Unlocated => "unlocated",
        }
    }
}

/// A route decision. Small and `Copy`: names are looked up in the table only when rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Why.
    pub outcome: Outcome,
    /// The leaf grid, when found; for [`Outcome::InHole`], the region around the hole.
    pub grid: Option<RegionId>,
    /// For [`Outcome::InHole`]: where the point lies.
    pub area: Option<crate::table::Area>,
    /// Index of the matching rule in `table.rules`.
    pub rule: Option<u32>,
    /// Primary department.
    pub department: DeptId,
    /// SLA policy.
    pub sla: PolicyId,
    /// When the point lay outside every grid but within the accuracy radius of `grid`: the
    /// distance in whole metres (rounded up) it was snapped over.
    pub snapped_m: Option<u32>,
}

impl RoutingTable {
    /// Decides where a report goes.
    pub fn route(&self, q: &RouteQuery<'_>) -> Decision {
        let grid = match q.target {
            RouteTarget::Point {
                lng,
                lat,
                crs,
                accuracy_m,
            } => {
                let (x, y) = crate::crs::convert(crs, self.crs, lng, lat);
                match self.grids.locate(x, y) {
                    Some(g) => g.region,
                    None => match self
                        .grids
                        .nearest_within(x, y, self.snap_radius(accuracy_m))
                    {
                        Some((g, d)) => {
                            let mut decision = self.decide(q, g.region);
                            decision.snapped_m = Some(d.ceil() as u32);
                            return decision;
                        }
                        None => return self.outside(x, y, q.urgency),
                    },
                }
            }
            RouteTarget::Grid(code) => match self.regions.find(code) {
                Some(r) if self.is_grid(r) => r,
                _ => return self.fallback(Outcome::UnknownGrid, None, q.urgency),
            },
            RouteTarget::Address(_) => return self.fallback(Outcome::Unlocated, None, q.urgency),
        };
        self.decide(q, grid)
    }

    /// A point in no grid and near none: the command centre of the region around it, when it
    /// lies in a hole of the grids or a region's outline; else the default command centre.
    fn outside(&self, x: f64, y: f64, urgency: Urgency) -> Decision {
        let area = self.area_at(x, y);
        let region = match area {
            Some(crate::table::Area::Hole(h)) => self.holes[h as usize].region,
            Some(crate::table::Area::Outline(r)) => Some(r),
            None => None,
        };
        match (area, region) {
            (Some(_), Some(_)) => Decision {
                area,
                ..self.fallback(Outcome::InHole, region, urgency)
            },
            _ => self.fallback(Outcome::OutsideGrids, None, urgency),
        }
    }

    /// The snapping radius for a stated accuracy: the stated one, capped, or the default.
    pub fn snap_radius(&self, accuracy_m: f64) -> f64 {
        if accuracy_m.is_finite() && accuracy_m > 0.0 {
            accuracy_m.min(self.max_snap_radius_m)
        } else {
            self.snap_radius_m
        }
    }

    fn decide(&self, q: &RouteQuery<'_>, grid: RegionId) -> Decision {
        match self.best_rule(q, grid) {
            Some(i) => {
                let rule = &self.rules[i as usize];
                Decision {
                    outcome: Outcome::Matched,
                    grid: Some(grid),
                    rule: Some(i),
                    department: rule.department,
                    sla: rule.sla.unwrap_or_else(|| self.default_policy(q.urgency)),
                    snapped_m: None,
                    area: None,
                }
            }
            None => self.fallback(Outcome::NoRule, Some(grid), q.urgency),
        }
    }

    fn fallback(&self, outcome: Outcome, grid: Option<RegionId>, urgency: Urgency) -> Decision {
        Decision {
            outcome,
            grid,
            rule: None,
            department: grid.map_or(self.default_command_centre, |g| self.command_centre_for(g)),
            sla: self.default_policy(urgency),
            snapped_m: None,
            area: None,
        }
    }

    /// The winning rule under the documented precedence (see [`crate::rules`]).
    fn best_rule(&self, q: &RouteQuery<'_>, grid: RegionId) -> Option<u32> {
        let mut best: Option<((i32, u16, i32), u32)> = None;
        self.matching_rules(q, grid, |i, key| {
            // On a full tie the rule written first wins.
            if best.is_none_or(|(k, b)| key > k || (key == k && i < b)) {
                best = Some((key, i));
            }
        });
        best.map(|(_, i)| i)
    }

    /// Co-handlers of a decision: the winning rule's, then the department and co-handlers of
    /// every other matching rule marked `continue`, without repeats or the primary.
    pub fn co_handlers(&self, q: &RouteQuery<'_>, d: &Decision) -> Vec<DeptId> {
        let mut out: Vec<DeptId> = Vec::new();
        let mut add = |x: DeptId| {
            if x != d.department && !out.contains(&x) {
                out.push(x);
            }
        };
        let Some(winner) = d.rule else {
            return Vec::new();
        };
        self.rules[winner as usize]
            .co_handlers
            .iter()
            .for_each(|&c| add(c));
        if let Some(grid) = d.grid {
            let mut continued = Vec::new();
            self.matching_rules(q, grid, |i, _| {
                if i != winner && self.rules[i as usize].continue_ {
                    continued.push(i);
                }
            });
            continued.sort_unstable();
            for i in continued {
                let r = &self.rules[i as usize];
                add(r.department);
                r.co_handlers.iter().for_each(|&c| add(c));
            }
        }
        out
    }

    /// Calls `f(rule index, precedence key)` for every rule that matches the report in `grid`.
    fn matching_rules(
        &self,
        q: &RouteQuery<'_>,
        grid: RegionId,
        mut f: impl FnMut(u32, (i32, u16, i32)),
    ) {
        // Only rules whose category can cover this one: the bucket of its first two segments,
        // and the rules with shorter prefixes.
        let bucket = self
            .rule_buckets
            .get(crate::category::bucket_key(q.category))
            .map_or(&[][..], Vec::as_slice);
        for &i in bucket.iter().chain(&self.shallow_rules) {
            let rule = &self.rules[i as usize];
            if q.excluded.contains(&rule.department)
                || !rule.applies_to(q.urgency)
                || !category::covers(&rule.category, q.category)
                || (!rule.sources.is_empty() && !rule.sources.iter().any(|s| s == q.source))
                || !rule.labels.iter().all(|m| m.holds(q.labels))
                || (!rule.when.is_empty()
                    && !rule.when.iter().any(|w| w.holds(&self.calendar, q.now_ms)))
            {
                continue;
            }
            let region_depth = if rule.regions.is_empty() {
                -1
            } else {
                match rule
                    .regions
                    .iter()
                    .filter(|&&r| self.regions.is_within(grid, r))
                    .map(|&r| i32::from(self.regions.node(r).depth))
                    .max()
                {
                    Some(d) => d,
                    None => continue,
                }
            };
            f(i, (rule.priority, rule.category_depth, region_depth));
        }
    }

    /// Why a point in no grid belongs to `region`.
    fn explain_hole(
        &self,
        lng: f64,
        lat: f64,
        region: RegionId,
        area: Option<crate::table::Area>,
    ) -> String {
        let around = self.describe_path(region);
        match area {
            Some(crate::table::Area::Hole(h)) => {
                let hole = &self.holes[h as usize];
                let declared = hole
                    .declared
                    .map(|i| {
                        format!(
                            ", declared outside the grids as {:?}",
                            self.declared_outside[i].name
                        )
                    })
                    .unwrap_or_default();
                format!(
                    "point ({lng}, {lat}) lies in no grid but in a hole of {:.0} m² between the grids of {around}{declared}",
                    hole.area_m2
                )
            }
            _ => format!(
                "point ({lng}, {lat}) lies in no grid but within the official outline of {around}"
            ),
        }
    }

    /// Human-readable reasons for a decision, in the order the router considered them. What the
    /// decision's own fields say (region path, department, SLA policy) is not repeated: every
    /// record and dispatch copy stores the reasons.
    pub fn explain(&self, q: &RouteQuery<'_>, d: &Decision) -> Vec<String> {
        let mut reasons = Vec::with_capacity(3);
        match (q.target, d.grid) {
            (RouteTarget::Point { lng, lat, .. }, Some(g)) if d.outcome == Outcome::InHole => {
                reasons.push(self.explain_hole(lng, lat, g, d.area));
            }
            (RouteTarget::Point { lng, lat, .. }, Some(g)) => match d.snapped_m {
                None => reasons.push(format!("point ({lng}, {lat}) lies in grid {}", self.describe(g))),
                Some(m) => reasons.push(format!(
                    "point ({lng}, {lat}) lies outside every grid, {m} m from grid {}: snapped within the accuracy radius",
                    self.describe(g)
                )),
            },
            (RouteTarget::Point { lng, lat, accuracy_m, .. }, None) => {
                reasons.push(format!(
                    "point ({lng}, {lat}) lies outside every grid of table {}, none within {} m",
                    self.name,
                    self.snap_radius(accuracy_m)
                ));
            }
            (RouteTarget::Grid(code), Some(g)) => {
                reasons.push(format!("reported grid {code:?} is {}", self.describe(g)));
            }
            (RouteTarget::Grid(code), None) => {
                reasons.push(format!(
                    "reported grid code {code:?} is not a grid of table {}",
                    self.name
                ));
            }
            (RouteTarget::Address(address), _) => {
                reasons.push(format!(
                    "the report gives only an address, {address:?}, no point and no grid: the command centre places it"
                ));
            }
        }
        if !q.excluded.is_empty() {
            let names: Vec<&str> = q
                .excluded
                .iter()
                .map(|&x| self.departments[x as usize].id.as_str())
                .collect();
            reasons.push(format!(
                "departments that returned the incident are excluded: {}",
                names.join(", ")
            ));
        }
        let dept = &self.departments[d.department as usize].id;
        match (d.outcome, d.rule) {
            (Outcome::Matched, Some(i)) => {
                let r = &self.rules[i as usize];
                let cat = if r.category.is_empty() {
                    "any category".to_owned()
                } else {
                    format!("category prefix {}", r.category)
                };
                reasons.push(format!("rule {} (priority {}) matched {cat}", r.id, r.priority));
            }
            (Outcome::NoRule, _) => reasons.push(format!(
                "no rule matches category {:?} here; the command centre {dept} takes it",
                q.category
            )),
            (Outcome::InHole, _) => reasons.push(format!(
                "no rule applies outside the grids; the command centre {dept} of the region around it takes it"
            )),
            _ => reasons.push(format!("the default command centre {dept} takes it")),
        }
        reasons
    }

    /// A grid or region by its code and name. The path above it is the decision's
    /// `region_path`: repeating it here would store it twice in every record and dispatch.
    fn describe(&self, region: RegionId) -> String {
        let n = self.regions.node(region);
        format!("{} {}", n.code, n.name)
    }

    fn describe_path(&self, grid: RegionId) -> String {
        self.regions
            .path(grid)
            .iter()
            .map(|&r| {
                let n = self.regions.node(r);
                format!("{} {}", n.code, n.name)
            })
            .collect::<Vec<_>>()
            .join(" > ")
    }
}
