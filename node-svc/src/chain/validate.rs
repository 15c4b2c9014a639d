//! Block validity rules. Each error names the rule a block broke, and the
//! node answers InvalidArgument with that text.

use super::block::{Block, Hash, leading_zero_bits};
use super::params::NetworkParams;

/// A rule a block broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("malformed block: {0}")]
    Malformed(String),
    #[error("rule hash: the block claims hash {claimed} but its header hashes to {actual}")]
    HashMismatch { claimed: String, actual: String },
    #[error("rule proof-of-work: the hash has {have} leading zero bits, the network needs {need}")]
    InsufficientWork { have: u32, need: u32 },
    #[error("rule difficulty: the block says {got} bits but network {network:?} uses {want}")]
    WrongDifficulty { got: u32, want: u32, network: String },
    #[error("rule data-size: data is {len} bytes, at most {max} are allowed")]
    DataTooLarge { len: usize, max: usize },
    #[error("rule timestamp-future: timestamp {ts} is {ahead_ms} ms ahead of this node's clock (at most {max_ms} ms)")]
    FromTheFuture { ts: u64, ahead_ms: u64, max_ms: u64 },
    #[error("rule timestamp-order: timestamp {ts} is before its parent's ({parent_ts})")]
    BeforeParent { ts: u64, parent_ts: u64 },
    #[error("rule height: the parent is at height {parent}, so the block's index must be {want}, not {got}")]
    BadHeight { got: u64, want: u64, parent: u64 },
    #[error("rule link: prev_hash {prev} is not the hash of the block before it ({parent})")]
    BadLink { prev: String, parent: String },
    #[error("rule genesis: a block at height 0 must be this network's genesis {want}, got {got}")]
    WrongGenesis { got: String, want: String },
}

/// Checks that need only the block itself and the network's parameters.
pub fn check_standalone(block: &Block, params: &NetworkParams, now_ms: u64) -> Result<(), BlockError> {
    if block.difficulty_bits != params.difficulty_bits {
        return Err(BlockError::WrongDifficulty {
            got: block.difficulty_bits,
            want: params.difficulty_bits,
            network: params.name.clone(),
        });
    }
    if block.data.len() > params.max_data_bytes {
        return Err(BlockError::DataTooLarge { len: block.data.len(), max: params.max_data_bytes });
    }
    let actual = block.compute_hash();
    if actual != block.hash {
        return Err(BlockError::HashMismatch { claimed: hex::encode(block.hash), actual: hex::encode(actual) });
    }
    let have = leading_zero_bits(&actual);
    if have < params.difficulty_bits {
        return Err(BlockError::InsufficientWork { have, need: params.difficulty_bits });
    }
    if block.index > 0 && block.timestamp_ms > now_ms.saturating_add(params.max_future_ms) {
        return Err(BlockError::FromTheFuture {
            ts: block.timestamp_ms,
            ahead_ms: block.timestamp_ms - now_ms,
            max_ms: params.max_future_ms,
        });
    }
    Ok(())
}

/// Checks of a block against the parent it claims.
pub fn check_child(block: &Block, parent: &Block) -> Result<(), BlockError> {
    if block.prev_hash != parent.hash {
        return Err(BlockError::BadLink { prev: hex::encode(block.prev_hash), parent: hex::encode(parent.hash) });
    }
    // A parent at the last height has no valid child (found by fuzzing:
    // `index + 1` overflowed).
    let Some(want) = parent.index.checked_add(1) else {
        return Err(BlockError::Malformed(format!("parent height {} has no successor", parent.index)));
    };
    if block.index != want {
        return Err(BlockError::BadHeight { got: block.index, want, parent: parent.index });
    }
    if block.timestamp_ms < parent.timestamp_ms {
        return Err(BlockError::BeforeParent { ts: block.timestamp_ms, parent_ts: parent.timestamp_ms });
    }
    Ok(())
}

