//! What a peer presents in a TLS handshake, checked the way our verifier
//! does before anything else: arbitrary bytes as a certificate must never
//! panic, and whatever verifies proves the identity its key hashes to.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustls_pki_types::UnixTime;

fuzz_target!(|data: &[u8]| {
    let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_800_000_000));
    if let Ok(v) = p2p_proto::tls::cert::verify(data, now) {
        assert_eq!(v.identity.node_id, p2p_proto::signing::node_id(&v.identity.public_key));
        assert!(!v.spki().is_empty());
    }
});
