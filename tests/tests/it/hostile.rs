//! A node against hostile peers and clients: each test is one attack that
//! used to work (wave-1 review) and the bound that now stops it.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::Stream;
use node_svc::chain::Block;
use node_svc::chain::testing::{chain_of, extend_with};
use node_svc::convert::block_to_proto;
use node_svc::testkit::{TestNode, eventually, node_config, test_network};
use p2p_proto::admin::MineBlockRequest;
use p2p_proto::node::node_server::{Node, NodeServer};
use p2p_proto::node::{
    Block as PbBlock, BroadcastBlockchainResponse, GetBlocksRequest, GetPeersRequest, GetPeersResponse,
    GetStatusRequest, GetStatusResponse, PeerState, PingRequest, PingResponse, SendBlockRequest, SendBlockResponse,
    Sender,
};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status, Streaming};

const BITS: u32 = 8;
const WAIT: Duration = Duration::from_secs(30);

/// What the fake peer's GetBlocks does.
#[derive(Debug, Clone)]
enum Serve {
    /// Sends these blocks, whatever was asked.
    Blocks(Vec<PbBlock>),
    /// Answers the headers, then never sends anything.
    Silent,
}

/// A Node server that claims a lot of work and serves what it is told to.
#[derive(Debug, Clone)]
struct FakePeer {
    genesis: Vec<u8>,
    /// The tip its Ping claims (with far more work than it has).
    tip: Vec<u8>,
    serve: Serve,
    get_blocks_calls: Arc<AtomicUsize>,
    pings: Arc<AtomicUsize>,
}

type Blocks = Pin<Box<dyn Stream<Item = Result<PbBlock, Status>> + Send>>;

#[tonic::async_trait]
impl Node for FakePeer {
    async fn send_block(&self, _: Request<SendBlockRequest>) -> Result<Response<SendBlockResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn broadcast_blockchain(
        &self,
        _: Request<Streaming<PbBlock>>,
    ) -> Result<Response<BroadcastBlockchainResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    type GetBlocksStream = Blocks;
    async fn get_blocks(&self, _: Request<GetBlocksRequest>) -> Result<Response<Blocks>, Status> {
        self.get_blocks_calls.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(match &self.serve {
            Serve::Blocks(b) => Box::pin(tokio_stream::iter(b.clone().into_iter().map(Ok))),
            Serve::Silent => Box::pin(futures::stream::pending()),
        }))
    }
    async fn get_status(&self, _: Request<GetStatusRequest>) -> Result<Response<GetStatusResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_peers(&self, _: Request<GetPeersRequest>) -> Result<Response<GetPeersResponse>, Status> {
        Ok(Response::new(GetPeersResponse { peers: vec![] }))
    }
    async fn submit_transaction(
        &self,
        _: Request<p2p_proto::node::Transaction>,
    ) -> Result<Response<p2p_proto::node::SubmitTransactionResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_transaction(
        &self,
        _: Request<p2p_proto::node::GetTransactionRequest>,
    ) -> Result<Response<p2p_proto::node::GetTransactionResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_mempool(
        &self,
        _: Request<p2p_proto::node::GetMempoolRequest>,
    ) -> Result<Response<p2p_proto::node::GetMempoolResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn announce_transactions(
        &self,
        _: Request<p2p_proto::node::AnnounceTransactionsRequest>,
    ) -> Result<Response<p2p_proto::node::AnnounceTransactionsResponse>, Status> {
        Ok(Response::new(Default::default()))
    }
    async fn send_transactions(
        &self,
        _: Request<p2p_proto::node::SendTransactionsRequest>,
    ) -> Result<Response<p2p_proto::node::SendTransactionsResponse>, Status> {
        Ok(Response::new(Default::default()))
    }
    async fn send_votes(
        &self,
        _: Request<p2p_proto::node::SendVotesRequest>,
    ) -> Result<Response<p2p_proto::node::SendVotesResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_finality(
        &self,
        _: Request<p2p_proto::node::GetFinalityRequest>,
    ) -> Result<Response<p2p_proto::node::GetFinalityResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn announce_blocks(
        &self,
        _: Request<p2p_proto::node::AnnounceBlocksRequest>,
    ) -> Result<Response<p2p_proto::node::AnnounceBlocksResponse>, Status> {
        Ok(Response::new(Default::default()))
    }
    async fn get_block(&self, _: Request<p2p_proto::node::GetBlockRequest>) -> Result<Response<PbBlock>, Status> {
        Err(Status::not_found("fake"))
    }
    async fn ping(&self, _: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        self.pings.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(PingResponse {
            node_id: "fake".into(),
            height: 1_000_000,
            tip_hash: self.tip.clone(),
            // A lie: far more work than anything it will serve.
            cumulative_work: p2p_proto::work::to_bytes(p2p_proto::work::Work::MAX / p2p_proto::work::Work::from(2u64)),
            genesis_hash: self.genesis.clone(),
            ..Default::default()
        }))
    }
}