/// Parses a 32-byte hash field.
pub fn hash_field(field: &str, bytes: &[u8]) -> Result<Hash, BlockError> {
    bytes.try_into().map_err(|_| BlockError::Malformed(format!("{field} must be 32 bytes, got {}", bytes.len())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::testing::{chain_of, params};
    use proptest::prelude::*;

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn a_parent_at_the_last_height_is_refused_not_overflowed() {
        // Regression from fuzz/artifacts/block_validation (cargo fuzz, block_validation).
        let p = params();
        let chain = chain_of(&p, 1, NOW - 10_000);
        let mut parent = chain[1].clone();
        parent.index = u64::MAX;
        let mut child = chain[1].clone();
        child.prev_hash = parent.hash;
        assert!(matches!(check_child(&child, &parent), Err(BlockError::Malformed(_))));
    }

    #[test]
    fn a_mined_chain_is_valid() {
        let p = params();
        let chain = chain_of(&p, 5, NOW - 10_000);
        for pair in chain.windows(2) {
            check_standalone(&pair[1], &p, NOW).unwrap();
            check_child(&pair[1], &pair[0]).unwrap();
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Changing any one field of a valid block, without re-mining it, is caught.
        #[test]
        fn every_single_field_tamper_is_rejected(field in 0usize..7, delta in 1u64..1_000_000, which in 1usize..4) {
            let p = params();
            let chain = chain_of(&p, 4, NOW - 10_000);
            let (parent, mut b) = (chain[which - 1].clone(), chain[which].clone());
            match field {
                0 => b.index = b.index.wrapping_add(delta),
                1 => b.timestamp_ms = b.timestamp_ms.wrapping_add(delta),
                2 => b.data.extend_from_slice(&delta.to_be_bytes()),
                3 => b.prev_hash[(delta % 32) as usize] ^= 0x80,
                4 => b.nonce = b.nonce.wrapping_add(delta),
                5 => b.difficulty_bits = b.difficulty_bits.wrapping_add(delta as u32),
                _ => b.hash[(delta % 32) as usize] ^= 0x01,
            }
            let verdict = check_standalone(&b, &p, NOW).and_then(|()| check_child(&b, &parent));
            prop_assert!(verdict.is_err(), "tampered field {} accepted", field);
        }
    }

    #[test]
    fn contextual_rules_catch_well_mined_but_misplaced_blocks() {
        use crate::chain::testing::mine_child;
        let p = params();
        let chain = chain_of(&p, 3, NOW - 10_000);
        // Properly mined, but claims the wrong height.
        let mut wrong_height = mine_child(&p, &chain[1], b"x", NOW - 5_000);
        wrong_height.index = 5;
        let wrong_height = crate::chain::testing::remine(&p, wrong_height);
        assert!(matches!(check_child(&wrong_height, &chain[1]), Err(BlockError::BadHeight { .. })));
        // Properly mined, but older than its parent.
        let early = crate::chain::testing::remine(
            &p,
            crate::chain::block::Block {
                timestamp_ms: chain[1].timestamp_ms - 1,
                ..mine_child(&p, &chain[1], b"y", NOW)
            },
        );
        assert!(matches!(check_child(&early, &chain[1]), Err(BlockError::BeforeParent { .. })));
        // Too far in the future.
        let future = mine_child(&p, &chain[2], b"z", NOW + p.max_future_ms + 1);
        assert!(matches!(check_standalone(&future, &p, NOW), Err(BlockError::FromTheFuture { .. })));
        // Too much data.
        let big = mine_child(&p, &chain[2], &vec![0u8; p.max_data_bytes + 1], NOW);
        assert!(matches!(check_standalone(&big, &p, NOW), Err(BlockError::DataTooLarge { .. })));
        // Another network's difficulty.
        let other = NetworkParams { difficulty_bits: p.difficulty_bits + 1, ..p.clone() };
        let wrong_bits = mine_child(&other, &chain[2], b"w", NOW);
        assert!(matches!(check_standalone(&wrong_bits, &p, NOW), Err(BlockError::WrongDifficulty { .. })));
        // Hashes correctly but lacks the work: walk nonces until one misses the target.
        let mut lazy = mine_child(&p, &chain[2], b"v", NOW);
        loop {
            lazy.nonce += 1;
            lazy.hash = lazy.compute_hash();
            if crate::chain::block::leading_zero_bits(&lazy.hash) < p.difficulty_bits {
                break;
            }
        }
        assert!(matches!(check_standalone(&lazy, &p, NOW), Err(BlockError::InsufficientWork { .. })));
    }
}
