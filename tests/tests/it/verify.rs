//! The registry lists only verified nodes: before an address is handed out
//! the bootstrap dials it, and the node there must prove the registering
//! key's id (TLS) and answer as a node of this network. Squatters lose to
//! the node that is really there, and the verifier cannot be aimed at a host.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use node_svc::testkit::{TestBootstrap, TestNode, bootstrap_config, eventually, node_config, reserve_port};
use p2p_proto::bootstrap::bootstrap_client::BootstrapClient;
use p2p_proto::bootstrap::{GetInfoRequest, GetPeersRequest, Peer, RegisterRequest};
use p2p_proto::signing::signed_register;
use tonic::Code;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(30);

async fn registry_id(c: &mut BootstrapClient<Channel>) -> p2p_proto::signing::RegistryId {
    let info = c.get_info(GetInfoRequest {}).await.unwrap().into_inner();
    p2p_proto::signing::registry_id(&info.registry_id).unwrap()
}

async fn register_as(c: &mut BootstrapClient<Channel>, key: &SigningKey, address: &str) -> Result<Peer, tonic::Status> {
    let registry = registry_id(c).await;
    let req = signed_register(key, &registry, address, 60, p2p_proto::unix_ms_now());
    c.register(req).await.map(|r| r.into_inner().peer.unwrap())
}

async fn listed(c: &mut BootstrapClient<Channel>) -> Vec<Peer> {
    c.get_peers(GetPeersRequest { limit: 1000, ..Default::default() }).await.unwrap().into_inner().peers
}

async fn everything(c: &mut BootstrapClient<Channel>) -> Vec<Peer> {
    let req = GetPeersRequest { limit: 1000, include_pending: true, ..Default::default() };
    c.get_peers(req).await.unwrap().into_inner().peers
}

/// Waits until the registration of `address` has failed verification `n` times.
async fn failed_at_least(c: &BootstrapClient<Channel>, address: &str, n: u32) -> Peer {
    eventually(WAIT, &format!("{address} failed verification {n} times"), || {
        let mut c = c.clone();
        async move { everything(&mut c).await.into_iter().find(|p| p.address == address && p.verify_failures >= n) }
    })
    .await
}

#[tokio::test]
async fn an_address_where_nothing_listens_or_another_node_answers_is_never_handed_out() {
    let bdir = tempfile::tempdir().unwrap();
    let bootstrap = TestBootstrap::start(bootstrap_config(bdir.path())).await;
    let mut c = bootstrap.client().await;
    // A node that is really there, with its own key.
    let ndir = tempfile::tempdir().unwrap();
    let node = TestNode::start(|addr| node_config(ndir.path(), addr, None, 8)).await;
    let node_addr = node.addr.to_string();
    // 1. Nothing listens (the port is held, not listening: connections are refused).
    let dead = reserve_port();
    let dead_addr = dead.addr.to_string();
    let someone = SigningKey::from_bytes(&[1; 32]);
    let p = register_as(&mut c, &someone, &dead_addr).await.unwrap();
    assert!(p.pending, "{p:?}");
    // 2. A key that is not the node's registers the node's address.
    let squatter = SigningKey::from_bytes(&[2; 32]);
    assert!(register_as(&mut c, &squatter, &node_addr).await.unwrap().pending);
    // Both are tried, and fail, twice.
    failed_at_least(&c, &dead_addr, 2).await;
    let p = failed_at_least(&c, &node_addr, 2).await;
    assert!(p.pending);
    assert_eq!(p.node_id, p2p_proto::signing::node_id(&squatter.verifying_key().to_bytes()));
    assert!(listed(&mut c).await.is_empty(), "GetPeers hands out neither");
    let mut sample =
        c.get_peers(GetPeersRequest { random: true, limit: 10, ..Default::default() }).await.unwrap().into_inner();
    assert!(sample.peers.is_empty(), "nor does a random sample: {:?}", sample.peers.pop());
    // 3. An unsigned registration of the node's address is listed once the
    //    node there answers, under the id it proved. (The squatter's pending
    //    claim holds nothing against it.)
    let dir2 = tempfile::tempdir().unwrap();
    let other = TestNode::start(|addr| node_config(dir2.path(), addr, None, 8)).await;
    let other_addr = other.addr.to_string();
    c.register(RegisterRequest { address: other_addr.clone(), ..Default::default() }).await.unwrap();
    let proven = eventually(WAIT, "the unsigned registration is verified", || async {
        listed(&mut c.clone()).await.into_iter().find(|p| p.address == other_addr)
    })
    .await;
    assert_eq!(proven.node_id, other.node().node_id());
    assert!(!proven.pending);
    drop(dead);
    node.stop().await;
    other.stop().await;
    bootstrap.stop().await;
}

