//! Transaction benchmarks: what one node accepts per second (signatures
//! included) against raw ed25519 verification, and what gossiping a
//! transaction costs across an in-process network.

use std::time::{Duration, Instant};

use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use futures::StreamExt;
use hdrhistogram::Histogram;
use node_svc::NodeConfig;
use node_svc::chain::{Hash, Transaction};
use node_svc::convert::tx_to_proto;
use node_svc::mempool::Source;
use node_svc::testkit::{TestNode, wait_until};

use crate::bench_node::{POLL, bench_config, mesh, ms, progress};
use crate::output::Table;

/// Payload bytes of every benchmark transaction.
const PAYLOAD: usize = 64;

/// `count` transactions spread over `senders` keys (nonces 1, 2, … each),
/// signed for `genesis`.
fn signed(genesis: &Hash, count: usize, senders: usize) -> Vec<Transaction> {
    let keys: Vec<SigningKey> = (0..senders).map(|i| SigningKey::from_bytes(&seed(i))).collect();
    let now = p2p_proto::unix_ms_now();
    let bar = progress(count as u64, "signing transactions");
    let txs = (0..count)
        .map(|i| {
            bar.inc(1);
            let nonce = (i / senders) as u64 + 1;
            Transaction::sign(&keys[i % senders], genesis, nonce, now, vec![(i % 251) as u8; PAYLOAD])
        })
        .collect();
    bar.finish_and_clear();
    txs
}

fn seed(i: usize) -> [u8; 32] {
    let mut s = [7u8; 32];
    s[..8].copy_from_slice(&(i as u64).to_be_bytes());
    s
}

fn config_for(dir: &std::path::Path, addr: std::net::SocketAddr, count: usize, senders: usize) -> NodeConfig {
    let mut c = bench_config(dir, addr, 8, 500);
    c.mempool.max_count = count.max(c.mempool.max_count);
    c.mempool.max_bytes = c.mempool.max_bytes.max(count * (PAYLOAD + 200));
    c.mempool.max_per_sender = c.mempool.max_per_sender.max(count.div_ceil(senders) + 1);
    c
}

/// Transactions/s one node accepts over gRPC (each checked, signature
/// included, and persisted before the answer) against raw ed25519
/// verification of the same transactions on one core.
pub async fn accept(count: usize, senders: usize, concurrency: usize, connections: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = TestNode::start(|addr| config_for(dir.path(), addr, count, senders)).await;
    let genesis = node.node().chain().genesis_hash();
    let txs = signed(&genesis, count, senders);

    // Raw verification: the signature alone, message bytes prepared beforehand.
    let prepared: Vec<(VerifyingKey, Vec<u8>, Signature)> = txs
        .iter()
        .map(|t| {
            let key = VerifyingKey::from_bytes(&t.sender).expect("keys made here are valid");
            (key, t.signing_bytes(&genesis), Signature::from_bytes(&t.signature))
        })
        .collect();
    let started = Instant::now();
    for (key, msg, sig) in &prepared {
        key.verify_strict(msg, sig).map_err(|e| anyhow::anyhow!("a signature made here failed: {e}"))?;
    }
    let raw = started.elapsed();
    // The transaction's own check: encoding, key decoding, signature.
    let started = Instant::now();
    for t in &txs {
        t.check(&genesis, 1024).map_err(|e| anyhow::anyhow!("a transaction made here failed: {e}"))?;
    }
    let checked = started.elapsed();

    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(node.client().await);
    }
    let bar = progress(count as u64, "transactions submitted");
    // Nonces of a sender must arrive in order: each sender's transactions
    // go one after another, the senders side by side.
    let mut lanes: Vec<Vec<Transaction>> = vec![Vec::new(); senders];
    for (i, t) in txs.into_iter().enumerate() {
        lanes[i % senders].push(t);
    }
    let mut latencies = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let (mut accepted, mut first_error) = (0u64, None);
    let started = Instant::now();
    let mut results = futures::stream::iter(lanes.into_iter().enumerate())
        .map(|(i, lane)| {
            let mut client = clients[i % clients.len()].clone();
            let bar = bar.clone();
            async move {
                let mut out = Vec::with_capacity(lane.len());
                for t in lane {
                    let sent = Instant::now();
                    let r = client.submit_transaction(tx_to_proto(&t)).await;
                    out.push((sent.elapsed(), r.map(|_| ())));
                    bar.inc(1);
                }
                out
            }
        })
        .buffer_unordered(concurrency);
    while let Some(lane) = results.next().await {
        for (took, r) in lane {
            match r {
                Ok(()) => {
                    accepted += 1;
                    latencies.saturating_record(took.as_micros() as u64);
                }
                Err(e) => {
                    first_error.get_or_insert_with(|| format!("{:?}: {}", e.code(), e.message()));
                }
            }
        }
    }
    let took = started.elapsed();
    bar.finish_and_clear();
    let pending = node.node().mempool().len();

    let rate = |n: usize, d: Duration| format!("{:.0}", n as f64 / d.as_secs_f64());
    let mut table = Table::new(&["what", "transactions", "time", "per second"]);
    table.row(vec!["raw ed25519 verify_strict, one core".into(), count.to_string(), ms(raw), rate(count, raw)]);
    table.row(vec![
        "Transaction::check (encoding + signature), one core".into(),
        count.to_string(),
        ms(checked),
        rate(count, checked),
    ]);
    table.row(vec![
        format!("SubmitTransaction accepted by one node ({senders} senders at once, {connections} connections)"),
        accepted.to_string(),
        ms(took),
        rate(accepted as usize, took),
    ]);
    println!("transactions accepted by one node vs raw signature verification ({PAYLOAD}-byte payloads)");
    table.print();
    println!(
        "SubmitTransaction latency: p50 {:.2}ms, p99 {:.2}ms; {pending} pending in the mempool afterwards",
        latencies.value_at_quantile(0.5) as f64 / 1000.0,
        latencies.value_at_quantile(0.99) as f64 / 1000.0,
    );
    if let Some(e) = first_error {
        println!("{} refused; the first: {e}", count as u64 - accepted);
    }
    node.stop().await;
    Ok(())
}

