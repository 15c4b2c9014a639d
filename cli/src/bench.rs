//! `p2pctl bench …`: throughput and latency measurements. These are tools,
//! not tests: they print figures and never fail on a threshold.

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use clap::Subcommand;
use futures::{Stream, StreamExt};
use p2p_proto::bootstrap::bootstrap_client::BootstrapClient;
use p2p_proto::bootstrap::bootstrap_server::{Bootstrap, BootstrapServer};
use p2p_proto::bootstrap::{
    GetPeersRequest, GetPeersResponse, PeerEvent, RegisterRequest, RegisterResponse, RemoveRequest, RemoveResponse,
    WatchPeersRequest,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::connect;
use crate::output::Table;

#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Full block validation rate against the raw SHA-256 rate on the same headers.
    Validate {
        #[arg(long, default_value_t = 100_000)]
        blocks: usize,
        #[arg(long, default_value_t = 8)]
        difficulty_bits: u32,
        /// Bytes of data per block.
        #[arg(long, default_value_t = 0)]
        data_bytes: usize,
    },
    /// Sync throughput of a fresh node downloading a chain from a peer over loopback.
    Sync {
        #[arg(long, default_value_t = 100_000)]
        blocks: usize,
        #[arg(long, default_value_t = 8)]
        difficulty_bits: u32,
    },
    /// Time for a block to reach all of N in-process nodes, and the
    /// messages it cost (full blocks, duplicates, announcements, fetches).
    Propagation {
        #[arg(long, default_value_t = 10)]
        nodes: usize,
        #[arg(long, default_value_t = 10)]
        blocks: usize,
        #[arg(long, default_value_t = 8)]
        difficulty_bits: u32,
        /// Draw the arrival curve (fraction of nodes vs time) as SVG.
        #[arg(long)]
        plot: Option<std::path::PathBuf>,
        /// How long an announced block waits for an expected push before it
        /// is fetched (default: the node's).
        #[arg(long)]
        graft_wait_ms: Option<u64>,
        /// Peers each node pushes to in full at the start (default: the node's).
        #[arg(long)]
        initial_eager: Option<usize>,
    },
    /// Finality across N in-process validator nodes: time from a block that
    /// makes a checkpoint votable to final on every node, and vote messages.
    Finality {
        #[arg(long, default_value_t = 4)]
        validators: usize,
        #[arg(long, default_value_t = 20)]
        checkpoints: usize,
        #[arg(long, default_value_t = 8)]
        difficulty_bits: u32,
    },
    /// Transactions/s one node accepts over gRPC (signature checks and
    /// persistence included) against raw ed25519 verification.
    Tx {
        #[arg(long, default_value_t = 20_000)]
        transactions: usize,
        /// Distinct senders (each sender's nonces go in order, the senders
        /// side by side).
        #[arg(long, default_value_t = 256)]
        senders: usize,
        /// Senders submitting at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value_t = 4)]
        connections: usize,
    },
    /// What gossiping transactions costs across N in-process nodes: time to
    /// reach every mempool, ids announced and bodies delivered per transaction.
    TxGossip {
        #[arg(long, default_value_t = 10)]
        nodes: usize,
        /// Transactions sent one at a time (each timed).
        #[arg(long, default_value_t = 50)]
        transactions: usize,
        /// Then a burst of this many at once at one node (0: none).
        #[arg(long, default_value_t = 1000)]
        burst: usize,
    },
    /// Register and GetPeers throughput and latency against a registry holding
    /// N peers, and the same load against a no-op handler for comparison.
    Bootstrap {
        /// Registry to measure, `[LABEL=]HOST:PORT[,HOST:PORT...]`: several
        /// servers of one registry (etcd) share the load. Repeat to measure
        /// several registries in one run, each also as a ratio to the first.
        /// By default one redb bootstrap is started in-process. Remote ones
        /// need --register-per-minute 0 and --verify-registrations false
        /// (the addresses are made up).
        #[arg(long)]
        target: Vec<String>,
        /// Peers to register before measuring.
        #[arg(long, default_value_t = 100_000)]
        peers: u64,
        /// The registries already hold --peers peers from an earlier run
        /// with the same --target list: measure without registering them.
        #[arg(long)]
        preloaded: bool,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Requests per measured operation.
        #[arg(long, default_value_t = 20_000)]
        requests: u64,
        /// HTTP/2 connections the load is spread over.
        #[arg(long, default_value_t = 4)]
        connections: usize,
    },
    /// The wave-1 attacks against a running node process (huge
    /// BroadcastBlockchain messages, unread GetBlocks streams), with its
    /// memory read from /proc/PID/status after each.
    Hostile {
        /// The node to attack (host:port).
        #[arg(long)]
        node: String,
        /// Its admin API, to mine the chain the GetBlocks attack reads
        /// (default: its host, port + 100).
        #[arg(long)]
        admin: Option<String>,
        /// Its process id, to read its memory.
        #[arg(long)]
        pid: u32,
        /// Messages in the BroadcastBlockchain stream.
        #[arg(long, default_value_t = 500)]
        messages: usize,
        /// Bytes of data per message.
        #[arg(long, default_value_t = 16 * 1024 * 1024)]
        message_bytes: usize,
        /// 60 KiB blocks mined before the GetBlocks attack.
        #[arg(long, default_value_t = 100)]
        blocks: usize,
        /// Unread GetBlocks streams opened.
        #[arg(long, default_value_t = 300)]
        streams: usize,
    },
}

