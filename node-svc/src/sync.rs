//! Sync: one [`Syncer`] task downloads blocks from a peer that has more
//! work; anything else asks it through a [`SyncHandle`]. One sync runs at a
//! time; requests that arrive while one runs are dropped (heartbeats and
//! orphans ask again if there is still something to fetch).

use std::time::Instant;

use futures::StreamExt;
use p2p_proto::node::GetBlocksRequest;
use p2p_proto::node::node_client::NodeClient;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::chain::{Block, BlockError, Origin, Outcome, validate};
use crate::convert;
use crate::error::Error;
use crate::metrics::Stats;
use crate::node::NodeHandle;

/// Times one sync looks for the fork point again before giving up.
const MAX_RELOCATES: u32 = 3;
/// Score a peer loses when its Ping claimed more work than it then served.
const UNBACKED_CLAIM_PENALTY: i32 = -20;

/// Asks the node's [`Syncer`] to sync from a peer.
#[derive(Debug, Clone)]
pub struct SyncHandle {
    requests: mpsc::Sender<String>,
}

impl SyncHandle {
    /// A handle and the receiving end its [`Syncer`] runs on.
    pub(crate) fn new() -> (Self, mpsc::Receiver<String>) {
        let (requests, rx) = mpsc::channel(1);
        (SyncHandle { requests }, rx)
    }

    /// Sync from the peer at `address` (canonical) unless a sync is running.
    pub fn request(&self, address: &str) {
        let _ = self.requests.try_send(address.to_string());
    }
}

/// The task that runs syncs, one at a time.
#[derive(Debug)]
pub(crate) struct Syncer {
    node: NodeHandle,
    requests: mpsc::Receiver<String>,
}

impl Syncer {
    pub fn new(node: NodeHandle, requests: mpsc::Receiver<String>) -> Self {
        Syncer { node, requests }
    }

    /// Serves sync requests until shutdown.
    pub async fn run(mut self) {
        let shutdown = self.node.shutdown_token().clone();
        loop {
            let address = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.requests.recv() => match r { Some(a) => a, None => return },
            };
            if self.node.peers().is_banned(&address, self.node.now_ms()) {
                tracing::debug!(peer = %address, "not syncing from a banned peer");
                Stats::add(&self.node.counters().syncs_refused_banned, 1);
                continue;
            }
            let sync = sync_from(&self.node, &address);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = sync => if let Err(e) = r {
                    Stats::add(&self.node.counters().syncs_failed, 1);
                    tracing::warn!(peer = %address, error = %e, "sync failed");
                },
            }
            // Requests that came in meanwhile asked for what was just done.
            while self.requests.try_recv().is_ok() {}
        }
    }
}

/// Downloads blocks from `address` until we have its chain. The first
/// request carries a block locator to find the fork point; after that
/// requests go by height and are pipelined: batch k+1 is in flight while
/// batch k is validated and committed. Each batch is bounded in blocks and
/// bytes (what we ask for is what we accept) and checked block by block as
/// it arrives; at most two batches are in memory.
pub async fn sync_from(node: &NodeHandle, address: &str) -> Result<u64, Error> {
    let link = node
        .link(address)
        .ok_or_else(|| Error::PeerUnavailable { peer: address.into(), reason: "cannot be dialed".into() })?;
    let _bulk = node.bulk_imports().begin();
    let max_message = node.config().network.max_message_bytes();
    let client = node.peer_client(&link);
    let batch = node.config().sync_batch;
    let max_bytes = node.config().sync_batch_bytes.max(max_message as u64);
    let origin = Origin::Sync { from: address.to_string() };
    let started = Instant::now();
    let mut total = 0u64;
    let mut held_back = false;
    // The peer's heavier chain forks below our final checkpoint: its claim
    // was true, we just will not follow it.
    let mut below_final = false;
    let mut relocated = 0;
    let before = node.chain().tip().await?;
    let claimed = node.peers().claimed_work(address);
    let locator_request = |locator: Vec<crate::chain::Hash>| GetBlocksRequest {
        from_height: 0,
        locator: locator.iter().map(|h| h.to_vec()).collect(),
        limit: batch,
        max_bytes,
    };
    let fetch =
        |req: GetBlocksRequest| tokio::spawn(fetch_blocks(node.clone(), client.clone(), req, address.to_string()));
    let locator = node.chain().read(|r| r.locator()).await?;
    let mut pending = fetch(locator_request(locator));
    loop {
        let fetched = pending.await.map_err(|e| Error::Internal(e.to_string()))?;
        let Fetched { blocks, complete, early } = match fetched {
            Ok(f) => f,
            Err(Broken::Rules(why)) => {
                // Costs the peer what an invalid block does.
                node.misbehaved(Some(&node.culprit_at(address)), &why);
                return Err(Error::PeerUnavailable { peer: address.into(), reason: why });
            }
            Err(Broken::Failed(e)) => return Err(e),
        };
        held_back |= early;
        let Some(last) = blocks.last() else { break };
        let received = blocks.len() as u64;
        // Ask for the next batch before committing this one.
        let next = GetBlocksRequest { from_height: last.index + 1, locator: vec![], limit: batch, max_bytes };
        pending = fetch(next);
        Stats::add(&node.counters().synced_blocks, received);
        let verdicts = node.offer(blocks, origin.clone()).await?;
        let mut progressed = false;
        let mut disconnected = false;
        for v in &verdicts {
            match v {
                Ok(a) if a.outcome == Outcome::BelowFinal => {
                    below_final = true;
                    progressed = true;
                }
                Ok(a) if a.outcome.stored() => progressed = true,
                Ok(a) if a.outcome == Outcome::Orphan => disconnected = true,
                Ok(_) => {}
                Err(e) => {
                    node.misbehaved(Some(&node.culprit_at(address)), &e.to_string());
                    pending.abort();
                    return Err(Error::InvalidBlock(e.clone()));
                }
            }
        }
        total += received;
        if node.peers().is_banned(address, node.now_ms()) {
            pending.abort();
            return Err(Error::PeerUnavailable { peer: address.into(), reason: "banned during the sync".into() });
        }
        if disconnected {
            // The peer's chain changed under us: find the fork point again,
            // a few times at most (a peer whose answers never connect to
            // our chain would otherwise keep this loop going forever).
            pending.abort();
            relocated += 1;
            if relocated > MAX_RELOCATES {
                node.misbehaved(Some(&node.culprit_at(address)), "its GetBlocks answers never connect to our chain");
                return Err(Error::PeerUnavailable {
                    peer: address.into(),
                    reason: format!("its answers did not connect to our chain after {MAX_RELOCATES} tries"),
                });
            }
            let locator = node.chain().read(|r| r.locator()).await?;
            pending = fetch(locator_request(locator));
            continue;
        }
        if !complete || !progressed {
            pending.abort();
            break;
        }
    }
    let after = node.chain().tip().await?;
    if after.hash != before.hash {
        tracing::info!(
            peer = %address, blocks = total, from_height = before.height, to_height = after.height,
            secs = started.elapsed().as_secs_f64(), "synced"
        );
    }
    // A Ping that claimed more work than the peer then served: a liar (or a
    // peer whose chain just shrank). Either way, stop believing the claim.
    // A branch below the final checkpoint backs the claim: no penalty (and
    // the heartbeat does not fetch a tip it already refused again).
    if !below_final && !held_back && claimed > after.work && node.peers().forget_claim(address) {
        let culprit = node.culprit_at(address);
        node.peers().penalize(&culprit, UNBACKED_CLAIM_PENALTY, "claimed more work than it served", node.now_ms());
    }
    Ok(total)
}