pub(crate) struct Fake {
    pub(crate) addr: String,
    /// The node id its TLS certificate proves.
    pub(crate) node_id: String,
    /// GetBlocks calls it received.
    pub(crate) calls: Arc<AtomicUsize>,
    /// Pings it answered.
    pub(crate) pings: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A hostile node with an identity of its own, speaking TLS like any node.
async fn fake_peer(serve: Serve) -> Fake {
    fake_peer_on(serve, test_network(BITS).genesis().hash.to_vec(), vec![7; 32]).await
}

/// A fake peer of the network with `genesis` whose Ping claims `tip`; its
/// GetBlocks sends nothing.
pub(crate) async fn fake_claiming(genesis: Vec<u8>, tip: Vec<u8>) -> Fake {
    fake_peer_on(Serve::Blocks(Vec::new()), genesis, tip).await
}

async fn fake_peer_on(serve: Serve, genesis: Vec<u8>, tip: Vec<u8>) -> Fake {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let key = ed25519_dalek::SigningKey::from_bytes(&rand::random());
    let node_id = p2p_proto::signing::node_id(&key.verifying_key().to_bytes());
    let tls = p2p_proto::tls::TlsIdentity::new(&key).unwrap().server_config();
    let (calls, pings) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let fake = FakePeer { genesis, tip, serve, get_blocks_calls: calls.clone(), pings: pings.clone() };
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        let incoming =
            p2p_proto::conn::incoming(listener, p2p_proto::conn::ConnLimits::default(), Some(tls), token.child_token());
        let _ = tonic::transport::Server::builder()
            .add_service(NodeServer::new(fake))
            .serve_with_incoming_shutdown(incoming, token.cancelled())
            .await;
    });
    Fake { addr, node_id, calls, pings, stop }
}

fn peer_state(node: &TestNode, addr: &str) -> Option<PeerState> {
    node.node().peers().snapshot().into_iter().find(|p| p.address == addr).map(|p| p.state)
}

/// A node (in `dir`) whose one configured peer is `fake`; `tune` adjusts the rest.
async fn node_peering_with(
    dir: &tempfile::TempDir,
    fake: &Fake,
    tune: impl FnOnce(&mut node_svc::NodeConfig),
) -> TestNode {
    TestNode::start(|addr| {
        let mut c = node_config(dir.path(), addr, None, BITS);
        c.peers = vec![fake.addr.clone()];
        tune(&mut c);
        c
    })
    .await
}

/// Waits until `node` has banned `addr`.
async fn banned(node: &TestNode, addr: &str, what: &str) {
    eventually(WAIT, what, || async { (peer_state(node, addr) == Some(PeerState::Banned)).then_some(()) }).await;
}

fn big_blocks(n: usize, data_bytes: usize) -> Vec<Block> {
    let params = test_network(BITS);
    extend_with(
        &params,
        &[params.genesis()],
        n,
        p2p_proto::unix_ms_now() - 600_000,
        |h| vec![h as u8; data_bytes],
        |_| {},
    )
}

