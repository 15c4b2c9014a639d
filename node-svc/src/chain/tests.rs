//! Chain store tests: fork choice, reorgs, orphans, persistence.

use super::testing::{chain_of, extend, params};
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
    assert_eq!(tip.work, 6 * block::work(8));
    assert_eq!(offer(&mut chain, &blocks[3..4]), vec![Outcome::Duplicate]);
    // Genesis too is a duplicate, and a different height-0 block is refused.
    assert_eq!(offer(&mut chain, &blocks[..1]), vec![Outcome::Duplicate]);
    let mut forged = blocks[0].clone();
    forged.data = b"another genesis".to_vec();
    forged.hash = forged.compute_hash();
    let verdict = chain.accept(vec![forged], NOW).unwrap().remove(0);
    assert!(matches!(verdict, Err(BlockError::WrongGenesis { .. })), "{verdict:?}");
}

#[test]
fn an_invalid_block_is_refused_without_stopping_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut chain = open(&dir);
    let blocks = chain_of(&params(), 3, NOW - 1000);
    let mut bad = blocks[2].clone();
    bad.data = b"tampered".to_vec();
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
