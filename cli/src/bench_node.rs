//! Node benchmarks: validation rate vs raw SHA-256, sync throughput, and
//! block propagation across in-process networks (node-svc's test kit).

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use node_svc::NodeConfig;
use node_svc::chain::testing::extend_with;
use node_svc::chain::{Block, NetworkParams, Origin, validate};
use node_svc::testkit::{TestNet, TestNode, wait_until};
use sha2::Digest;

use crate::output::Table;

/// How often the benchmarks look at their condition.
pub(crate) const POLL: Duration = Duration::from_millis(1);

/// A fixed difficulty: the benchmarks measure the node, not the retargeting.
pub(crate) fn network(bits: u32) -> NetworkParams {
    NetworkParams { name: "bench".into(), difficulty_bits: bits, retarget: false, ..NetworkParams::devnet() }
}

/// A progress bar on stderr for `len` steps of `what`.
pub(crate) fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template("{msg} {wide_bar} {pos}/{len} ({per_sec}, eta {eta})") {
        bar.set_style(style);
    }
    bar.set_message(what.to_string());
    bar
}

/// Mines a chain of `n` blocks at `bits`, each with one transaction carrying
/// `data_bytes` of payload.
fn build_chain(params: &NetworkParams, n: usize, data_bytes: usize) -> Vec<Block> {
    let bar = progress(n as u64, "mining the chain");
    let start_ms = p2p_proto::unix_ms_now() - 3_600_000;
    let data = |height: u64| {
        if data_bytes == 0 { format!("b{height}").into_bytes() } else { vec![(height - 1) as u8; data_bytes] }
    };
    let chain = extend_with(params, &[params.genesis()], n, start_ms, data, |_| bar.inc(1));
    bar.finish_and_clear();
    eprintln!("built a {n}-block chain at {} bits in {:.1}s", params.difficulty_bits, bar.elapsed().as_secs_f64());
    chain
}

/// Full validation of every block against its parent vs hashing the same headers.
pub fn validation(blocks: usize, bits: u32, data_bytes: usize) {
    let params = NetworkParams { max_tx_payload: data_bytes.max(64 * 1024), ..network(bits) };
    let chain = build_chain(&params, blocks, data_bytes);
    let now = p2p_proto::unix_ms_now();
    let genesis = params.genesis().hash;
    let headers: Vec<[u8; 92]> = chain.iter().map(|b| b.header(&genesis).bytes(b.nonce)).collect();
    let bits = node_svc::chain::target::to_compact(params.limit());

    let t = Instant::now();
    let mut sink = 0u8;
    for h in &headers {
        sink ^= sha2::Sha256::digest(h)[0];
    }
    let raw = t.elapsed();

    let t = Instant::now();
    let mut recent = std::collections::VecDeque::with_capacity(11);
    recent.push_back(chain[0].timestamp_ms);
    for pair in chain.windows(2) {
        validate::check_standalone(&pair[1], &params, &genesis, now).expect("valid");
        let ctx = validate::Context {
            bits,
            median_time_past: node_svc::chain::target::median_time_past(recent.make_contiguous()),
        };
        validate::check_child(&pair[1], &pair[0].hash, pair[0].index, &ctx).expect("valid");
        if recent.len() == 11 {
            recent.pop_front();
        }
        recent.push_back(pair[1].timestamp_ms);
    }
    let full = t.elapsed();
    std::hint::black_box(sink);
    let n = (chain.len() - 1) as f64;
    let mut table = Table::new(&["WHAT", "BLOCKS", "TIME", "PER SECOND"]);
    table.row(vec![
        "raw SHA-256 of the 92-byte headers".into(),
        headers.len().to_string(),
        ms(raw),
        format!("{:.0}", headers.len() as f64 / raw.as_secs_f64()),
    ]);
    table.row(vec![
        format!("full validation, one signed transaction each ({data_bytes} B payload; 0: a few bytes)"),
        (n as u64).to_string(),
        ms(full),
        format!("{:.0}", n / full.as_secs_f64()),
    ]);
    println!("block validation vs raw SHA-256 ({}-bit difficulty)", params.difficulty_bits);
    table.print();
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.1}ms", d.as_secs_f64() * 1000.0)
}

