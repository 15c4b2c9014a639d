//! Block and header validation on arbitrary fields: no panic, and a block
//! that passes the standalone rules really hashes to what it claims with
//! the network's difficulty.
#![no_main]

use libfuzzer_sys::fuzz_target;
use node_svc::chain::block::Block;
use node_svc::chain::{NetworkParams, validate};

fn u64_at(d: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    for (k, x) in b.iter_mut().enumerate() {
        *x = d.get(i + k).copied().unwrap_or(0);
    }
    u64::from_le_bytes(b)
}

fn hash_at(d: &[u8], i: usize) -> [u8; 32] {
    let mut h = [0u8; 32];
    for (k, x) in h.iter_mut().enumerate() {
        *x = d.get(i + k).copied().unwrap_or(0);
    }
    h
}

fuzz_target!(|data: &[u8]| {
    let params = NetworkParams {
        difficulty_bits: u32::from(data.first().copied().unwrap_or(0) % 4),
        max_data_bytes: 64,
        ..NetworkParams::devnet()
    };
    let make = |off: usize| Block {
        index: u64_at(data, off),
        timestamp_ms: u64_at(data, off + 8),
        data: data.get(off + 16..(off + 16 + 80).min(data.len())).unwrap_or(&[]).to_vec(),
        prev_hash: hash_at(data, off + 96),
        nonce: u64_at(data, off + 128),
        difficulty_bits: u32::from(data.get(off + 136).copied().unwrap_or(0)),
        hash: hash_at(data, off + 137),
    };
    let mut child = make(1);
    // Half the time, give it a correct hash so the deeper rules run.
    if data.len() % 2 == 0 {
        child.hash = child.compute_hash();
    }
    let parent = make(170);
    let now = u64_at(data, 340);
    if validate::check_standalone(&child, &params, now).is_ok() {
        assert_eq!(child.compute_hash(), child.hash);
        assert_eq!(child.difficulty_bits, params.difficulty_bits);
        assert!(child.data.len() <= params.max_data_bytes);
    }
    let _ = validate::check_child(&child, &parent);
});
