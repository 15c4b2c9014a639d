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
    /// Encoded bytes of blocks pushed.
    pub bytes_sent_push: AtomicU64,
    /// Encoded bytes of announcements sent.
    pub bytes_sent_announce: AtomicU64,
    /// Encoded bytes of GetBlock answers served.
    pub bytes_sent_served: AtomicU64,
    /// Encoded bytes of pushed blocks received.
    pub bytes_received_push: AtomicU64,
    /// Encoded bytes of announcements received.
    pub bytes_received_announce: AtomicU64,
    /// Encoded bytes of fetched blocks received.
    pub bytes_received_fetched: AtomicU64,
    /// Reorganisations of the main chain.
    pub reorgs: AtomicU64,
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
    pub bytes_sent_push: u64,
    pub bytes_sent_announce: u64,
    pub bytes_sent_served: u64,
    pub bytes_received_push: u64,
    pub bytes_received_announce: u64,
    pub bytes_received_fetched: u64,
    pub reorgs: u64,
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
            bytes_sent_push: l(&self.bytes_sent_push),
            bytes_sent_announce: l(&self.bytes_sent_announce),
            bytes_sent_served: l(&self.bytes_sent_served),
            bytes_received_push: l(&self.bytes_received_push),
            bytes_received_announce: l(&self.bytes_received_announce),
            bytes_received_fetched: l(&self.bytes_received_fetched),
            reorgs: l(&self.reorgs),
            relay_dropped: l(&self.relay_dropped),
            blocks_served: l(&self.blocks_served),
            blocks_fetched: l(&self.blocks_fetched),
            block_fetches: l(&self.block_fetches),
            blocks_announced: l(&self.blocks_announced),
            blocks_pushed: l(&self.blocks_pushed),
        }
    }
}

/// Distributions observed as they happen (the counters above are read at
/// scrape time instead).
#[derive(Debug, Clone)]
pub struct Observed {
    /// Seconds from a block's timestamp to its arrival here (validated), for
    /// blocks from peers.
    pub propagation_delay: prometheus_client::metrics::histogram::Histogram,
    /// Blocks abandoned per reorganisation.
    pub reorg_depth: prometheus_client::metrics::histogram::Histogram,
    /// Bytes of every RPC this node served, by direction and method.
    pub rpc_bytes: prometheus_client::metrics::family::Family<
        p2p_proto::rpc_bytes::Labels,
        prometheus_client::metrics::counter::Counter,
    >,
}

impl Default for Observed {
    fn default() -> Self {
        use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
        Observed {
            propagation_delay: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            reorg_depth: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            rpc_bytes: Default::default(),
        }
    }
}

/// One registry per node: a collector reading the node's counters, peer
/// table, chain and mempool at scrape time, plus the histograms.
pub fn registry(node: crate::NodeHandle) -> prometheus_client::registry::Registry {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(NodeCollector { node }));
    registry
}

#[derive(Debug)]
struct NodeCollector {
    node: crate::NodeHandle,
}

