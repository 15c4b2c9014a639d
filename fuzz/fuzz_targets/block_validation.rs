//! Block and header validation on arbitrary fields, compact targets and
//! transactions: no panic, and a block that passes the standalone rules
//! really hashes to what it claims, meets its target within the network's
//! limit, and carries only transactions that verify.
#![no_main]

use libfuzzer_sys::fuzz_target;
use node_svc::chain::block::Block;
use node_svc::chain::tx::Transaction;
use node_svc::chain::{NetworkParams, target, validate};

fn u64_at(d: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    for (k, x) in b.iter_mut().enumerate() {
        *x = d.get(i + k).copied().unwrap_or(0);
    }
    u64::from_le_bytes(b)
}

fn bytes_at<const N: usize>(d: &[u8], i: usize) -> [u8; N] {
    let mut h = [0u8; N];
    for (k, x) in h.iter_mut().enumerate() {
        *x = d.get(i + k).copied().unwrap_or(0);
    }
    h
}

fuzz_target!(|data: &[u8]| {
    let params = NetworkParams {
        difficulty_bits: u32::from(data.first().copied().unwrap_or(0) % 4),
        max_tx_payload: 64,
        max_block_txs: 4,
        ..NetworkParams::devnet()
    };
    let genesis = params.genesis().hash;
    let tx_at = |off: usize| Transaction {
        sender: bytes_at(data, off),
        nonce: u64_at(data, off + 32),
        timestamp_ms: u64_at(data, off + 40),
        payload: data.get(off + 48..(off + 48 + 40).min(data.len())).unwrap_or(&[]).to_vec(),
        signature: bytes_at(data, off + 88),
    };
    let make = |off: usize| Block {
        index: u64_at(data, off),
        timestamp_ms: u64_at(data, off + 8),
        prev_hash: bytes_at(data, off + 16),
        nonce: u64_at(data, off + 48),
        bits: u32::from_le_bytes(bytes_at(data, off + 56)),
        transactions: (0..usize::from(data.get(off + 60).copied().unwrap_or(0) % 3)).map(|i| tx_at(off + 61 + i * 152)).collect(),
        hash: bytes_at(data, off + 400),
    };
    let mut child = make(1);
    // Half the time, give it a correct hash so the deeper rules run.
    if data.len() % 2 == 0 {
        child.hash = child.compute_hash(&genesis);
    }
    let now = u64_at(data, 500);
    if validate::check_standalone(&child, &params, &genesis, now).is_ok() {
        assert_eq!(child.compute_hash(&genesis), child.hash);
        let t = target::from_compact(child.bits).expect("a valid target");
        assert!(t <= params.limit() && target::meets(&child.hash, t));
        assert!(child.transactions.iter().all(|t| t.check(&genesis, params.max_tx_payload).is_ok()));
    }
    let _ = target::from_compact(u32::from_le_bytes(bytes_at(data, 3)));
    let ctx = validate::Context { bits: child.bits, median_time_past: u64_at(data, 520) };
    let _ = validate::check_child(&child, &bytes_at(data, 530), u64_at(data, 562), &ctx);
});