pub(crate) fn bench_config(dir: &std::path::Path, addr: std::net::SocketAddr, bits: u32, ping_ms: u64) -> NodeConfig {
    let mut config = NodeConfig::new(dir, addr.to_string());
    config.network = network(bits);
    config.ping_interval = Duration::from_millis(ping_ms);
    config.ping_timeout = Duration::from_secs(2);
    config.plaintext = crate::connect::is_plaintext();
    config
}

/// A fresh node downloading `blocks` blocks from a peer over loopback.
pub async fn sync(blocks: usize, bits: u32) -> anyhow::Result<()> {
    let params = network(bits);
    let chain = build_chain(&params, blocks, 0);
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let a = TestNode::start(|addr| bench_config(dir_a.path(), addr, bits, 1000)).await;
    let load = Instant::now();
    let verdicts = a.node().chain().accept(chain[1..].to_vec(), Origin::Local).await?;
    anyhow::ensure!(verdicts.iter().all(|v| v.is_ok()), "loading the source node failed");
    eprintln!("source node stored {blocks} blocks in {:.1}s", load.elapsed().as_secs_f64());
    let target = a.tip().await;

    let started = Instant::now();
    let peer = a.addr.to_string();
    let b = TestNode::start(|addr| {
        let mut c = bench_config(dir_b.path(), addr, bits, 100);
        c.peers = vec![peer];
        c
    })
    .await;
    wait_until(Duration::from_secs(1800), POLL, || async { (b.tip().await.hash == target.hash).then_some(()) }).await?;
    // From starting the fresh node (open, join, discover) to holding the whole chain.
    let took = started.elapsed();
    println!(
        "sync: a fresh node downloaded {blocks} blocks over loopback in {:.2}s = {:.0} blocks/s (batches of {}, each validated and committed)",
        took.as_secs_f64(),
        blocks as f64 / took.as_secs_f64(),
        b.config.sync_batch
    );
    b.stop().await;
    a.stop().await;
    Ok(())
}

/// `nodes` in-process nodes joined through a bootstrap (node configs from
/// `make`), once each has as many active peers as it dials: the network
/// the propagation benchmarks measure.
pub(crate) async fn mesh(
    nodes: usize,
    bits: u32,
    make: impl Fn(&std::path::Path, std::net::SocketAddr) -> NodeConfig,
) -> anyhow::Result<(TestNet, Vec<node_svc::NodeHandle>)> {
    let plaintext = crate::connect::is_plaintext();
    let tweak = |c: &mut bootstrap_svc::Config| {
        c.network = network(bits).name;
        c.plaintext = plaintext;
    };
    let net = TestNet::launch_with(nodes, tweak, |dir, addr, bootstrap| {
        let mut c = make(dir, addr);
        c.bootstrap = vec![bootstrap.to_string()];
        c
    })
    .await;
    // Nodes dial up to target_outbound peers each (and answer the ones that
    // dial them), so the network is ready when everyone has that many.
    let want = (nodes - 1).min(NodeConfig::new(".", "x:1").target_outbound);
    let all: Vec<_> = net.nodes.iter().map(|n| n.node().clone()).collect();
    let ((), took) = wait_until(Duration::from_secs(120), POLL, || async {
        all.iter().all(|n| n.peers().active_count() >= want).then_some(())
    })
    .await?;
    eprintln!("{nodes} nodes each with at least {want} active peers after {:.1}s", took.as_secs_f64());
    Ok((net, all))
}

