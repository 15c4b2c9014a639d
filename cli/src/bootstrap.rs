//! `p2pctl bootstrap …`: register, list, remove and watch peers.

use std::path::PathBuf;

use clap::Subcommand;
use p2p_proto::bootstrap::bootstrap_client::BootstrapClient;
use p2p_proto::bootstrap::{
    GetInfoRequest, GetPeersRequest, Peer, PeerEvent, PeerEventKind, RegisterRequest, RemoveRequest, WatchPeersRequest,
};
use p2p_proto::{identity, signing, unix_ms_now};
use serde_json::json;
use tonic::transport::Channel;

use crate::connect;
use crate::output::{Table, print_json, relative};

#[derive(Debug, Subcommand)]
pub enum BootstrapCmd {
    /// Register (or refresh) an address.
    Register {
        /// host:port other nodes dial.
        address: String,
        /// Lease in seconds (0 = the server's default).
        #[arg(long, default_value_t = 0)]
        ttl: u32,
        /// Sign with this ed25519 key file (created when missing).
        #[arg(long, env = "P2PCTL_KEY")]
        key: Option<PathBuf>,
    },
    /// List registered peers.
    #[command(visible_alias = "get-peers")]
    Peers {
        /// Peers per page (0 = the server's default).
        #[arg(long, default_value_t = 0)]
        limit: u32,
        /// Fetch every page, not just the first.
        #[arg(long)]
        all: bool,
        /// A random sample instead of a page.
        #[arg(long, conflicts_with = "all")]
        random: bool,
        /// Leave this address out.
        #[arg(long)]
        exclude: Option<String>,
        /// Continue from a previous page's next_page_token.
        #[arg(long)]
        page_token: Option<String>,
        /// Also list registrations the bootstrap has not verified yet.
        #[arg(long, conflicts_with = "random")]
        pending: bool,
    },
    /// Remove a registration.
    Remove {
        address: String,
        /// Sign with this ed25519 key file (needed for key-bound registrations).
        #[arg(long, env = "P2PCTL_KEY")]
        key: Option<PathBuf>,
    },
    /// Print registry events as they happen, until Ctrl-C.
    Watch,
}

/// The registry's id, which signed requests name (GetInfo).
async fn registry_id(client: &mut BootstrapClient<tonic::transport::Channel>) -> anyhow::Result<signing::RegistryId> {
    let info = client.get_info(GetInfoRequest {}).await.map_err(connect::status)?.into_inner();
    signing::registry_id(&info.registry_id).map_err(anyhow::Error::msg)
}

