//! [`NodeHandle`]: the node's identity, configuration and shared parts
//! (chain, peer table, dialer, sync and gossip handles, counters), cheap to
//! clone. Behaviour lives in the modules that add to it: [`crate::import`],
//! [`crate::miner`], [`crate::sync`], [`crate::gossip`], [`crate::heartbeat`],
//! [`crate::pex`] and [`crate::membership`].

use std::sync::{Arc, Mutex};

use ed25519_dalek::SigningKey;
use p2p_proto::clock::Clock;
use p2p_proto::dial::Link;
use p2p_proto::limits::Slots;
use p2p_proto::node::Sender;
use p2p_proto::node::node_client::NodeClient;
use p2p_proto::tls::{ClientTls, ConnInfo, PeerIdentity};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use tokio::sync::{Mutex as AsyncMutex, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::chain::ChainHandle;
use crate::config::NodeConfig;
use crate::gossip::BulkImports;
use crate::mempool::Mempool;
use crate::metrics::{Stats, StatsSnapshot};
use crate::miner::MiningState;
use crate::peers::{Dialer, PeerCache, PeerLimits, PeerTable};
use crate::sync::SyncHandle;

/// Shared state of a running node. Cheap to clone.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: NodeConfig,
    node_id: String,
    key: SigningKey,
    chain: ChainHandle,
    peers: PeerTable,
    dialer: Dialer,
    sync: SyncHandle,
    mempool: Mempool,
    mining_state: MiningState,
    bulk: BulkImports,
    relay: crate::gossip::BlockRelay,
    stats: Stats,
    observed: crate::metrics::Observed,
    /// Known-good peers on disk.
    peer_cache: Arc<PeerCache>,
    rng: Mutex<StdRng>,
    /// One MineBlock at a time; held until its search thread has stopped.
    mining: Arc<AsyncMutex<()>>,
    /// GetBlocks streams being served.
    block_streams: Arc<Slots>,
    /// Bytes all BroadcastBlockchain streams may buffer together.
    inbound_bytes: Arc<Semaphore>,
    /// Transaction bodies asked for and not yet overdue.
    tx_requests: Mutex<crate::txgossip::requests::Requests>,
    validator: bool,
    /// Finality votes already checked, and the checks running.
    vote_intake: crate::finality::VoteIntake,
    shutdown: CancellationToken,
    /// Background work (relays, syncs) that shutdown waits for.
    tasks: TaskTracker,
}

/// The parts a node is built from (see [`crate::server::spawn`]).
#[derive(Debug)]
pub(crate) struct Parts {
    pub config: NodeConfig,
    pub key: SigningKey,
    pub chain: ChainHandle,
    pub peer_cache: Arc<PeerCache>,
    pub sync: SyncHandle,
    pub mempool: Mempool,
    /// How this node dials: TLS with its own certificate, or plaintext.
    pub tls: ClientTls,
    /// Whether this node signs finality checkpoints.
    pub validator: bool,
    pub shutdown: CancellationToken,
}

impl NodeHandle {
    pub(crate) fn new(parts: Parts) -> Self {
        let Parts { config, key, chain, peer_cache, sync, mempool, tls, validator, shutdown } = parts;
        let mining_state = MiningState::new(config.mine);
        let node_id = p2p_proto::signing::node_id(&key.verifying_key().to_bytes());
        let advertise =
            p2p_proto::address::canonicalize(&config.advertise).unwrap_or_else(|_| config.advertise.clone());
        let limits = PeerLimits {
            max_peers: config.max_peers,
            max_inbound: config.max_inbound,
            target_outbound: config.target_outbound,
            max_failures: config.max_failures,
            max_dial_attempts: config.max_dial_attempts,
            base_backoff: config.ping_interval,
        };
        let mut rng = match config.rng_seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        let peers = PeerTable::new(advertise, node_id.clone(), limits, rng.next_u64());
        let block_streams = Slots::new(
            "GetBlocks streams",
            config.max_block_streams,
            config.max_block_streams_per_client,
            config.conn.v6_prefix,
        );
        let inbound_bytes = Arc::new(Semaphore::new(config.inbound_buffer_bytes));
        let relay_config = config.relay;
        NodeHandle {
            inner: Arc::new(Inner {
                config,
                node_id,
                key,
                chain,
                peers,
                dialer: Dialer::new(tls),
                sync,
                mempool,
                mining_state,
                bulk: BulkImports::default(),
                relay: crate::gossip::BlockRelay::new(relay_config),
                observed: crate::metrics::Observed::default(),
                stats: Stats::default(),
                peer_cache,
                rng: Mutex::new(rng),
                mining: Arc::new(AsyncMutex::new(())),
                block_streams,
                tx_requests: Mutex::new(crate::txgossip::requests::Requests::new(crate::txgossip::requests::TRACKED)),
                inbound_bytes,
                validator,
                vote_intake: crate::finality::VoteIntake::default(),
                shutdown,
                tasks: TaskTracker::new(),
            }),
        }
    }

