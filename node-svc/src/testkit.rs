//! Test networks for integration tests and benchmarks (feature
//! `test-utils`): real servers in-process on ephemeral ports with temporary
//! data directories, and waiting for conditions with a deadline instead of
//! sleeping.
//!
//! # Layout
//! - [`TestBootstrap`], [`TestNode`], [`TestNet`]: servers on `127.0.0.1:0`.
//! - [`wait_until`] / [`eventually`] / [`settled`]: poll a condition with a deadline.
//! - [`reserve_port`]: a loopback port held (bound, not listening) until a
//!   server takes it, so no other test can grab it in between.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use p2p_proto::admin::admin_client::AdminClient;
use p2p_proto::bootstrap::bootstrap_client::BootstrapClient;
use p2p_proto::dial::DialSettings;
use p2p_proto::tls::ClientTls;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// How test clients dial.
const TEST_DIAL: DialSettings = DialSettings::new(Duration::from_secs(5), Duration::from_secs(60));

/// How a test client reaches a server: TLS without a certificate (an
/// anonymous client, like grpcurl -insecure), or plaintext.
pub fn client_tls(plaintext: bool) -> ClientTls {
    if plaintext { ClientTls::Plaintext } else { ClientTls::anonymous() }
}

/// A connected channel to `endpoint` (`host:port`), retrying while the server starts.
pub async fn connect(endpoint: &str, plaintext: bool) -> Channel {
    let tls = client_tls(plaintext);
    eventually(Duration::from_secs(10), "server accepts connections", || {
        let tls = tls.clone();
        async move { TEST_DIAL.connect(endpoint, &tls, None).await.ok().map(|l| l.channel) }
    })
    .await
}

/// A condition did not hold before its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("timed out after {0:?}")]
pub struct TimedOut(pub Duration);

/// Polls `check` every `every` until it returns `Some` (with the time it
/// took), or fails after `timeout`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, every: Duration, mut check: F) -> Result<(T, Duration), TimedOut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = tokio::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return Ok((v, started.elapsed()));
        }
        if started.elapsed() >= timeout {
            return Err(TimedOut(timeout));
        }
        tokio::time::sleep(every).await;
    }
}

/// Polls `check` every 20 ms until it returns `Some`, or panics with `what`
/// after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match wait_until(timeout, Duration::from_millis(20), check).await {
        Ok((v, _)) => v,
        Err(e) => panic!("{e} waiting for: {what}"),
    }
}

/// Waits until `read` returns the same value for a whole `quiet` period
/// (nothing in flight changes it any more) and returns that value; panics
/// after `timeout`.
pub async fn settled<T, F, Fut>(timeout: Duration, quiet: Duration, what: &str, mut read: F) -> T
where
    T: PartialEq + Clone,
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = read().await;
    let mut since = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = read().await;
        if now != last {
            last = now;
            since = tokio::time::Instant::now();
        } else if since.elapsed() >= quiet {
            return last;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what} to settle");
    }
}

/// A loopback port bound but not listening: connections to it are refused
/// (like a server that is down) and no one else can take it until
/// [`ReservedPort::listen`] turns it into the server's listener.
#[derive(Debug)]
pub struct ReservedPort {
    socket: tokio::net::TcpSocket,
    pub addr: SocketAddr,
}

/// Reserves a free loopback port.
pub fn reserve_port() -> ReservedPort {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.1:0".parse().expect("addr")).expect("bind a loopback port");
    let addr = socket.local_addr().expect("local addr");
    ReservedPort { socket, addr }
}

impl ReservedPort {
    pub fn listen(self) -> tokio::net::TcpListener {
        self.socket.listen(1024).expect("listen on the reserved port")
    }
}

/// A bootstrap server running in this process.
#[derive(Debug)]
pub struct TestBootstrap {
    pub addr: SocketAddr,
    /// Where it serves Prometheus metrics.
    pub metrics_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub plaintext: bool,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), bootstrap_svc::Error>>>,
}

impl TestBootstrap {
    /// Starts a server with `config` on an ephemeral loopback port.
    pub async fn start(config: bootstrap_svc::Config) -> Self {
        Self::start_on("127.0.0.1:0", config).await
    }

    /// Starts a server on a given address (to restart on the same port).
    pub async fn start_on(bind: &str, config: bootstrap_svc::Config) -> Self {
        Self::start_with(tokio::net::TcpListener::bind(bind).await.expect("bind bootstrap listener"), config).await
    }

    /// Starts a server on an already bound listener.
    pub async fn start_with(listener: tokio::net::TcpListener, config: bootstrap_svc::Config) -> Self {
        let addr = listener.local_addr().expect("local addr");
        let (data_dir, plaintext) = (config.data_dir.clone(), config.plaintext);
        let shutdown = CancellationToken::new();
        let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind metrics listener");
        let metrics_addr = metrics.local_addr().expect("local addr");
        let task = tokio::spawn(bootstrap_svc::run_with_metrics(listener, Some(metrics), config, shutdown.clone()));
        TestBootstrap { addr, metrics_addr, data_dir, plaintext, shutdown, task: Some(task) }
    }

