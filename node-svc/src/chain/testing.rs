//! Helpers for tests: mining small chains quickly at low difficulty.

use std::sync::atomic::AtomicBool;

use super::block::Block;
use super::params::NetworkParams;
use super::pow;

/// A fast test network (8 bits: ~256 hashes a block).
pub fn params() -> NetworkParams {
    NetworkParams { name: "test".into(), difficulty_bits: 8, ..NetworkParams::devnet() }
}

/// Re-mines `block` as it is (after a field was changed on purpose).
pub fn remine(params: &NetworkParams, mut block: Block) -> Block {
    block.difficulty_bits = params.difficulty_bits;
    let found = pow::mine(&block.header(), 0, &AtomicBool::new(false)).expect("mined");
    block.nonce = found.nonce;
    block.hash = found.hash;
    block
}

/// A valid child of `parent` carrying `data`, stamped `timestamp_ms`.
pub fn mine_child(params: &NetworkParams, parent: &Block, data: &[u8], timestamp_ms: u64) -> Block {
    remine(
        params,
        Block {
            index: parent.index + 1,
            timestamp_ms,
            data: data.to_vec(),
            prev_hash: parent.hash,
            nonce: 0,
            difficulty_bits: params.difficulty_bits,
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

/// `chain` plus `n` more blocks, one millisecond apart from `start_ms`
/// (never before their parent), carrying `data(height)`; `mined` sees each
/// new block (for progress on long chains).
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
        let ts = (start_ms + i as u64).max(parent.timestamp_ms);
        let child = mine_child(params, parent, &data(parent.index + 1), ts);
        mined(&child);
        out.push(child);
    }
    out
}
