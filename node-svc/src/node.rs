//! The node: chain, peers, and the tasks that keep them in step with the
//! network (heartbeats, gossip, sync, bootstrap membership).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use futures::StreamExt;
use p2p_proto::node::node_client::NodeClient;
use p2p_proto::node::{
    BlockOutcome, BroadcastBlockchainResponse, GetBlocksRequest, PingRequest, SendBlockRequest, Sender,
};
use p2p_proto::unix_ms_now;
use tokio::sync::Mutex as AsyncMutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Channel;

use crate::chain::{self, Accepted, Block, Outcome, Tip, block::Header, pow};
use crate::chain_handle::ChainHandle;
use crate::config::NodeConfig;
use crate::error::Error;
use crate::peer_cache::PeerCache;
use crate::peers::{INVALID_BLOCK_PENALTY, PeerLimits, PeerTable, PeerTip};

/// Counters for operators and tests.
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
}

/// Shared state of a running node. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: NodeConfig,
    node_id: String,
    key: SigningKey,
    chain: ChainHandle,
    peers: PeerTable,
    mining: AsyncMutex<()>,
    syncing: AsyncMutex<()>,
    stats: Stats,
    /// Checks that a request's claimed sender is where it came from.
    senders: crate::attribution::SenderCheck,
    /// Known-good peers on disk.
    peer_cache: Arc<PeerCache>,
    shutdown: CancellationToken,
    /// Background work (gossip, sync) that shutdown waits for.
    tasks: TaskTracker,
}

/// What became of a block handed to the node.
#[derive(Debug, Clone)]
pub struct Handled {
    pub outcome: BlockOutcome,
    pub tip: Tip,
}

/// Mining result.
#[derive(Debug, Clone)]
pub struct Mined {
    pub block: Block,
    pub outcome: BlockOutcome,
    pub attempts: u64,
    pub elapsed: Duration,
}

pub(crate) fn outcome_to_proto(o: Outcome) -> BlockOutcome {
    match o {
        Outcome::Appended => BlockOutcome::Appended,
        Outcome::Duplicate => BlockOutcome::Duplicate,
        Outcome::Orphan => BlockOutcome::Orphan,
        Outcome::SideBranch => BlockOutcome::SideBranch,
        Outcome::Reorg { .. } => BlockOutcome::Reorg,
    }
}

pub fn work_bytes(work: u128) -> Vec<u8> {
    work.to_be_bytes().to_vec()
}

pub fn work_from_bytes(bytes: &[u8]) -> u128 {
    <[u8; 16]>::try_from(bytes).map(u128::from_be_bytes).unwrap_or(0)
}

impl Node {
    pub(crate) fn new(
        config: NodeConfig,
        key: SigningKey,
        chain: ChainHandle,
        peer_cache: Arc<PeerCache>,
        shutdown: CancellationToken,
    ) -> Self {
        let node_id = p2p_proto::signing::node_id(&key.verifying_key().to_bytes());
        let advertise =
            p2p_proto::address::canonicalize(&config.advertise).unwrap_or_else(|_| config.advertise.clone());
        let limits = PeerLimits {
            max_peers: config.max_peers,
            max_inbound: config.max_inbound,
            target_outbound: config.target_outbound,
            max_failures: config.max_failures,
            base_backoff: config.ping_interval,
        };
        let peers = PeerTable::new(advertise, node_id.clone(), limits);
        Node {
            inner: Arc::new(Inner {
                config,
                node_id,
                key,
                chain,
                peers,
                mining: AsyncMutex::new(()),
                syncing: AsyncMutex::new(()),
                stats: Stats::default(),
                senders: Default::default(),
                peer_cache,
                shutdown,
                tasks: TaskTracker::new(),
            }),
        }
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
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }
    pub(crate) fn raw_stats(&self) -> &Stats {
        &self.inner.stats
    }
    pub(crate) fn tasks(&self) -> &TaskTracker {
        &self.inner.tasks
    }