pub async fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Bootstrap { target, peers, preloaded, concurrency, requests, connections } => {
            bootstrap(target, peers, preloaded, concurrency.max(1), requests, connections.max(1)).await
        }
        BenchCmd::Validate { blocks, difficulty_bits, data_bytes } => {
            crate::bench_node::validation(blocks.max(2), difficulty_bits, data_bytes);
            Ok(())
        }
        BenchCmd::Sync { blocks, difficulty_bits } => crate::bench_node::sync(blocks.max(1), difficulty_bits).await,
        BenchCmd::Propagation { nodes, blocks, difficulty_bits, plot, graft_wait_ms, initial_eager } => {
            let mut relay = node_svc::relay::RelayConfig::default();
            relay.graft_wait_ms = graft_wait_ms.unwrap_or(relay.graft_wait_ms);
            relay.initial_eager = initial_eager.unwrap_or(relay.initial_eager);
            crate::bench_node::propagation(nodes.max(2), blocks.max(1), difficulty_bits, plot, relay).await
        }
        BenchCmd::Finality { validators, checkpoints, difficulty_bits } => {
            crate::bench_node::finality(validators.max(1), checkpoints.max(1), difficulty_bits).await
        }
        BenchCmd::Tx { transactions, senders, concurrency, connections } => {
            crate::bench_tx::accept(transactions.max(1), senders.max(1), concurrency.max(1), connections.max(1)).await
        }
        BenchCmd::TxGossip { nodes, transactions, burst } => {
            crate::bench_tx::gossip(nodes.max(2), transactions.max(1), burst).await
        }
        BenchCmd::Hostile { node, admin, pid, messages, message_bytes, blocks, streams } => {
            let admin = admin.unwrap_or_else(|| crate::node::default_admin(&node));
            crate::bench_hostile::run(&node, &admin, pid, messages, message_bytes, blocks, streams).await
        }
    }
}

/// One registry under test: its servers share the load.
#[derive(Debug, Clone)]
struct Target {
    label: String,
    endpoints: Vec<String>,
}

impl Target {
    fn parse(s: &str) -> anyhow::Result<Self> {
        let (label, list) = match s.split_once('=') {
            Some((l, rest)) => (Some(l.to_string()), rest),
            None => (None, s),
        };
        let endpoints: Vec<String> = list.split(',').map(|e| e.trim().to_string()).filter(|e| !e.is_empty()).collect();
        anyhow::ensure!(!endpoints.is_empty(), "--target {s:?} names no server");
        Ok(Target { label: label.unwrap_or_else(|| endpoints.join(",")), endpoints })
    }
}

/// Latency figures of one measured run.
struct Stats {
    ok: u64,
    errors: u64,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
    first_error: Option<String>,
}

impl Stats {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `count` calls of `call(i)` with `concurrency` in flight; `bar`
/// (if any) advances with each call.
async fn measure<F, Fut>(count: u64, concurrency: usize, bar: Option<&indicatif::ProgressBar>, call: F) -> Stats
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = Result<(), Status>>,
{
    let start = Instant::now();
    // Microseconds from 1 us to an hour, 3 significant digits: percentiles
    // without keeping every sample.
    let mut latencies =
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds");
    let mut errors = 0u64;
    let mut first_error = None;
    let mut results = futures::stream::iter(0..count)
        .map(|i| {
            let fut = call(i);
            async move {
                let t = Instant::now();
                let r = fut.await;
                (t.elapsed(), r)
            }
        })
        .buffer_unordered(concurrency);
    while let Some((took, r)) = results.next().await {
        match r {
            Ok(()) => latencies.saturating_record(took.as_micros() as u64),
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("{:?}: {}", e.code(), e.message()));
            }
        }
        if let Some(bar) = bar {
            bar.inc(1);
        }
    }
    let pct = |p: f64| Duration::from_micros(latencies.value_at_quantile(p));
    Stats { ok: latencies.len(), errors, elapsed: start.elapsed(), p50: pct(0.50), p99: pct(0.99), first_error }
}

