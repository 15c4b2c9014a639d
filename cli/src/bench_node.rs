//! Node benchmarks: validation rate vs raw SHA-256, sync throughput, and
//! block propagation across in-process networks.

use std::time::{Duration, Instant};

use node_svc::NodeConfig;
use node_svc::chain::testing::chain_of;
use node_svc::chain::{NetworkParams, validate};
use node_svc::node::Node;
use sha2::Digest;
use tokio_util::sync::CancellationToken;

use crate::output::Table;

fn network(bits: u32) -> NetworkParams {
    NetworkParams { name: "bench".into(), difficulty_bits: bits, ..NetworkParams::devnet() }
}

/// Mines a chain of `n` blocks at `bits`, printing progress for big ones.
fn build_chain(params: &NetworkParams, n: usize) -> Vec<node_svc::chain::Block> {
    let started = Instant::now();
    let chain = chain_of(params, n, p2p_proto::unix_ms_now() - 3_600_000);
    eprintln!("built a {n}-block chain at {} bits in {:.1}s", params.difficulty_bits, started.elapsed().as_secs_f64());
    chain
}

/// Full validation of every block against its parent vs hashing the same headers.
pub fn validation(blocks: usize, bits: u32, data_bytes: usize) {
    let params = NetworkParams { max_data_bytes: data_bytes.max(64 * 1024), ..network(bits) };
    let mut chain = build_chain(&params, blocks);
    if data_bytes > 0 {
        // Re-mine with data of the requested size so digests cost what they would.
        let mut out = vec![chain[0].clone()];
        for b in &chain[1..] {
            let parent = out.last().expect("genesis");
            let data = vec![b.index as u8; data_bytes];
            out.push(node_svc::chain::testing::mine_child(&params, parent, &data, b.timestamp_ms));
        }
        chain = out;
    }
    let now = p2p_proto::unix_ms_now();
    let headers: Vec<[u8; 92]> = chain.iter().map(|b| b.header().bytes(b.nonce)).collect();

    let t = Instant::now();
    let mut sink = 0u8;
    for h in &headers {
        sink ^= sha2::Sha256::digest(h)[0];
    }
    let raw = t.elapsed();

    let t = Instant::now();
    for pair in chain.windows(2) {
        validate::check_standalone(&pair[1], &params, now).expect("valid");
        validate::check_child(&pair[1], &pair[0]).expect("valid");
    }
    let full = t.elapsed();
    std::hint::black_box(sink);
    let n = (chain.len() - 1) as f64;
    let mut table = Table::new(&["WHAT", "BLOCKS", "TIME", "PER SECOND"]);
    table.row(vec![
        "raw SHA-256 of the 92-byte headers".into(),
        headers.len().to_string(),
        fmt(raw),
        format!("{:.0}", headers.len() as f64 / raw.as_secs_f64()),
    ]);
    table.row(vec![
        format!("full validation ({data_bytes} B data each)"),
        (n as u64).to_string(),
        fmt(full),
        format!("{:.0}", n / full.as_secs_f64()),
    ]);
    println!("block validation vs raw SHA-256 ({bits}-bit difficulty)");
    table.print();
}

fn fmt(d: Duration) -> String {
    format!("{:.1}ms", d.as_secs_f64() * 1000.0)
}

async fn start_node(
    dir: &std::path::Path,
    bootstrap: Option<String>,
    peers: Vec<String>,
    bits: u32,
    ping_ms: u64,
) -> anyhow::Result<(node_svc::RunningNode, CancellationToken)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut config = NodeConfig::new(dir, addr.to_string());
    config.network = network(bits);
    config.bootstrap = bootstrap.into_iter().collect();
    config.peers = peers;
    config.ping_interval = Duration::from_millis(ping_ms);
    config.ping_timeout = Duration::from_secs(2);
    let token = CancellationToken::new();
    let running = node_svc::spawn(listener, config, token.clone()).await?;
    Ok((running, token))
}

