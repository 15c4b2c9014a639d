//! `bootstrap-svc`: parse flags, set up logging, bind, serve until SIGINT/SIGTERM.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use bootstrap_svc::store::etcd::EtcdOptions;
use bootstrap_svc::{Config, StoreChoice, lease::LeasePolicy};
use clap::Parser;

/// The bootstrap registry new nodes join the network through.
#[derive(Debug, Parser)]
#[command(name = "bootstrap-svc", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "BOOTSTRAP_LISTEN", default_value = "0.0.0.0:4000")]
    listen: String,
    /// Directory for the server's key (and the registry database with `--store redb`).
    #[arg(long, env = "BOOTSTRAP_DATA_DIR", default_value = "./data/bootstrap")]
    data_dir: PathBuf,
    /// Where registrations live: `redb` (a file in --data-dir; one server)
    /// or `etcd` (--etcd-endpoints; any number of servers share it).
    #[arg(long, env = "BOOTSTRAP_STORE", value_enum, default_value_t = Store::Redb)]
    store: Store,
    /// etcd members, comma-separated `host:port` (with `--store etcd`).
    #[arg(long, env = "BOOTSTRAP_ETCD_ENDPOINTS", value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
    /// Key prefix of the registry in etcd; servers with the same prefix share a registry.
    #[arg(long, env = "BOOTSTRAP_ETCD_PREFIX", default_value = "/p2p/registry/")]
    etcd_prefix: String,
    /// Deadline of one etcd call to one member, in milliseconds (a call
    /// that misses it is tried on the next member).
    #[arg(long, env = "BOOTSTRAP_ETCD_TIMEOUT_MS", default_value_t = 2000)]
    etcd_timeout_ms: u64,
    /// Lease granted when a Register asks for 0 seconds.
    #[arg(long, env = "BOOTSTRAP_DEFAULT_TTL_SECS", default_value_t = 120)]
    default_ttl_secs: u32,
    /// Shortest lease granted.
    #[arg(long, env = "BOOTSTRAP_MIN_TTL_SECS", default_value_t = 10)]
    min_ttl_secs: u32,
    /// Longest lease granted.
    #[arg(long, env = "BOOTSTRAP_MAX_TTL_SECS", default_value_t = 3600)]
    max_ttl_secs: u32,
    /// Peers returned by GetPeers when the request says 0.
    #[arg(long, env = "BOOTSTRAP_DEFAULT_PEERS_LIMIT", default_value_t = 100)]
    default_peers_limit: u32,
    /// Most peers one GetPeers returns.
    #[arg(long, env = "BOOTSTRAP_MAX_PEERS_LIMIT", default_value_t = 1000)]
    max_peers_limit: u32,
    /// Reject Register requests without a public key and signature.
    #[arg(long, env = "BOOTSTRAP_REQUIRE_SIGNATURES")]
    require_signatures: bool,
    /// How far a signed timestamp may be from this server's clock, in seconds.
    #[arg(long, env = "BOOTSTRAP_SIGNATURE_WINDOW_SECS", default_value_t = 60)]
    signature_window_secs: u64,
    /// Register calls allowed per client (IPv4 address or IPv6 prefix) per minute (0 = unlimited).
    #[arg(long, env = "BOOTSTRAP_REGISTER_PER_MINUTE", default_value_t = 100)]
    register_per_minute: u32,
    /// Remove calls allowed per client per minute (0 = unlimited).
    #[arg(long, env = "BOOTSTRAP_REMOVE_PER_MINUTE", default_value_t = 60)]
    remove_per_minute: u32,
    /// GetPeers calls allowed per client per minute (0 = unlimited).
    #[arg(long, env = "BOOTSTRAP_GET_PEERS_PER_MINUTE", default_value_t = 600)]
    get_peers_per_minute: u32,
    /// Most concurrent WatchPeers streams.
    #[arg(long, env = "BOOTSTRAP_MAX_WATCHERS", default_value_t = 10_000)]
    max_watchers: usize,
    /// Most concurrent WatchPeers streams of one client.
    #[arg(long, env = "BOOTSTRAP_MAX_WATCHERS_PER_CLIENT", default_value_t = 64)]
    max_watchers_per_client: usize,
    /// List a registration only after dialing it: its TLS handshake must prove
    /// the registering key's node id and it must answer as a node of --network.
    #[arg(long, env = "BOOTSTRAP_VERIFY_REGISTRATIONS", default_value_t = true, action = clap::ArgAction::Set)]
    verify_registrations: bool,
    /// The network whose nodes are listed (the nodes' --network).
    #[arg(long, env = "BOOTSTRAP_NETWORK", default_value = "devnet")]
    network: String,
    /// Verification dials in flight at once.
    #[arg(long, env = "BOOTSTRAP_VERIFY_CONCURRENCY", default_value_t = 32)]
    verify_concurrency: usize,
    /// Verification dials to one IP per minute (however many names and ports point at it).
    #[arg(long, env = "BOOTSTRAP_VERIFY_PER_HOST_PER_MINUTE", default_value_t = 30)]
    verify_per_host_per_minute: u32,
    /// Serve without TLS (local experiments only): nothing is encrypted or authenticated.
    #[arg(long, env = "P2P_PLAINTEXT")]
    plaintext: bool,
    #[command(flatten)]
    conn: p2p_proto::conn::ConnArgs,
    /// Serve Prometheus metrics (plain HTTP, `GET /metrics`) on this
    /// address, e.g. 0.0.0.0:9100; off unless given.
    #[arg(long, env = "BOOTSTRAP_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// Write the address actually listened on to this file once bound
    /// (with `--listen 127.0.0.1:0`, how a script learns the port).
    #[arg(long, env = "BOOTSTRAP_ADDR_FILE")]
    addr_file: Option<PathBuf>,
    /// Log one JSON object per line instead of text.
    #[arg(long, env = "BOOTSTRAP_LOG_JSON")]
    log_json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Store {
    Redb,
    Etcd,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    p2p_proto::serving::init_tracing(args.log_json);
    anyhow::ensure!(
        args.min_ttl_secs > 0
            && args.min_ttl_secs <= args.default_ttl_secs
            && args.default_ttl_secs <= args.max_ttl_secs,
        "TTL bounds must satisfy 0 < min ({}) <= default ({}) <= max ({})",
        args.min_ttl_secs,
        args.default_ttl_secs,
        args.max_ttl_secs
    );
    anyhow::ensure!(args.max_peers_limit > 0, "--max-peers-limit must be at least 1");
    let mut config = Config::new(&args.data_dir);
    config.store = match args.store {
        Store::Redb => StoreChoice::Redb,
        Store::Etcd => {
            let endpoints: Vec<String> =
                args.etcd_endpoints.iter().map(|e| e.trim().to_string()).filter(|e| !e.is_empty()).collect();
            anyhow::ensure!(!endpoints.is_empty(), "--store etcd needs --etcd-endpoints host:port[,host:port...]");
            anyhow::ensure!(args.etcd_timeout_ms > 0, "--etcd-timeout-ms must be at least 1");
            let mut options = EtcdOptions::new(endpoints);
            options.prefix = args.etcd_prefix;
            options.request_timeout = Duration::from_millis(args.etcd_timeout_ms);
            StoreChoice::Etcd(options)
        }
    };
    config.lease = LeasePolicy {
        default_ttl_secs: args.default_ttl_secs,
        min_ttl_secs: args.min_ttl_secs,
        max_ttl_secs: args.max_ttl_secs,
    };
    config.default_peers_limit = args.default_peers_limit.clamp(1, args.max_peers_limit);
    config.max_peers_limit = args.max_peers_limit;
    config.require_signatures = args.require_signatures;
    config.signature_window = Duration::from_secs(args.signature_window_secs);
    config.register_per_minute = args.register_per_minute;
    config.remove_per_minute = args.remove_per_minute;
    config.get_peers_per_minute = args.get_peers_per_minute;
    config.max_watchers = args.max_watchers;
    config.max_watchers_per_client = args.max_watchers_per_client.max(1);
    config.conn = args.conn.limits();
    config.verify_registrations = args.verify_registrations;
    config.network = args.network;
    config.verify_concurrency = args.verify_concurrency.max(1);
    config.verify_per_host_per_minute = args.verify_per_host_per_minute;
    config.plaintext = args.plaintext;

    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    if let Some(path) = &args.addr_file {
        p2p_proto::serving::write_addr_file(path, listener.local_addr()?)
            .with_context(|| format!("cannot write the listen address to {}", path.display()))?;
    }
    let shutdown = p2p_proto::serving::shutdown_on_signal();
    let metrics = p2p_proto::metrics_http::bind(args.metrics_listen.as_deref()).await?;
    bootstrap_svc::run_with_metrics(listener, metrics, config, shutdown).await.context("bootstrap server failed")
}
