//! `node-svc`: parse flags, set up logging, bind, serve until SIGINT/SIGTERM.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use node_svc::NodeConfig;
use node_svc::chain::params::{MAX_DIFFICULTY_BITS, NetworkParams};

/// A node of the proof-of-work chain.
#[derive(Debug, Parser)]
#[command(name = "node-svc", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "NODE_LISTEN", default_value = "0.0.0.0:3000")]
    listen: String,
    /// Address other nodes dial to reach this one (in compose: the service name and port).
    #[arg(long, env = "NODE_ADVERTISE")]
    advertise: Option<String>,
    /// Bootstrap servers, tried in turn (comma-separated or repeated).
    #[arg(long, env = "NODE_BOOTSTRAP", value_delimiter = ',')]
    bootstrap: Vec<String>,
    /// Peers to connect to whatever the bootstrap says (comma-separated or repeated).
    #[arg(long, env = "NODE_PEERS", value_delimiter = ',')]
    peer: Vec<String>,
    /// Directory for the chain store and the node's identity key.
    #[arg(long, env = "NODE_DATA_DIR", default_value = "./data/node")]
    data_dir: PathBuf,
    /// Network name; nodes on different networks never share blocks.
    #[arg(long, env = "NODE_NETWORK", default_value = "devnet")]
    network: String,
    /// Leading zero bits a block hash needs (part of the network's identity).
    #[arg(long, env = "NODE_DIFFICULTY_BITS", default_value_t = 16)]
    difficulty_bits: u32,
    /// Largest block data in bytes.
    #[arg(long, env = "NODE_MAX_BLOCK_DATA", default_value_t = 64 * 1024)]
    max_block_data: usize,
    /// Lease asked of the bootstrap in seconds (refreshed every third of it).
    #[arg(long, env = "NODE_REGISTER_TTL_SECS", default_value_t = 60)]
    register_ttl_secs: u32,
    /// Milliseconds between heartbeats to each peer.
    #[arg(long, env = "NODE_PING_INTERVAL_MS", default_value_t = 2000)]
    ping_interval_ms: u64,
    /// Missed heartbeats in a row before a peer is marked failing.
    #[arg(long, env = "NODE_MAX_FAILURES", default_value_t = 3)]
    max_failures: u32,
    /// Most peers kept in the table (the address book).
    #[arg(long, env = "NODE_MAX_PEERS", default_value_t = 256)]
    max_peers: usize,
    /// Most peers that reached us first kept at once.
    #[arg(long, env = "NODE_MAX_INBOUND", default_value_t = 32)]
    max_inbound: usize,
    /// Peers this node dials itself, spread over discovery sources.
    #[arg(long, env = "NODE_TARGET_OUTBOUND", default_value_t = 16)]
    target_outbound: usize,
    /// Peers a new block is pushed to (random subset of the usable ones).
    #[arg(long, env = "NODE_GOSSIP_FANOUT", default_value_t = 8)]
    gossip_fanout: usize,
    /// Write the address actually listened on to this file once bound
    /// (with `--listen 127.0.0.1:0`, how a script learns the port).
    #[arg(long, env = "NODE_ADDR_FILE")]
    addr_file: Option<PathBuf>,
    /// Log one JSON object per line instead of text.
    #[arg(long, env = "NODE_LOG_JSON")]
    log_json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    p2p_proto::serving::init_tracing(args.log_json);
    anyhow::ensure!(
        args.difficulty_bits <= MAX_DIFFICULTY_BITS,
        "--difficulty-bits {} is above the maximum of {MAX_DIFFICULTY_BITS}",
        args.difficulty_bits
    );
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr()?;
    if let Some(path) = &args.addr_file {
        p2p_proto::serving::write_addr_file(path, local)
            .with_context(|| format!("cannot write the listen address to {}", path.display()))?;
    }
    let advertise = args.advertise.unwrap_or_else(|| format!("127.0.0.1:{}", local.port()));
    let mut config = NodeConfig::new(&args.data_dir, advertise);
    config.bootstrap = args.bootstrap;
    config.peers = args.peer;
    config.network = NetworkParams {
        name: args.network,
        difficulty_bits: args.difficulty_bits,
        max_data_bytes: args.max_block_data,
        ..NetworkParams::devnet()
    };
    config.register_ttl_secs = args.register_ttl_secs.max(3);
    config.ping_interval = Duration::from_millis(args.ping_interval_ms.max(50));
    config.ping_timeout = config.ping_interval.min(Duration::from_secs(5));
    config.max_failures = args.max_failures.max(1);
    config.max_peers = args.max_peers.max(1);
    config.max_inbound = args.max_inbound.max(1);
    config.target_outbound = args.target_outbound.max(1);
    config.gossip_fanout = args.gossip_fanout.max(1);

    let shutdown = p2p_proto::serving::shutdown_on_signal();
    node_svc::run(listener, config, shutdown).await.context("node failed")
}
