//! The chain's redb tables and read access to them.
//!
//! Tables:
//! - `blocks`: hash → protobuf-encoded block (main chain and side branches).
//! - `work_v2`: hash → cumulative work from genesis through that block
//!   (256-bit, 32 bytes big-endian).
//! - `headers`: hash → (height, timestamp, bits, prev): what retargeting
//!   and the median-time-past rule read of ancestors, without whole blocks.
//! - `main`: height → hash of the main-chain block at that height.
//! - `meta`: `tip` → hash of the main chain's tip.
//! - `side`: (height, hash) of every stored block off the main chain, so
//!   side branches can be found and pruned without scanning `blocks`.
//! - `nonces`: sender → the last nonce the main chain confirmed for it.
//! - `undo`: main-chain block hash → each of its transactions' sender and
//!   that sender's nonce before it (to disconnect the block in a reorg).
//! - `txs`: transaction id → (block hash, position) for main-chain blocks.
//! - `votes`: (checkpoint, validator) → a finality vote at or above the
//!   final checkpoint (the final one's votes justify it to joining nodes).
//! - `evidence`: validator → the two conflicting votes that convicted it.
//! - `meta`: also `final` → hash of the latest final checkpoint (absent:
//!   genesis), and `voted` → the last checkpoint this node signed.

use std::sync::Arc;

use p2p_proto::storage::RedbCell;
use prost::Message;
use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};

use ruint::aliases::U256;

use super::block::{Block, Hash};
use super::finality::{Evidence, Vote};
use super::params::NetworkParams;
use super::target::{self, Past};
use super::tx::Transaction;
use super::validate::{BlockError, Context};
use crate::convert;

pub(super) const BLOCKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("blocks");
pub(super) const WORK: TableDefinition<&[u8], &[u8]> = TableDefinition::new("work_v2");
pub(super) const HEADERS: TableDefinition<&[u8], (u64, u64, u32, [u8; 32])> = TableDefinition::new("headers");
pub(super) const NONCES: TableDefinition<[u8; 32], u64> = TableDefinition::new("nonces");
pub(super) const UNDO: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("undo");
pub(super) const TXS: TableDefinition<[u8; 32], ([u8; 32], u32)> = TableDefinition::new("txs");
pub(super) const MAIN: TableDefinition<u64, &[u8]> = TableDefinition::new("main");
pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(super) const SIDE: TableDefinition<(u64, &[u8]), ()> = TableDefinition::new("side");
pub(super) const VOTES: TableDefinition<(u64, [u8; 32]), &[u8]> = TableDefinition::new("votes");
pub(super) const EVIDENCE: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("evidence");
pub(super) const TIP: &str = "tip";
pub(super) const FINAL: &str = "final";
pub(super) const VOTED: &str = "voted";

/// Storage failures (not a block's fault). The underlying error stays
/// reachable through [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed (I/O, a full disk, a corrupt file).
    #[error("chain store: {0}")]
    Db(#[source] Box<redb::Error>),
    /// A stored record does not decode.
    #[error("chain store: undecodable record: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The tables disagree with each other (a missing tip or parent).
    #[error("chain store: {0}")]
    Inconsistent(String),
    #[error(
        "the data directory holds network {found}'s chain (genesis {found_genesis}), not {want}'s ({want_genesis})"
    )]
    WrongNetwork { found: String, found_genesis: String, want: String, want_genesis: String },
    #[error("the stored chain is invalid at height {height}: {error}")]
    Corrupt { height: u64, error: BlockError },
    /// An earlier I/O error (a full disk) closed the store; it is reopened
    /// in the background.
    #[error("chain store: storage failed (is the disk full?) and is being reopened; retry shortly")]
    Down,
}

macro_rules! db_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Db(Box::new(e.into())) }
        }
    )*};
}
db_from!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// The main chain's tip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tip {
    pub hash: Hash,
    pub height: u64,
    pub work: U256,
    pub timestamp_ms: u64,
}

/// The latest final checkpoint (genesis until one is finalized).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finalized {
    pub height: u64,
    pub hash: Hash,
}

/// What the chain keeps of every block's header for its descendants' rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderRec {
    pub hash: Hash,
    pub height: u64,
    pub timestamp_ms: u64,
    pub bits: u32,
    pub prev: Hash,
}

impl HeaderRec {
    pub fn of(b: &Block) -> Self {
        HeaderRec { hash: b.hash, height: b.index, timestamp_ms: b.timestamp_ms, bits: b.bits, prev: b.prev_hash }
    }

