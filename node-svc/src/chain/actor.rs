//! The chain actor: one thread owns the writable [`Chain`]; everything else
//! sends it blocks through a [`ChainHandle`] and reads through a
//! [`ChainReader`] on the blocking pool, so storage never runs on the async
//! workers. After each commit that moved the tip it publishes
//! [`ChainEvent`]s on a broadcast channel: gossip (and later the mempool
//! and metrics) subscribe instead of being called by every importer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use p2p_proto::clock::Clock;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::finality::{Added, Checked, Evidence, Vote};
use super::{Accepted, Applied, Block, BlockError, Chain, ChainReader, Finalized, Hash, StoreError, Tip};
use crate::error::Error;

/// Events buffered per subscriber; a slower one is told it lagged.
const EVENT_BUFFER: usize = 1024;
/// Vote messages committed together at most.
const MAX_VOTE_GROUPS: usize = 64;

/// Where blocks handed to the chain came from: decides whom gossip skips
/// and whether a tip is announced at once or when a bulk import ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Mined by this node.
    Local,
    /// Gossiped by a peer (the node id its TLS handshake proved), or anonymously.
    Gossip { from: Option<String> },
    /// Fetched from this peer (node id, or address on plaintext links)
    /// after it announced the block.
    Fetched { from: String },
    /// Downloaded from this peer while syncing.
    Sync { from: String },
    /// Offered through BroadcastBlockchain.
    Broadcast,
}

impl Origin {
    /// The peer that already has these blocks, if known: a node id
    /// (gossip) or an address (sync), as [`crate::peers::PeerTable::gossip_targets`] takes it.
    pub fn peer(&self) -> Option<&str> {
        match self {
            Origin::Gossip { from: Some(p) } | Origin::Sync { from: p } | Origin::Fetched { from: p } => Some(p),
            _ => None,
        }
    }

    /// Part of a bulk import (sync or a broadcast chain), whose final tip is
    /// announced once when the import ends rather than batch by batch.
    pub fn is_bulk(&self) -> bool {
        matches!(self, Origin::Sync { .. } | Origin::Broadcast)
    }
}

/// What the chain tells its subscribers, after the change is durable
/// (except `TipValidated`).
#[derive(Debug, Clone)]
pub enum ChainEvent {
    /// The main chain was reorganised (published before the matching
    /// `TipChanged`); both lists in height order.
    Reorg { removed: Vec<Hash>, added: Vec<Hash> },
    /// The main chain has a new tip.
    TipChanged { block: Arc<Block>, origin: Origin },
    /// A block from a peer or our miner passed validation and is about to
    /// become the tip; its commit is under way (no `TipChanged` follows if
    /// the write fails). Published before the commit so relay need not
    /// wait for the disk; nothing else should treat it as stored.
    TipValidated { block: Arc<Block>, origin: Origin },
    /// Finality votes and evidence new to this node (its own votes
    /// included), to relay; `from` is the peer they came from, if any.
    Votes { votes: Arc<Vec<Vote>>, evidence: Arc<Vec<Evidence>>, from: Option<String> },
    /// A new final checkpoint.
    Finalized(Finalized),
}

type Verdicts = Result<Vec<Result<Accepted, BlockError>>, StoreError>;

/// What offering votes did: a verdict per vote, and the block a quorum
/// voted for when it is not stored here (fetch it from the sender).
#[derive(Debug)]
pub struct VotesApplied {
    pub verdicts: Vec<Added>,
    pub missing_final: Option<Hash>,
}

