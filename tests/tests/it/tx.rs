//! Transactions end to end: submitted anywhere, gossiped once per node,
//! mined by whichever node mines, confirmed everywhere; each rule its code;
//! a bounded mempool under a flood; abandoned blocks' transactions return.

use std::time::Duration;

use ed25519_dalek::SigningKey;
use node_svc::chain::Transaction;
use node_svc::convert::tx_to_proto;
use node_svc::testkit::{TestNet, TestNode, all_active, channel_as, converged, eventually, node_config};
use p2p_proto::admin::{StartMiningRequest, StopMiningRequest};
use p2p_proto::node::node_client::NodeClient;
use p2p_proto::node::{
    AnnounceTransactionsRequest, GetMempoolRequest, GetStatusRequest, GetTransactionRequest, TransactionStatus,
};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(60);

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn signed(node: &TestNode, key: &SigningKey, nonce: u64, payload: &[u8]) -> Transaction {
    Transaction::sign(key, &node.node().chain().genesis_hash(), nonce, p2p_proto::unix_ms_now(), payload.to_vec())
}

async fn status_of(node: &TestNode, id: &[u8]) -> Option<TransactionStatus> {
    let r = node.client().await.get_transaction(GetTransactionRequest { id: id.to_vec() }).await.ok()?;
    Some(r.into_inner().status())
}

#[tokio::test]
async fn a_transaction_submitted_at_node1_is_mined_by_node3s_miner_and_confirmed_everywhere() {
    // A retargeting network: 12-bit limit, 300 ms blocks.
    let net = TestNet::launch(3, |dir, addr, bootstrap| {
        let mut c = node_config(dir, addr, Some(bootstrap), 12);
        c.network.retarget = true;
        c.network.block_time_ms = 300;
        c
    })
    .await;
    all_active(&net.refs()).await;
    let (n1, n3) = (&net.nodes[0], &net.nodes[2]);
    let limit = node_svc::chain::target::to_compact(n1.config.network.limit());
    n3.admin().await.start_mining(StartMiningRequest {}).await.unwrap();
    let tx = signed(n1, &key(1), 1, b"vote: yes");
    let id = n1.client().await.submit_transaction(tx_to_proto(&tx)).await.unwrap().into_inner().id;
    assert_eq!(id, tx.id(&n1.node().chain().genesis_hash()).to_vec());
    // Announced by node1, fetched by the others, mined by node3, confirmed on all three.
    for n in &net.nodes {
        eventually(WAIT, "the transaction is confirmed on every node", || async {
            (status_of(n, &id).await == Some(TransactionStatus::Confirmed)).then_some(())
        })
        .await;
    }
    // Confirmed by the chain first; the mempools follow.
    eventually(WAIT, "the mined transaction left every mempool", || async {
        net.nodes.iter().all(|n| n.node().mempool().is_empty()).then_some(())
    })
    .await;
    // Announced to all, its body fetched once per node: node1 had it; the
    // other two each received it once (or not at all, if the block came first).
    assert_eq!(n1.node().stats().tx_bodies_received, 0);
    for n in &net.nodes[1..] {
        assert!(n.node().stats().tx_bodies_received <= 1, "{:?}", n.node().stats());
    }
    // Keep mining past the averaging window: the target tightens toward 300 ms blocks.
    eventually(WAIT, "the miner passes 65 blocks", || async { (n3.height().await >= 65).then_some(()) }).await;
    let next = n3.client().await.get_status(GetStatusRequest {}).await.unwrap().into_inner();
    assert_ne!(next.bits, limit, "LWMA moved the target off the limit");
    n3.admin().await.stop_mining(StopMiningRequest {}).await.unwrap();
    let tip = n3.height().await;
    converged(&net.refs(), tip, WAIT).await;
    net.stop().await;
}

#[tokio::test]
async fn a_bad_signature_a_replayed_nonce_and_an_oversized_payload_each_get_their_code() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(|addr| node_config(dir.path(), addr, None, 8)).await;
    let mut c = node.client().await;
    let k = key(2);
    // Signature over something else.
    let mut forged = signed(&node, &k, 1, b"original");
    forged.payload = b"altered".to_vec();
    let err = c.submit_transaction(tx_to_proto(&forged)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("rule tx-signature"), "{}", err.message());
    // Too big a payload.
    let big = signed(&node, &k, 2, &vec![0; node.config.network.max_tx_payload + 1]);
    let err = c.submit_transaction(tx_to_proto(&big)).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(err.message().contains("rule tx-size"), "{}", err.message());
    // Confirmed at nonce 5; nonce 5 again (different payload) is a replay.
    let first = signed(&node, &k, 5, b"first");
    c.submit_transaction(tx_to_proto(&first)).await.unwrap();
    node.mine("").await;
    assert_eq!(
        status_of(&node, &first.id(&node.node().chain().genesis_hash())).await,
        Some(TransactionStatus::Confirmed)
    );
    let replay = signed(&node, &k, 5, b"second");
    let err = c.submit_transaction(tx_to_proto(&replay)).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert!(err.message().contains("rule tx-replay"), "{}", err.message());
    // A malformed field is named.
    let mut short = tx_to_proto(&signed(&node, &k, 6, b"x"));
    short.sender.pop();
    let err = c.submit_transaction(short).await.unwrap_err();
    assert!(err.code() == Code::InvalidArgument && err.message().contains("sender"), "{err:?}");
    node.stop().await;
}

