//! Cumulative chain work as messages carry it (`cumulative_work` fields): a
//! 256-bit unsigned integer, 32 bytes big-endian (a block's work is
//! 2^256 / (target + 1), so a chain's can exceed 128 bits). Shared by nodes
//! and clients, so a client needs no node code to read it.

pub use ruint::aliases::U256 as Work;

/// The wire form of `work`.
pub fn to_bytes(work: Work) -> Vec<u8> {
    work.to_be_bytes::<32>().to_vec()
}

/// Reads the wire form; anything that is not exactly 32 bytes reads as 0
/// (no claim of work), so a malformed field can never claim more work.
pub fn from_bytes(bytes: &[u8]) -> Work {
    <[u8; 32]>::try_from(bytes).map(Work::from_be_bytes).unwrap_or(Work::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips(w in any::<[u8; 32]>()) {
            let w = Work::from_be_bytes(w);
            prop_assert_eq!(from_bytes(&to_bytes(w)), w);
        }

        #[test]
        fn wrong_lengths_claim_nothing(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            prop_assume!(bytes.len() != 32);
            prop_assert_eq!(from_bytes(&bytes), Work::ZERO);
        }
    }
}