/// Time for one block to reach all of N nodes, and what it cost in
/// messages. Timing comes from the chains' events, not polling: the clock
/// starts when the miner's chain has validated the block (the moment it is
/// relayable) and stops at each node's commit of it as its tip.
pub async fn propagation(
    nodes: usize,
    rounds: usize,
    bits: u32,
    plot: Option<std::path::PathBuf>,
    relay: node_svc::relay::RelayConfig,
) -> anyhow::Result<()> {
    use node_svc::chain::ChainEvent;
    let (net, all) = mesh(nodes, bits, |dir, addr| {
        let mut c = bench_config(dir, addr, bits, 500);
        c.relay = relay;
        c
    })
    .await?;
    // Microseconds from 1 us to an hour.
    let mut times = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let mut arrivals_ms: Vec<f64> = Vec::new();
    let mut times_list: Vec<f64> = Vec::new();
    let mut last_nodes: Vec<usize> = Vec::new();
    let mut per_block = Vec::new();
    let bar = progress(rounds as u64, "blocks propagated");
    for r in 0..rounds {
        let before: Vec<_> = all.iter().map(|n| n.stats()).collect();
        let height = all[0].chain().tip().await?.height + 1;
        // One listener per node, subscribed before the block exists.
        let listeners: Vec<_> = all
            .iter()
            .map(|n| {
                let mut events = n.chain().subscribe();
                tokio::spawn(async move {
                    let (mut validated, mut committed) = (None, None);
                    while committed.is_none() {
                        match events.recv().await {
                            Ok(ChainEvent::TipValidated { block, .. }) if block.index == height => {
                                validated.get_or_insert((Instant::now(), block.hash));
                            }
                            Ok(ChainEvent::TipChanged { block, .. }) if block.index >= height => {
                                committed = Some((Instant::now(), block.hash));
                            }
                            Ok(_) => {}
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                            Err(_) => break,
                        }
                    }
                    (validated, committed)
                })
            })
            .collect();
        let miner = r % nodes;
        let mined = all[miner].mine(format!("round {r}").into_bytes()).await?;
        let hash = mined.block.hash;
        let mut seen = Vec::with_capacity(nodes);
        for l in listeners {
            seen.push(tokio::time::timeout(Duration::from_secs(60), l).await??);
        }
        let start =
            seen[miner].0.map(|(t, _)| t).ok_or_else(|| anyhow::anyhow!("the miner never validated its block"))?;
        let (mut last, mut last_node) = (Duration::ZERO, miner);
        for (i, (_, committed)) in seen.iter().enumerate() {
            let (t, h) = committed.ok_or_else(|| anyhow::anyhow!("node {i} never got the block"))?;
            anyhow::ensure!(h == hash, "node {i} moved to another tip");
            if i != miner {
                let d = t.saturating_duration_since(start);
                arrivals_ms.push(d.as_secs_f64() * 1000.0);
                if d > last {
                    (last, last_node) = (d, i);
                }
            }
        }
        last_nodes.push(last_node);
        times.saturating_record(last.as_micros() as u64);
        times_list.push(last.as_secs_f64() * 1000.0);
        // Let in-flight messages (answers, late duplicates) land before counting.
        let total =
            |f: fn(&node_svc::metrics::StatsSnapshot) -> u64| -> u64 { all.iter().map(|n| f(&n.stats())).sum() };
        let activity = || total(|s| s.blocks_received + s.blocks_fetched + s.announcements_received);
        let mut quiet = 0;
        let mut seen_activity = activity();
        let settle = Instant::now();
        while quiet < 5 && settle.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let now = activity();
            quiet = if now == seen_activity { quiet + 1 } else { 0 };
            seen_activity = now;
        }
        let delta = |f: fn(&node_svc::metrics::StatsSnapshot) -> u64| -> u64 {
            all.iter().zip(&before).map(|(n, b)| f(&n.stats()) - f(b)).sum()
        };
        per_block.push([
            delta(|s| s.blocks_received + s.blocks_fetched),
            delta(|s| s.duplicates_received),
            delta(|s| s.blocks_announced),
            delta(|s| s.block_fetches),
            delta(|s| s.relay_dropped),
            delta(|s| s.synced_blocks),
        ]);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let q = |p: f64| times.value_at_quantile(p) as f64 / 1000.0;
    let avg = |from: usize, k: usize| -> f64 {
        let b = &per_block[from.min(per_block.len() - 1)..];
        b.iter().map(|v| v[k]).sum::<u64>() as f64 / b.len() as f64 / nodes as f64
    };
    let eager: f64 = all.iter().map(|n| n.relay().eager_peers().len() as f64).sum::<f64>() / nodes as f64;
    println!(
        "propagation over {nodes} nodes (joined via the bootstrap, relay degree {}, graft wait {}ms, {} initially eager), {rounds} blocks: median {:.1}ms, p99 {:.1}ms, \
         max {:.1}ms to reach all (from relayable at the miner to committed everywhere)",
        NodeConfig::new(".", "x:1").gossip_fanout,
        relay.graft_wait_ms,
        relay.initial_eager,
        q(0.5),
        q(0.99),
        times.max() as f64 / 1000.0,
    );
    println!(
        "per node per block, all blocks: {:.2} full blocks received, {:.3} duplicates, {:.2} announcements sent, {:.3} fetches",
        avg(0, 0),
        avg(0, 1),
        avg(0, 2),
        avg(0, 3)
    );
    println!(
        "relay messages lost (queue full or no link) per block: {:.2}; blocks that came by sync per block: {:.2}",
        avg(0, 4) * nodes as f64,
        avg(0, 5) * nodes as f64
    );
    if rounds > 5 {
        println!(
            "per node per block after the first 5: {:.2} full blocks received, {:.3} duplicates, {:.2} announcements sent, {:.3} fetches; \
             {eager:.1} eager peers per node at the end",
            avg(5, 0),
            avg(5, 1),
            avg(5, 2),
            avg(5, 3)
        );
    }
    let c = all.iter().map(|n| n.relay().counts()).fold(node_svc::relay::RelayCounts::default(), |mut a, c| {
        a.pushes += c.pushes;
        a.announces += c.announces;
        a.fetches += c.fetches;
        a.fetch_timeouts += c.fetch_timeouts;
        a.duplicates += c.duplicates;
        a.prunes += c.prunes;
        a.grafts += c.grafts;
        a.unfed += c.unfed;
        a
    });
    println!(
        "relay decisions in all: {} pushes, {} announcements, {} fetches ({} timed out, {} at once: no pusher expected), {} duplicates seen, {} links pruned, {} grafted",
        c.pushes, c.announces, c.fetches, c.fetch_timeouts, c.unfed, c.duplicates, c.prunes, c.grafts
    );
    if std::env::var_os("P2P_BENCH_DEBUG").is_some() {
        for (i, n) in all.iter().enumerate() {
            let me = n.config().advertise.clone();
            let in_cores = all.iter().filter(|m| m.relay().peers().contains(&me)).count();
            let s = n.stats();
            eprintln!(
                "node {i} {me}: {} relay peers, {} eager, in {in_cores} others' relay sets; synced {} pushed {} fetched {} ann-rx {} ann-tx {} usable {}",
                n.relay().peers().len(),
                n.relay().eager_peers().len(),
                s.synced_blocks,
                s.blocks_received,
                s.blocks_fetched,
                s.announcements_received,
                s.blocks_announced,
                n.peers().gossip_targets(None, usize::MAX).len(),
            );
        }
    }
    let per_block: Vec<String> = times_list.iter().zip(&last_nodes).map(|(t, n)| format!("{t:.0}@{n}")).collect();
    println!("time to all per block (ms @ the last node to get it): {}", per_block.join(" "));
    if let Some(path) = plot {
        let curve = crate::plot::Curve {
            label: format!("bench, {nodes} nodes, {rounds} blocks"),
            arrivals_ms,
            total: (nodes - 1) * rounds,
        };
        crate::plot::write_curve(&path, &format!("block arrival, {nodes} in-process nodes"), curve)?;
    }
    drop(all);
    net.stop().await;
    Ok(())
}

