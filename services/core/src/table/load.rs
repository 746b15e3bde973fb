//! Loading a table from its sources: every file parsed, every reference resolved, every problem
//! listed with a stable code; a table with any error is rejected whole.

use std::collections::HashMap;

use serde_json::Value;

use super::{
    DuplicatePolicy, RoutingTable, Severity, TableError, TableIssue, TableSources, fnv1a,
    geojson::parse_geometry, holes,
};
use crate::{
    calendar::WorkCalendar,
    category,
    crs::Crs,
    grid_index::{GridIndex, IndexedGrid},
    region::{RegionId, RegionTree},
    rules::{Department, DeptId, PolicyId, Rule, RulesFile},
    sla::{SlaPolicy, parse_span},
};

pub(super) struct Issues(pub(super) Vec<TableIssue>);

impl Issues {
    pub(super) fn error(
        &mut self,
        code: &'static str,
        subject: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.0.push(TableIssue {
            severity: Severity::Error,
            code,
            subject: subject.into(),
            message: message.into(),
        });
    }
    fn has_errors(&self) -> bool {
        self.0.iter().any(|i| i.severity == Severity::Error)
    }
}

impl RoutingTable {
    /// Loads and validates a table from its sources.
    pub fn load(src: TableSources<'_>) -> Result<Self, TableError> {
        let mut issues = Issues(Vec::new());
        let rules_file: Option<RulesFile> = match yaml_serde::from_str(src.rules_yaml) {
            Ok(r) => Some(r),
            Err(e) => {
                issues.error("rules_unparsable", "rules.yaml", e.to_string());
                None
            }
        };
        let mut regions = RegionTree::new();
        let mut grid_workers = HashMap::new();
        let grids = load_grids(
            src.grids_geojson,
            &mut regions,
            &mut grid_workers,
            &mut issues,
        );
        let Some(rf) = rules_file else {
            return Err(TableError { issues: issues.0 });
        };

        let crs = match rf.crs.as_deref() {
            None => Crs::Gcj02,
            Some(text) => Crs::parse(text).unwrap_or_else(|| {
                issues.error("unknown_crs", text, "crs must be gcj02, wgs84 or bd09");
                Crs::Gcj02
            }),
        };

        let mut departments = Vec::new();
        let mut dept_by_id = HashMap::new();
        for d in &rf.departments {
            if d.id.is_empty() {
                issues.error("empty_department_id", &d.name, "department id is empty");
            } else if dept_by_id.contains_key(&d.id) {
                issues.error("duplicate_department", &d.id, "department defined twice");
            } else if let Ok(id) = DeptId::try_from(departments.len()) {
                dept_by_id.insert(d.id.clone(), id);
                departments.push(Department {
                    id: d.id.clone(),
                    name: d.name.clone(),
                });
            }
        }
        let dept = |id: &str, subject: &str, issues: &mut Issues| -> Option<DeptId> {
            let found = dept_by_id.get(id).copied();
            if found.is_none() {
                issues.error(
                    "unknown_department",
                    subject,
                    format!("department {id:?} is not defined"),
                );
            }
            found
        };

        let mut sla_policies = Vec::new();
        let mut policy_by_name = HashMap::new();
        let mut region_shapes = Vec::new();
        let mut declared_outside = Vec::new();
        if let Some(text) = src.regions_geojson.filter(|t| !t.trim().is_empty()) {
            match serde_json::from_str::<Value>(text) {
                Err(e) => issues.error("regions_unparsable", "regions.geojson", e.to_string()),
                Ok(doc) => {
                    for (n, f) in doc
                        .get("features")
                        .and_then(Value::as_array)
                        .map(Vec::as_slice)
                        .unwrap_or(&[])
                        .iter()
                        .enumerate()
                    {
                        let text = |k: &str| {
                            f.pointer(&format!("/properties/{k}"))
                                .and_then(Value::as_str)
                                .unwrap_or("")
                        };
                        let code = text("code");
                        let shape = parse_geometry(f.get("geometry").unwrap_or(&Value::Null));
                        if f.pointer("/properties/outside").and_then(Value::as_bool) == Some(true) {
                            // An area outside the grids: it needs a name, not a region.
                            let name = [text("name"), code]
                                .into_iter()
                                .find(|s| !s.is_empty())
                                .map_or_else(|| format!("feature #{n}"), str::to_owned);
                            match shape {
                                Ok(shape) => declared_outside.push(holes::Declared { name, shape }),
                                Err(why) => issues.error(
                                    "bad_geometry",
                                    format!("regions.geojson {name:?}"),
                                    why,
                                ),
                            }
                            continue;
                        }
                        match (regions.find(code), shape) {
                            (None, _) => issues.error(
                                "unknown_region",
                                format!("regions.geojson {code:?}"),
                                "region is not in the tree of grids.geojson (an area outside \
                                 the grids is declared with \"outside\": true)",
                            ),
                            (_, Err(why)) => issues.error("bad_geometry", code, why),
                            (Some(r), Ok(shape)) => region_shapes.push((r, shape)),
                        }
                    }
                }
            }
        }
        if !(rf.gaps.min_area_m2.is_finite() && rf.gaps.min_area_m2 >= 0.0) {
            issues.error(
                "bad_gaps",
                "gaps.min_area_m2",
                "must be a number of square metres, 0 or more",
            );
        }
        let calendar_text = src.calendar_yaml.filter(|c| !c.trim().is_empty());
        let calendar = match calendar_text.map(WorkCalendar::from_yaml) {
            None => WorkCalendar::cn_default(),
            Some(Ok(c)) => c,
            Some(Err(problems)) => {
                for p in problems {
                    issues.error("bad_calendar", "calendar.yaml", p);
                }
                WorkCalendar::cn_default()
            }
        };
        let working_day = calendar.working_ms_per_day();
        for (name, spec) in &rf.sla_policies {
            match load_policy(name, spec, working_day) {
                Ok(p) => {
                    policy_by_name.insert(name.clone(), sla_policies.len() as PolicyId);
                    sla_policies.push(p);
                }
                Err(problems) => {
                    for (code, why) in problems {
                        issues.error(code, format!("sla_policies.{name}"), why);
                    }
                }
            }
        }
        let mut duplicates = Vec::new();
        for (i, d) in rf.duplicates.iter().enumerate() {
            let subject = format!("duplicates[{i}]");
            let window = crate::sla::parse_duration(&d.window);
            if !category::is_valid(&d.category) {
                issues.error(
                    "bad_category",
                    &subject,
                    format!("category {:?} is not a dotted lower-case code", d.category),
                );
            } else if !(d.within_m.is_finite() && d.within_m > 0.0 && d.within_m <= 10_000.0) {
                issues.error(
                    "bad_duplicate_radius",
                    &subject,
                    "within_m must be between 0 and 10000 metres",
                );
            } else if let Some(window_ms) = window {
                duplicates.push(DuplicatePolicy {
                    category: d.category.clone(),
                    within_m: d.within_m,
                    window_ms,
                });
            } else {
                issues.error(
                    "bad_duration",
                    &subject,
                    "window must be a wall-clock duration like 24h",
                );
            }
        }
        for code in rf.points.categories.keys() {
            if !category::is_valid(code) {
                issues.error(
                    "bad_category",
                    format!("points.categories.{code}"),
                    "not a dotted lower-case code",
                );
            }
        }
        let mut seen_categories = std::collections::HashSet::new();
        for c in &rf.categories {
            let subject = format!("categories.{}", c.code);
            if !category::is_valid(&c.code) {
                issues.error("bad_category", &subject, "not a dotted lower-case code");
            }
            if !seen_categories.insert(c.code.as_str()) {
                issues.error("duplicate_category", &subject, "listed twice");
            }
            if c.name.trim().is_empty() {
                issues.error("bad_category", &subject, "a name is required");
            }
            let mut seen_attributes = std::collections::HashSet::new();
            for a in &c.attributes {
                let subject = format!("{subject}.attributes.{}", a.code);
                if a.code.is_empty() || !seen_attributes.insert(a.code.as_str()) {
                    issues.error("bad_attribute", &subject, "empty or listed twice");
                }
                if a.datatype.is_list() == a.values.is_empty() {
                    issues.error(
                        "bad_attribute",
                        &subject,
                        "list datatypes need values, other datatypes take none",
                    );
                }
            }
        }
        if rf.max_returns == 0 || rf.max_returns > 100 {
            issues.error(
                "bad_max_returns",
                "max_returns",
                "must be between 1 and 100",
            );
        }
        let policy = |name: &str, subject: &str, issues: &mut Issues| -> PolicyId {
            policy_by_name.get(name).copied().unwrap_or_else(|| {
                issues.error(
                    "unknown_sla_policy",
                    subject,
                    format!("SLA policy {name:?} is not defined"),
                );
                0
            })
        };
        let default_sla = [
            policy(&rf.default_sla.normal, "default_sla.normal", &mut issues),
            policy(&rf.default_sla.high, "default_sla.high", &mut issues),
            policy(
                &rf.default_sla.critical,
                "default_sla.critical",
                &mut issues,
            ),
        ];

        let default_command_centre = dept(
            &rf.default_command_centre,
            "default_command_centre",
            &mut issues,
        )
        .unwrap_or(0);
        let mut command_centres = HashMap::new();
        for (code, d) in &rf.command_centres {
            let region = regions.find(code);
            if region.is_none() {
                issues.error(
                    "unknown_region",
                    format!("command_centres.{code}"),
                    "region is not in the tree",
                );
            }
            if let (Some(r), Some(d)) = (
                region,
                dept(d, &format!("command_centres.{code}"), &mut issues),
            ) {
                command_centres.insert(r, d);
            }
        }

        for (name, v) in [
            ("snap_radius_m", rf.snap_radius_m),
            ("max_snap_radius_m", rf.max_snap_radius_m),
        ] {
            if !v.is_finite() || !(0.0..=10_000.0).contains(&v) {
                issues.error(
                    "bad_snap_radius",
                    name,
                    "must be between 0 and 10000 metres",
                );
            }
        }
        let mut rules = Vec::new();
        let mut seen_rules = HashMap::new();
        for spec in &rf.rules {
            if seen_rules.insert(spec.id.clone(), ()).is_some() {
                issues.error("duplicate_rule", &spec.id, "rule id used twice");
            }
            if !spec.category.is_empty() && !category::is_valid(&spec.category) {
                issues.error(
                    "bad_category",
                    &spec.id,
                    format!(
                        "category {:?} is not a dotted lower-case code",
                        spec.category
                    ),
                );
            }
            let mut rule_regions = Vec::new();
            for code in &spec.regions {
                match regions.find(code) {
                    Some(r) => rule_regions.push(r),
                    None => issues.error(
                        "unknown_region",
                        &spec.id,
                        format!("region {code:?} is not in the tree"),
                    ),
                }
            }
            let primary = dept(&spec.department, &spec.id, &mut issues);
            let co: Vec<DeptId> = spec
                .co_handlers
                .iter()
                .filter_map(|c| dept(c, &spec.id, &mut issues))
                .collect();
            let sla = spec
                .sla
                .as_deref()
                .map(|name| policy(name, &spec.id, &mut issues));
            let mut labels = Vec::new();
            for m in &spec.labels {
                match crate::rules::LabelMatcher::compile(m) {
                    Ok(m) => labels.push(m),
                    Err(why) => issues.error("bad_label_matcher", &spec.id, why),
                }
            }
            if let Some(primary) = primary {
                rules.push(Rule::new(spec, rule_regions, primary, co, sla, labels));
            }
        }

        for (id, d) in (0..).zip(&departments) {
            let used = id == default_command_centre
                || command_centres.values().any(|&c| c == id)
                || rules
                    .iter()
                    .any(|r| r.department == id || r.co_handlers.contains(&id));
            if !used {
                issues.0.push(TableIssue {
                    severity: Severity::Warning,
                    code: "unused_department",
                    subject: d.id.clone(),
                    message: "no rule or command centre sends incidents to this department".into(),
                });
            }
        }
        if issues.has_errors() {
            return Err(TableError { issues: issues.0 });
        }
        // The catalogue apps list; without one, what the rules name.
        let categories = if rf.categories.is_empty() {
            rf.rules
                .iter()
                .map(|r| r.category.clone())
                .filter(|c| !c.is_empty())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .map(|code| crate::rules::CategorySpec {
                    name: code.clone(),
                    code,
                    description: String::new(),
                    group: String::new(),
                    keywords: Vec::new(),
                    attributes: Vec::new(),
                })
                .collect()
        } else {
            rf.categories
        };
        let mut is_grid = vec![false; regions.len()];
        for g in &grids {
            is_grid[g.region as usize] = true;
        }
        let regions_text = src.regions_geojson.filter(|t| !t.trim().is_empty());
        let hash = fnv1a(src.grids_geojson.as_bytes())
            ^ fnv1a(src.rules_yaml.as_bytes()).rotate_left(1)
            ^ calendar_text.map_or(0, |c| fnv1a(c.as_bytes()).rotate_left(2))
            ^ regions_text.map_or(0, |r| fnv1a(r.as_bytes()).rotate_left(3));
        let mut rule_buckets: HashMap<String, Vec<u32>> = HashMap::new();
        let mut shallow_rules = Vec::new();
        for (i, r) in (0u32..).zip(&rules) {
            if r.category_depth >= 2 {
                rule_buckets
                    .entry(category::bucket_key(&r.category).to_owned())
                    .or_default()
                    .push(i);
            } else {
                shallow_rules.push(i);
            }
        }
        // Parents come before children in the tree, so one pass in id order suffices.
        let mut centre_of_region = Vec::with_capacity(regions.len());
        for (id, node) in regions.iter() {
            let inherited = node
                .parent
                .map_or(default_command_centre, |p| centre_of_region[p as usize]);
            centre_of_region.push(command_centres.get(&id).copied().unwrap_or(inherited));
        }
        let grids = GridIndex::build(grids);
        let holes = holes::find(&grids, &regions, &declared_outside);
        Ok(Self {
            centre_of_region,
            rule_buckets,
            shallow_rules,
            version: format!("{}-{:012x}", rf.name, hash & 0xffff_ffff_ffff),
            name: rf.name,
            crs,
            regions,
            grids,
            holes,
            declared_outside,
            gaps: rf.gaps,
            is_grid,
            departments,
            dept_by_id,
            rules,
            default_command_centre,
            sla_policies,
            default_sla,
            calendar,
            region_shapes,
            grid_workers,
            snap_radius_m: rf.snap_radius_m,
            max_snap_radius_m: rf.max_snap_radius_m,
            max_returns: rf.max_returns,
            duplicates,
            points: rf.points,
            categories,
            warnings: issues.0,
        })
    }
}