enum Cmd {
    Accept {
        blocks: Vec<Block>,
        origin: Origin,
        reply: oneshot::Sender<Verdicts>,
    },
    Votes {
        votes: Vec<Checked<Vote>>,
        evidence: Vec<Checked<Evidence>>,
        from: Option<String>,
        reply: oneshot::Sender<Result<VotesApplied, StoreError>>,
    },
    Prune {
        depth: u64,
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
}

/// Cloneable access to the chain.
#[derive(Debug, Clone)]
pub struct ChainHandle {
    tx: mpsc::Sender<Cmd>,
    reader: ChainReader,
    events: broadcast::Sender<ChainEvent>,
    orphans: Arc<AtomicUsize>,
    genesis_hash: Hash,
    serving: tokio::sync::watch::Receiver<bool>,
}

impl ChainHandle {
    /// Starts the actor thread; it stops when every handle is dropped.
    pub fn spawn(mut chain: Chain, clock: Arc<dyn Clock>) -> Result<(Self, std::thread::JoinHandle<()>), Error> {
        let (tx, mut rx) = mpsc::channel::<Cmd>(256);
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let reader = chain.reader();
        let genesis_hash = chain.genesis().hash;
        let orphans = Arc::new(AtomicUsize::new(0));
        let serving = chain.serving();
        let (count, publish) = (orphans.clone(), events.clone());
        let thread = std::thread::Builder::new()
            .name("chain".into())
            .spawn(move || {
                let mut stashed: Option<Cmd> = None;
                while let Some(cmd) = stashed.take().or_else(|| rx.blocking_recv()) {
                    // After a storage failure every command first tries to
                    // reopen the store (the heartbeat sends one each round).
                    chain.recover_storage();
                    let (blocks, origin, reply) = match cmd {
                        Cmd::Accept { blocks, origin, reply } => (blocks, origin, reply),
                        Cmd::Votes { votes, evidence, from, reply } => {
                            // Vote messages queued behind this one share its commit.
                            let mut batch = vec![VoteMessage { votes, evidence, from, reply }];
                            while batch.len() < MAX_VOTE_GROUPS {
                                match rx.try_recv() {
                                    Ok(Cmd::Votes { votes, evidence, from, reply }) => {
                                        batch.push(VoteMessage { votes, evidence, from, reply });
                                    }
                                    Ok(other) => {
                                        stashed = Some(other);
                                        break;
                                    }
                                    Err(_) => break,
                                }
                            }
                            apply_votes(&mut chain, &publish, batch);
                            continue;
                        }
                        Cmd::Prune { depth, reply } => {
                            let pruned = chain.prune_side_branches(depth);
                            if let Err(e) = &pruned {
                                chain.storage_failed(e);
                            }
                            let _ = reply.send(pruned);
                            continue;
                        }
                    };
                    // Gossiped and mined tips are relayed once valid, while
                    // the commit (the fsync) runs; bulk imports relay their
                    // last tip when they end.
                    let early_relay = !origin.is_bulk();
                    let result = chain.accept_batch_relaying(blocks, clock.now_unix_ms(), &mut |tip| {
                        if early_relay {
                            let block = Arc::new(tip.clone());
                            let _ = publish.send(ChainEvent::TipValidated { block, origin: origin.clone() });
                        }
                    });
                    if let Err(e) = &result {
                        chain.storage_failed(e);
                    }
                    count.store(chain.orphan_count(), Ordering::Relaxed);
                    let result = result.map(|mut applied| {
                        let verdicts = std::mem::take(&mut applied.verdicts);
                        publish_applied(&publish, applied, origin, None);
                        verdicts
                    });
                    let _ = reply.send(result);
                }
            })
            .map_err(|e| Error::Internal(format!("cannot start chain thread: {e}")))?;
        Ok((ChainHandle { tx, reader, events, orphans, genesis_hash, serving }, thread))
    }

    /// Offers checked finality votes and evidence (from the peer with node
    /// id `from`, if any); one verdict per vote.
    pub async fn offer_votes(
        &self,
        votes: Vec<Checked<Vote>>,
        evidence: Vec<Checked<Evidence>>,
        from: Option<String>,
    ) -> Result<VotesApplied, Error> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Cmd::Votes { votes, evidence, from, reply }).await.map_err(|_| Error::ShuttingDown)?;
        Ok(rx.await.map_err(|_| Error::ShuttingDown)??)
    }

    /// The latest final checkpoint.
    pub async fn finalized(&self) -> Result<Finalized, Error> {
        self.read(|r| r.finalized()).await
    }

    /// Offers blocks in order; one verdict each (plus connected orphans).
    pub async fn accept(&self, blocks: Vec<Block>, origin: Origin) -> Result<Vec<Result<Accepted, BlockError>>, Error> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Cmd::Accept { blocks, origin, reply }).await.map_err(|_| Error::ShuttingDown)?;
        Ok(rx.await.map_err(|_| Error::ShuttingDown)??)
    }

    /// Offers the held early blocks whose time has come (a no-op when none is due).
    pub async fn retry_early(&self) -> Result<Vec<Result<Accepted, BlockError>>, Error> {
        self.accept(Vec::new(), Origin::Gossip { from: None }).await
    }

    /// Deletes side branches ending more than `depth` below the tip
    /// ([`Chain::prune_side_branches`]); returns how many blocks went.
    pub async fn prune_side_branches(&self, depth: u64) -> Result<usize, Error> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Cmd::Prune { depth, reply }).await.map_err(|_| Error::ShuttingDown)?;
        Ok(rx.await.map_err(|_| Error::ShuttingDown)??)
    }

    /// True while the store serves; false from a storage failure until it
    /// has been reopened.
    pub fn serving(&self) -> tokio::sync::watch::Receiver<bool> {
        self.serving.clone()
    }

    /// Events of every commit from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ChainEvent> {
        self.events.subscribe()
    }

    /// Runs a read on the blocking pool.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ChainReader) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, Error> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || f(&reader))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(Error::from)
    }

    pub async fn tip(&self) -> Result<Tip, Error> {
        self.read(|r| r.tip()).await
    }

    pub fn orphan_count(&self) -> usize {
        self.orphans.load(Ordering::Relaxed)
    }

    pub fn genesis_hash(&self) -> Hash {
        self.genesis_hash
    }

    /// Read access for threads of their own (the mempool's).
    pub fn reader(&self) -> ChainReader {
        self.reader.clone()
    }
}

