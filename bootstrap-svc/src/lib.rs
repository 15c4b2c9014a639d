//! The bootstrap registry: the rendezvous point new nodes join through.
//!
//! Nodes register the address others dial (optionally bound to an ed25519
//! key), keep it alive by refreshing a lease, find peers with paged or random
//! GetPeers, and follow arrivals and departures with WatchPeers.
//!
//! # Layout
//! - [`server::run`]: the entry point; takes a bound listener and a shutdown token.
//! - [`service`]: the gRPC service: validation, rate limits, then the store.
//! - [`auth`]: the access rules (signatures, time window, ownership,
//!   replay), pure and property-tested; checked before the writer where they
//!   need only the request, inside the store's write where they need the record.
//! - [`store`]: the [`store::PeerStore`] trait and its implementations:
//!   `store::redb` (one server: tables, group-committing writer, paging and
//!   sampling) and `store::etcd` (any number of servers on one etcd cluster:
//!   compare-and-swap transactions, leases, list + watch).
//! - [`verify`]: dialing pending registrations before they are listed.
//! - [`lease`]: pure lease arithmetic.
//! - [`metrics`]: Prometheus metrics (one registry per server).
//! - [`config`], [`error`]; time comes from `p2p_proto::clock`.

pub mod auth;
pub mod config;
pub mod error;
pub mod lease;
pub mod metrics;
pub mod server;
pub mod service;
pub mod store;
pub mod verify;

/// Time as a dependency (shared with the node): tests use a manual clock.
pub use p2p_proto::clock;

pub use config::{Config, StoreChoice};
pub use error::Error;
pub use server::{run, run_with_metrics};