#[tokio::test]
async fn a_peer_that_serves_invalid_blocks_in_a_sync_is_banned_and_never_synced_from_again() {
    let params = test_network(BITS);
    let mut blocks: Vec<PbBlock> =
        chain_of(&params, 3, p2p_proto::unix_ms_now() - 60_000)[1..].iter().map(block_to_proto).collect();
    blocks[1].nonce += 1;
    let fake = fake_peer(Serve::Blocks(blocks)).await;
    let dir = tempfile::tempdir().unwrap();
    let node = node_peering_with(&dir, &fake, |_| {}).await;
    banned(&node, &fake.addr, "the fake peer is banned").await;
    assert!(node.node().peers().is_banned(&fake.addr, node.node().now_ms()));
    assert_eq!(node.height().await, 0, "nothing from a batch that broke the rules is committed");
    // Its Ping claims far more work; the sync it asks for is refused.
    let calls = fake.calls.load(Ordering::SeqCst);
    node.node().sync().request(&fake.addr);
    eventually(WAIT, "the sync request is refused", || async {
        (node.node().stats().syncs_refused_banned > 0).then_some(())
    })
    .await;
    assert_eq!(fake.calls.load(Ordering::SeqCst), calls, "no GetBlocks to a banned peer");
    node.stop().await;
}

#[tokio::test]
async fn an_answer_beyond_the_count_asked_for_is_refused_and_penalised() {
    let params = test_network(BITS);
    let blocks: Vec<PbBlock> =
        chain_of(&params, 30, p2p_proto::unix_ms_now() - 60_000)[1..].iter().map(block_to_proto).collect();
    let fake = fake_peer(Serve::Blocks(blocks)).await;
    let dir = tempfile::tempdir().unwrap();
    let node = node_peering_with(&dir, &fake, |c| c.sync_batch = 10).await;
    banned(&node, &fake.addr, "the over-long answer gets the peer banned").await;
    assert_eq!(node.height().await, 0, "nothing from a stream that broke its limit was committed");
    assert!(node.node().stats().syncs_failed >= 2);
    node.stop().await;
}

#[tokio::test]
async fn a_silent_sync_peer_is_given_up_and_shutdown_does_not_wait_for_it() {
    let fake = fake_peer(Serve::Silent).await;
    let dir = tempfile::tempdir().unwrap();
    let node = node_peering_with(&dir, &fake, |c| c.stream_idle_timeout = Duration::from_millis(300)).await;
    // A second GetBlocks means the first sync gave up and released the sync task.
    eventually(WAIT, "the silent sync is given up and retried", || async {
        (fake.calls.load(Ordering::SeqCst) >= 2 && node.node().stats().syncs_failed >= 1).then_some(())
    })
    .await;
    assert_ne!(peer_state(&node, &fake.addr), Some(PeerState::Banned), "silence is not misbehaviour");
    // Stop while a sync is hanging on the peer: done promptly, whatever the peer does.
    tokio::time::timeout(Duration::from_secs(10), node.stop()).await.expect("shutdown does not wait on a peer");
}

#[tokio::test]
async fn a_slightly_early_block_from_a_sync_is_held_and_its_sender_not_penalised() {
    let params = test_network(BITS);
    let now = p2p_proto::unix_ms_now();
    let mut chain = chain_of(&params, 2, now - 60_000);
    // The third block is stamped 3 minutes ahead: over the 2-minute rule,
    // within the holding window.
    chain = node_svc::chain::testing::extend(&params, &chain, 1, now + 3 * 60_000, "early");
    let fake = fake_peer(Serve::Blocks(chain[1..].iter().map(block_to_proto).collect())).await;
    let dir = tempfile::tempdir().unwrap();
    let node = node_peering_with(&dir, &fake, |_| {}).await;
    eventually(WAIT, "the blocks before the early one are synced", || async {
        (node.height().await == 2).then_some(())
    })
    .await;
    let status = node.client().await.get_status(GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.height, 2);
    let entry = node.node().peers().snapshot().into_iter().find(|p| p.address == fake.addr);
    assert!(entry.is_some_and(|p| p.state != PeerState::Banned), "an early block is not misbehaviour");
    // Gossiped directly, the early block is held, not refused.
    let mut c = node.client().await;
    let r = c.send_block(SendBlockRequest { block: Some(block_to_proto(&chain[3])), sender: None }).await.unwrap();
    assert!(
        matches!(
            r.get_ref().outcome(),
            p2p_proto::node::BlockOutcome::Deferred | p2p_proto::node::BlockOutcome::Duplicate
        ),
        "{:?}",
        r.get_ref()
    );
    node.stop().await;
}

