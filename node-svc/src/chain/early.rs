//! Blocks that are valid but stamped a little ahead of our clock. Such a
//! block is most likely fine and our clock behind, so it is neither refused
//! for good nor held against whoever relayed it: it waits here, bounded,
//! and is offered again once its timestamp is within the drift rule
//! (Bitcoin Core keeps such blocks the same way).

use std::collections::BTreeMap;

use super::block::{Block, Hash};

/// Most blocks held.
pub const MAX_EARLY: usize = 64;

#[derive(Debug, Default)]
pub(super) struct EarlyPool {
    /// By (timestamp, hash): the soonest due first.
    blocks: BTreeMap<(u64, Hash), Block>,
}

impl EarlyPool {
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    pub fn contains(&self, b: &Block) -> bool {
        self.blocks.contains_key(&(b.timestamp_ms, b.hash))
    }

    /// Holds `b`; when full, the block due last makes room (or `b` is dropped
    /// if it is due last itself).
    pub fn insert(&mut self, b: Block) {
        let key = (b.timestamp_ms, b.hash);
        if self.blocks.len() >= MAX_EARLY {
            match self.blocks.last_key_value() {
                Some((last, _)) if *last > key => {
                    let last = *last;
                    self.blocks.remove(&last);
                }
                _ => return,
            }
        }
        self.blocks.insert(key, b);
    }

    /// Takes the blocks whose timestamp is at most `until_ms`.
    pub fn take_due(&mut self, until_ms: u64) -> Vec<Block> {
        let later = self.blocks.split_off(&(until_ms.saturating_add(1), [0u8; 32]));
        std::mem::replace(&mut self.blocks, later).into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::testing::{chain_of, params};

    #[test]
    fn due_blocks_come_out_in_time_order_and_the_pool_is_bounded() {
        let p = params();
        let mut pool = EarlyPool::default();
        let blocks = chain_of(&p, 3, 1_000);
        for b in blocks[1..].iter().rev() {
            pool.insert(b.clone());
        }
        assert_eq!(pool.len(), 3);
        assert!(pool.take_due(999).is_empty());
        let due = pool.take_due(blocks[2].timestamp_ms);
        assert_eq!(due.iter().map(|b| b.hash).collect::<Vec<_>>(), vec![blocks[1].hash, blocks[2].hash]);
        assert_eq!(pool.len(), 1);
        let many = chain_of(&p, MAX_EARLY + 10, 5_000);
        for b in many[1..].iter().rev() {
            pool.insert(b.clone());
        }
        assert_eq!(pool.len(), MAX_EARLY, "bounded");
        assert!(pool.contains(&blocks[3]), "the soonest due are the ones kept");
        assert!(!pool.contains(many.last().unwrap()));
    }
}