/// One SendVotes worth of checked votes, waiting for the chain.
struct VoteMessage {
    votes: Vec<Checked<Vote>>,
    evidence: Vec<Checked<Evidence>>,
    from: Option<String>,
    reply: oneshot::Sender<Result<VotesApplied, StoreError>>,
}

/// Commits a batch of vote messages together, publishes what each made
/// new (tagged with its sender) and what they caused together, then
/// answers each: events first, so a caller that has its answer finds them.
fn apply_votes(chain: &mut Chain, publish: &broadcast::Sender<ChainEvent>, batch: Vec<VoteMessage>) {
    let (groups, senders): (Vec<_>, Vec<_>) =
        batch.into_iter().map(|m| ((m.votes, m.evidence), (m.from, m.reply))).unzip();
    match chain.accept_vote_groups(groups) {
        Ok((outcomes, applied)) => {
            let missing_final = applied.missing_final;
            let mut replies = Vec::with_capacity(senders.len());
            for (outcome, (from, reply)) in outcomes.into_iter().zip(senders) {
                if !outcome.votes.is_empty() || !outcome.evidence.is_empty() {
                    let (votes, evidence) = (Arc::new(outcome.votes), Arc::new(outcome.evidence));
                    let _ = publish.send(ChainEvent::Votes { votes, evidence, from });
                }
                replies.push((reply, outcome.verdicts));
            }
            publish_applied(publish, applied, Origin::Local, None);
            for (reply, verdicts) in replies {
                let _ = reply.send(Ok(VotesApplied { verdicts, missing_final }));
            }
        }
        Err(e) => {
            chain.storage_failed(&e);
            let mut senders = senders.into_iter();
            let first = senders.next();
            for (_, reply) in senders {
                let _ = reply.send(Err(same_failure(&e)));
            }
            if let Some((_, reply)) = first {
                let _ = reply.send(Err(e));
            }
        }
    }
}

/// The failure of a shared commit, for each of the callers that shared it.
fn same_failure(e: &StoreError) -> StoreError {
    match e {
        StoreError::Db(_) | StoreError::Down => StoreError::Down,
        other => StoreError::Inconsistent(other.to_string()),
    }
}

/// Publishes what a commit did, in order: reorganisations, the new tip,
/// new votes and evidence, the new final checkpoint. No subscriber is
/// fine: events are a courtesy, the store is the truth.
fn publish_applied(publish: &broadcast::Sender<ChainEvent>, applied: Applied, origin: Origin, from: Option<String>) {
    let Applied { reorgs, new_tip, votes, evidence, finalized, .. } = applied;
    for r in reorgs {
        let _ = publish.send(ChainEvent::Reorg { removed: r.removed, added: r.added });
    }
    if let Some(block) = new_tip {
        let _ = publish.send(ChainEvent::TipChanged { block: Arc::new(block), origin });
    }
    if !votes.is_empty() || !evidence.is_empty() {
        let _ = publish.send(ChainEvent::Votes { votes: Arc::new(votes), evidence: Arc::new(evidence), from });
    }
    if let Some(f) = finalized {
        let _ = publish.send(ChainEvent::Finalized(f));
    }
}

#[cfg(test)]
mod tests {
    use p2p_proto::clock::ManualClock;
    use tokio::sync::broadcast::error::TryRecvError;

    use super::*;
    use crate::chain::testing::{chain_of, extend, params};

    const NOW: u64 = 1_800_000_000_000;

