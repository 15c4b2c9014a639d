//! `p2pctl node …` and `p2pctl network status`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use futures::StreamExt;
use p2p_proto::admin::{
    AddPeerRequest, BanPeerRequest, ListConnectionsRequest, MineBlockRequest, RemovePeerRequest, UnbanPeerRequest,
};
use p2p_proto::bootstrap::GetPeersRequest as BootstrapPeersRequest;
use p2p_proto::bootstrap::bootstrap_client::BootstrapClient;
use p2p_proto::node::node_client::NodeClient;
use p2p_proto::node::{
    Block, GetBlocksRequest, GetPeersRequest, GetStatusRequest, GetStatusResponse, PeerSource, PeerState,
    SendBlockRequest,
};
use serde_json::json;

use p2p_proto::work::from_bytes as work_from_bytes;

use crate::connect;
use crate::output::{Table, print_json, relative};

#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// Height, tip, work, peers and identity of a node.
    Status,
    /// Mine a block carrying DATA on the node's tip (admin API).
    Mine { data: String },
    /// The node's peers with the ids their TLS handshakes proved (admin API).
    Connections,
    /// Ban a peer by node id or address (admin API).
    Ban {
        peer: String,
        /// Seconds; 0 means the node's default (10 minutes).
        #[arg(long, default_value_t = 0)]
        secs: u32,
    },
    /// Lift a ban (admin API).
    Unban { peer: String },
    /// Keep a peer, `[NODE_ID@]host:port`, whatever the bootstrap says (admin API).
    AddPeer { peer: String },
    /// Forget a peer (admin API).
    RemovePeer { address: String },
    /// Start or stop mining continuously (admin API).
    Mining {
        #[arg(value_parser = ["start", "stop"])]
        action: String,
    },
    /// List main-chain blocks.
    Blocks {
        /// First height to show.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Most blocks to show.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// The node's peer table with states.
    Peers,
    /// Send a block read from a JSON file (the shape `node blocks --json` prints).
    SendBlock { file: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum NetworkCmd {
    /// Ask the bootstrap for peers, then every node for its status.
    Status,
    /// Draw the live topology: nodes from the bootstrap, edges from each
    /// node's active peers, colour by tip (green: the tip with the most
    /// work; orange: another; grey: unreachable).
    Graph {
        /// dot (Graphviz source), svg (drawn in-process by layout-rs), or
        /// png (needs Graphviz's `dot` installed).
        #[arg(long, default_value = "dot", value_parser = ["dot", "svg", "png"])]
        format: String,
        /// Write here instead of stdout.
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
    },
}

fn short(hash: &[u8]) -> String {
    if hash.is_empty() { "-".into() } else { hex::encode(&hash[..hash.len().min(8)]) }
}

pub fn block_json(b: &Block) -> serde_json::Value {
    json!({
        "index": b.index, "timestamp_unix_ms": b.timestamp_unix_ms,
        "prev_hash": hex::encode(&b.prev_hash), "nonce": b.nonce,
        "bits": format!("{:#010x}", b.bits), "hash": hex::encode(&b.hash),
        "transactions": b.transactions.iter().map(crate::tx::tx_json).collect::<Vec<_>>(),
    })
}

fn block_from_json(v: &serde_json::Value) -> anyhow::Result<Block> {
    let field = |name: &str| v.get(name).with_context(|| format!("the block JSON has no {name:?} field"));
    let num = |name: &str| -> anyhow::Result<u64> {
        field(name)?.as_u64().with_context(|| format!("{name:?} must be a number"))
    };
    let hexf = |name: &str| -> anyhow::Result<Vec<u8>> {
        hex::decode(field(name)?.as_str().with_context(|| format!("{name:?} must be a hex string"))?)
            .with_context(|| format!("{name:?} is not valid hex"))
    };
    let bits = field("bits")?.as_str().context("\"bits\" must be a hex string like 0x1f00ffff")?;
    let bits = u32::from_str_radix(bits.trim_start_matches("0x"), 16).context("\"bits\" is not a hex u32")?;
    let transactions = field("transactions")?
        .as_array()
        .context("\"transactions\" must be a list")?
        .iter()
        .map(crate::tx::tx_from_json)
        .collect::<anyhow::Result<_>>()?;
    Ok(Block {
        index: num("index")?,
        timestamp_unix_ms: num("timestamp_unix_ms")?,
        prev_hash: hexf("prev_hash")?,
        nonce: num("nonce")?,
        bits,
        hash: hexf("hash")?,
        transactions,
    })
}

/// The final checkpoint as a person reads it.
fn finality_cell(s: &GetStatusResponse) -> String {
    if s.validator_count == 0 {
        return "off (no validators in genesis)".into();
    }
    let role = if s.validator { ", this node votes" } else { "" };
    if s.finalized_height == 0 {
        format!("nothing yet ({} validators{role})", s.validator_count)
    } else {
        format!("height {} {} ({} validators{role})", s.finalized_height, short(&s.finalized_hash), s.validator_count)
    }
}

fn status_json(s: &GetStatusResponse) -> serde_json::Value {
    json!({
        "node_id": s.node_id, "address": s.address, "network": s.network, "height": s.height,
        "tip_hash": hex::encode(&s.tip_hash), "cumulative_work": work_from_bytes(&s.cumulative_work).to_string(),
        "genesis_hash": hex::encode(&s.genesis_hash), "bits": format!("{:#010x}", s.bits),
        "target_block_ms": s.target_block_ms, "mempool_count": s.mempool_count, "mempool_bytes": s.mempool_bytes,
        "mining": s.mining,
        "finalized_height": s.finalized_height, "finalized_hash": hex::encode(&s.finalized_hash),
        "validator_count": s.validator_count, "validator": s.validator,
        "peer_count": s.peer_count, "orphan_count": s.orphan_count, "version": s.version,
    })
}

/// Where and how to reach a node's admin API.
#[derive(Debug, Clone)]
pub struct AdminOpts {
    pub endpoint: String,
    pub token: Option<String>,
    pub data_dir: Option<PathBuf>,
}

/// A node's admin API by default: the node's host, its port + 100.
pub fn default_admin(node: &str) -> String {
    let address = p2p_proto::dial::Target::parse(node).map(|t| t.address).unwrap_or_else(|_| node.to_string());
    match p2p_proto::address::PeerAddress::parse(&address) {
        Ok(mut a) if a.port <= u16::MAX - 100 => {
            a.port += 100;
            a.to_string()
        }
        _ => address,
    }
}

pub async fn run(endpoint: &str, admin: &AdminOpts, cmd: NodeCmd, json_out: bool) -> anyhow::Result<()> {
    if is_admin(&cmd) {
        return run_admin(admin, cmd, json_out).await;
    }
    let mut client = NodeClient::new(connect::channel("node", endpoint).await?).max_decoding_message_size(16 << 20);
    match cmd {
        NodeCmd::Status => {
            let s = client.get_status(GetStatusRequest {}).await.map_err(connect::status)?.into_inner();
            if json_out {
                print_json(&status_json(&s));
            } else {
                let mut t = Table::new(&["FIELD", "VALUE"]);
                for (k, v) in [
                    ("node id", s.node_id.clone()),
                    ("address", s.address.clone()),
                    ("network", s.network.clone()),
                    ("next target", format!("{:#010x} (block time {} ms)", s.bits, s.target_block_ms)),
                    ("height", s.height.to_string()),
                    ("tip", hex::encode(&s.tip_hash)),
                    ("cumulative work", work_from_bytes(&s.cumulative_work).to_string()),
                    ("genesis", hex::encode(&s.genesis_hash)),
                    ("active peers", s.peer_count.to_string()),
                    ("mempool", format!("{} transactions, {} bytes", s.mempool_count, s.mempool_bytes)),
                    ("mining", if s.mining { "continuously".into() } else { "on demand".into() }),
                    ("orphans", s.orphan_count.to_string()),
                    ("finalized", finality_cell(&s)),
                    ("version", s.version.clone()),
                ] {
                    t.row(vec![k.into(), v]);
                }
                t.print();
            }
        }
        NodeCmd::Blocks { from, limit } => {
            let mut stream = client
                .get_blocks(GetBlocksRequest { from_height: from, locator: vec![], limit, max_bytes: 0 })
                .await
                .map_err(connect::status)?
                .into_inner();
            let mut blocks = Vec::new();
            while let Some(b) = stream.next().await {
                blocks.push(b.map_err(connect::status)?);
            }
            if json_out {
                print_json(&json!(blocks.iter().map(block_json).collect::<Vec<_>>()));
            } else {
                let mut t = Table::new(&["HEIGHT", "HASH", "PREV", "TIME", "TXS", "FIRST PAYLOAD"]);
                for b in &blocks {
                    let first = b.transactions.first().map(|t| t.payload.as_slice()).unwrap_or_default();
                    let mut data = String::from_utf8_lossy(first).into_owned();
                    if data.chars().count() > 40 {
                        data = data.chars().take(39).collect::<String>() + "…";
                    }
                    t.row(vec![
                        b.index.to_string(),
                        short(&b.hash),
                        short(&b.prev_hash),
                        relative(b.timestamp_unix_ms),
                        b.transactions.len().to_string(),
                        data,
                    ]);
                }
                t.print();
            }
        }
        NodeCmd::Peers => {
            let peers =
                client.get_peers(GetPeersRequest { limit: 0 }).await.map_err(connect::status)?.into_inner().peers;
            if json_out {
                print_json(&json!(
                    peers
                        .iter()
                        .map(|p| json!({
                            "address": p.address, "node_id": p.node_id, "state": p.state().as_str_name(),
                            "source": p.source().as_str_name(), "last_seen_unix_ms": p.last_seen_unix_ms,
                            "consecutive_failures": p.consecutive_failures, "best_height": p.best_height,
                            "best_tip_hash": hex::encode(&p.best_tip_hash), "score": p.score,
                        }))
                        .collect::<Vec<_>>()
                ));
            } else {
                let mut t =
                    Table::new(&["ADDRESS", "NODE ID", "STATE", "SOURCE", "LAST SEEN", "FAILS", "HEIGHT", "SCORE"]);
                for p in &peers {
                    t.row(vec![
                        p.address.clone(),
                        p.node_id.chars().take(16).collect(),
                        state_name(p.state()).into(),
                        source_name(p.source()).into(),
                        relative(p.last_seen_unix_ms),
                        p.consecutive_failures.to_string(),
                        p.best_height.to_string(),
                        p.score.to_string(),
                    ]);
                }
                t.print();
            }
        }
        NodeCmd::Mine { .. }
        | NodeCmd::Connections
        | NodeCmd::Ban { .. }
        | NodeCmd::Unban { .. }
        | NodeCmd::AddPeer { .. }
        | NodeCmd::RemovePeer { .. }
        | NodeCmd::Mining { .. } => unreachable!("admin commands are handled by run_admin"),
        NodeCmd::SendBlock { file } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
            // Accept a single block or the first of a `node blocks --json` list.
            let v = v.as_array().and_then(|a| a.first()).unwrap_or(&v);
            let block = block_from_json(v)?;
            let r = client
                .send_block(SendBlockRequest { block: Some(block), sender: None })
                .await
                .map_err(connect::status)?
                .into_inner();
            if json_out {
                print_json(
                    &json!({"outcome": r.outcome().as_str_name(), "message": r.message, "height": r.height, "tip_hash": hex::encode(&r.tip_hash)}),
                );
            } else {
                println!("{}: {} (height {})", r.outcome().as_str_name(), r.message, r.height);
            }
        }
    }
    Ok(())
}

fn is_admin(cmd: &NodeCmd) -> bool {
    matches!(
        cmd,
        NodeCmd::Mine { .. }
            | NodeCmd::Connections
            | NodeCmd::Ban { .. }
            | NodeCmd::Unban { .. }
            | NodeCmd::AddPeer { .. }
            | NodeCmd::RemovePeer { .. }
            | NodeCmd::Mining { .. }
    )
}

/// The commands served by the node's admin API.
async fn run_admin(admin: &AdminOpts, cmd: NodeCmd, json_out: bool) -> anyhow::Result<()> {
    let mut client = connect::admin(&admin.endpoint, admin.token.as_deref(), admin.data_dir.as_deref()).await?;
    match cmd {
        NodeCmd::Mine { data } => {
            let r = client
                .mine_block(MineBlockRequest { data: data.into_bytes() })
                .await
                .map_err(connect::status)?
                .into_inner();
            let outcome = r.outcome().as_str_name();
            let b = r.block.context("the node returned no block")?;
            if json_out {
                print_json(
                    &json!({"block": block_json(&b), "outcome": outcome, "attempts": r.attempts, "elapsed_ms": r.elapsed_ms}),
                );
            } else {
                println!(
                    "mined block {} {} ({} attempts, {} ms): {}",
                    b.index,
                    hex::encode(&b.hash),
                    r.attempts,
                    r.elapsed_ms,
                    outcome
                );
            }
        }
        NodeCmd::Connections => {
            let r = client.list_connections(ListConnectionsRequest {}).await.map_err(connect::status)?.into_inner();
            if json_out {
                print_json(&json!({
                    "node_id": r.node_id,
                    "connections": r.connections.iter().map(|c| json!({
                        "address": c.address, "node_id": c.node_id, "verified": c.verified,
                        "state": c.state().as_str_name(), "source": c.source().as_str_name(),
                        "last_seen_unix_ms": c.last_seen_unix_ms, "score": c.score,
                        "banned_until_unix_ms": c.banned_until_unix_ms, "best_height": c.best_height,
                    })).collect::<Vec<_>>(),
                }));
            } else {
                let mut t =
                    Table::new(&["ADDRESS", "NODE ID", "PROVEN", "STATE", "SOURCE", "LAST SEEN", "HEIGHT", "SCORE"]);
                for c in &r.connections {
                    t.row(vec![
                        if c.address.is_empty() { "-".into() } else { c.address.clone() },
                        if c.node_id.is_empty() { "-".into() } else { c.node_id.clone() },
                        if c.verified { "yes".into() } else { "no".into() },
                        state_name(c.state()).into(),
                        source_name(c.source()).into(),
                        relative(c.last_seen_unix_ms),
                        c.best_height.to_string(),
                        c.score.to_string(),
                    ]);
                }
                t.print();
                println!("this node: {}", r.node_id);
            }
        }
        NodeCmd::Ban { peer, secs } => {
            let r = client
                .ban_peer(BanPeerRequest { peer, duration_secs: secs })
                .await
                .map_err(connect::status)?
                .into_inner();
            println!("{}", r.message);
        }
        NodeCmd::Unban { peer } => {
            let r = client.unban_peer(UnbanPeerRequest { peer: peer.clone() }).await.map_err(connect::status)?;
            println!(
                "{}",
                if r.into_inner().unbanned { format!("{peer} unbanned") } else { format!("{peer} was not banned") }
            );
        }
        NodeCmd::AddPeer { peer } => {
            let r = client.add_peer(AddPeerRequest { peer }).await.map_err(connect::status)?.into_inner();
            println!("{}", r.message);
        }
        NodeCmd::RemovePeer { address } => {
            let r =
                client.remove_peer(RemovePeerRequest { address: address.clone() }).await.map_err(connect::status)?;
            println!(
                "{}",
                if r.into_inner().removed { format!("{address} removed") } else { format!("{address} was not a peer") }
            );
        }
        NodeCmd::Mining { action } => {
            let r = if action == "start" {
                client.start_mining(p2p_proto::admin::StartMiningRequest {}).await
            } else {
                client.stop_mining(p2p_proto::admin::StopMiningRequest {}).await
            }
            .map_err(connect::status)?
            .into_inner();
            if json_out {
                print_json(&json!({"mining": r.mining, "blocks_found": r.blocks_found}));
            } else {
                println!(
                    "mining {}; {} blocks found so far",
                    if r.mining { "continuously" } else { "stopped" },
                    r.blocks_found
                );
            }
        }
        _ => unreachable!("node commands are handled by run"),
    }
    Ok(())
}

fn state_name(s: PeerState) -> &'static str {
    match s {
        PeerState::Connecting => "connecting",
        PeerState::Active => "active",
        PeerState::Failing => "failing",
        PeerState::Banned => "banned",
        PeerState::Unspecified => "?",
    }
}

