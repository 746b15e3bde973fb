//! Every integration test of the store, in one test binary (one compile of `common`, one link);
//! each file is a module, e.g. `cargo test -p gridroute-store --test integration -- direct::`.

mod common;

mod claims;
mod clock;
mod direct;
mod dispatch_tx;
mod region_index;
mod sentinel;
mod subscribe_ahead;
mod trim;
mod untrusted;