#[tokio::test]
async fn get_blocks_streams_are_capped_per_client_and_an_unread_one_gives_its_slot_back() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(|addr| {
        let mut c = node_config(dir.path(), addr, None, BITS);
        c.max_block_streams_per_client = 2;
        c.stream_idle_timeout = Duration::from_millis(500);
        c
    })
    .await;
    // 6 MB of blocks: more than HTTP/2 flow control lets through unread.
    let blocks = big_blocks(100, 60 * 1024);
    node.node().chain().accept(blocks[1..].to_vec(), node_svc::chain::Origin::Local).await.unwrap();
    let mut c = node.client().await;
    let ask = GetBlocksRequest { from_height: 1, ..Default::default() };
    let _unread1 = c.get_blocks(ask.clone()).await.unwrap();
    let _unread2 = c.get_blocks(ask.clone()).await.unwrap();
    let err = c.get_blocks(ask.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("client"), "{}", err.message());
    // Another client is served meanwhile.
    let other = node_svc::testkit::channel_from(&node.endpoint(), "127.0.0.2").await;
    let mut other = p2p_proto::node::node_client::NodeClient::new(other);
    let mut s = other
        .get_blocks(GetBlocksRequest { from_height: 1, limit: 3, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let mut got = 0;
    while let Some(b) = s.message().await.unwrap() {
        assert_eq!(b.index, got + 1);
        got += 1;
    }
    assert_eq!(got, 3);
    // Nobody reads the first two: after the idle timeout their slots are free.
    eventually(WAIT, "an unread stream's slot comes back", || {
        let mut c = c.clone();
        let ask = ask.clone();
        async move { c.get_blocks(ask).await.ok() }
    })
    .await;
    // Two streams are still unread: shutdown closes them after its grace
    // period instead of waiting for a reader that never comes.
    tokio::time::timeout(Duration::from_secs(30), node.stop()).await.expect("shutdown does not wait on unread streams");
}

#[tokio::test]
async fn uploads_are_checked_on_arrival_and_bounded_in_bytes_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(|addr| {
        let mut c = node_config(dir.path(), addr, None, BITS);
        c.stream_idle_timeout = Duration::from_millis(800);
        // Room for two 60 KB blocks in all.
        c.inbound_buffer_bytes = 130 * 1024;
        c
    })
    .await;
    let mut c = node.client().await;
    // A message larger than any valid block is refused before it is decoded.
    let huge = || PbBlock {
        transactions: vec![p2p_proto::node::Transaction { payload: vec![0; 2 * 1024 * 1024], ..Default::default() }],
        ..Default::default()
    };
    let err = c.send_block(SendBlockRequest { block: Some(huge()), sender: None }).await.unwrap_err();
    assert!(matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted | Code::Internal), "{err:?}");
    // So is an upload of such messages, at the first one.
    let err = c.broadcast_blockchain(tokio_stream::iter(vec![huge(); 3])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("larger than any valid block"), "{}", err.message());
    // A bad proof of work is refused at the first block, not after buffering.
    let params = test_network(BITS);
    let mut bad = block_to_proto(&chain_of(&params, 1, p2p_proto::unix_ms_now() - 60_000)[1]);
    bad.nonce += 1;
    let (tx, rx) = tokio::sync::mpsc::channel::<PbBlock>(1);
    tx.send(bad).await.unwrap();
    let err = c.broadcast_blockchain(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "refused while the stream is still open: {err:?}");
    drop(tx);
    // Three uploads of one valid 60 KB block each that then stall: two fit
    // in the node's buffer, the third is refused; the stalled ones are cut
    // off by the idle timeout.
    let blocks: Vec<Vec<Block>> = (0..3)
        .map(|i| {
            extend_with(
                &params,
                &[params.genesis()],
                1,
                p2p_proto::unix_ms_now() - 60_000,
                |_| vec![i; 60 * 1024],
                |_| {},
            )
        })
        .collect();
    let mut senders = Vec::new();
    let mut calls = Vec::new();
    for b in &blocks[..2] {
        let (tx, rx) = tokio::sync::mpsc::channel::<PbBlock>(1);
        tx.send(block_to_proto(&b[1])).await.unwrap();
        senders.push(tx);
        let mut c = c.clone();
        calls.push(tokio::spawn(async move {
            c.broadcast_blockchain(tokio_stream::wrappers::ReceiverStream::new(rx)).await
        }));
    }
    eventually(WAIT, "two uploads hold the buffer", || async {
        (node.node().inbound_buffer_available() < 60 * 1024).then_some(())
    })
    .await;
    let (tx, rx) = tokio::sync::mpsc::channel::<PbBlock>(1);
    tx.send(block_to_proto(&blocks[2][1])).await.unwrap();
    let err = c.broadcast_blockchain(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    for call in calls {
        let err = call.await.unwrap().unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded, "a stalled upload is cut off: {err:?}");
    }
    drop(senders);
    assert_eq!(node.node().inbound_buffer_available(), 130 * 1024, "everything given back");
    node.stop().await;
}

