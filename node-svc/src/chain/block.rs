//! Blocks and their canonical header.
//!
//! A block's hash is SHA-256 over a fixed 92-byte header, never over
//! protobuf bytes:
//!
//! ```text
//! offset size field
//!      0    8 index (height)            u64 BE
//!      8    8 timestamp_ms              u64 BE
//!     16   32 prev_hash (genesis: SHA-256 of the consensus parameters)
//!     48   32 merkle_root of the transaction ids (RFC 6962)
//!     80    4 bits: the target in compact form   u32 BE
//!     84    8 nonce                     u64 BE
//! ```
//!
//! The header commits to the transactions through their Merkle root, so a
//! proof-of-work attempt costs the same at any block size, and mining
//! reuses the SHA-256 midstate of the first 64 bytes.

use ruint::aliases::U256;
use sha2::{Digest, Sha256};

use super::target;
use super::tx::{Transaction, merkle_root};

/// Length of the canonical header.
pub const HEADER_LEN: usize = 92;

/// A 32-byte SHA-256 digest.
pub type Hash = [u8; 32];

/// The all-zero hash.
pub const ZERO_HASH: Hash = [0; 32];

/// A block as the node stores and validates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub index: u64,
    pub timestamp_ms: u64,
    pub prev_hash: Hash,
    /// The target the hash must not exceed, compact (Bitcoin's nBits).
    pub bits: u32,
    pub nonce: u64,
    pub transactions: Vec<Transaction>,
    pub hash: Hash,
}

/// The header fields except the nonce: what mining iterates over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub index: u64,
    pub timestamp_ms: u64,
    pub prev_hash: Hash,
    pub merkle_root: Hash,
    pub bits: u32,
}

impl Header {
    /// The canonical 92 bytes with `nonce`.
    pub fn bytes(&self, nonce: u64) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..8].copy_from_slice(&self.index.to_be_bytes());
        out[8..16].copy_from_slice(&self.timestamp_ms.to_be_bytes());
        out[16..48].copy_from_slice(&self.prev_hash);
        out[48..80].copy_from_slice(&self.merkle_root);
        out[80..84].copy_from_slice(&self.bits.to_be_bytes());
        out[84..92].copy_from_slice(&nonce.to_be_bytes());
        out
    }

    pub fn hash(&self, nonce: u64) -> Hash {
        Sha256::digest(self.bytes(nonce)).into()
    }

    /// SHA-256 state after the first 64 header bytes, which do not depend
    /// on the nonce: mining only hashes the last 28 bytes per attempt.
    pub fn midstate(&self) -> Sha256 {
        let mut h = Sha256::new();
        h.update(&self.bytes(0)[..64]);
        h
    }

    /// The last 28 header bytes for `nonce`.
    pub fn tail(&self, nonce: u64) -> [u8; HEADER_LEN - 64] {
        let mut out = [0u8; HEADER_LEN - 64];
        out.copy_from_slice(&self.bytes(nonce)[64..]);
        out
    }

    /// The target `bits` encodes (None for an invalid encoding).
    pub fn target(&self) -> Option<U256> {
        target::from_compact(self.bits).ok()
    }
}

impl Block {
    /// The ids of the block's transactions on the network with `genesis`.
    pub fn tx_ids(&self, genesis: &Hash) -> Vec<Hash> {
        self.transactions.iter().map(|tx| tx.id(genesis)).collect()
    }

    /// The header, its Merkle root computed from the transactions.
    pub fn header(&self, genesis: &Hash) -> Header {
        Header {
            index: self.index,
            timestamp_ms: self.timestamp_ms,
            prev_hash: self.prev_hash,
            merkle_root: merkle_root(&self.tx_ids(genesis)),
            bits: self.bits,
        }
    }

    /// What the header hashes to (the block's hash if it is honest).
    pub fn compute_hash(&self, genesis: &Hash) -> Hash {
        self.header(genesis).hash(self.nonce)
    }

    /// Bytes the block counts against the size limit: the header and each
    /// transaction's payload plus a fixed allowance for its other fields.
    pub fn size(&self) -> usize {
        HEADER_LEN + self.transactions.iter().map(Transaction::size).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const G: Hash = [3; 32];

    fn sample() -> Block {
        let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        Block {
            index: 7,
            timestamp_ms: 1_700_000_000_000,
            prev_hash: [9; 32],
            bits: 0x1f00_ffff,
            nonce: 42,
            transactions: vec![Transaction::sign(&key, &G, 1, 5, b"hello".to_vec())],
            hash: ZERO_HASH,
        }
    }

    #[test]
    fn header_layout_is_the_documented_one() {
        let b = sample();
        let bytes = b.header(&G).bytes(b.nonce);
        assert_eq!(&bytes[0..8], &7u64.to_be_bytes());
        assert_eq!(&bytes[8..16], &1_700_000_000_000u64.to_be_bytes());
        assert_eq!(&bytes[16..48], &[9u8; 32]);
        assert_eq!(&bytes[48..80], &merkle_root(&[b.transactions[0].id(&G)]));
        assert_eq!(&bytes[80..84], &0x1f00_ffffu32.to_be_bytes());
        assert_eq!(&bytes[84..92], &42u64.to_be_bytes());
    }

    proptest! {
        #[test]
        fn midstate_plus_tail_equals_the_full_hash(nonce in any::<u64>(), idx in any::<u64>(), ts in any::<u64>()) {
            let mut b = sample();
            b.index = idx;
            b.timestamp_ms = ts;
            let header = b.header(&G);
            let mut h = header.midstate();
            h.update(header.tail(nonce));
            let via_midstate: Hash = h.finalize().into();
            prop_assert_eq!(via_midstate, header.hash(nonce));
        }

        #[test]
        fn every_header_field_and_every_transaction_changes_the_hash(field in 0usize..7, delta in 1u64..1000) {
            let b = sample();
            let mut t = b.clone();
            match field {
                0 => t.index = t.index.wrapping_add(delta),
                1 => t.timestamp_ms = t.timestamp_ms.wrapping_add(delta),
                2 => t.prev_hash[(delta % 32) as usize] ^= 1,
                3 => t.transactions[0].payload.push(delta as u8),
                4 => t.bits = t.bits.wrapping_add(delta as u32),
                5 => t.transactions.push(t.transactions[0].clone()),
                _ => t.nonce = t.nonce.wrapping_add(delta),
            }
            prop_assert_ne!(b.compute_hash(&G), t.compute_hash(&G));
        }
    }
}
