//! Chain store tests: fork choice, reorgs, orphans, persistence.

use super::testing::{chain_of, extend, mine_child, params, remine, tx};
use super::*;

const NOW: u64 = 1_800_000_000_000;

fn open(dir: &tempfile::TempDir) -> Chain {
    Chain::open(&dir.path().join("chain.redb"), params()).unwrap()
}

fn offer(chain: &mut Chain, blocks: &[Block]) -> Vec<Outcome> {
    chain.accept(blocks.to_vec(), NOW).unwrap().into_iter().map(|v| v.unwrap().outcome).collect()
}

#[test]
fn a_valid_chain_is_appended_block_by_block_and_duplicates_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut chain = open(&dir);
    let blocks = chain_of(&params(), 5, NOW - 1000);
    assert_eq!(offer(&mut chain, &blocks[1..]), vec![Outcome::Appended; 5]);
    let tip = chain.reader().tip().unwrap();
    assert_eq!((tip.height, tip.hash), (5, blocks[5].hash));
    assert_eq!(tip.work, target::work(params().limit()) * U256::from(6u64));
    assert_eq!(offer(&mut chain, &blocks[3..4]), vec![Outcome::Duplicate]);
    // Genesis too is a duplicate, and a different height-0 block is refused.
    assert_eq!(offer(&mut chain, &blocks[..1]), vec![Outcome::Duplicate]);
    let mut forged = blocks[0].clone();
    forged.prev_hash = [7; 32];
    forged.hash = forged.compute_hash(&[0; 32]);
    let verdict = chain.accept(vec![forged], NOW).unwrap().remove(0);
    assert!(matches!(verdict, Err(BlockError::WrongGenesis { .. })), "{verdict:?}");
}

#[test]
fn an_invalid_block_is_refused_without_stopping_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut chain = open(&dir);
    let blocks = chain_of(&params(), 3, NOW - 1000);
    let mut bad = blocks[2].clone();
    bad.transactions[0].payload = b"tampered".to_vec();
    let verdicts = chain.accept(vec![blocks[1].clone(), bad, blocks[2].clone()], NOW).unwrap();
    assert!(verdicts[0].is_ok());
    assert!(matches!(verdicts[1], Err(BlockError::HashMismatch { .. })));
    assert_eq!(verdicts[2].as_ref().unwrap().outcome, Outcome::Appended);
    assert!(!chain.reader().contains(&blocks[3].hash).unwrap());
}

#[test]
fn fork_choice_takes_the_most_work_and_ties_keep_the_first_seen() {
    let dir = tempfile::tempdir().unwrap();
    let mut chain = open(&dir);
    let p = params();
    let common = chain_of(&p, 2, NOW - 1000);
    let a = extend(&p, &common, 2, NOW - 900, "a");
    let b = extend(&p, &common, 3, NOW - 800, "b");
    offer(&mut chain, &a[1..]);
    assert_eq!(chain.reader().tip().unwrap().hash, a[4].hash);
    // b's first two blocks only tie: a stays.
    assert_eq!(offer(&mut chain, &b[3..5]), vec![Outcome::SideBranch, Outcome::SideBranch]);
    assert_eq!(chain.reader().tip().unwrap().hash, a[4].hash);
    // Its third block gives b more work: a reorg of depth 2 (a3, a4 leave).
    assert_eq!(offer(&mut chain, &b[5..]), vec![Outcome::Reorg { depth: 2 }]);
    let reader = chain.reader();
    assert_eq!(reader.tip().unwrap().hash, b[5].hash);
    let main: Vec<Hash> = reader.main_from(0, 100).unwrap().iter().map(|x| x.hash).collect();
    assert_eq!(main, b.iter().map(|x| x.hash).collect::<Vec<_>>());
    // The old branch is kept: extending it past b switches back.
    let a_longer = extend(&p, &a, 2, NOW - 700, "a");
    assert_eq!(offer(&mut chain, &a_longer[5..]), vec![Outcome::SideBranch, Outcome::Reorg { depth: 3 }]);
    assert_eq!(chain.reader().tip().unwrap().hash, a_longer[6].hash);
}

