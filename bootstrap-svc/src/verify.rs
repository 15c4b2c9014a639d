//! Verifying registrations before they are listed: the bootstrap dials each
//! pending registration's address itself. For a key-bound registration the
//! TLS handshake must prove the registering key's node id; every
//! registration must answer GetStatus as a node of this network. Until then
//! it stays pending (not returned by GetPeers, not announced), retried with
//! backoff until its lease ends.
//!
//! Dials are bounded so the registry cannot be turned on a victim: at most
//! [`crate::Config::verify_concurrency`] at once, and at most
//! [`crate::Config::verify_per_host_per_minute`] to one IP, however many
//! names and ports point at it; each has a deadline.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use p2p_proto::dial::DialSettings;
use p2p_proto::node::GetStatusRequest;
use p2p_proto::node::node_client::NodeClient;
use p2p_proto::tls::ClientTls;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::store::{PeerStore, PendingCheck, Verification};

/// How often the pending queue is looked at.
const POLL: Duration = Duration::from_millis(200);
/// Longest wait between two attempts at one registration.
pub const MAX_RETRY: Duration = Duration::from_secs(60);

/// Wait before attempt `attempts + 1`: 1 s doubling up to [`MAX_RETRY`].
pub fn retry_delay(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.min(6)).min(MAX_RETRY)
}

/// Why an address did not verify (logged; the registration stays pending).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error("{0} does not resolve")]
    Unresolved(String),
    #[error("too many verification dials to {0} this minute")]
    RateLimited(IpAddr),
    #[error("cannot connect or the handshake failed: {0}")]
    Unreachable(String),
    #[error("GetStatus failed: {0}")]
    NoStatus(String),
    #[error("it is a node of network {got:?}, not {want:?}")]
    WrongNetwork { want: String, got: String },
    #[error("it is node {got}, not {want}")]
    WrongNode { want: String, got: String },
    #[error("no verification answer within {0:?}")]
    TimedOut(Duration),
}

/// The verifier: runs until `shutdown`.
pub async fn run(store: Arc<dyn PeerStore>, config: Arc<Config>, tls: ClientTls, shutdown: CancellationToken) {
    let per_host =
        NonZeroU32::new(config.verify_per_host_per_minute).map(|n| Arc::new(RateLimiter::keyed(Quota::per_minute(n))));
    let slots = Arc::new(Semaphore::new(config.verify_concurrency.max(1)));
    let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
    let tasks = tokio_util::task::TaskTracker::new();
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let due = match store.due_verifications(config.verify_concurrency.max(1) * 2).await {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = %e, "reading pending registrations failed");
                continue;
            }
        };
        for check in due {
            if !lock(&in_flight).insert(check.address.clone()) {
                continue;
            }
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                lock(&in_flight).remove(&check.address);
                break;
            };
            let (store, config, tls, per_host, in_flight) =
                (store.clone(), config.clone(), tls.clone(), per_host.clone(), in_flight.clone());
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                let _slot = slot;
                let checked = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = tokio::time::timeout(config.verify_timeout, verify(&check, &config, &tls, per_host.as_deref())) => r,
                };
                let outcome = match checked.unwrap_or(Err(Refused::TimedOut(config.verify_timeout))) {
                    Ok(node_id) => {
                        tracing::info!(peer = %check.address, %node_id, "registration verified; listed");
                        Verification::Passed { node_id }
                    }
                    Err(why) => {
                        let delay = retry_delay(check.attempts);
                        tracing::info!(peer = %check.address, reason = %why, retry_in_s = delay.as_secs(), "registration not verified yet");
                        Verification::Failed { retry_at_ms: config.clock.now_unix_ms() + delay.as_millis() as u64 }
                    }
                };
                if let Err(e) = store.record_verification(check.clone(), outcome).await {
                    tracing::warn!(peer = %check.address, error = %e, "recording a verification failed");
                }
                lock(&in_flight).remove(&check.address);
            });
        }
    }
    tasks.close();
    tasks.wait().await;
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Dials `check.address` and returns the node id it proved.
async fn verify(
    check: &PendingCheck,
    config: &Config,
    tls: &ClientTls,
    per_host: Option<&DefaultKeyedRateLimiter<IpAddr>>,
) -> Result<String, Refused> {
    let target: SocketAddr = tokio::net::lookup_host(check.address.as_str())
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| Refused::Unresolved(check.address.clone()))?;
    let ip = p2p_proto::limits::client_key(target.ip(), config.conn.v6_prefix);
    if let Some(limiter) = per_host
        && limiter.check_key(&ip).is_err()
    {
        return Err(Refused::RateLimited(ip));
    }
    let expected = (!check.public_key.is_empty()).then(|| p2p_proto::signing::node_id(&check.public_key));
    let dial = DialSettings::new(config.verify_timeout, config.verify_timeout);
    let link = dial
        .connect(&target.to_string(), tls, expected.as_deref())
        .await
        .map_err(|e| Refused::Unreachable(p2p_proto::dial::error_chain(&e)))?;
    let status = NodeClient::new(link.channel.clone())
        .max_decoding_message_size(64 * 1024)
        .get_status(GetStatusRequest {})
        .await
        .map_err(|s| Refused::NoStatus(s.message().to_string()))?
        .into_inner();
    if status.network != config.network {
        return Err(Refused::WrongNetwork { want: config.network.clone(), got: status.network });
    }
    // With TLS the handshake proved the id; in plaintext only the answer says it.
    let node_id = link.proven().map(|p| p.node_id).unwrap_or(status.node_id.clone());
    if status.node_id != node_id {
        return Err(Refused::WrongNode { want: node_id, got: status.node_id });
    }
    if let Some(want) = expected
        && want != node_id
    {
        return Err(Refused::WrongNode { want, got: node_id });
    }
    Ok(node_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_a_minute() {
        assert_eq!(retry_delay(0), Duration::from_secs(1));
        assert_eq!(retry_delay(1), Duration::from_secs(2));
        assert_eq!(retry_delay(5), Duration::from_secs(32));
        assert_eq!(retry_delay(6), MAX_RETRY);
        assert_eq!(retry_delay(u32::MAX), MAX_RETRY);
    }
}
