//! Proof of work: searching nonces with the SHA-256 midstate.

use std::sync::atomic::{AtomicBool, Ordering};

use sha2::Digest;

use super::block::{Hash, Header, meets_difficulty};

/// A nonce that satisfies the difficulty, and what it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub nonce: u64,
    pub hash: Hash,
    pub attempts: u64,
}

/// Searches nonces from `start` until the hash meets the header's
/// difficulty. Returns `None` if `cancel` is set (checked every 4096 tries)
/// or the nonce space is exhausted.
pub fn mine(header: &Header, start: u64, cancel: &AtomicBool) -> Option<Found> {
    let midstate = header.midstate();
    let mut nonce = start;
    let mut attempts = 0u64;
    loop {
        let mut h = midstate.clone();
        h.update(header.tail(nonce));
        let hash: Hash = h.finalize().into();
        attempts += 1;
        if meets_difficulty(&hash, header.difficulty_bits) {
            return Some(Found { nonce, hash, attempts });
        }
        if attempts.is_multiple_of(4096) && cancel.load(Ordering::Relaxed) {
            return None;
        }
        nonce = nonce.checked_add(1)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::block::ZERO_HASH;

    #[test]
    fn mined_nonce_meets_the_difficulty_and_cancel_stops_the_search() {
        let header =
            Header { index: 1, timestamp_ms: 5, prev_hash: ZERO_HASH, data_digest: [1; 32], difficulty_bits: 10 };
        let found = mine(&header, 0, &AtomicBool::new(false)).unwrap();
        assert_eq!(header.hash(found.nonce), found.hash);
        assert!(meets_difficulty(&found.hash, 10));
        let impossible = Header { difficulty_bits: 200, ..header };
        assert_eq!(mine(&impossible, 0, &AtomicBool::new(true)), None);
    }
}