#[test]
fn orphans_wait_for_their_parent_and_then_connect() {
    let dir = tempfile::tempdir().unwrap();
    let mut chain = open(&dir);
    let blocks = chain_of(&params(), 4, NOW - 1000);
    assert_eq!(offer(&mut chain, &blocks[3..5]), vec![Outcome::Orphan, Outcome::Orphan]);
    assert_eq!(chain.orphan_count(), 2);
    assert_eq!(offer(&mut chain, &blocks[4..5]), vec![Outcome::Duplicate]);
    let verdicts = offer(&mut chain, &blocks[1..3]);
    assert_eq!(verdicts, vec![Outcome::Appended; 4], "the two orphans connect after their parents");
    assert_eq!(chain.orphan_count(), 0);
    assert_eq!(chain.reader().tip().unwrap().height, 4);
}

#[test]
fn the_chain_survives_a_reopen_and_is_revalidated() {
    let dir = tempfile::tempdir().unwrap();
    let p = params();
    let blocks = chain_of(&p, 20, NOW - 1000);
    let side = extend(&p, &blocks[..10], 3, NOW - 500, "side");
    {
        let mut chain = open(&dir);
        offer(&mut chain, &blocks[1..]);
        offer(&mut chain, &side[10..]);
    }
    let chain = open(&dir);
    let reader = chain.reader();
    assert_eq!(reader.tip().unwrap().hash, blocks[20].hash);
    assert_eq!(reader.main_from(0, 100).unwrap(), blocks);
    assert!(reader.contains(&side[12].hash).unwrap(), "side branches persist too");
}

#[test]
fn another_networks_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(&dir));
    let other = NetworkParams { name: "elsewhere".into(), ..params() };
    let err = Chain::open(&dir.path().join("chain.redb"), other).unwrap_err();
    assert!(matches!(err, StoreError::WrongNetwork { .. }), "{err}");
}

#[test]
fn locators_are_dense_then_exponential_and_find_the_fork_point() {
    let dir = tempfile::tempdir().unwrap();
    let mut chain = open(&dir);
    let p = params();
    let blocks = chain_of(&p, 40, NOW - 1000);
    offer(&mut chain, &blocks[1..]);
    let reader = chain.reader();
    let loc = reader.locator().unwrap();
    let heights: Vec<u64> = loc.iter().map(|h| reader.block(h).unwrap().unwrap().index).collect();
    assert_eq!(heights, vec![40, 39, 38, 37, 36, 35, 34, 33, 32, 31, 29, 25, 17, 1, 0]);
    // A peer on a branch from height 30 finds its way back to 31.
    let branch = extend(&p, &blocks[..31], 5, NOW - 500, "x");
    let their_loc: Vec<Hash> = branch.iter().rev().map(|b| b.hash).collect();
    assert_eq!(reader.fork_point(&their_loc).unwrap(), 31);
    assert_eq!(reader.fork_point(&[]).unwrap(), 0);
}

#[test]
fn a_replayed_nonce_is_refused_when_the_block_would_join_the_main_chain() {
    let dir = tempfile::tempdir().unwrap();
    let mut chain = open(&dir);
    let p = params();
    let blocks = chain_of(&p, 3, NOW - 1000);
    offer(&mut chain, &blocks[1..]);
    assert_eq!(chain.reader().last_nonce(&tx(&p, 0, b"").sender).unwrap(), Some(3));
    // A well-mined block whose transaction reuses nonce 2 of the test key.
    let replay =
        remine(&p, Block { transactions: vec![tx(&p, 2, b"again")], ..mine_child(&p, &blocks[3], b"", NOW - 500) });
    let verdict = chain.accept(vec![replay.clone()], NOW).unwrap().remove(0);
    assert!(matches!(verdict, Err(BlockError::StaleNonce { nonce: 2, last: 3, .. })), "{verdict:?}");
    assert!(!chain.reader().contains(&replay.hash).unwrap(), "an invalid block is not kept");
    assert_eq!(chain.reader().tip().unwrap().hash, blocks[3].hash);
    // The same transaction with a fresh nonce goes in, and is indexed.
    let ok = mine_child(&p, &blocks[3], b"fresh", NOW - 400);
    assert_eq!(offer(&mut chain, std::slice::from_ref(&ok)), vec![Outcome::Appended]);
    let id = ok.transactions[0].id(&p.genesis().hash);
    let confirmed = chain.reader().confirmed(&id).unwrap().unwrap();
    assert_eq!((confirmed.height, confirmed.confirmations), (4, 1));
}

