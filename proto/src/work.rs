//! Cumulative chain work as messages carry it (`cumulative_work` fields):
//! a u128, 16 bytes big-endian. Shared by nodes and clients, so a client
//! needs no node code to read it.

/// The wire form of `work`.
pub fn to_bytes(work: u128) -> Vec<u8> {
    work.to_be_bytes().to_vec()
}

/// Reads the wire form; anything that is not exactly 16 bytes reads as 0
/// (no claim of work), so a malformed field can never claim more work.
pub fn from_bytes(bytes: &[u8]) -> u128 {
    <[u8; 16]>::try_from(bytes).map(u128::from_be_bytes).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips(w in any::<u128>()) {
            prop_assert_eq!(from_bytes(&to_bytes(w)), w);
        }

        #[test]
        fn wrong_lengths_claim_nothing(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            prop_assume!(bytes.len() != 16);
            prop_assert_eq!(from_bytes(&bytes), 0);
        }
    }
}
