//! Server configuration, independent of how it was parsed, so tests build it directly.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::lease::LeasePolicy;

/// Where registrations are kept.
#[derive(Debug, Clone, Default)]
pub enum StoreChoice {
    /// `registry.redb` in the data directory: one server.
    #[default]
    Redb,
    /// An etcd cluster any number of servers share.
    Etcd(crate::store::etcd::EtcdOptions),
}

/// Everything the bootstrap server can be told.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the server's key lives, and the registry database with redb
    /// (`registry.redb` inside).
    pub data_dir: PathBuf,
    /// Where registrations are kept.
    pub store: StoreChoice,
    /// Lease default and bounds.
    pub lease: LeasePolicy,
    /// Peers per GetPeers when the request says 0.
    pub default_peers_limit: u32,
    /// Most peers one GetPeers returns, whatever it asks for.
    pub max_peers_limit: u32,
    /// Reject registrations that carry no public key and signature.
    pub require_signatures: bool,
    /// How far a signed timestamp may be from the server's clock.
    pub signature_window: Duration,
    /// Register calls allowed per client per minute; 0 disables the limit.
    /// A client is an IPv4 address or an IPv6 prefix (`conn.v6_prefix`).
    pub register_per_minute: u32,
    /// Remove calls allowed per client per minute; 0 disables the limit.
    pub remove_per_minute: u32,
    /// GetPeers calls allowed per client per minute; 0 disables the limit.
    pub get_peers_per_minute: u32,
    /// How often expired leases are purged.
    pub purge_interval: Duration,
    /// Events buffered per WatchPeers subscriber before it is told it lagged.
    pub watch_buffer: usize,
    /// Concurrent WatchPeers streams allowed, in total and per client.
    pub max_watchers: usize,
    pub max_watchers_per_client: usize,
    /// Connection caps, keepalive and idle timeout of the gRPC server.
    pub conn: p2p_proto::conn::ConnLimits,
    /// Largest request message accepted, in bytes.
    pub max_request_bytes: usize,
    /// Source of time; tests substitute a manual clock.
    pub clock: Arc<dyn Clock>,
    /// List a registration only after dialing its address: the TLS handshake
    /// must prove the registering key's node id and GetStatus must answer as
    /// a node of `network`. Off lists every registration at once (tests).
    pub verify_registrations: bool,
    /// The network whose nodes are listed (a node's `--network`).
    pub network: String,
    /// Verification dials in flight at once.
    pub verify_concurrency: usize,
    /// Verification dials to one IP per minute, whatever names or ports
    /// point at it: the registry cannot be used to flood a host.
    pub verify_per_host_per_minute: u32,
    /// Deadline of one verification (resolve, connect, handshake, GetStatus).
    pub verify_timeout: Duration,
    /// Serve without TLS (local experiments only; loudly logged).
    pub plaintext: bool,
}

impl Config {
    /// No per-client rate limits (tests and benchmarks that drive many
    /// requests from one address).
    pub fn disable_rate_limits(&mut self) {
        self.register_per_minute = 0;
        self.remove_per_minute = 0;
        self.get_peers_per_minute = 0;
    }

    /// Defaults suitable for a devnet and for an operator to start from.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            store: StoreChoice::Redb,
            lease: LeasePolicy { default_ttl_secs: 120, min_ttl_secs: 10, max_ttl_secs: 3600 },
            default_peers_limit: 100,
            max_peers_limit: 1000,
            require_signatures: false,
            signature_window: Duration::from_secs(60),
            register_per_minute: 100,
            remove_per_minute: 60,
            get_peers_per_minute: 600,
            purge_interval: Duration::from_secs(1),
            watch_buffer: 1024,
            max_watchers: 10_000,
            max_watchers_per_client: 64,
            conn: p2p_proto::conn::ConnLimits::default(),
            max_request_bytes: 16 * 1024,
            clock: Arc::new(SystemClock),
            verify_registrations: true,
            network: "devnet".into(),
            verify_concurrency: 32,
            verify_per_host_per_minute: 30,
            verify_timeout: Duration::from_secs(5),
            plaintext: false,
        }
    }
}
