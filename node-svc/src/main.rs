//! `node-svc`: parse flags, set up logging, bind, serve until SIGINT/SIGTERM.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use node_svc::NodeConfig;
use node_svc::chain::finality::FinalityParams;
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
    /// Bootstrap servers, tried in turn (comma-separated or repeated):
    /// `[NODE_ID@]host:port`; with the id, its TLS handshake must prove it.
    #[arg(long, env = "NODE_BOOTSTRAP", value_delimiter = ',')]
    bootstrap: Vec<String>,
    /// Peers to connect to whatever the bootstrap says (comma-separated or
    /// repeated): `[NODE_ID@]host:port`; with the id, the handshake must prove it.
    #[arg(long, env = "NODE_PEERS", value_delimiter = ',')]
    peer: Vec<String>,
    /// Where the operator's admin API listens (MineBlock, bans, peers):
    /// default loopback at the P2P port + 100; `off` serves none. Beyond
    /// loopback every call needs --admin-token or the data dir's admin.cookie.
    #[arg(long, env = "NODE_ADMIN_LISTEN")]
    admin_listen: Option<String>,
    /// Serve Prometheus metrics (plain HTTP, `GET /metrics`) on this
    /// address, e.g. 0.0.0.0:9100; off unless given.
    #[arg(long, env = "NODE_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// Token the admin API requires (default: the admin.cookie file written at start).
    #[arg(long, env = "NODE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Write the admin API's bound address to this file (like --addr-file).
    #[arg(long, env = "NODE_ADMIN_ADDR_FILE")]
    admin_addr_file: Option<PathBuf>,
    /// Links without TLS (local experiments only): nothing is encrypted, and
    /// no request can be tied to a node.
    #[arg(long, env = "P2P_PLAINTEXT")]
    plaintext: bool,
    /// Directory for the chain store and the node's identity key.
    #[arg(long, env = "NODE_DATA_DIR", default_value = "./data/node")]
    data_dir: PathBuf,
    /// Network name; nodes on different networks never share blocks.
    #[arg(long, env = "NODE_NETWORK", default_value = "devnet")]
    network: String,
    /// Leading zero bits of the easiest target allowed (the difficulty limit;
    /// every block's target when retargeting is off). Part of the network's identity.
    #[arg(long, env = "NODE_DIFFICULTY_BITS", default_value_t = 16)]
    difficulty_bits: u32,
    /// Retarget every block (LWMA-1) toward --block-time-ms; `false` keeps
    /// the limit (a fixed difficulty). Part of the network's identity.
    #[arg(long, env = "NODE_RETARGET", default_value_t = true, action = clap::ArgAction::Set)]
    retarget: bool,
    /// The block time the difficulty steers toward, in ms (consensus).
    #[arg(long, env = "NODE_BLOCK_TIME_MS", default_value_t = 10_000)]
    block_time_ms: u64,
    /// Transactions one block may carry (consensus).
    #[arg(long, env = "NODE_MAX_BLOCK_TXS", default_value_t = 2_000)]
    max_block_txs: usize,
    /// Bytes one block may have (consensus).
    #[arg(long, env = "NODE_MAX_BLOCK_BYTES", default_value_t = 1024 * 1024)]
    max_block_bytes: usize,
    /// Bytes one transaction's payload may have (consensus).
    #[arg(long, env = "NODE_MAX_TX_PAYLOAD", default_value_t = 64 * 1024)]
    max_tx_payload: usize,
    /// Mine continuously from the start (the admin API starts and stops it too).
    #[arg(long, env = "NODE_MINE")]
    mine: bool,
    /// Finality validators: ed25519 public keys in hex, comma-separated
    /// (consensus; empty: finality off, plain proof of work).
    #[arg(long, env = "NODE_VALIDATORS", value_delimiter = ',')]
    validators: Vec<String>,
    /// A finality checkpoint every this many blocks (consensus).
    #[arg(long, env = "NODE_CHECKPOINT_INTERVAL", default_value_t = 10)]
    checkpoint_interval: u64,
    /// Validators vote for a checkpoint once it is this many blocks deep (consensus).
    #[arg(long, env = "NODE_VOTE_DEPTH", default_value_t = 2)]
    vote_depth: u64,
    /// Key file this node signs checkpoints with (created if missing); by
    /// default the node's identity key, when it is one of --validators.
    #[arg(long, env = "NODE_VALIDATOR_KEY")]
    validator_key: Option<PathBuf>,
    /// Transactions the mempool holds at most (the oldest make room).
    #[arg(long, env = "NODE_MEMPOOL_MAX_TXS", default_value_t = 50_000)]
    mempool_max_txs: usize,
    /// Bytes the mempool holds at most.
    #[arg(long, env = "NODE_MEMPOOL_MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    mempool_max_bytes: usize,
    /// Pending transactions one sender may have.
    #[arg(long, env = "NODE_MEMPOOL_MAX_PER_SENDER", default_value_t = 256)]
    mempool_max_per_sender: usize,
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
    /// Peers this node relays blocks with (its relay degree; peers that
    /// picked it join too, up to twice this).
    #[arg(long, env = "NODE_GOSSIP_FANOUT", default_value_t = 8)]
    gossip_fanout: usize,
    /// How long an announced block waits for the push of a peer that feeds
    /// us before it is fetched (about ten link latencies; shorter is faster
    /// and grows more redundant links).
    #[arg(long, env = "NODE_RELAY_GRAFT_WAIT_MS", default_value_t = 100)]
    relay_graft_wait_ms: u64,
    /// Peers pushed to in full before this node is fed by anyone.
    #[arg(long, env = "NODE_RELAY_INITIAL_EAGER", default_value_t = 3)]
    relay_initial_eager: usize,
    #[command(flatten)]
    conn: p2p_proto::conn::ConnArgs,
    /// Seconds a peer's or client's block stream may deliver nothing before it is given up.
    #[arg(long, env = "NODE_STREAM_IDLE_TIMEOUT_SECS", default_value_t = 10)]
    stream_idle_timeout_secs: u64,
    /// GetBlocks streams served at once, in total.
    #[arg(long, env = "NODE_MAX_BLOCK_STREAMS", default_value_t = 64)]
    max_block_streams: usize,
    /// GetBlocks streams served at once to one client.
    #[arg(long, env = "NODE_MAX_BLOCK_STREAMS_PER_CLIENT", default_value_t = 8)]
    max_block_streams_per_client: usize,
    /// Bytes one BroadcastBlockchain stream may buffer before they are committed.
    #[arg(long, env = "NODE_BROADCAST_BUFFER_BYTES", default_value_t = 4 * 1024 * 1024)]
    broadcast_buffer_bytes: usize,
    /// Bytes all BroadcastBlockchain streams together may buffer.
    #[arg(long, env = "NODE_INBOUND_BUFFER_BYTES", default_value_t = 64 * 1024 * 1024)]
    inbound_buffer_bytes: usize,
    /// Bytes asked for (and accepted) per GetBlocks while syncing.
    #[arg(long, env = "NODE_SYNC_BATCH_BYTES", default_value_t = 8 * 1024 * 1024)]
    sync_batch_bytes: u64,
    /// Side branches ending more than this many blocks below the tip are pruned.
    #[arg(long, env = "NODE_PRUNE_SIDE_DEPTH", default_value_t = 1000)]
    prune_side_depth: u64,
    /// Failed tries after which a peer that never answered is forgotten.
    #[arg(long, env = "NODE_MAX_DIAL_ATTEMPTS", default_value_t = 10)]
    max_dial_attempts: u32,
    /// Write the address actually listened on to this file once bound
    /// (with `--listen 127.0.0.1:0`, how a script learns the port).
    #[arg(long, env = "NODE_ADDR_FILE")]
    addr_file: Option<PathBuf>,
    /// Log one JSON object per line instead of text.
    #[arg(long, env = "NODE_LOG_JSON")]
    log_json: bool,
}

