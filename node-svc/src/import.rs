//! Blocks arriving from outside: one gossiped block (SendBlock) or a whole
//! offered chain (BroadcastBlockchain); counting what was stored.
//!
//! A block is held against the node that sent it only when that node is
//! known for certain: the id its TLS certificate proved on the connection
//! ([`NodeHandle::caller`]). The `Sender` a request names is a hint (the
//! address to learn and fetch from, which our own handshake must tie to the
//! same id); anonymous senders are refused and counted, never scored.

use futures::StreamExt;
use p2p_proto::node::{BlockOutcome, BroadcastBlockchainResponse, PeerSource, Sender};
use p2p_proto::tls::PeerIdentity;
use tokio::sync::OwnedSemaphorePermit;

use crate::chain::{self, Accepted, Block, Origin, Outcome, Tip, validate};
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
        let stored = verdicts.iter().flatten().filter(|v| v.outcome.stored()).count();
        Stats::add(&self.counters().blocks_stored, stored as u64);
        Ok(verdicts)
    }

    /// Handles one gossiped block from `caller` (the identity its
    /// connection proved; None: anonymous), who names itself with `hint`.
    pub async fn receive_block(
        &self,
        block: p2p_proto::node::Block,
        caller: Option<PeerIdentity>,
        hint: Option<&Sender>,
    ) -> Result<Handled, Error> {
        Stats::add(&self.counters().blocks_received, 1);
        Stats::add(&self.counters().bytes_received_push, prost::Message::encoded_len(&block) as u64);
        let from = caller.map(|c| c.node_id);
        if let Some(id) = &from {
            if self.peers().is_node_banned(id, self.now_ms()) {
                return Err(Error::Banned { peer: id.clone() });
            }
            if let Some(address) = hint.filter(|s| !s.address.is_empty()).map(|s| canonical(&s.address)) {
                self.peers().learn(&address, PeerSource::Inbound, Some(id));
            }
        }
        let block = match convert::block_from_proto(block) {
            Ok(b) => b,
            Err(e) => {
                self.misbehaved(from.as_deref(), &e.to_string());
                return Err(e.into());
            }
        };
        // While the chain checks it, announcements of it fetch nothing.
        let arriving = self.relay().arriving(block.hash);
        let verdicts = self.offer(vec![block], Origin::Gossip { from: from.clone() }).await;
        drop(arriving);
        let verdicts = verdicts?;
        let tip = self.chain().tip().await?;
        match verdicts.into_iter().next() {
            Some(Ok(a)) => {
                match a.outcome {
                    Outcome::Duplicate => {
                        Stats::add(&self.counters().duplicates_received, 1);
                        let hint = hint.map(|s| canonical(&s.address));
                        if let Some(peer) = crate::gossip::relay_key(self, from.as_deref(), hint.as_deref()) {
                            crate::gossip::duplicate_push(self, &peer, a.hash);
                        }
                    }
                    Outcome::Orphan => {
                        if let Some(addr) = from.as_deref().and_then(|id| self.peers().address_of(id)) {
                            tracing::info!(peer = %addr, hash = %hex::encode(a.hash), "orphan block; fetching its ancestors");
                            self.sync().request(&addr);
                        }
                    }
                    _ => {}
                }
                Ok(Handled { outcome: convert::outcome_to_proto(a.outcome), tip })
            }
            Some(Err(e)) => {
                // An early block is our clock's business, not misbehaviour.
                if !matches!(e, chain::BlockError::FromTheFuture { .. }) {
                    self.misbehaved(from.as_deref(), &e.to_string());
                } else {
                    Stats::add(&self.counters().invalid_received, 1);
                }
                Err(e.into())
            }
            None => Err(Error::Internal("no verdict".into())),
        }
    }

    /// A block fetched from the peer at relay key `peer` (after it announced
    /// `id`), who is held responsible as `culprit`. Ok(true): new to us;
    /// Ok(false): we had it.
    pub(crate) async fn receive_fetched(
        &self,
        block: p2p_proto::node::Block,
        id: chain::Hash,
        culprit: String,
    ) -> Result<bool, Error> {
        Stats::add(&self.counters().blocks_fetched, 1);
        let block = match convert::block_from_proto(block) {
            Ok(b) if b.hash == id => b,
            Ok(b) => {
                let why = format!("asked for block {} and got {}", hex::encode(id), hex::encode(b.hash));
                self.misbehaved(Some(&culprit), &why);
                return Err(Error::invalid("block", why));
            }
            Err(e) => {
                self.misbehaved(Some(&culprit), &e.to_string());
                return Err(e.into());
            }
        };
        let arriving = self.relay().arriving(block.hash);
        let verdicts = self.offer(vec![block], Origin::Fetched { from: culprit.clone() }).await;
        drop(arriving);
        let verdicts = verdicts?;
        match verdicts.into_iter().next() {
            Some(Ok(a)) => match a.outcome {
                Outcome::Duplicate => {
                    Stats::add(&self.counters().duplicates_received, 1);
                    Ok(false)
                }
                Outcome::Orphan => {
                    if let Some(addr) = self.peers().address_of(&culprit).or(Some(culprit)) {
                        self.sync().request(&addr);
                    }
                    Ok(true)
                }
                _ => Ok(true),
            },
            Some(Err(e)) => {
                if !matches!(e, chain::BlockError::FromTheFuture { .. }) {
                    self.misbehaved(Some(&culprit), &e.to_string());
                }
                Err(e.into())
            }
            None => Err(Error::Internal("no verdict".into())),
        }
    }

    /// Counts an invalid block and costs `culprit` score: a node id a TLS
    /// handshake proved, or (plaintext) the address we dialed ourselves;
    /// None for an anonymous sender.
    pub(crate) fn misbehaved(&self, culprit: Option<&str>, why: &str) {
        Stats::add(&self.counters().invalid_received, 1);
        if let Some(culprit) = culprit {
            self.peers().penalize(culprit, INVALID_BLOCK_PENALTY, why, self.now_ms());
        }
    }

    /// The book's BroadcastBlockchain done safely: blocks arrive one message
    /// at a time in height order; each is checked on arrival (size, header,
    /// proof of work, link to the one before) before it is buffered, the
    /// buffer is bounded per stream ([`crate::NodeConfig::broadcast_buffer_bytes`])
    /// and across streams ([`crate::NodeConfig::inbound_buffer_bytes`]), a
    /// sender silent for [`crate::NodeConfig::stream_idle_timeout`] is cut
    /// off, and the chain becomes ours only if it ends up with more work.
    pub async fn receive_chain<S>(&self, mut stream: S) -> Result<BroadcastBlockchainResponse, Error>
    where
        S: futures::Stream<Item = Result<p2p_proto::node::Block, tonic::Status>> + Unpin,
    {
        let _bulk = self.bulk_imports().begin();
        let config = self.config();
        let idle = config.stream_idle_timeout;
        let before = self.chain().tip().await?;
        let (mut received, mut stored) = (0u64, 0u64);
        let mut last: Option<chain::Hash> = None;
        let mut chunk = Chunk::default();
        loop {
            let item = match tokio::time::timeout(idle, stream.next()).await {
                Ok(item) => item,
                Err(_) => {
                    return Err(Error::DeadlineExceeded(format!(
                        "no block for {}s after block #{received}; the stream was closed",
                        idle.as_secs_f64()
                    )));
                }
            };
            let done = item.is_none();
            if let Some(item) = item {
                let checked = item
                    .map_err(|s| stream_failed(&s, received))
                    .and_then(|pb| self.check_streamed(pb, received, last));
                let b = match checked {
                    Ok(b) => b,
                    Err(e) => {
                        // What came before the bad block is valid: keep it.
                        if !chunk.blocks.is_empty() {
                            let (blocks, held) = chunk.take();
                            self.offer(blocks, Origin::Broadcast).await?;
                            drop(held);
                        }
                        return Err(e);
                    }
                };
                last = Some(b.hash);
                received += 1;
                let bytes = b.size();
                let permit = self.reserve_inbound(bytes)?;
                chunk.push(b, bytes, permit);
            }
            if chunk.blocks.len() >= CHUNK
                || chunk.bytes >= config.broadcast_buffer_bytes
                || (done && !chunk.blocks.is_empty())
            {
                let first_in_stream = received as usize == chunk.blocks.len();
                let offset = received - chunk.blocks.len() as u64;
                let (blocks, held) = chunk.take();
                let verdicts = self.offer(blocks, Origin::Broadcast).await?;
                drop(held);
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

    /// The checks a streamed block passes before it takes buffer space:
    /// sizes and difficulty, the proof of work, the link to the block
    /// before it. Early blocks pass here; the chain holds them.
    fn check_streamed(
        &self,
        pb: p2p_proto::node::Block,
        position: u64,
        last: Option<chain::Hash>,
    ) -> Result<Block, Error> {
        let b = convert::block_from_proto(pb)?;
        let config = self.config();
        let horizon = self.now_ms().saturating_add(config.network.max_future_ms);
        validate::check_header(&b, &config.network, &self.chain().genesis_hash(), horizon)
            .map(|_| ())
            .map_err(|e| Error::invalid("block", format!("block #{position} of the stream: {e}")))?;
        if let Some(prev) = last.filter(|p| *p != b.prev_hash) {
            return Err(Error::invalid(
                "block",
                format!(
                    "block #{position} of the stream does not follow the one before it (expected prev_hash {})",
                    hex::encode(prev)
                ),
            ));
        }
        Ok(b)
    }

    /// Reserves `bytes` of the node-wide inbound buffer, or refuses at
    /// once when other uploads hold it (the client retries later).
    fn reserve_inbound(&self, bytes: usize) -> Result<OwnedSemaphorePermit, Error> {
        let n = u32::try_from(bytes).map_err(|_| Error::invalid("block", "is larger than any valid block"))?;
        self.inbound_bytes().clone().try_acquire_many_owned(n).map_err(|_| {
            Error::ResourceExhausted(format!(
                "the node's buffer for uploaded chains ({} bytes) is in use by other uploads; retry later",
                self.config().inbound_buffer_bytes
            ))
        })
    }
}

/// A message of an upload that could not be read: too large to be a block
/// (the decoding limit) is the sender's fault; anything else a broken stream.
fn stream_failed(s: &tonic::Status, position: u64) -> Error {
    match s.code() {
        tonic::Code::OutOfRange | tonic::Code::ResourceExhausted => Error::invalid(
            "block",
            format!("message #{position} of the stream is larger than any valid block: {}", s.message()),
        ),
        _ => Error::FailedPrecondition(format!("the block stream failed: {}", s.message())),
    }
}

/// Blocks buffered between commits, with the buffer space they hold.
#[derive(Debug, Default)]
struct Chunk {
    blocks: Vec<Block>,
    bytes: usize,
    permits: Vec<OwnedSemaphorePermit>,
}

impl Chunk {
    fn push(&mut self, b: Block, bytes: usize, permit: OwnedSemaphorePermit) {
        self.blocks.push(b);
        self.bytes += bytes;
        self.permits.push(permit);
    }

    /// The blocks and the buffer space they hold (freed once committed).
    fn take(&mut self) -> (Vec<Block>, Vec<OwnedSemaphorePermit>) {
        self.bytes = 0;
        (std::mem::take(&mut self.blocks), std::mem::take(&mut self.permits))
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
            Ok(a) if a.outcome.stored() => stored += 1,
            Ok(_) => {}
            Err(e) => {
                return Err(Error::invalid("block", format!("block #{} of the stream: {e}", offset + i as u64)));
            }
        }
    }
    Ok(stored)
}