#[tokio::test]
async fn the_mempool_bound_holds_under_a_flood() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(|addr| {
        let mut c = node_config(dir.path(), addr, None, 8);
        c.mempool.max_count = 50;
        c.mempool.max_bytes = 40 * 1024;
        c.mempool.max_per_sender = 5;
        c
    })
    .await;
    let c = node.client().await;
    // 600 transactions from 60 keys, 20 in flight at a time.
    let keys: Vec<SigningKey> = (0..60u8).map(|i| key(i + 10)).collect();
    let txs: Vec<Transaction> =
        (0..600usize).map(|i| signed(&node, &keys[i % 60], (i / 60) as u64 + 1, &vec![i as u8; 500])).collect();
    let mut answered = 0;
    for chunk in txs.chunks(20) {
        let calls = chunk.iter().map(|t| {
            let mut c = c.clone();
            let t = tx_to_proto(t);
            async move { c.submit_transaction(t).await }
        });
        for r in futures::future::join_all(calls).await {
            answered += 1;
            if let Err(e) = r {
                assert_eq!(e.code(), Code::ResourceExhausted, "only the per-sender cap refuses here: {e:?}");
            }
        }
        let m = node.node().mempool();
        assert!(m.len() <= 50 && m.bytes() <= 40 * 1024, "{} transactions, {} bytes", m.len(), m.bytes());
    }
    assert_eq!(answered, 600);
    let page =
        c.clone().get_mempool(GetMempoolRequest { limit: 1000, ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(page.count as usize, page.entries.len());
    assert!(page.count <= 50 && page.bytes <= 40 * 1024);
    // The oldest made room: the newest submission is there.
    let newest = txs.last().unwrap().id(&node.node().chain().genesis_hash());
    assert!(node.node().mempool().contains(&newest));
    node.stop().await;
}

#[tokio::test]
async fn a_reorg_returns_the_abandoned_blocks_transactions_to_the_mempool() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = TestNode::start(|addr| node_config(da.path(), addr, None, 8)).await;
    let b = TestNode::start(|addr| node_config(db.path(), addr, None, 8)).await;
    // Apart: a confirms T in one block; b mines two blocks without it.
    let t = signed(&a, &key(3), 1, b"will be abandoned");
    a.client().await.submit_transaction(tx_to_proto(&t)).await.unwrap();
    a.mine("").await;
    let id = t.id(&a.node().chain().genesis_hash());
    assert_eq!(status_of(&a, &id).await, Some(TransactionStatus::Confirmed));
    b.mine("b1").await;
    b.mine("b2").await;
    // Together: a reorganises onto b's heavier chain, and T is pending again.
    a.node().peers().learn(&b.addr.to_string(), p2p_proto::node::PeerSource::Configured, None);
    let tip = converged(&[&a, &b], 2, WAIT).await;
    assert_eq!(tip.hash, b.tip().await.hash);
    eventually(WAIT, "the transaction is back in a's mempool", || async {
        (status_of(&a, &id).await == Some(TransactionStatus::Pending)).then_some(())
    })
    .await;
    // And it gets mined again on the new chain.
    a.mine("").await;
    assert_eq!(status_of(&a, &id).await, Some(TransactionStatus::Confirmed));
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_peer_that_relays_invalid_transactions_loses_score_and_is_banned() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(|addr| node_config(dir.path(), addr, None, 8)).await;
    let relay = key(40);
    let relay_id = p2p_proto::signing::node_id(&relay.verifying_key().to_bytes());
    let mut c = p2p_proto::node::node_client::NodeClient::new(
        node_svc::testkit::channel_as(&node.endpoint(), &relay, None).await,
    );
    let mut bad = signed(&node, &key(41), 1, b"x");
    bad.payload = b"not what was signed".to_vec();
    for _ in 0..4 {
        let r = c
            .send_transactions(p2p_proto::node::SendTransactionsRequest { transactions: vec![tx_to_proto(&bad)] })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.accepted, 0);
    }
    assert!(node.node().peers().is_node_banned(&relay_id, node.node().now_ms()), "four invalid relays ban the relay");
    // An anonymous client doing the same costs nobody anything.
    let mut anon = node.client().await;
    anon.send_transactions(p2p_proto::node::SendTransactionsRequest { transactions: vec![tx_to_proto(&bad)] })
        .await
        .unwrap();
    assert_eq!(node.node().peers().ban_count(), 1);
    node.stop().await;
}

