//! Compiles the protobuf contract with `protox` (pure Rust, no system `protoc`)
//! and writes the encoded descriptor set that the reflection service serves.
use prost::Message;
use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["p2p/bootstrap/v1/bootstrap.proto", "p2p/node/v1/node.proto", "p2p/admin/v1/admin.proto"];
    for f in files {
        println!("cargo:rerun-if-changed=proto/{f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(out.join("p2p_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;

    // etcd's API (the registry's etcd store is its client): not ours to
    // serve, so neither a server nor part of the reflection descriptors.
    println!("cargo:rerun-if-changed=proto/etcd/etcd.proto");
    let etcd = protox::compile(["etcd/etcd.proto"], ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(false).compile_fds(etcd)?;
    Ok(())
}
