//! One integration-test binary: every module starts real servers.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod bootstrap;
mod devnet;
mod faults;
mod grpcurl;
mod hostile;
mod node;
mod processes;
mod python;
mod storage;
mod tx;
mod verify;

/// A binary of this workspace (`cargo test --workspace` builds them all).
pub fn binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: run `cargo test --workspace`, which builds it", path.display());
    path
}
