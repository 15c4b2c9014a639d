//! Signed registration payloads: building and verifying never panics on any
//! input, and a signature verifies only for the exact payload it covers.
#![no_main]

use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use p2p_proto::signing;

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 + 12 {
        return;
    }
    let (registry, rest) = data.split_at(16);
    let registry: [u8; 16] = registry.try_into().unwrap_or([0; 16]);
    let ttl = u32::from_le_bytes(rest[..4].try_into().unwrap_or([0; 4]));
    let ts = u64::from_le_bytes(rest[4..12].try_into().unwrap_or([0; 8]));
    let tail = &rest[12..];
    let address = String::from_utf8_lossy(tail);
    let key = SigningKey::from_bytes(&[3; 32]);
    let pk = key.verifying_key().to_bytes();
    let payload = signing::register_payload(&registry, &address, &pk, ttl, ts);
    let sig = signing::sign(&key, &payload);
    assert!(signing::verify(&pk, &payload, &sig).is_ok());
    assert!(signing::verify(&pk, &signing::remove_payload(&registry, &address, ts), &sig).is_err());
    // Arbitrary keys and signatures: an error, never a panic.
    let _ = signing::verify(&tail[..tail.len().min(32)], &payload, tail);
    let _ = signing::parse_public_key(tail);
    let _ = signing::registry_id(tail);
});
