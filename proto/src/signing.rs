//! Signed bootstrap requests and node ids.
//!
//! A registration made with an ed25519 public key is bound to that key. To
//! refresh or remove it, the owner signs the canonical payload below. The
//! payload is a fixed, documented byte layout (protobuf encodings are not
//! canonical, so they are never signed):
//!
//! ```text
//! register: "p2p.bootstrap.v1.Register\0" | registry_id (16) | u16 BE len | address | public_key (32) | ttl_seconds u32 BE | timestamp_unix_ms u64 BE
//! remove:   "p2p.bootstrap.v1.Remove\0"   | registry_id (16) | u16 BE len | address | timestamp_unix_ms u64 BE
//! ```
//!
//! `registry_id` is the bootstrap server's (`GetInfo`), so a signature made
//! for one registry never verifies at another.
//!
//! The domain prefix keeps a Register signature from ever verifying as a
//! Remove (and vice versa); the length prefix keeps field boundaries
//! unambiguous. The address is signed in its canonical spelling.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::bootstrap::{RegisterRequest, RemoveRequest};

/// Length of an ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of an ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Length of a registry id.
pub const REGISTRY_ID_LEN: usize = 16;

/// A bootstrap registry's id, as signed payloads carry it.
pub type RegistryId = [u8; REGISTRY_ID_LEN];

const REGISTER_DOMAIN: &[u8] = b"p2p.bootstrap.v1.Register\0";
const REMOVE_DOMAIN: &[u8] = b"p2p.bootstrap.v1.Remove\0";

/// Why a signature did not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("public_key must be {PUBLIC_KEY_LEN} bytes, got {0}")]
    KeyLength(usize),
    #[error("public_key is not a valid ed25519 point")]
    KeyInvalid,
    #[error("signature must be {SIGNATURE_LEN} bytes, got {0}")]
    SignatureLength(usize),
    #[error("signature does not verify against the public key")]
    Mismatch,
}

/// Canonical bytes a Register request's signature covers.
pub fn register_payload(
    registry: &RegistryId,
    address: &str,
    public_key: &[u8],
    ttl_seconds: u32,
    timestamp_unix_ms: u64,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(REGISTER_DOMAIN.len() + 18 + address.len() + public_key.len() + 12);
    out.extend_from_slice(REGISTER_DOMAIN);
    out.extend_from_slice(registry);
    push_str(&mut out, address);
    out.extend_from_slice(public_key);
    out.extend_from_slice(&ttl_seconds.to_be_bytes());
    out.extend_from_slice(&timestamp_unix_ms.to_be_bytes());
    out
}