    fn start(dir: &tempfile::TempDir, clock: &ManualClock) -> ChainHandle {
        let chain = Chain::open(&dir.path().join("chain.redb"), params()).unwrap();
        ChainHandle::spawn(chain, Arc::new(clock.clone())).unwrap().0
    }

    fn next_tip(rx: &mut broadcast::Receiver<ChainEvent>) -> (Hash, Origin) {
        match rx.try_recv() {
            Ok(ChainEvent::TipChanged { block, origin }) => (block.hash, origin),
            other => panic!("expected TipChanged, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn each_commit_that_moves_the_tip_publishes_it_once_with_its_origin() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(NOW);
        let chain = start(&dir, &clock);
        let mut events = chain.subscribe();
        let p = params();
        let blocks = chain_of(&p, 3, NOW - 1000);
        let from = Origin::Gossip { from: Some("a:1".into()) };
        chain.accept(blocks[1..].to_vec(), from.clone()).await.unwrap();
        // One event for the batch: its final tip, announced as valid before
        // the commit (for relay) and as the tip after it.
        match events.try_recv() {
            Ok(ChainEvent::TipValidated { block, origin }) => {
                assert_eq!((block.hash, origin), (blocks[3].hash, from.clone()))
            }
            other => panic!("expected TipValidated, got {other:?}"),
        }
        assert_eq!(next_tip(&mut events), (blocks[3].hash, from));
        assert!(matches!(events.try_recv(), Err(TryRecvError::Empty)));
        // A duplicate or a side branch moves nothing and says nothing.
        chain.accept(blocks[3..].to_vec(), Origin::Local).await.unwrap();
        let side = extend(&p, &blocks[..3], 1, NOW - 500, "side");
        chain.accept(side[3..].to_vec(), Origin::Local).await.unwrap();
        assert!(matches!(events.try_recv(), Err(TryRecvError::Empty)));
    }

    #[tokio::test]
    async fn a_reorg_is_published_with_the_blocks_it_swapped_before_the_new_tip() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(NOW);
        let chain = start(&dir, &clock);
        let p = params();
        let common = chain_of(&p, 2, NOW - 1000);
        let a = extend(&p, &common, 2, NOW - 900, "a");
        let b = extend(&p, &common, 3, NOW - 800, "b");
        chain.accept(a[1..].to_vec(), Origin::Local).await.unwrap();
        let mut events = chain.subscribe();
        let sync = Origin::Sync { from: "b:1".into() };
        chain.accept(b[3..].to_vec(), sync.clone()).await.unwrap();
        match events.try_recv() {
            Ok(ChainEvent::Reorg { removed, added }) => {
                assert_eq!(removed, vec![a[3].hash, a[4].hash]);
                assert_eq!(added, vec![b[3].hash, b[4].hash, b[5].hash]);
            }
            other => panic!("expected Reorg, got {other:?}"),
        }
        assert_eq!(next_tip(&mut events), (b[5].hash, sync));
    }

    #[tokio::test]
    async fn concurrent_vote_messages_each_get_their_answer_and_their_own_event() {
        use crate::chain::finality::{FinalityParams, Vote};
        let keys: Vec<_> = (1..=4u8).map(|i| ed25519_dalek::SigningKey::from_bytes(&[i; 32])).collect();
        let fin = FinalityParams::new(keys.iter().map(|k| k.verifying_key().to_bytes()).collect(), 5, 1).unwrap();
        let p = crate::chain::NetworkParams { finality: fin.clone(), ..params() };
        let dir = tempfile::tempdir().unwrap();
        let chain = Chain::open(&dir.path().join("chain.redb"), p.clone()).unwrap();
        let chain = ChainHandle::spawn(chain, Arc::new(ManualClock::new(NOW))).unwrap().0;
        let blocks = chain_of(&p, 6, NOW - 1000);
        chain.accept(blocks[1..].to_vec(), Origin::Local).await.unwrap();
        let mut events = chain.subscribe();
        let g = chain.genesis_hash();
        let offers = keys.iter().enumerate().map(|(i, k)| {
            let vote = Vote::sign(k, &g, &fin, 1, blocks[5].hash).verify(&g, &fin).unwrap();
            chain.offer_votes(vec![vote], vec![], Some(format!("peer{i}")))
        });
        let answers = futures::future::join_all(offers).await;
        for a in &answers {
            assert_eq!(a.as_ref().unwrap().verdicts, vec![crate::chain::finality::Added::New]);
        }
        let mut froms = Vec::new();
        let mut finalized = false;
        while let Ok(ev) = events.try_recv() {
            match ev {
                ChainEvent::Votes { votes, from, .. } => {
                    assert_eq!(votes.len(), 1);
                    froms.push(from.unwrap());
                }
                ChainEvent::Finalized(f) => finalized = f.height == 5,
                other => panic!("unexpected event {other:?}"),
            }
        }
        froms.sort();
        assert_eq!(froms, vec!["peer0", "peer1", "peer2", "peer3"], "each message's new vote, tagged with its sender");
        assert!(finalized);
    }

    #[tokio::test]
    async fn the_future_drift_rule_reads_the_injected_clock() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(NOW);
        let chain = start(&dir, &clock);
        let p = params();
        // Stamped 10 minutes after our clock: beyond the 2-minute drift.
        let early = chain_of(&p, 1, NOW + 10 * 60 * 1000);
        let verdict = chain.accept(early[1..].to_vec(), Origin::Local).await.unwrap().remove(0);
        assert!(matches!(verdict, Err(BlockError::FromTheFuture { .. })), "{verdict:?}");
        clock.advance_ms(10 * 60 * 1000);
        let verdict = chain.accept(early[1..].to_vec(), Origin::Local).await.unwrap().remove(0);
        assert_eq!(verdict.unwrap().outcome, crate::chain::Outcome::Appended);
    }

