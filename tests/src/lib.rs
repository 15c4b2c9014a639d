//! Helpers for integration tests: start real servers in-process on ephemeral
//! ports with temporary data directories, and wait for conditions with a
//! deadline instead of sleeping.
//!
//! # Layout
//! - [`TestBootstrap`]: a bootstrap server on `127.0.0.1:0`.
//! - [`eventually`]: poll an async condition until it holds or time runs out.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use p2p_proto::bootstrap::bootstrap_client::BootstrapClient;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// Polls `check` every 20 ms until it returns `Some`, or panics with `what`
/// after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A bootstrap server running in this process.
#[derive(Debug)]
pub struct TestBootstrap {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
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
        let listener = tokio::net::TcpListener::bind(bind).await.expect("bind bootstrap listener");
        let addr = listener.local_addr().expect("local addr");
        let data_dir = config.data_dir.clone();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(bootstrap_svc::run(listener, config, shutdown.clone()));
        TestBootstrap { addr, data_dir, shutdown, task: Some(task) }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client connected to this server.
    pub async fn client(&self) -> BootstrapClient<Channel> {
        connect_bootstrap(&self.endpoint()).await
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

/// Connects to a bootstrap endpoint, retrying briefly while it starts.
pub async fn connect_bootstrap(endpoint: &str) -> BootstrapClient<Channel> {
    let endpoint = endpoint.to_string();
    eventually(Duration::from_secs(10), "bootstrap accepts connections", || {
        let endpoint = endpoint.clone();
        async move { BootstrapClient::connect(endpoint).await.ok() }
    })
    .await
}