    fn value(&self) -> (u64, u64, u32, [u8; 32]) {
        (self.height, self.timestamp_ms, self.bits, self.prev)
    }
}

type HeaderValue = (u64, u64, u32, [u8; 32]);

/// The header of `hash` from the `headers` table of any transaction.
pub(super) fn read_header(
    headers: &impl ReadableTable<&'static [u8], HeaderValue>,
    hash: &Hash,
) -> Result<Option<HeaderRec>, StoreError> {
    Ok(headers.get(hash.as_slice())?.map(|v| {
        let (height, timestamp_ms, bits, prev) = v.value();
        HeaderRec { hash: *hash, height, timestamp_ms, bits, prev }
    }))
}

/// The context a child of `parent` is checked against: the target
/// retargeting sets for it and the median time past of its ancestors.
/// `lookup` finds a stored header (a cache may stand in front of the table).
pub(super) fn child_context(
    params: &NetworkParams,
    parent: &HeaderRec,
    mut lookup: impl FnMut(&Hash) -> Result<Option<HeaderRec>, StoreError>,
) -> Result<Context, StoreError> {
    let want = if params.retarget { target::LWMA_WINDOW + 1 } else { target::MTP_WINDOW }.max(target::MTP_WINDOW);
    let mut chain = vec![*parent];
    while chain.len() < want {
        let last = chain[chain.len() - 1];
        if last.height == 0 {
            break;
        }
        let prev = lookup(&last.prev)?.ok_or_else(|| {
            StoreError::Inconsistent(format!("header of ancestor {} missing", hex::encode(last.prev)))
        })?;
        chain.push(prev);
    }
    chain.reverse();
    let past: Vec<Past> = chain
        .iter()
        .map(|h| Past { timestamp_ms: h.timestamp_ms, target: target::from_compact(h.bits).unwrap_or(params.limit()) })
        .collect();
    let timestamps: Vec<u64> = chain.iter().map(|h| h.timestamp_ms).collect();
    Ok(Context {
        bits: target::to_compact(target::next_target(&params.retarget_rules(), &past)),
        median_time_past: target::median_time_past(&timestamps),
    })
}

/// Reads a stored cumulative work value.
pub(super) fn work_value(bytes: &[u8]) -> U256 {
    p2p_proto::work::from_bytes(bytes)
}

/// Where a confirmed transaction is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmed {
    pub transaction: Transaction,
    pub block_hash: Hash,
    pub height: u64,
    /// Main-chain blocks from its block through the tip.
    pub confirmations: u64,
}

pub(super) fn encode(b: &Block) -> Vec<u8> {
    convert::block_to_proto(b).encode_to_vec()
}

pub(super) fn decode(bytes: &[u8]) -> Result<Block, StoreError> {
    let p = p2p_proto::node::Block::decode(bytes)?;
    convert::block_from_proto(p).map_err(|e| StoreError::Inconsistent(format!("stored block undecodable: {e}")))
}

