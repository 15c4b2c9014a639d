//! `p2pctl bench hostile`: the wave-1 attacks, replayed against a running
//! node process, with that process's memory read from /proc before and
//! after each. A measurement, not a test: it prints what happened.

use std::time::{Duration, Instant};

use p2p_proto::admin::MineBlockRequest;
use p2p_proto::node::node_client::NodeClient;
use p2p_proto::node::{Block, GetBlocksRequest};
use tonic::transport::Channel;

use crate::connect;
use crate::output::Table;

/// Resident and peak memory of a process, in MiB (VmRSS, VmHWM).
fn memory(pid: u32) -> anyhow::Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> f64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(f64::NAN)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

fn row(table: &mut Table, what: &str, outcome: String, pid: u32, took: Duration) -> anyhow::Result<()> {
    let (rss, peak) = memory(pid)?;
    table.row(vec![
        what.into(),
        outcome,
        format!("{rss:.1}"),
        format!("{peak:.1}"),
        format!("{:.2}", took.as_secs_f64()),
    ]);
    Ok(())
}

/// Runs the attacks against the node at `node` whose process id is `pid`
/// (mining the chain it needs through the node's `admin` API).
pub async fn run(
    node: &str,
    admin: &str,
    pid: u32,
    messages: usize,
    message_bytes: usize,
    blocks: usize,
    streams: usize,
) -> anyhow::Result<()> {
    let channel = connect::channel("node", node).await?;
    let client = NodeClient::new(channel).max_encoding_message_size(usize::MAX).max_decoding_message_size(usize::MAX);
    let mut table = Table::new(&["attack", "outcome", "RSS MiB", "peak MiB", "secs"]);
    row(&mut table, "(before)", String::new(), pid, Duration::ZERO)?;

    // 1. One BroadcastBlockchain stream of huge, unvalidated messages.
    let started = Instant::now();
    let junk = Block {
        transactions: vec![p2p_proto::node::Transaction { payload: vec![0xAB; message_bytes], ..Default::default() }],
        prev_hash: vec![0; 32],
        hash: vec![0; 32],
        ..Default::default()
    };
    let stream = futures::stream::iter((0..messages).map(move |i| Block { index: i as u64 + 1, ..junk.clone() }));
    let outcome = match client.clone().broadcast_blockchain(stream).await {
        Ok(r) => format!("accepted?! {}", r.into_inner().message),
        Err(s) => format!("{:?}", s.code()),
    };
    row(
        &mut table,
        &format!("BroadcastBlockchain: {messages} x {} MiB", message_bytes >> 20),
        outcome,
        pid,
        started.elapsed(),
    )?;

    // 2. A chain of large blocks, then many GetBlocks streams nobody reads.
    let started = Instant::now();
    let mut mined = 0;
    let mut miner = connect::admin(admin, None, None).await?;
    for i in 0..blocks {
        let data = vec![(i % 251) as u8; 60 * 1024];
        if miner.mine_block(MineBlockRequest { data }).await.is_ok() {
            mined += 1;
        }
    }
    row(&mut table, &format!("MineBlock x {blocks} (60 KiB each)"), format!("{mined} mined"), pid, started.elapsed())?;
    let started = Instant::now();
    let (mut open, mut refused) = (Vec::new(), 0);
    for i in 0..streams {
        // A few connections, so both the per-connection and per-client caps show.
        let c: NodeClient<Channel> = if i % 50 == 0 || open.is_empty() {
            NodeClient::new(connect::channel("node", node).await?)
        } else {
            client.clone()
        };
        match c.clone().get_blocks(GetBlocksRequest { from_height: 1, ..Default::default() }).await {
            Ok(s) => open.push(s),
            Err(_) => refused += 1,
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    row(
        &mut table,
        &format!("GetBlocks x {streams}, never read"),
        format!("{} open, {refused} refused", open.len()),
        pid,
        started.elapsed(),
    )?;
    drop(open);
    table.print();
    Ok(())
}
