//! Peers: who we know, how we reach them, and whom we believe.
//!
//! - [`table`]: the peer table (states, scores, bans, backoff, limits); pure.
//! - [`dialer`]: endpoint settings and the TLS link to each peer.
//! - [`cache`]: known-good peers on disk, for rejoining without the bootstrap.

pub mod cache;
pub mod dialer;
mod entry;
pub mod table;

pub use cache::{CachedPeer, PeerCache};
pub use dialer::Dialer;
pub use table::{BAN_SCORE, INVALID_BLOCK_PENALTY, PeerEntry, PeerLimits, PeerTable, PeerTip};
