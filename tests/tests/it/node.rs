//! Networks of real nodes (and a bootstrap) running in this process.

use std::time::Duration;

use node_svc::chain::testing::{chain_of, extend};
use node_svc::testkit::{TestNet, TestNode, converged, eventually, node_config, settled, test_network};
use p2p_proto::admin::MineBlockRequest;
use p2p_proto::node::{BlockOutcome, GetBlocksRequest, GetStatusRequest, SendBlockRequest, Sender};
use tokio_stream::StreamExt;
use tonic::Code;

const BITS: u32 = 8;
const WAIT: Duration = Duration::from_secs(30);

async fn mine(node: &TestNode, data: &str) -> p2p_proto::node::Block {
    let r = node.mine(data).await;
    assert_eq!(r.outcome(), BlockOutcome::Appended);
    r.block.unwrap()
}

#[tokio::test]
async fn a_block_mined_on_one_node_reaches_all_others() {
    let net = TestNet::start(4, BITS).await;
    let block = mine(&net.nodes[0], "hello network").await;
    let refs = net.refs();
    let tip = converged(&refs, 1, WAIT).await;
    assert_eq!(tip.hash.as_slice(), block.hash.as_slice());
    for n in &net.nodes {
        let mut c = n.client().await;
        let status = c.get_status(GetStatusRequest {}).await.unwrap().into_inner();
        assert_eq!(status.height, 1);
        assert_eq!(status.peer_count, 3);
        let got: Vec<_> = c
            .get_blocks(GetBlocksRequest { from_height: 1, ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .collect::<Vec<_>>()
            .await;
        assert_eq!(got.len(), 1);
        let txs = &got[0].as_ref().unwrap().transactions;
        assert_eq!(txs.len(), 1, "the mined data travels as one transaction");
        assert_eq!(txs[0].payload, b"hello network");
    }
    net.stop().await;
}

#[tokio::test]
async fn each_node_stores_each_block_once_and_gossip_does_not_loop() {
    let net = TestNet::start(4, BITS).await;
    let refs = net.refs();
    const BLOCKS: u64 = 5;
    for i in 0..BLOCKS {
        mine(&net.nodes[(i % 2) as usize], &format!("block {i}")).await;
        converged(&refs, i + 1, WAIT).await;
    }
    // A tip is visible once committed, a moment before the import that
    // committed it counts the block: wait for the counts.
    eventually(WAIT, "every node counts every block stored", || async {
        net.nodes.iter().all(|n| n.node().stats().blocks_stored >= BLOCKS).then_some(())
    })
    .await;
    // Full blocks delivered by relay (pushed or fetched after an
    // announcement), and relay messages of any kind received.
    let delivered =
        || net.nodes.iter().map(|n| n.node().stats()).map(|s| s.blocks_received + s.blocks_fetched).sum::<u64>();
    let messages = || {
        net.nodes.iter().map(|n| n.node().stats()).map(|s| s.blocks_received + s.announcements_received).sum::<u64>()
    };
    // Let everything in flight land: the counts must stay put for a while
    // (several heartbeats), or a loop would still be forwarding.
    let quiet = net.nodes[0].config.ping_interval * 5;
    let total = settled(WAIT, quiet, "relay messages", || async { messages() }).await;
    // Each node relays a block only when it first has it, one message (a
    // push or an announcement) to each of at most 3 peers: 4 nodes x 3
    // peers x 5 blocks bounds them all. A relay loop would exceed it.
    assert!(total <= 4 * 3 * BLOCKS, "{total} relay messages");
    let full = delivered();
    assert!(full <= 4 * 3 * BLOCKS, "{full} full blocks delivered");
    for n in &net.nodes {
        let s = n.node().stats();
        assert_eq!(s.blocks_stored, BLOCKS, "every node stores every block exactly once: {s:?}");
    }
    net.stop().await;
}

#[tokio::test]
async fn a_late_joiner_syncs_thousands_of_blocks() {
    const N: usize = 3000;
    let params = test_network(4);
    let blocks = chain_of(&params, N, p2p_proto::unix_ms_now() - 60_000);
    let dir_a = tempfile::tempdir().unwrap();
    let a = TestNode::start(|addr| node_config(dir_a.path(), addr, None, 4)).await;
    // Load A through BroadcastBlockchain: one stream, thousands of blocks.
    let mut c = a.client().await;
    let stream = tokio_stream::iter(blocks[1..].iter().map(node_svc::convert::block_to_proto).collect::<Vec<_>>());
    let r = c.broadcast_blockchain(stream).await.unwrap().into_inner();
    assert!(r.adopted, "{}", r.message);
    assert_eq!((r.received, r.stored, r.height), (N as u64, N as u64, N as u64));

    let dir_b = tempfile::tempdir().unwrap();
    let peer = a.addr.to_string();
    let b = TestNode::start(|addr| {
        let mut cfg = node_config(dir_b.path(), addr, None, 4);
        cfg.peers = vec![peer];
        cfg
    })
    .await;
    let tip = converged(&[&a, &b], N as u64, Duration::from_secs(120)).await;
    assert_eq!(tip.hash, blocks[N].hash);
    assert!(b.node().stats().synced_blocks >= N as u64);
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn two_sides_that_mined_apart_converge_on_the_heavier_chain() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = TestNode::start(|addr| node_config(dir_a.path(), addr, None, BITS)).await;
    let b = TestNode::start(|addr| node_config(dir_b.path(), addr, None, BITS)).await;
    for i in 0..3 {
        mine(&a, &format!("a{i}")).await;
    }
    for i in 0..5 {
        mine(&b, &format!("b{i}")).await;
    }
    let b_tip = b.tip().await;
    assert_eq!(a.height().await, 3);
    // Connect them: A learns of B.
    a.node().peers().learn(&b.addr.to_string(), p2p_proto::node::PeerSource::Configured, None);
    let tip = converged(&[&a, &b], 5, WAIT).await;
    assert_eq!(tip.hash, b_tip.hash, "the heavier (longer) chain wins");
    // A keeps its old branch as a side branch and still mines on the new tip.
    let block = mine(&a, "after the reorg").await;
    assert_eq!(block.index, 6);
    converged(&[&a, &b], 6, WAIT).await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_restarted_node_resumes_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(|addr| node_config(dir.path(), addr, None, BITS)).await;
    let id = node.node().node_id().to_string();
    for i in 0..5 {
        mine(&node, &format!("{i}")).await;
    }
    let before = node.tip().await;
    node.stop().await;
    let node = TestNode::start(|addr| node_config(dir.path(), addr, None, BITS)).await;
    assert_eq!(node.tip().await, before);
    assert_eq!(node.node().node_id(), id, "identity persists");
    assert_eq!(mine(&node, "next").await.index, 6);
    node.stop().await;
}

#[tokio::test]
async fn an_orphan_makes_the_receiver_fetch_the_missing_range_from_the_sender() {
    let params = test_network(BITS);
    let blocks = chain_of(&params, 10, p2p_proto::unix_ms_now() - 60_000);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = TestNode::start(|addr| node_config(dir_a.path(), addr, None, BITS)).await;
    let b = TestNode::start(|addr| node_config(dir_b.path(), addr, None, BITS)).await;
    let mut ca = a.client().await;
    ca.broadcast_blockchain(tokio_stream::iter(
        blocks[1..].iter().map(node_svc::convert::block_to_proto).collect::<Vec<_>>(),
    ))
    .await
    .unwrap();
    // B gets only the tip from A (its certificate proves it is A, and it
    // names its address): B keeps it as an orphan and fetches the rest from A.
    let (a_key, _) = p2p_proto::identity::load_or_create(&dir_a.path().join("node.key")).unwrap();
    let mut cb =
        p2p_proto::node::node_client::NodeClient::new(node_svc::testkit::channel_as(&b.endpoint(), &a_key, None).await);
    let r = cb
        .send_block(SendBlockRequest {
            block: Some(node_svc::convert::block_to_proto(&blocks[10])),
            sender: Some(Sender { node_id: a.node().node_id().into(), address: a.addr.to_string() }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.outcome(), BlockOutcome::Orphan);
    let tip = converged(&[&a, &b], 10, WAIT).await;
    assert_eq!(tip.hash, blocks[10].hash);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn broadcast_blockchain_adopts_only_a_valid_chain_with_more_work() {
    let params = test_network(BITS);
    let now = p2p_proto::unix_ms_now();
    let long = chain_of(&params, 6, now - 60_000);
    let short = extend(&params, &long[..2], 2, now - 50_000, "short");
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(|addr| node_config(dir.path(), addr, None, BITS)).await;
    let mut c = node.client().await;
    let to_stream = |bs: &[node_svc::chain::Block]| {
        tokio_stream::iter(bs.iter().map(node_svc::convert::block_to_proto).collect::<Vec<_>>())
    };

    let r = c.broadcast_blockchain(to_stream(&long[1..])).await.unwrap().into_inner();
    assert!(r.adopted);
    assert_eq!(r.height, 6);
    // Less work: stored as a side branch, not adopted.
    let r = c.broadcast_blockchain(to_stream(&short[1..])).await.unwrap().into_inner();
    assert!(!r.adopted, "{}", r.message);
    assert_eq!(node.tip().await.hash, long[6].hash);
    // A tampered block anywhere is refused, naming the rule and its position.
    let mut bad = extend(&params, &long, 3, now - 40_000, "bad");
    bad[8].transactions[0].payload = b"forged".to_vec();
    let err = c.broadcast_blockchain(to_stream(&bad[7..])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("rule hash") && err.message().contains("#1"), "{}", err.message());
    assert_eq!(node.height().await, 7, "blocks before the bad one are valid and kept");
    // A stream that does not connect to anything we have is refused.
    let other = test_network(BITS);
    let foreign = extend(&other, &long[..1], 3, now - 30_000, "foreign");
    let err = c.broadcast_blockchain(to_stream(&foreign[2..])).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    node.stop().await;
}

#[tokio::test]
async fn invalid_blocks_get_invalid_argument_but_an_inbound_claim_bans_nobody() {
    let params = test_network(BITS);
    let blocks = chain_of(&params, 2, p2p_proto::unix_ms_now() - 60_000);
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(|addr| node_config(dir.path(), addr, None, BITS)).await;
    let mut c = node.client().await;
    let claimed = Sender { node_id: "someone".into(), address: "127.0.0.1:1".into() };
    let mut tampered = node_svc::convert::block_to_proto(&blocks[1]);
    tampered.nonce += 1;
    for _ in 0..3 {
        let err = c
            .send_block(SendBlockRequest { block: Some(tampered.clone()), sender: Some(claimed.clone()) })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("rule hash"), "{}", err.message());
    }
    assert_eq!(node.node().stats().invalid_received, 3, "counted");
    // Anyone on this host could have made that claim: nobody is banned for it,
    // and a valid block under the same claim is accepted.
    let r = c
        .send_block(SendBlockRequest {
            block: Some(node_svc::convert::block_to_proto(&blocks[1])),
            sender: Some(claimed.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.outcome(), BlockOutcome::Appended);
    assert_eq!(node.node().peers().ban_count(), 0);
    // Malformed fields are named.
    let mut short_hash = node_svc::convert::block_to_proto(&blocks[1]);
    short_hash.prev_hash.truncate(5);
    let err = c.send_block(SendBlockRequest { block: Some(short_hash), sender: None }).await.unwrap_err();
    assert!(err.code() == Code::InvalidArgument && err.message().contains("prev_hash"), "{err:?}");
    let err = c.send_block(SendBlockRequest { block: None, sender: None }).await.unwrap_err();
    assert!(err.code() == Code::InvalidArgument && err.message().contains("block"), "{err:?}");
    let too_big = params.max_tx_payload + 1;
    let err = node.admin().await.mine_block(MineBlockRequest { data: vec![0; too_big] }).await.unwrap_err();
    assert!(err.code() == Code::InvalidArgument && err.message().contains("data"), "{err:?}");
    node.stop().await;
}

#[tokio::test]
async fn a_spoofed_sender_cannot_get_an_honest_peer_banned() {
    let params = test_network(BITS);
    let blocks = chain_of(&params, 1, p2p_proto::unix_ms_now() - 60_000);
    let (dir, honest_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let honest = TestNode::start(|addr| node_config(honest_dir.path(), addr, None, BITS)).await;
    let node = TestNode::start(|addr| node_config(dir.path(), addr, None, BITS)).await;
    // The attacker connects from 127.0.0.2, without a certificate, and
    // claims to be the honest node.
    let channel = node_svc::testkit::channel_from(&node.endpoint(), "127.0.0.2").await;
    let mut attacker = p2p_proto::node::node_client::NodeClient::new(channel);
    let honest_id = honest.node().node_id().to_string();
    let claimed = Sender { node_id: honest_id.clone(), address: honest.addr.to_string() };
    let mut tampered = node_svc::convert::block_to_proto(&blocks[1]);
    tampered.nonce += 1;
    for _ in 0..3 {
        let err = attacker
            .send_block(SendBlockRequest { block: Some(tampered.clone()), sender: Some(claimed.clone()) })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "still refused");
    }
    assert!(
        node.node().peers().snapshot().iter().all(|p| p.address != honest.addr.to_string()),
        "the claimed address was neither learned nor scored"
    );
    assert_eq!(node.node().peers().ban_count(), 0);
    // The honest node's own key (its certificate proves it) makes the same
    // claim believable: the address is learned under the proven id.
    let (honest_key, _) = p2p_proto::identity::load_or_create(&honest_dir.path().join("node.key")).unwrap();
    let channel = node_svc::testkit::channel_as(&node.endpoint(), &honest_key, None).await;
    let mut c = p2p_proto::node::node_client::NodeClient::new(channel);
    let r = c
        .send_block(SendBlockRequest {
            block: Some(node_svc::convert::block_to_proto(&blocks[1])),
            sender: Some(claimed),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.outcome(), BlockOutcome::Appended);
    let p = node.node().peers().snapshot().into_iter().find(|p| p.address == honest.addr.to_string()).unwrap();
    assert_ne!(p.state, p2p_proto::node::PeerState::Banned);
    assert_eq!(p.node_id, honest_id);
    node.stop().await;
    honest.stop().await;
}

#[tokio::test]
async fn a_plaintext_network_still_works_for_local_experiments() {
    let net = TestNet::launch_with(
        3,
        |b| b.plaintext = true,
        |dir, addr, bootstrap| {
            let mut c = node_config(dir, addr, Some(bootstrap), BITS);
            c.plaintext = true;
            c
        },
    )
    .await;
    node_svc::testkit::all_active(&net.refs()).await;
    let block = mine(&net.nodes[0], "no TLS").await;
    let tip = converged(&net.refs(), 1, WAIT).await;
    assert_eq!(tip.hash.as_slice(), block.hash.as_slice());
    // Nothing is proven without TLS: peers are known by what they answered.
    assert!(net.nodes[1].node().peers().snapshot().iter().all(|p| !p.verified));
    net.stop().await;
}
