//! A network's consensus parameters. Every one of them is committed to by
//! the genesis block (its `prev_hash` is the SHA-256 of their description),
//! so nodes that differ in any of them are on different networks: they
//! refuse each other's Ping instead of banning each other.

use ruint::aliases::U256;
use sha2::{Digest, Sha256};

use super::block::{Block, Hash};
use super::finality::FinalityParams;
use super::target::{self, Retarget};
use super::tx::TX_OVERHEAD;

/// The rules a network's blocks follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkParams {
    pub name: String,
    /// Leading zero bits of the easiest target allowed (the limit): the
    /// target of the first blocks, and of every block without retargeting.
    pub difficulty_bits: u32,
    /// Retarget every block with LWMA-1 toward `block_time_ms`; false keeps
    /// the limit (a fixed difficulty, like Bitcoin's regtest).
    pub retarget: bool,
    /// The block time the difficulty steers toward.
    pub block_time_ms: u64,
    /// Transactions one block may carry.
    pub max_block_txs: usize,
    /// Bytes one block may have ([`Block::size`]).
    pub max_block_bytes: usize,
    /// Bytes one transaction's payload may have.
    pub max_tx_payload: usize,
    /// How far ahead of the receiver's clock a block may be stamped.
    pub max_future_ms: u64,
    /// Finality votes: the validator set and the checkpoint rules (an
    /// empty set: plain proof of work).
    pub finality: FinalityParams,
}

/// Highest `difficulty_bits` accepted.
pub const MAX_DIFFICULTY_BITS: u32 = 240;

/// Protobuf and request framing allowed on top of a block's size in one
/// message (block fields, the SendBlock wrapper, the sender hint).
pub const MESSAGE_OVERHEAD: usize = 1024;

impl NetworkParams {
    /// The default network: 16-bit limit, retargeting toward 10 s blocks.
    pub fn devnet() -> Self {
        NetworkParams {
            name: "devnet".into(),
            difficulty_bits: 16,
            retarget: true,
            block_time_ms: 10_000,
            max_block_txs: 2_000,
            max_block_bytes: 1024 * 1024,
            max_tx_payload: 64 * 1024,
            max_future_ms: 2 * 60 * 1000,
            finality: FinalityParams::default(),
        }
    }

    /// The easiest target allowed.
    pub fn limit(&self) -> U256 {
        target::round(target::target_for_leading_zeros(self.difficulty_bits.min(MAX_DIFFICULTY_BITS)))
    }

    /// The retargeting rules.
    pub fn retarget_rules(&self) -> Retarget {
        Retarget { limit: self.limit(), block_time_ms: self.block_time_ms, enabled: self.retarget }
    }

    /// Largest message a node decodes: a full block plus framing.
    pub fn max_message_bytes(&self) -> usize {
        self.max_block_bytes.saturating_add(MESSAGE_OVERHEAD)
    }

    /// Largest transaction message.
    pub fn max_tx_bytes(&self) -> usize {
        self.max_tx_payload.saturating_add(TX_OVERHEAD)
    }

    /// SHA-256 of every parameter, which genesis commits to. Finality is
    /// described only when it is on, so networks without it keep the
    /// genesis they had before finality existed.
    pub fn digest(&self) -> Hash {
        let mut description = format!(
            "network {:?} difficulty_bits={} retarget={} block_time_ms={} lwma_window={} max_block_txs={} \
             max_block_bytes={} max_tx_payload={} max_future_ms={}",
            self.name,
            self.difficulty_bits,
            self.retarget,
            self.block_time_ms,
            target::LWMA_WINDOW,
            self.max_block_txs,
            self.max_block_bytes,
            self.max_tx_payload,
            self.max_future_ms,
        );
        if self.finality.enabled() {
            description.push(' ');
            description.push_str(&self.finality.describe());
        }
        Sha256::digest(description.as_bytes()).into()
    }

    /// The network's genesis block: defined, not mined (nonce 0, exempt
    /// from proof of work), so a node starts at once at any difficulty.
    pub fn genesis(&self) -> Block {
        let mut block = Block {
            index: 0,
            timestamp_ms: 0,
            prev_hash: self.digest(),
            bits: target::to_compact(self.limit()),
            nonce: 0,
            transactions: Vec::new(),
            hash: [0; 32],
        };
        // No transactions, so the network's genesis hash is not needed here.
        block.hash = block.compute_hash(&[0; 32]);
        block
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fin(seeds: &[u8], interval: u64, depth: u64) -> FinalityParams {
        let keys =
            seeds.iter().map(|s| ed25519_dalek::SigningKey::from_bytes(&[*s; 32]).verifying_key().to_bytes()).collect();
        FinalityParams::new(keys, interval, depth).unwrap()
    }

    #[test]
    fn genesis_is_deterministic_and_every_parameter_is_part_of_it() {
        let a = NetworkParams { difficulty_bits: 8, ..NetworkParams::devnet() };
        assert_eq!(a.genesis(), a.genesis());
        let g = a.genesis();
        assert_eq!(g.compute_hash(&[0; 32]), g.hash);
        let variants = [
            NetworkParams { name: "other".into(), ..a.clone() },
            NetworkParams { difficulty_bits: 9, ..a.clone() },
            NetworkParams { retarget: !a.retarget, ..a.clone() },
            NetworkParams { block_time_ms: a.block_time_ms + 1, ..a.clone() },
            NetworkParams { max_block_txs: a.max_block_txs + 1, ..a.clone() },
            NetworkParams { max_block_bytes: a.max_block_bytes + 1, ..a.clone() },
            NetworkParams { max_tx_payload: a.max_tx_payload + 1, ..a.clone() },
            NetworkParams { max_future_ms: a.max_future_ms + 1, ..a.clone() },
            NetworkParams { finality: fin(&[1], 10, 2), ..a.clone() },
            NetworkParams { finality: fin(&[2], 10, 2), ..a.clone() },
            NetworkParams { finality: fin(&[1, 2], 10, 2), ..a.clone() },
            NetworkParams { finality: fin(&[1], 11, 2), ..a.clone() },
            NetworkParams { finality: fin(&[1], 10, 3), ..a.clone() },
        ];
        let mut seen = std::collections::HashSet::from([g.hash]);
        for v in variants {
            assert!(seen.insert(v.genesis().hash), "{v:?} shares genesis with another variant");
        }
    }

    #[test]
    fn the_limit_has_the_leading_zeros_it_names() {
        let p = NetworkParams { difficulty_bits: 16, ..NetworkParams::devnet() };
        // 2^240 - 2^224: the compact form keeps three significant bytes.
        assert!((U256::from(65536u64)..=U256::from(65537u64)).contains(&target::work(p.limit())));
        assert_eq!(target::from_compact(p.genesis().bits).unwrap(), p.limit());
    }
}
