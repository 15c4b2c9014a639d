//! What the peer table keeps per peer, and its bounds.

use std::time::Duration;

use p2p_proto::node::{PeerSource, PeerState};
use p2p_proto::work::Work;

/// One known peer.
#[derive(Debug, Clone)]
pub struct PeerEntry {
    pub address: String,
    /// Who should be at `address`: proven in a TLS handshake we made when
    /// `verified`; otherwise what the bootstrap, a peer or the operator said,
    /// which our next handshake must prove.
    pub node_id: String,
    pub verified: bool,
    /// How far the unverified `node_id` is trusted, by its source (see
    /// [`super::table::id_trust`]); a better source may correct it.
    pub id_trust: u8,
    pub state: PeerState,
    pub source: PeerSource,
    pub last_seen_ms: u64,
    pub failures: u32,
    pub best_height: u64,
    pub best_tip: Vec<u8>,
    pub best_work: Work,
    pub score: i32,
    pub banned_until_ms: u64,
    /// Earliest time the next dial may happen (backoff while failing).
    pub next_attempt_ms: u64,
}

impl PeerEntry {
    pub(super) fn new(address: String, node_id: &str, source: PeerSource) -> Self {
        PeerEntry {
            address,
            node_id: node_id.to_string(),
            verified: false,
            id_trust: super::table::id_trust(source),
            state: PeerState::Connecting,
            source,
            last_seen_ms: 0,
            failures: 0,
            best_height: 0,
            best_tip: Vec::new(),
            best_work: Work::ZERO,
            score: 0,
            banned_until_ms: 0,
            next_attempt_ms: 0,
        }
    }

    /// Worth sending blocks and pings to.
    pub fn is_usable(&self) -> bool {
        matches!(self.state, PeerState::Connecting | PeerState::Active)
    }
}

/// What a peer said about its chain.
#[derive(Debug, Clone)]
pub struct PeerTip {
    pub node_id: String,
    pub height: u64,
    pub tip: Vec<u8>,
    pub work: Work,
}

/// Bounds on the table.
#[derive(Debug, Clone, Copy)]
pub struct PeerLimits {
    /// Known peers kept in all (the address book).
    pub max_peers: usize,
    /// Peers that reached us first, kept at most; over it the least useful goes.
    pub max_inbound: usize,
    /// Peers we dial (ping) ourselves, picked across sources.
    pub target_outbound: usize,
    /// Missed exchanges in a row before a peer is failing.
    pub max_failures: u32,
    /// Failed tries after which a peer that never answered is forgotten.
    pub max_dial_attempts: u32,
    /// First retry delay of a failing peer (doubles up to 8x, plus jitter
    /// of up to the delay itself: never more than 16x).
    pub base_backoff: Duration,
}
