//! Starting and stopping a node: identity, chain store, background tasks
//! (gossip, sync, heartbeats, membership) and the gRPC server, all tied to
//! one shutdown token.

use std::net::SocketAddr;
use std::sync::Arc;

use p2p_proto::admin::admin_server::AdminServer;
use p2p_proto::node::PeerSource;
use p2p_proto::node::node_server::NodeServer;
use p2p_proto::tls::{ClientTls, TlsIdentity};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin::{AdminAuth, AdminService};
use crate::chain::{Chain, ChainHandle};
use crate::config::NodeConfig;
use crate::error::Error;
use crate::mempool::Mempool;
use crate::node::{NodeHandle, Parts};
use crate::peers::PeerCache;
use crate::service::NodeService;
use crate::sync::{SyncHandle, Syncer};
use crate::{gossip, heartbeat, membership, miner, txgossip};

/// How long in-flight requests get to finish once shutdown starts.
const SHUTDOWN_GRACE: std::time::Duration = p2p_proto::serving::SHUTDOWN_GRACE;

/// The sockets a node serves on: the public P2P port, and the operator's
/// admin port (none: no admin API).
#[derive(Debug)]
pub struct Listeners {
    pub p2p: TcpListener,
    pub admin: Option<TcpListener>,
    /// Prometheus metrics (`GET /metrics`, plain HTTP), if given.
    pub metrics: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    fn from(p2p: TcpListener) -> Self {
        Listeners { p2p, admin: None, metrics: None }
    }
}

/// A node serving in the background.
#[derive(Debug)]
pub struct RunningNode {
    pub node: NodeHandle,
    pub local_addr: SocketAddr,
    /// Where the admin API listens, if it does.
    pub admin_addr: Option<SocketAddr>,
    /// Where Prometheus metrics are served, if they are.
    pub metrics_addr: Option<SocketAddr>,
    task: JoinHandle<Result<(), Error>>,
    chain_thread: std::thread::JoinHandle<()>,
    mempool_thread: std::thread::JoinHandle<()>,
}

impl RunningNode {
    /// Waits until the server, its background tasks and the chain store
    /// have all stopped (after the shutdown token fired).
    pub async fn join(self) -> Result<(), Error> {
        let RunningNode { node, task, chain_thread, mempool_thread, .. } = self;
        drop(node);
        let served = task.await.map_err(|e| Error::Internal(e.to_string()))?;
        // The chain and mempool threads end when the last handle is gone;
        // then their stores are closed.
        tokio::task::spawn_blocking(move || {
            let _ = mempool_thread.join();
            chain_thread.join()
        })
        .await
        .ok();
        served
    }
}

/// The key this node signs checkpoints with: `--validator-key` (created if
/// missing), else its identity key when that is in the network's validator
/// set. None on networks without finality.
fn validator_key(
    config: &NodeConfig,
    identity: &ed25519_dalek::SigningKey,
) -> Result<Option<ed25519_dalek::SigningKey>, Error> {
    let finality = &config.network.finality;
    if !finality.enabled() {
        return Ok(None);
    }
    let key = match &config.validator_key {
        Some(path) => p2p_proto::identity::load_or_create(path).map_err(|e| Error::Internal(e.to_string()))?.0,
        None => identity.clone(),
    };
    let public = hex::encode(key.verifying_key().to_bytes());
    if finality.is_validator(&key.verifying_key().to_bytes()) {
        tracing::info!(validator = %public, validators = finality.validators.len(), "signing checkpoints as a validator");
        Ok(Some(key))
    } else {
        if config.validator_key.is_some() {
            tracing::warn!(key = %public, "--validator-key is not in the network's validator set: not voting");
        }
        Ok(None)
    }
}

