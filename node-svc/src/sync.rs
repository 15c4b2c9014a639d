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

use crate::chain::{Block, Origin, Outcome};
use crate::convert;
use crate::error::Error;
use crate::metrics::Stats;
use crate::node::NodeHandle;

/// Largest message a sync stream may carry.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

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
            let sync = sync_from(&self.node, &address);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = sync => if let Err(e) = r {
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
/// batch k is validated and committed.
pub async fn sync_from(node: &NodeHandle, address: &str) -> Result<u64, Error> {
    let channel = node
        .dialer()
        .peer(address)
        .ok_or_else(|| Error::PeerUnavailable { peer: address.into(), reason: "cannot be dialed".into() })?;
    let _bulk = node.bulk_imports().begin();
    let client = NodeClient::new(channel).max_decoding_message_size(MAX_MESSAGE);
    let batch = node.config().sync_batch;
    let origin = Origin::Sync { from: address.to_string() };
    let started = Instant::now();
    let mut total = 0u64;
    let before = node.chain().tip().await?;
    let locator_request = |locator: Vec<crate::chain::Hash>| GetBlocksRequest {
        from_height: 0,
        locator: locator.iter().map(|h| h.to_vec()).collect(),
        limit: batch,
    };
    let locator = node.chain().read(|r| r.locator()).await?;
    let mut pending = tokio::spawn(fetch_blocks(client.clone(), locator_request(locator), address.to_string()));
    loop {
        let blocks = pending.await.map_err(|e| Error::Internal(e.to_string()))??;
        let Some(last) = blocks.last() else { break };
        let received = blocks.len() as u64;
        let full = received == u64::from(batch);
        // Ask for the next batch before validating this one.
        let next = GetBlocksRequest { from_height: last.index + 1, locator: vec![], limit: batch };
        pending = tokio::spawn(fetch_blocks(client.clone(), next, address.to_string()));
        Stats::add(&node.counters().synced_blocks, received);
        let verdicts = node.offer(blocks, origin.clone()).await?;
        let mut progressed = false;
        let mut disconnected = false;
        for v in &verdicts {
            match v {
                Ok(a) if matches!(a.outcome, Outcome::Appended | Outcome::Reorg { .. } | Outcome::SideBranch) => {
                    progressed = true
                }
                Ok(a) if a.outcome == Outcome::Orphan => disconnected = true,
                Ok(_) => {}
                Err(e) => {
                    node.misbehaved(Some(address), &e.to_string());
                    pending.abort();
                    return Err(Error::InvalidBlock(e.clone()));
                }
            }
        }
        total += received;
        if disconnected {
            // The peer's chain changed under us: find the fork point again.
            pending.abort();
            let locator = node.chain().read(|r| r.locator()).await?;
            pending = tokio::spawn(fetch_blocks(client.clone(), locator_request(locator), address.to_string()));
            continue;
        }
        if !full || !progressed {
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
    Ok(total)
}

/// One GetBlocks call, collected; invalid encodings are [`Error::InvalidBlock`].
async fn fetch_blocks(
    mut client: NodeClient<Channel>,
    req: GetBlocksRequest,
    address: String,
) -> Result<Vec<Block>, Error> {
    let unavailable = |s: tonic::Status| Error::PeerUnavailable {
        peer: address.clone(),
        reason: format!("GetBlocks: {}", s.message()),
    };
    let mut stream = client.get_blocks(req).await.map_err(unavailable)?.into_inner();
    let mut blocks = Vec::new();
    while let Some(item) = stream.next().await {
        blocks.push(convert::block_from_proto(item.map_err(unavailable)?)?);
    }
    Ok(blocks)
}