fn source_name(s: PeerSource) -> &'static str {
    match s {
        PeerSource::Bootstrap => "bootstrap",
        PeerSource::PeerExchange => "exchange",
        PeerSource::Inbound => "inbound",
        PeerSource::Configured => "configured",
        PeerSource::Cached => "cached",
        PeerSource::Unspecified => "?",
    }
}

/// `p2pctl network status`.
pub async fn network(bootstrap: &str, cmd: NetworkCmd, json_out: bool) -> anyhow::Result<()> {
    match cmd {
        NetworkCmd::Status => network_status(bootstrap, json_out).await,
        NetworkCmd::Graph { format, output } => network_graph(bootstrap, &format, output).await,
    }
}

/// Every registered node, as `id@address` where the registration is key-bound.
async fn registered(bootstrap: &str) -> anyhow::Result<Vec<String>> {
    let mut client = BootstrapClient::new(connect::channel("bootstrap", bootstrap).await?);
    let mut addresses = Vec::new();
    let mut token = String::new();
    loop {
        let r = client
            .get_peers(BootstrapPeersRequest { limit: 1000, page_token: token.clone(), ..Default::default() })
            .await
            .map_err(connect::status)?
            .into_inner();
        // Each node must prove the id it registered with.
        addresses.extend(
            r.peers
                .into_iter()
                .map(|p| if p.node_id.is_empty() { p.address } else { format!("{}@{}", p.node_id, p.address) }),
        );
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
    }
    Ok(addresses)
}