async fn wait_for(timeout: Duration, mut check: impl AsyncFnMut() -> bool) -> anyhow::Result<Duration> {
    let start = Instant::now();
    while !check().await {
        anyhow::ensure!(start.elapsed() < timeout, "timed out after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(start.elapsed())
}

/// A fresh node downloading `blocks` blocks from a peer over loopback.
pub async fn sync(blocks: usize, bits: u32) -> anyhow::Result<()> {
    let params = network(bits);
    let chain = build_chain(&params, blocks);
    let dir = tempfile::tempdir()?;
    let (a, a_stop) = start_node(&dir.path().join("a"), None, vec![], bits, 1000).await?;
    let load = Instant::now();
    let verdicts = a.node.chain().accept(chain[1..].to_vec()).await?;
    anyhow::ensure!(verdicts.iter().all(|v| v.is_ok()), "loading the source node failed");
    eprintln!("source node stored {blocks} blocks in {:.1}s", load.elapsed().as_secs_f64());
    let target = a.node.chain().tip().await?;

    let started = Instant::now();
    let (b, b_stop) = start_node(&dir.path().join("b"), None, vec![a.local_addr.to_string()], bits, 100).await?;
    let node: Node = b.node.clone();
    wait_for(Duration::from_secs(1800), async || node.chain().tip().await.is_ok_and(|t| t.hash == target.hash)).await?;
    // From starting the fresh node (open, join, discover) to holding the whole chain.
    let took = started.elapsed();
    println!(
        "sync: a fresh node downloaded {blocks} blocks over loopback in {:.2}s = {:.0} blocks/s (batches of {}, each validated and committed)",
        took.as_secs_f64(),
        blocks as f64 / took.as_secs_f64(),
        NodeConfig::new(".", "x:1").sync_batch
    );
    b_stop.cancel();
    a_stop.cancel();
    drop(node);
    b.join().await?;
    a.join().await?;
    Ok(())
}

/// Time for one block to reach all of N nodes, and the duplicate deliveries it cost.
pub async fn propagation(nodes: usize, rounds: usize, bits: u32) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut bcfg = bootstrap_svc::Config::new(dir.path().join("bootstrap"));
    bcfg.register_per_minute = 0;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let baddr = listener.local_addr()?;
    let btoken = CancellationToken::new();
    let bootstrap = tokio::spawn(bootstrap_svc::run(listener, bcfg, btoken.clone()));
    let mut running = Vec::new();
    for i in 0..nodes {
        running.push(
            start_node(&dir.path().join(format!("n{i}")), Some(format!("http://{baddr}")), vec![], bits, 500).await?,
        );
    }
    let all: Vec<Node> = running.iter().map(|(r, _)| r.node.clone()).collect();
    // Nodes dial up to target_outbound peers each (and answer the ones that
    // dial them), so the network is ready when everyone has that many.
    let want = (nodes - 1).min(NodeConfig::new(".", "x:1").target_outbound);
    let mesh =
        wait_for(Duration::from_secs(120), async || all.iter().all(|n| n.peers().active_count() >= want)).await?;
    eprintln!("{nodes} nodes each with at least {want} active peers after {:.1}s", mesh.as_secs_f64());
    let mut times = Vec::new();
    let mut dups = Vec::new();
    let mut deliveries = Vec::new();
    for r in 0..rounds {
        let before: Vec<_> = all.iter().map(|n| n.stats()).collect();
        let miner = &all[r % nodes];
        let mined = miner.mine(format!("round {r}").into_bytes()).await?;
        let t = Instant::now();
        let hash = mined.block.hash;
        wait_for(Duration::from_secs(60), async || {
            for n in &all {
                if !n.chain().tip().await.is_ok_and(|t| t.hash == hash) {
                    return false;
                }
            }
            true
        })
        .await?;
        // Mining time is excluded: the clock starts once the miner has the block.
        times.push(t.elapsed());
        // Let in-flight forwards land before counting (bounded: each node forwards once).
        let fanout = NodeConfig::new(".", "x:1").gossip_fanout.min(nodes - 1);
        let expected_max = (nodes * fanout) as u64;
        let _ = wait_for(Duration::from_secs(5), async || {
            let got: u64 = all.iter().zip(&before).map(|(n, b)| n.stats().blocks_received - b.blocks_received).sum();
            got >= expected_max
        })
        .await;
        let received: u64 = all.iter().zip(&before).map(|(n, b)| n.stats().blocks_received - b.blocks_received).sum();
        let dup: u64 =
            all.iter().zip(&before).map(|(n, b)| n.stats().duplicates_received - b.duplicates_received).sum();
        deliveries.push(received);
        dups.push(dup);
    }
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "propagation over {nodes} nodes (joined via the bootstrap, gossip fanout {}), {rounds} blocks: median {:.1}ms, max {:.1}ms to reach all; \
         per block {:.1} deliveries of which {:.1} duplicates (minimum possible: {} deliveries, 0 duplicates)",
        NodeConfig::new(".", "x:1").gossip_fanout,
        median.as_secs_f64() * 1000.0,
        times.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
        deliveries.iter().sum::<u64>() as f64 / rounds as f64,
        dups.iter().sum::<u64>() as f64 / rounds as f64,
        nodes - 1
    );
    drop(all);
    for (r, t) in running {
        t.cancel();
        r.join().await?;
    }
    btoken.cancel();
    let _ = bootstrap.await;
    Ok(())
}