#[test]
fn a_reorg_moves_nonces_and_the_transaction_index_with_the_main_chain() {
    let dir = tempfile::tempdir().unwrap();
    let mut chain = open(&dir);
    let p = params();
    let g = p.genesis().hash;
    let common = chain_of(&p, 2, NOW - 1000);
    let other_key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    let other = |nonce| Transaction::sign(&other_key, &g, nonce, 1, b"o".to_vec());
    // Branch a confirms the other key's nonce 50; branch b its nonce 10.
    let a3 = remine(&p, Block { transactions: vec![other(50)], ..mine_child(&p, &common[2], b"", NOW - 900) });
    offer(&mut chain, &common[1..]);
    offer(&mut chain, std::slice::from_ref(&a3));
    let sender = other_key.verifying_key().to_bytes();
    assert_eq!(chain.reader().last_nonce(&sender).unwrap(), Some(50));
    let b3 = remine(&p, Block { transactions: vec![other(10)], ..mine_child(&p, &common[2], b"", NOW - 800) });
    let b4 = mine_child(&p, &b3, b"b4", NOW - 700);
    assert_eq!(offer(&mut chain, &[b3.clone(), b4]), vec![Outcome::SideBranch, Outcome::Reorg { depth: 1 }]);
    // Nonce 10 is valid on b (50 was only on a), and a's transaction is unconfirmed again.
    assert_eq!(chain.reader().last_nonce(&sender).unwrap(), Some(10));
    assert!(chain.reader().confirmed(&a3.transactions[0].id(&g)).unwrap().is_none());
    assert!(chain.reader().confirmed(&b3.transactions[0].id(&g)).unwrap().is_some());
}

#[test]
fn a_heavier_branch_that_breaks_the_nonce_rule_is_refused_and_the_tip_stays() {
    let dir = tempfile::tempdir().unwrap();
    let mut chain = open(&dir);
    let p = params();
    let main = chain_of(&p, 4, NOW - 1000);
    offer(&mut chain, &main[1..]);
    // From height 2: a block replaying nonce 1 (confirmed below the fork), then two more.
    let bad =
        remine(&p, Block { transactions: vec![tx(&p, 1, b"replay")], ..mine_child(&p, &main[2], b"", NOW - 900) });
    let on_bad = extend(&p, &[main[0].clone(), main[1].clone(), main[2].clone(), bad.clone()], 2, NOW - 800, "x");
    let verdicts = chain.accept(on_bad[3..].to_vec(), NOW).unwrap();
    assert_eq!(verdicts[0].as_ref().unwrap().outcome, Outcome::SideBranch);
    assert_eq!(verdicts[1].as_ref().unwrap().outcome, Outcome::SideBranch, "a tie keeps the main chain");
    assert!(matches!(verdicts[2], Err(BlockError::StaleNonce { .. })), "{:?}", verdicts[2]);
    assert_eq!(chain.reader().tip().unwrap().hash, main[4].hash);
    for b in &on_bad[3..] {
        assert!(!chain.reader().contains(&b.hash).unwrap(), "the invalid branch is gone");
    }
}