/// The validator set from hex keys.
fn finality_params(keys: &[String], interval: u64, depth: u64) -> anyhow::Result<FinalityParams> {
    let keys = keys
        .iter()
        .filter(|k| !k.trim().is_empty())
        .map(|k| {
            let bytes = hex::decode(k.trim()).map_err(|e| anyhow::anyhow!("--validators: {k:?} is not hex: {e}"))?;
            <[u8; 32]>::try_from(bytes.as_slice())
                .map_err(|_| anyhow::anyhow!("--validators: {k:?} is {} bytes, an ed25519 key is 32", bytes.len()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    FinalityParams::new(keys, interval, depth).map_err(|e| anyhow::anyhow!("--validators: {e}"))
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
    let admin = match args.admin_listen.as_deref() {
        Some("off") | Some("none") => None,
        Some(a) => Some(a.to_string()),
        None if local.port() == 0 || local.port() > u16::MAX - 100 => Some("127.0.0.1:0".to_string()),
        None => Some(format!("127.0.0.1:{}", local.port() + 100)),
    };
    let admin = match admin {
        Some(a) => {
            let l = tokio::net::TcpListener::bind(&a).await.with_context(|| {
                format!("cannot listen on {a} for the admin API (--admin-listen; `off` disables it)")
            })?;
            if let Some(path) = &args.admin_addr_file {
                p2p_proto::serving::write_addr_file(path, l.local_addr()?)
                    .with_context(|| format!("cannot write the admin address to {}", path.display()))?;
            }
            Some(l)
        }
        None => None,
    };
    let advertise = args.advertise.unwrap_or_else(|| format!("127.0.0.1:{}", local.port()));
    let mut config = NodeConfig::new(&args.data_dir, advertise);
    config.bootstrap = args.bootstrap;
    config.peers = args.peer;
    anyhow::ensure!(
        args.max_tx_payload + 256 <= args.max_block_bytes,
        "--max-tx-payload {} does not fit in --max-block-bytes {}",
        args.max_tx_payload,
        args.max_block_bytes
    );
    config.network = NetworkParams {
        name: args.network,
        difficulty_bits: args.difficulty_bits,
        retarget: args.retarget,
        block_time_ms: args.block_time_ms.max(1),
        max_block_txs: args.max_block_txs.max(1),
        max_block_bytes: args.max_block_bytes,
        max_tx_payload: args.max_tx_payload,
        finality: finality_params(&args.validators, args.checkpoint_interval, args.vote_depth)?,
        ..NetworkParams::devnet()
    };
    config.validator_key = args.validator_key;
    config.mine = args.mine;
    config.mempool = node_svc::mempool::pool::PoolLimits {
        max_count: args.mempool_max_txs.max(1),
        max_bytes: args.mempool_max_bytes.max(config.network.max_tx_bytes()),
        max_per_sender: args.mempool_max_per_sender.max(1),
    };
    config.register_ttl_secs = args.register_ttl_secs.max(3);
    config.ping_interval = Duration::from_millis(args.ping_interval_ms.max(50));
    config.ping_timeout = config.ping_interval.min(Duration::from_secs(5));
    config.max_failures = args.max_failures.max(1);
    config.max_peers = args.max_peers.max(1);
    config.max_inbound = args.max_inbound.max(1);
    config.target_outbound = args.target_outbound.max(1);
    config.gossip_fanout = args.gossip_fanout.max(1);
    config.relay.graft_wait_ms = args.relay_graft_wait_ms;
    config.relay.initial_eager = args.relay_initial_eager;
    config.conn = args.conn.limits();
    config.stream_idle_timeout = Duration::from_secs(args.stream_idle_timeout_secs.max(1));
    config.max_block_streams = args.max_block_streams.max(1);
    config.max_block_streams_per_client = args.max_block_streams_per_client.max(1);
    config.broadcast_buffer_bytes = args.broadcast_buffer_bytes.max(config.network.max_message_bytes());
    config.inbound_buffer_bytes = args.inbound_buffer_bytes.max(config.broadcast_buffer_bytes);
    config.sync_batch_bytes = args.sync_batch_bytes.max(config.network.max_message_bytes() as u64);
    config.prune_side_depth = args.prune_side_depth;
    config.max_dial_attempts = args.max_dial_attempts.max(1);
    config.plaintext = args.plaintext;
    config.admin_token = args.admin_token;
    for t in config.bootstrap.iter().chain(&config.peers) {
        p2p_proto::dial::Target::parse(t).map_err(anyhow::Error::msg)?;
    }

    let shutdown = p2p_proto::serving::shutdown_on_signal();
    let metrics = p2p_proto::metrics_http::bind(args.metrics_listen.as_deref()).await?;
    node_svc::run(node_svc::Listeners { p2p: listener, admin, metrics }, config, shutdown).await.context("node failed")
}
