//! Blocks whose parent is unknown, bounded, oldest evicted first, indexed
//! by parent so connecting them costs nothing when the pool is empty.

use std::collections::{HashMap, VecDeque};

use super::block::{Block, Hash};

/// Most blocks kept waiting for their parent.
pub const MAX_ORPHANS: usize = 1024;
/// Most bytes of block data kept waiting for their parent.
pub const MAX_ORPHAN_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Default)]
pub(super) struct OrphanPool {
    by_hash: HashMap<Hash, Block>,
    by_parent: HashMap<Hash, Vec<Hash>>,
    order: VecDeque<Hash>,
    bytes: usize,
}

impl OrphanPool {
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn contains(&self, hash: &Hash) -> bool {
        self.by_hash.contains_key(hash)
    }

    pub fn insert(&mut self, b: Block) {
        if self.by_hash.contains_key(&b.hash) {
            return;
        }
        while self.by_hash.len() >= MAX_ORPHANS || self.bytes + b.size() > MAX_ORPHAN_BYTES {
            let Some(old) = self.order.pop_front() else { break };
            self.remove(&old);
        }
        self.order.push_back(b.hash);
        self.by_parent.entry(b.prev_hash).or_default().push(b.hash);
        self.bytes += b.size();
        self.by_hash.insert(b.hash, b);
    }

    fn remove(&mut self, hash: &Hash) -> Option<Block> {
        let b = self.by_hash.remove(hash)?;
        self.bytes -= b.size();
        if let Some(siblings) = self.by_parent.get_mut(&b.prev_hash) {
            siblings.retain(|h| h != hash);
            if siblings.is_empty() {
                self.by_parent.remove(&b.prev_hash);
            }
        }
        Some(b)
    }

    /// Removes and returns the orphans whose parent is `parent`.
    pub fn take_children(&mut self, parent: &Hash) -> Vec<Block> {
        let Some(children) = self.by_parent.remove(parent) else { return Vec::new() };
        self.order.retain(|h| !children.contains(h));
        let taken: Vec<Block> = children.iter().filter_map(|h| self.by_hash.remove(h)).collect();
        self.bytes -= taken.iter().map(|b| b.size()).sum::<usize>();
        taken
    }
}
