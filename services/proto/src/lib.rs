//! Generated types and service stubs for the `gridroute.v1` gRPC API, plus the encoded
//! descriptor set that server reflection serves. This crate holds no logic: mapping to and from
//! domain types lives with the code that needs it.

#![allow(missing_docs, clippy::all, missing_debug_implementations)]

/// The `gridroute.v1` package.
pub mod v1 {
    tonic::include_proto!("gridroute.v1");
}

/// The encoded `FileDescriptorSet` of every gridroute proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/gridroute_descriptor.bin"));

/// The encoded `FileDescriptorSet` of `google.rpc.Status` and the error-detail messages
/// (`BadRequest`, `RetryInfo`, …) that gridroute's errors carry, for server reflection.
pub const ERROR_DETAILS_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/google_rpc_descriptor.bin"));