/// Waits until every node's tip is at `height` or above; returns how long.
async fn all_reach(all: &[node_svc::NodeHandle], height: u64) -> anyhow::Result<Duration> {
    let ((), took) = wait_until(Duration::from_secs(120), POLL, || async {
        for n in all {
            if !n.chain().tip().await.is_ok_and(|t| t.height >= height) {
                return None;
            }
        }
        Some(())
    })
    .await?;
    Ok(took)
}

/// Finality across `validators` in-process validator nodes (every node
/// votes; a checkpoint every 5 blocks, voted 1 deep): for each of
/// `checkpoints` checkpoints, once every node has the blocks before it, the
/// time from mining the block that buries the checkpoint deep enough to be
/// voted on until every node holds it final (and until that block reached
/// every node, for comparison), and the vote messages each node sent per
/// checkpoint.
pub async fn finality(validators: usize, checkpoints: usize, bits: u32) -> anyhow::Result<()> {
    use node_svc::chain::finality::FinalityParams;
    use std::sync::atomic::{AtomicU8, Ordering};
    const INTERVAL: u64 = 5;
    const DEPTH: u64 = 1;
    anyhow::ensure!(validators <= 255, "at most 255 validators here (one key seed byte each)");
    let keys: Vec<ed25519_dalek::SigningKey> =
        (1..=validators as u8).map(|i| ed25519_dalek::SigningKey::from_bytes(&[i; 32])).collect();
    let finality = FinalityParams::new(keys.iter().map(|k| k.verifying_key().to_bytes()).collect(), INTERVAL, DEPTH)
        .map_err(anyhow::Error::msg)?;
    let params = NetworkParams { finality, ..network(bits) };
    let next = AtomicU8::new(1);
    let (net, all) = mesh(validators, bits, |dir, addr| {
        // Each node's identity key is the next validator key.
        let seed = next.fetch_add(1, Ordering::SeqCst);
        let _ = std::fs::write(dir.join("node.key"), format!("{}\n", hex::encode([seed; 32])));
        let mut c = bench_config(dir, addr, bits, 500);
        c.network = params.clone();
        c
    })
    .await?;
    anyhow::ensure!(all.iter().all(|n| n.is_validator()), "every node votes");
    let mut from_vote = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let mut block_spread = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let before: Vec<_> = all.iter().map(|n| n.stats()).collect();
    let bar = progress(checkpoints as u64, "checkpoints finalized");
    let mut height = all[0].chain().tip().await?.height;
    for c in 0..checkpoints {
        let miner = &all[c % all.len()];
        let target = (height / INTERVAL + 1) * INTERVAL;
        while height < target + DEPTH {
            if height + 1 == target + DEPTH {
                // Every node has the blocks before the one that makes the
                // checkpoint votable: what follows is one block's
                // propagation and the vote round, not a burst of blocks.
                all_reach(&all, height).await?;
            }
            miner.mine(format!("checkpoint {c} block {height}").into_bytes()).await?;
            height += 1;
        }
        let votable = Instant::now();
        let spread = all_reach(&all, target + DEPTH).await?;
        block_spread.saturating_record(spread.as_micros() as u64);
        let ((), _) = wait_until(Duration::from_secs(120), POLL, || async {
            for n in &all {
                if !n.chain().finalized().await.is_ok_and(|f| f.height >= target) {
                    return None;
                }
            }
            Some(())
        })
        .await?;
        from_vote.saturating_record(votable.elapsed().as_micros() as u64);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let sent: u64 = all.iter().zip(&before).map(|(n, b)| n.stats().vote_messages_sent - b.vote_messages_sent).sum();
    let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    println!(
        "finality with {validators} validators (quorum {}, checkpoint every {INTERVAL} blocks, voted {DEPTH} deep), \
         {checkpoints} checkpoints: from the block that makes a checkpoint votable to final on every node median {:.1}ms, \
         p99 {:.1}ms (that block itself reaches every node in median {:.1}ms, p99 {:.1}ms); {:.1} SendVotes \
         messages sent per node per checkpoint",
        params.finality.quorum(),
        q(&from_vote, 0.5),
        q(&from_vote, 0.99),
        q(&block_spread, 0.5),
        q(&block_spread, 0.99),
        sent as f64 / validators as f64 / checkpoints as f64
    );
    drop(all);
    net.stop().await;
    Ok(())
}
