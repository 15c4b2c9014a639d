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
