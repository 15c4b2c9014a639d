//! Wiring: the registry, the gRPC services and the background purge, run
//! until the shutdown token fires.

use std::sync::Arc;

use p2p_proto::bootstrap::bootstrap_server::BootstrapServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::Error;
use crate::service::BootstrapService;
use crate::store::PeerStore;
use crate::store::etcd::EtcdStore;
use crate::store::redb::RedbStore;

/// Most expired leases deleted in one purge transaction.
const PURGE_BATCH: usize = 10_000;

/// Serves the bootstrap registry on `listener` until `shutdown` is cancelled,
/// then drains requests, ends WatchPeers streams and closes the store.
pub async fn run(listener: TcpListener, config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    run_with_metrics(listener, None, config, shutdown).await
}

/// [`run`], also serving Prometheus metrics (`GET /metrics`, plain HTTP)
/// on `metrics` if given.
pub async fn run_with_metrics(
    listener: TcpListener,
    metrics: Option<TcpListener>,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| Error::storage_msg(format!("cannot create data dir {}: {e}", config.data_dir.display())))?;
    let opened = std::time::Instant::now();
    let window = config.signature_window.as_millis() as u64;
    let (clock, buffer) = (config.clock.clone(), config.watch_buffer);
    let (registry, commit_metrics, location) = match &config.store {
        crate::config::StoreChoice::Redb => {
            let path = config.data_dir.join("registry.redb");
            let location = path.display().to_string();
            let r = tokio::task::spawn_blocking(move || RedbStore::open(&path, clock, buffer, window))
                .await
                .map_err(Error::storage)??;
            let commits = r.commit_metrics();
            (Arc::new(r) as Arc<dyn PeerStore>, commits, location)
        }
        crate::config::StoreChoice::Etcd(options) => {
            let location = format!("etcd {} {}", options.endpoints.join(","), options.prefix);
            // Startup waits for the cluster; a signal meanwhile ends it.
            let r = tokio::select! {
                r = EtcdStore::open(options.clone(), clock, buffer, window) => r?,
                _ = shutdown.cancelled() => {
                    tracing::info!("shut down while waiting for etcd");
                    return Ok(());
                }
            };
            let commits = r.commit_metrics();
            (Arc::new(r) as Arc<dyn PeerStore>, commits, location)
        }
    };
    let count = registry.count().await?;
    let local = listener.local_addr().map_err(Error::storage)?;
    tracing::info!(%local, store = %location, registrations = count, open_ms = opened.elapsed().as_millis() as u64, "bootstrap registry serving");

    // The bootstrap's own identity: its TLS certificate proves it, so a node
    // that pins it (`--bootstrap ID@host:port`) cannot be fed a fake list.
    let (key, _) = p2p_proto::identity::load_or_create(&config.data_dir.join("bootstrap.key"))
        .map_err(|e| Error::storage_msg(e.to_string()))?;
    let node_id = p2p_proto::signing::node_id(&key.verifying_key().to_bytes());
    let (server_tls, client_tls) = if config.plaintext {
        tracing::warn!(
            "PLAINTEXT: connections are neither encrypted nor authenticated and registrations cannot be verified by identity; for local experiments only"
        );
        (None, p2p_proto::tls::ClientTls::Plaintext)
    } else {
        let identity = p2p_proto::tls::TlsIdentity::new(&key).map_err(|e| Error::storage_msg(e.to_string()))?;
        p2p_proto::tls::write_cert_pem(&config.data_dir, &identity).map_err(|e| Error::storage_msg(e.to_string()))?;
        (Some(identity.server_config()), p2p_proto::tls::ClientTls::Tls { identity: Some(identity) })
    };
    tracing::info!(%node_id, tls = !config.plaintext, verify_registrations = config.verify_registrations, network = %config.network, "bootstrap identity");

    let config = Arc::new(config);
    let service = BootstrapService::new(registry.clone(), config.clone(), &node_id, shutdown.child_token())
        .with_commit_metrics(commit_metrics);
    service.refresh_gauges().await;
    let metrics_task = match metrics {
        Some(l) => {
            let addr = l.local_addr().map_err(Error::storage)?;
            tracing::info!(%addr, "Prometheus metrics at http://{addr}/metrics");
            let registry = Arc::new(service.metrics().registry());
            Some(tokio::spawn(p2p_proto::metrics_http::serve(l, registry, shutdown.child_token())))
        }
        None => None,
    };
    let verifier = config.verify_registrations.then(|| {
        tokio::spawn(crate::verify::run(registry.clone(), config.clone(), client_tls, shutdown.child_token()))
    });
    let purge = tokio::spawn(purge_loop(registry.clone(), service.clone(), config.clone(), shutdown.child_token()));

    let (reporter, health) = p2p_proto::serving::health();
    reporter.set_serving::<BootstrapServer<BootstrapService>>().await;
    let health_task = tokio::spawn(p2p_proto::serving::follow_health(
        reporter,
        <BootstrapServer<BootstrapService> as tonic::server::NamedService>::NAME,
        registry.serving(),
        shutdown.child_token(),
    ));
    let (reflection_v1, reflection_v1alpha) =
        p2p_proto::serving::reflection().map_err(|e| Error::storage_msg(format!("reflection: {e}")))?;

    let close_all = CancellationToken::new();
    let incoming = p2p_proto::conn::incoming(listener, config.conn, server_tls, close_all.clone());
    let serve = config
        .conn
        .builder()
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(BootstrapServer::new(service).max_decoding_message_size(config.max_request_bytes))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled());
    let served =
        p2p_proto::serving::serve_with_grace(serve, shutdown.clone(), close_all, p2p_proto::serving::SHUTDOWN_GRACE)
            .await;

    shutdown.cancel();
    let _ = purge.await;
    if let Some(v) = verifier {
        let _ = v.await;
    }
    let _ = health_task.await;
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    registry.close().await;
    tracing::info!("bootstrap registry stopped");
    served.map_err(|e| Error::storage_msg(format!("server failed: {e}")))
}

async fn purge_loop(
    registry: Arc<dyn PeerStore>,
    service: BootstrapService,
    config: Arc<Config>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(config.purge_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match registry.purge_expired(PURGE_BATCH).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "purged expired leases"),
            Err(e) => tracing::warn!(error = %e, "purging expired leases failed; will retry"),
        }
        service.forget_idle_clients();
        service.refresh_gauges().await;
    }
}