/// Opens the node's identity and chain in `config.data_dir`, then serves
/// the P2P port (and the admin API, if given a listener for it) until
/// `shutdown` fires.
pub async fn spawn(
    listeners: impl Into<Listeners>,
    config: NodeConfig,
    shutdown: CancellationToken,
) -> Result<RunningNode, Error> {
    let Listeners { p2p: listener, admin: admin_listener, metrics: metrics_listener } = listeners.into();
    p2p_proto::address::canonicalize(&config.advertise).map_err(|e| Error::invalid("advertise", e))?;
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| Error::Internal(format!("cannot create data dir {}: {e}", config.data_dir.display())))?;
    let (key, created) = p2p_proto::identity::load_or_create(&config.data_dir.join("node.key"))
        .map_err(|e| Error::Internal(e.to_string()))?;
    // The certificate (a fresh key each start) proves the identity key.
    let identity = if config.plaintext {
        tracing::warn!(
            "PLAINTEXT: node links are neither encrypted nor authenticated, and no request can be tied to a node; \
             for local experiments only"
        );
        None
    } else {
        let identity = TlsIdentity::new(&key).map_err(|e| Error::Internal(e.to_string()))?;
        p2p_proto::tls::write_cert_pem(&config.data_dir, &identity)
            .map_err(|e| Error::Internal(format!("cannot write the TLS certificate: {e}")))?;
        Some(identity)
    };
    let tls = match &identity {
        Some(id) => ClientTls::Tls { identity: Some(id.clone()) },
        None => ClientTls::Plaintext,
    };
    let path = config.data_dir.join("chain.redb");
    let params = config.network.clone();
    let mut chain = tokio::task::spawn_blocking(move || Chain::open(&path, params))
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
    let validator = validator_key(&config, &key)?.is_some_and(|k| chain.set_validator(k));
    let (chain, chain_thread) = ChainHandle::spawn(chain, config.clock.clone())?;
    let (mempool, mempool_thread) = {
        let (path, limits, reader) = (config.data_dir.join("mempool.redb"), config.mempool, chain.reader());
        let (genesis, max_payload, clock) = (chain.genesis_hash(), config.network.max_tx_payload, config.clock.clone());
        tokio::task::spawn_blocking(move || Mempool::open(&path, limits, reader, genesis, max_payload, clock))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??
    };
    let cache_path = config.data_dir.join("peers.redb");
    let (peer_cache, cached) = tokio::task::spawn_blocking(move || {
        let cache = PeerCache::open(&cache_path)?;
        let cached = cache.load()?;
        Ok::<_, crate::chain::StoreError>((cache, cached))
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))??;
    // Subscribed before anything can be accepted, so gossip (and the
    // mempool, and the miner) miss no tip.
    let events = chain.subscribe();
    let mempool_events = chain.subscribe();
    let miner_events = chain.subscribe();
    let vote_events = chain.subscribe();
    let admitted = mempool.subscribe();
    let (sync, sync_requests) = SyncHandle::new();
    let node = NodeHandle::new(Parts {
        config: config.clone(),
        key,
        chain,
        peer_cache: Arc::new(peer_cache),
        sync,
        mempool: mempool.clone(),
        tls,
        validator,
        shutdown: shutdown.clone(),
    });
    let tip = node.chain().tip().await?;
    let local_addr = listener.local_addr().map_err(|e| Error::Internal(e.to_string()))?;
    tracing::info!(
        node_id = node.node_id(), new_identity = created, %local_addr, advertise = %config.advertise,
        network = %config.network.name, tls = !config.plaintext, height = tip.height, tip = %hex::encode(tip.hash),
        "node starting"
    );
    for p in &config.peers {
        match p2p_proto::dial::Target::parse(p) {
            Ok(t) => {
                node.peers().learn(&t.address, PeerSource::Configured, t.node_id.as_deref());
            }
            Err(e) => tracing::warn!(peer = %p, error = %e, "configured peer ignored"),
        }
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
        tokio::spawn(crate::finality::run(node.clone(), vote_events)),
        tokio::spawn(follow_chain(node.clone(), mempool_events)),
        tokio::spawn(txgossip::run(node.clone(), admitted)),
        tokio::spawn(miner::run(node.clone(), miner_events)),
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
    let incoming =
        p2p_proto::conn::incoming(listener, config.conn, identity.map(|i| i.server_config()), close_all.clone());
    let (admin_addr, admin_task) = match admin_listener {
        Some(l) => {
            let (addr, task) = serve_admin(l, &node, &config, shutdown.clone(), close_all.clone())?;
            (Some(addr), Some(task))
        }
        None => (None, None),
    };
    let (metrics_addr, metrics_task) = match metrics_listener {
        Some(l) => {
            let addr = l.local_addr().map_err(|e| Error::Internal(format!("metrics listener: {e}")))?;
            let registry = std::sync::Arc::new(crate::metrics::registry(node.clone()));
            tracing::info!(%addr, "Prometheus metrics at http://{addr}/metrics");
            (Some(addr), Some(tokio::spawn(p2p_proto::metrics_http::serve(l, registry, shutdown.clone()))))
        }
        None => (None, None),
    };
    let server = config
        .conn
        .builder()
        .layer(p2p_proto::rpc_bytes::RpcBytesLayer::new(node.observed().rpc_bytes.clone()))
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
        if let Some(t) = admin_task {
            let _ = t.await;
        }
        if let Some(t) = metrics_task {
            let _ = t.await;
        }
        task_node.tasks().close();
        task_node.tasks().wait().await;
        tracing::info!(node_id = task_node.node_id(), "node stopped");
        served.map_err(|e| Error::Internal(format!("server failed: {e}")))
    });
    Ok(RunningNode { node, local_addr, admin_addr, metrics_addr, task, chain_thread, mempool_thread })
}

