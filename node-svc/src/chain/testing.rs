//! Helpers for tests: mining small chains quickly at low difficulty, each
//! block carrying one transaction of a test key (nonce = height).

use std::sync::atomic::AtomicBool;

use ed25519_dalek::SigningKey;

use super::block::Block;
use super::params::NetworkParams;
use super::pow;
use super::target::{self, Past};
use super::tx::Transaction;

/// A fast test network (8 bits: ~256 hashes a block, no retargeting).
pub fn params() -> NetworkParams {
    NetworkParams { name: "test".into(), difficulty_bits: 8, retarget: false, ..NetworkParams::devnet() }
}

/// The key test blocks' transactions are signed with.
pub fn test_key() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

/// A transaction of the test key carrying `payload` with `nonce`.
pub fn tx(params: &NetworkParams, nonce: u64, payload: &[u8]) -> Transaction {
    Transaction::sign(&test_key(), &params.genesis().hash, nonce, 1, payload.to_vec())
}

/// Re-mines `block` as it is (after a field was changed on purpose).
pub fn remine(params: &NetworkParams, mut block: Block) -> Block {
    let found = pow::mine(&block.header(&params.genesis().hash), 0, &AtomicBool::new(false)).expect("mined");
    block.nonce = found.nonce;
    block.hash = found.hash;
    block
}

/// The target a child of `chain`'s last block needs (LWMA over `chain`).
pub fn next_bits(params: &NetworkParams, chain: &[Block]) -> u32 {
    let past: Vec<Past> = chain
        .iter()
        .map(|b| Past { timestamp_ms: b.timestamp_ms, target: target::from_compact(b.bits).unwrap_or(params.limit()) })
        .collect();
    target::to_compact(target::next_target(&params.retarget_rules(), &past))
}

/// A valid child of `parent` carrying `data` (one transaction of the test
/// key; none when `data` is empty), stamped `timestamp_ms`, at the network's
/// limit (right for networks without retargeting, and their first blocks).
pub fn mine_child(params: &NetworkParams, parent: &Block, data: &[u8], timestamp_ms: u64) -> Block {
    child_with_bits(params, parent, data, timestamp_ms, target::to_compact(params.limit()))
}

fn child_with_bits(params: &NetworkParams, parent: &Block, data: &[u8], timestamp_ms: u64, bits: u32) -> Block {
    let transactions = if data.is_empty() { Vec::new() } else { vec![tx(params, parent.index + 1, data)] };
    remine(
        params,
        Block {
            index: parent.index + 1,
            timestamp_ms,
            prev_hash: parent.hash,
            bits,
            nonce: 0,
            transactions,
            hash: [0; 32],
        },
    )
}

/// Genesis followed by `n` blocks, one millisecond apart from `start_ms`.
pub fn chain_of(params: &NetworkParams, n: usize, start_ms: u64) -> Vec<Block> {
    extend(params, &[params.genesis()], n, start_ms, "b")
}

/// `chain` plus `n` more blocks whose data starts with `tag` (so two
/// branches built from one parent differ).
pub fn extend(params: &NetworkParams, chain: &[Block], n: usize, start_ms: u64, tag: &str) -> Vec<Block> {
    extend_with(params, chain, n, start_ms, |height| format!("{tag}{height}").into_bytes(), |_| {})
}

/// `chain` (from genesis) plus `n` more blocks, one millisecond apart from
/// `start_ms` (always after their parent), carrying `data(height)`, each at
/// the target its place requires; `mined` sees each new block (for progress
/// on long chains).
pub fn extend_with(
    params: &NetworkParams,
    chain: &[Block],
    n: usize,
    start_ms: u64,
    mut data: impl FnMut(u64) -> Vec<u8>,
    mut mined: impl FnMut(&Block),
) -> Vec<Block> {
    let mut out = chain.to_vec();
    for i in 0..n {
        let parent = out.last().expect("non-empty chain");
        let ts = (start_ms + i as u64).max(parent.timestamp_ms + 1);
        let bits = next_bits(params, &out);
        let child = child_with_bits(params, parent, &data(parent.index + 1), ts, bits);
        mined(&child);
        out.push(child);
    }
    out
}
