//! Proof of work: searching nonces with the SHA-256 midstate.

use std::sync::atomic::{AtomicBool, Ordering};

use sha2::Digest;

use super::block::{Hash, Header};
use super::target;

/// A nonce that satisfies the target, and what it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub nonce: u64,
    pub hash: Hash,
    pub attempts: u64,
}

/// Searches nonces from `start` until the hash meets the header's target.
/// Returns `None` if `cancel` is set (checked every 4096 tries), the nonce
/// space is exhausted, or `bits` is not a valid target.
pub fn mine(header: &Header, start: u64, cancel: &AtomicBool) -> Option<Found> {
    let target = header.target()?;
    let midstate = header.midstate();
    let mut nonce = start;
    let mut attempts = 0u64;
    loop {
        let mut h = midstate.clone();
        h.update(header.tail(nonce));
        let hash: Hash = h.finalize().into();
        attempts += 1;
        if target::meets(&hash, target) {
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
    fn mined_nonce_meets_the_target_and_cancel_stops_the_search() {
        let easy = target::to_compact(target::target_for_leading_zeros(10));
        let header = Header { index: 1, timestamp_ms: 5, prev_hash: ZERO_HASH, merkle_root: [1; 32], bits: easy };
        let found = mine(&header, 0, &AtomicBool::new(false)).unwrap();
        assert_eq!(header.hash(found.nonce), found.hash);
        assert!(target::meets(&found.hash, header.target().unwrap()));
        let impossible = Header { bits: target::to_compact(target::target_for_leading_zeros(200)), ..header.clone() };
        assert_eq!(mine(&impossible, 0, &AtomicBool::new(true)), None);
        assert_eq!(mine(&Header { bits: 0, ..header }, 0, &AtomicBool::new(false)), None, "no target, no search");
    }
}
