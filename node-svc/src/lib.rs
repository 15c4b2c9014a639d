//! A node of the proof-of-work chain: it validates, stores, mines, gossips
//! and syncs blocks, and joins the network through the bootstrap registry.
//!
//! # Layout
//! - [`server::spawn`] / [`server::run`]: entry points taking a bound listener and a shutdown token.
//! - [`node`]: [`NodeHandle`], the node's identity and shared parts, cheap to clone.
//! - [`service`]: the `p2p.node.v1.Node` gRPC service (validation, then the handle).
//! - [`admin`]: the operator's `p2p.admin.v1.Admin` service, on its own listener.
//! - [`import`]: blocks from outside (SendBlock, BroadcastBlockchain) and penalties.
//! - [`miner`]: mining on demand (Admin.MineBlock) and continuously, off the async workers.
//! - [`gossip`]: block relay's I/O: each new valid tip pushed to eager peers and
//!   announced to the rest, announcements checked and fetched, per-peer queues.
//! - [`relay`]: the relay's decisions without I/O, and a seeded simulator of them.
//! - [`mempool`]: pending transactions (bounded, persisted, following the chain).
//! - [`txgossip`]: announcing transaction ids; peers fetch what they lack.
//! - [`sync`]: the [`sync::Syncer`] task and the [`sync::SyncHandle`] that asks it to sync.
//! - [`heartbeat`]: pinging peers, and answering their pings.
//! - [`pex`]: peer exchange, asking and answering.
//! - [`membership`]: registering with and learning peers from the bootstrap.
//! - [`peers`]: the pure peer table, the TLS dialer, the peer cache.
//! - [`chain`]: block format, proof of work, validation, fork choice, storage,
//!   and the actor thread that owns the writable chain.
//! - [`convert`]: every protobuf <-> domain conversion.
//! - [`metrics`], [`config`], [`error`]; `testkit` (feature `test-utils`): test networks.
//!
//! # Event flow
//! Importers ([`import`], [`sync`], [`miner`]) hand blocks to the chain
//! actor with their [`chain::Origin`]. Once a new tip is valid the actor
//! publishes `TipValidated` (before the commit, so relay need not wait for
//! the disk); after each commit that moved the tip, `Reorg` then
//! `TipChanged`. [`gossip`] subscribes and relays through [`relay`]'s core,
//! skipping the peers known to have the block.
//! Heartbeats and orphans ask the [`sync::Syncer`] to sync through its handle.

pub mod admin;
pub mod chain;
pub mod config;
pub mod convert;
pub mod error;
pub mod finality;
pub mod gossip;
pub mod heartbeat;
pub mod import;
pub mod membership;
pub mod mempool;
pub mod metrics;
pub mod miner;
pub mod node;
pub mod peers;
pub mod pex;
pub mod relay;
pub mod server;
pub mod service;
pub mod sync;
#[cfg(any(test, feature = "test-utils"))]
pub mod testkit;
pub mod txgossip;

pub use config::NodeConfig;
pub use error::Error;
pub use node::NodeHandle;
pub use server::{Listeners, RunningNode, run, spawn};
