//! Joining through the bootstrap: register (signed) and refresh well before
//! the lease ends, learn peers from GetPeers and WatchPeers, fail over
//! between bootstrap servers with backoff, and deregister on shutdown.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use p2p_proto::bootstrap::bootstrap_client::BootstrapClient;
use p2p_proto::bootstrap::{GetInfoRequest, GetPeersRequest, PeerEventKind, WatchPeersRequest};
use p2p_proto::node::PeerSource;
use p2p_proto::signing::{RegistryId, signed_register, signed_remove};
use tonic::transport::Channel;

use crate::metrics::Stats;
use crate::node::NodeHandle;

/// Peers asked of the bootstrap per GetPeers.
const DISCOVER_LIMIT: u32 = 64;
/// First retry delay after a bootstrap fails.
const FIRST_RETRY: Duration = Duration::from_millis(250);

/// Runs until shutdown, then removes this node from every bootstrap.
pub(crate) async fn run(node: NodeHandle) {
    let bootstraps = node.config().bootstrap.clone();
    if bootstraps.is_empty() {
        return;
    }
    let refresh = Duration::from_secs(u64::from(node.config().register_ttl_secs / 3).max(1));
    let shutdown = node.shutdown_token().clone();
    // Capped at the refresh interval: a bootstrap that comes back (even
    // empty) has us registered again within one interval.
    let retries = ExponentialBuilder::new()
        .with_min_delay(FIRST_RETRY.min(refresh))
        .with_max_delay(refresh)
        .with_jitter()
        .with_jitter_seed(node.random_u64())
        .without_max_times();
    let mut backoff = retries.build();
    let mut attempt = 0usize;
    while !shutdown.is_cancelled() {
        let address = &bootstraps[attempt % bootstraps.len()];
        match session(&node, address, refresh).await {
            Ok(()) => break,
            Err(e) => {
                Stats::add(&node.counters().bootstrap_failures, 1);
                let delay = backoff.next().unwrap_or(refresh);
                tracing::warn!(bootstrap = %address, error = %e, retry_in_ms = delay.as_millis() as u64, "bootstrap unavailable");
                attempt += 1;
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    deregister(&node, &bootstraps).await;
}

/// One connection to one bootstrap: returns Ok on shutdown, Err when the
/// bootstrap fails (the caller moves on to the next one).
async fn session(node: &NodeHandle, address: &str, refresh: Duration) -> Result<(), String> {
    let mut client = BootstrapClient::new(node.dialer().bootstrap(address).await?.channel);
    let registry = registry_id(&mut client).await?;
    register(node, &mut client, &registry).await?;
    discover(node, &mut client).await?;
    let mut events = client
        .watch_peers(WatchPeersRequest {})
        .await
        .map_err(|s| format!("WatchPeers: {}", s.message()))?
        .into_inner();
    tracing::info!(bootstrap = %address, "joined through bootstrap");
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + refresh, refresh);
    loop {
        tokio::select! {
            _ = node.shutdown_token().cancelled() => return Ok(()),
            _ = tick.tick() => {
                register(node, &mut client, &registry).await?;
                discover(node, &mut client).await?;
            }
            ev = events.message() => {
                let ev = ev.map_err(|s| format!("WatchPeers: {}", s.message()))?.ok_or("WatchPeers stream ended")?;
                match (ev.kind(), ev.peer) {
                    (PeerEventKind::Joined | PeerEventKind::Refreshed, Some(p)) => {
                        node.peers().learn(&p.address, PeerSource::Bootstrap, Some(&p.node_id));
                    }
                    // Gone from the registry (removed, or its lease ran out):
                    // stop dialing it, unless the operator configured it.
                    (PeerEventKind::Left | PeerEventKind::Expired, Some(p)) if !node.config().is_configured_peer(&p.address) => {
                        node.peers().forget(&p.address);
                    }
                    (PeerEventKind::Lagged, _) => discover(node, &mut client).await?,
                    _ => {}
                }
            }
        }
    }
}

/// The registry's id, which signed requests to it must name.
async fn registry_id(client: &mut BootstrapClient<Channel>) -> Result<RegistryId, String> {
    let info = client.get_info(GetInfoRequest {}).await.map_err(|s| format!("GetInfo: {}", s.message()))?;
    p2p_proto::signing::registry_id(&info.get_ref().registry_id).map_err(|e| format!("GetInfo: {e}"))
}

async fn register(
    node: &NodeHandle,
    client: &mut BootstrapClient<Channel>,
    registry: &RegistryId,
) -> Result<(), String> {
    let config = node.config();
    let req = signed_register(node.key(), registry, &config.advertise, config.register_ttl_secs, node.now_ms());
    let resp = client.register(req).await.map_err(|s| format!("Register: {:?}: {}", s.code(), s.message()))?;
    Stats::add(&node.counters().bootstrap_registrations, 1);
    tracing::debug!(message = %resp.get_ref().message, "registered with bootstrap");
    Ok(())
}

async fn discover(node: &NodeHandle, client: &mut BootstrapClient<Channel>) -> Result<(), String> {
    let req = GetPeersRequest {
        limit: DISCOVER_LIMIT,
        exclude_address: node.config().advertise.clone(),
        page_token: String::new(),
        random: true,
        include_pending: false,
    };
    let peers = client.get_peers(req).await.map_err(|s| format!("GetPeers: {}", s.message()))?.into_inner().peers;
    for p in peers {
        node.peers().learn(&p.address, PeerSource::Bootstrap, Some(&p.node_id));
    }
    Ok(())
}

/// The book's ch. 8.4: leave the registry on the way out (signed, best effort).
async fn deregister(node: &NodeHandle, bootstraps: &[String]) {
    for address in bootstraps {
        let attempt = async {
            let mut client = BootstrapClient::new(node.dialer().bootstrap(address).await?.channel);
            let registry = registry_id(&mut client).await?;
            let req = signed_remove(node.key(), &registry, &node.config().advertise, node.now_ms());
            client.remove(req).await.map_err(|s| s.message().to_string())
        };
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(r)) => {
                tracing::info!(bootstrap = %address, removed = r.get_ref().removed, "left the bootstrap registry")
            }
            Ok(Err(e)) => tracing::debug!(bootstrap = %address, error = %e, "could not deregister"),
            Err(_) => tracing::debug!(bootstrap = %address, "deregistering timed out"),
        }
    }
}
