//! The one place a node makes connections: endpoint settings for peers and
//! bootstrap servers, and one lazily connected channel per peer address.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use p2p_proto::dial::DialSettings;
use tonic::transport::Channel;

/// Peers: connect quickly (a dead peer should not stall a heartbeat round),
/// but let a long stream (a sync batch) run.
const PEER: DialSettings = DialSettings::new(Duration::from_secs(2), Duration::from_secs(30));
/// Bootstrap servers.
const BOOTSTRAP: DialSettings = DialSettings::new(Duration::from_secs(3), Duration::from_secs(10));

/// Channels to peers, created on first use and shared by every task.
#[derive(Debug, Default)]
pub struct Dialer {
    channels: Mutex<HashMap<String, Channel>>,
}

impl Dialer {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Channel>> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The channel to the peer at `address` (canonical), connecting lazily;
    /// None when the address cannot be dialed at all.
    pub fn peer(&self, address: &str) -> Option<Channel> {
        let mut channels = self.lock();
        if let Some(c) = channels.get(address) {
            return Some(c.clone());
        }
        let channel = PEER.lazy(address).ok()?;
        channels.insert(address.to_string(), channel.clone());
        Some(channel)
    }

    /// Drops the channels of peers `keep` rejects (forgotten or evicted), so
    /// the map follows the peer table instead of growing forever.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock().retain(|a, _| keep(a));
    }

    /// A fresh connection to a bootstrap server.
    pub async fn bootstrap(&self, address: &str) -> Result<Channel, String> {
        BOOTSTRAP.connect(address).await.map_err(|e| format!("connect to bootstrap {address}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_channel_per_address_and_forgotten_ones_are_dropped() {
        let d = Dialer::default();
        assert!(d.peer("a:1").is_some());
        assert!(d.peer("b:1").is_some());
        assert!(d.peer("not an address").is_none());
        assert_eq!(d.lock().len(), 2);
        d.retain(|a| a == "a:1");
        assert_eq!(d.lock().keys().cloned().collect::<Vec<_>>(), ["a:1"]);
    }
}
