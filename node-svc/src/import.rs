//! Blocks arriving from outside: one gossiped block (SendBlock) or a whole
//! offered chain (BroadcastBlockchain); counting what was stored and
//! penalising the peer that sent something invalid.

use futures::StreamExt;
use p2p_proto::node::{BlockOutcome, BroadcastBlockchainResponse, PeerSource, Sender};

use crate::chain::{self, Accepted, Block, Origin, Outcome, Tip};
use crate::convert::{self, canonical};
use crate::error::Error;
use crate::metrics::Stats;
use crate::node::NodeHandle;
use crate::peers::INVALID_BLOCK_PENALTY;

/// Blocks of a BroadcastBlockchain stream validated and committed together.
const CHUNK: usize = 500;

/// What became of a block handed to the node.
#[derive(Debug, Clone)]
pub struct Handled {
    pub outcome: BlockOutcome,
    pub tip: Tip,
}

type Verdicts = Vec<Result<Accepted, chain::BlockError>>;

impl NodeHandle {
    /// Offers blocks to the chain and counts what was stored; relaying is
    /// gossip's business (it hears of the new tip from the chain's events).
    pub(crate) async fn offer(&self, blocks: Vec<Block>, origin: Origin) -> Result<Verdicts, Error> {
        let verdicts = self.chain().accept(blocks, origin).await?;
        let stored = verdicts
            .iter()
            .flatten()
            .filter(|v| matches!(v.outcome, Outcome::Appended | Outcome::Reorg { .. } | Outcome::SideBranch))
            .count();
        Stats::add(&self.counters().blocks_stored, stored as u64);
        Ok(verdicts)
    }

    /// Handles one gossiped block; `from` is the sender as already verified
    /// by [`NodeHandle::verified_sender`] (None: anonymous).
    pub async fn receive_block(&self, block: p2p_proto::node::Block, from: Option<&Sender>) -> Result<Handled, Error> {
        Stats::add(&self.counters().blocks_received, 1);
        let from = from.filter(|s| !s.address.is_empty()).map(|s| (canonical(&s.address), s.node_id.as_str()));
        if let Some((address, node_id)) = &from {
            self.peers().learn(address, PeerSource::Inbound, Some(node_id));
            if self.peers().is_banned(address, self.now_ms()) {
                return Err(Error::Banned { address: address.clone() });
            }
        }
        let from_addr = from.map(|(a, _)| a);
        let block = match convert::block_from_proto(block) {
            Ok(b) => b,
            Err(e) => {
                self.misbehaved(from_addr.as_deref(), &e.to_string());
                return Err(e.into());
            }
        };
        let verdicts = self.offer(vec![block], Origin::Gossip { from: from_addr.clone() }).await?;
        let tip = self.chain().tip().await?;
        match verdicts.into_iter().next() {
            Some(Ok(a)) => {
                match a.outcome {
                    Outcome::Duplicate => Stats::add(&self.counters().duplicates_received, 1),
                    Outcome::Orphan => {
                        if let Some(addr) = &from_addr {
                            tracing::info!(peer = %addr, hash = %hex::encode(a.hash), "orphan block; fetching its ancestors");
                            self.sync().request(addr);
                        }
                    }
                    _ => {}
                }
                Ok(Handled { outcome: convert::outcome_to_proto(a.outcome), tip })
            }
            Some(Err(e)) => {
                self.misbehaved(from_addr.as_deref(), &e.to_string());
                Err(e.into())
            }
            None => Err(Error::Internal("no verdict".into())),
        }
    }

    /// Counts an invalid block and costs its sender (if known) score.
    pub(crate) fn misbehaved(&self, from: Option<&str>, why: &str) {
        Stats::add(&self.counters().invalid_received, 1);
        if let Some(addr) = from {
            self.peers().penalize(&canonical(addr), INVALID_BLOCK_PENALTY, why, self.now_ms());
        }
    }

    /// The book's BroadcastBlockchain done safely: blocks arrive one message
    /// at a time in height order, each is validated against its parent, and
    /// the chain becomes ours only if it ends up with more work.
    pub async fn receive_chain<S>(&self, mut stream: S) -> Result<BroadcastBlockchainResponse, Error>
    where
        S: futures::Stream<Item = Result<p2p_proto::node::Block, tonic::Status>> + Unpin,
    {
        let _bulk = self.bulk_imports().begin();
        let before = self.chain().tip().await?;
        let (mut received, mut stored) = (0u64, 0u64);
        let mut last: Option<chain::Hash> = None;
        let mut chunk = Vec::with_capacity(CHUNK);
        loop {
            let item = stream.next().await;
            let done = item.is_none();
            if let Some(item) = item {
                let pb =
                    item.map_err(|s| Error::FailedPrecondition(format!("the block stream failed: {}", s.message())))?;
                let b = convert::block_from_proto(pb)?;
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
                let verdicts = self.offer(std::mem::take(&mut chunk), Origin::Broadcast).await?;
                stored += check_chunk(&verdicts, first_in_stream, offset)?;
            }
            if done {
                break;
            }
        }
        if received == 0 {
            return Err(Error::invalid("stream", "carried no blocks"));
        }
        let after = self.chain().tip().await?;
        let adopted = Some(after.hash) == last && after.hash != before.hash;
        if adopted {
            tracing::info!(height = after.height, received, stored, "adopted a broadcast chain with more work");
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
}

/// Counts a broadcast chunk's stored blocks, or names the first bad one.
fn check_chunk(verdicts: &Verdicts, first_in_stream: bool, offset: u64) -> Result<u64, Error> {
    let mut stored = 0;
    for (i, v) in verdicts.iter().enumerate() {
        match v {
            Ok(a) if a.outcome == Outcome::Orphan && first_in_stream && i == 0 => {
                return Err(Error::FailedPrecondition(
                    "the stream's first block has a parent this node does not have; start at genesis or at a \
                     block we share (GetBlocks with a locator finds it)"
                        .into(),
                ));
            }
            Ok(a) if matches!(a.outcome, Outcome::Appended | Outcome::SideBranch | Outcome::Reorg { .. }) => {
                stored += 1
            }
            Ok(_) => {}
            Err(e) => {
                return Err(Error::invalid("block", format!("block #{} of the stream: {e}", offset + i as u64)));
            }
        }
    }
    Ok(stored)
}