pub async fn run(endpoint: &str, cmd: BootstrapCmd, json_out: bool) -> anyhow::Result<()> {
    let mut client = BootstrapClient::new(connect::channel("bootstrap", endpoint).await?);
    match cmd {
        BootstrapCmd::Register { address, ttl, key } => {
            let req = match key {
                Some(path) => {
                    let (key, created) = identity::load_or_create(&path)?;
                    if created {
                        eprintln!("created key {}", path.display());
                    }
                    let registry = registry_id(&mut client).await?;
                    signing::signed_register(&key, &registry, &address, ttl, unix_ms_now())
                }
                None => RegisterRequest { address, ttl_seconds: ttl, ..Default::default() },
            };
            let r = client.register(req).await.map_err(connect::status)?.into_inner();
            if json_out {
                print_json(&json!({
                    "created": r.created, "ttl_seconds": r.ttl_seconds,
                    "expires_at_unix_ms": r.expires_at_unix_ms, "message": r.message,
                    "peer": r.peer.as_ref().map(peer_json),
                }));
            } else {
                println!("{}", r.message);
                if let Some(p) = r.peer.filter(|p| !p.node_id.is_empty()) {
                    println!("node id {}", p.node_id);
                }
            }
        }
        BootstrapCmd::Peers { limit, all, random, exclude, page_token, pending } => {
            let mut token = page_token.unwrap_or_default();
            let mut peers = Vec::new();
            let (total, next) = loop {
                let r = client
                    .get_peers(GetPeersRequest {
                        limit,
                        exclude_address: exclude.clone().unwrap_or_default(),
                        page_token: token.clone(),
                        random,
                        include_pending: pending,
                    })
                    .await
                    .map_err(connect::status)?
                    .into_inner();
                peers.extend(r.peers);
                if !all || r.next_page_token.is_empty() {
                    break (r.total, r.next_page_token);
                }
                token = r.next_page_token;
            };
            if json_out {
                print_json(&json!({
                    "peers": peers.iter().map(peer_json).collect::<Vec<_>>(),
                    "total": total, "next_page_token": next,
                }));
            } else {
                let mut t = Table::new(&["ADDRESS", "NODE ID", "STATE", "REGISTERED", "LAST SEEN", "EXPIRES"]);
                for p in &peers {
                    t.row(vec![
                        p.address.clone(),
                        if p.node_id.is_empty() { "(unsigned)".into() } else { p.node_id.chars().take(16).collect() },
                        if p.pending { "pending".into() } else { "verified".into() },
                        relative(p.registered_at_unix_ms),
                        relative(p.last_seen_unix_ms),
                        relative(p.expires_at_unix_ms),
                    ]);
                }
                t.print();
                println!("{} shown, {total} registered", peers.len());
                if !next.is_empty() {
                    println!("more: --page-token {next}  (or --all)");
                }
            }
        }
        BootstrapCmd::Remove { address, key } => {
            let req = match key {
                Some(path) => {
                    let (key, _) = identity::load_or_create(&path)?;
                    let registry = registry_id(&mut client).await?;
                    signing::signed_remove(&key, &registry, &address, unix_ms_now())
                }
                None => RemoveRequest { address, ..Default::default() },
            };
            let r = client.remove(req).await.map_err(connect::status)?.into_inner();
            if json_out {
                print_json(&json!({ "removed": r.removed, "message": r.message }));
            } else {
                println!("{}", r.message);
            }
        }
        BootstrapCmd::Watch => watch(&mut client, json_out).await?,
    }
    Ok(())
}

async fn watch(client: &mut BootstrapClient<Channel>, json_out: bool) -> anyhow::Result<()> {
    let mut stream = client.watch_peers(WatchPeersRequest {}).await.map_err(connect::status)?.into_inner();
    if !json_out {
        eprintln!("watching registry events; Ctrl-C to stop");
    }
    loop {
        let ev: PeerEvent = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            ev = stream.message() => match ev.map_err(connect::status)? {
                Some(ev) => ev,
                None => anyhow::bail!("the bootstrap server closed the stream (shutting down?)"),
            },
        };
        let kind = event_name(ev.kind());
        if json_out {
            println!(
                "{}",
                json!({"kind": kind, "peer": ev.peer.as_ref().map(peer_json), "missed": ev.missed, "at_unix_ms": ev.at_unix_ms})
            );
        } else if ev.kind() == PeerEventKind::Lagged {
            println!("{kind:<9} missed {} events; re-read with `p2pctl bootstrap peers --all`", ev.missed);
        } else if let Some(p) = ev.peer {
            println!("{kind:<9} {} {}", p.address, p.node_id);
        }
    }
}

fn event_name(kind: PeerEventKind) -> &'static str {
    match kind {
        PeerEventKind::Joined => "joined",
        PeerEventKind::Refreshed => "refreshed",
        PeerEventKind::Left => "left",
        PeerEventKind::Expired => "expired",
        PeerEventKind::Lagged => "lagged",
        PeerEventKind::Unspecified => "unknown",
    }
}

pub fn peer_json(p: &Peer) -> serde_json::Value {
    json!({
        "address": p.address, "node_id": p.node_id, "public_key": hex::encode(&p.public_key),
        "registered_at_unix_ms": p.registered_at_unix_ms, "last_seen_unix_ms": p.last_seen_unix_ms,
        "expires_at_unix_ms": p.expires_at_unix_ms, "pending": p.pending,
    })
}