#[test]
fn with_retargeting_each_block_must_carry_the_target_its_place_requires() {
    let dir = tempfile::tempdir().unwrap();
    let p = NetworkParams { retarget: true, block_time_ms: 1_000, ..params() };
    let mut chain = Chain::open(&dir.path().join("chain.redb"), p.clone()).unwrap();
    // 80 blocks 1 ms apart: far faster than 1 s, so after 60 the target tightens.
    let blocks = chain_of(&p, 80, NOW - 100_000);
    let outcomes = chain.accept(blocks[1..].to_vec(), NOW).unwrap();
    assert!(outcomes.iter().all(|v| v.as_ref().is_ok_and(|a| a.outcome == Outcome::Appended)), "{outcomes:?}");
    assert!(target::from_compact(blocks[80].bits).unwrap() < p.limit(), "the target tightened");
    // A block at the limit where the chain needs the tighter target is refused.
    let lax = mine_child(&p, &blocks[80], b"lax", NOW - 1000);
    let verdict = chain.accept(vec![lax], NOW).unwrap().remove(0);
    assert!(matches!(verdict, Err(BlockError::WrongTarget { .. })), "{verdict:?}");
}

/// Finality on the chain itself: four validators, a checkpoint every 5
/// blocks, voted once 1 deep.
mod finality_rules {
    use super::*;
    use crate::chain::finality::{Added, Checked, FinalityParams, Vote, VoteError};

    fn keys() -> Vec<SigningKey> {
        (1..=4u8).map(|i| SigningKey::from_bytes(&[i; 32])).collect()
    }

    fn fparams() -> NetworkParams {
        let validators = keys().iter().map(|k| k.verifying_key().to_bytes()).collect();
        NetworkParams { finality: FinalityParams::new(validators, 5, 1).unwrap(), ..params() }
    }

    fn open_f(dir: &tempfile::TempDir) -> Chain {
        Chain::open(&dir.path().join("chain.redb"), fparams()).unwrap()
    }

    fn offer_f(chain: &mut Chain, blocks: &[Block]) -> Vec<Outcome> {
        chain.accept(blocks.to_vec(), NOW).unwrap().into_iter().map(|v| v.unwrap().outcome).collect()
    }

    fn votes(chain: &Chain, who: &[usize], cp: u64, hash: Hash) -> Vec<Checked<Vote>> {
        let g = chain.genesis().hash;
        let ks = keys();
        let p = &chain.params().finality;
        who.iter().map(|&i| Vote::sign(&ks[i], &g, p, cp, hash).verify(&g, p).unwrap()).collect()
    }

    #[test]
    fn a_quorum_finalizes_and_a_heavier_branch_below_it_is_refused_whatever_its_work() {
        let dir = tempfile::tempdir().unwrap();
        let mut chain = open_f(&dir);
        let p = fparams();
        let main = chain_of(&p, 7, NOW - 10_000);
        offer_f(&mut chain, &main[1..]);
        // Two of four: nothing final.
        let (verdicts, applied) = chain.accept_votes(votes(&chain, &[0, 1], 1, main[5].hash), vec![]).unwrap();
        assert!(verdicts.iter().all(|v| *v == Added::New));
        assert_eq!(applied.finalized, None);
        assert_eq!(chain.finalized().height, 0);
        // The third makes it final.
        let (_, applied) = chain.accept_votes(votes(&chain, &[2], 1, main[5].hash), vec![]).unwrap();
        assert_eq!(applied.finalized, Some(Finalized { height: 5, hash: main[5].hash }));
        assert_eq!(chain.reader().finalized().unwrap(), Finalized { height: 5, hash: main[5].hash });
        // A branch from height 3 with far more work is stored and refused.
        let heavy = extend(&p, &main[..4], 10, NOW - 5_000, "heavy");
        let outcomes = offer_f(&mut chain, &heavy[4..]);
        assert!(outcomes.contains(&Outcome::BelowFinal), "{outcomes:?}");
        assert!(!outcomes.iter().any(|o| matches!(o, Outcome::Reorg { .. })), "{outcomes:?}");
        assert_eq!(chain.reader().tip().unwrap().hash, main[7].hash, "the main chain kept the final block");
        // A heavier branch above the final checkpoint still wins, as PoW says.
        let above = extend(&p, &main[..6], 3, NOW - 4_000, "above");
        let outcomes = offer_f(&mut chain, &above[6..]);
        assert!(outcomes.iter().any(|o| matches!(o, Outcome::Reorg { .. })), "{outcomes:?}");
        assert_eq!(chain.reader().tip().unwrap().hash, above[8].hash);
    }

