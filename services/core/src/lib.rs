//! The pure core of gridroute: everything needed to decide where an incident goes, with no I/O.
//!
//! Layout:
//! - [`region`]: the region tree (district → street → community → grid → deeper levels).
//! - [`grid_index`]: point → leaf grid, with one deterministic answer on shared borders.
//! - [`category`]: hierarchical category codes and prefix matching.
//! - [`rules`]: the department routing rules as written in YAML, compiled for matching.
//! - [`sla`]: SLA policies, deadline arithmetic and the timers of escalation chains.
//! - [`access`]: principals, which incidents each may see, and who reads reporters' contact
//!   details (the rest see them masked).
//! - [`lifecycle`]: incident states, who may do what, and the plan of every change.
//! - [`table`]: a whole routing table (regions, grids, rules) loaded and validated from its
//!   sources, with every problem reported at once.
//! - [`route`]: the route decision for one report, and its explanation.
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