fn address(i: u64) -> String {
    // Unique, valid, and spread over the key space like real addresses.
    format!("10.{}.{}.{}:{}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff, 1024 + (i >> 24))
}

async fn clients(endpoint: &str, n: usize) -> anyhow::Result<Vec<BootstrapClient<Channel>>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(BootstrapClient::new(connect::channel("bootstrap", endpoint).await?));
    }
    Ok(out)
}

async fn bootstrap(
    targets: Vec<String>,
    peers: u64,
    preloaded: bool,
    concurrency: usize,
    requests: u64,
    conns: usize,
) -> anyhow::Result<()> {
    let _dir;
    let mut stops = Vec::new();
    let mut targets = targets.iter().map(|t| Target::parse(t)).collect::<anyhow::Result<Vec<_>>>()?;
    if targets.is_empty() {
        let dir = tempfile::tempdir()?;
        let mut config = bootstrap_svc::Config::new(dir.path());
        config.disable_rate_limits();
        config.lease.default_ttl_secs = 3600;
        // The registered addresses are made up: measure the registry, not the verifier.
        config.verify_registrations = false;
        config.plaintext = crate::connect::is_plaintext();
        let (addr, stop) = spawn(|l, s| bootstrap_svc::run(l, config, s)).await?;
        _dir = dir;
        stops.push(stop);
        eprintln!("started an in-process bootstrap at {addr} (release builds give the meaningful figures)");
        targets.push(Target { label: "in-process redb".into(), endpoints: vec![addr.to_string()] });
    }

    // The same transport as the registry (TLS unless --plaintext), so the
    // difference is the registry's work.
    let noop_tls = if crate::connect::is_plaintext() {
        None
    } else {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        Some(p2p_proto::tls::TlsIdentity::new(&key)?.server_config())
    };
    let (noop_addr, noop_stop) = spawn(|l, s| async move {
        let incoming = p2p_proto::conn::incoming(l, p2p_proto::conn::ConnLimits::default(), noop_tls, s.child_token());
        tonic::transport::Server::builder()
            .add_service(BootstrapServer::new(Noop))
            .serve_with_incoming_shutdown(incoming, s.cancelled())
            .await
    })
    .await?;
    stops.push(noop_stop);
    targets.push(Target { label: "no-op".into(), endpoints: vec![noop_addr.to_string()] });

    let mut table = Table::new(&["OPERATION", "SERVER", "REQUESTS", "ERRORS", "REQ/S", "VS FIRST", "P50", "P99"]);
    // Requests/s of the first target, per operation, for the ratios.
    let mut first: Vec<f64> = Vec::new();
    let last = targets.len() - 1;
    for (t, target) in targets.iter().enumerate() {
        // Each registry gets addresses of its own, so registries that share
        // a store (etcd prefixes) never refresh each other's peers.
        let base = (t as u64) << 32;
        let mut clients_of = Vec::new();
        for endpoint in &target.endpoints {
            clients_of.extend(clients(endpoint, conns).await?);
        }
        let noop = t == last;
        if peers > 0 && !noop && !preloaded {
            eprintln!("{}: registering {peers} peers with {concurrency} in flight…", target.label);
            let bar = crate::bench_node::progress(peers, "registering");
            let pre = measure(peers, concurrency, Some(&bar), |i| register(&clients_of, base + i)).await;
            bar.finish_and_clear();
            if let Some(e) = &pre.first_error {
                anyhow::bail!("preloading {} failed ({} errors), first: {e}", target.label, pre.errors);
            }
            eprintln!(
                "{}: preloaded {} peers in {:.1}s ({:.0} registers/s)",
                target.label,
                pre.ok,
                pre.elapsed.as_secs_f64(),
                pre.rate()
            );
        }
        for (k, op) in [Op::RegisterNew, Op::RegisterRefresh, Op::Page, Op::Random].into_iter().enumerate() {
            let s = measure(requests, concurrency, None, |i| op.call(&clients_of, base, peers, i)).await;
            if let Some(e) = &s.first_error {
                eprintln!("{} against {}: {} errors, first: {e}", op.name(), target.label, s.errors);
            }
            if t == 0 {
                first.push(s.rate());
            }
            let ratio = first.get(k).filter(|f| **f > 0.0).map(|f| format!("{:.2}x", s.rate() / f));
            table.row(vec![
                op.name().into(),
                format!("{} ({})", target.label, target.endpoints.join(",")),
                s.ok.to_string(),
                s.errors.to_string(),
                format!("{:.0}", s.rate()),
                ratio.unwrap_or_else(|| "-".into()),
                format!("{:.2}ms", s.p50.as_secs_f64() * 1000.0),
                format!("{:.2}ms", s.p99.as_secs_f64() * 1000.0),
            ]);
        }
    }
    println!("bootstrap benchmark: {peers} preloaded peers, concurrency {concurrency}, {conns} connections per server");
    table.print();
    for stop in stops {
        stop.cancel();
    }
    Ok(())
}