#[tokio::test]
async fn mine_block_stops_when_its_caller_goes_away_and_runs_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    // 40 bits: a search that would run for hours.
    let node = TestNode::start(|addr| node_config(dir.path(), addr, None, 40)).await;
    let c = node.admin().await;
    let first = {
        let mut c = c.clone();
        tokio::spawn(async move {
            let mut req = Request::new(MineBlockRequest { data: b"x".to_vec() });
            req.set_timeout(Duration::from_secs(2));
            c.mine_block(req).await
        })
    };
    eventually(WAIT, "the search runs", || async { node.node().is_mining().then_some(()) }).await;
    let err = c.clone().mine_block(MineBlockRequest { data: b"y".to_vec() }).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "one job at a time: {err:?}");
    let err = first.await.unwrap().unwrap_err();
    assert!(matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled), "{err:?}");
    // The search thread itself stops (it holds the job until it returns).
    eventually(WAIT, "the abandoned search stops", || async { (!node.node().is_mining()).then_some(()) }).await;
    node.stop().await;
}

#[tokio::test]
async fn a_party_sharing_a_nodes_ip_can_neither_get_it_banned_nor_dropped() {
    let (dir, honest_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let honest = TestNode::start(|addr| node_config(honest_dir.path(), addr, None, BITS)).await;
    let node = TestNode::start(|addr| {
        let mut c = node_config(dir.path(), addr, None, BITS);
        c.peers = vec![honest.addr.to_string()];
        c
    })
    .await;
    let honest_addr = honest.addr.to_string();
    let honest_id = honest.node().node_id().to_string();
    eventually(WAIT, "the honest peer is active", || async {
        (peer_state(&node, &honest_addr) == Some(PeerState::Active)).then_some(())
    })
    .await;
    // The attacker is on the same host (127.0.0.1) and names the honest node
    // as the sender; first without a certificate, then with one of its own.
    let params = test_network(BITS);
    let mut tampered = block_to_proto(&chain_of(&params, 1, p2p_proto::unix_ms_now() - 60_000)[1]);
    tampered.nonce += 1;
    let as_honest = Sender { node_id: honest_id.clone(), address: honest_addr.clone() };
    let attacker_key = ed25519_dalek::SigningKey::from_bytes(&[66; 32]);
    let attacker_id = p2p_proto::signing::node_id(&attacker_key.verifying_key().to_bytes());
    let anonymous = node.client().await;
    let with_cert = p2p_proto::node::node_client::NodeClient::new(
        node_svc::testkit::channel_as(&node.endpoint(), &attacker_key, None).await,
    );
    for mut attacker in [anonymous.clone(), with_cert.clone()] {
        for _ in 0..3 {
            let err = attacker
                .send_block(SendBlockRequest { block: Some(tampered.clone()), sender: Some(as_honest.clone()) })
                .await
                .unwrap_err();
            assert!(matches!(err.code(), Code::InvalidArgument | Code::PermissionDenied), "refused: {err:?}");
        }
    }
    let now = node.node().now_ms();
    assert!(!node.node().peers().is_banned(&honest_addr, now), "the honest address is not banned");
    assert!(!node.node().peers().is_node_banned(&honest_id, now), "the honest node is not banned");
    assert!(node.node().peers().is_node_banned(&attacker_id, now), "the node that proved it sent them is");
    // A Ping naming the receiver's own node id under the honest address.
    let as_receiver = Sender { node_id: node.node().node_id().into(), address: honest_addr.clone() };
    let ping =
        PingRequest { sender: Some(as_receiver), genesis_hash: params.genesis().hash.to_vec(), ..Default::default() };
    anonymous.clone().ping(ping).await.unwrap();
    let after = node.node().now_ms();
    // Our own heartbeats keep reaching the honest peer: it was not dropped.
    eventually(WAIT, "the honest peer is pinged again after the hostile ping", || async {
        node.node()
            .peers()
            .snapshot()
            .into_iter()
            .find(|p| p.address == honest_addr && p.last_seen_ms > after && p.state == PeerState::Active)
            .map(|_| ())
    })
    .await;
    node.stop().await;
    honest.stop().await;
}

#[tokio::test]
async fn a_node_with_the_wrong_key_cannot_pass_for_a_known_node_id() {
    // The node is told the honest node's id lives at an address where an
    // impostor (another key) listens.
    let (dir, honest_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let honest = TestNode::start(|addr| node_config(honest_dir.path(), addr, None, BITS)).await;
    let impostor = fake_peer(Serve::Silent).await;
    let honest_id = honest.node().node_id().to_string();
    let node = TestNode::start(|addr| {
        let mut c = node_config(dir.path(), addr, None, BITS);
        c.peers = vec![format!("{honest_id}@{}", impostor.addr), format!("{honest_id}@{}", honest.addr)];
        c.max_failures = 1;
        c
    })
    .await;
    let honest_addr = honest.addr.to_string();
    eventually(WAIT, "the real node is active under its id", || async {
        node.node()
            .peers()
            .snapshot()
            .into_iter()
            .find(|p| p.address == honest_addr && p.state == PeerState::Active && p.verified && p.node_id == honest_id)
            .map(|_| ())
    })
    .await;
    eventually(WAIT, "the impostor's address is failing", || async {
        (peer_state(&node, &impostor.addr) == Some(PeerState::Failing)).then_some(())
    })
    .await;
    assert_eq!(impostor.calls.load(Ordering::SeqCst), 0, "nothing was asked of the impostor");
    let entry = node.node().peers().snapshot().into_iter().find(|p| p.address == impostor.addr).unwrap();
    assert!(!entry.verified && entry.last_seen_ms == 0, "the impostor never passed a handshake: {entry:?}");
    // Its own certificate is valid; only the id does not match.
    assert_ne!(impostor.node_id, honest_id);
    node.stop().await;
    honest.stop().await;
}

#[tokio::test]
async fn nodes_with_different_consensus_parameters_refuse_each_other_without_bans() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = TestNode::start(|addr| node_config(da.path(), addr, None, BITS)).await;
    let b = TestNode::start(|addr| {
        let mut c = node_config(db.path(), addr, None, BITS);
        c.network.max_tx_payload = 32 * 1024;
        c.peers = vec![a.addr.to_string()];
        c
    })
    .await;
    assert_ne!(a.node().chain().genesis_hash(), b.node().chain().genesis_hash(), "the size rule is in genesis");
    let a_addr = a.addr.to_string();
    eventually(WAIT, "b drops a after the handshake", || async { (!b.node().peers().contains(&a_addr)).then_some(()) })
        .await;
    assert_eq!(b.node().peers().ban_count(), 0, "a refusal, not a ban");
    let mut c = b.client().await;
    let err = c
        .ping(PingRequest { genesis_hash: a.node().chain().genesis_hash().to_vec(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("different network"), "{}", err.message());
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_peer_whose_lease_expired_is_forgotten() {
    let bdir = tempfile::tempdir().unwrap();
    let clock = p2p_proto::clock::ManualClock::new(p2p_proto::unix_ms_now());
    let mut cfg = bootstrap_svc::Config::new(bdir.path());
    cfg.disable_rate_limits();
    cfg.clock = Arc::new(clock.clone());
    cfg.purge_interval = Duration::from_millis(50);
    // Nothing listens at the registered address: list it unverified, so
    // only its expiry can take it away.
    cfg.verify_registrations = false;
    let bootstrap = node_svc::testkit::TestBootstrap::start(cfg).await;
    // A registration nobody will refresh, at an address nobody listens on.
    let mut b = bootstrap.client().await;
    b.register(p2p_proto::bootstrap::RegisterRequest {
        address: "127.0.0.1:9".into(),
        ttl_seconds: 10,
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let endpoint = bootstrap.endpoint();
    let node = TestNode::start(|addr| {
        let mut c = node_config(dir.path(), addr, Some(&endpoint), BITS);
        // Only the registry's word can drop it here.
        c.max_dial_attempts = u32::MAX;
        c
    })
    .await;
    eventually(WAIT, "the node learns the registered peer", || async {
        node.node().peers().contains("127.0.0.1:9").then_some(())
    })
    .await;
    clock.advance_ms(11_000);
    eventually(WAIT, "the expired peer is forgotten", || async {
        (!node.node().peers().contains("127.0.0.1:9")).then_some(())
    })
    .await;
    node.stop().await;
    bootstrap.stop().await;
}

#[tokio::test]
async fn a_peer_whose_answers_never_connect_to_our_chain_ends_up_banned() {
    let params = test_network(BITS);
    // Blocks 5..=10 of a chain: their parents are never sent.
    let chain = chain_of(&params, 10, p2p_proto::unix_ms_now() - 60_000);
    let fake = fake_peer(Serve::Blocks(chain[5..].iter().map(block_to_proto).collect())).await;
    let dir = tempfile::tempdir().unwrap();
    let node = node_peering_with(&dir, &fake, |_| {}).await;
    // Each sync ends (the orphans come back as duplicates, or after three
    // tries to find the fork point), and the work it claimed was never served.
    banned(&node, &fake.addr, "the peer is banned").await;
    assert_eq!(node.height().await, 0);
    node.stop().await;
}

#[tokio::test]
async fn an_answer_beyond_the_bytes_asked_for_is_refused_and_penalised() {
    // Twenty 60 KB blocks where the node asks for at most 100 KB (which it
    // raises to one full block's worth, 1 MiB + framing).
    let blocks: Vec<PbBlock> = big_blocks(20, 60 * 1024)[1..].iter().map(block_to_proto).collect();
    let fake = fake_peer(Serve::Blocks(blocks)).await;
    let dir = tempfile::tempdir().unwrap();
    let node = node_peering_with(&dir, &fake, |c| c.sync_batch_bytes = 100 * 1024).await;
    banned(&node, &fake.addr, "the over-sized answer gets the peer banned").await;
    assert_eq!(node.height().await, 0, "nothing from a stream that broke its byte budget was committed");
    node.stop().await;
}
