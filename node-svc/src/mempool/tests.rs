//! The mempool against a real chain store: rules, durability, reload,
//! following the chain.

use std::sync::Arc;

use super::*;
use crate::chain::testing::{chain_of, mine_child, params, remine, test_key};
use crate::chain::{Block, Chain, ChainHandle, Origin};

const NOW: u64 = 1_800_000_000_000;

fn limits() -> PoolLimits {
    PoolLimits { max_count: 100, max_bytes: 1 << 20, max_per_sender: 10 }
}

struct Fixture {
    chain: ChainHandle,
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let chain = Chain::open(&dir.path().join("chain.redb"), params()).unwrap();
    let clock = p2p_proto::clock::ManualClock::new(NOW);
    let (chain, _thread) = ChainHandle::spawn(chain, Arc::new(clock)).unwrap();
    let path = dir.path().join("mempool.redb");
    Fixture { chain, _dir: dir, path }
}

/// A mempool and its thread (joined by [`close`] before the file is reopened).
fn open(f: &Fixture) -> (Mempool, std::thread::JoinHandle<()>) {
    let clock: Arc<dyn p2p_proto::clock::Clock> = Arc::new(p2p_proto::clock::ManualClock::new(NOW));
    Mempool::open(&f.path, limits(), f.chain.reader(), f.chain.genesis_hash(), params().max_tx_payload, clock).unwrap()
}

fn close((pool, thread): (Mempool, std::thread::JoinHandle<()>)) {
    drop(pool);
    thread.join().unwrap();
}

fn sign(nonce: u64, payload: &[u8]) -> Transaction {
    Transaction::sign(&test_key(), &params().genesis().hash, nonce, 1, payload.to_vec())
}

#[tokio::test]
async fn accepted_transactions_are_durable_and_reloaded_against_the_chain() {
    let f = fixture();
    let opened = open(&f);
    let pool = &opened.0;
    let ok = pool.submit(vec![sign(5, b"a"), sign(6, b"b")], Source::Client).await;
    assert!(ok.iter().all(|r| r.is_ok()), "{ok:?}");
    let mut bad = sign(7, b"c");
    bad.payload = b"changed".to_vec();
    let refused = pool.submit(vec![bad, sign(5, b"again")], Source::Client).await;
    assert!(matches!(refused[0], Err(SubmitError::Invalid(_))), "{:?}", refused[0]);
    assert!(matches!(refused[1], Err(SubmitError::Refused(Refused::NonceTaken { .. }))), "{:?}", refused[1]);
    close(opened);
    // Reopened: both are back (the chain confirmed nothing meanwhile).
    let opened = open(&f);
    assert_eq!(opened.0.len(), 2);
    // The chain confirms nonce 6 (from another block with the test key): both
    // pending ones are now stale, and a reload drops them.
    let p = params();
    let g = p.genesis();
    let b1 = remine(&p, Block { transactions: vec![sign(6, b"mined")], ..mine_child(&p, &g, b"", NOW - 10) });
    f.chain.accept(vec![b1], Origin::Local).await.unwrap();
    close(opened);
    let opened = open(&f);
    let pool = &opened.0;
    assert!(pool.is_empty(), "what the chain made stale is not reloaded");
    let replay = pool.submit(vec![sign(6, b"replay")], Source::Client).await.remove(0);
    assert!(matches!(replay, Err(SubmitError::Refused(Refused::Stale { .. }))), "{replay:?}");
}

#[tokio::test]
async fn mined_transactions_leave_and_abandoned_ones_come_back() {
    let f = fixture();
    let (pool, _thread) = open(&f);
    let p = params();
    let tx = sign(1_000, b"pending");
    pool.submit(vec![tx.clone()], Source::Client).await.remove(0).unwrap();
    let id = tx.id(&p.genesis().hash);
    // Block a1 confirms it.
    let g = p.genesis();
    let a1 = remine(&p, Block { transactions: vec![tx.clone()], ..mine_child(&p, &g, b"", NOW - 100) });
    f.chain.accept(vec![a1.clone()], Origin::Local).await.unwrap();
    pool.chain_moved(ChainEvent::TipChanged { block: Arc::new(a1.clone()), origin: Origin::Local }).await;
    let gone = pool.submit(vec![], Source::Client).await; // a round trip: the event was handled
    assert!(gone.is_empty());
    assert!(!pool.contains(&id));
    // A heavier branch without it: the transaction is pending again.
    let b = chain_of(&p, 2, NOW - 50);
    let verdicts = f.chain.accept(b[1..].to_vec(), Origin::Local).await.unwrap();
    assert!(verdicts.iter().all(|v| v.is_ok()));
    pool.chain_moved(ChainEvent::Reorg { removed: vec![a1.hash], added: vec![b[1].hash, b[2].hash] }).await;
    let _ = pool.submit(vec![], Source::Client).await;
    assert!(pool.contains(&id), "back from the abandoned block");
}

#[tokio::test]
async fn concurrent_submissions_each_get_their_own_answer_and_are_durable() {
    let f = fixture();
    let opened = open(&f);
    let genesis = params().genesis().hash;
    let tx_of = |i: u8| {
        let key = ed25519_dalek::SigningKey::from_bytes(&[i + 1; 32]);
        let mut t = Transaction::sign(&key, &genesis, 1, 1, vec![i]);
        if i % 10 == 3 {
            t.payload = b"altered".to_vec(); // its signature no longer matches
        }
        t
    };
    let mut listen = opened.0.subscribe();
    // 80 submissions in flight at once: the worker takes whatever is queued
    // into one group; every caller still gets the verdict of its own.
    let answers = futures::future::join_all((0..80u8).map(|i| {
        let pool = opened.0.clone();
        async move { (i, pool.submit(vec![tx_of(i)], Source::Peer(Some(format!("peer{i}")))).await) }
    }))
    .await;
    for (i, mut answer) in answers {
        let verdict = answer.remove(0);
        if i % 10 == 3 {
            assert!(matches!(verdict, Err(SubmitError::Invalid(_))), "#{i}: {verdict:?}");
        } else {
            assert_eq!(verdict.unwrap(), tx_of(i).id(&genesis), "#{i} got someone else's answer");
        }
    }
    // Each admitted transaction is announced once, with its own submission's source.
    for _ in 0..72 {
        let a = listen.try_recv().unwrap();
        let i = opened.0.get(&a.id).unwrap().tx.payload[0];
        assert_eq!(a.source, Source::Peer(Some(format!("peer{i}"))));
    }
    assert!(listen.try_recv().is_err(), "nothing announced twice or refused announced");
    close(opened);
    let reopened = open(&f);
    assert_eq!(reopened.0.len(), 72, "every acknowledged transaction was durable");
    close(reopened);
}
