//! Peers: who we know, how we reach them, and whom we believe.
//!
//! - [`table`]: the peer table (states, scores, bans, backoff, limits); pure.
//! - [`dialer`]: endpoint settings and the channel to each peer.
//! - [`cache`]: known-good peers on disk, for rejoining without the bootstrap.
//! - [`attribution`]: believing a request's claimed sender only when it
//!   matches the connection.

pub mod attribution;
pub mod cache;
pub mod dialer;
mod entry;
pub mod table;

pub use attribution::SenderCheck;
pub use cache::{CachedPeer, PeerCache};
pub use dialer::Dialer;
pub use table::{BAN_SCORE, INVALID_BLOCK_PENALTY, PeerEntry, PeerLimits, PeerTable, PeerTip};
