//! Block validity rules. Each error names the rule a block broke, and the
//! node answers InvalidArgument with that text.
//!
//! Three layers, from cheap to contextual:
//! - [`check_standalone`]: the block alone and the network's parameters
//!   (hash, proof of work, limits, every transaction's signature, nonces
//!   increasing per sender within the block, the future-drift rule);
//! - [`check_child`]: against its parent and ancestors (link, height, the
//!   target retargeting sets, later than the median time past);
//! - state ([`super::state`]): when the block joins the main chain, each
//!   transaction's nonce must be above its sender's last confirmed one.

use std::collections::{HashMap, HashSet};

use ruint::aliases::U256;

use super::block::{Block, Hash};
use super::params::NetworkParams;
use super::target::{self, CompactError};
use super::tx::TxError;

/// A rule a block broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("malformed block: {0}")]
    Malformed(String),
    #[error("rule hash: the block claims hash {claimed} but its header hashes to {actual}")]
    HashMismatch { claimed: String, actual: String },
    #[error("rule bits: {0}")]
    BadBits(CompactError),
    #[error("rule proof-of-work: the hash {hash} is above the target {target:#x}")]
    InsufficientWork { hash: String, target: U256 },
    #[error("rule target: the block says bits {got:#010x} but its place in the chain requires {want:#010x}")]
    WrongTarget { got: u32, want: u32 },
    #[error("rule target-limit: bits {got:#010x} is easier than the network's limit {limit:#010x}")]
    AboveLimit { got: u32, limit: u32 },
    #[error("rule block-txs: {count} transactions, at most {max} are allowed")]
    TooManyTransactions { count: usize, max: usize },
    #[error("rule block-size: {size} bytes, at most {max} are allowed")]
    TooLarge { size: usize, max: usize },
    #[error("rule tx: transaction #{index}: {error}")]
    BadTransaction { index: usize, error: TxError },
    #[error("rule tx-duplicate: transaction #{index} appears twice in the block")]
    DuplicateTransaction { index: usize },
    #[error(
        "rule tx-nonce: transaction #{index} of sender {sender} has nonce {nonce}, not above the {previous} before it"
    )]
    NonceNotIncreasing { index: usize, sender: String, nonce: u64, previous: u64 },
    #[error(
        "rule tx-replay: transaction #{index} of sender {sender} has nonce {nonce}, but the chain already has {last}"
    )]
    StaleNonce { index: usize, sender: String, nonce: u64, last: u64 },
    #[error("rule timestamp-future: timestamp {ts} is {ahead_ms} ms ahead of this node's clock (at most {max_ms} ms)")]
    FromTheFuture { ts: u64, ahead_ms: u64, max_ms: u64 },
    #[error("rule timestamp-mtp: timestamp {ts} is not after the median of the 11 blocks before it ({mtp})")]
    NotAfterMedianTime { ts: u64, mtp: u64 },
    #[error("rule height: the parent is at height {parent}, so the block's index must be {want}, not {got}")]
    BadHeight { got: u64, want: u64, parent: u64 },
    #[error("rule link: prev_hash {prev} is not the hash of the block before it ({parent})")]
    BadLink { prev: String, parent: String },
    #[error("rule genesis: a block at height 0 must be this network's genesis {want}, got {got}")]
    WrongGenesis { got: String, want: String },
}

/// Checks that need only the block itself and the network's parameters
/// (`genesis` is the network's genesis hash, which transaction ids name):
/// [`check_header`], then [`check_transactions`].
pub fn check_standalone(block: &Block, params: &NetworkParams, genesis: &Hash, now_ms: u64) -> Result<(), BlockError> {
    let ids = check_header(block, params, genesis, now_ms)?;
    check_transactions(block, params, genesis, &ids)
}

/// The cheap standalone checks: counts and size, the target, the hash
/// (Merkle root included), the proof of work, the future-drift rule. What a
/// node runs on a block as it arrives, on the async workers; the signatures
/// ([`check_transactions`]) wait for the chain's own thread. Returns the
/// transaction ids it computed for the Merkle root.
/// The checks a header passes on its own: its target is a valid compact
/// number within the network's limit, the header hashes to `claimed`, and
/// that hash meets the target. What headers-first relay checks of an
/// announcement before fetching the body.
pub fn check_proof_of_work(
    header: &super::block::Header,
    nonce: u64,
    claimed: &Hash,
    params: &NetworkParams,
) -> Result<(), BlockError> {
    let target = target::from_compact(header.bits).map_err(BlockError::BadBits)?;
    let limit = params.limit();
    if target > limit {
        return Err(BlockError::AboveLimit { got: header.bits, limit: target::to_compact(limit) });
    }
    let actual = header.hash(nonce);
    if actual != *claimed {
        return Err(BlockError::HashMismatch { claimed: hex::encode(claimed), actual: hex::encode(actual) });
    }
    if !target::meets(&actual, target) {
        return Err(BlockError::InsufficientWork { hash: hex::encode(actual), target });
    }
    Ok(())
}

