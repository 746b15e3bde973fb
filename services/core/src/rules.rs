//! Department routing rules as operators write them in `rules.yaml`, and their compiled form.
//!
//! Precedence, from strongest to weakest: a higher explicit `priority`; then the longer category
//! prefix; then the deeper matching region; then the rule written first. The first four keys
//! make "most specific wins" predictable; `priority` is the escape hatch when it is not wanted.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::region::RegionId;

/// Dense index of a department inside one table.
pub type DeptId = u16;
/// Dense index of an SLA policy inside one table.
pub type PolicyId = u16;

/// How urgent a report is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Urgency {
    /// Routine.
    #[default]
    Normal,
    /// Within hours.
    High,
    /// Danger to people or property.
    Critical,
}

impl Urgency {
    fn bit(self) -> u8 {
        match self {
            Self::Normal => 1,
            Self::High => 2,
            Self::Critical => 4,
        }
    }
}

/// `rules.yaml`: departments, command centres, SLA policies and routing rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    /// Name of the table, e.g. `dawukou`.
    pub name: String,
    /// Coordinate system of the grid polygons: `gcj02` (default), `wgs84` or `bd09`.
    #[serde(default)]
    pub crs: Option<String>,
    /// Every department that can receive dispatches.
    pub departments: Vec<DepartmentSpec>,
    /// The department of last resort for points outside every grid.
    pub default_command_centre: String,
    /// Region code → command centre for incidents in that subtree that no rule matches.
    #[serde(default)]
    pub command_centres: BTreeMap<String, String>,
    /// SLA policies by name.
    pub sla_policies: BTreeMap<String, SlaPolicySpec>,
    /// Policy used when a rule names none, per urgency.
    pub default_sla: DefaultSla,
    /// The rules.
    pub rules: Vec<RuleSpec>,
    /// A point outside every grid but within this many metres of one is routed as if inside
    /// it, when the report states no accuracy (default 50).
    #[serde(default = "default_snap_radius")]
    pub snap_radius_m: f64,
    /// Cap on the accuracy radius a report may state (default 500).
    #[serde(default = "default_max_snap_radius")]
    pub max_snap_radius_m: f64,
    /// After this many returns (退单) an incident goes to its command centre for arbitration
    /// instead of being routed again (default 2).
    #[serde(default = "default_max_returns")]
    pub max_returns: u32,
    /// Duplicate detection (并案): reports of a category near an open incident of the same
    /// category are merged into it.
    #[serde(default)]
    pub duplicates: Vec<DuplicateSpec>,
    /// Reporter points (积分制) per verified report.
    #[serde(default)]
    pub points: PointsSpec,
    /// The categories apps list (optional; without it, the categories the rules name).
    #[serde(default)]
    pub categories: Vec<CategorySpec>,
    /// What admission does with gaps: areas inside the grids' footprint (a hole between
    /// grids) or inside a region's official outline that no grid covers and `regions.geojson`
    /// does not declare outside. `error` (default) rejects the table, `warn` lists them; gaps
    /// smaller than `min_area_m2` (default 1) are neither. Written `gaps: warn` or
    /// `gaps: {policy: warn, min_area_m2: 10000}`.
    #[serde(default)]
    pub gaps: GapsSpec,
}

/// What a gap does to a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GapPolicy {
    /// The table is rejected.
    #[default]
    Error,
    /// The table loads; each gap is a warning.
    Warn,
}

/// The table's `gaps` setting.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(from = "GapsInput")]
pub struct GapsSpec {
    /// Error or warn.
    pub policy: GapPolicy,
    /// Gaps up to this area, in square metres, are ignored.
    pub min_area_m2: f64,
}

/// Slivers from coordinate rounding (shared borders written with 7 decimals are about 1 cm
/// apart) stay far below one square metre.
pub const DEFAULT_MIN_GAP_M2: f64 = 1.0;

impl Default for GapsSpec {
    fn default() -> Self {
        Self {
            policy: GapPolicy::Error,
            min_area_m2: DEFAULT_MIN_GAP_M2,
        }
    }
}