/// Compiles one SLA policy, or lists every problem with it.
fn load_policy(
    name: &str,
    spec: &crate::rules::SlaPolicySpec,
    working_day: i64,
) -> Result<SlaPolicy, Vec<(&'static str, String)>> {
    use crate::sla::{After, EscalationStep, StepKind};
    let mut problems = Vec::new();
    let span = |text: &str, what: &str, problems: &mut Vec<(&'static str, String)>| {
        parse_span(text, working_day).or_else(|| {
            problems.push((
                "bad_duration",
                format!("{what} {text:?}: use spans like 1.5wd, 4wh, 30wm (working time) or 4h, 1h30m (wall clock)"),
            ));
            None
        })
    };
    let accept = span(&spec.accept, "accept", &mut problems);
    let resolve = span(&spec.resolve, "resolve", &mut problems);
    let verify = span(
        spec.verify.as_deref().unwrap_or("1wd"),
        "verify",
        &mut problems,
    );
    let warn_at = spec
        .warn_at
        .clone()
        .unwrap_or_else(|| crate::sla::DEFAULT_WARN_AT.to_vec());
    if warn_at.iter().any(|&p| p == 0 || p >= 100) {
        problems.push((
            "bad_warning",
            "warn_at percentages must lie between 1 and 99".into(),
        ));
    }
    let escalation = match &spec.escalation {
        None => crate::sla::DEFAULT_ESCALATION.to_vec(),
        Some(steps) => steps
            .iter()
            .filter_map(|s| {
                let kind = StepKind::parse(&s.step).or_else(|| {
                    problems.push((
                        "bad_escalation",
                        format!("step {:?}: use urge, supervise or public_report", s.step),
                    ));
                    None
                })?;
                let after = After::parse(&s.after, working_day).or_else(|| {
                    problems.push((
                        "bad_escalation",
                        format!(
                            "after {:?}: use 0, a span (4wh, 2h) or a percentage (50%)",
                            s.after
                        ),
                    ));
                    None
                })?;
                Some(EscalationStep { kind, after })
            })
            .collect(),
    };
    match (accept, resolve, verify) {
        (Some(accept), Some(resolve), Some(verify)) if problems.is_empty() => Ok(SlaPolicy {
            name: name.to_owned(),
            accept,
            resolve,
            verify,
            warn_at,
            escalation,
        }),
        _ => Err(problems),
    }
}

