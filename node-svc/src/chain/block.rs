//! Blocks and their canonical header.
//!
//! The hash is SHA-256 over this 92-byte header (all integers big-endian):
//!
//! ```text
//! offset  size  field
//!      0     8  index (height)
//!      8     8  timestamp_unix_ms
//!     16    32  prev_hash (all zero for genesis)
//!     48    32  data_digest = SHA-256(data)
//!     80     4  difficulty_bits
//!     84     8  nonce
//! ```
//!
//! The header commits to the data through its digest, so a nonce attempt
//! costs the same whatever the data size; and the first 64 bytes do not
//! depend on the nonce, so mining hashes them once (the SHA-256 midstate).

use sha2::{Digest, Sha256};

/// Size of the canonical header.
pub const HEADER_LEN: usize = 92;
/// A SHA-256 digest.
pub type Hash = [u8; 32];
/// The all-zero hash: genesis's parent.
pub const ZERO_HASH: Hash = [0; 32];

/// A block as the chain handles it (the protobuf form is converted at the edge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub index: u64,
    pub timestamp_ms: u64,
    pub data: Vec<u8>,
    pub prev_hash: Hash,
    pub nonce: u64,
    pub difficulty_bits: u32,
    /// The hash the block claims; [`Block::compute_hash`] says what it is.
    pub hash: Hash,
}

/// The fields of a header other than the nonce, laid out once for mining.
#[derive(Debug, Clone)]
pub struct Header {
    pub index: u64,
    pub timestamp_ms: u64,
    pub prev_hash: Hash,
    pub data_digest: Hash,
    pub difficulty_bits: u32,
}

impl Header {
    /// The canonical bytes with `nonce`.
    pub fn bytes(&self, nonce: u64) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..8].copy_from_slice(&self.index.to_be_bytes());
        out[8..16].copy_from_slice(&self.timestamp_ms.to_be_bytes());
        out[16..48].copy_from_slice(&self.prev_hash);
        out[48..80].copy_from_slice(&self.data_digest);
        out[80..84].copy_from_slice(&self.difficulty_bits.to_be_bytes());
        out[84..92].copy_from_slice(&nonce.to_be_bytes());
        out
    }

    pub fn hash(&self, nonce: u64) -> Hash {
        Sha256::digest(self.bytes(nonce)).into()
    }

    /// A hasher that has absorbed the first 64 bytes, which do not depend on
    /// the nonce; finishing it with [`Header::tail`] gives [`Header::hash`].
    pub fn midstate(&self) -> Sha256 {
        let mut h = Sha256::new();
        h.update(&self.bytes(0)[..64]);
        h
    }

    /// The last 28 bytes for `nonce`.
    pub fn tail(&self, nonce: u64) -> [u8; HEADER_LEN - 64] {
        let mut out = [0u8; HEADER_LEN - 64];
        out.copy_from_slice(&self.bytes(nonce)[64..]);
        out
    }
}

impl Block {
    pub fn header(&self) -> Header {
        Header {
            index: self.index,
            timestamp_ms: self.timestamp_ms,
            prev_hash: self.prev_hash,
            data_digest: Sha256::digest(&self.data).into(),
            difficulty_bits: self.difficulty_bits,
        }
    }

    /// SHA-256 of the canonical header.
    pub fn compute_hash(&self) -> Hash {
        self.header().hash(self.nonce)
    }
}

/// Whether `hash` has at least `bits` leading zero bits, i.e. is below the
/// target 2^(256-bits) read as a big-endian number.
pub fn meets_difficulty(hash: &Hash, bits: u32) -> bool {
    leading_zero_bits(hash) >= bits
}

pub fn leading_zero_bits(hash: &Hash) -> u32 {
    let mut n = 0;
    for byte in hash {
        if *byte == 0 {
            n += 8;
        } else {
            return n + byte.leading_zeros();
        }
    }
    n
}

/// Expected hashes to find a block at `bits`: its contribution to chain work.
pub fn work(bits: u32) -> u128 {
    1u128 << bits.min(127)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Block {
        Block {
            index: 7,
            timestamp_ms: 1_700_000_000_000,
            data: b"hello".to_vec(),
            prev_hash: [9; 32],
            nonce: 42,
            difficulty_bits: 8,
            hash: ZERO_HASH,
        }
    }

    #[test]
    fn header_layout_is_the_documented_one() {
        let b = sample();
        let bytes = b.header().bytes(b.nonce);
        assert_eq!(&bytes[0..8], &7u64.to_be_bytes());
        assert_eq!(&bytes[8..16], &1_700_000_000_000u64.to_be_bytes());
        assert_eq!(&bytes[16..48], &[9u8; 32]);
        assert_eq!(&bytes[48..80], Sha256::digest(b"hello").as_slice());
        assert_eq!(&bytes[80..84], &8u32.to_be_bytes());
        assert_eq!(&bytes[84..92], &42u64.to_be_bytes());
    }

    #[test]
    fn leading_zeros_count_bits_not_bytes() {
        let mut h = [0xffu8; 32];
        assert_eq!(leading_zero_bits(&h), 0);
        h[0] = 0;
        h[1] = 0x1f;
        assert_eq!(leading_zero_bits(&h), 11);
        assert!(meets_difficulty(&h, 11));
        assert!(!meets_difficulty(&h, 12));
        assert_eq!(leading_zero_bits(&ZERO_HASH), 256);
    }

    proptest! {
        #[test]
        fn midstate_plus_tail_equals_the_full_hash(nonce in any::<u64>(), idx in any::<u64>(), ts in any::<u64>()) {
            let mut b = sample();
            b.index = idx;
            b.timestamp_ms = ts;
            let header = b.header();
            let mut h = header.midstate();
            h.update(header.tail(nonce));
            let via_midstate: Hash = h.finalize().into();
            prop_assert_eq!(via_midstate, header.hash(nonce));
        }

        #[test]
        fn every_header_field_changes_the_hash(field in 0usize..6, delta in 1u64..1000) {
            let b = sample();
            let mut t = b.clone();
            match field {
                0 => t.index = t.index.wrapping_add(delta),
                1 => t.timestamp_ms = t.timestamp_ms.wrapping_add(delta),
                2 => t.prev_hash[(delta % 32) as usize] ^= 1,
                3 => t.data.push(delta as u8),
                4 => t.difficulty_bits = t.difficulty_bits.wrapping_add(delta as u32),
                _ => t.nonce = t.nonce.wrapping_add(delta),
            }
            prop_assert_ne!(b.compute_hash(), t.compute_hash());
        }
    }
}