async fn network_graph(bootstrap: &str, format: &str, output: Option<PathBuf>) -> anyhow::Result<()> {
    let targets = registered(bootstrap).await?;
    let seen = futures::future::join_all(targets.iter().map(|t| async move {
        let address = p2p_proto::dial::Target::parse(t).map(|t| t.address).unwrap_or_else(|_| t.clone());
        let ask = async {
            let mut c = NodeClient::new(connect::channel("node", t).await?);
            let s = c.get_status(GetStatusRequest {}).await.map_err(connect::status)?.into_inner();
            let peers = c
                .get_peers(p2p_proto::node::GetPeersRequest { limit: 1000 })
                .await
                .map_err(connect::status)?
                .into_inner()
                .peers;
            anyhow::Ok(crate::graph::NodeView {
                node_id: s.node_id,
                height: s.height,
                tip: s.tip_hash,
                work: work_from_bytes(&s.cumulative_work),
                active_peers: peers
                    .into_iter()
                    .filter(|p| p.state == p2p_proto::node::PeerState::Active as i32)
                    .map(|p| p.address)
                    .collect(),
            })
        };
        let status = tokio::time::timeout(Duration::from_secs(5), ask).await.ok().and_then(Result::ok);
        crate::graph::Seen { address, status }
    }))
    .await;
    let dot = crate::graph::to_dot(&seen);
    let bytes = match format {
        "svg" => crate::graph::dot_to_svg(&dot)?.into_bytes(),
        "png" => crate::graph::dot_to_png(&dot)?,
        _ => dot.into_bytes(),
    };
    match output {
        Some(path) => {
            std::fs::write(&path, &bytes).with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote {} ({} nodes)", path.display(), seen.len());
        }
        None => {
            use std::io::Write;
            std::io::stdout().write_all(&bytes)?;
        }
    }
    Ok(())
}

