//! The chain: validation, storage, fork choice and orphans.
//!
//! Pure rules live in [`block`], [`tx`], [`pow`], [`target`] (compact
//! targets, work, LWMA-1, median time past), [`validate`], [`params`] and
//! [`fork_choice`]; [`Chain`] applies them to the redb tables of [`store`],
//! and moves the main chain through [`state`] (nonces, undo, tx index).
//! Every accepted batch is one write transaction, so a crash leaves either
//! all of it or none of it. [`actor`] owns the writable chain on its own
//! thread and publishes a [`ChainEvent`] after each commit that moved the tip.

pub mod actor;
pub mod block;
mod early;
pub mod finality;
mod finalizing;
pub mod fork_choice;
mod orphans;
pub mod params;
pub mod pow;
mod state;
pub mod store;
pub mod target;
#[cfg(any(test, feature = "test-utils"))]
pub mod testing;
pub mod tx;
pub mod validate;

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableTable};
use ruint::aliases::U256;

pub use actor::{ChainEvent, ChainHandle, Origin};
pub use block::{Block, Hash, ZERO_HASH};
use early::EarlyPool;
pub use early::MAX_EARLY;
use ed25519_dalek::SigningKey;
use finality::{Evidence, Tally, Vote};
pub use finalizing::MAX_EVIDENCE;
use fork_choice::{Candidate, Choice, MainHead};
pub use orphans::MAX_ORPHANS;
use orphans::OrphanPool;
use p2p_proto::storage::RedbCell;
pub use params::NetworkParams;
use store::{BLOCKS, HeaderRec, MAIN, TIP, Tables, VOTED, decode};
pub use store::{ChainReader, Confirmed, Finalized, StoreError, Tip};
pub use tx::Transaction;
pub use validate::BlockError;

/// What became of an offered block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Extended the main chain.
    Appended,
    /// Already stored (or already waiting as an orphan).
    Duplicate,
    /// Parent unknown; kept in the orphan pool.
    Orphan,
    /// Stored on a branch with no more work than the main chain.
    SideBranch,
    /// Its branch now has the most work; the main chain was reorganised,
    /// `depth` blocks were taken off the old main chain.
    Reorg { depth: u64 },
    /// Stamped ahead of our clock by more than the drift rule allows but
    /// within the holding window: held, offered again when its time comes.
    Deferred,
    /// Stored on a branch with more work that forks below the final
    /// checkpoint: it never becomes the main chain. Valid, so nobody is
    /// blamed for it.
    BelowFinal,
}

impl Outcome {
    /// The block is now stored (on some branch).
    pub fn stored(&self) -> bool {
        matches!(self, Outcome::Appended | Outcome::SideBranch | Outcome::Reorg { .. } | Outcome::BelowFinal)
    }
}

/// Result of offering one block.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub hash: Hash,
    pub outcome: Outcome,
}

/// Main-chain blocks swapped by a reorganisation, both lists in height order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reorg {
    pub removed: Vec<Hash>,
    pub added: Vec<Hash>,
}

/// Everything one batch did.
#[derive(Debug, Default)]
pub struct Applied {
    /// One verdict per offered block (plus connected orphans, at the end).
    pub verdicts: Vec<Result<Accepted, BlockError>>,
    /// The new tip, when the batch moved it.
    pub new_tip: Option<Block>,
    /// Each reorganisation the batch caused, in order.
    pub reorgs: Vec<Reorg>,
    /// Finality votes that are new here (to relay), ours included.
    pub votes: Vec<Vote>,
    /// Evidence that is new here (to relay).
    pub evidence: Vec<Evidence>,
    /// The new final checkpoint, when the batch moved it.
    pub finalized: Option<Finalized>,
    /// A quorum voted for this block, which is not stored here: fetch it.
    pub missing_final: Option<Hash>,
}

/// Recent headers the writer reads for retargeting and the median time
/// past; most lookups during a sync hit it (the last 61 blocks).
#[derive(Debug, Default)]
struct HeaderCache {
    map: HashMap<Hash, HeaderRec>,
    order: VecDeque<Hash>,
}

/// Headers the cache keeps.
const HEADER_CACHE: usize = 8192;