/// Hands the chain's events to the mempool (mined transactions leave,
/// abandoned ones come back), until shutdown.
async fn follow_chain(node: NodeHandle, mut events: tokio::sync::broadcast::Receiver<crate::chain::ChainEvent>) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        tokio::select! {
            _ = node.shutdown_token().cancelled() => return,
            ev = events.recv() => match ev {
                Ok(ev) => node.mempool().chain_moved(ev).await,
                Err(RecvError::Lagged(missed)) => {
                    // Missed blocks' transactions stay until a later block's
                    // senders are pruned, or they fail the nonce rule in a template.
                    tracing::warn!(missed, "the mempool fell behind the chain's events");
                }
                Err(RecvError::Closed) => return,
            },
        }
    }
}

/// Starts the admin API on `listener` (plaintext: loopback, or a token;
/// see [`crate::admin`]); returns its address and task.
fn serve_admin(
    listener: TcpListener,
    node: &NodeHandle,
    config: &NodeConfig,
    shutdown: CancellationToken,
    close_all: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>), Error> {
    let addr = listener.local_addr().map_err(|e| Error::Internal(e.to_string()))?;
    let auth = AdminAuth::for_listener(addr, config.admin_token.as_deref(), &config.data_dir)
        .map_err(|e| Error::Internal(format!("cannot write the admin cookie: {e}")))?;
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "the admin API listens beyond loopback: every call needs the token (plaintext; use a trusted network)");
    }
    tracing::info!(%addr, open = matches!(auth, AdminAuth::Open), "admin API listening");
    let (reflection_v1, reflection_v1alpha) =
        p2p_proto::serving::reflection().map_err(|e| Error::Internal(format!("reflection: {e}")))?;
    let service = AdminServer::with_interceptor(AdminService::new(node.clone()), move |r| auth.check(r));
    let incoming = p2p_proto::conn::incoming(listener, config.conn, None, close_all.clone());
    let server = config.conn.builder().add_service(reflection_v1).add_service(reflection_v1alpha).add_service(service);
    let task = tokio::spawn(async move {
        let serve = server.serve_with_incoming_shutdown(incoming, shutdown.cancelled());
        if let Err(e) = p2p_proto::serving::serve_with_grace(serve, shutdown.clone(), close_all, SHUTDOWN_GRACE).await {
            tracing::warn!(error = %e, "admin server failed");
        }
    });
    Ok((addr, task))
}

/// Serves until `shutdown` fires and everything has stopped.
pub async fn run(
    listeners: impl Into<Listeners>,
    config: NodeConfig,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    spawn(listeners, config, shutdown).await?.join().await
}