/// Two nodes without a bootstrap, the second configured with the first as
/// its peer, both seeing each other as active.
async fn linked_pair() -> (TestNode, TestNode, [tempfile::TempDir; 2]) {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let first = TestNode::start(|addr| node_config(dirs[0].path(), addr, None, 8)).await;
    let first_addr = first.addr.to_string();
    let second = TestNode::start(|addr| {
        let mut c = node_config(dirs[1].path(), addr, None, 8);
        c.peers = vec![first_addr];
        c
    })
    .await;
    all_active(&[&first, &second]).await;
    (first, second, dirs)
}

#[tokio::test]
async fn a_body_is_asked_of_one_announcer_and_a_withheld_one_comes_from_the_next() {
    let (h, a, _dirs) = linked_pair().await;
    let genesis = a.node().chain().genesis_hash();
    let tx = signed(&a, &key(9), 1, b"withheld");
    let id = tx.id(&genesis);
    let announce = AnnounceTransactionsRequest { ids: vec![id.to_vec()] };

    // A stranger with its own key announces it first, is asked for it, and never sends it.
    let mut withholder = NodeClient::new(channel_as(&a.endpoint(), &key(200), None).await);
    let wanted = withholder.announce_transactions(announce.clone()).await.unwrap().into_inner().wanted;
    assert_eq!(wanted, vec![id.to_vec()], "the first announcer is asked for the body");
    // While that body is on its way, nobody else is asked for it.
    let mut second = NodeClient::new(channel_as(&a.endpoint(), &key(201), None).await);
    let wanted = second.announce_transactions(announce).await.unwrap().into_inner().wanted;
    assert!(wanted.is_empty(), "a second announcer was asked too: {wanted:?}");

    // The honest peer gets it and announces it; once the withholder's time
    // is up, A asks the next announcer it can dial (the stranger with key
    // 201 has no address), and gets it.
    h.client().await.submit_transaction(tx_to_proto(&tx)).await.unwrap();
    eventually(WAIT, "A has the transaction the withholder kept", || async {
        a.node().mempool().contains(&id).then_some(())
    })
    .await;
    assert_eq!(a.node().stats().tx_bodies_received, 1, "one body, from the honest peer");
    a.stop().await;
    h.stop().await;
}

#[tokio::test]
async fn big_transactions_travel_in_messages_a_peer_can_decode_and_pages_stay_within_a_block() {
    let (a, b, _dirs) = linked_pair().await;
    // 40 transactions of 60 KiB: 2.4 MB, over twice what one message to a node may carry.
    let k = key(30);
    let txs: Vec<Transaction> = (1..=40).map(|n| signed(&a, &k, n, &vec![n as u8; 60 * 1024])).collect();
    let verdicts = a.node().mempool().submit(txs.clone(), node_svc::mempool::Source::Client).await;
    assert!(verdicts.iter().all(|v| v.is_ok()), "{verdicts:?}");

    // Announced together, their bodies are sent in several messages and all arrive.
    eventually(WAIT, "node b has all 40", || async { (b.node().mempool().len() == 40).then_some(()) }).await;

    // A page asked for 1,000 entries holds about a block's worth; paging still gives each once.
    let mut client = a.client().await;
    let (mut seen, mut token, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let page = client
            .get_mempool(GetMempoolRequest { limit: 1000, page_token: token.clone() })
            .await
            .unwrap()
            .into_inner();
        let bytes: usize = page.entries.iter().map(|e| e.transaction.as_ref().unwrap().payload.len()).sum();
        assert!(bytes <= 1024 * 1024, "a page of {bytes} payload bytes");
        assert!(!page.entries.is_empty());
        seen.extend(page.entries.into_iter().map(|e| e.id));
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert!(pages >= 3, "{pages} pages");
    let genesis = a.node().chain().genesis_hash();
    let want: Vec<Vec<u8>> = txs.iter().map(|t| t.id(&genesis).to_vec()).collect();
    assert_eq!(seen, want, "every transaction once, in arrival order");
    a.stop().await;
    b.stop().await;
}