/// `gaps: warn` or `gaps: {policy: warn, min_area_m2: 10000}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum GapsInput {
    Policy(GapPolicy),
    Full(GapsFull),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GapsFull {
    #[serde(default)]
    policy: GapPolicy,
    #[serde(default = "default_min_gap")]
    min_area_m2: f64,
}

fn default_min_gap() -> f64 {
    DEFAULT_MIN_GAP_M2
}

impl From<GapsInput> for GapsSpec {
    fn from(i: GapsInput) -> Self {
        match i {
            GapsInput::Policy(policy) => Self {
                policy,
                ..Self::default()
            },
            GapsInput::Full(f) => Self {
                policy: f.policy,
                min_area_m2: f.min_area_m2,
            },
        }
    }
}

fn default_max_returns() -> u32 {
    2
}

/// One duplicate-detection policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DuplicateSpec {
    /// Category prefix it applies to, e.g. `city.vehicle.abandoned`.
    pub category: String,
    /// Largest distance between the two reports, in metres.
    pub within_m: f64,
    /// Largest time between the open incident's report and the new one, e.g. `24h`.
    pub window: String,
}

/// A category residents and apps may report, as civic apps list it (Open311's "services"):
/// its name and, where the category needs them, the attributes a report should carry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CategorySpec {
    /// The category code (`city.vehicle.abandoned`).
    pub code: String,
    /// Its name for people (`僵尸车`).
    pub name: String,
    /// What it covers.
    #[serde(default)]
    pub description: String,
    /// The group apps show it under (`市容`).
    #[serde(default)]
    pub group: String,
    /// Words apps search by.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// What a report of this category should say besides the description.
    #[serde(default)]
    pub attributes: Vec<AttributeSpec>,
}

/// One attribute of a category (Open311 service definition attribute).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AttributeSpec {
    /// Attribute code (`plate_number`).
    pub code: String,
    /// The question asked (`车牌号`).
    pub description: String,
    /// Its type.
    #[serde(default)]
    pub datatype: Datatype,
    /// Whether a report must give it.
    #[serde(default)]
    pub required: bool,
    /// The choices of a list attribute.
    #[serde(default)]
    pub values: Vec<AttributeValue>,
}

/// The type of an attribute, as Open311 names them.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Datatype {
    /// A short text.
    #[default]
    String,
    /// A number.
    Number,
    /// A date and time.
    Datetime,
    /// A long text.
    Text,
    /// One of `values`.
    Singlevaluelist,
    /// Several of `values`.
    Multivaluelist,
}

impl Datatype {
    /// The name Open311 uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Number => "number",
            Self::Datetime => "datetime",
            Self::Text => "text",
            Self::Singlevaluelist => "singlevaluelist",
            Self::Multivaluelist => "multivaluelist",
        }
    }

    /// Whether the attribute is a choice among values.
    pub fn is_list(self) -> bool {
        matches!(self, Self::Singlevaluelist | Self::Multivaluelist)
    }
}

/// One choice of a list attribute.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AttributeValue {
    /// What the report sends.
    pub key: String,
    /// What people read.
    pub name: String,
}

/// Points per verified report.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointsSpec {
    /// Points for a verified report whose category no entry of `categories` covers (default 0).
    #[serde(default)]
    pub default: u32,
    /// Category prefix → points; the longest matching prefix wins.
    #[serde(default)]
    pub categories: BTreeMap<String, u32>,
}

fn default_snap_radius() -> f64 {
    50.0
}

fn default_max_snap_radius() -> f64 {
    500.0
}

/// A department.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepartmentSpec {
    /// Stable id used in the API, e.g. `property-office`.
    pub id: String,
    /// Display name.
    pub name: String,
}

/// An SLA policy as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaPolicySpec {
    /// Time to accept from dispatch, e.g. `4wh` (see [`crate::sla`] for the units).
    pub accept: String,
    /// Time to resolve from dispatch, e.g. `1.5wd`.
    pub resolve: String,
    /// Time to verify from resolve (default `1wd`).
    #[serde(default)]
    pub verify: Option<String>,
    /// Warnings at these percentages of the resolve allowance (default `[50, 80]`).
    #[serde(default)]
    pub warn_at: Option<Vec<u8>>,
    /// Steps after the resolve deadline (default: urge at once, supervise after 25 % and 50 %
    /// of the allowance, public report after 100 %).
    #[serde(default)]
    pub escalation: Option<Vec<EscalationSpec>>,
}

