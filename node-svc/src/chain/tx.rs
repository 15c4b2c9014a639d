//! Transactions: what users put on the chain. A transaction is signed by
//! its sender's ed25519 key over a canonical, domain-separated encoding
//! that names the network (its genesis hash), so it is valid on one chain
//! only; its id is the SHA-256 of that encoding.
//!
//! ```text
//! "p2p.node.v1.Transaction\0" | genesis (32) | sender (32) | nonce u64 | timestamp_ms u64 | u32 len | payload
//! ```
//! (integers big-endian). Nonces are per sender and strictly increasing on
//! the chain, gaps allowed: a nonce at or below the sender's last confirmed
//! one is a replay and invalid forever, while a lost transaction never
//! blocks the sender's later ones (which gapless nonces would). A client
//! with no state can use the time in ms as its nonce.

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use super::block::Hash;

/// Domain separation for transaction signatures.
pub const TX_DOMAIN: &[u8] = b"p2p.node.v1.Transaction\0";
/// Bytes a transaction adds to a block besides its payload (sender, nonce,
/// timestamp, signature, framing).
pub const TX_OVERHEAD: usize = 32 + 8 + 8 + 64 + 16;

/// A signed transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Transaction {
    /// The sender's ed25519 public key.
    pub sender: [u8; 32],
    pub nonce: u64,
    pub timestamp_ms: u64,
    pub payload: Vec<u8>,
    pub signature: [u8; 64],
}

/// Why a transaction is not valid on its own (state rules come later).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("rule tx-size: the payload is {len} bytes, at most {max} are allowed")]
    TooLarge { len: usize, max: usize },
    #[error(
        "rule tx-signature: the signature does not verify for sender {sender} (sign the canonical encoding, see the README)"
    )]
    BadSignature { sender: String },
    #[error("rule tx-sender: {0}")]
    BadSender(String),
}

impl Transaction {
    /// The bytes the signature covers, for the network with `genesis`.
    pub fn signing_bytes(&self, genesis: &Hash) -> Vec<u8> {
        signing_bytes(genesis, &self.sender, self.nonce, self.timestamp_ms, &self.payload)
    }

    /// The transaction's id on the network with `genesis`.
    pub fn id(&self, genesis: &Hash) -> Hash {
        Sha256::digest(self.signing_bytes(genesis)).into()
    }

    /// Bytes it takes in a block.
    pub fn size(&self) -> usize {
        self.payload.len() + TX_OVERHEAD
    }

    /// A transaction of `key`'s, signed for the network with `genesis`.
    pub fn sign(key: &SigningKey, genesis: &Hash, nonce: u64, timestamp_ms: u64, payload: Vec<u8>) -> Self {
        let sender = key.verifying_key().to_bytes();
        let signature = key.sign(&signing_bytes(genesis, &sender, nonce, timestamp_ms, &payload)).to_bytes();
        Transaction { sender, nonce, timestamp_ms, payload, signature }
    }

    /// The checks that need nothing but the transaction: size, key, signature.
    pub fn check(&self, genesis: &Hash, max_payload: usize) -> Result<(), TxError> {
        if self.payload.len() > max_payload {
            return Err(TxError::TooLarge { len: self.payload.len(), max: max_payload });
        }
        let key = VerifyingKey::from_bytes(&self.sender).map_err(|e| TxError::BadSender(e.to_string()))?;
        let signature = ed25519_dalek::Signature::from_bytes(&self.signature);
        key.verify_strict(&self.signing_bytes(genesis), &signature)
            .map_err(|_| TxError::BadSignature { sender: hex::encode(self.sender) })
    }
}

