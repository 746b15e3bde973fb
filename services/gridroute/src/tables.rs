//! Loading routing tables from a directory or from the copy built into the binary, and the
//! `tables` subcommands.

use std::path::{Path, PathBuf};

use gridroute_core::{
    RoutingTable,
    synth::{self, SynthParams},
    table::Severity,
};
use gridroute_store::tables::Sources;

/// The Dawukou sample, built into the binary so that `gridroute dev` runs from anywhere.
pub const SAMPLE_GRIDS: &str = include_str!("../../../deploy/sample/dawukou/grids.geojson");
/// The Dawukou sample rules.
pub const SAMPLE_RULES: &str = include_str!("../../../deploy/sample/dawukou/rules.yaml");

/// A table that could not be read or was rejected.
#[derive(Debug, thiserror::Error)]
pub enum TablesError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The table was rejected.
    #[error(transparent)]
    Rejected(#[from] gridroute_core::TableError),
    /// Generation failed.
    #[error("{0}")]
    Synth(String),
    /// A command-line argument is malformed.
    #[error("{0}")]
    BadArgument(String),
}

fn read(path: PathBuf) -> Result<String, TablesError> {
    std::fs::read_to_string(&path).map_err(|source| TablesError::Io { path, source })
}

/// Writes a table directory: `grids.geojson` and `rules.yaml`.
fn write_table(out: &Path, grids: &str, rules: &str) -> Result<(), TablesError> {
    std::fs::create_dir_all(out).map_err(|source| TablesError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    write(out.join("grids.geojson"), grids)?;
    write(out.join("rules.yaml"), rules)
}

fn write(path: PathBuf, text: &str) -> Result<(), TablesError> {
    std::fs::write(&path, text).map_err(|source| TablesError::Io { path, source })
}

/// The files of `DIR` (`grids.geojson`, `rules.yaml`, and `calendar.yaml` and `regions.geojson`
/// when present), or of
/// the built-in sample.
pub fn read_sources(dir: Option<&Path>) -> Result<Sources, TablesError> {
    match dir {
        None => Ok(Sources {
            grids: SAMPLE_GRIDS.to_owned(),
            rules: SAMPLE_RULES.to_owned(),
            calendar: String::new(),
            regions: String::new(),
        }),
        Some(d) => {
            let optional = |name: &str| {
                let path = d.join(name);
                if path.exists() {
                    read(path)
                } else {
                    Ok(String::new())
                }
            };
            Ok(Sources {
                grids: read(d.join("grids.geojson"))?,
                rules: read(d.join("rules.yaml"))?,
                calendar: optional("calendar.yaml")?,
                regions: optional("regions.geojson")?,
            })
        }
    }
}

/// Loads a table directory, or the built-in sample when `dir` is None.
pub fn load(dir: Option<&Path>) -> Result<RoutingTable, TablesError> {
    load_sources(&read_sources(dir)?)
}

/// Loads a table from its files.
pub fn load_sources(sources: &Sources) -> Result<RoutingTable, TablesError> {
    let table = RoutingTable::load(sources.as_table_sources())?;
    metrics::counter!(gridroute_telemetry::names::TABLE_LOADS_TOTAL, "outcome" => "loaded")
        .increment(1);
    gridroute_store::tables::observe_table(None, &table);
    Ok(table)
}

/// `gridroute tables validate DIR [--at YYYY-MM-DD]`: structure, geometry and the calendar's
/// horizon, offline; prints every issue; Err when the table is rejected. A calendar that ends
/// before the longest SLA span from `at` (default today) rejects the table here, where an
/// operator prepares it; a running city only warns (start-up, push), never stops.
pub fn validate(dir: &Path, at: Option<&str>) -> Result<String, TablesError> {
    let now_ms = match at {
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
        Some(text) => gridroute_core::calendar::parse_date(text)
            .map(|day| day * 86_400_000)
            .ok_or_else(|| TablesError::BadArgument(format!("--at {text:?}: write YYYY-MM-DD")))?,
    };
    let mut t = load(Some(dir))?;
    let mut geometry = gridroute_core::checks::check_geometry(&t);
    if let Some(mut horizon) = t.calendar_shortfall(now_ms) {
        horizon.severity = Severity::Error;
        geometry.push(horizon);
    }
    if geometry.iter().any(|i| i.severity == Severity::Error) {
        return Err(TablesError::Rejected(gridroute_core::TableError {
            issues: geometry,
        }));
    }
    t.warnings.extend(geometry);
    let mut out = format!(
        "table {} is valid: {} regions, {} grids, {} departments, {} rules\n",
        t.version,
        t.regions.len(),
        t.grids.grids().len(),
        t.departments.len(),
        t.rules.len()
    );
    for w in t
        .warnings
        .iter()
        .filter(|w| w.severity == Severity::Warning)
    {
        out.push_str(&format!("{w}\n"));
    }
    Ok(out)
}

/// `gridroute tables sample`: generates the Dawukou sample inside the real boundary.
pub fn sample(boundary: &Path, out: &Path) -> Result<String, TablesError> {
    let text = read(boundary.to_path_buf())?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| TablesError::Synth(e.to_string()))?;
    let geometry = doc
        .pointer("/features/0/geometry")
        .or_else(|| doc.get("geometry"))
        .ok_or_else(|| TablesError::Synth("boundary has no geometry".into()))?;
    let shape = gridroute_core::table::parse_geometry(geometry).map_err(TablesError::Synth)?;
    let params = SynthParams::dawukou();
    let grids = synth::synthesize(&shape, &params).map_err(TablesError::Synth)?;
    let township = params
        .streets
        .iter()
        .position(|(name, _)| name.ends_with('镇'))
        .map(|i| format!("{}{:03}", params.district_code, i + 1))
        .ok_or_else(|| TablesError::Synth("sample has no township".into()))?;
    write_table(
        out,
        &synth::grids_geojson(&params, &grids),
        &include_str!("sample_rules.yaml.tmpl").replace("{{TOWNSHIP}}", &township),
    )?;
    let t = load(Some(out))?;
    let mut communities: Vec<(usize, usize)> =
        grids.iter().map(|g| (g.street, g.community)).collect();
    communities.sort_unstable();
    communities.dedup();
    Ok(format!(
        "wrote {}: {} streets, {} communities, {} grids, {:.1} km²; table {}\n",
        out.display(),
        params.streets.len(),
        communities.len(),
        grids.len(),
        grids.iter().map(|g| synth::area_km2(&g.shape)).sum::<f64>(),
        t.version
    ))
}

