//! `p2pctl sim`: the seeded discrete-event simulator of block relay
//! ([`node_svc::relay::sim`]), which runs the node's relay core unchanged.

use std::path::PathBuf;

use clap::Subcommand;
use node_svc::relay::RelayConfig;
use node_svc::relay::sim::{self, SimConfig};

#[derive(Debug, Subcommand)]
pub enum SimCmd {
    /// Block propagation over a random topology: time to reach every node
    /// (p50/p99), duplicates and messages per node. Same seed, same output.
    Propagation {
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        /// Each node links to at least this many others.
        #[arg(long, default_value_t = 8)]
        degree: usize,
        /// One-way link latency (each link draws 0.5x to 1.5x of it).
        #[arg(long, default_value_t = 50.0)]
        latency_ms: f64,
        #[arg(long, default_value_t = 20)]
        blocks: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Time a node takes to validate a new block.
        #[arg(long, default_value_t = 1000)]
        validate_us: u64,
        #[arg(long, default_value_t = 1000)]
        block_bytes: u64,
        /// Link bandwidth (a full block's transfer time adds to its latency).
        #[arg(long, default_value_t = 100)]
        bandwidth_mbit: u64,
        /// How long an announced block waits for an expected push before it
        /// is fetched (default: 10 link latencies; shorter is faster and
        /// grows more redundant links, so more duplicates).
        #[arg(long)]
        graft_wait_ms: Option<u64>,
        /// Peers pushed to in full at the start.
        #[arg(long, default_value_t = 3)]
        initial_eager: usize,
        /// Blocks at the start not counted in the "after warm-up" figures.
        #[arg(long, default_value_t = 5)]
        warmup: usize,
        /// Draw the arrival curve (fraction of nodes vs time) as SVG.
        #[arg(long)]
        plot: Option<PathBuf>,
    },
}

pub fn run(cmd: SimCmd) -> anyhow::Result<()> {
    let SimCmd::Propagation {
        nodes,
        degree,
        latency_ms,
        blocks,
        seed,
        validate_us,
        block_bytes,
        bandwidth_mbit,
        graft_wait_ms,
        initial_eager,
        warmup,
        plot,
    } = cmd;
    anyhow::ensure!(nodes >= 2 && blocks >= 1, "need at least 2 nodes and 1 block");
    let cfg = SimConfig {
        nodes,
        degree,
        latency_us: (latency_ms * 1000.0) as u64,
        validate_us,
        block_bytes,
        bandwidth_bytes_per_ms: (bandwidth_mbit * 1_000_000 / 8 / 1000).max(1),
        blocks,
        seed,
        relay: RelayConfig {
            graft_wait_ms: graft_wait_ms.unwrap_or((latency_ms * 10.0) as u64),
            initial_eager,
            ..RelayConfig::default()
        },
        timeout_ms: 60_000,
    };
    let started = std::time::Instant::now();
    let report = sim::run(&cfg);
    let mut t: Vec<u64> = report.times_to_all_us();
    t.sort_unstable();
    let q = |p: f64| -> f64 {
        if t.is_empty() {
            return f64::NAN;
        }
        let i = ((t.len() as f64 * p).ceil() as usize).clamp(1, t.len()) - 1;
        t[i] as f64 / 1000.0
    };
    println!(
        "simulated {nodes} nodes ({} links, degree >= {degree}), {latency_ms}ms links, graft wait {}ms, seed {seed}, {blocks} blocks in {:.2}s: \
         time to all p50 {:.1}ms, p99 {:.1}ms, max {:.1}ms; {} blocks stuck",
        report.edges,
        cfg.relay.graft_wait_ms,
        started.elapsed().as_secs_f64(),
        q(0.5),
        q(0.99),
        t.last().map(|v| *v as f64 / 1000.0).unwrap_or(f64::NAN),
        report.stuck()
    );
    let line = |label: &str, from: usize| {
        println!(
            "per node per block, {label}: {:.2} full blocks, {:.3} duplicates, {:.2} announcements, {:.3} fetches",
            report.per_node(from, |b| b.full_blocks),
            report.per_node(from, |b| b.duplicates),
            report.per_node(from, |b| b.announces),
            report.per_node(from, |b| b.fetches),
        )
    };
    line("all blocks", 0);
    if blocks > warmup {
        line(&format!("after the first {warmup}"), warmup);
    }
    if let Some(path) = plot {
        let arrivals_ms = report.blocks.iter().flat_map(|b| b.arrivals_us.iter().map(|u| *u as f64 / 1000.0)).collect();
        let curve = crate::plot::Curve {
            label: format!("simulated, {nodes} nodes, {latency_ms}ms links"),
            arrivals_ms,
            total: (nodes - 1) * blocks,
        };
        crate::plot::write_curve(&path, &format!("block arrival, {nodes} simulated nodes"), curve)?;
    }
    Ok(())
}
