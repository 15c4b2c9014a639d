//! Every Bootstrap request message, decoded from arbitrary bytes and put
//! through the checks the service runs before its writer: nothing may panic.
#![no_main]

use bootstrap_svc::auth::{self, RegisterFields};
use libfuzzer_sys::fuzz_target;
use p2p_proto::bootstrap::{GetInfoRequest, GetPeersRequest, RegisterRequest, RemoveRequest, WatchPeersRequest};
use prost::Message;

const NOW: u64 = 1_800_000_000_000;
const REGISTRY: [u8; 16] = [7; 16];

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else { return };
    match kind % 4 {
        0 => {
            if let Ok(r) = RegisterRequest::decode(bytes)
                && let Ok(address) = p2p_proto::address::canonicalize(&r.address)
            {
                let fields = RegisterFields {
                    address: &address,
                    public_key: &r.public_key,
                    signature: &r.signature,
                    ttl_seconds: r.ttl_seconds,
                    timestamp_ms: r.timestamp_unix_ms,
                };
                let _ = auth::check_register(&REGISTRY, &fields, kind & 0x80 != 0, NOW, 60_000);
            }
        }
        1 => {
            if let Ok(r) = RemoveRequest::decode(bytes) {
                let _ = p2p_proto::address::canonicalize(&r.address);
                let _ = auth::check_remove(&r.signature, r.timestamp_unix_ms, NOW, 60_000);
                let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]).verifying_key().to_bytes();
                let _ = auth::verify_remove(&REGISTRY, &key, &r.address, r.timestamp_unix_ms, &r.signature);
            }
        }
        2 => {
            if let Ok(r) = GetPeersRequest::decode(bytes) {
                let _ = p2p_proto::address::canonicalize(&r.exclude_address);
                let _ = bootstrap_svc::service::decode_page_token(&r.page_token);
            }
        }
        _ => {
            let _ = WatchPeersRequest::decode(bytes);
            let _ = GetInfoRequest::decode(bytes);
        }
    }
});
