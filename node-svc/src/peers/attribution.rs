//! Whether a request may be attributed to the sender it names.
//!
//! `Sender.address` is self-declared. Believing it blindly would let anyone
//! send garbage "as" an honest node and get that node banned, or make us
//! learn and dial arbitrary addresses. A claim is accepted only when the
//! claimed host is (or resolves to) the IP the request came from; otherwise
//! the request is handled as anonymous: no learning, no scoring, no fetching.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use p2p_proto::address::{Host, PeerAddress};

/// How long a DNS answer is trusted.
const TTL: Duration = Duration::from_secs(30);
/// Most names cached.
const MAX_CACHED: usize = 4096;

/// Checks claims against connection addresses, caching DNS answers.
#[derive(Debug, Default)]
pub struct SenderCheck {
    cache: Mutex<HashMap<String, (Vec<IpAddr>, Instant)>>,
}

fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    let norm = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    norm(a) == norm(b)
}

impl SenderCheck {
    /// True when `claimed` (host:port) names the host `remote` connected from.
    pub async fn vouches(&self, claimed: &str, remote: Option<SocketAddr>) -> bool {
        let (Some(remote), Ok(addr)) = (remote, PeerAddress::parse(claimed)) else { return false };
        let name = match &addr.host {
            Host::V4(ip) => return same_ip(IpAddr::V4(*ip), remote.ip()),
            Host::V6(ip) => return same_ip(IpAddr::V6(*ip), remote.ip()),
            Host::Dns(name) => name.clone(),
        };
        let cached = {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.get(&name).filter(|(_, at)| at.elapsed() < TTL).map(|(ips, _)| ips.clone())
        };
        let ips = match cached {
            Some(ips) => ips,
            None => {
                let lookup = tokio::net::lookup_host((name.as_str(), addr.port));
                let ips: Vec<IpAddr> = match tokio::time::timeout(Duration::from_secs(2), lookup).await {
                    Ok(Ok(found)) => found.map(|s| s.ip()).collect(),
                    _ => Vec::new(),
                };
                let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                if cache.len() >= MAX_CACHED {
                    cache.retain(|_, (_, at)| at.elapsed() < TTL);
                    if cache.len() >= MAX_CACHED {
                        cache.clear();
                    }
                }
                cache.insert(name, (ips.clone(), Instant::now()));
                ips
            }
        };
        ips.into_iter().any(|ip| same_ip(ip, remote.ip()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(ip: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.parse().unwrap(), 55555))
    }

    #[tokio::test]
    async fn only_a_claim_matching_the_connection_is_believed() {
        let check = SenderCheck::default();
        assert!(check.vouches("127.0.0.1:3000", remote("127.0.0.1")).await);
        assert!(check.vouches("127.0.0.1:3000", remote("::ffff:127.0.0.1")).await, "v4-mapped v6");
        assert!(!check.vouches("10.1.2.3:3000", remote("127.0.0.1")).await);
        assert!(!check.vouches("127.0.0.1:3000", None).await, "no connection address, no attribution");
        assert!(!check.vouches("not an address", remote("127.0.0.1")).await);
        assert!(check.vouches("localhost:3000", remote("127.0.0.1")).await, "DNS names are resolved");
        assert!(!check.vouches("localhost:3000", remote("10.9.9.9")).await);
    }
}
