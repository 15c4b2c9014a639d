//! The one place a node makes connections: endpoint settings for peers and
//! bootstrap servers, and one lazily connected link per peer address. With
//! TLS every handshake must prove the node id the peer table expects at the
//! address (when it expects one), and the link reports the id it proved.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use p2p_proto::dial::{DialSettings, Link, Target};
use p2p_proto::tls::{ClientTls, PeerIdentity};

/// Peers: connect quickly (a dead peer should not stall a heartbeat round),
/// but let a long stream (a sync batch) run.
const PEER: DialSettings = DialSettings::new(Duration::from_secs(2), Duration::from_secs(30));
/// Bootstrap servers.
const BOOTSTRAP: DialSettings = DialSettings::new(Duration::from_secs(3), Duration::from_secs(10));

/// Links to peers, created on first use and shared by every task.
#[derive(Debug)]
pub struct Dialer {
    tls: ClientTls,
    /// Per address: the node id the link insists on, and the link.
    links: Mutex<HashMap<String, (Option<String>, Link)>>,
}

impl Dialer {
    /// Dials with `tls` (a node presents its own certificate).
    pub fn new(tls: ClientTls) -> Self {
        Dialer { tls, links: Mutex::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Option<String>, Link)>> {
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The link to the peer at `address` (canonical) whose handshake must
    /// prove `expected` (when known), connecting lazily; None when the
    /// address cannot be dialed at all. A changed expectation makes a new link.
    pub fn peer(&self, address: &str, expected: Option<&str>) -> Option<Link> {
        let mut links = self.lock();
        if let Some((want, link)) = links.get(address)
            && want.as_deref() == expected
        {
            return Some(link.clone());
        }
        let link = match PEER.lazy(address, &self.tls, expected) {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(peer = %address, error = %e, "cannot dial");
                return None;
            }
        };
        links.insert(address.to_string(), (expected.map(str::to_string), link.clone()));
        Some(link)
    }

    /// The identity the peer at `address` proved in our latest handshake.
    pub fn proven(&self, address: &str) -> Option<PeerIdentity> {
        self.lock().get(address).and_then(|(_, l)| l.proven())
    }

    /// Whether links are TLS (node ids are proven, not claimed).
    pub fn is_tls(&self) -> bool {
        matches!(self.tls, ClientTls::Tls { .. })
    }

    /// Drops the links of peers `keep` rejects (forgotten or evicted), so
    /// the map follows the peer table instead of growing forever.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock().retain(|a, _| keep(a));
    }

    /// A fresh connection to a bootstrap server, `[NODE_ID@]host:port`:
    /// with an id, the handshake must prove it (a pinned bootstrap).
    pub async fn bootstrap(&self, target: &str) -> Result<Link, String> {
        let t = Target::parse(target)?;
        BOOTSTRAP
            .connect(&t.address, &self.tls, t.node_id.as_deref())
            .await
            .map_err(|e| format!("connect to bootstrap {target}: {}", p2p_proto::dial::error_chain(&e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_link_per_address_and_expectation_and_forgotten_ones_are_dropped() {
        let d = Dialer::new(ClientTls::anonymous());
        let a = d.peer("a:1", None).unwrap();
        assert!(d.peer("b:1", None).is_some());
        assert!(d.peer("not an address", None).is_none());
        assert_eq!(d.lock().len(), 2);
        // The same expectation reuses the link; a new one replaces it.
        assert!(d.lock().get("a:1").is_some_and(|(w, _)| w.is_none()));
        let id = "00".repeat(20);
        d.peer("a:1", Some(&id)).unwrap();
        assert_eq!(d.lock().get("a:1").and_then(|(w, _)| w.clone()), Some(id));
        drop(a);
        d.retain(|a| a == "a:1");
        assert_eq!(d.lock().keys().cloned().collect::<Vec<_>>(), ["a:1"]);
        assert!(d.proven("a:1").is_none(), "nothing proven before a handshake");
    }
}
