//! The `tables` subcommands that talk to a running service: push (or dry-run), show, roll
//! back, and diff a candidate against the table in force.

use gridroute_proto::v1::{self as pb, table_service_client::TableServiceClient};

use super::{BoxError, Conn, ReportArgs, channel};

fn table_client(ch: Conn) -> TableServiceClient<Conn> {
    TableServiceClient::new(ch)
        .max_encoding_message_size(256 * 1024 * 1024)
        .max_decoding_message_size(256 * 1024 * 1024)
}

fn sources(dir: &std::path::Path) -> Result<pb::TableSources, BoxError> {
    let s = crate::tables::read_sources(Some(dir))?;
    Ok(pb::TableSources {
        grids_geojson: s.grids,
        rules_yaml: s.rules,
        calendar_yaml: s.calendar,
        regions_geojson: s.regions,
    })
}

/// Prints a rejected table's violations one per line.
fn explain_status(e: tonic::Status) -> BoxError {
    use tonic_types::StatusExt;
    let mut text = e.message().to_owned();
    if let Some(bad) = e.get_details_bad_request() {
        text = format!(
            "table rejected with {} problem(s):",
            bad.field_violations.len()
        );
        for v in bad.field_violations {
            text.push_str(&format!("\n  {}: {}", v.field, v.description));
        }
    }
    text.into()
}

/// `gridroute tables push DIR`.
pub async fn tables_push(
    addr: &str,
    dir: &std::path::Path,
    note: &str,
    validate_only: bool,
) -> Result<(), BoxError> {
    let mut c = table_client(channel(addr).await?);
    let r = c
        .publish_table(pb::PublishTableRequest {
            sources: Some(sources(dir)?),
            validate_only,
            published_by: String::new(),
            note: note.to_owned(),
        })
        .await
        .map_err(explain_status)?
        .into_inner();
    for w in &r.warnings {
        println!("warning [{}] {}: {}", w.code, w.subject, w.message);
    }
    match (validate_only, r.changed) {
        (true, _) => println!(
            "table {} is valid ({} grids, {} rules); nothing published",
            r.version, r.grid_count, r.rule_count
        ),
        (false, true) => println!(
            "table {} is in force (was {}); replicas swap within a second",
            r.version, r.previous_version
        ),
        (false, false) => println!("table {} was already in force", r.version),
    }
    Ok(())
}

/// `gridroute tables show`.
pub async fn tables_show(addr: &str) -> Result<(), BoxError> {
    let info = table_client(channel(addr).await?)
        .get_table_info(pb::GetTableInfoRequest {})
        .await?
        .into_inner();
    println!(
        "in force: {} (this replica: {})",
        info.current_version, info.replica_version
    );
    for h in info.history {
        let t = h.publish_time.map_or(0, |t| t.seconds);
        println!("  {}  at {t}  by {}  {}", h.version, h.published_by, h.note);
    }
    Ok(())
}

/// `gridroute tables rollback`.
pub async fn tables_rollback(addr: &str, to: Option<String>) -> Result<(), BoxError> {
    let info = table_client(channel(addr).await?)
        .rollback_table(pb::RollbackTableRequest {
            version: to.unwrap_or_default(),
            published_by: String::new(),
        })
        .await?
        .into_inner();
    println!("table {} is in force again", info.current_version);
    Ok(())
}

/// Reads reports for a what-if replay: one JSON object per line with `category`, and `lng` +
/// `lat` (optionally `crs`) or `grid_code`; optional `urgency`, `source_system`.
fn read_reports(path: &std::path::Path) -> Result<Vec<pb::ReportIncidentRequest>, BoxError> {
    let text = std::fs::read_to_string(path)?;
    let mut out = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("{}:{}: {e}", path.display(), n + 1))?;
        let s = |k: &str| {
            v.get(k)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        };
        let args = ReportArgs {
            category: s("category")
                .ok_or_else(|| format!("{}:{}: no category", path.display(), n + 1))?,
            lng: v.get("lng").and_then(serde_json::Value::as_f64),
            lat: v.get("lat").and_then(serde_json::Value::as_f64),
            crs: s("crs"),
            grid: s("grid_code"),
            description: String::new(),
            urgency: s("urgency").unwrap_or_else(|| "normal".into()),
            source: s("source_system").unwrap_or_else(|| "replay".into()),
            request_id: Some(String::new()),
        };
        out.push(
            args.to_request()
                .map_err(|e| format!("{}:{}: {e}", path.display(), n + 1))?,
        );
    }
    Ok(out)
}

/// `gridroute tables diff --candidate DIR`.
pub async fn tables_diff(
    addr: &str,
    dir: &std::path::Path,
    reports: Option<&std::path::Path>,
    replay: i32,
) -> Result<(), BoxError> {
    let reports = reports.map(read_reports).transpose()?.unwrap_or_default();
    let r = table_client(channel(addr).await?)
        .diff_table(pb::DiffTableRequest {
            candidate: Some(sources(dir)?),
            replay_recent: replay,
            reports,
        })
        .await
        .map_err(explain_status)?
        .into_inner();
    println!(
        "{} → {}: {} compared, {} would change",
        r.current_version,
        r.candidate_version,
        r.compared,
        r.changes.len()
    );
    for ch in &r.changes {
        let (a, b) = (
            ch.current.clone().unwrap_or_default(),
            ch.candidate.clone().unwrap_or_default(),
        );
        let who = if ch.incident_id.is_empty() {
            format!("report #{}", ch.report_index + 1)
        } else {
            ch.incident_id.clone()
        };
        let grid = |d: &pb::RouteDecision| {
            d.region_path
                .last()
                .map_or("-".to_owned(), |r| r.code.clone())
        };
        println!(
            "  {who}  {}  {} [{}] grid {} → {} [{}] grid {}",
            ch.category,
            a.department_id,
            if a.rule_id.is_empty() {
                "fallback"
            } else {
                &a.rule_id
            },
            grid(&a),
            b.department_id,
            if b.rule_id.is_empty() {
                "fallback"
            } else {
                &b.rule_id
            },
            grid(&b)
        );
    }
    Ok(())
}