/// One escalation step as written: `{step: supervise, after: 4wh}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationSpec {
    /// `urge`, `supervise` or `public_report`.
    pub step: String,
    /// `0`, a span after the deadline (`4wh`, `2h`), or a percentage of the allowance (`50%`).
    pub after: String,
}

/// Default SLA policy names per urgency.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultSla {
    /// For normal urgency.
    pub normal: String,
    /// For high urgency.
    pub high: String,
    /// For critical urgency.
    pub critical: String,
}

/// A rule as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Stable id, reported in every decision it makes.
    pub id: String,
    /// Category prefix; empty matches every category.
    #[serde(default)]
    pub category: String,
    /// Region codes whose subtrees the rule covers; empty covers everywhere.
    #[serde(default)]
    pub regions: Vec<String>,
    /// Urgencies the rule applies to; empty = all.
    #[serde(default)]
    pub urgencies: Vec<Urgency>,
    /// Source systems the rule applies to; empty = all.
    #[serde(default)]
    pub sources: Vec<String>,
    /// The primary department.
    pub department: String,
    /// Co-handling departments.
    #[serde(default)]
    pub co_handlers: Vec<String>,
    /// SLA policy name; the table default for the urgency when absent.
    #[serde(default)]
    pub sla: Option<String>,
    /// Explicit priority; higher wins before specificity is considered.
    #[serde(default)]
    pub priority: i32,
    /// Whether the grid's workers are notified.
    #[serde(default)]
    pub notify_grid_worker: bool,
    /// Label matchers; all must hold. A label the report does not carry counts as empty.
    #[serde(default)]
    pub labels: Vec<LabelMatcherSpec>,
    /// Time windows (on the table's calendar) in which the rule applies; empty = always. The
    /// rule applies when any of them holds at routing time.
    #[serde(default)]
    pub when: Vec<TimeWindow>,
    /// When this rule matches but another wins, its department (and co-handlers) still join
    /// the incident as co-handlers, like Alertmanager's `continue`.
    #[serde(default, rename = "continue")]
    pub continue_: bool,
}

/// A time window on the working calendar, evaluated at routing time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeWindow {
    /// Working hours of a working day.
    WorkingHours,
    /// Any time outside working hours (evenings, lunch, weekends, holidays).
    OffHours,
    /// All day on working days (make-up workdays included).
    WorkingDays,
    /// All day on weekends and holidays that are not make-up workdays.
    NonWorkingDays,
    /// All day on official public holidays.
    Holidays,
    /// 22:00 to 06:00 local time, every day.
    Nights,
}

impl TimeWindow {
    /// Whether the window holds at `now_ms`.
    pub fn holds(self, cal: &crate::calendar::WorkCalendar, now_ms: i64) -> bool {
        let (day, t) = cal.local(now_ms);
        match self {
            Self::WorkingHours => cal.is_working_time(now_ms),
            Self::OffHours => !cal.is_working_time(now_ms),
            Self::WorkingDays => cal.is_working_day(day),
            Self::NonWorkingDays => !cal.is_working_day(day),
            Self::Holidays => cal.is_holiday(day),
            Self::Nights => !(6 * 3_600_000..22 * 3_600_000).contains(&t),
        }
    }
}

/// One label matcher as written: `key` and exactly one of `equals`, `not_equals`, `matches`,
/// `not_matches`. Regular expressions are anchored at both ends, as in Alertmanager.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelMatcherSpec {
    /// The label.
    pub key: String,
    /// The value must equal this.
    #[serde(default)]
    pub equals: Option<String>,
    /// The value must not equal this.
    #[serde(default)]
    pub not_equals: Option<String>,
    /// The value must match this regular expression.
    #[serde(default)]
    pub matches: Option<String>,
    /// The value must not match this regular expression.
    #[serde(default)]
    pub not_matches: Option<String>,
}

/// A compiled label matcher.
#[derive(Debug, Clone)]
pub enum LabelMatcher {
    /// Equal.
    Equals(String, String),
    /// Not equal.
    NotEquals(String, String),
    /// Matches.
    Matches(String, regex::Regex),
    /// Does not match.
    NotMatches(String, regex::Regex),
}

