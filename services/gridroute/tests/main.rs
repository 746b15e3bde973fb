//! Every integration test of the gridroute binary and its crates, in one test binary: one
//! compile of the shared harness (`common`) and one link instead of one per file, which was
//! most of CI's test build. Each file is a module; run one file's tests with its name as the
//! filter, e.g. `cargo test -p gridroute --test integration -- chaos::`.

mod common;

mod archive;
mod audit;
mod auth;
mod batching;
mod calendar;
mod chaos;
mod cluster;
mod dev;
mod http;
mod http2;
mod inline;
mod lifecycle;
mod mtls;
mod network;
mod oom;
mod open311;
mod path;
mod privacy;
mod record;
mod restore;
mod sentinel;
mod shutdown;
mod skew;
mod switches;
mod tables;
mod timers;
mod tls;
mod trace;
mod transactions;
mod trimming;
mod validation;
