//! The chain: validation, storage, fork choice and orphans.
//!
//! Pure rules live in [`block`], [`pow`], [`validate`] and [`params`]; [`Chain`]
//! applies them to the redb store. Every accepted batch is one write
//! transaction, so a crash leaves either all of it or none of it.
//!
//! Tables:
//! - `blocks`: hash → protobuf-encoded block (main chain and side branches).
//! - `work`: hash → cumulative work from genesis through that block (u128).
//! - `main`: height → hash of the main-chain block at that height.
//! - `meta`: `tip` → hash of the main chain's tip.
//!
//! Fork choice: the branch with the most cumulative work is the main chain;
//! a branch must have strictly more work to replace it, so ties keep the
//! block seen first.

pub mod block;
pub mod params;
pub mod pow;
pub mod testing;
pub mod validate;

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;

use prost::Message;
use redb::{Database, ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};

pub use block::{Block, Hash, ZERO_HASH};
pub use params::NetworkParams;
pub use validate::BlockError;

const BLOCKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("blocks");
const WORK: TableDefinition<&[u8], u128> = TableDefinition::new("work");
const MAIN: TableDefinition<u64, &[u8]> = TableDefinition::new("main");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const TIP: &str = "tip";

/// Most blocks kept waiting for their parent.
pub const MAX_ORPHANS: usize = 1024;

/// Storage failures (not a block's fault).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("chain store: {0}")]
    Storage(String),
    #[error(
        "the data directory holds network {found}'s chain (genesis {found_genesis}), not {want}'s ({want_genesis})"
    )]
    WrongNetwork { found: String, found_genesis: String, want: String, want_genesis: String },
    #[error("the stored chain is invalid at height {height}: {error}")]
    Corrupt { height: u64, error: BlockError },
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Storage(e.to_string()) }
        }
    )*};
}
storage_from!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    prost::DecodeError
);

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
}

/// The main chain's tip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tip {
    pub hash: Hash,
    pub height: u64,
    pub work: u128,
    pub timestamp_ms: u64,
}

/// Result of offering one block.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub hash: Hash,
    pub outcome: Outcome,
}

/// Converts the wire form, checking field sizes.
pub fn from_proto(b: p2p_proto::node::Block) -> Result<Block, BlockError> {
    Ok(Block {
        index: b.index,
        timestamp_ms: b.timestamp_unix_ms,
        prev_hash: validate::hash_field("prev_hash", &b.prev_hash)?,
        hash: validate::hash_field("hash", &b.hash)?,
        data: b.data,
        nonce: b.nonce,
        difficulty_bits: b.difficulty_bits,
    })
}

pub fn to_proto(b: &Block) -> p2p_proto::node::Block {
    p2p_proto::node::Block {
        index: b.index,
        timestamp_unix_ms: b.timestamp_ms,
        data: b.data.clone(),
        prev_hash: b.prev_hash.to_vec(),
        nonce: b.nonce,
        difficulty_bits: b.difficulty_bits,
        hash: b.hash.to_vec(),
    }
}

fn encode(b: &Block) -> Vec<u8> {
    to_proto(b).encode_to_vec()
}

fn decode(bytes: &[u8]) -> Result<Block, StoreError> {
    let p = p2p_proto::node::Block::decode(bytes)?;
    from_proto(p).map_err(|e| StoreError::Storage(format!("stored block undecodable: {e}")))
}

/// Read access to the chain; usable from any thread while the writer works
/// (redb readers see the last committed state).
#[derive(Debug, Clone)]
pub struct ChainReader {
    db: Arc<Database>,
}

impl ChainReader {
    fn read(&self) -> Result<ReadTransaction, StoreError> {
        Ok(self.db.begin_read()?)
    }

    pub fn tip(&self) -> Result<Tip, StoreError> {
        let tx = self.read()?;
        let meta = tx.open_table(META)?;
        let hash: Hash = meta
            .get(TIP)?
            .ok_or_else(|| StoreError::Storage("no tip".into()))?
            .value()
            .try_into()
            .map_err(|_| StoreError::Storage("bad tip".into()))?;
        drop(meta);
        tip_of(&tx, hash)
    }

    pub fn block(&self, hash: &Hash) -> Result<Option<Block>, StoreError> {
        let tx = self.read()?;
        let blocks = tx.open_table(BLOCKS)?;
        blocks.get(hash.as_slice())?.map(|v| decode(v.value())).transpose()
    }

