//! Node configuration, independent of how it was parsed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use p2p_proto::clock::Clock;

use crate::chain::NetworkParams;

/// Everything a node can be told.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Chain store and identity key live here.
    pub data_dir: PathBuf,
    /// The address other nodes dial to reach this one (host:port).
    pub advertise: String,
    /// Bootstrap endpoints, tried in turn: `[NODE_ID@]host:port`; with an
    /// id, the bootstrap's TLS handshake must prove it (pinning).
    pub bootstrap: Vec<String>,
    /// Peers to keep whatever the bootstrap says: `[NODE_ID@]host:port`;
    /// with an id, the peer's handshake must prove it.
    pub peers: Vec<String>,
    /// The network's consensus parameters.
    pub network: NetworkParams,
    /// Lease asked of the bootstrap; refreshed every third of it.
    pub register_ttl_secs: u32,
    /// How often every peer is pinged.
    pub ping_interval: Duration,
    /// How long a ping may take before it counts as missed.
    pub ping_timeout: Duration,
    /// Missed pings in a row before a peer is marked failing.
    pub max_failures: u32,
    /// Largest GetBlocks answer.
    pub max_blocks_per_request: u32,
    /// Blocks asked for per GetBlocks while syncing.
    pub sync_batch: u32,
    /// Peers this node picks to relay blocks with (its relay degree; peers
    /// that picked it join too, up to twice this). Nodes relay misses learn
    /// of a block from heartbeats and pull it.
    pub gossip_fanout: usize,
    /// Deadline for forwarding a block to one peer.
    pub gossip_timeout: Duration,
    /// Block relay: eager peers at the start, how long an announced block
    /// waits for a push, how long a fetch may take (see [`crate::relay`]).
    pub relay: crate::relay::RelayConfig,
    /// Most peers kept in the table (the address book).
    pub max_peers: usize,
    /// Most peers that reached us first kept at once.
    pub max_inbound: usize,
    /// Peers we dial ourselves, spread over discovery sources.
    pub target_outbound: usize,
    /// Ask one active peer for its peers (peer exchange) every this many heartbeats.
    pub peer_exchange_every: u32,
    /// Peers returned by peer exchange (Node.GetPeers) at most.
    pub max_exchange_peers: u32,
    /// Source of time for timestamps, bans and backoff; tests and a
    /// simulator substitute a manual clock.
    pub clock: Arc<dyn Clock>,
    /// Connection caps, keepalive and idle timeout of the gRPC server.
    pub conn: p2p_proto::conn::ConnLimits,
    /// A peer's or client's stream that delivers nothing for this long is
    /// given up (sync downloads, BroadcastBlockchain uploads, GetBlocks
    /// answers nobody reads).
    pub stream_idle_timeout: Duration,
    /// GetBlocks streams served at once, in total and per client.
    pub max_block_streams: usize,
    pub max_block_streams_per_client: usize,
    /// Bytes of unvalidated-for-the-chain blocks one BroadcastBlockchain
    /// stream may buffer before they are committed.
    pub broadcast_buffer_bytes: usize,
    /// Bytes all BroadcastBlockchain streams together may buffer.
    pub inbound_buffer_bytes: usize,
    /// Bytes asked for per GetBlocks while syncing (and enforced).
    pub sync_batch_bytes: u64,
    /// Side branches ending more than this many blocks below the tip are pruned.
    pub prune_side_depth: u64,
    /// A peer that never answered is forgotten after this many failed tries.
    pub max_dial_attempts: u32,
    /// Seed of the node's random choices (gossip targets, samples, jitter,
    /// mining start nonce); None draws one from the OS.
    pub rng_seed: Option<u64>,
    /// Links without TLS (local experiments only; loudly logged): nothing
    /// is encrypted, and no request can be tied to a node.
    pub plaintext: bool,
    /// The admin API's token; None: the cookie file (see [`crate::admin`]).
    pub admin_token: Option<String>,
    /// Mempool bounds: transactions, bytes, and transactions of one sender.
    pub mempool: crate::mempool::pool::PoolLimits,
    /// Mine continuously from the start (Admin.StartMining / StopMining toggle it).
    pub mine: bool,
    /// Transaction ids one announcement may carry, and transactions one
    /// SendTransactions may carry.
    pub max_tx_batch: usize,
    /// The key this node signs finality checkpoints with (created if
    /// missing); None: its identity key, when that is a validator.
    pub validator_key: Option<PathBuf>,
}

impl NodeConfig {
    pub fn new(data_dir: impl Into<PathBuf>, advertise: impl Into<String>) -> Self {
        NodeConfig {
            data_dir: data_dir.into(),
            advertise: advertise.into(),
            bootstrap: Vec::new(),
            peers: Vec::new(),
            network: NetworkParams::devnet(),
            register_ttl_secs: 60,
            ping_interval: Duration::from_secs(2),
            ping_timeout: Duration::from_secs(2),
            max_failures: 3,
            max_blocks_per_request: 1000,
            sync_batch: 1000,
            gossip_fanout: 8,
            gossip_timeout: Duration::from_secs(5),
            relay: crate::relay::RelayConfig::default(),
            max_peers: 256,
            max_inbound: 32,
            target_outbound: 16,
            peer_exchange_every: 5,
            max_exchange_peers: 100,
            conn: p2p_proto::conn::ConnLimits::default(),
            stream_idle_timeout: Duration::from_secs(10),
            max_block_streams: 64,
            max_block_streams_per_client: 8,
            broadcast_buffer_bytes: 4 * 1024 * 1024,
            inbound_buffer_bytes: 64 * 1024 * 1024,
            sync_batch_bytes: 8 * 1024 * 1024,
            prune_side_depth: 1000,
            max_dial_attempts: 10,
            clock: p2p_proto::clock::system(),
            rng_seed: None,
            plaintext: false,
            admin_token: None,
            mempool: crate::mempool::pool::PoolLimits {
                max_count: 50_000,
                max_bytes: 64 * 1024 * 1024,
                max_per_sender: 256,
            },
            mine: false,
            max_tx_batch: 1024,
            validator_key: None,
        }
    }

    /// Whether `address` is one of the configured peers.
    pub fn is_configured_peer(&self, address: &str) -> bool {
        self.peers
            .iter()
            .filter_map(|p| p2p_proto::dial::Target::parse(p).ok())
            .any(|t| p2p_proto::address::canonicalize(&t.address).is_ok_and(|a| a == address))
    }
}