impl prometheus_client::collector::Collector for NodeCollector {
    fn encode(&self, mut enc: prometheus_client::encoding::DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::MetricType;
        let node = &self.node;
        let s = node.stats();
        let counter = |enc: &mut prometheus_client::encoding::DescriptorEncoder,
                       name: &str,
                       help: &str,
                       rows: &[(&[(&str, &str)], u64)]|
         -> Result<(), std::fmt::Error> {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (labels, v) in rows {
                let no_exemplar: Option<&prometheus_client::metrics::exemplar::Exemplar<Vec<(String, String)>, u64>> =
                    None;
                if labels.is_empty() {
                    m.encode_counter(v, no_exemplar)?;
                } else {
                    m.encode_family(labels)?.encode_counter(v, no_exemplar)?;
                }
            }
            Ok(())
        };
        let gauge = |enc: &mut prometheus_client::encoding::DescriptorEncoder,
                     name: &str,
                     help: &str,
                     rows: &[(&[(&str, &str)], i64)]|
         -> Result<(), std::fmt::Error> {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (labels, v) in rows {
                if labels.is_empty() {
                    m.encode_gauge(v)?;
                } else {
                    m.encode_family(labels)?.encode_gauge(v)?;
                }
            }
            Ok(())
        };
        // Peers by state and direction.
        let census = node.peers().census();
        let rows: Vec<([(&str, &str); 2], i64)> =
            census.iter().map(|((state, dir), n)| ([("state", *state), ("direction", *dir)], *n as i64)).collect();
        let rows: Vec<(&[(&str, &str)], i64)> = rows.iter().map(|(l, n)| (&l[..], *n)).collect();
        gauge(&mut enc, "p2p_node_peers", "Peers in the table by state and direction.", &rows)?;
        gauge(&mut enc, "p2p_node_bans", "Peers and node ids banned now.", &[(&[], node.peers().ban_count() as i64)])?;
        counter(
            &mut enc,
            "p2p_node_blocks_received",
            "Full blocks received, by how they came (a peer's push, our fetch, a sync download).",
            &[
                (&[("via", "push")], s.blocks_received),
                (&[("via", "fetch")], s.blocks_fetched),
                (&[("via", "sync")], s.synced_blocks),
            ],
        )?;
        counter(&mut enc, "p2p_node_blocks_stored", "Blocks newly stored.", &[(&[], s.blocks_stored)])?;
        counter(
            &mut enc,
            "p2p_node_blocks_duplicate",
            "Full blocks received that were already here.",
            &[(&[], s.duplicates_received)],
        )?;
        counter(&mut enc, "p2p_node_blocks_invalid", "Blocks refused as invalid.", &[(&[], s.invalid_received)])?;
        counter(
            &mut enc,
            "p2p_node_blocks_relayed",
            "Blocks relayed to peers: pushed in full or announced by header.",
            &[(&[("kind", "push")], s.blocks_pushed), (&[("kind", "announce")], s.blocks_announced)],
        )?;
        counter(
            &mut enc,
            "p2p_node_block_announcements_received",
            "Block headers peers announced to us.",
            &[(&[], s.announcements_received)],
        )?;
        counter(
            &mut enc,
            "p2p_node_block_fetches",
            "Blocks asked of announcers (GetBlock).",
            &[(&[], s.block_fetches)],
        )?;
        counter(&mut enc, "p2p_node_blocks_served", "GetBlock answers served.", &[(&[], s.blocks_served)])?;
        counter(
            &mut enc,
            "p2p_node_relay_dropped",
            "Relay messages dropped because a peer's queue was full.",
            &[(&[], s.relay_dropped)],
        )?;
        counter(
            &mut enc,
            "p2p_node_relay_bytes",
            "Encoded bytes of block relay messages this node sent (as a client) and received (as a server), by message.",
            &[
                (&[("direction", "sent"), ("message", "send_block")], s.bytes_sent_push),
                (&[("direction", "sent"), ("message", "announce_blocks")], s.bytes_sent_announce),
                (&[("direction", "sent"), ("message", "get_block")], s.bytes_sent_served),
                (&[("direction", "received"), ("message", "send_block")], s.bytes_received_push),
                (&[("direction", "received"), ("message", "announce_blocks")], s.bytes_received_announce),
                (&[("direction", "received"), ("message", "get_block")], s.bytes_received_fetched),
            ],
        )?;
        counter(&mut enc, "p2p_node_syncs_failed", "Syncs that ended in an error.", &[(&[], s.syncs_failed)])?;
        counter(&mut enc, "p2p_node_reorgs", "Reorganisations of the main chain.", &[(&[], s.reorgs)])?;
        counter(
            &mut enc,
            "p2p_node_transactions",
            "Transaction gossip: ids announced to us, bodies received and sent.",
            &[
                (&[("event", "announced")], s.tx_announced),
                (&[("event", "body_received")], s.tx_bodies_received),
                (&[("event", "body_sent")], s.tx_bodies_sent),
            ],
        )?;
        counter(
            &mut enc,
            "p2p_node_vote_messages",
            "Finality vote messages, by direction.",
            &[
                (&[("direction", "sent")], s.vote_messages_sent),
                (&[("direction", "received")], s.vote_messages_received),
            ],
        )?;
        let reader = node.chain().reader();
        if let Ok(tip) = reader.tip() {
            gauge(&mut enc, "p2p_node_tip_height", "Height of the main chain's tip.", &[(&[], tip.height as i64)])?;
            // Sync progress: where the peers are against where we are.
            let best = node.peers().best_claimed_height();
            gauge(
                &mut enc,
                "p2p_node_peers_best_height",
                "The highest tip height an active peer claims (sync progress: compare with p2p_node_tip_height).",
                &[(&[], best as i64)],
            )?;
            gauge(
                &mut enc,
                "p2p_node_blocks_behind",
                "Blocks between our tip and the highest tip an active peer claims (0 when level or ahead).",
                &[(&[], best.saturating_sub(tip.height) as i64)],
            )?;
        }
        if let Ok(f) = reader.finalized() {
            gauge(
                &mut enc,
                "p2p_node_finalized_height",
                "Height of the latest final checkpoint.",
                &[(&[], f.height as i64)],
            )?;
        }
        let pool = node.mempool();
        gauge(&mut enc, "p2p_node_mempool_transactions", "Transactions in the mempool.", &[(&[], pool.len() as i64)])?;
        gauge(
            &mut enc,
            "p2p_node_mempool_bytes",
            "Bytes of transactions in the mempool.",
            &[(&[], pool.bytes() as i64)],
        )?;
        let o = node.observed();
        let m = enc.encode_descriptor(
            "p2p_node_block_propagation_delay_seconds",
            "From a block's timestamp to its validation here, for blocks from peers.",
            None,
            MetricType::Histogram,
        )?;
        o.propagation_delay.encode(m)?;
        let m = enc.encode_descriptor(
            "p2p_node_reorg_depth_blocks",
            "Blocks abandoned per reorganisation.",
            None,
            MetricType::Histogram,
        )?;
        o.reorg_depth.encode(m)?;
        let m = enc.encode_descriptor(
            "p2p_node_rpc_bytes",
            "Bytes of the RPCs this node served, on the wire: request bodies received and response bodies sent, by gRPC method.",
            None,
            MetricType::Counter,
        )?;
        o.rpc_bytes.encode(m)?;
        Ok(())
    }
}
