//! Counters for operators and tests. (Prometheus export builds on these.)

use std::sync::atomic::{AtomicU64, Ordering};

/// What a node has done since it started.
#[derive(Debug, Default)]
pub struct Stats {
    /// SendBlock calls received.
    pub blocks_received: AtomicU64,
    /// Received blocks that were already known.
    pub duplicates_received: AtomicU64,
    /// Blocks newly stored (any source).
    pub blocks_stored: AtomicU64,
    /// Blocks refused as invalid.
    pub invalid_received: AtomicU64,
    /// SendBlock calls made to peers.
    pub gossip_sent: AtomicU64,
    /// Blocks received through GetBlocks while syncing.
    pub synced_blocks: AtomicU64,
    /// Successful Register calls to a bootstrap.
    pub bootstrap_registrations: AtomicU64,
    /// Bootstrap sessions that failed (unreachable, refused, stream ended).
    pub bootstrap_failures: AtomicU64,
    /// Sync requests dropped because the peer is banned.
    pub syncs_refused_banned: AtomicU64,
    /// Syncs that ended in an error (the peer failed, went silent or broke the rules).
    pub syncs_failed: AtomicU64,
    /// Transaction ids peers announced to us.
    pub tx_announced: AtomicU64,
    /// Transaction bodies peers sent us (SendTransactions items).
    pub tx_bodies_received: AtomicU64,
    /// Transaction bodies we sent to peers.
    pub tx_bodies_sent: AtomicU64,
    /// SendVotes calls made to peers.
    pub vote_messages_sent: AtomicU64,
    /// SendVotes calls received.
    pub vote_messages_received: AtomicU64,
    /// Full blocks queued to peers by the relay (eager pushes).
    pub blocks_pushed: AtomicU64,
    /// Block headers queued to peers (announcements).
    pub blocks_announced: AtomicU64,
    /// Blocks asked of announcers (GetBlock).
    pub block_fetches: AtomicU64,
    /// Fetched blocks that arrived (GetBlock answers).
    pub blocks_fetched: AtomicU64,
    /// GetBlock answers served to peers.
    pub blocks_served: AtomicU64,
    /// Relay messages dropped because a peer's queue was full.
    pub relay_dropped: AtomicU64,
    /// Block headers peers announced to us.
    pub announcements_received: AtomicU64,
}

/// A snapshot of [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    pub blocks_received: u64,
    pub duplicates_received: u64,
    pub blocks_stored: u64,
    pub invalid_received: u64,
    pub gossip_sent: u64,
    pub synced_blocks: u64,
    pub bootstrap_registrations: u64,
    pub bootstrap_failures: u64,
    pub syncs_refused_banned: u64,
    pub syncs_failed: u64,
    pub tx_announced: u64,
    pub tx_bodies_received: u64,
    pub tx_bodies_sent: u64,
    pub vote_messages_sent: u64,
    pub vote_messages_received: u64,
    pub blocks_pushed: u64,
    pub blocks_announced: u64,
    pub block_fetches: u64,
    pub blocks_fetched: u64,
    pub blocks_served: u64,
    pub relay_dropped: u64,
    pub announcements_received: u64,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            blocks_received: l(&self.blocks_received),
            duplicates_received: l(&self.duplicates_received),
            blocks_stored: l(&self.blocks_stored),
            invalid_received: l(&self.invalid_received),
            gossip_sent: l(&self.gossip_sent),
            synced_blocks: l(&self.synced_blocks),
            bootstrap_registrations: l(&self.bootstrap_registrations),
            bootstrap_failures: l(&self.bootstrap_failures),
            syncs_refused_banned: l(&self.syncs_refused_banned),
            syncs_failed: l(&self.syncs_failed),
            tx_announced: l(&self.tx_announced),
            tx_bodies_received: l(&self.tx_bodies_received),
            tx_bodies_sent: l(&self.tx_bodies_sent),
            vote_messages_sent: l(&self.vote_messages_sent),
            vote_messages_received: l(&self.vote_messages_received),
            announcements_received: l(&self.announcements_received),
            relay_dropped: l(&self.relay_dropped),
            blocks_served: l(&self.blocks_served),
            blocks_fetched: l(&self.blocks_fetched),
            block_fetches: l(&self.block_fetches),
            blocks_announced: l(&self.blocks_announced),
            blocks_pushed: l(&self.blocks_pushed),
        }
    }
}