/// The main chain's tip hash, from the `meta` table of any transaction.
fn read_tip_hash(meta: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<Hash, StoreError> {
    hash_of(meta.get(TIP)?.ok_or_else(|| StoreError::Inconsistent("no tip".into()))?.value())
}

pub(super) fn hash_of(bytes: &[u8]) -> Result<Hash, StoreError> {
    bytes.try_into().map_err(|_| StoreError::Inconsistent(format!("a stored hash has {} bytes", bytes.len())))
}

/// Read access to the chain; usable from any thread while the writer works
/// (redb readers see the last committed state).
#[derive(Debug, Clone)]
pub struct ChainReader {
    pub(super) cell: Arc<RedbCell>,
}

impl ChainReader {
    fn read(&self) -> Result<ReadTransaction, StoreError> {
        Ok(self.cell.get().ok_or(StoreError::Down)?.begin_read()?)
    }

    pub fn tip(&self) -> Result<Tip, StoreError> {
        let tx = self.read()?;
        let hash = read_tip_hash(&tx.open_table(META)?)?;
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
            let v =
                blocks.get(hash.value())?.ok_or_else(|| StoreError::Inconsistent("main chain block missing".into()))?;
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
                out.push(hash_of(h.value())?);
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

    /// The header of a stored block.
    pub fn header(&self, hash: &Hash) -> Result<Option<HeaderRec>, StoreError> {
        let tx = self.read()?;
        read_header(&tx.open_table(HEADERS)?, hash)
    }

    /// The context the next block on the tip is checked against (its
    /// target and the median time past), for a miner's template.
    pub fn next_context(&self, params: &NetworkParams) -> Result<(Tip, Context), StoreError> {
        let tx = self.read()?;
        let tip_hash = read_tip_hash(&tx.open_table(META)?)?;
        let tip = tip_of(&tx, tip_hash)?;
        let headers = tx.open_table(HEADERS)?;
        let parent =
            read_header(&headers, &tip_hash)?.ok_or_else(|| StoreError::Inconsistent("tip header missing".into()))?;
        let ctx = child_context(params, &parent, |h| read_header(&headers, h))?;
        Ok((tip, ctx))
    }

    /// The last nonce the main chain confirmed for `sender`.
    pub fn last_nonce(&self, sender: &[u8; 32]) -> Result<Option<u64>, StoreError> {
        let tx = self.read()?;
        Ok(tx.open_table(NONCES)?.get(*sender)?.map(|v| v.value()))
    }

    /// The last confirmed nonce of each of `senders`, in one read.
    pub fn last_nonces(&self, senders: &[[u8; 32]]) -> Result<Vec<Option<u64>>, StoreError> {
        let tx = self.read()?;
        let nonces = tx.open_table(NONCES)?;
        senders.iter().map(|s| Ok(nonces.get(*s)?.map(|v| v.value()))).collect()
    }

    /// A main-chain transaction by id.
    pub fn confirmed(&self, id: &Hash) -> Result<Option<Confirmed>, StoreError> {
        let tx = self.read()?;
        let Some(v) = tx.open_table(TXS)?.get(*id)? else { return Ok(None) };
        let (block_hash, position) = v.value();
        let blocks = tx.open_table(BLOCKS)?;
        let b = decode(
            blocks
                .get(block_hash.as_slice())?
                .ok_or_else(|| StoreError::Inconsistent("block of a confirmed transaction missing".into()))?
                .value(),
        )?;
        let transaction = b
            .transactions
            .get(position as usize)
            .cloned()
            .ok_or_else(|| StoreError::Inconsistent("confirmed transaction position out of range".into()))?;
        let tip = tip_of(&tx, read_tip_hash(&tx.open_table(META)?)?)?;
        Ok(Some(Confirmed { transaction, block_hash, height: b.index, confirmations: tip.height + 1 - b.index }))
    }

    /// Whether `id` is confirmed on the main chain.
    pub fn is_confirmed(&self, id: &Hash) -> Result<bool, StoreError> {
        let tx = self.read()?;
        Ok(tx.open_table(TXS)?.get(*id)?.is_some())
    }

    /// The latest final checkpoint; genesis when none is.
    pub fn finalized(&self) -> Result<Finalized, StoreError> {
        let tx = self.read()?;
        read_finalized(&tx.open_table(META)?, &tx.open_table(HEADERS)?, &tx.open_table(MAIN)?)
    }

    /// The stored votes at checkpoints `from..=to`, lowest first.
    pub fn votes(&self, from: u64, to: u64, limit: usize) -> Result<Vec<Vote>, StoreError> {
        let tx = self.read()?;
        let votes = tx.open_table(VOTES)?;
        let mut out = Vec::new();
        for entry in votes.range((from, [0u8; 32])..=(to, [0xff; 32]))?.take(limit) {
            let (_, v) = entry?;
            out.push(
                Vote::decode(v.value())
                    .ok_or_else(|| StoreError::Inconsistent("a stored vote is undecodable".into()))?,
            );
        }
        Ok(out)
    }

    /// The evidence held, at most `limit` pairs.
    pub fn evidence(&self, limit: usize) -> Result<Vec<Evidence>, StoreError> {
        let tx = self.read()?;
        let table = tx.open_table(EVIDENCE)?;
        let mut out = Vec::new();
        for entry in table.iter()?.take(limit) {
            let (_, v) = entry?;
            out.push(decode_evidence(v.value())?);
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

/// The final checkpoint from the `meta` and `headers` tables.
pub(super) fn read_finalized(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    headers: &impl ReadableTable<&'static [u8], HeaderValue>,
    main: &impl ReadableTable<u64, &'static [u8]>,
) -> Result<Finalized, StoreError> {
    match meta.get(FINAL)? {
        Some(h) => {
            let hash = hash_of(h.value())?;
            let header = read_header(headers, &hash)?
                .ok_or_else(|| StoreError::Inconsistent("the final block's header is missing".into()))?;
            Ok(Finalized { height: header.height, hash })
        }
        None => {
            let genesis = main.get(0)?.ok_or_else(|| StoreError::Inconsistent("no genesis".into()))?;
            Ok(Finalized { height: 0, hash: hash_of(genesis.value())? })
        }
    }
}

pub fn encode_evidence(e: &Evidence) -> Vec<u8> {
    let mut out = e.first.encode();
    out.extend_from_slice(&e.second.encode());
    out
}

pub(super) fn decode_evidence(bytes: &[u8]) -> Result<Evidence, StoreError> {
    let half = bytes.len() / 2;
    let bad = || StoreError::Inconsistent("stored evidence is undecodable".into());
    Ok(Evidence {
        first: Vote::decode(&bytes[..half]).ok_or_else(bad)?,
        second: Vote::decode(&bytes[half..]).ok_or_else(bad)?,
    })
}

fn tip_of(tx: &ReadTransaction, hash: Hash) -> Result<Tip, StoreError> {
    let blocks = tx.open_table(BLOCKS)?;
    let work = tx.open_table(WORK)?;
    let b = decode(
        blocks.get(hash.as_slice())?.ok_or_else(|| StoreError::Inconsistent("tip block missing".into()))?.value(),
    )?;
    let w = work.get(hash.as_slice())?.map(|v| work_value(v.value())).unwrap_or(U256::ZERO);
    Ok(Tip { hash, height: b.index, work: w, timestamp_ms: b.timestamp_ms })
}

/// The tables of one write transaction, opened once per batch.
pub(super) struct Tables<'tx> {
    pub blocks: redb::Table<'tx, &'static [u8], &'static [u8]>,
    pub work: redb::Table<'tx, &'static [u8], &'static [u8]>,
    pub headers: redb::Table<'tx, &'static [u8], HeaderValue>,
    pub main: redb::Table<'tx, u64, &'static [u8]>,
    pub meta: redb::Table<'tx, &'static str, &'static [u8]>,
    pub side: redb::Table<'tx, (u64, &'static [u8]), ()>,
    pub nonces: redb::Table<'tx, [u8; 32], u64>,
    pub undo: redb::Table<'tx, [u8; 32], &'static [u8]>,
    pub txs: redb::Table<'tx, [u8; 32], ([u8; 32], u32)>,
    pub votes: redb::Table<'tx, (u64, [u8; 32]), &'static [u8]>,
    pub evidence: redb::Table<'tx, [u8; 32], &'static [u8]>,
}

impl<'tx> Tables<'tx> {
    pub fn open(tx: &'tx WriteTransaction) -> Result<Self, StoreError> {
        Ok(Tables {
            blocks: tx.open_table(BLOCKS)?,
            work: tx.open_table(WORK)?,
            headers: tx.open_table(HEADERS)?,
            main: tx.open_table(MAIN)?,
            meta: tx.open_table(META)?,
            side: tx.open_table(SIDE)?,
            nonces: tx.open_table(NONCES)?,
            undo: tx.open_table(UNDO)?,
            txs: tx.open_table(TXS)?,
            votes: tx.open_table(VOTES)?,
            evidence: tx.open_table(EVIDENCE)?,
        })
    }

    /// Stores a block with its header record and cumulative work.
    pub fn put_block(&mut self, b: &Block, work: U256) -> Result<(), StoreError> {
        self.blocks.insert(b.hash.as_slice(), encode(b).as_slice())?;
        self.work.insert(b.hash.as_slice(), p2p_proto::work::to_bytes(work).as_slice())?;
        self.headers.insert(b.hash.as_slice(), HeaderRec::of(b).value())?;
        Ok(())
    }

    /// Forgets a stored block (pruned, or found invalid).
    pub fn delete_block(&mut self, hash: &Hash) -> Result<(), StoreError> {
        self.blocks.remove(hash.as_slice())?;
        self.work.remove(hash.as_slice())?;
        self.headers.remove(hash.as_slice())?;
        Ok(())
    }

    pub fn header(&self, hash: &Hash) -> Result<Option<HeaderRec>, StoreError> {
        read_header(&self.headers, hash)
    }

    pub fn block(&self, hash: &Hash) -> Result<Option<Block>, StoreError> {
        self.blocks.get(hash.as_slice())?.map(|v| decode(v.value())).transpose()
    }

    pub fn work_of(&self, hash: &Hash) -> Result<U256, StoreError> {
        Ok(self.work.get(hash.as_slice())?.map(|v| work_value(v.value())).unwrap_or(U256::ZERO))
    }

    pub fn tip_hash(&self) -> Result<Hash, StoreError> {
        read_tip_hash(&self.meta)
    }
}