impl HeaderCache {
    fn get(&self, hash: &Hash) -> Option<HeaderRec> {
        self.map.get(hash).copied()
    }

    fn insert(&mut self, h: HeaderRec) {
        if self.map.insert(h.hash, h).is_none() {
            self.order.push_back(h.hash);
        }
        while self.map.len() > HEADER_CACHE {
            let Some(old) = self.order.pop_front() else { break };
            self.map.remove(&old);
        }
    }

    fn remove(&mut self, hash: &Hash) {
        self.map.remove(hash);
    }
}

/// The writable chain: owned by one thread (the chain actor).
#[derive(Debug)]
pub struct Chain {
    cell: Arc<RedbCell>,
    params: NetworkParams,
    genesis: Block,
    orphans: OrphanPool,
    early: EarlyPool,
    headers: HeaderCache,
    /// Votes above the final checkpoint and evidence (mirrors the tables).
    tally: Tally,
    finalized: Finalized,
    /// This node's validator key, when it is one of the network's validators.
    validator: Option<SigningKey>,
    /// The last checkpoint this node signed: it never signs one again, nor
    /// an older one, so it cannot equivocate across restarts or reorgs.
    voted: u64,
    /// A write failed after the finality state above may have moved: it is
    /// read back from the store before the next write.
    finality_stale: bool,
}

impl Chain {
    /// Opens the store at `path`, creating genesis on first use, refusing
    /// another network's data, and re-validating the stored main chain.
    pub fn open(path: &Path, params: NetworkParams) -> Result<Self, StoreError> {
        let db = Database::create(path)?;
        let genesis = params.genesis();
        {
            let mut tx = db.begin_write()?;
            tx.set_quick_repair(true);
            {
                let mut t = Tables::open(&tx)?;
                let stored_genesis = t.main.get(0)?.map(|v| v.value().to_vec());
                match stored_genesis {
                    None => {
                        t.put_block(&genesis, target::work(params.limit()))?;
                        t.main.insert(0, genesis.hash.as_slice())?;
                        t.meta.insert(TIP, genesis.hash.as_slice())?;
                    }
                    Some(h) if h == genesis.hash => {}
                    Some(h) => {
                        return Err(StoreError::WrongNetwork {
                            found: "another network (or an older block format)".into(),
                            found_genesis: hex::encode(h),
                            want: params.name.clone(),
                            want_genesis: hex::encode(genesis.hash),
                        });
                    }
                }
            }
            tx.commit()?;
        }
        let (finalized, voted, tally) = Self::load_finality(&db, &params)?;
        let cell = Arc::new(RedbCell::new("chain", path, db));
        let chain = Chain {
            cell,
            params,
            genesis,
            orphans: OrphanPool::default(),
            early: EarlyPool::default(),
            headers: HeaderCache::default(),
            tally,
            finalized,
            validator: None,
            voted,
            finality_stale: false,
        };
        chain.validate_main_chain()?;
        Ok(chain)
    }

    /// The final checkpoint, the last checkpoint signed here, and the
    /// stored votes and evidence (checked when they were stored).
    fn load_finality(db: &Database, params: &NetworkParams) -> Result<(Finalized, u64, Tally), StoreError> {
        let tx = db.begin_write()?;
        let loaded = {
            let t = Tables::open(&tx)?;
            let finalized = store::read_finalized(&t.meta, &t.headers, &t.main)?;
            let voted = match t.meta.get(VOTED)? {
                Some(v) => u64::from_be_bytes(
                    v.value().try_into().map_err(|_| StoreError::Inconsistent("meta `voted` is not 8 bytes".into()))?,
                ),
                None => 0,
            };
            let interval = params.finality.checkpoint_interval.max(1);
            let tip = t.header(&t.tip_hash()?)?.map(|h| h.height).unwrap_or(0);
            let mut tally = Tally::new(finalized.height / interval, tip / interval);
            for entry in t.evidence.iter()? {
                let (_, v) = entry?;
                tally.convict(store::decode_evidence(v.value())?);
            }
            for entry in t.votes.iter()? {
                let (_, v) = entry?;
                let vote = Vote::decode(v.value())
                    .ok_or_else(|| StoreError::Inconsistent("a stored vote is undecodable".into()))?;
                tally.add(vote);
            }
            (finalized, voted, tally)
        };
        tx.commit()?;
        Ok(loaded)
    }