    pub fn contains(&self, hash: &Hash) -> Result<bool, StoreError> {
        let tx = self.read()?;
        Ok(tx.open_table(BLOCKS)?.get(hash.as_slice())?.is_some())
    }

    /// Main-chain blocks from `height`, at most `limit`.
    pub fn main_from(&self, height: u64, limit: usize) -> Result<Vec<Block>, StoreError> {
        let tx = self.read()?;
        let main = tx.open_table(MAIN)?;
        let blocks = tx.open_table(BLOCKS)?;
        let mut out = Vec::with_capacity(limit.min(1024));
        for entry in main.range(height..)?.take(limit) {
            let (_, hash) = entry?;
            let v = blocks.get(hash.value())?.ok_or_else(|| StoreError::Storage("main chain block missing".into()))?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    /// Bitcoin-style block locator: the last 10 main-chain hashes, then
    /// exponentially sparser ones, always ending with genesis.
    pub fn locator(&self) -> Result<Vec<Hash>, StoreError> {
        let tx = self.read()?;
        let main = tx.open_table(MAIN)?;
        let tip = main.last()?.map(|(k, _)| k.value()).unwrap_or(0);
        let mut out = Vec::new();
        let mut height = tip;
        let mut step = 1u64;
        loop {
            if let Some(h) = main.get(height)? {
                out.push(h.value().try_into().map_err(|_| StoreError::Storage("bad hash".into()))?);
            }
            if height == 0 {
                break;
            }
            if out.len() >= 10 {
                step = step.saturating_mul(2);
            }
            height = height.saturating_sub(step);
        }
        Ok(out)
    }

    /// Height right after the first locator hash that is on our main chain
    /// (0 when none is: then the peer shares no more than genesis with us).
    pub fn fork_point(&self, locator: &[Hash]) -> Result<u64, StoreError> {
        let tx = self.read()?;
        let main = tx.open_table(MAIN)?;
        let blocks = tx.open_table(BLOCKS)?;
        for hash in locator {
            let Some(v) = blocks.get(hash.as_slice())? else { continue };
            let height = decode(v.value())?.index;
            if main.get(height)?.is_some_and(|h| h.value() == hash.as_slice()) {
                return Ok(height + 1);
            }
        }
        Ok(0)
    }
}

fn tip_of(tx: &ReadTransaction, hash: Hash) -> Result<Tip, StoreError> {
    let blocks = tx.open_table(BLOCKS)?;
    let work = tx.open_table(WORK)?;
    let b =
        decode(blocks.get(hash.as_slice())?.ok_or_else(|| StoreError::Storage("tip block missing".into()))?.value())?;
    let w = work.get(hash.as_slice())?.map(|v| v.value()).unwrap_or(0);
    Ok(Tip { hash, height: b.index, work: w, timestamp_ms: b.timestamp_ms })
}

/// The writable chain: owned by one thread (the node's chain actor).
#[derive(Debug)]
pub struct Chain {
    db: Arc<Database>,
    params: NetworkParams,
    genesis: Block,
    orphans: OrphanPool,
}

impl Chain {
    /// Opens the store at `path`, creating genesis on first use, refusing
    /// another network's data, and re-validating the stored main chain.
    pub fn open(path: &Path, params: NetworkParams) -> Result<Self, StoreError> {
        let db = Arc::new(Database::create(path)?);
        let genesis = params.genesis();
        {
            let mut tx = db.begin_write()?;
            tx.set_quick_repair(true);
            {
                let mut blocks = tx.open_table(BLOCKS)?;
                let mut work = tx.open_table(WORK)?;
                let mut main = tx.open_table(MAIN)?;
                let mut meta = tx.open_table(META)?;
                let stored_genesis = main.get(0)?.map(|v| v.value().to_vec());
                match stored_genesis {
                    None => {
                        blocks.insert(genesis.hash.as_slice(), encode(&genesis).as_slice())?;
                        work.insert(genesis.hash.as_slice(), block::work(genesis.difficulty_bits))?;
                        main.insert(0, genesis.hash.as_slice())?;
                        meta.insert(TIP, genesis.hash.as_slice())?;
                    }
                    Some(h) if h == genesis.hash => {}
                    Some(h) => {
                        let found = blocks.get(h.as_slice())?.map(|v| decode(v.value())).transpose()?;
                        let name = found
                            .map(|b| String::from_utf8_lossy(&b.data).into_owned())
                            .unwrap_or_else(|| "an unknown network".into());
                        return Err(StoreError::WrongNetwork {
                            found: name,
                            found_genesis: hex::encode(h),
                            want: params.name.clone(),
                            want_genesis: hex::encode(genesis.hash),
                        });
                    }
                }
            }
            tx.commit()?;
        }
        let chain = Chain { db, params, genesis, orphans: OrphanPool::default() };
        chain.validate_main_chain()?;
        Ok(chain)
    }

    pub fn reader(&self) -> ChainReader {
        ChainReader { db: self.db.clone() }
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

    /// Re-checks every main-chain block read back from disk.
    fn validate_main_chain(&self) -> Result<(), StoreError> {
        let tx = self.db.begin_read()?;
        let main = tx.open_table(MAIN)?;
        let blocks = tx.open_table(BLOCKS)?;
        let mut parent: Option<Block> = None;
        for entry in main.iter()? {
            let (height, hash) = entry?;
            let height = height.value();
            let v = blocks
                .get(hash.value())?
                .ok_or_else(|| StoreError::Storage(format!("main-chain block at height {height} missing")))?;
            let b = decode(v.value())?;
            let corrupt = |error| StoreError::Corrupt { height, error };
            if b.hash.as_slice() != hash.value() || b.index != height {
                return Err(corrupt(BlockError::Malformed("stored under the wrong hash or height".into())));
            }
            match &parent {
                Some(p) => {
                    // The clock is irrelevant to blocks already accepted.
                    validate::check_standalone(&b, &self.params, u64::MAX).map_err(corrupt)?;
                    validate::check_child(&b, p).map_err(corrupt)?;
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

    /// Offers blocks in order, all in one transaction. Each gets its own
    /// verdict; an invalid one does not stop the others. Orphans whose parent
    /// arrives are connected too (their verdicts are appended at the end).
    /// `Err` only for storage failures, in which case nothing was applied.
    pub fn accept(&mut self, blocks: Vec<Block>, now_ms: u64) -> Result<Vec<Result<Accepted, BlockError>>, StoreError> {
        let mut tx = self.db.begin_write()?;
        tx.set_quick_repair(true);
        let mut verdicts = Vec::with_capacity(blocks.len());
        let mut new_orphans = Vec::new();
        {
            let mut t = Tables::open(&tx)?;
            let mut queue: VecDeque<Block> = blocks.into();
            while let Some(b) = queue.pop_front() {
                let hash = b.hash;
                let verdict = self.accept_one(&mut t, b, now_ms, &mut new_orphans)?;
                if let Ok(a) = &verdict
                    && a.outcome != Outcome::Orphan
                    && a.outcome != Outcome::Duplicate
                {
                    // Orphans waiting for this block can connect now.
                    queue.extend(self.orphans.take_children(&hash));
                }
                verdicts.push(verdict);
            }
        }
        tx.commit()?;
        for b in new_orphans {
            self.orphans.insert(b);
        }
        Ok(verdicts)
    }

    fn accept_one(
        &mut self,
        t: &mut Tables<'_>,
        b: Block,
        now_ms: u64,
        new_orphans: &mut Vec<Block>,
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
        if let Err(e) = validate::check_standalone(&b, &self.params, now_ms) {
            return Ok(Err(e));
        }
        if t.blocks.get(hash.as_slice())?.is_some() {
            return Ok(Ok(Accepted { hash, outcome: Outcome::Duplicate }));
        }
        let parent = t.blocks.get(b.prev_hash.as_slice())?.map(|v| decode(v.value())).transpose()?;
        let Some(parent) = parent else {
            if self.orphans.contains(&hash) || new_orphans.iter().any(|o| o.hash == hash) {
                return Ok(Ok(Accepted { hash, outcome: Outcome::Duplicate }));
            }
            new_orphans.push(b);
            return Ok(Ok(Accepted { hash, outcome: Outcome::Orphan }));
        };
        if let Err(e) = validate::check_child(&b, &parent) {
            return Ok(Err(e));
        }
        let parent_work = t.work.get(parent.hash.as_slice())?.map(|v| v.value()).unwrap_or(0);
        let total = parent_work.saturating_add(block::work(b.difficulty_bits));
        t.blocks.insert(hash.as_slice(), encode(&b).as_slice())?;
        t.work.insert(hash.as_slice(), total)?;

        let tip_hash: Hash = {
            let v = t.meta.get(TIP)?.ok_or_else(|| StoreError::Storage("no tip".into()))?;
            v.value().try_into().map_err(|_| StoreError::Storage("bad tip".into()))?
        };
        let tip_work = t.work.get(tip_hash.as_slice())?.map(|v| v.value()).unwrap_or(0);
        if total <= tip_work {
            return Ok(Ok(Accepted { hash, outcome: Outcome::SideBranch }));
        }
        let outcome = if b.prev_hash == tip_hash {
            t.main.insert(b.index, hash.as_slice())?;
            Outcome::Appended
        } else {
            let tip_height = t
                .blocks
                .get(tip_hash.as_slice())?
                .map(|v| decode(v.value()))
                .transpose()?
                .map(|x| x.index)
                .unwrap_or(0);
            let fork_height = switch_main_chain(t, &b)?;
            let depth = tip_height - fork_height;
            tracing::warn!(depth, fork_height, new_tip = %hex::encode(hash), new_height = b.index, "chain reorganised");
            Outcome::Reorg { depth }
        };
        t.meta.insert(TIP, hash.as_slice())?;
        Ok(Ok(Accepted { hash, outcome }))
    }
}

/// The tables of one write transaction, opened once per batch.
struct Tables<'tx> {
    blocks: redb::Table<'tx, &'static [u8], &'static [u8]>,
    work: redb::Table<'tx, &'static [u8], u128>,
    main: redb::Table<'tx, u64, &'static [u8]>,
    meta: redb::Table<'tx, &'static str, &'static [u8]>,
}

impl<'tx> Tables<'tx> {
    fn open(tx: &'tx WriteTransaction) -> Result<Self, StoreError> {
        Ok(Tables {
            blocks: tx.open_table(BLOCKS)?,
            work: tx.open_table(WORK)?,
            main: tx.open_table(MAIN)?,
            meta: tx.open_table(META)?,
        })
    }
}

/// Makes `new_tip`'s branch the main chain; returns the fork height.
fn switch_main_chain(t: &mut Tables<'_>, new_tip: &Block) -> Result<u64, StoreError> {
    // Drop main-chain entries above the new tip (a heavier but shorter branch).
    let above: Vec<u64> =
        t.main.range(new_tip.index + 1..)?.map(|e| e.map(|(k, _)| k.value())).collect::<Result<_, _>>()?;
    for h in above {
        t.main.remove(h)?;
    }
    let mut cur = new_tip.clone();
    loop {
        if t.main.get(cur.index)?.is_some_and(|h| h.value() == cur.hash.as_slice()) {
            return Ok(cur.index);
        }
        t.main.insert(cur.index, cur.hash.as_slice())?;
        if cur.index == 0 {
            return Ok(0);
        }
        cur = decode(
            t.blocks
                .get(cur.prev_hash.as_slice())?
                .ok_or_else(|| StoreError::Storage("branch parent missing during reorg".into()))?
                .value(),
        )?;
    }
}

/// Blocks whose parent is unknown, bounded, oldest evicted first, indexed
/// by parent so connecting them costs nothing when the pool is empty.
#[derive(Debug, Default)]
struct OrphanPool {
    by_hash: HashMap<Hash, Block>,
    by_parent: HashMap<Hash, Vec<Hash>>,
    order: VecDeque<Hash>,
}

impl OrphanPool {
    fn len(&self) -> usize {
        self.by_hash.len()
    }

    fn contains(&self, hash: &Hash) -> bool {
        self.by_hash.contains_key(hash)
    }

    fn insert(&mut self, b: Block) {
        if self.by_hash.contains_key(&b.hash) {
            return;
        }
        while self.by_hash.len() >= MAX_ORPHANS {
            let Some(old) = self.order.pop_front() else { break };
            self.remove(&old);
        }
        self.order.push_back(b.hash);
        self.by_parent.entry(b.prev_hash).or_default().push(b.hash);
        self.by_hash.insert(b.hash, b);
    }

    fn remove(&mut self, hash: &Hash) -> Option<Block> {
        let b = self.by_hash.remove(hash)?;
        if let Some(siblings) = self.by_parent.get_mut(&b.prev_hash) {
            siblings.retain(|h| h != hash);
            if siblings.is_empty() {
                self.by_parent.remove(&b.prev_hash);
            }
        }
        Some(b)
    }

    /// Removes and returns the orphans whose parent is `parent`.
    fn take_children(&mut self, parent: &Hash) -> Vec<Block> {
        let Some(children) = self.by_parent.remove(parent) else { return Vec::new() };
        self.order.retain(|h| !children.contains(h));
        children.iter().filter_map(|h| self.by_hash.remove(h)).collect()
    }
}

#[cfg(test)]
mod tests;
