//! The bootstrap registry: the rendezvous point new nodes join through.
//!
//! Nodes register the address others dial (optionally bound to an ed25519
//! key), keep it alive by refreshing a lease, find peers with paged or random
//! GetPeers, and follow arrivals and departures with WatchPeers.
//!
//! # Layout
//! - [`server::run`]: the entry point; takes a bound listener and a shutdown token.
//! - [`service`]: the gRPC service: validation, signatures, rate limits.
//! - [`registry`]: the redb store with group commit, paging and sampling.
//! - [`lease`]: pure lease arithmetic.
//! - [`config`], [`clock`], [`error`].

pub mod clock;
pub mod config;
pub mod error;
pub mod lease;
pub mod registry;
pub mod server;
pub mod service;

pub use config::Config;
pub use error::Error;
pub use server::run;
