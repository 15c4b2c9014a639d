//! Starting and stopping a node: identity, chain store, background tasks
//! (gossip, sync, heartbeats, membership) and the gRPC server, all tied to
//! one shutdown token.

use std::net::SocketAddr;
use std::sync::Arc;

use p2p_proto::node::PeerSource;
use p2p_proto::node::node_server::NodeServer;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::chain::{Chain, ChainHandle};
use crate::config::NodeConfig;
use crate::error::Error;
use crate::node::{NodeHandle, Parts};
use crate::peers::PeerCache;
use crate::service::NodeService;
use crate::sync::{SyncHandle, Syncer};
use crate::{gossip, heartbeat, membership};

/// How long in-flight requests get to finish once shutdown starts.
const SHUTDOWN_GRACE: std::time::Duration = p2p_proto::serving::SHUTDOWN_GRACE;

/// A node serving in the background.
#[derive(Debug)]
pub struct RunningNode {
    pub node: NodeHandle,
    pub local_addr: SocketAddr,
    task: JoinHandle<Result<(), Error>>,
    chain_thread: std::thread::JoinHandle<()>,
}

impl RunningNode {
    /// Waits until the server, its background tasks and the chain store
    /// have all stopped (after the shutdown token fired).
    pub async fn join(self) -> Result<(), Error> {
        let RunningNode { node, task, chain_thread, .. } = self;
        drop(node);
        let served = task.await.map_err(|e| Error::Internal(e.to_string()))?;
        // The chain thread ends when the last handle is gone; then the store is closed.
        tokio::task::spawn_blocking(move || chain_thread.join()).await.ok();
        served
    }
}

/// Opens the node's identity and chain in `config.data_dir`, then serves on
/// `listener` until `shutdown` fires.
pub async fn spawn(
    listener: TcpListener,
    config: NodeConfig,
    shutdown: CancellationToken,
) -> Result<RunningNode, Error> {
    p2p_proto::address::canonicalize(&config.advertise).map_err(|e| Error::invalid("advertise", e))?;
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| Error::Internal(format!("cannot create data dir {}: {e}", config.data_dir.display())))?;
    let (key, created) = p2p_proto::identity::load_or_create(&config.data_dir.join("node.key"))
        .map_err(|e| Error::Internal(e.to_string()))?;
    let path = config.data_dir.join("chain.redb");
    let params = config.network.clone();
    let chain = tokio::task::spawn_blocking(move || Chain::open(&path, params))
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
    let (chain, chain_thread) = ChainHandle::spawn(chain, config.clock.clone())?;
    let cache_path = config.data_dir.join("peers.redb");
    let (peer_cache, cached) = tokio::task::spawn_blocking(move || {
        let cache = PeerCache::open(&cache_path)?;
        let cached = cache.load()?;
        Ok::<_, crate::chain::StoreError>((cache, cached))
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))??;
    // Subscribed before anything can be accepted, so gossip misses no tip.
    let events = chain.subscribe();
    let (sync, sync_requests) = SyncHandle::new();
    let node = NodeHandle::new(Parts {
        config: config.clone(),
        key,
        chain,
        peer_cache: Arc::new(peer_cache),
        sync,
        shutdown: shutdown.clone(),
    });
    let tip = node.chain().tip().await?;
    let local_addr = listener.local_addr().map_err(|e| Error::Internal(e.to_string()))?;
    tracing::info!(
        node_id = node.node_id(), new_identity = created, %local_addr, advertise = %config.advertise,
        network = %config.network.name, height = tip.height, tip = %hex::encode(tip.hash), "node starting"
    );
    for p in &config.peers {
        node.peers().learn(p, PeerSource::Configured, None);
    }
    // Peers that worked last time: rejoin even if no bootstrap answers.
    for p in &cached {
        node.peers().learn(&p.address, PeerSource::Cached, Some(&p.node_id));
    }
    if !cached.is_empty() {
        tracing::info!(peers = cached.len(), "loaded cached peers");
    }

    let background = [
        tokio::spawn(gossip::run(node.clone(), events)),
        tokio::spawn(Syncer::new(node.clone(), sync_requests).run()),
        tokio::spawn(heartbeat::run(node.clone())),
        tokio::spawn(membership::run(node.clone())),
    ];
    let (reporter, health) = p2p_proto::serving::health();
    reporter.set_serving::<NodeServer<NodeService>>().await;
    let health_task = tokio::spawn(p2p_proto::serving::follow_health(
        reporter,
        <NodeServer<NodeService> as tonic::server::NamedService>::NAME,
        node.chain().serving(),
        shutdown.clone(),
    ));
    let (reflection_v1, reflection_v1alpha) =
        p2p_proto::serving::reflection().map_err(|e| Error::Internal(format!("reflection: {e}")))?;
    // Nothing larger than a valid block (and its envelope) is ever decoded.
    let max_message = config.network.max_message_bytes();
    let service = NodeServer::new(NodeService::new(node.clone()))
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let close_all = CancellationToken::new();
    let incoming = p2p_proto::conn::incoming(listener, config.conn, close_all.clone());
    let server = config
        .conn
        .builder()
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(service);
    let task_node = node.clone();
    let task = tokio::spawn(async move {
        let serve = server.serve_with_incoming_shutdown(incoming, shutdown.cancelled());
        let served = p2p_proto::serving::serve_with_grace(serve, shutdown.clone(), close_all, SHUTDOWN_GRACE).await;
        shutdown.cancel();
        for t in background {
            let _ = t.await;
        }
        let _ = health_task.await;
        task_node.tasks().close();
        task_node.tasks().wait().await;
        tracing::info!(node_id = task_node.node_id(), "node stopped");
        served.map_err(|e| Error::Internal(format!("server failed: {e}")))
    });
    Ok(RunningNode { node, local_addr, task, chain_thread })
}

/// Serves until `shutdown` fires and everything has stopped.
pub async fn run(listener: TcpListener, config: NodeConfig, shutdown: CancellationToken) -> Result<(), Error> {
    spawn(listener, config, shutdown).await?.join().await
}