pub fn check_header(
    block: &Block,
    params: &NetworkParams,
    genesis: &Hash,
    now_ms: u64,
) -> Result<Vec<Hash>, BlockError> {
    if block.transactions.len() > params.max_block_txs {
        return Err(BlockError::TooManyTransactions { count: block.transactions.len(), max: params.max_block_txs });
    }
    let size = block.size();
    if size > params.max_block_bytes {
        return Err(BlockError::TooLarge { size, max: params.max_block_bytes });
    }
    let ids = block.tx_ids(genesis);
    let header = super::block::Header {
        index: block.index,
        timestamp_ms: block.timestamp_ms,
        prev_hash: block.prev_hash,
        merkle_root: super::tx::merkle_root(&ids),
        bits: block.bits,
    };
    check_proof_of_work(&header, block.nonce, &block.hash, params)?;
    if block.index > 0 && block.timestamp_ms > now_ms.saturating_add(params.max_future_ms) {
        return Err(BlockError::FromTheFuture {
            ts: block.timestamp_ms,
            ahead_ms: block.timestamp_ms - now_ms,
            max_ms: params.max_future_ms,
        });
    }
    Ok(ids)
}

/// The transaction checks: no duplicate, each sender's nonces increasing
/// within the block, every payload within the limit, every signature valid.
/// CPU work (an ed25519 verification per transaction): the chain runs it on
/// its own thread. `ids` are the block's transaction ids ([`check_header`]).
pub fn check_transactions(
    block: &Block,
    params: &NetworkParams,
    genesis: &Hash,
    ids: &[Hash],
) -> Result<(), BlockError> {
    let mut seen = HashSet::with_capacity(ids.len());
    let mut last_nonce: HashMap<[u8; 32], u64> = HashMap::new();
    for (index, (tx, id)) in block.transactions.iter().zip(ids).enumerate() {
        if !seen.insert(*id) {
            return Err(BlockError::DuplicateTransaction { index });
        }
        if let Some(previous) = last_nonce.insert(tx.sender, tx.nonce)
            && tx.nonce <= previous
        {
            return Err(BlockError::NonceNotIncreasing {
                index,
                sender: hex::encode(tx.sender),
                nonce: tx.nonce,
                previous,
            });
        }
        tx.check(genesis, params.max_tx_payload).map_err(|error| BlockError::BadTransaction { index, error })?;
    }
    Ok(())
}

/// What a child is checked against besides its parent: the target its
/// place in the chain requires and the median time past of its ancestors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    pub bits: u32,
    pub median_time_past: u64,
}

/// Checks of a block against the parent it claims and its ancestors.
pub fn check_child(block: &Block, parent_hash: &Hash, parent_index: u64, ctx: &Context) -> Result<(), BlockError> {
    if block.prev_hash != *parent_hash {
        return Err(BlockError::BadLink { prev: hex::encode(block.prev_hash), parent: hex::encode(parent_hash) });
    }
    // A parent at the last height has no valid child (found by fuzzing:
    // `index + 1` overflowed).
    let Some(want) = parent_index.checked_add(1) else {
        return Err(BlockError::Malformed(format!("parent height {parent_index} has no successor")));
    };
    if block.index != want {
        return Err(BlockError::BadHeight { got: block.index, want, parent: parent_index });
    }
    if block.bits != ctx.bits {
        return Err(BlockError::WrongTarget { got: block.bits, want: ctx.bits });
    }
    if block.timestamp_ms <= ctx.median_time_past {
        return Err(BlockError::NotAfterMedianTime { ts: block.timestamp_ms, mtp: ctx.median_time_past });
    }
    Ok(())
}

/// Parses a 32-byte hash field.
pub fn hash_field(field: &str, bytes: &[u8]) -> Result<Hash, BlockError> {
    bytes.try_into().map_err(|_| BlockError::Malformed(format!("{field} must be 32 bytes, got {}", bytes.len())))
}

#[cfg(test)]
mod tests;