    #[tokio::test]
    async fn a_slightly_early_block_is_held_and_accepted_when_its_time_comes() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(NOW);
        let chain = start(&dir, &clock);
        let mut events = chain.subscribe();
        let p = params();
        // 3 minutes ahead: beyond the 2-minute rule, within the holding window.
        let early = chain_of(&p, 2, NOW + 3 * 60 * 1000);
        let verdicts = chain.accept(early[1..].to_vec(), Origin::Gossip { from: Some("a:1".into()) }).await.unwrap();
        for v in &verdicts {
            assert_eq!(v.as_ref().unwrap().outcome, crate::chain::Outcome::Deferred, "{verdicts:?}");
        }
        assert_eq!(chain.tip().await.unwrap().height, 0);
        assert!(chain.retry_early().await.unwrap().is_empty(), "not due yet");
        clock.advance_ms(61_000);
        let verdicts = chain.retry_early().await.unwrap();
        assert_eq!(verdicts.len(), 2);
        assert_eq!(chain.tip().await.unwrap().hash, early[2].hash);
        assert!(matches!(events.try_recv(), Ok(ChainEvent::TipValidated { .. })));
        assert!(matches!(events.try_recv(), Ok(ChainEvent::TipChanged { .. })));
    }

    #[tokio::test]
    async fn side_branches_far_below_the_tip_are_pruned_and_the_main_chain_kept() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(NOW);
        let chain = start(&dir, &clock);
        let p = params();
        let main = chain_of(&p, 30, NOW - 10_000);
        chain.accept(main[1..].to_vec(), Origin::Local).await.unwrap();
        // A branch off height 2 (cheap to mine at a fixed difficulty) and one off height 28.
        let old = extend(&p, &main[..3], 3, NOW - 9_000, "old");
        let recent = extend(&p, &main[..29], 1, NOW - 8_000, "recent");
        for b in [&old[3..], &recent[29..]] {
            let v = chain.accept(b.to_vec(), Origin::Local).await.unwrap();
            assert!(v.iter().all(|v| v.as_ref().unwrap().outcome == crate::chain::Outcome::SideBranch));
        }
        assert_eq!(chain.prune_side_branches(10).await.unwrap(), 3, "the old branch, built on pruned blocks too");
        for b in &old[3..] {
            let h = b.hash;
            assert!(!chain.read(move |r| r.contains(&h)).await.unwrap(), "pruned");
        }
        let h = recent[29].hash;
        assert!(chain.read(move |r| r.contains(&h)).await.unwrap(), "a branch near the tip stays");
        for b in &main {
            let h = b.hash;
            assert!(chain.read(move |r| r.contains(&h)).await.unwrap(), "the main chain stays");
        }
        assert_eq!(chain.prune_side_branches(10).await.unwrap(), 0);
        // A reorg moves the old main blocks to the side table: they become prunable.
        let heavier = extend(&p, &main[..29], 3, NOW - 7_000, "heavier");
        chain.accept(heavier[29..].to_vec(), Origin::Local).await.unwrap();
        assert_eq!(chain.tip().await.unwrap().hash, heavier[31].hash);
        assert_eq!(
            chain.prune_side_branches(0).await.unwrap(),
            3,
            "the old main blocks 29 and 30, and the recent branch"
        );
    }
}