/// One GetBlocks answer, checked.
#[derive(Debug)]
struct Fetched {
    blocks: Vec<Block>,
    /// The peer sent all it was asked for (so there may be more).
    complete: bool,
    /// The batch stopped at a block stamped ahead of our clock.
    early: bool,
}

/// Why a GetBlocks answer was given up.
#[derive(Debug)]
enum Broken {
    /// The peer broke the rules of the exchange (penalised).
    Rules(String),
    /// The peer failed or went silent (not penalised).
    Failed(Error),
}

/// One GetBlocks call: every block is checked as it arrives (proof of work,
/// size, consecutive heights and links), the answer may not exceed the
/// count and bytes asked for, and a peer silent for the stream idle timeout
/// is given up. An early block ends the batch there without blame.
async fn fetch_blocks(
    node: NodeHandle,
    mut client: NodeClient<Channel>,
    req: GetBlocksRequest,
    address: String,
) -> Result<Fetched, Broken> {
    let idle = node.config().stream_idle_timeout;
    let unavailable = |reason: String| Broken::Failed(Error::PeerUnavailable { peer: address.clone(), reason });
    let (limit, max_bytes, from_height) = (req.limit as usize, req.max_bytes, req.from_height);
    let by_locator = !req.locator.is_empty();
    let mut stream = match tokio::time::timeout(idle, client.get_blocks(req)).await {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(s)) => return Err(unavailable(format!("GetBlocks: {}", s.message()))),
        Err(_) => return Err(unavailable(format!("GetBlocks: no answer in {}s", idle.as_secs_f64()))),
    };
    let mut blocks: Vec<Block> = Vec::new();
    let mut bytes = 0u64;
    let params = node.config().network.clone();
    loop {
        let item = match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(Ok(b))) => b,
            Ok(Some(Err(s))) => return Err(unavailable(format!("GetBlocks stream: {}", s.message()))),
            Ok(None) => break,
            Err(_) => {
                return Err(Broken::Failed(Error::DeadlineExceeded(format!(
                    "peer {address} sent nothing for {}s during a sync",
                    idle.as_secs_f64()
                ))));
            }
        };
        if blocks.len() >= limit {
            return Err(Broken::Rules(format!("GetBlocks answer has more than the {limit} blocks asked for")));
        }
        let b = convert::block_from_proto(item).map_err(|e| Broken::Rules(e.to_string()))?;
        bytes += b.size() as u64;
        if bytes > max_bytes && !blocks.is_empty() {
            return Err(Broken::Rules(format!("GetBlocks answer exceeds the {max_bytes} bytes asked for")));
        }
        let expected = match blocks.last() {
            Some(prev) => Some((prev.index + 1, prev.hash)),
            None if !by_locator => Some((from_height, b.prev_hash)),
            None => None,
        };
        if let Some((height, prev)) = expected
            && (b.index != height || b.prev_hash != prev)
        {
            return Err(Broken::Rules(format!(
                "GetBlocks answer is out of order: got height {} where {height} was due, or a block that does not follow the one before",
                b.index
            )));
        }
        match validate::check_header(&b, &params, &node.chain().genesis_hash(), node.now_ms()).map(|_| ()) {
            Ok(()) => blocks.push(b),
            // Most likely our clock is behind: keep what came before, stop here.
            Err(BlockError::FromTheFuture { .. }) => {
                blocks.push(b);
                return Ok(Fetched { blocks, complete: false, early: true });
            }
            Err(e) => return Err(Broken::Rules(format!("block at height {}: {e}", b.index))),
        }
    }
    let complete = blocks.len() == limit || bytes + params.max_message_bytes() as u64 > max_bytes;
    Ok(Fetched { blocks, complete, early: false })
}