/// What gossiping a transaction costs across `nodes` nodes: time for one
/// to reach every mempool, and the announcements and bodies each costs;
/// then a burst of `burst` transactions at once.
pub async fn gossip(nodes: usize, rounds: usize, burst: usize) -> anyhow::Result<()> {
    let senders = 64;
    let total = rounds + burst;
    let (net, all) = mesh(nodes, 8, |dir, addr| config_for(dir, addr, total, senders)).await?;
    let genesis = all[0].chain().genesis_hash();
    let mut txs = signed(&genesis, total, senders).into_iter();
    let tx_bytes = PAYLOAD + node_svc::chain::tx::TX_OVERHEAD;
    let stats = || all.iter().map(|n| n.stats()).collect::<Vec<_>>();
    let delta = |before: &[node_svc::metrics::StatsSnapshot], f: fn(&node_svc::metrics::StatsSnapshot) -> u64| -> u64 {
        all.iter().zip(before).map(|(n, b)| f(&n.stats()) - f(b)).sum()
    };
    let everywhere = |ids: Vec<Hash>| {
        let all = &all;
        async move { all.iter().all(|n| ids.iter().all(|id| n.mempool().contains(id))).then_some(()) }
    };

    // One at a time, each from a different node.
    let mut times = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let before = stats();
    let bar = progress(rounds as u64, "transactions gossiped one at a time");
    for r in 0..rounds {
        let t = txs.next().expect("enough transactions were signed");
        let id = t.id(&genesis);
        let verdict = all[r % nodes].mempool().submit(vec![t], Source::Client).await;
        anyhow::ensure!(verdict.iter().all(|v| v.is_ok()), "a benchmark transaction was refused: {verdict:?}");
        let ((), took) = wait_until(Duration::from_secs(60), POLL, || everywhere(vec![id])).await?;
        times.saturating_record(took.as_micros() as u64);
        bar.inc(1);
    }
    bar.finish_and_clear();
    // Let the last announcements land before counting.
    let settle = |before: Vec<node_svc::metrics::StatsSnapshot>| async move {
        let mut last = (u64::MAX, u64::MAX);
        let _ = wait_until(Duration::from_secs(5), Duration::from_millis(200), || {
            let now = (delta(&before, |s| s.tx_announced), delta(&before, |s| s.tx_bodies_received));
            let same = now == last;
            last = now;
            async move { same.then_some(()) }
        })
        .await;
        (delta(&before, |s| s.tx_announced), delta(&before, |s| s.tx_bodies_received))
    };
    let (ids, bodies) = settle(before).await;
    let q = |p: f64| times.value_at_quantile(p) as f64 / 1000.0;
    println!(
        "transaction gossip over {nodes} nodes, {rounds} transactions one at a time: median {:.1}ms, p99 {:.1}ms to reach every mempool; \
         per transaction {:.1} ids announced and {:.2} bodies delivered (minimum {}): about {:.1} KB on the wire ({tx_bytes}-byte transaction, 32-byte ids)",
        q(0.5),
        q(0.99),
        ids as f64 / rounds as f64,
        bodies as f64 / rounds as f64,
        nodes - 1,
        (ids * 32 + bodies * tx_bytes as u64) as f64 / rounds as f64 / 1000.0,
    );

    if burst > 0 {
        let batch: Vec<Transaction> = txs.by_ref().take(burst).collect();
        let ids: Vec<Hash> = batch.iter().map(|t| t.id(&genesis)).collect();
        let before = stats();
        let started = Instant::now();
        let verdicts = all[0].mempool().submit(batch, Source::Client).await;
        anyhow::ensure!(verdicts.iter().all(|v| v.is_ok()), "a benchmark transaction was refused");
        wait_until(Duration::from_secs(300), Duration::from_millis(5), || everywhere(ids.clone())).await?;
        let took = started.elapsed();
        let (announced, bodies) = settle(before).await;
        println!(
            "a burst of {burst} transactions at one node reached all {nodes} mempools in {:.0}ms ({:.0} transactions/s network-wide); \
             per transaction {:.1} ids announced and {:.2} bodies delivered",
            took.as_secs_f64() * 1000.0,
            burst as f64 / took.as_secs_f64(),
            announced as f64 / burst as f64,
            bodies as f64 / burst as f64,
        );
    }
    drop(all);
    net.stop().await;
    Ok(())
}
