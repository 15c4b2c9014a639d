//! Server configuration, independent of how it was parsed, so tests build it directly.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::lease::LeasePolicy;

/// Everything the bootstrap server can be told.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the registry database lives (`registry.redb` inside).
    pub data_dir: PathBuf,
    /// Lease default and bounds.
    pub lease: LeasePolicy,
    /// Peers per GetPeers when the request says 0.
    pub default_peers_limit: u32,
    /// Most peers one GetPeers returns, whatever it asks for.
    pub max_peers_limit: u32,
    /// Reject registrations that carry no public key and signature.
    pub require_signatures: bool,
    /// How far a signed timestamp may be from the server's clock.
    pub signature_window: Duration,
    /// Register calls allowed per client IP per minute; 0 disables the limit.
    pub register_per_minute: u32,
    /// How often expired leases are purged.
    pub purge_interval: Duration,
    /// Events buffered per WatchPeers subscriber before it is told it lagged.
    pub watch_buffer: usize,
    /// Concurrent WatchPeers streams allowed.
    pub max_watchers: usize,
    /// Largest request message accepted, in bytes.
    pub max_request_bytes: usize,
    /// Source of time; tests substitute a manual clock.
    pub clock: Arc<dyn Clock>,
}

impl Config {
    /// Defaults suitable for a devnet and for an operator to start from.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            lease: LeasePolicy { default_ttl_secs: 120, min_ttl_secs: 10, max_ttl_secs: 3600 },
            default_peers_limit: 100,
            max_peers_limit: 1000,
            require_signatures: false,
            signature_window: Duration::from_secs(60),
            register_per_minute: 100,
            purge_interval: Duration::from_secs(1),
            watch_buffer: 1024,
            max_watchers: 10_000,
            max_request_bytes: 16 * 1024,
            clock: Arc::new(SystemClock),
        }
    }
}
