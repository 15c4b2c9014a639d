//! Peer management and fault tolerance: dead peers, bootstrap outages,
//! node loss, peer exchange and inbound limits.

use std::time::Duration;

use node_svc::testkit::{
    ReservedPort, TestBootstrap, TestNet, TestNode, all_active, converged, eventually, node_config, reserve_port,
};
use p2p_proto::node::{PeerSource, PeerState, PingRequest, Sender};

const BITS: u32 = 8;
const WAIT: Duration = Duration::from_secs(30);

fn bootstrap_config(dir: &tempfile::TempDir) -> bootstrap_svc::Config {
    node_svc::testkit::bootstrap_config(dir.path())
}

#[tokio::test]
async fn a_dead_peer_leaves_the_active_set_within_the_configured_bound() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let b = TestNode::start(|addr| node_config(db.path(), addr, None, BITS)).await;
    let b_addr = b.addr.to_string();
    let a = TestNode::start(|addr| {
        let mut c = node_config(da.path(), addr, None, BITS);
        c.peers = vec![b_addr.clone()];
        c
    })
    .await;
    all_active(&[&a, &b]).await;
    let cfg = a.config.clone();
    b.stop().await;
    // Failing after max_failures missed heartbeats, each at most interval + timeout.
    let bound = (cfg.ping_interval + cfg.ping_timeout) * (cfg.max_failures + 1) + Duration::from_secs(1);
    eventually(bound, "the dead peer is marked failing", || async {
        let p = a.node().peers().snapshot().into_iter().find(|p| p.address == b_addr)?;
        (p.state == PeerState::Failing).then_some(())
    })
    .await;
    assert_eq!(a.node().peers().active_count(), 0);
    a.stop().await;
}

#[tokio::test]
async fn a_three_node_network_that_loses_a_node_still_propagates_blocks() {
    let mut net = TestNet::start(3, BITS).await;
    let lost = net.nodes.pop().unwrap();
    lost.stop().await;
    let mined = net.nodes[0].node().mine(b"after the loss".to_vec()).await.unwrap();
    let tip = converged(&net.refs(), 1, WAIT).await;
    assert_eq!(tip.hash, mined.block.hash);
    net.stop().await;
}

#[tokio::test]
async fn a_node_rejoins_from_cached_peers_while_the_bootstrap_is_down() {
    let TestNet { bootstrap, mut nodes, dirs, bootstrap_dir: _bootstrap_dir } = TestNet::start(3, BITS).await;
    let ep = bootstrap.endpoint();
    bootstrap.stop().await;
    let c = nodes.pop().unwrap();
    c.stop().await; // a clean stop saves the peer cache
    nodes[0].node().mine(b"while c was away".to_vec()).await.unwrap();

    // C comes back on a new port; its only bootstrap is down.
    let c = TestNode::start(|addr| node_config(dirs[2].path(), addr, Some(&ep), BITS)).await;
    let cached: Vec<_> = c.node().peers().snapshot().into_iter().filter(|p| p.source == PeerSource::Cached).collect();
    assert_eq!(cached.len(), 2, "both other nodes came from the cache: {cached:?}");
    let tip = converged(&[&nodes[0], &nodes[1], &c], 1, WAIT).await;
    // And new blocks reach it through the cached peers.
    let mined = nodes[1].node().mine(b"after the rejoin".to_vec()).await.unwrap();
    let tip2 = converged(&[&nodes[0], &nodes[1], &c], tip.height + 1, WAIT).await;
    assert_eq!(tip2.hash, mined.block.hash);
    c.stop().await;
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test]
async fn with_every_bootstrap_down_nodes_keep_retrying_and_register_when_one_returns() {
    // Two bootstrap addresses, neither serving yet: reserved (bound, not
    // listening), so connections are refused and no other test takes them.
    let mut ports: Vec<ReservedPort> = (0..2).map(|_| reserve_port()).collect();
    let endpoints: Vec<String> = ports.iter().map(|p| format!("http://{}", p.addr)).collect();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = Vec::new();
    for d in &dirs {
        let eps = endpoints.clone();
        nodes.push(
            TestNode::start(|addr| {
                let mut c = node_config(d.path(), addr, None, BITS);
                c.bootstrap = eps;
                c.register_ttl_secs = 3; // refreshed every second
                c
            })
            .await,
        );
    }
    // Both nodes try both addresses and fail; then the second comes up, empty.
    for n in &nodes {
        eventually(WAIT, "a node failed against both bootstraps", || async {
            (n.node().stats().bootstrap_failures >= 2).then_some(())
        })
        .await;
        assert_eq!(n.node().stats().bootstrap_registrations, 0);
    }
    let bdir = tempfile::tempdir().unwrap();
    let bootstrap = TestBootstrap::start_with(ports.remove(1).listen(), bootstrap_config(&bdir)).await;
    let client = bootstrap.client().await;
    // Registered again within about one refresh interval (backoff is capped at it).
    eventually(Duration::from_secs(10), "both nodes registered with the returning bootstrap", || {
        let mut client = client.clone();
        async move {
            let r = client.get_peers(p2p_proto::bootstrap::GetPeersRequest::default()).await.ok()?.into_inner();
            (r.peers.len() == 2).then_some(())
        }
    })
    .await;
    // Through it they find each other.
    all_active(&nodes.iter().collect::<Vec<_>>()).await;
    for n in nodes {
        n.stop().await;
    }
    bootstrap.stop().await;
}

