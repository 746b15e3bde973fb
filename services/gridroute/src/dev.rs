//! What `gridroute dev` and `gridroute dev-token` add to a serving process: a development key,
//! tokens for the sample's principals, and the help printed at start.

use std::{path::PathBuf, time::Duration};

use gridroute_auth::dev::DevKeys;
use gridroute_core::{
    RoutingTable,
    access::{Kind, Principal},
};

use crate::serve::{BoxError, ServeOptions};

/// How long development tokens are valid.
const DEV_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Where `gridroute dev` keeps its development signing key and the tokens it prints.
pub const DEV_DIR: &str = "target/gridroute-dev";

/// The directory of the development key (`GRIDROUTE_DEV_DIR`, else [`DEV_DIR`]).
pub fn dev_dir() -> PathBuf {
    std::env::var_os("GRIDROUTE_DEV_DIR").map_or_else(|| PathBuf::from(DEV_DIR), PathBuf::from)
}

/// The principals `gridroute dev` prints tokens for: every department of the table (its
/// command centres as command centres), a grid worker, the reporting systems of the samples
/// and the load tester, a table administrator and an auditor.
fn dev_principals(table: &RoutingTable) -> Vec<Principal> {
    let mut out = Vec::new();
    for d in &table.departments {
        let centre = gridroute_core::access::is_default_centre(table, &d.id)
            || !gridroute_core::access::centre_roots(table, &d.id).is_empty();
        let kind = if centre {
            Kind::CommandCentre
        } else {
            Kind::Department
        };
        out.push(Principal::new(kind, &d.id));
    }
    if let Some(worker) = table
        .grids
        .grids()
        .iter()
        .find_map(|g| table.workers(g.region).first())
    {
        out.push(Principal::new(Kind::GridWorker, worker));
    }
    for source in [
        "resident-app",
        "12345-hotline",
        "grid-worker-app",
        "gridroute-loadtest",
    ] {
        out.push(Principal::new(Kind::SourceSystem, source));
    }
    out.push(Principal::new(Kind::TableAdmin, "ops"));
    out.push(Principal::new(Kind::Auditor, "inspector"));
    out
}

/// Tokens for the table's principals, written to `dir`/tokens.json.
pub fn write_dev_tokens(
    keys: &DevKeys,
    table: &RoutingTable,
    dir: &std::path::Path,
) -> Result<Vec<(String, String)>, BoxError> {
    let tokens = dev_principals(table)
        .into_iter()
        .map(|p| (p.label(), keys.token(&p, DEV_TOKEN_TTL)))
        .collect::<Vec<_>>();
    let map: serde_json::Map<String, serde_json::Value> = tokens
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let file = dir.join("tokens.json");
    std::fs::write(&file, serde_json::to_string_pretty(&map)?)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(tokens)
}

/// `gridroute dev-token --all`: tokens for the built-in sample's principals in `dir`.
pub fn dev_tokens_file(dir: &std::path::Path) -> Result<PathBuf, BoxError> {
    let keys = DevKeys::load_or_create(dir)?;
    let table = crate::tables::load_sources(&crate::tables::read_sources(None)?)?;
    write_dev_tokens(&keys, &table, dir)?;
    Ok(dir.join("tokens.json"))
}

/// `gridroute dev-token`: a development token for `principal`.
pub fn dev_token(
    dir: &std::path::Path,
    principal: &str,
    person: Option<&str>,
) -> Result<String, BoxError> {
    let keys = DevKeys::load_or_create(dir)?;
    let mut p = Principal::parse(principal)?;
    if let Some(person) = person {
        p = p.with_person(person);
    }
    Ok(keys.token(&p, DEV_TOKEN_TTL))
}

pub fn print_dev_help(o: &ServeOptions, tokens: Option<&[(String, String)]>) {
    let addr = o.grpc_addr;
    let tokens_text = match tokens {
        Some(t) => {
            let width = t.iter().map(|(p, _)| p.len()).max().unwrap_or(0);
            let lines: Vec<String> = t
                .iter()
                .map(|(p, tok)| format!("  {p:width$}  {tok}"))
                .collect();
            format!(
                "Authentication is on. Development tokens (valid 30 days; also in {}/tokens.json):\n{}\n\n",
                dev_dir().display(),
                lines.join("\n")
            )
        }
        None => String::new(),
    };
    let http_text = if o.http_addr == "off" {
        String::new()
    } else {
        format!(
            "HTTP/JSON on http://{0} (OpenAPI: http://{0}/openapi.json), for instance:\n  \
             curl -H \"authorization: Bearer $(gridroute dev-token command_centre:command-centre)\" \
             http://{0}/v1/stats\n\n",
            o.http_addr
        )
    };
    println!(
        "\ngridroute dev is serving the Dawukou sample on {addr} (metrics: http://{}/metrics)\n\n\
         {tokens_text}\
         In another terminal (cargo run -q -p gridroute -- … works in place of gridroute):\n  \
         export GRIDROUTE_ADDR=http://{addr}\n  \
         gridroute subscribe --token \"$(gridroute dev-token department:property-office)\"\n  \
         gridroute report --token \"$(gridroute dev-token source_system:resident-app)\" \\\n      \
         --category city.vehicle.abandoned --lng 106.3852 --lat 39.0203 --description 'zombie car, flat tyres, two months'\n  \
         gridroute get --token \"$(gridroute dev-token command_centre:command-centre)\" INCIDENT_ID\n\n\
         {http_text}\
         Ctrl-C stops it and its private Redis.\n",
        o.metrics_addr
    );
}
