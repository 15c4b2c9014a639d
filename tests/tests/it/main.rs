//! One integration-test binary: every module starts real servers.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod bootstrap;
mod devnet;
mod etcd;
mod faults;
mod finality;
mod grpcurl;
mod hostile;
mod node;
mod processes;
mod python;
mod relay;
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

/// Sends `signal` to one process (`None` only asks whether it exists), by
/// kill(2) rather than the kill(1) program: a positive pid only, never a
/// group, so a wrong number can never reach every process.
pub fn signal(pid: u32, signal: impl Into<Option<nix::sys::signal::Signal>>) -> nix::Result<()> {
    let pid = i32::try_from(pid).ok().filter(|p| *p > 1).ok_or(nix::errno::Errno::EINVAL)?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal.into())
}
