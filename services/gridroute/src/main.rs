//! `gridroute`: the product binary. It only parses the command line and hands over to the
//! crates that do the work (see `services/` and the README's architecture section).

/// mimalloc instead of the system allocator: the hot paths allocate many small buffers per
/// message (protobuf, RESP, strings), and glibc's malloc/free took ~20 % of the CPU under load.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod client;
mod dev;
mod serve;
mod tables;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "gridroute",
    version,
    about = "Incident routing for city grid governance"
)]
struct Cli {
    /// Bearer token presented on every call of the client commands (`gridroute dev` prints
    /// ready-made ones; `gridroute dev-token` makes more).
    #[arg(long, global = true, env = "GRIDROUTE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the gRPC API and/or router workers against a Redis.
    Serve(serve::ServeOptions),
    /// Like serve, on the built-in Dawukou sample, starting a private redis-server when no
    /// --redis-url is given.
    Dev(serve::ServeOptions),
    /// Report an incident.
    Report {
        /// gRPC endpoint.
        #[arg(long, env = "GRIDROUTE_ADDR", default_value = "http://127.0.0.1:50051")]
        addr: String,
        #[command(flatten)]
        report: client::ReportArgs,
    },
    /// Explain how a report would be routed, without creating an incident.
    Explain {
        /// gRPC endpoint.
        #[arg(long, env = "GRIDROUTE_ADDR", default_value = "http://127.0.0.1:50051")]
        addr: String,
        #[command(flatten)]
        report: client::ReportArgs,
    },
    /// Ask a server's gRPC health service; exits 0 when SERVING (container and systemd
    /// health checks).
    Health {
        /// gRPC endpoint.
        #[arg(long, env = "GRIDROUTE_ADDR", default_value = "http://127.0.0.1:50051")]
        addr: String,
        /// Service to ask about: "" (ready: Redis reachable, table loaded) or "liveness".
        #[arg(long, default_value = "")]
        service: String,
        /// Give up after this many milliseconds.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
    /// Show one incident with its decision and timeline.
    Get {
        /// gRPC endpoint.
        #[arg(long, env = "GRIDROUTE_ADDR", default_value = "http://127.0.0.1:50051")]
        addr: String,
        /// Incident id.
        id: String,
    },
    /// Stream the dispatches of the department the token names.
    Subscribe {
        /// gRPC endpoint.
        #[arg(long, env = "GRIDROUTE_ADDR", default_value = "http://127.0.0.1:50051")]
        addr: String,
        /// Department id, e.g. property-office (default: the token's; another is refused).
        #[arg(long, default_value = "")]
        department: String,
        /// Resume after this cursor.
        #[arg(long)]
        cursor: Option<String>,
        /// Without a cursor: only new dispatches (default: from the oldest retained).
        #[arg(long)]
        latest: bool,
    },
    /// Act on an incident as the department or command centre the token names: accept,
    /// progress, resolve, return, verify, close, cancel, arbitrate.
    Act {
        /// gRPC endpoint.
        #[arg(long, env = "GRIDROUTE_ADDR", default_value = "http://127.0.0.1:50051")]
        addr: String,
        /// What to do.
        #[arg(value_enum)]
        action: client::Act,
        /// Incident id.
        id: String,
        /// Department acting (default: the token's; another is refused).
        #[arg(long, default_value = "")]
        department: String,
        /// Note for the timeline.
        #[arg(long, default_value = "done")]
        note: String,
        /// For `arbitrate`: the department that must handle it.
        #[arg(long, default_value = "")]
        assignee: String,
    },
    /// Print a development token for a principal (`department:property-office`,
    /// `command_centre:command-centre`, `source_system:resident-app`, `table_admin`, …), signed
    /// with the key `gridroute dev` keeps under target/gridroute-dev. Development only.
    DevToken {
        /// The principal, `kind:id` (omit with --all).
        #[arg(required_unless_present = "all")]
        principal: Option<String>,
        /// Write tokens for every principal of the built-in sample (as `dev` prints them) to
        /// the directory's tokens.json, and print that file's path.
        #[arg(long, conflicts_with = "principal")]
        all: bool,
        /// The person acting (the token's subject).
        #[arg(long)]
        person: Option<String>,
        /// Directory of the development key.
        #[arg(long, env = "GRIDROUTE_DEV_DIR", default_value = dev::DEV_DIR)]
        dir: PathBuf,
    },
    /// Print slot ranges for a Redis Cluster whose primaries each hold the same number of
    /// partitions: one line `first last` per primary, the arguments of its
    /// `CLUSTER ADDSLOTSRANGE` (docs/OPERATIONS.md, "Redis Cluster").
    ClusterSlots {
        /// Number of partitions of the deployment (`--partitions` of serve).
        #[arg(long, env = "GRIDROUTE_PARTITIONS", default_value_t = 4)]
        partitions: u16,
        /// Number of primaries.
        #[arg(long, default_value_t = 3)]
        primaries: u16,
    },
    /// Routing table tools.
    Tables {
        #[command(subcommand)]
        command: TablesCommand,
    },
    /// The archive of closed incidents (PostgreSQL).
    Archive {
        #[command(subcommand)]
        command: ArchiveCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ArchiveCommand {
    /// Apply the schema migrations not applied yet (serve applies them too at start); prints
    /// what it applied and the schema version.
    Migrate {
        /// PostgreSQL URL (`postgres://user:password@host:5432/gridroute`).
        #[arg(long, env = "GRIDROUTE_ARCHIVE_URL", hide_env_values = true)]
        archive_url: String,
    },
    /// Print the schema version and how many incidents the archive holds.
    Status {
        /// PostgreSQL URL.
        #[arg(long, env = "GRIDROUTE_ARCHIVE_URL", hide_env_values = true)]
        archive_url: String,
    },
}

#[derive(Debug, Subcommand)]
enum TablesCommand {
    /// Validate a table directory offline (structure and geometry); prints every issue.
    Validate {
        /// Directory with grids.geojson and rules.yaml.
        dir: PathBuf,
        /// Check the working calendar's horizon for cases dispatched on this day
        /// (YYYY-MM-DD) instead of today: the table is rejected when an SLA span from then
        /// reaches past the last day the calendar covers.
        #[arg(long, value_name = "YYYY-MM-DD")]
        at: Option<String>,
    },
    /// Validate and publish a table: every replica swaps to it within about a second.
    Push {
        /// gRPC endpoint.
        #[arg(long, env = "GRIDROUTE_ADDR", default_value = "http://127.0.0.1:50051")]
        addr: String,
        /// Directory with grids.geojson and rules.yaml.
        dir: PathBuf,
        /// Why (kept in the history).
        #[arg(long, default_value = "")]
        note: String,
        /// Validate on the server only; publish nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show the version in force and the publication history.
    Show {
        /// gRPC endpoint.
        #[arg(long, env = "GRIDROUTE_ADDR", default_value = "http://127.0.0.1:50051")]
        addr: String,
    },
    /// Restore the previous version (or --to VERSION).
    Rollback {
        /// gRPC endpoint.
        #[arg(long, env = "GRIDROUTE_ADDR", default_value = "http://127.0.0.1:50051")]
        addr: String,
        /// The version to restore.
        #[arg(long)]
        to: Option<String>,
    },
    /// What-if: list incidents that a candidate table would route differently.
    Diff {
        /// gRPC endpoint.
        #[arg(long, env = "GRIDROUTE_ADDR", default_value = "http://127.0.0.1:50051")]
        addr: String,
        /// Candidate table directory.
        #[arg(long)]
        candidate: PathBuf,
        /// JSON-lines file of reports to replay as well.
        #[arg(long)]
        reports: Option<PathBuf>,
        /// How many recent incidents to replay (default 1000 without --reports, else 0).
        #[arg(long, default_value_t = 0)]
        replay: i32,
    },
    /// Generate a synthetic city of any size (districts, streets, communities, grids) inside a
    /// boundary, with the sample's departments and rules, for load tests.
    Synth {
        /// Boundary GeoJSON; every (Multi)Polygon in it is united.
        #[arg(long, default_value = "../shared/data/ningxia-counties.geojson")]
        boundary: PathBuf,
        /// Number of grids.
        #[arg(long, default_value_t = 100_000)]
        grids: usize,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Generate the Dawukou sample (317 grids inside the real boundary) and its rules.
    Sample {
        /// Boundary GeoJSON (a Feature or FeatureCollection with one (Multi)Polygon).
        #[arg(long, default_value = "../shared/data/dawukou-640202.geojson")]
        boundary: PathBuf,
        /// Output directory.
        #[arg(long, default_value = "deploy/sample/dawukou")]
        out: PathBuf,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    client::set_token(cli.token);
    let result = match cli.command {
        Command::DevToken {
            principal,
            all,
            person,
            dir,
        } => match (principal, all) {
            (Some(p), _) => dev::dev_token(&dir, &p, person.as_deref()).map(|t| println!("{t}")),
            (None, _) => dev::dev_tokens_file(&dir).map(|f| println!("{}", f.display())),
        },
        Command::ClusterSlots {
            partitions,
            primaries,
        } => {
            for (first, last) in gridroute_store::keys::balanced_slot_ranges(partitions, primaries)
            {
                println!("{first} {last}");
            }
            Ok(())
        }
        Command::Serve(o) => serve::run(o, false).await,
        Command::Dev(o) => serve::run(o, true).await,
        Command::Report { addr, report } => client::report(&addr, &report).await,
        Command::Explain { addr, report } => client::explain(&addr, &report).await,
        Command::Get { addr, id } => client::get(&addr, &id).await,
        Command::Health {
            addr,
            service,
            timeout_ms,
        } => client::health(&addr, &service, timeout_ms).await,
        Command::Subscribe {
            addr,
            department,
            cursor,
            latest,
        } => client::subscribe(&addr, &department, cursor, latest).await,
        Command::Act {
            addr,
            action,
            id,
            department,
            note,
            assignee,
        } => client::act(&addr, action, &id, &department, &note, &assignee).await,
        Command::Archive { command } => archive_command(command).await,
        Command::Tables { command } => match command {
            TablesCommand::Push {
                addr,
                dir,
                note,
                dry_run,
            } => client::tables_push(&addr, &dir, &note, dry_run).await,
            TablesCommand::Show { addr } => client::tables_show(&addr).await,
            TablesCommand::Rollback { addr, to } => client::tables_rollback(&addr, to).await,
            TablesCommand::Diff {
                addr,
                candidate,
                reports,
                replay,
            } => client::tables_diff(&addr, &candidate, reports.as_deref(), replay).await,
            TablesCommand::Validate { dir, at } => tables::validate(&dir, at.as_deref())
                .map(|s| print!("{s}"))
                .map_err(Into::into),
            TablesCommand::Synth {
                boundary,
                grids,
                out,
            } => tables::synth(&boundary, grids, &out)
                .map(|s| print!("{s}"))
                .map_err(Into::into),
            TablesCommand::Sample { boundary, out } => tables::sample(&boundary, &out)
                .map(|s| print!("{s}"))
                .map_err(Into::into),
        },
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gridroute: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn archive_command(
    command: ArchiveCommand,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    match command {
        ArchiveCommand::Migrate { archive_url } => {
            let archive = gridroute_archive::Archive::connect(&archive_url)?;
            let applied = archive.migrate().await?;
            let version = archive.schema_version().await?;
            if applied.is_empty() {
                println!("archive schema up to date (version {version})");
            } else {
                println!("applied migrations {applied:?}; archive schema version {version}");
            }
        }
        ArchiveCommand::Status { archive_url } => {
            let archive = gridroute_archive::Archive::connect(&archive_url)?;
            let version = archive.schema_version().await?;
            let latest = gridroute_archive::MIGRATIONS.last().map_or(0, |m| m.0);
            if version < latest {
                println!(
                    "schema version {version} (this binary knows {latest}: run gridroute archive migrate)"
                );
            } else {
                println!(
                    "schema version {version}; {} incidents archived",
                    archive.count().await?
                );
            }
        }
    }
    Ok(())
}