    /// `host:port`, what nodes are given as `--bootstrap`.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// A client connected to this server (anonymous TLS unless it runs plaintext).
    pub async fn client(&self) -> BootstrapClient<Channel> {
        BootstrapClient::new(connect(&self.endpoint(), self.plaintext).await)
    }

    /// The bootstrap's node id (what its certificate proves), from GetInfo.
    pub async fn node_id(&self) -> String {
        let info = self.client().await.get_info(p2p_proto::bootstrap::GetInfoRequest {}).await.expect("GetInfo");
        info.into_inner().node_id
    }

    /// Shuts down gracefully and waits until the store is closed.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("bootstrap task panicked").expect("bootstrap server failed");
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

impl Drop for TestBootstrap {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Connects to a TLS bootstrap endpoint, retrying briefly while it starts.
pub async fn connect_bootstrap(endpoint: &str) -> BootstrapClient<Channel> {
    BootstrapClient::new(connect(endpoint, false).await)
}

/// Bootstrap configuration for tests: no rate limits, lists nodes of the
/// test network after verifying them.
pub fn bootstrap_config(data_dir: &Path) -> bootstrap_svc::Config {
    let mut cfg = bootstrap_svc::Config::new(data_dir);
    cfg.disable_rate_limits();
    cfg.network = test_network(8).name;
    cfg
}

/// A node running in this process.
#[derive(Debug)]
pub struct TestNode {
    pub addr: SocketAddr,
    pub config: crate::NodeConfig,
    pub shutdown: CancellationToken,
    running: Option<crate::RunningNode>,
}

/// A fast network for tests: a fixed target (no retargeting), `difficulty_bits` easy.
pub fn test_network(difficulty_bits: u32) -> crate::chain::NetworkParams {
    crate::chain::NetworkParams {
        name: "testnet".into(),
        difficulty_bits,
        retarget: false,
        ..crate::chain::NetworkParams::devnet()
    }
}

/// Node configuration for tests: advertise the bound address, quick heartbeats.
pub fn node_config(data_dir: &Path, addr: SocketAddr, bootstrap: Option<&str>, bits: u32) -> crate::NodeConfig {
    let mut c = crate::NodeConfig::new(data_dir, addr.to_string());
    c.network = test_network(bits);
    c.bootstrap = bootstrap.map(|b| vec![b.to_string()]).unwrap_or_default();
    c.ping_interval = Duration::from_millis(200);
    c.ping_timeout = Duration::from_millis(500);
    c.register_ttl_secs = 30;
    c
}

impl TestNode {
    /// Binds 127.0.0.1:0 and starts a node whose config `make` builds from the bound address.
    pub async fn start(make: impl FnOnce(SocketAddr) -> crate::NodeConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind node listener");
        let addr = listener.local_addr().expect("local addr");
        Self::start_with(listener, make(addr)).await
    }

    /// Starts a node on an already bound listener (and its admin API on a
    /// loopback port of its own).
    pub async fn start_with(listener: tokio::net::TcpListener, config: crate::NodeConfig) -> Self {
        let addr = listener.local_addr().expect("local addr");
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind admin listener");
        let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind metrics listener");
        let shutdown = CancellationToken::new();
        let listeners = crate::Listeners { p2p: listener, admin: Some(admin), metrics: Some(metrics) };
        let running = crate::spawn(listeners, config.clone(), shutdown.clone()).await.expect("node starts");
        TestNode { addr, config, shutdown, running: Some(running) }
    }

    /// Where this node serves Prometheus metrics.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.running.as_ref().and_then(|r| r.metrics_addr).expect("metrics listener")
    }

    pub fn node(&self) -> &crate::NodeHandle {
        &self.running.as_ref().expect("running").node
    }

    /// `host:port` of the P2P port.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// `host:port` of the admin API.
    pub fn admin_endpoint(&self) -> String {
        self.running.as_ref().and_then(|r| r.admin_addr).expect("the test node has an admin API").to_string()
    }

    /// An anonymous client of the P2P port (TLS without a certificate).
    pub async fn client(&self) -> p2p_proto::node::node_client::NodeClient<Channel> {
        p2p_proto::node::node_client::NodeClient::new(connect(&self.endpoint(), self.config.plaintext).await)
    }

    /// A client of the admin API (loopback: no token needed).
    pub async fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(connect(&self.admin_endpoint(), true).await)
    }

    /// Mines a block carrying `data` through the admin API.
    pub async fn mine(&self, data: &str) -> p2p_proto::admin::MineBlockResponse {
        let req = p2p_proto::admin::MineBlockRequest { data: data.as_bytes().to_vec() };
        self.admin().await.mine_block(req).await.expect("MineBlock").into_inner()
    }

    pub async fn height(&self) -> u64 {
        self.node().chain().tip().await.expect("tip").height
    }

    pub async fn tip(&self) -> crate::chain::Tip {
        self.node().chain().tip().await.expect("tip")
    }

