//! Gossip: a task that listens to the chain's events and pushes each new tip
//! to up to `gossip_fanout` random usable peers, skipping the peer it came
//! from. Tips from a bulk import (sync, BroadcastBlockchain) are announced
//! once, when the import ends, rather than batch by batch (as Bitcoin Core
//! does not relay during initial block download).

use std::sync::Arc;

use p2p_proto::node::SendBlockRequest;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};

use crate::chain::{Block, ChainEvent};
use crate::convert;
use crate::metrics::Stats;
use crate::node::NodeHandle;

/// How many bulk imports are running; gossip holds their tips until none is.
#[derive(Debug, Clone)]
pub struct BulkImports {
    running: Arc<watch::Sender<usize>>,
}

impl Default for BulkImports {
    fn default() -> Self {
        BulkImports { running: Arc::new(watch::Sender::new(0)) }
    }
}

/// Held for the length of a bulk import.
#[derive(Debug)]
pub struct BulkImport {
    running: Arc<watch::Sender<usize>>,
}

impl BulkImports {
    pub fn begin(&self) -> BulkImport {
        self.running.send_modify(|n| *n += 1);
        BulkImport { running: self.running.clone() }
    }

    /// Whether any bulk import is running.
    pub fn active(&self) -> bool {
        *self.running.borrow() > 0
    }

    fn watch(&self) -> watch::Receiver<usize> {
        self.running.subscribe()
    }
}

impl Drop for BulkImport {
    fn drop(&mut self) {
        self.running.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Relays tips until shutdown. `events` is subscribed before the node
/// accepts any block, so no tip is missed.
pub(crate) async fn run(node: NodeHandle, mut events: broadcast::Receiver<ChainEvent>) {
    let mut bulk = node.bulk_imports().watch();
    // The newest tip of a running bulk import, and the peer it came from.
    let mut held: Option<(Arc<Block>, Option<String>)> = None;
    loop {
        tokio::select! {
            _ = node.shutdown_token().cancelled() => return,
            ev = events.recv() => match ev {
                Ok(ChainEvent::TipChanged { block, origin }) => {
                    let except = origin.peer().map(str::to_string);
                    if origin.is_bulk() && *bulk.borrow() > 0 {
                        held = Some((block, except));
                    } else {
                        held = None;
                        spawn_relay(&node, block, except);
                    }
                }
                Ok(ChainEvent::Reorg { .. } | ChainEvent::Votes { .. } | ChainEvent::Finalized(_)) => {}
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "gossip fell behind the chain's events; the next tip is relayed");
                }
                Err(RecvError::Closed) => return,
            },
            changed = bulk.changed() => {
                if changed.is_err() {
                    return;
                }
                if *bulk.borrow_and_update() == 0 && let Some((block, except)) = held.take() {
                    spawn_relay(&node, block, except);
                }
            }
        }
    }
}

fn spawn_relay(node: &NodeHandle, block: Arc<Block>, except: Option<String>) {
    let node2 = node.clone();
    node.tasks().spawn(async move { relay(&node2, &block, except.as_deref()).await });
}

/// Pushes `block` to up to `gossip_fanout` random usable peers other than
/// `except` (the peer it came from: its node id, or its address).
pub async fn relay(node: &NodeHandle, block: &Block, except: Option<&str>) {
    let targets = node.peers().gossip_targets(except, node.config().gossip_fanout);
    if targets.is_empty() {
        return;
    }
    let req = SendBlockRequest { block: Some(convert::block_to_proto(block)), sender: Some(node.sender()) };
    let timeout = node.config().gossip_timeout;
    let sends = targets.into_iter().filter_map(|addr| node.link(&addr).map(|l| (addr, l))).map(
        |(addr, link)| {
            let req = req.clone();
            async move {
                Stats::add(&node.counters().gossip_sent, 1);
                let mut client = node.peer_client(&link);
                match tokio::time::timeout(timeout, client.send_block(req)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(status)) => {
                        tracing::debug!(peer = %addr, code = ?status.code(), msg = status.message(), "peer refused gossiped block")
                    }
                    Err(_) => {
                        tracing::debug!(peer = %addr, "gossip timed out");
                        node.peers().failed(&addr, node.now_ms());
                    }
                }
            }
        },
    );
    futures::future::join_all(sends).await;
    tracing::debug!(hash = %hex::encode(block.hash), height = block.index, "block gossiped");
}