    pub fn stats(&self) -> StatsSnapshot {
        let s = &self.inner.stats;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            blocks_received: l(&s.blocks_received),
            duplicates_received: l(&s.duplicates_received),
            blocks_stored: l(&s.blocks_stored),
            invalid_received: l(&s.invalid_received),
            gossip_sent: l(&s.gossip_sent),
            synced_blocks: l(&s.synced_blocks),
            bootstrap_registrations: l(&s.bootstrap_registrations),
            bootstrap_failures: l(&s.bootstrap_failures),
        }
    }

    fn sender(&self) -> Sender {
        Sender { node_id: self.inner.node_id.clone(), address: self.inner.config.advertise.clone() }
    }

    /// Offers blocks to the chain and counts what was stored. With
    /// [`Relay::To`], the newest block that extended the main chain is then
    /// gossiped (peers missing its ancestors fetch them as orphans).
    async fn offer(
        &self,
        blocks: Vec<Block>,
        relay: Relay<'_>,
    ) -> Result<Vec<Result<Accepted, chain::BlockError>>, Error> {
        let verdicts = self.inner.chain.accept(blocks).await?;
        let mut to_gossip = Vec::new();
        for v in verdicts.iter().flatten() {
            match v.outcome {
                Outcome::Appended | Outcome::Reorg { .. } => {
                    self.inner.stats.blocks_stored.fetch_add(1, Ordering::Relaxed);
                    to_gossip.push(v.hash);
                }
                Outcome::SideBranch => {
                    self.inner.stats.blocks_stored.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Duplicate | Outcome::Orphan => {}
            }
        }
        if let (Relay::To { except }, Some(last)) = (relay, to_gossip.last().copied()) {
            let node = self.clone();
            let except = except.map(str::to_string);
            self.inner.tasks.spawn(async move {
                if let Ok(Some(b)) = node.inner.chain.read(move |r| r.block(&last)).await {
                    node.gossip(b, except.as_deref()).await;
                }
            });
        }
        Ok(verdicts)
    }

    /// The claimed sender, if the connection it came over vouches for it
    /// (see [`crate::attribution`]); otherwise the request is anonymous.
    pub async fn verified_sender<'a>(
        &self,
        claimed: Option<&'a Sender>,
        remote: Option<SocketAddr>,
    ) -> Option<&'a Sender> {
        let sender = claimed.filter(|s| !s.address.is_empty())?;
        if self.inner.senders.vouches(&sender.address, remote).await {
            Some(sender)
        } else {
            tracing::debug!(claimed = %sender.address, ?remote, "sender claim does not match the connection; treated as anonymous");
            None
        }
    }

    /// Handles one gossiped block; `from` is the sender as already verified
    /// by [`Node::verified_sender`] (None: anonymous).
    pub async fn receive_block(&self, block: p2p_proto::node::Block, from: Option<&Sender>) -> Result<Handled, Error> {
        let now = unix_ms_now();
        self.inner.stats.blocks_received.fetch_add(1, Ordering::Relaxed);
        let from_addr = from.map(|s| s.address.as_str()).filter(|a| !a.is_empty());
        if let Some(sender) = from.filter(|s| !s.address.is_empty()) {
            self.inner.peers.learn(&sender.address, p2p_proto::node::PeerSource::Inbound, Some(&sender.node_id));
            if self.inner.peers.is_banned(&canonical(&sender.address), now) {
                return Err(Error::PermissionDenied(format!(
                    "{} is banned for sending invalid blocks; try again later",
                    sender.address
                )));
            }
        }
        let block = match chain::from_proto(block) {
            Ok(b) => b,
            Err(e) => {
                self.misbehaved(from_addr, &e.to_string());
                return Err(e.into());
            }
        };
        let from_canonical = from_addr.map(canonical);
        let verdicts = self.offer(vec![block], Relay::To { except: from_canonical.as_deref() }).await?;
        let tip = self.inner.chain.tip().await?;
        match verdicts.into_iter().next() {
            Some(Ok(a)) => {
                match a.outcome {
                    Outcome::Duplicate => {
                        self.inner.stats.duplicates_received.fetch_add(1, Ordering::Relaxed);
                    }
                    Outcome::Orphan => {
                        if let Some(addr) = from_addr {
                            tracing::info!(peer = %addr, hash = %hex::encode(a.hash), "orphan block; fetching its ancestors");
                            self.request_sync(&canonical(addr));
                        }
                    }
                    _ => {}
                }
                Ok(Handled { outcome: outcome_to_proto(a.outcome), tip })
            }
            Some(Err(e)) => {
                self.misbehaved(from_addr, &e.to_string());
                Err(e.into())
            }
            None => Err(Error::Internal("no verdict".into())),
        }
    }

    fn misbehaved(&self, from: Option<&str>, why: &str) {
        self.inner.stats.invalid_received.fetch_add(1, Ordering::Relaxed);
        if let Some(addr) = from {
            self.inner.peers.penalize(&canonical(addr), INVALID_BLOCK_PENALTY, why, unix_ms_now());
        }
    }

    /// Pushes `block` to up to `gossip_fanout` random usable peers other than
    /// `except` (the peer it came from).
    pub async fn gossip(&self, block: Block, except: Option<&str>) {
        let targets = self.inner.peers.gossip_targets(except, self.inner.config.gossip_fanout);
        if targets.is_empty() {
            return;
        }
        let req = SendBlockRequest { block: Some(chain::to_proto(&block)), sender: Some(self.sender()) };
        let timeout = self.inner.config.gossip_timeout;
        let sends = targets.into_iter().map(|(addr, channel)| {
            let req = req.clone();
            let node = self.clone();
            async move {
                node.inner.stats.gossip_sent.fetch_add(1, Ordering::Relaxed);
                let mut client = NodeClient::new(channel);
                match tokio::time::timeout(timeout, client.send_block(req)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(status)) => {
                        tracing::debug!(peer = %addr, code = ?status.code(), msg = status.message(), "peer refused gossiped block")
                    }
                    Err(_) => {
                        tracing::debug!(peer = %addr, "gossip timed out");
                        node.inner.peers.failed(&addr, unix_ms_now());
                    }
                }
            }
        });
        futures::future::join_all(sends).await;
        tracing::debug!(hash = %hex::encode(block.hash), height = block.index, "block gossiped");
    }

    /// Starts a sync from `address` in the background unless one is running.
    pub fn request_sync(&self, address: &str) {
        let Some(channel) = self.inner.peers.channel(address) else { return };
        let node = self.clone();
        let address = address.to_string();
        self.inner.tasks.spawn(async move {
            if let Err(e) = node.sync_from(&address, channel).await {
                tracing::warn!(peer = %address, error = %e, "sync failed");
            }
        });
    }

    /// Downloads blocks from `address` until we have its chain. The first
    /// request carries a block locator to find the fork point; after that
    /// requests go by height and are pipelined: batch k+1 is in flight while
    /// batch k is validated and committed. One sync runs at a time; a second
    /// request while one runs is dropped (heartbeats retrigger it).
    pub async fn sync_from(&self, address: &str, channel: Channel) -> Result<u64, Error> {
        let Ok(_guard) = self.inner.syncing.try_lock() else { return Ok(0) };
        let client = NodeClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
        let batch = self.inner.config.sync_batch;
        let started = Instant::now();
        let mut total = 0u64;
        // Whether this sync itself moved the tip (not gossip arriving meanwhile).
        let mut extended = false;
        let before = self.inner.chain.tip().await?;
        let locator = self.inner.chain.read(|r| r.locator()).await?;
        let first =
            GetBlocksRequest { from_height: 0, locator: locator.iter().map(|h| h.to_vec()).collect(), limit: batch };
        let mut pending = tokio::spawn(fetch_blocks(client.clone(), first, address.to_string()));
        loop {
            let blocks = pending.await.map_err(|e| Error::Internal(e.to_string()))?;
            let blocks = match blocks {
                Ok(b) => b,
                Err(e @ Error::InvalidBlock(_)) => {
                    self.misbehaved(Some(address), &e.to_string());
                    return Err(e);
                }
                Err(e) => {
                    self.inner.peers.failed(address, unix_ms_now());
                    return Err(e);
                }
            };
            let received = blocks.len() as u64;
            if received == 0 || self.inner.shutdown.is_cancelled() {
                break;
            }
            let full = received >= u64::from(batch);
            let next_height = blocks.last().map(|b| b.index + 1).unwrap_or(0);
            // Ask for the next batch before committing this one.
            let next = GetBlocksRequest { from_height: next_height, locator: vec![], limit: batch };
            pending = tokio::spawn(fetch_blocks(client.clone(), next, address.to_string()));
            self.inner.stats.synced_blocks.fetch_add(received, Ordering::Relaxed);
            let verdicts = self.offer(blocks, Relay::Hold).await?;
            let mut progressed = false;
            let mut disconnected = false;
            for v in &verdicts {
                match v {
                    Ok(a) if matches!(a.outcome, Outcome::Appended | Outcome::Reorg { .. } | Outcome::SideBranch) => {
                        progressed = true;
                        extended |= a.outcome != Outcome::SideBranch;
                    }
                    Ok(a) if a.outcome == Outcome::Orphan => disconnected = true,
                    Ok(_) => {}
                    Err(e) => {
                        self.misbehaved(Some(address), &e.to_string());
                        pending.abort();
                        return Err(Error::InvalidBlock(e.clone()));
                    }
                }
            }
            total += received;
            if disconnected {
                // The peer's chain changed under us: find the fork point again.
                pending.abort();
                let locator = self.inner.chain.read(|r| r.locator()).await?;
                let req = GetBlocksRequest {
                    from_height: 0,
                    locator: locator.iter().map(|h| h.to_vec()).collect(),
                    limit: batch,
                };
                pending = tokio::spawn(fetch_blocks(client.clone(), req, address.to_string()));
                continue;
            }
            if !full || !progressed {
                pending.abort();
                break;
            }
        }
        let after = self.inner.chain.tip().await?;
        if extended && after.hash != before.hash {
            tracing::info!(
                peer = %address, blocks = total, from_height = before.height, to_height = after.height,
                secs = started.elapsed().as_secs_f64(), "synced"
            );
            // Tell peers about our new tip once, rather than every block.
            if let Ok(Some(b)) = self.inner.chain.read(move |r| r.block(&after.hash)).await {
                self.gossip(b, Some(address)).await;
            }
        }
        Ok(total)
    }

    /// Mines a block carrying `data` on the current tip (off the async
    /// workers), stores and gossips it. If another block takes the tip while
    /// mining, it mines again on the new tip (up to 3 times).
    pub async fn mine(&self, data: Vec<u8>) -> Result<Mined, Error> {
        let max = self.inner.config.network.max_data_bytes;
        if data.len() > max {
            return Err(Error::invalid("data", format!("is {} bytes; a block carries at most {max}", data.len())));
        }
        let _guard = self.inner.mining.lock().await;
        let started = Instant::now();
        let mut attempts = 0;
        for _ in 0..3 {
            let tip = self.inner.chain.tip().await?;
            let header = Header {
                index: tip.height + 1,
                timestamp_ms: unix_ms_now().max(tip.timestamp_ms),
                prev_hash: tip.hash,
                data_digest: <sha2::Sha256 as sha2::Digest>::digest(&data).into(),
                difficulty_bits: self.inner.config.network.difficulty_bits,
            };
            let cancel = Arc::new(AtomicBool::new(false));
            let stop = cancel.clone();
            let shutdown = self.inner.shutdown.clone();
            let watcher = tokio::spawn(async move {
                shutdown.cancelled().await;
                stop.store(true, Ordering::Relaxed);
            });
            let h = header.clone();
            let found = tokio::task::spawn_blocking(move || pow::mine(&h, rand::random::<u64>() >> 1, &cancel))
                .await
                .map_err(|e| Error::Internal(e.to_string()))?;
            watcher.abort();
            let found = found.ok_or(Error::ShuttingDown)?;
            attempts += found.attempts;
            let block = Block {
                index: header.index,
                timestamp_ms: header.timestamp_ms,
                data: data.clone(),
                prev_hash: header.prev_hash,
                nonce: found.nonce,
                difficulty_bits: header.difficulty_bits,
                hash: found.hash,
            };
            let verdict = self.offer(vec![block.clone()], Relay::To { except: None }).await?.into_iter().next();
            match verdict {
                Some(Ok(a)) if a.outcome == Outcome::SideBranch => {
                    tracing::info!(height = block.index, "tip moved while mining; mining again on the new tip");
                    continue;
                }
                Some(Ok(a)) => {
                    tracing::info!(height = block.index, hash = %hex::encode(block.hash), attempts, "mined block");
                    return Ok(Mined {
                        block,
                        outcome: outcome_to_proto(a.outcome),
                        attempts,
                        elapsed: started.elapsed(),
                    });
                }
                Some(Err(e)) => return Err(Error::Internal(format!("own block rejected: {e}"))),
                None => return Err(Error::Internal("no verdict".into())),
            }
        }
        Err(Error::FailedPrecondition("the tip kept moving while mining; try again".into()))
    }

    /// The book's BroadcastBlockchain done safely: blocks arrive one message
    /// at a time in height order, each is validated against its parent, and
    /// the chain becomes ours only if it ends up with more work.
    pub async fn receive_chain<S>(&self, mut stream: S) -> Result<BroadcastBlockchainResponse, Error>
    where
        S: futures::Stream<Item = Result<p2p_proto::node::Block, tonic::Status>> + Unpin,
    {
        const CHUNK: usize = 500;
        let before = self.inner.chain.tip().await?;
        let (mut received, mut stored) = (0u64, 0u64);
        let mut last: Option<chain::Hash> = None;
        let mut chunk = Vec::with_capacity(CHUNK);
        loop {
            let item = stream.next().await;
            let done = item.is_none();
            if let Some(item) = item {
                let pb =
                    item.map_err(|s| Error::FailedPrecondition(format!("the block stream failed: {}", s.message())))?;
                let b = chain::from_proto(pb)?;
                if let Some(prev) = last.filter(|p| *p != b.prev_hash) {
                    return Err(Error::invalid(
                        "block",
                        format!(
                            "block #{received} of the stream does not follow the one before it (expected prev_hash {})",
                            hex::encode(prev)
                        ),
                    ));
                }
                last = Some(b.hash);
                received += 1;
                chunk.push(b);
            }
            if chunk.len() >= CHUNK || (done && !chunk.is_empty()) {
                let first_in_stream = received as usize == chunk.len();
                let offset = received - chunk.len() as u64;
                let verdicts = self.offer(std::mem::take(&mut chunk), Relay::Hold).await?;
                for (i, v) in verdicts.iter().enumerate() {
                    match v {
                        Ok(a) if a.outcome == Outcome::Orphan && first_in_stream && i == 0 => {
                            return Err(Error::FailedPrecondition(
                                "the stream's first block has a parent this node does not have; start at genesis or at a \
                                 block we share (GetBlocks with a locator finds it)"
                                    .into(),
                            ));
                        }
                        Ok(a)
                            if matches!(a.outcome, Outcome::Appended | Outcome::SideBranch | Outcome::Reorg { .. }) =>
                        {
                            stored += 1
                        }
                        Ok(_) => {}
                        Err(e) => {
                            return Err(Error::invalid(
                                "block",
                                format!("block #{} of the stream: {e}", offset + i as u64),
                            ));
                        }
                    }
                }
            }
            if done {
                break;
            }
        }
        if received == 0 {
            return Err(Error::invalid("stream", "carried no blocks"));
        }
        let after = self.inner.chain.tip().await?;
        let adopted = Some(after.hash) == last && after.hash != before.hash;
        if adopted {
            tracing::info!(height = after.height, received, stored, "adopted a broadcast chain with more work");
            if let Ok(Some(b)) = self.inner.chain.read(move |r| r.block(&after.hash)).await {
                self.gossip(b, None).await;
            }
        }
        let message = if adopted {
            format!("adopted: the offered chain has more work; new tip at height {}", after.height)
        } else {
            format!("kept our chain (height {}): the offered one does not have more work", after.height)
        };
        Ok(BroadcastBlockchainResponse {
            adopted,
            received,
            stored,
            height: after.height,
            tip_hash: after.hash.to_vec(),
            message,
        })
    }

    /// Pings every peer that is due; marks replies and misses; then syncs
    /// from the peer with the most work if it has more than we do.
    pub async fn heartbeat_round(&self) {
        let now = unix_ms_now();
        let Ok(tip) = self.inner.chain.tip().await else { return };
        let req = PingRequest {
            sender: Some(self.sender()),
            height: tip.height,
            tip_hash: tip.hash.to_vec(),
            cumulative_work: work_bytes(tip.work),
            genesis_hash: self.inner.chain.genesis_hash().to_vec(),
        };
        let timeout = self.inner.config.ping_timeout;
        let genesis = self.inner.chain.genesis_hash();
        let pings = self.inner.peers.due_for_ping(now).into_iter().map(|(addr, channel)| {
            let req = req.clone();
            let node = self.clone();
            async move {
                let mut client = NodeClient::new(channel);
                match tokio::time::timeout(timeout, client.ping(req)).await {
                    Ok(Ok(resp)) => {
                        let r = resp.into_inner();
                        if r.genesis_hash != genesis {
                            node.inner.peers.penalize(
                                &addr,
                                crate::peers::BAN_SCORE,
                                "peer is on another network",
                                unix_ms_now(),
                            );
                            return;
                        }
                        let peer_tip = PeerTip {
                            node_id: r.node_id,
                            height: r.height,
                            tip: r.tip_hash,
                            work: work_from_bytes(&r.cumulative_work),
                        };
                        node.inner.peers.alive(&addr, peer_tip, unix_ms_now());
                    }
                    Ok(Err(status)) => {
                        tracing::debug!(peer = %addr, code = ?status.code(), "ping failed");
                        node.inner.peers.failed(&addr, unix_ms_now());
                    }
                    Err(_) => {
                        tracing::debug!(peer = %addr, "ping timed out");
                        node.inner.peers.failed(&addr, unix_ms_now());
                    }
                }
            }
        });
        futures::future::join_all(pings).await;
        if let Some((addr, _)) = self.inner.peers.best_ahead(tip.work) {
            self.request_sync(&addr);
        }
    }

    /// Asks one random active peer for the peers it knows (CometBFT's PEX):
    /// discovery that does not depend on the bootstrap.
    pub async fn exchange_peers(&self) {
        let Some((addr, channel)) = self.inner.peers.random_active() else { return };
        let req = p2p_proto::node::GetPeersRequest { limit: 32 };
        let mut client = NodeClient::new(channel);
        match tokio::time::timeout(self.inner.config.ping_timeout, client.get_peers(req)).await {
            Ok(Ok(resp)) => {
                let mut learned = 0;
                for p in resp.into_inner().peers {
                    // Relay only what the other side has itself reached.
                    if p.state() == p2p_proto::node::PeerState::Active
                        && self.inner.peers.learn(
                            &p.address,
                            p2p_proto::node::PeerSource::PeerExchange,
                            Some(&p.node_id),
                        )
                    {
                        learned += 1;
                    }
                }
                if learned > 0 {
                    tracing::info!(peer = %addr, learned, "peer exchange");
                }
            }
            Ok(Err(status)) => tracing::debug!(peer = %addr, code = ?status.code(), "peer exchange refused"),
            Err(_) => tracing::debug!(peer = %addr, "peer exchange timed out"),
        }
    }

    /// Writes the known-good peers to disk when the set changed.
    async fn save_peer_cache(&self, last: &mut Vec<String>) {
        let good = self.inner.peers.good_peers();
        let mut addresses: Vec<String> = good.iter().map(|p| p.address.clone()).collect();
        addresses.sort();
        if addresses == *last {
            return;
        }
        let cache = self.inner.peer_cache.clone();
        let max = self.inner.config.max_peers;
        match tokio::task::spawn_blocking(move || cache.save(&good, unix_ms_now(), max)).await {
            Ok(Ok(())) => *last = addresses,
            Ok(Err(e)) => tracing::warn!(error = %e, "saving the peer cache failed"),
            Err(e) => tracing::warn!(error = %e, "peer cache task failed"),
        }
    }

    /// Heartbeats until shutdown; every few rounds a peer exchange; the
    /// known-good peers are saved whenever they change.
    pub(crate) async fn heartbeat_loop(self) {
        let mut tick = tokio::time::interval(self.inner.config.ping_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut round: u32 = 0;
        let mut saved = Vec::new();
        loop {
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => {
                    // A clean stop keeps the latest good peers for the next start.
                    self.save_peer_cache(&mut saved).await;
                    return;
                }
                _ = tick.tick() => {}
            }
            self.heartbeat_round().await;
            round = round.wrapping_add(1);
            if round.is_multiple_of(self.inner.config.peer_exchange_every.max(1)) {
                self.exchange_peers().await;
            }
            self.save_peer_cache(&mut saved).await;
        }
    }
}

/// One GetBlocks call, collected; invalid encodings are [`Error::InvalidBlock`].
async fn fetch_blocks(
    mut client: NodeClient<Channel>,
    req: GetBlocksRequest,
    address: String,
) -> Result<Vec<Block>, Error> {
    let unavailable =
        |s: tonic::Status| Error::FailedPrecondition(format!("GetBlocks from {address}: {}", s.message()));
    let mut stream = client.get_blocks(req).await.map_err(unavailable)?.into_inner();
    let mut blocks = Vec::new();
    while let Some(item) = stream.next().await {
        blocks.push(chain::from_proto(item.map_err(unavailable)?)?);
    }
    Ok(blocks)
}

/// Whether newly accepted blocks are forwarded to peers.
#[derive(Debug, Clone, Copy)]
enum Relay<'a> {
    /// Gossip to every usable peer except this one (the sender).
    To { except: Option<&'a str> },
    /// Do not gossip block by block (sync announces only its final tip).
    Hold,
}

fn canonical(address: &str) -> String {
    p2p_proto::address::canonicalize(address).unwrap_or_else(|_| address.to_string())
}