    /// Runs a write that may move the finality state. After a failed one
    /// the state is read back from the store before the next (memory must
    /// never be ahead of disk: a vote signed in a transaction that failed
    /// was never sent, and the store says what was).
    pub(super) fn guarding_finality<T>(
        &mut self,
        write: impl FnOnce(&mut Self) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.finality_stale {
            let db = self.db()?;
            let (finalized, voted, tally) = Self::load_finality(&db, &self.params)?;
            (self.finalized, self.voted, self.tally) = (finalized, voted, tally);
            self.finality_stale = false;
        }
        let result = write(self);
        self.finality_stale = result.is_err();
        result
    }

    /// Makes this node a validator: it signs checkpoints of its main chain
    /// with `key`. Refused (false) when the key is not in the network's set.
    pub fn set_validator(&mut self, key: SigningKey) -> bool {
        if self.params.finality.is_validator(&key.verifying_key().to_bytes()) {
            self.validator = Some(key);
            true
        } else {
            false
        }
    }

    /// The latest final checkpoint.
    pub fn finalized(&self) -> Finalized {
        self.finalized
    }

    fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.cell.get().ok_or(StoreError::Down)
    }

    /// True while the store serves (what grpc.health follows).
    pub fn serving(&self) -> tokio::sync::watch::Receiver<bool> {
        self.cell.subscribe()
    }

    /// Marks the store failed after an I/O error so it can be reopened.
    pub fn storage_failed(&self, cause: &StoreError) {
        if matches!(cause, StoreError::Db(_)) {
            self.cell.fail(cause);
        }
    }

    /// When the store is down, reopens it and proves it commits; true when
    /// it serves.
    pub fn recover_storage(&self) -> bool {
        self.cell.try_recover()
    }

    pub fn reader(&self) -> ChainReader {
        ChainReader { cell: self.cell.clone() }
    }

    pub fn params(&self) -> &NetworkParams {
        &self.params
    }

    pub fn genesis(&self) -> &Block {
        &self.genesis
    }

    pub fn orphan_count(&self) -> usize {
        self.orphans.len()
    }

    /// Blocks held until their timestamp is within the drift rule.
    pub fn early_count(&self) -> usize {
        self.early.len()
    }

    /// Re-checks every main-chain block read back from disk: every rule a
    /// block met when it was accepted (the clock aside).
    fn validate_main_chain(&self) -> Result<(), StoreError> {
        let tx = self.db()?.begin_read()?;
        let main = tx.open_table(MAIN)?;
        let blocks = tx.open_table(BLOCKS)?;
        let headers = tx.open_table(store::HEADERS)?;
        let genesis = self.genesis.hash;
        let mut parent: Option<Block> = None;
        for entry in main.iter()? {
            let (height, hash) = entry?;
            let height = height.value();
            let v = blocks
                .get(hash.value())?
                .ok_or_else(|| StoreError::Inconsistent(format!("main-chain block at height {height} missing")))?;
            let b = decode(v.value())?;
            let corrupt = |error| StoreError::Corrupt { height, error };
            if b.hash.as_slice() != hash.value() || b.index != height {
                return Err(corrupt(BlockError::Malformed("stored under the wrong hash or height".into())));
            }
            match &parent {
                Some(p) => {
                    // The clock is irrelevant to blocks already accepted.
                    validate::check_standalone(&b, &self.params, &genesis, u64::MAX).map_err(corrupt)?;
                    let ctx =
                        store::child_context(&self.params, &HeaderRec::of(p), |h| store::read_header(&headers, h))?;
                    validate::check_child(&b, &p.hash, p.index, &ctx).map_err(corrupt)?;
                }
                None if b != self.genesis => {
                    return Err(corrupt(BlockError::WrongGenesis {
                        got: hex::encode(b.hash),
                        want: hex::encode(self.genesis.hash),
                    }));
                }
                None => {}
            }
            parent = Some(b);
        }
        Ok(())
    }

    /// The context a child of `parent` is checked against, reading
    /// ancestors through the header cache.
    fn context(&mut self, t: &Tables<'_>, parent: &HeaderRec) -> Result<validate::Context, StoreError> {
        let cache = &mut self.headers;
        store::child_context(&self.params, parent, |h| {
            if let Some(rec) = cache.get(h) {
                return Ok(Some(rec));
            }
            let rec = t.header(h)?;
            if let Some(r) = rec {
                cache.insert(r);
            }
            Ok(rec)
        })
    }

    /// Offers blocks in order, all in one transaction; the verdicts of
    /// [`Chain::accept_batch`].
    pub fn accept(&mut self, blocks: Vec<Block>, now_ms: u64) -> Result<Vec<Result<Accepted, BlockError>>, StoreError> {
        Ok(self.accept_batch(blocks, now_ms)?.verdicts)
    }

    /// Offers blocks in order, all in one transaction. Each gets its own
    /// verdict; an invalid one does not stop the others. Orphans whose parent
    /// arrives are connected too (their verdicts are appended at the end).
    /// `Err` only for storage failures, in which case nothing was applied.
    /// Held early blocks whose time has come are offered first (their
    /// verdicts come first); an empty batch with none due writes nothing.
    pub fn accept_batch(&mut self, blocks: Vec<Block>, now_ms: u64) -> Result<Applied, StoreError> {
        self.accept_batch_relaying(blocks, now_ms, &mut |_| {})
    }

    /// [`Chain::accept_batch`], calling `valid_tip` with the new tip once
    /// every block is validated and applied in the write transaction but
    /// before that transaction commits (the fsync): relay may start while
    /// the disk works. Nothing is acknowledged before the commit returns.
    pub fn accept_batch_relaying(
        &mut self,
        blocks: Vec<Block>,
        now_ms: u64,
        valid_tip: &mut dyn FnMut(&Block),
    ) -> Result<Applied, StoreError> {
        self.guarding_finality(|chain| chain.accept_batch_once(blocks, now_ms, valid_tip))
    }

    fn accept_batch_once(
        &mut self,
        blocks: Vec<Block>,
        now_ms: u64,
        valid_tip: &mut dyn FnMut(&Block),
    ) -> Result<Applied, StoreError> {
        let mut due = self.early.take_due(now_ms.saturating_add(self.params.max_future_ms));
        if due.is_empty() && blocks.is_empty() {
            return Ok(Applied::default());
        }
        let mut tx = match self.db().and_then(|db| Ok(db.begin_write()?)) {
            Ok(tx) => tx,
            Err(e) => {
                // Nothing was applied: the due blocks wait for the next try.
                for b in due {
                    self.early.insert(b);
                }
                return Err(e);
            }
        };
        due.extend(blocks);
        let blocks = due;
        // No quick-repair on the block path: it writes redb's allocator
        // state on every commit, which doubled relay latency at 50 nodes
        // (README, Benchmarks). The commit is as durable without it; after
        // a crash the next open repairs by walking the file instead (0.1 s
        // more for a 20,000-block chain here).
        tx.set_quick_repair(false);
        let mut applied = Applied { verdicts: Vec::with_capacity(blocks.len()), ..Applied::default() };
        let mut new_orphans = Vec::new();
        let mut verified = self.verify_transactions(&blocks);
        {
            let mut t = Tables::open(&tx)?;
            let mut queue: VecDeque<Block> = blocks.into();
            while let Some(b) = queue.pop_front() {
                let hash = b.hash;
                let signatures = verified.remove(&hash);
                let verdict = self.accept_one(&mut t, b, now_ms, signatures, &mut new_orphans, &mut applied)?;
                if let Ok(a) = &verdict
                    && a.outcome.stored()
                {
                    // Orphans waiting for this block can connect now.
                    queue.extend(self.orphans.take_children(&hash));
                }
                applied.verdicts.push(verdict);
            }
            if applied.new_tip.is_some()
                || applied.verdicts.iter().any(|v| v.as_ref().is_ok_and(|a| a.outcome.stored()))
            {
                self.after_change(&mut t, &mut applied)?;
            }
        }
        if let Some(tip) = &applied.new_tip {
            valid_tip(tip);
        }
        tx.commit()?;
        for b in new_orphans {
            self.orphans.insert(b);
        }
        Ok(applied)
    }

    /// The transaction checks (signatures above all) of a batch's blocks,
    /// run side by side on a few threads: a sync hands over a thousand
    /// blocks at a time, and verifying them one after another would bound
    /// it by one core. The verdicts are only used once a block's header has
    /// passed; a block without transactions has nothing to check here.
    fn verify_transactions(&self, blocks: &[Block]) -> HashMap<Hash, Result<(), BlockError>> {
        let genesis = self.genesis.hash;
        let check = |b: &Block| {
            let ids = b.tx_ids(&genesis);
            (b.hash, validate::check_transactions(b, &self.params, &genesis, &ids))
        };
        let with_txs: Vec<&Block> = blocks.iter().filter(|b| !b.transactions.is_empty()).collect();
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(4);
        if with_txs.len() < 8 || threads < 2 {
            return with_txs.into_iter().map(check).collect();
        }
        let per = with_txs.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let parts: Vec<_> = with_txs
                .chunks(per)
                .map(|part| scope.spawn(move || part.iter().map(|b| check(b)).collect::<Vec<_>>()))
                .collect();
            parts.into_iter().flat_map(|p| p.join().unwrap_or_default()).collect()
        })
    }

    fn accept_one(
        &mut self,
        t: &mut Tables<'_>,
        b: Block,
        now_ms: u64,
        signatures: Option<Result<(), BlockError>>,
        new_orphans: &mut Vec<Block>,
        applied: &mut Applied,
    ) -> Result<Result<Accepted, BlockError>, StoreError> {
        let hash = b.hash;
        if b.index == 0 {
            // Genesis is defined, not mined, and always stored: it is known
            // by its exact contents; any other height-0 block is wrong.
            return Ok(if b == self.genesis {
                Ok(Accepted { hash, outcome: Outcome::Duplicate })
            } else {
                Err(BlockError::WrongGenesis { got: hex::encode(hash), want: hex::encode(self.genesis.hash) })
            });
        }
        let genesis = self.genesis.hash;
        let standalone = validate::check_header(&b, &self.params, &genesis, now_ms).and_then(|ids| match signatures {
            Some(verdict) => verdict,
            None => validate::check_transactions(&b, &self.params, &genesis, &ids),
        });
        match standalone {
            Ok(()) => {}
            // Early but within the holding window: most likely our clock is behind.
            Err(BlockError::FromTheFuture { ts, .. })
                if ts <= now_ms.saturating_add(self.params.max_future_ms.saturating_mul(2)) =>
            {
                if t.blocks.get(hash.as_slice())?.is_some() {
                    return Ok(Ok(Accepted { hash, outcome: Outcome::Duplicate }));
                }
                let outcome = if self.early.contains(&b) { Outcome::Duplicate } else { Outcome::Deferred };
                self.early.insert(b);
                return Ok(Ok(Accepted { hash, outcome }));
            }
            Err(e) => return Ok(Err(e)),
        }
        if t.blocks.get(hash.as_slice())?.is_some() {
            return Ok(Ok(Accepted { hash, outcome: Outcome::Duplicate }));
        }
        let parent = match self.headers.get(&b.prev_hash) {
            Some(p) => Some(p),
            None => t.header(&b.prev_hash)?,
        };
        let Some(parent) = parent else {
            if self.orphans.contains(&hash) || new_orphans.iter().any(|o| o.hash == hash) {
                return Ok(Ok(Accepted { hash, outcome: Outcome::Duplicate }));
            }
            new_orphans.push(b);
            return Ok(Ok(Accepted { hash, outcome: Outcome::Orphan }));
        };
        let ctx = self.context(t, &parent)?;
        if let Err(e) = validate::check_child(&b, &parent.hash, parent.height, &ctx) {
            return Ok(Err(e));
        }
        let block_work = target::from_compact(b.bits).map(target::work).unwrap_or(U256::ZERO);
        let total = t.work_of(&parent.hash)?.saturating_add(block_work);
        t.put_block(&b, total)?;
        self.headers.insert(HeaderRec::of(&b));

        let tip_hash = t.tip_hash()?;
        let tip = MainHead { hash: tip_hash, work: t.work_of(&tip_hash)?, final_height: self.finalized.height };
        let mut candidate = Candidate { parent: b.prev_hash, work: total, fork_height: parent.height };
        // Where a heavier branch leaves the main chain matters only when it
        // does not simply extend the tip.
        let mut planned = None;
        if total > tip.work && b.prev_hash != tip_hash {
            let sw = state::path(t, &b, &tip_hash)?;
            candidate.fork_height = sw.added[0].index - 1;
            planned = Some(sw);
        }
        match fork_choice::choose(&tip, &candidate) {
            Choice::Keep => {
                t.side.insert((b.index, hash.as_slice()), ())?;
                return Ok(Ok(Accepted { hash, outcome: Outcome::SideBranch }));
            }
            Choice::RevertsFinal => {
                t.side.insert((b.index, hash.as_slice()), ())?;
                tracing::warn!(
                    block = %hex::encode(hash), height = b.index, fork_height = candidate.fork_height,
                    final_height = self.finalized.height,
                    "a heavier branch forks below the final checkpoint: kept aside, never adopted"
                );
                return Ok(Ok(Accepted { hash, outcome: Outcome::BelowFinal }));
            }
            Choice::Extend | Choice::Reorg => {}
        }
        // Extend or reorganise: check the move against the nonce rule first.
        let sw = match planned {
            Some(sw) => sw,
            None => state::path(t, &b, &tip_hash)?,
        };
        let undos = match state::check(t, &sw)? {
            Ok(undos) => undos,
            Err((first_bad, error)) => {
                // That block and everything built on it is invalid for good.
                for bad in &sw.added[first_bad..] {
                    t.delete_block(&bad.hash)?;
                    t.side.remove((bad.index, bad.hash.as_slice()))?;
                    self.headers.remove(&bad.hash);
                }
                tracing::warn!(block = %hex::encode(sw.added[first_bad].hash), %error, "branch refused: it breaks the nonce rule");
                return Ok(Err(error));
            }
        };
        let reorg = state::apply(t, &sw, undos, &genesis)?;
        let outcome = if reorg.removed.is_empty() {
            Outcome::Appended
        } else {
            let depth = reorg.removed.len() as u64;
            tracing::warn!(depth, new_tip = %hex::encode(hash), new_height = b.index, "chain reorganised");
            applied.reorgs.push(reorg);
            Outcome::Reorg { depth }
        };
        t.meta.insert(TIP, hash.as_slice())?;
        applied.new_tip = Some(b);
        Ok(Ok(Accepted { hash, outcome }))
    }
}

