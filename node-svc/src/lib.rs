//! A node of the proof-of-work chain: it validates, stores, mines, gossips
//! and syncs blocks, and joins the network through the bootstrap registry.
//!
//! # Layout
//! - [`server::spawn`] / [`server::run`]: entry points taking a bound listener and a shutdown token.
//! - [`node`]: the node's shared state and its behaviour (gossip, sync, mining, heartbeats).
//! - [`service`]: the `p2p.node.v1.Node` gRPC service.
//! - [`membership`]: registering with and learning peers from the bootstrap.
//! - [`attribution`]: believing a request's claimed sender only when it matches the connection.
//! - [`peers`]: the peer table (states, scores, bans, backoff, limits).
//! - [`peer_cache`]: known-good peers on disk, for rejoining without the bootstrap.
//! - [`chain`]: block format, proof of work, validation, fork choice, storage.
//! - [`chain_handle`]: the thread that owns the writable chain.
//! - [`config`], [`error`].

pub mod attribution;
pub mod chain;
pub mod chain_handle;
pub mod config;
pub mod error;
pub mod membership;
pub mod node;
pub mod peer_cache;
pub mod peers;
pub mod server;
pub mod service;

pub use config::NodeConfig;
pub use error::Error;
pub use server::{RunningNode, run, spawn};
