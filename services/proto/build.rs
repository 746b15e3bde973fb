//! Compiles `proto/gridroute/v1/*.proto` with protox (no system protoc) and writes the
//! descriptor sets that server reflection serves (and the HTTP face reads its bindings from):
//! gridroute's, with the `google.api.http` annotations, and `google.rpc`'s error details.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "gridroute/v1/resources.proto",
        "gridroute/v1/incident_service.proto",
        "gridroute/v1/dispatch_service.proto",
        "gridroute/v1/routing_service.proto",
        "gridroute/v1/table_service.proto",
        "gridroute/v1/supervision_service.proto",
        "gridroute/v1/audit_service.proto",
    ];
    for file in files
        .iter()
        .chain(&["google/api/http.proto", "google/api/annotations.proto"])
    {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    let mut compiler = protox::Compiler::new([&root])?;
    compiler
        .include_source_info(true)
        .include_imports(true)
        .open_files(files)?;
    let fds = compiler.file_descriptor_set();
    let out = PathBuf::from(env::var("OUT_DIR")?);
    // Encoded by protox, not through prost-types, which would drop the options' extensions:
    // the HTTP face reads `google.api.http` from this set.
    fs::write(
        out.join("gridroute_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    // The error-detail messages gridroute's errors carry, for reflection only (tonic-types has
    // their Rust types).
    let details = ["google/rpc/status.proto", "google/rpc/error_details.proto"];
    for file in &details {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    let details = protox::compile(details, [&root])?;
    fs::write(
        out.join("google_rpc_descriptor.bin"),
        details.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
