use proptest::prelude::*;

use super::*;
use crate::chain::block::Block;
use crate::chain::testing::{chain_of, mine_child, params, remine, test_key, tx};
use crate::chain::tx::Transaction;

const NOW: u64 = 1_800_000_000_000;

fn ctx(p: &NetworkParams, parent: &Block) -> Context {
    Context { bits: target::to_compact(p.limit()), median_time_past: parent.timestamp_ms.saturating_sub(1) }
}

fn genesis(p: &NetworkParams) -> Hash {
    p.genesis().hash
}

#[test]
fn a_parent_at_the_last_height_is_refused_not_overflowed() {
    // Regression from fuzz/artifacts/block_validation (cargo fuzz, block_validation).
    let p = params();
    let chain = chain_of(&p, 1, NOW - 10_000);
    let child = chain[1].clone();
    let c = ctx(&p, &chain[0]);
    assert!(matches!(check_child(&child, &child.prev_hash, u64::MAX, &c), Err(BlockError::Malformed(_))));
}

#[test]
fn a_mined_chain_is_valid() {
    let p = params();
    let chain = chain_of(&p, 5, NOW - 10_000);
    for pair in chain.windows(2) {
        check_standalone(&pair[1], &p, &genesis(&p), NOW).unwrap();
        check_child(&pair[1], &pair[0].hash, pair[0].index, &ctx(&p, &pair[0])).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Changing any one field of a valid block, without re-mining it, is caught.
    #[test]
    fn every_single_field_tamper_is_rejected(field in 0usize..8, delta in 1u64..1_000_000, which in 1usize..4) {
        let p = params();
        let chain = chain_of(&p, 4, NOW - 10_000);
        let (parent, mut b) = (chain[which - 1].clone(), chain[which].clone());
        match field {
            0 => b.index = b.index.wrapping_add(delta),
            1 => b.timestamp_ms = b.timestamp_ms.wrapping_add(delta),
            2 => b.transactions[0].payload.extend_from_slice(&delta.to_be_bytes()),
            3 => b.prev_hash[(delta % 32) as usize] ^= 0x80,
            4 => b.nonce = b.nonce.wrapping_add(delta),
            5 => b.bits = b.bits.wrapping_add(delta as u32),
            6 => b.transactions.push(tx(&p, 1000 + delta, b"extra")),
            _ => b.hash[(delta % 32) as usize] ^= 0x01,
        }
        let verdict = check_standalone(&b, &p, &genesis(&p), NOW)
            .and_then(|()| check_child(&b, &parent.hash, parent.index, &ctx(&p, &parent)));
        prop_assert!(verdict.is_err(), "tampered field {} accepted", field);
    }
}

#[test]
fn contextual_rules_catch_well_mined_but_misplaced_blocks() {
    let p = params();
    let g = genesis(&p);
    let chain = chain_of(&p, 3, NOW - 10_000);
    // Properly mined, but claims the wrong height.
    let mut wrong_height = mine_child(&p, &chain[1], b"x", NOW - 5_000);
    wrong_height.index = 5;
    let wrong_height = remine(&p, wrong_height);
    let c = ctx(&p, &chain[1]);
    assert!(matches!(check_child(&wrong_height, &chain[1].hash, 1, &c), Err(BlockError::BadHeight { .. })));
    // Properly mined, but not after the median time past.
    let early = mine_child(&p, &chain[1], b"y", chain[1].timestamp_ms - 1);
    assert!(matches!(check_child(&early, &chain[1].hash, 1, &c), Err(BlockError::NotAfterMedianTime { .. })));
    // Properly mined at the limit where the chain requires another target.
    let harder = Context { bits: target::to_compact(p.limit() >> 1usize), ..c };
    let at_limit = mine_child(&p, &chain[1], b"t", NOW - 5_000);
    assert!(matches!(check_child(&at_limit, &chain[1].hash, 1, &harder), Err(BlockError::WrongTarget { .. })));
    // Too far in the future.
    let future = mine_child(&p, &chain[2], b"z", NOW + p.max_future_ms + 1);
    assert!(matches!(check_standalone(&future, &p, &g, NOW), Err(BlockError::FromTheFuture { .. })));
    // A payload over the limit (the block is re-mined: only the rule catches it).
    let big = mine_child(&p, &chain[2], &vec![0u8; p.max_tx_payload + 1], NOW);
    assert!(matches!(
        check_standalone(&big, &p, &g, NOW),
        Err(BlockError::BadTransaction { error: crate::chain::tx::TxError::TooLarge { .. }, .. })
    ));
    // Too many transactions, too many bytes.
    let few = NetworkParams { max_block_txs: 1, ..p.clone() };
    let two = remine(&few, Block { transactions: vec![tx(&p, 1, b"a"), tx(&p, 2, b"b")], ..chain[1].clone() });
    assert!(matches!(check_standalone(&two, &few, &g, NOW), Err(BlockError::TooManyTransactions { .. })));
    let small = NetworkParams { max_block_bytes: 200, ..p.clone() };
    let heavy = remine(&small, Block { transactions: vec![tx(&p, 1, &[0; 150])], ..chain[1].clone() });
    assert!(matches!(check_standalone(&heavy, &small, &g, NOW), Err(BlockError::TooLarge { .. })));
    // Easier than the network's limit.
    let lax = NetworkParams { difficulty_bits: p.difficulty_bits - 1, ..p.clone() };
    let mut easy = chain[1].clone();
    easy.bits = target::to_compact(lax.limit());
    let easy = remine(&lax, easy);
    assert!(matches!(check_standalone(&easy, &p, &g, NOW), Err(BlockError::AboveLimit { .. })));
    // Hashes correctly but lacks the work: walk nonces until one misses the target.
    let mut lazy = mine_child(&p, &chain[2], b"v", NOW);
    loop {
        lazy.nonce += 1;
        lazy.hash = lazy.compute_hash(&g);
        if !target::meets(&lazy.hash, p.limit()) {
            break;
        }
    }
    assert!(matches!(check_standalone(&lazy, &p, &g, NOW), Err(BlockError::InsufficientWork { .. })));
}

#[test]
fn transactions_in_a_block_must_be_signed_unique_and_in_nonce_order() {
    let p = params();
    let g = genesis(&p);
    let parent = p.genesis();
    let block_of = |txs: Vec<Transaction>| remine(&p, Block { transactions: txs, ..mine_child(&p, &parent, b"", NOW) });
    let a = tx(&p, 5, b"a");
    let err = check_standalone(&block_of(vec![a.clone(), a.clone()]), &p, &g, NOW).unwrap_err();
    assert!(matches!(err, BlockError::DuplicateTransaction { index: 1 }), "{err}");
    let err = check_standalone(&block_of(vec![tx(&p, 5, b"x"), tx(&p, 4, b"y")]), &p, &g, NOW).unwrap_err();
    assert!(matches!(err, BlockError::NonceNotIncreasing { index: 1, .. }), "{err}");
    let mut forged = tx(&p, 6, b"z");
    forged.payload = b"changed after signing".to_vec();
    let err = check_standalone(&block_of(vec![forged]), &p, &g, NOW).unwrap_err();
    assert!(matches!(err, BlockError::BadTransaction { index: 0, .. }), "{err}");
    // Signed for another network: its signature does not verify here.
    let other = NetworkParams { name: "elsewhere".into(), ..p.clone() };
    let foreign = Transaction::sign(&test_key(), &other.genesis().hash, 7, 1, b"w".to_vec());
    assert!(check_standalone(&block_of(vec![foreign]), &p, &g, NOW).is_err());
    // Two senders may interleave; each increases on its own.
    let other_key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let b = block_of(vec![tx(&p, 5, b"a"), Transaction::sign(&other_key, &g, 1, 1, b"b".to_vec()), tx(&p, 6, b"c")]);
    check_standalone(&b, &p, &g, NOW).unwrap();
}
