//! The chain's redb tables and read access to them.
//!
//! Tables:
//! - `blocks`: hash → protobuf-encoded block (main chain and side branches).
//! - `work`: hash → cumulative work from genesis through that block (u128).
//! - `main`: height → hash of the main-chain block at that height.
//! - `meta`: `tip` → hash of the main chain's tip.
//! - `side`: (height, hash) of every stored block off the main chain, so
//!   side branches can be found and pruned without scanning `blocks`.

use std::sync::Arc;

use p2p_proto::storage::RedbCell;
use prost::Message;
use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};

use super::block::{Block, Hash};
use super::validate::BlockError;
use crate::convert;

pub(super) const BLOCKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("blocks");
pub(super) const WORK: TableDefinition<&[u8], u128> = TableDefinition::new("work");
pub(super) const MAIN: TableDefinition<u64, &[u8]> = TableDefinition::new("main");
pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(super) const SIDE: TableDefinition<(u64, &[u8]), ()> = TableDefinition::new("side");
pub(super) const TIP: &str = "tip";

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
    pub work: u128,
    pub timestamp_ms: u64,
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
    let b = decode(
        blocks.get(hash.as_slice())?.ok_or_else(|| StoreError::Inconsistent("tip block missing".into()))?.value(),
    )?;
    let w = work.get(hash.as_slice())?.map(|v| v.value()).unwrap_or(0);
    Ok(Tip { hash, height: b.index, work: w, timestamp_ms: b.timestamp_ms })
}

/// The tables of one write transaction, opened once per batch.
pub(super) struct Tables<'tx> {
    pub blocks: redb::Table<'tx, &'static [u8], &'static [u8]>,
    pub work: redb::Table<'tx, &'static [u8], u128>,
    pub main: redb::Table<'tx, u64, &'static [u8]>,
    pub meta: redb::Table<'tx, &'static str, &'static [u8]>,
    pub side: redb::Table<'tx, (u64, &'static [u8]), ()>,
}

impl<'tx> Tables<'tx> {
    pub fn open(tx: &'tx WriteTransaction) -> Result<Self, StoreError> {
        Ok(Tables {
            blocks: tx.open_table(BLOCKS)?,
            work: tx.open_table(WORK)?,
            main: tx.open_table(MAIN)?,
            meta: tx.open_table(META)?,
            side: tx.open_table(SIDE)?,
        })
    }

    pub fn block(&self, hash: &Hash) -> Result<Option<Block>, StoreError> {
        self.blocks.get(hash.as_slice())?.map(|v| decode(v.value())).transpose()
    }

    pub fn work_of(&self, hash: &Hash) -> Result<u128, StoreError> {
        Ok(self.work.get(hash.as_slice())?.map(|v| v.value()).unwrap_or(0))
    }

    pub fn tip_hash(&self) -> Result<Hash, StoreError> {
        read_tip_hash(&self.meta)
    }
}