#[tokio::test]
async fn peer_exchange_finds_peers_the_bootstrap_never_mentioned() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let b = TestNode::start(|addr| node_config(dirs[1].path(), addr, None, BITS)).await;
    let b_addr = b.addr.to_string();
    let a = TestNode::start(|addr| {
        let mut c = node_config(dirs[0].path(), addr, None, BITS);
        c.peers = vec![b_addr.clone()];
        c
    })
    .await;
    all_active(&[&a, &b]).await;
    let a_addr = a.addr.to_string();
    // C knows only A; A knows B.
    let c = TestNode::start(|addr| {
        let mut cfg = node_config(dirs[2].path(), addr, None, BITS);
        cfg.peers = vec![a_addr.clone()];
        cfg.peer_exchange_every = 1;
        cfg
    })
    .await;
    eventually(WAIT, "C learned B through A", || async {
        let p = c.node().peers().snapshot().into_iter().find(|p| p.address == b_addr)?;
        (p.source == PeerSource::PeerExchange && p.state == PeerState::Active).then_some(())
    })
    .await;
    for n in [a, b, c] {
        n.stop().await;
    }
}

#[tokio::test]
async fn inbound_limits_hold_under_a_burst_of_new_peers() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(|addr| {
        let mut c = node_config(dir.path(), addr, None, BITS);
        c.max_inbound = 4;
        c
    })
    .await;
    let genesis = node.node().chain().genesis_hash().to_vec();
    let endpoint = node.endpoint();
    // Forty nodes, each proving an identity of its own, name their addresses.
    let pings = (0..40u8).map(|i| {
        let genesis = genesis.clone();
        let endpoint = endpoint.clone();
        async move {
            let key = ed25519_dalek::SigningKey::from_bytes(&[i + 1; 32]);
            let id = p2p_proto::signing::node_id(&key.verifying_key().to_bytes());
            let mut c = p2p_proto::node::node_client::NodeClient::new(
                node_svc::testkit::channel_as(&endpoint, &key, None).await,
            );
            c.ping(PingRequest {
                sender: Some(Sender { node_id: id, address: format!("127.0.0.1:{}", 40000 + u32::from(i)) }),
                height: 0,
                tip_hash: vec![],
                cumulative_work: vec![],
                genesis_hash: genesis,
            })
            .await
        }
    });
    for r in futures::future::join_all(pings).await {
        r.expect("every ping is answered");
    }
    let inbound = node.node().peers().snapshot().into_iter().filter(|p| p.source == PeerSource::Inbound).count();
    assert!(inbound <= 4, "{inbound} inbound peers kept, limit 4");
    assert!(inbound >= 1);
    node.stop().await;
}

#[tokio::test]
async fn a_ping_claiming_someone_elses_address_is_answered_but_not_believed() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(|addr| node_config(dir.path(), addr, None, BITS)).await;
    let channel = node_svc::testkit::channel_from(&node.endpoint(), "127.0.0.2").await;
    let mut client = p2p_proto::node::node_client::NodeClient::new(channel);
    let genesis = node.node().chain().genesis_hash().to_vec();
    let pong = client
        .ping(PingRequest {
            sender: Some(Sender { node_id: "liar".into(), address: "127.0.0.1:9".into() }),
            height: 99,
            tip_hash: vec![],
            cumulative_work: vec![0xff; 16],
            genesis_hash: genesis,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pong.height, 0, "answered with our tip");
    assert!(node.node().peers().snapshot().is_empty(), "the claimed address was not learned");
    node.stop().await;
}

#[tokio::test]
async fn a_partition_heals_onto_the_heaviest_chain() {
    let TestNet { bootstrap, mut nodes, dirs, bootstrap_dir: _bootstrap_dir } = TestNet::start(3, BITS).await;
    let c = nodes.pop().unwrap();
    c.stop().await;
    // Partition: C comes back cut off (no bootstrap, no peers, its peer cache
    // gone, on a port the others do not know); A and B cannot reach it.
    std::fs::remove_file(dirs[2].path().join("peers.redb")).unwrap();
    let c = TestNode::start(|addr| node_config(dirs[2].path(), addr, None, BITS)).await;
    for i in 0..3 {
        c.node().mine(format!("minority {i}").into_bytes()).await.unwrap();
    }
    nodes[0].node().mine(b"majority".to_vec()).await.unwrap();
    converged(&[&nodes[0], &nodes[1]], 1, WAIT).await;
    let heavy = c.tip().await;
    assert_ne!(heavy.hash, nodes[0].tip().await.hash, "the sides diverged");
    // Heal: C hears of A again.
    c.node().peers().learn(&nodes[0].addr.to_string(), PeerSource::Configured, None);
    let tip = converged(&[&nodes[0], &nodes[1], &c], 3, WAIT).await;
    assert_eq!(tip.hash, heavy.hash, "everyone is on the heavier side's chain");
    c.stop().await;
    for n in nodes {
        n.stop().await;
    }
    bootstrap.stop().await;
}