impl Chain {
    /// Deletes side branches that end more than `depth` blocks below the
    /// main tip: every side block below that height and every side block
    /// built on a deleted one. At a fixed difficulty a block off an old
    /// height costs as little as one at the tip, so without this anyone
    /// could make a node store blocks forever. Returns how many went.
    pub fn prune_side_branches(&mut self, depth: u64) -> Result<usize, StoreError> {
        let tip_height = self.reader().tip()?.height;
        let Some(cutoff) = tip_height.checked_sub(depth) else { return Ok(0) };
        let tx = self.db()?.begin_read()?;
        let side = tx.open_table(store::SIDE)?;
        if side.range((0u64, [].as_slice())..(cutoff, [].as_slice()))?.next().is_none() {
            return Ok(0);
        }
        let entries: Vec<(u64, Hash)> = side
            .iter()?
            .map(|e| {
                let (k, _) = e?;
                let (h, hash) = k.value();
                Ok((h, store::hash_of(hash)?))
            })
            .collect::<Result<_, StoreError>>()?;
        drop(side);
        drop(tx);
        let mut tx = self.db()?.begin_write()?;
        tx.set_quick_repair(true);
        let mut deleted = std::collections::HashSet::new();
        {
            let mut t = Tables::open(&tx)?;
            // Height order: a parent is decided before its children.
            for (height, hash) in entries {
                let doomed = height < cutoff || t.header(&hash)?.is_some_and(|h| deleted.contains(&h.prev));
                if doomed {
                    t.delete_block(&hash)?;
                    t.side.remove((height, hash.as_slice()))?;
                    self.headers.remove(&hash);
                    deleted.insert(hash);
                }
            }
        }
        tx.commit()?;
        if !deleted.is_empty() {
            tracing::info!(blocks = deleted.len(), below_height = cutoff, "pruned side branches");
        }
        Ok(deleted.len())
    }
}

#[cfg(test)]
mod tests;