fn load_grids(
    text: &str,
    regions: &mut RegionTree,
    workers: &mut HashMap<RegionId, Vec<String>>,
    issues: &mut Issues,
) -> Vec<IndexedGrid> {
    let doc: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            issues.error("grids_unparsable", "grids.geojson", e.to_string());
            return Vec::new();
        }
    };
    let Some(features) = doc.get("features").and_then(Value::as_array) else {
        issues.error(
            "grids_unparsable",
            "grids.geojson",
            "not a GeoJSON FeatureCollection",
        );
        return Vec::new();
    };
    let mut grids = Vec::with_capacity(features.len());
    for (n, f) in features.iter().enumerate() {
        let props = f.get("properties").unwrap_or(&Value::Null);
        let text = |k: &str| props.get(k).and_then(Value::as_str).unwrap_or("");
        let code = text("code");
        if code.is_empty() {
            issues.error(
                "missing_code",
                format!("feature #{n}"),
                "feature has no properties.code",
            );
            continue;
        }
        let mut parent: Option<RegionId> = None;
        let mut ok = true;
        for p in props
            .get("path")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            let pt = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("");
            match regions.insert(pt("code"), pt("name"), pt("level"), parent) {
                Ok(id) => parent = Some(id),
                Err(e) => {
                    issues.error(
                        "inconsistent_region",
                        pt("code"),
                        format!("{e} (seen in grid {code})"),
                    );
                    ok = false;
                    break;
                }
            }
        }
        if !ok {
            continue;
        }
        if parent.is_none() {
            issues.error(
                "missing_parent",
                code,
                "grid has no path up to its district",
            );
        }
        if regions.find(code).is_some() {
            issues.error("duplicate_grid", code, "grid code used twice");
            continue;
        }
        let level = if text("level").is_empty() {
            "grid"
        } else {
            text("level")
        };
        let region = match regions.insert(code, text("name"), level, parent) {
            Ok(r) => r,
            Err(e) => {
                issues.error("inconsistent_region", code, e.to_string());
                continue;
            }
        };
        let named: Vec<String> = props
            .get("workers")
            .and_then(Value::as_array)
            .map(|w| {
                w.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        if !named.is_empty() {
            workers.insert(region, named);
        }
        match parse_geometry(f.get("geometry").unwrap_or(&Value::Null)) {
            Ok(shape) => grids.push(IndexedGrid {
                region,
                code: code.to_owned(),
                shape,
            }),
            Err(why) => issues.error("bad_geometry", code, why),
        }
    }
    grids
}
