//! A network's parameters: what every node of one network agrees on.

use super::block::{Block, ZERO_HASH};

/// Consensus parameters. Every one of them is committed to by the genesis
/// block, so two nodes with different parameters are on different networks:
/// their Ping handshake fails with a clear FailedPrecondition ("different
/// network") instead of each banning the other for blocks it thinks invalid.
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

/// Bytes a block's message may take beyond its data: the header fields,
/// two hashes, protobuf framing and a SendBlock's sender (a 64-byte node
/// id and an address of at most 259 bytes), with room to spare.
pub const MESSAGE_OVERHEAD: usize = 1024;

impl NetworkParams {
    pub fn devnet() -> Self {
        NetworkParams {
            name: "devnet".into(),
            difficulty_bits: 16,
            max_data_bytes: 64 * 1024,
            max_future_ms: 2 * 60 * 1000,
        }
    }

    /// Largest gRPC message a valid block (or a request carrying one) can
    /// need: the node's decoding limit, in both directions.
    pub fn max_message_bytes(&self) -> usize {
        self.max_data_bytes.saturating_add(MESSAGE_OVERHEAD)
    }

    /// The network's genesis block: identical on every node, derived from
    /// the parameters alone (data naming the network and every consensus
    /// parameter, timestamp 0, nonce 0).
    /// It is defined, not mined: nodes accept it by exact hash and it is
    /// exempt from proof of work, so starting a node costs nothing at any
    /// difficulty.
    pub fn genesis(&self) -> Block {
        let mut block = Block {
            index: 0,
            timestamp_ms: 0,
            data: format!(
                "genesis of network {:?} difficulty_bits={} max_data_bytes={} max_future_ms={}",
                self.name, self.difficulty_bits, self.max_data_bytes, self.max_future_ms
            )
            .into_bytes(),
            prev_hash: ZERO_HASH,
            nonce: 0,
            difficulty_bits: self.difficulty_bits,
            hash: ZERO_HASH,
        };
        block.hash = block.compute_hash();
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
        let harder = NetworkParams { difficulty_bits: 9, ..a.clone() };
        assert_ne!(harder.genesis().hash, g.hash, "difficulty is part of the network's identity");
        let bigger = NetworkParams { max_data_bytes: a.max_data_bytes + 1, ..a.clone() };
        assert_ne!(bigger.genesis().hash, g.hash, "the block size limit is part of it too");
        let drift = NetworkParams { max_future_ms: a.max_future_ms + 1, ..a.clone() };
        assert_ne!(drift.genesis().hash, g.hash, "and the future-drift rule");
    }
}