    pub(crate) fn vote_intake(&self) -> &crate::finality::VoteIntake {
        &self.inner.vote_intake
    }

    /// Whether this node signs finality checkpoints.
    pub fn is_validator(&self) -> bool {
        self.inner.validator
    }

    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }
    pub fn key(&self) -> &SigningKey {
        &self.inner.key
    }
    pub fn config(&self) -> &NodeConfig {
        &self.inner.config
    }
    pub fn chain(&self) -> &ChainHandle {
        &self.inner.chain
    }
    pub fn peers(&self) -> &PeerTable {
        &self.inner.peers
    }
    pub fn dialer(&self) -> &Dialer {
        &self.inner.dialer
    }
    pub fn sync(&self) -> &SyncHandle {
        &self.inner.sync
    }
    pub fn mempool(&self) -> &Mempool {
        &self.inner.mempool
    }
    /// Whether the node mines continuously (and what it found).
    pub fn mining(&self) -> &MiningState {
        &self.inner.mining_state
    }
    pub(crate) fn bulk_imports(&self) -> &BulkImports {
        &self.inner.bulk
    }
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }
    pub(crate) fn counters(&self) -> &Stats {
        &self.inner.stats
    }
    pub(crate) fn peer_cache(&self) -> &Arc<PeerCache> {
        &self.inner.peer_cache
    }
    pub(crate) fn tasks(&self) -> &TaskTracker {
        &self.inner.tasks
    }
    pub(crate) fn mining_lock(&self) -> &Arc<AsyncMutex<()>> {
        &self.inner.mining
    }
    /// Histograms for the metrics endpoint.
    pub fn observed(&self) -> &crate::metrics::Observed {
        &self.inner.observed
    }

    /// Block relay state (see [`crate::gossip`]).
    pub fn relay(&self) -> &crate::gossip::BlockRelay {
        &self.inner.relay
    }

    /// The transaction bodies this node has asked for (see [`crate::txgossip::requests`]).
    pub(crate) fn tx_requests(&self) -> std::sync::MutexGuard<'_, crate::txgossip::requests::Requests> {
        self.inner.tx_requests.lock().unwrap_or_else(|p| p.into_inner())
    }
    pub(crate) fn block_streams(&self) -> &Arc<Slots> {
        &self.inner.block_streams
    }
    pub(crate) fn inbound_bytes(&self) -> &Arc<Semaphore> {
        &self.inner.inbound_bytes
    }

    /// Bytes of the BroadcastBlockchain buffer free right now.
    pub fn inbound_buffer_available(&self) -> usize {
        self.inner.inbound_bytes.available_permits()
    }

    /// Whether a MineBlock search is running (its thread has not stopped).
    pub fn is_mining(&self) -> bool {
        self.inner.mining.try_lock().is_err()
    }

    /// What the node has done so far.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// Now, by the node's clock.
    pub fn now_ms(&self) -> u64 {
        self.inner.config.clock.now_unix_ms()
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.config.clock
    }

    /// A random u64 from the node's (possibly seeded) generator.
    pub(crate) fn random_u64(&self) -> u64 {
        self.inner.rng.lock().unwrap_or_else(|p| p.into_inner()).next_u64()
    }

    /// The node a request came from: the identity its TLS handshake
    /// proved, never what the request claims. None for anonymous clients
    /// (no certificate, or plaintext) and for this node itself.
    pub fn caller(&self, info: &ConnInfo) -> Option<PeerIdentity> {
        info.peer.clone().filter(|p| p.node_id != self.inner.node_id)
    }

    /// The link to the peer at `address`: with TLS, its handshake must
    /// prove the node id the peer table expects there.
    pub(crate) fn link(&self, address: &str) -> Option<Link> {
        let expected = if self.dialer().is_tls() { self.peers().node_id_of(address) } else { None };
        self.dialer().peer(address, expected.as_deref())
    }

    /// Whom to hold responsible for what came over our link to `address`:
    /// the node id our handshake proved there, or (plaintext) the address.
    pub(crate) fn culprit_at(&self, address: &str) -> String {
        self.dialer().proven(address).map(|p| p.node_id).unwrap_or_else(|| address.to_string())
    }

    /// A client for a peer's channel: answers larger than a valid block's
    /// message are refused before they are decoded.
    pub(crate) fn peer_client(&self, link: &Link) -> NodeClient<tonic::transport::Channel> {
        let max = self.inner.config.network.max_message_bytes();
        NodeClient::new(link.channel.clone()).max_decoding_message_size(max).max_encoding_message_size(max)
    }

    /// How this node names itself in requests to peers (a hint: peers
    /// believe only the id our certificate proves).
    pub(crate) fn sender(&self) -> Sender {
        Sender { node_id: self.inner.node_id.clone(), address: self.inner.config.advertise.clone() }
    }
}