#[tokio::test]
async fn a_node_of_another_network_is_not_listed() {
    let bdir = tempfile::tempdir().unwrap();
    let bootstrap = TestBootstrap::start(bootstrap_config(bdir.path())).await;
    let mut c = bootstrap.client().await;
    let ndir = tempfile::tempdir().unwrap();
    let foreign = TestNode::start(|addr| {
        let mut cfg = node_config(ndir.path(), addr, None, 8);
        cfg.network.name = "some-other-net".into();
        cfg
    })
    .await;
    let addr = foreign.addr.to_string();
    c.register(RegisterRequest { address: addr.clone(), ..Default::default() }).await.unwrap();
    assert!(failed_at_least(&c, &addr, 1).await.pending);
    assert!(listed(&mut c).await.is_empty());
    foreign.stop().await;
    bootstrap.stop().await;
}

#[tokio::test]
async fn a_node_takes_its_address_back_from_a_squatter_and_keeps_it() {
    let bdir = tempfile::tempdir().unwrap();
    let bootstrap = TestBootstrap::start(bootstrap_config(bdir.path())).await;
    let mut c = bootstrap.client().await;
    // The squatter registers the address first...
    let port = reserve_port();
    let addr = port.addr.to_string();
    let squatter = SigningKey::from_bytes(&[9; 32]);
    assert!(register_as(&mut c, &squatter, &addr).await.unwrap().pending);
    // ...then the node starts there and registers itself.
    let ndir = tempfile::tempdir().unwrap();
    let endpoint = bootstrap.endpoint();
    let node =
        TestNode::start_with(port.listen(), node_config(ndir.path(), addr.parse().unwrap(), Some(&endpoint), 8)).await;
    let node_id = node.node().node_id().to_string();
    eventually(WAIT, "the node is listed under its own id", || async {
        listed(&mut c.clone()).await.into_iter().find(|p| p.address == addr && p.node_id == node_id)
    })
    .await;
    // Proven now: the squatter's key can neither refresh nor take it.
    let err = register_as(&mut c, &squatter, &addr).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("proved"), "{}", err.message());
    let still = listed(&mut c).await;
    assert_eq!(still.len(), 1);
    assert_eq!(still[0].node_id, node_id);
    node.stop().await;
    bootstrap.stop().await;
}

#[tokio::test]
async fn the_verifier_cannot_be_aimed_at_a_host() {
    let bdir = tempfile::tempdir().unwrap();
    let mut cfg = bootstrap_config(bdir.path());
    const PER_MINUTE: u32 = 5;
    cfg.verify_per_host_per_minute = PER_MINUTE;
    let bootstrap = TestBootstrap::start(cfg).await;
    let mut c = bootstrap.client().await;
    // The victim: twenty ports on one host that accept anything and count.
    let dials = Arc::new(AtomicUsize::new(0));
    let mut ports = Vec::new();
    for _ in 0..20 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        ports.push(l.local_addr().unwrap().to_string());
        let dials = dials.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                dials.fetch_add(1, Ordering::SeqCst);
                drop(s);
            }
        });
    }
    let started = Instant::now();
    for p in &ports {
        c.register(RegisterRequest { address: p.clone(), ..Default::default() }).await.unwrap();
    }
    // Every registration has been looked at (dialed, or refused a dial by
    // the per-host limit) at least once, most of them several times.
    for p in &ports {
        failed_at_least(&c, p, 2).await;
    }
    let elapsed = started.elapsed();
    let allowed = PER_MINUTE as usize + (elapsed.as_secs_f64() / (60.0 / f64::from(PER_MINUTE))).ceil() as usize;
    let seen = dials.load(Ordering::SeqCst);
    assert!(seen <= allowed, "{seen} dials to one host in {elapsed:?}; the limit allows {allowed}");
    assert!(seen >= 1, "the verifier did dial");
    assert!(listed(&mut c).await.is_empty());
    bootstrap.stop().await;
}

#[tokio::test]
async fn a_node_that_pins_the_bootstrap_joins_only_the_real_one() {
    let bdir = tempfile::tempdir().unwrap();
    let bootstrap = TestBootstrap::start(bootstrap_config(bdir.path())).await;
    let bootstrap_id = bootstrap.node_id().await;
    let wrong_id = p2p_proto::signing::node_id(&[7; 32]);
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let pinned_wrong = format!("{wrong_id}@{}", bootstrap.endpoint());
    let misled = TestNode::start(|addr| node_config(d1.path(), addr, Some(&pinned_wrong), 8)).await;
    let pinned_right = format!("{bootstrap_id}@{}", bootstrap.endpoint());
    let joined = TestNode::start(|addr| node_config(d2.path(), addr, Some(&pinned_right), 8)).await;
    let mut c = bootstrap.client().await;
    let joined_addr = joined.addr.to_string();
    eventually(WAIT, "the node pinning the right id is listed", || async {
        listed(&mut c.clone()).await.into_iter().find(|p| p.address == joined_addr)
    })
    .await;
    eventually(WAIT, "the node pinning another id refuses the bootstrap", || async {
        (misled.node().stats().bootstrap_failures >= 2).then_some(())
    })
    .await;
    assert!(
        everything(&mut c).await.iter().all(|p| p.address != misled.addr.to_string()),
        "it never registered with a server that could not prove the pinned id"
    );
    misled.stop().await;
    joined.stop().await;
    bootstrap.stop().await;
}