    /// Stops gracefully and waits until the store is closed.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(r) = self.running.take() {
            r.join().await.expect("node stops cleanly");
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Waits until every node has the same tip at `height` or more; returns it.
pub async fn converged(nodes: &[&TestNode], min_height: u64, timeout: Duration) -> crate::chain::Tip {
    eventually(timeout, &format!("{} nodes agree on a tip at height >= {min_height}", nodes.len()), || async {
        let mut tips = Vec::new();
        for n in nodes {
            tips.push(n.tip().await);
        }
        let first = tips[0];
        (first.height >= min_height && tips.iter().all(|t| t.hash == first.hash)).then_some(first)
    })
    .await
}

/// A bootstrap and `n` nodes registered with it, all seeing each other as
/// active before the test starts.
#[derive(Debug)]
pub struct TestNet {
    pub bootstrap: TestBootstrap,
    pub nodes: Vec<TestNode>,
    /// Data directories; node `i` uses `dirs[i]` (kept for restarts).
    pub dirs: Vec<tempfile::TempDir>,
    pub bootstrap_dir: tempfile::TempDir,
}

impl TestNet {
    /// A bootstrap and `n` test nodes, each seeing all the others as active.
    pub async fn start(n: usize, difficulty_bits: u32) -> Self {
        let net =
            Self::launch(n, |dir, addr, bootstrap| node_config(dir, addr, Some(bootstrap), difficulty_bits)).await;
        all_active(&net.refs()).await;
        net
    }

    /// A bootstrap and `n` nodes configured by `make(data_dir, bound_addr,
    /// bootstrap_endpoint)`, returned as soon as they are started.
    pub async fn launch(n: usize, make: impl Fn(&Path, SocketAddr, &str) -> crate::NodeConfig) -> Self {
        Self::launch_with(n, |_| {}, make).await
    }

    /// [`TestNet::launch`] with the bootstrap's configuration adjusted by
    /// `tweak` (its network name, plaintext, ...).
    pub async fn launch_with(
        n: usize,
        tweak: impl FnOnce(&mut bootstrap_svc::Config),
        make: impl Fn(&Path, SocketAddr, &str) -> crate::NodeConfig,
    ) -> Self {
        let bootstrap_dir = tempfile::tempdir().expect("temp dir");
        let mut cfg = bootstrap_config(bootstrap_dir.path());
        tweak(&mut cfg);
        let bootstrap = TestBootstrap::start(cfg).await;
        let endpoint = bootstrap.endpoint();
        let dirs: Vec<tempfile::TempDir> = (0..n).map(|_| tempfile::tempdir().expect("temp dir")).collect();
        let mut nodes = Vec::new();
        for d in &dirs {
            nodes.push(TestNode::start(|addr| make(d.path(), addr, &endpoint)).await);
        }
        TestNet { bootstrap, nodes, dirs, bootstrap_dir }
    }

    pub fn refs(&self) -> Vec<&TestNode> {
        self.nodes.iter().collect()
    }

    /// Stops every node, then the bootstrap.
    pub async fn stop(self) {
        for n in self.nodes {
            n.stop().await;
        }
        self.bootstrap.stop().await;
    }
}

/// Waits until each node sees all the others as active peers.
pub async fn all_active(nodes: &[&TestNode]) {
    for n in nodes {
        eventually(Duration::from_secs(30), "every node sees the others as active", || async {
            (n.node().peers().active_count() >= nodes.len() - 1).then_some(())
        })
        .await;
    }
}

/// An anonymous TLS channel to `endpoint` whose connection comes from
/// `local_ip` (another loopback address such as 127.0.0.2), to act as a
/// different host.
pub async fn channel_from(endpoint: &str, local_ip: &str) -> Channel {
    let config = ClientTls::anonymous().config(None).expect("tls config").expect("tls");
    let connector =
        p2p_proto::tls::Connector::new(config, Default::default()).from_local_ip(local_ip.parse().expect("local ip"));
    TEST_DIAL
        .endpoint(endpoint)
        .expect("endpoint")
        .connect_with_connector(connector)
        .await
        .expect("connect from another loopback address")
}

/// A TLS channel presenting `key`'s certificate: a client that proves it is
/// node `node_id(key)` (or impersonates nobody: the key is its own).
pub async fn channel_as(endpoint: &str, key: &ed25519_dalek::SigningKey, local_ip: Option<&str>) -> Channel {
    let identity = p2p_proto::tls::TlsIdentity::new(key).expect("tls identity");
    let config = ClientTls::Tls { identity: Some(identity) }.config(None).expect("tls config").expect("tls");
    let mut connector = p2p_proto::tls::Connector::new(config, Default::default());
    if let Some(ip) = local_ip {
        connector = connector.from_local_ip(ip.parse().expect("local ip"));
    }
    TEST_DIAL
        .endpoint(endpoint)
        .expect("endpoint")
        .connect_with_connector(connector)
        .await
        .expect("connect with a certificate")
}