/// Canonical bytes a Remove request's signature covers.
pub fn remove_payload(registry: &RegistryId, address: &str, timestamp_unix_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(REMOVE_DOMAIN.len() + 18 + address.len() + 8);
    out.extend_from_slice(REMOVE_DOMAIN);
    out.extend_from_slice(registry);
    push_str(&mut out, address);
    out.extend_from_slice(&timestamp_unix_ms.to_be_bytes());
    out
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    // Addresses are at most a few hundred bytes; longer input is rejected
    // before signing, and saturating here keeps this function total.
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Parses a 32-byte ed25519 public key.
pub fn parse_public_key(bytes: &[u8]) -> Result<VerifyingKey, SignatureError> {
    let arr: [u8; PUBLIC_KEY_LEN] = bytes.try_into().map_err(|_| SignatureError::KeyLength(bytes.len()))?;
    VerifyingKey::from_bytes(&arr).map_err(|_| SignatureError::KeyInvalid)
}

/// Verifies `signature` by `public_key` over `payload`.
pub fn verify(public_key: &[u8], payload: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
    let key = parse_public_key(public_key)?;
    let sig: [u8; SIGNATURE_LEN] =
        signature.try_into().map_err(|_| SignatureError::SignatureLength(signature.len()))?;
    key.verify_strict(payload, &Signature::from_bytes(&sig)).map_err(|_| SignatureError::Mismatch)
}

/// Signs `payload`, returning the 64-byte signature.
pub fn sign(key: &SigningKey, payload: &[u8]) -> Vec<u8> {
    key.sign(payload).to_bytes().to_vec()
}

/// A Register request for `address` signed by `key` at `timestamp_unix_ms`.
/// The address is signed (and sent) in its canonical spelling; an invalid one
/// is sent as given so the server names what is wrong with it.
pub fn signed_register(
    key: &SigningKey,
    registry: &RegistryId,
    address: &str,
    ttl_seconds: u32,
    timestamp_unix_ms: u64,
) -> RegisterRequest {
    let address = crate::address::canonicalize(address).unwrap_or_else(|_| address.to_string());
    let public_key = key.verifying_key().to_bytes().to_vec();
    let signature = sign(key, &register_payload(registry, &address, &public_key, ttl_seconds, timestamp_unix_ms));
    RegisterRequest { address, public_key, ttl_seconds, timestamp_unix_ms, signature }
}

/// A Remove request for `address` signed by `key` at `timestamp_unix_ms`.
pub fn signed_remove(key: &SigningKey, registry: &RegistryId, address: &str, timestamp_unix_ms: u64) -> RemoveRequest {
    let address = crate::address::canonicalize(address).unwrap_or_else(|_| address.to_string());
    let signature = sign(key, &remove_payload(registry, &address, timestamp_unix_ms));
    RemoveRequest { address, timestamp_unix_ms, signature }
}

/// Parses GetInfo's `registry_id`.
pub fn registry_id(bytes: &[u8]) -> Result<RegistryId, String> {
    bytes.try_into().map_err(|_| format!("registry_id must be {REGISTRY_ID_LEN} bytes, got {}", bytes.len()))
}

/// A node's id: hex of the first 20 bytes of SHA-256 of its public key.
pub fn node_id(public_key: &[u8]) -> String {
    let digest = Sha256::digest(public_key);
    hex::encode(&digest[..20])
}

/// Whether `s` is spelled like a node id (40 lowercase hex characters).
pub fn is_node_id(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn register_payload_layout_is_stable() {
        let p = register_payload(&[9u8; 16], "a:1", &[7u8; 32], 60, 0x0102030405060708);
        let mut expected = b"p2p.bootstrap.v1.Register\0".to_vec();
        expected.extend_from_slice(&[9u8; 16]);
        expected.extend_from_slice(&[0, 3]);
        expected.extend_from_slice(b"a:1");
        expected.extend_from_slice(&[7u8; 32]);
        expected.extend_from_slice(&[0, 0, 0, 60]);
        expected.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(p, expected);
    }

    #[test]
    fn remove_payload_layout_is_stable() {
        let p = remove_payload(&[9u8; 16], "a:1", 1);
        let mut expected = b"p2p.bootstrap.v1.Remove\0".to_vec();
        expected.extend_from_slice(&[9u8; 16]);
        expected.extend_from_slice(&[0, 3, b'a', b':', b'1', 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(p, expected);
    }

    #[test]
    fn node_id_is_20_bytes_of_hex() {
        let id = node_id(&[1u8; 32]);
        assert_eq!(id.len(), 40);
        assert_ne!(id, node_id(&[2u8; 32]));
    }

    #[test]
    fn bad_lengths_are_named() {
        assert_eq!(verify(&[0u8; 31], b"x", &[0u8; 64]), Err(SignatureError::KeyLength(31)));
        let pk = key(1).verifying_key().to_bytes();
        assert_eq!(verify(&pk, b"x", &[0u8; 63]), Err(SignatureError::SignatureLength(63)));
    }

    proptest! {
        #[test]
        fn a_signature_verifies_only_for_its_own_payload(
            addr in "[a-z]{1,20}:[1-9][0-9]{0,3}", ttl in any::<u32>(), ts in any::<u64>(), other_ts in any::<u64>(),
        ) {
            let k = key(9);
            let pk = k.verifying_key().to_bytes();
            let reg = [1u8; 16];
            let payload = register_payload(&reg, &addr, &pk, ttl, ts);
            let sig = sign(&k, &payload);
            prop_assert!(verify(&pk, &payload, &sig).is_ok());
            // The same signature never verifies a Remove, another timestamp,
            // another registry, or another key.
            prop_assert!(verify(&pk, &remove_payload(&reg, &addr, ts), &sig).is_err());
            if other_ts != ts {
                prop_assert!(verify(&pk, &register_payload(&reg, &addr, &pk, ttl, other_ts), &sig).is_err());
            }
            prop_assert!(verify(&pk, &register_payload(&[2u8; 16], &addr, &pk, ttl, ts), &sig).is_err());
            let other = key(10).verifying_key().to_bytes();
            prop_assert!(verify(&other, &payload, &sig).is_err());
        }

        #[test]
        fn payloads_are_injective_in_their_fields(
            a in "[a-z:0-9]{0,12}", b in "[a-z:0-9]{0,12}", ts_a in any::<u64>(), ts_b in any::<u64>(),
        ) {
            prop_assume!(a != b || ts_a != ts_b);
            prop_assert_ne!(remove_payload(&[0; 16], &a, ts_a), remove_payload(&[0; 16], &b, ts_b));
        }
    }
}