/// The union of every (Multi)Polygon of a GeoJSON file: a boundary for synthetic tables.
fn read_boundary(path: &Path) -> Result<geo::MultiPolygon<f64>, TablesError> {
    use geo::BooleanOps;
    let text = read(path.to_path_buf())?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| TablesError::Synth(e.to_string()))?;
    let geometries: Vec<&serde_json::Value> = match doc.get("features").and_then(|f| f.as_array()) {
        Some(features) => features.iter().filter_map(|f| f.get("geometry")).collect(),
        None => doc.get("geometry").into_iter().collect(),
    };
    let mut shape = geo::MultiPolygon::<f64>(vec![]);
    for g in geometries {
        let part = gridroute_core::table::parse_geometry(g).map_err(TablesError::Synth)?;
        shape = if shape.0.is_empty() {
            part
        } else {
            shape.union(&part)
        };
    }
    if shape.0.is_empty() {
        return Err(TablesError::Synth("boundary has no polygon".into()));
    }
    Ok(shape)
}

/// `gridroute tables synth`: a synthetic city of `grids` grids inside a boundary, with the
/// sample's departments and rules, for load tests at any scale.
pub fn synth(boundary: &Path, grids: usize, out: &Path) -> Result<String, TablesError> {
    let started = std::time::Instant::now();
    let shape = read_boundary(boundary)?;
    let params = synth::CityParams::with_grids(grids);
    let generated = synth::synthesize_city(&shape, &params).map_err(TablesError::Synth)?;
    let generated_in = started.elapsed();
    let template = include_str!("sample_rules.yaml.tmpl");
    // The sample's rules without its township-specific one, for the synthetic city's codes.
    let township = template
        .find("  # Villages of the township")
        .unwrap_or(template.len());
    let next = template[township..]
        .find("  - id: vehicle-illegal-parking")
        .map_or(template.len(), |i| township + i);
    let rules = format!("{}{}", &template[..township], &template[next..])
        .replacen("name: dawukou", &format!("name: {}", params.name), 1)
        .replacen(
            "\"640202\": command-centre",
            &format!("\"{}\": command-centre", params.code),
            1,
        )
        .replacen(
            "# Department routing rules for the Dawukou sample",
            "# Department routing rules for a synthetic city",
            1,
        );
    write_table(out, &synth::render_geojson(&generated), &rules)?;
    let loading = std::time::Instant::now();
    let t = load(Some(out))?;
    Ok(format!(
        "wrote {}: {} grids, {} regions; generated in {:.1} s, loaded and validated in {:.2} s; table {}\n",
        out.display(),
        t.grids.grids().len(),
        t.regions.len(),
        generated_in.as_secs_f64(),
        loading.elapsed().as_secs_f64(),
        t.version
    ))
}