    #[test]
    fn a_final_checkpoint_off_the_main_chain_moves_the_main_chain_onto_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut chain = open_f(&dir);
        let p = fparams();
        let common = chain_of(&p, 2, NOW - 10_000);
        let light = extend(&p, &common, 5, NOW - 9_000, "light"); // tip at 7
        let heavy = extend(&p, &common, 8, NOW - 8_000, "heavy"); // tip at 10
        offer_f(&mut chain, &light[1..]);
        offer_f(&mut chain, &heavy[3..]);
        assert_eq!(chain.reader().tip().unwrap().hash, heavy[10].hash, "most work, before any finality");
        // The validators finalized the light branch's checkpoint.
        let (_, applied) = chain.accept_votes(votes(&chain, &[0, 1, 3], 1, light[5].hash), vec![]).unwrap();
        assert_eq!(applied.finalized.map(|f| f.hash), Some(light[5].hash));
        assert_eq!(applied.reorgs.len(), 1, "moved off the heavier branch");
        assert_eq!(chain.reader().tip().unwrap().hash, light[7].hash, "the best chain containing the final block");
    }

    #[test]
    fn a_quorum_for_an_unknown_block_asks_for_it_and_finalizes_when_it_arrives() {
        let dir = tempfile::tempdir().unwrap();
        let mut chain = open_f(&dir);
        let p = fparams();
        let main = chain_of(&p, 6, NOW - 10_000);
        let (_, applied) = chain.accept_votes(votes(&chain, &[0, 1, 2], 1, main[5].hash), vec![]).unwrap();
        assert_eq!(applied.missing_final, Some(main[5].hash));
        assert_eq!(chain.finalized().height, 0);
        offer_f(&mut chain, &main[1..]);
        assert_eq!(chain.finalized(), Finalized { height: 5, hash: main[5].hash });
    }

    #[test]
    fn forged_or_misplaced_votes_never_pass_the_check_the_chain_requires() {
        let p = fparams();
        let g = p.genesis().hash;
        let ks = keys();
        let mut forged = Vote::sign(&ks[0], &g, &p.finality, 1, [5; 32]);
        forged.signature[0] ^= 1;
        assert!(matches!(forged.verify(&g, &p.finality), Err(VoteError::BadSignature(_))));
        let stranger = Vote::sign(&SigningKey::from_bytes(&[77; 32]), &g, &p.finality, 1, [5; 32]);
        assert!(matches!(stranger.verify(&g, &p.finality), Err(VoteError::NotAValidator(_))));
        let misplaced = Vote { height: 6, ..Vote::sign(&ks[0], &g, &p.finality, 1, [5; 32]) };
        assert!(matches!(misplaced.verify(&g, &p.finality), Err(VoteError::WrongHeight { .. })));
        let other_network = Vote::sign(&ks[0], &[1; 32], &p.finality, 1, [5; 32]);
        assert!(matches!(other_network.verify(&g, &p.finality), Err(VoteError::BadSignature(_))));
    }

    #[test]
    fn messages_committed_together_keep_their_own_verdicts_and_new_votes() {
        let dir = tempfile::tempdir().unwrap();
        let mut chain = open_f(&dir);
        let p = fparams();
        let main = chain_of(&p, 6, NOW - 10_000);
        offer_f(&mut chain, &main[1..]);
        let a = votes(&chain, &[0, 1], 1, main[5].hash);
        let b = votes(&chain, &[1, 2], 1, main[5].hash); // validator 1 again: known by then
        let (groups, applied) = chain.accept_vote_groups(vec![(a, vec![]), (b, vec![])]).unwrap();
        assert_eq!(groups[0].verdicts, vec![Added::New, Added::New]);
        assert_eq!(groups[1].verdicts, vec![Added::Known, Added::New]);
        assert_eq!(groups[0].votes.len(), 2);
        assert_eq!(groups[1].votes.len(), 1, "only what was new in that message");
        assert_eq!(applied.finalized.map(|f| f.height), Some(5), "together they are a quorum");
        assert_eq!(chain.reader().votes(1, 1, 10).unwrap().len(), 3, "all committed");
    }

    #[test]
    fn an_equivocator_is_convicted_stops_counting_and_the_evidence_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let mut chain = open_f(&dir);
        let p = fparams();
        let main = chain_of(&p, 6, NOW - 10_000);
        offer_f(&mut chain, &main[1..]);
        chain.accept_votes(votes(&chain, &[0, 1], 1, main[5].hash), vec![]).unwrap();
        // Validator 1 also signs another block at the same checkpoint.
        let (verdicts, applied) = chain.accept_votes(votes(&chain, &[1], 1, [9; 32]), vec![]).unwrap();
        assert!(matches!(verdicts[0], Added::Equivocation(_)), "{verdicts:?}");
        assert_eq!(applied.evidence.len(), 1);
        // Validator 2's vote would have made three: validator 1 no longer counts.
        let (_, applied) = chain.accept_votes(votes(&chain, &[2], 1, main[5].hash), vec![]).unwrap();
        assert_eq!(applied.finalized, None);
        let (_, applied) = chain.accept_votes(votes(&chain, &[3], 1, main[5].hash), vec![]).unwrap();
        assert_eq!(applied.finalized.map(|f| f.height), Some(5), "three honest validators are a quorum");
        assert_eq!(chain.reader().evidence(10).unwrap().len(), 1);
    }

    #[test]
    fn finality_and_the_last_signed_checkpoint_survive_a_restart_so_a_validator_never_signs_twice() {
        let dir = tempfile::tempdir().unwrap();
        let p = fparams();
        let main = chain_of(&p, 6, NOW - 10_000);
        let mine = {
            let mut chain = open_f(&dir);
            assert!(chain.set_validator(keys()[0].clone()));
            offer_f(&mut chain, &main[1..]);
            // Tip 6, 1 deep: checkpoint 1 (height 5) is due and signed.
            let mine = chain.reader().votes(1, 1, 10).unwrap();
            assert_eq!(mine.len(), 1);
            assert_eq!(mine[0].validator, keys()[0].verifying_key().to_bytes());
            chain.accept_votes(votes(&chain, &[1, 2], 1, main[5].hash), vec![]).unwrap();
            assert_eq!(chain.finalized().height, 5);
            mine
        };
        let mut chain = open_f(&dir);
        assert_eq!(chain.finalized(), Finalized { height: 5, hash: main[5].hash }, "final after a restart");
        assert!(chain.set_validator(keys()[0].clone()));
        // A reorg above the final block to a branch with another block at
        // height 10 (checkpoint 2) would be signed once; checkpoint 1 never again.
        let more = extend(&p, &main, 5, NOW - 5_000, "more");
        offer_f(&mut chain, &more[7..]);
        let signed = chain.reader().votes(1, 2, 10).unwrap();
        let ours: Vec<_> = signed.iter().filter(|v| v.validator == mine[0].validator).collect();
        assert_eq!(ours.len(), 2, "checkpoints 1 and 2, once each: {ours:?}");
        assert!(ours.iter().any(|v| **v == mine[0]), "the vote for checkpoint 1 is the one signed before the restart");
        // A validator key outside the set is refused.
        assert!(!chain.set_validator(SigningKey::from_bytes(&[99; 32])));
    }
}