async fn network_status(bootstrap: &str, json_out: bool) -> anyhow::Result<()> {
    let addresses = registered(bootstrap).await?;
    let statuses = futures::future::join_all(addresses.iter().map(|a| async move {
        let ask = async {
            let mut c = NodeClient::new(connect::channel("node", a).await?);
            c.get_status(GetStatusRequest {}).await.map_err(connect::status).map(|r| r.into_inner())
        };
        match tokio::time::timeout(Duration::from_secs(5), ask).await {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!("timed out")),
        }
    }))
    .await;
    let reachable: Vec<&GetStatusResponse> = statuses.iter().filter_map(|s| s.as_ref().ok()).collect();
    let agree = !reachable.is_empty() && reachable.iter().all(|s| s.tip_hash == reachable[0].tip_hash);
    let verdict = match (reachable.len(), agree) {
        (0, _) => "no node is reachable".to_string(),
        (n, true) => format!(
            "all {n} reachable nodes agree on tip {} at height {}",
            short(&reachable[0].tip_hash),
            reachable[0].height
        ),
        (n, false) => format!("the {n} reachable nodes do NOT agree on the tip"),
    };
    // With finality on, say where the final checkpoint is (or that nodes differ).
    let verdict = match reachable
        .iter()
        .filter(|s| s.validator_count > 0)
        .map(|s| (s.finalized_height, &s.finalized_hash))
        .max()
    {
        None => verdict,
        Some((h, hash)) => {
            let same = reachable.iter().filter(|s| s.finalized_height == h && s.finalized_hash == *hash).count();
            format!("{verdict}; final checkpoint at height {h} {} on {same} of {} nodes", short(hash), reachable.len())
        }
    };
    if json_out {
        let nodes: Vec<_> = addresses
            .iter()
            .zip(&statuses)
            .map(|(a, s)| match s {
                Ok(s) => json!({"address": a, "reachable": true, "status": status_json(s)}),
                Err(e) => json!({"address": a, "reachable": false, "error": format!("{e:#}")}),
            })
            .collect();
        print_json(&json!({"nodes": nodes, "agree": agree, "summary": verdict}));
    } else {
        let mut t = Table::new(&["NODE", "ADDRESS", "HEIGHT", "TIP", "FINAL", "PEERS", "MEMPOOL", "REACHABLE"]);
        for (a, s) in addresses.iter().zip(&statuses) {
            match s {
                Ok(s) => t.row(vec![
                    s.node_id.chars().take(16).collect(),
                    a.clone(),
                    s.height.to_string(),
                    short(&s.tip_hash),
                    if s.validator_count == 0 {
                        "-".into()
                    } else {
                        format!("{} {}", s.finalized_height, short(&s.finalized_hash))
                    },
                    s.peer_count.to_string(),
                    s.mempool_count.to_string(),
                    "yes".into(),
                ]),
                Err(e) => t.row(vec![
                    "-".into(),
                    a.clone(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    format!("no: {e:#}"),
                ]),
            }
        }
        t.print();
        println!("{verdict}");
    }
    Ok(())
}