/// The operations measured.
#[derive(Debug, Clone, Copy)]
enum Op {
    RegisterNew,
    RegisterRefresh,
    Page,
    Random,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::RegisterNew => "Register (new)",
            Op::RegisterRefresh => "Register (refresh)",
            Op::Page => "GetPeers page of 100",
            Op::Random => "GetPeers random 100",
        }
    }

    /// The `i`th request against a registry whose addresses start at
    /// `base`; new registrations come after its `peers` preloaded ones.
    async fn call(self, clients: &[BootstrapClient<Channel>], base: u64, peers: u64, i: u64) -> Result<(), Status> {
        match self {
            Op::RegisterNew => register(clients, base + peers + i).await,
            Op::RegisterRefresh => register(clients, base + i % peers.max(1)).await,
            Op::Page => get_peers(clients, i, false).await,
            Op::Random => get_peers(clients, i, true).await,
        }
    }
}

async fn register(clients: &[BootstrapClient<Channel>], i: u64) -> Result<(), Status> {
    let mut c = clients[(i as usize) % clients.len()].clone();
    c.register(RegisterRequest { address: address(i), ttl_seconds: 3600, ..Default::default() }).await.map(|_| ())
}

async fn get_peers(clients: &[BootstrapClient<Channel>], i: u64, random: bool) -> Result<(), Status> {
    let mut c = clients[(i as usize) % clients.len()].clone();
    // Pages start at spread-out addresses, like many clients paging at once.
    let page_token = if random { String::new() } else { hex::encode(address(i.wrapping_mul(2654435761) % (1 << 24))) };
    c.get_peers(GetPeersRequest { limit: 100, random, page_token, ..Default::default() }).await.map(|_| ())
}

/// Binds 127.0.0.1:0 and runs `serve(listener, token)` in the background.
async fn spawn<F, Fut, E>(serve: F) -> anyhow::Result<(SocketAddr, CancellationToken)>
where
    F: FnOnce(tokio::net::TcpListener, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let token = CancellationToken::new();
    let fut = serve(listener, token.clone());
    tokio::spawn(async move {
        if let Err(e) = fut.await {
            eprintln!("bench server failed: {e}");
        }
    });
    Ok((addr, token))
}

/// The same service with handlers that do nothing: the cost of gRPC itself.
#[derive(Debug, Clone, Copy)]
struct Noop;

#[tonic::async_trait]
impl Bootstrap for Noop {
    async fn register(&self, _: Request<RegisterRequest>) -> Result<Response<RegisterResponse>, Status> {
        Ok(Response::new(RegisterResponse::default()))
    }
    async fn get_peers(&self, _: Request<GetPeersRequest>) -> Result<Response<GetPeersResponse>, Status> {
        Ok(Response::new(GetPeersResponse::default()))
    }
    async fn remove(&self, _: Request<RemoveRequest>) -> Result<Response<RemoveResponse>, Status> {
        Ok(Response::new(RemoveResponse::default()))
    }
    type WatchPeersStream = Pin<Box<dyn Stream<Item = Result<PeerEvent, Status>> + Send>>;
    async fn watch_peers(&self, _: Request<WatchPeersRequest>) -> Result<Response<Self::WatchPeersStream>, Status> {
        Ok(Response::new(Box::pin(futures::stream::empty())))
    }
    async fn get_info(
        &self,
        _: Request<p2p_proto::bootstrap::GetInfoRequest>,
    ) -> Result<Response<p2p_proto::bootstrap::GetInfoResponse>, Status> {
        Ok(Response::new(p2p_proto::bootstrap::GetInfoResponse::default()))
    }
}