impl LabelMatcher {
    /// Compiles a matcher, or says why it is not one.
    pub fn compile(spec: &LabelMatcherSpec) -> Result<Self, String> {
        let anchored = |re: &str| {
            regex::Regex::new(&format!("^(?:{re})$"))
                .map_err(|e| format!("label {}: {e}", spec.key))
        };
        let key = spec.key.clone();
        match (
            &spec.equals,
            &spec.not_equals,
            &spec.matches,
            &spec.not_matches,
        ) {
            (Some(v), None, None, None) => Ok(Self::Equals(key, v.clone())),
            (None, Some(v), None, None) => Ok(Self::NotEquals(key, v.clone())),
            (None, None, Some(re), None) => Ok(Self::Matches(key, anchored(re)?)),
            (None, None, None, Some(re)) => Ok(Self::NotMatches(key, anchored(re)?)),
            _ => Err(format!(
                "label {}: give exactly one of equals, not_equals, matches, not_matches",
                spec.key
            )),
        }
    }

    /// Whether the report's labels satisfy the matcher.
    pub fn holds(&self, labels: &dyn LabelSource) -> bool {
        match self {
            Self::Equals(k, v) => labels.label(k).unwrap_or("") == v,
            Self::NotEquals(k, v) => labels.label(k).unwrap_or("") != v,
            Self::Matches(k, re) => re.is_match(labels.label(k).unwrap_or("")),
            Self::NotMatches(k, re) => !re.is_match(labels.label(k).unwrap_or("")),
        }
    }
}

/// Where the router reads a report's labels from.
pub trait LabelSource {
    /// The value of a label, if the report carries it.
    fn label(&self, key: &str) -> Option<&str>;
}

impl LabelSource for () {
    fn label(&self, _key: &str) -> Option<&str> {
        None
    }
}

impl<S: std::hash::BuildHasher> LabelSource for std::collections::HashMap<String, String, S> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

/// A department.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Department {
    /// Stable id.
    pub id: String,
    /// Display name.
    pub name: String,
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Stable id.
    pub id: String,
    /// Category prefix.
    pub category: String,
    /// Its number of segments.
    pub category_depth: u16,
    /// Covered subtrees; empty = everywhere.
    pub regions: Vec<RegionId>,
    urgency_mask: u8,
    /// Source systems; empty = all.
    pub sources: Vec<String>,
    /// Primary department.
    pub department: DeptId,
    /// Co-handlers.
    pub co_handlers: Vec<DeptId>,
    /// Explicit SLA policy.
    pub sla: Option<PolicyId>,
    /// Explicit priority.
    pub priority: i32,
    /// Notify the grid worker.
    pub notify_grid_worker: bool,
    /// Label matchers; all must hold.
    pub labels: Vec<LabelMatcher>,
    /// Time windows; empty = always.
    pub when: Vec<TimeWindow>,
    /// Joins as co-handler when it matches but does not win.
    pub continue_: bool,
}

impl Rule {
    /// Builds a compiled rule; references are resolved by the table loader.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        spec: &RuleSpec,
        regions: Vec<RegionId>,
        department: DeptId,
        co_handlers: Vec<DeptId>,
        sla: Option<PolicyId>,
        labels: Vec<LabelMatcher>,
    ) -> Self {
        let urgency_mask = if spec.urgencies.is_empty() {
            u8::MAX
        } else {
            spec.urgencies.iter().fold(0, |m, u| m | u.bit())
        };
        Self {
            id: spec.id.clone(),
            category: spec.category.clone(),
            category_depth: u16::try_from(crate::category::depth(&spec.category))
                .unwrap_or(u16::MAX),
            regions,
            urgency_mask,
            sources: spec.sources.clone(),
            department,
            co_handlers,
            sla,
            priority: spec.priority,
            notify_grid_worker: spec.notify_grid_worker,
            labels,
            when: spec.when.clone(),
            continue_: spec.continue_,
        }
    }

    /// Whether the rule applies to this urgency.
    pub fn applies_to(&self, urgency: Urgency) -> bool {
        self.urgency_mask & urgency.bit() != 0
    }
}