fn signing_bytes(genesis: &Hash, sender: &[u8; 32], nonce: u64, timestamp_ms: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(TX_DOMAIN.len() + 32 + 32 + 8 + 8 + 4 + payload.len());
    out.extend_from_slice(TX_DOMAIN);
    out.extend_from_slice(genesis);
    out.extend_from_slice(sender);
    out.extend_from_slice(&nonce.to_be_bytes());
    out.extend_from_slice(&timestamp_ms.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The Merkle root of `ids` as RFC 6962 (Certificate Transparency) defines
/// it: leaves and inner nodes hashed with different prefixes, an odd node
/// promoted rather than paired with itself. (Bitcoin's duplicate-the-last
/// rule lets two different lists share a root, CVE-2012-2459.) The empty
/// list's root is SHA-256 of nothing.
pub fn merkle_root(ids: &[Hash]) -> Hash {
    match ids.len() {
        0 => Sha256::digest([]).into(),
        1 => {
            let mut h = Sha256::new();
            h.update([0u8]);
            h.update(ids[0]);
            h.finalize().into()
        }
        n => {
            let split = n.next_power_of_two() / 2;
            let (l, r) = (merkle_root(&ids[..split]), merkle_root(&ids[split..]));
            let mut h = Sha256::new();
            h.update([1u8]);
            h.update(l);
            h.update(r);
            h.finalize().into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const G: Hash = [7; 32];

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn a_signed_transaction_checks_and_the_encoding_is_the_documented_one() {
        let tx = Transaction::sign(&key(1), &G, 5, 1_700_000_000_000, b"vote: yes".to_vec());
        tx.check(&G, 1024).unwrap();
        let b = tx.signing_bytes(&G);
        assert!(b.starts_with(b"p2p.node.v1.Transaction\0"));
        let rest = &b[TX_DOMAIN.len()..];
        assert_eq!(&rest[..32], &G);
        assert_eq!(&rest[32..64], &key(1).verifying_key().to_bytes());
        assert_eq!(&rest[64..72], &5u64.to_be_bytes());
        assert_eq!(&rest[72..80], &1_700_000_000_000u64.to_be_bytes());
        assert_eq!(&rest[80..84], &9u32.to_be_bytes());
        assert_eq!(&rest[84..], b"vote: yes");
        assert_eq!(tx.id(&G), <[u8; 32]>::from(Sha256::digest(&b)));
    }

    #[test]
    fn another_network_or_a_big_payload_is_refused() {
        let tx = Transaction::sign(&key(2), &G, 1, 1, vec![0; 100]);
        assert!(matches!(tx.check(&[8; 32], 1024), Err(TxError::BadSignature { .. })), "signed for another network");
        assert_eq!(tx.check(&G, 99), Err(TxError::TooLarge { len: 100, max: 99 }));
        let bad_key = Transaction { sender: [0xff; 32], ..tx.clone() };
        assert!(bad_key.check(&G, 1024).is_err());
    }

    proptest! {
        #[test]
        fn any_change_breaks_the_signature(field in 0usize..5, delta in 1u64..1000, byte in 0usize..64) {
            let tx = Transaction::sign(&key(3), &G, 10, 20, b"payload".to_vec());
            let mut t = tx.clone();
            match field {
                0 => t.nonce = t.nonce.wrapping_add(delta),
                1 => t.timestamp_ms = t.timestamp_ms.wrapping_add(delta),
                2 => t.payload.push(delta as u8),
                3 => t.signature[byte] ^= 1,
                _ => t.sender = key(4).verifying_key().to_bytes(),
            }
            prop_assert!(t.check(&G, 1024).is_err());
        }

        #[test]
        fn different_lists_have_different_roots(a in proptest::collection::vec(any::<[u8; 32]>(), 0..20), extra in any::<[u8; 32]>()) {
            let mut b = a.clone();
            b.push(extra);
            prop_assert_ne!(merkle_root(&a), merkle_root(&b));
            if let Some(last) = a.last() {
                // The CVE-2012-2459 shape: the last id repeated.
                let mut dup = a.clone();
                dup.push(*last);
                prop_assert_ne!(merkle_root(&a), merkle_root(&dup));
            }
        }
    }

    #[test]
    fn the_root_is_rfc_6962s() {
        let leaf = |id: &Hash| -> Hash {
            let mut h = Sha256::new();
            h.update([0u8]);
            h.update(id);
            h.finalize().into()
        };
        let node = |l: Hash, r: Hash| -> Hash {
            let mut h = Sha256::new();
            h.update([1u8]);
            h.update(l);
            h.update(r);
            h.finalize().into()
        };
        let ids = [[1u8; 32], [2; 32], [3; 32]];
        assert_eq!(merkle_root(&ids), node(node(leaf(&ids[0]), leaf(&ids[1])), leaf(&ids[2])));
    }
}
