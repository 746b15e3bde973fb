//! The pure core of gridroute: everything needed to decide where an incident goes, with no I/O.
//!
//! Layout:
//! - [`region`]: the region tree (district → street → community → grid → deeper levels).
//! - [`grid_index`]: point → leaf grid, with one deterministic answer on shared borders;
//!   [`cell_index`] is its raster of cells, the fast path.
//! - [`crs`]: WGS-84, GCJ-02 and BD-09 coordinates converted into the table's system.
//! - [`category`]: hierarchical category codes and prefix matching.
//! - [`rules`]: `rules.yaml` as written (departments, rules, SLA policies, the `gaps` policy),
//!   compiled for matching.
//! - [`calendar`]: the working-time calendar (working days, hours, holidays, make-up days).
//! - [`sla`]: SLA spans and policies, deadline arithmetic and the timers of escalation chains.
//! - [`access`]: principals, which incidents each may see, and who reads reporters' contact
//!   details (the rest see them masked).
//! - [`table`]: a whole routing table loaded from its sources (`table::load`), GeoJSON parsing
//!   (`table::geojson`), and the holes no grid covers with the region around each
//!   (`table::holes`); [`checks`] validates it, every problem reported at once.
//! - [`route`]: the route decision for one report (inside a grid, in a hole, outside all
//!   grids), and its explanation.
//! - [`lifecycle`]: incident states, who may do what, and the plan of every change: the
//!   vocabulary (`model`), timeline entry kinds ([`lifecycle::events`]), one function per
//!   command (`commands`), fired SLA timers ([`lifecycle::timers`]) and duplicate merges
//!   ([`lifecycle::merge`]).
//! - [`synth`]: generators of realistic synthetic grid tables inside a real boundary.
//!
//! This crate must never depend on tokio, redis or tonic: it is benchmarked and tested alone,
//! and every replica holds its tables in memory through it.

pub mod access;
pub mod calendar;
pub mod category;
pub mod cell_index;
pub mod checks;
pub mod crs;
pub mod grid_index;
pub mod lifecycle;
pub mod region;
pub mod route;
pub mod rules;
pub mod sla;
pub mod synth;
pub mod table;

pub use route::{Decision, Outcome, RouteQuery, RouteTarget};
pub use table::{RoutingTable, TableError, TableIssue};
