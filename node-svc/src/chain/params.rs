//! A network's parameters: what every node of one network agrees on.

use super::block::{Block, ZERO_HASH};
use super::pow;

/// Consensus parameters. Two nodes with different parameters are on
/// different networks (their genesis blocks differ).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkParams {
    /// Name, committed to by the genesis block.
    pub name: String,
    /// Leading zero bits every block's hash must have. The book used 24;
    /// the devnet default of 16 mines in milliseconds.
    pub difficulty_bits: u32,
    /// Largest `data` a block may carry.
    pub max_data_bytes: usize,
    /// How far ahead of the receiver's clock a block's timestamp may be.
    pub max_future_ms: u64,
}

/// Most difficulty a network may ask for: beyond this no block would be found.
pub const MAX_DIFFICULTY_BITS: u32 = 64;

impl NetworkParams {
    pub fn devnet() -> Self {
        NetworkParams {
            name: "devnet".into(),
            difficulty_bits: 16,
            max_data_bytes: 64 * 1024,
            max_future_ms: 2 * 60 * 1000,
        }
    }

    /// The network's genesis block: identical on every node, found by mining
    /// deterministically from nonce 0 (timestamp 0, data naming the network).
    pub fn genesis(&self) -> Block {
        let mut block = Block {
            index: 0,
            timestamp_ms: 0,
            data: format!("genesis of network {:?}", self.name).into_bytes(),
            prev_hash: ZERO_HASH,
            nonce: 0,
            difficulty_bits: self.difficulty_bits,
            hash: ZERO_HASH,
        };
        let found = pow::mine(&block.header(), 0, &std::sync::atomic::AtomicBool::new(false))
            .expect("genesis mining is never cancelled");
        block.nonce = found.nonce;
        block.hash = found.hash;
        block
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn genesis_is_deterministic_and_differs_per_network() {
        let a = NetworkParams { difficulty_bits: 8, ..NetworkParams::devnet() };
        assert_eq!(a.genesis(), a.genesis());
        let b = NetworkParams { name: "other".into(), ..a.clone() };
        assert_ne!(a.genesis().hash, b.genesis().hash);
        let g = a.genesis();
        assert_eq!(g.compute_hash(), g.hash);
        assert!(super::super::block::meets_difficulty(&g.hash, 8));
    }
}
