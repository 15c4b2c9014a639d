//! Whether a request may be attributed to the sender it names.
//!
//! `Sender.address` is self-declared. Believing it blindly would make us
//! learn and dial arbitrary addresses. A claim is accepted only when the
//! claimed host is (or resolves to) the IP the request came from; otherwise
//! the request is handled as anonymous. Even a believed claim only lets the
//! request do harmless things (be learned as a candidate peer, prompt a
//! fetch from that address): anyone sharing the IP could have made it, so
//! nobody is ever scored or dropped on an inbound claim (see
//! [`crate::import`]).
//!
//! Names are never resolved on the request path: a sender picks the name,
//! and with DNS black-holed each lookup would hold a thread for seconds. A
//! claim naming an unresolved host is anonymous for now, and the name is
//! queued (bounded) for one resolver thread of our own; later requests find
//! the answer in a bounded cache.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use p2p_proto::address::{Host, PeerAddress};

/// How long a DNS answer is trusted.
const TTL: Duration = Duration::from_secs(30);
/// Most names cached; the oldest answer goes first.
pub const MAX_CACHED: usize = 4096;
/// Most names waiting for the resolver; more are dropped (asked again later).
pub const MAX_PENDING: usize = 64;

/// Turns a name and port into addresses; blocking is fine (it runs on the
/// resolver's own thread).
pub type Resolve = Arc<dyn Fn(&str, u16) -> Vec<IpAddr> + Send + Sync>;

fn system_resolve(name: &str, port: u16) -> Vec<IpAddr> {
    (name, port).to_socket_addrs().map(|it| it.map(|s| s.ip()).collect()).unwrap_or_default()
}

/// Checks claims against connection addresses.
pub struct SenderCheck {
    shared: Arc<Shared>,
    resolve: Resolve,
    queue: Mutex<Option<SyncSender<(String, u16)>>>,
}

impl std::fmt::Debug for SenderCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SenderCheck").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Shared {
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    answers: HashMap<String, (Vec<IpAddr>, Instant)>,
    /// Insertion order, for eviction.
    order: VecDeque<String>,
    /// Names queued or being resolved (not queued twice).
    pending: std::collections::HashSet<String>,
}

impl Cache {
    fn insert(&mut self, name: String, ips: Vec<IpAddr>) {
        self.pending.remove(&name);
        if self.answers.insert(name.clone(), (ips, Instant::now())).is_none() {
            self.order.push_back(name);
        }
        while self.answers.len() > MAX_CACHED {
            let Some(old) = self.order.pop_front() else { break };
            self.answers.remove(&old);
        }
    }
}

impl Default for SenderCheck {
    fn default() -> Self {
        Self::with_resolver(Arc::new(system_resolve))
    }
}

fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    let norm = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    norm(a) == norm(b)
}

impl SenderCheck {
    /// A check that resolves names with `resolve` (tests substitute one).
    pub fn with_resolver(resolve: Resolve) -> Self {
        SenderCheck { shared: Arc::default(), resolve, queue: Mutex::new(None) }
    }

    /// True when `claimed` (host:port) names the host `remote` connected
    /// from, as far as is known now; never waits.
    pub fn vouches(&self, claimed: &str, remote: Option<SocketAddr>) -> bool {
        let (Some(remote), Ok(addr)) = (remote, PeerAddress::parse(claimed)) else { return false };
        let name = match &addr.host {
            Host::V4(ip) => return same_ip(IpAddr::V4(*ip), remote.ip()),
            Host::V6(ip) => return same_ip(IpAddr::V6(*ip), remote.ip()),
            Host::Dns(name) => name.clone(),
        };
        let known = {
            let mut cache = self.shared.cache.lock().unwrap_or_else(|p| p.into_inner());
            match cache.answers.get(&name) {
                Some((ips, at)) if at.elapsed() < TTL => Some(ips.iter().any(|ip| same_ip(*ip, remote.ip()))),
                _ if cache.pending.contains(&name) => Some(false),
                _ => {
                    if cache.pending.len() < MAX_PENDING {
                        cache.pending.insert(name.clone());
                        None
                    } else {
                        Some(false)
                    }
                }
            }
        };
        match known {
            Some(v) => v,
            None => {
                self.enqueue(name, addr.port);
                false
            }
        }
    }

    /// Names waiting for (or being handled by) the resolver.
    pub fn pending(&self) -> usize {
        self.shared.cache.lock().unwrap_or_else(|p| p.into_inner()).pending.len()
    }

    fn enqueue(&self, name: String, port: u16) {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let tx = queue.get_or_insert_with(|| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<(String, u16)>(MAX_PENDING);
            let (shared, resolve) = (self.shared.clone(), self.resolve.clone());
            let spawned = std::thread::Builder::new().name("resolver".into()).spawn(move || {
                // Ends when the SenderCheck (the only sender) is dropped.
                while let Ok((name, port)) = rx.recv() {
                    let ips = resolve(&name, port);
                    shared.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(name, ips);
                }
            });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start the resolver thread; DNS-named senders stay anonymous");
            }
            tx
        });
        if let Err(TrySendError::Full((name, _)) | TrySendError::Disconnected((name, _))) = tx.try_send((name, port)) {
            self.shared.cache.lock().unwrap_or_else(|p| p.into_inner()).pending.remove(&name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(ip: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.parse().unwrap(), 55555))
    }

    async fn eventually(f: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if f() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }

    #[tokio::test]
    async fn only_a_claim_matching_the_connection_is_believed() {
        let check = SenderCheck::default();
        assert!(check.vouches("127.0.0.1:3000", remote("127.0.0.1")));
        assert!(check.vouches("127.0.0.1:3000", remote("::ffff:127.0.0.1")), "v4-mapped v6");
        assert!(!check.vouches("10.1.2.3:3000", remote("127.0.0.1")));
        assert!(!check.vouches("127.0.0.1:3000", None), "no connection address, no attribution");
        assert!(!check.vouches("not an address", remote("127.0.0.1")));
        // A name is resolved in the background: anonymous at first, believed once known.
        assert!(eventually(|| check.vouches("localhost:3000", remote("127.0.0.1"))).await, "DNS names are resolved");
        assert!(!check.vouches("localhost:3000", remote("10.9.9.9")));
    }

    #[tokio::test]
    async fn a_black_holed_resolver_never_holds_up_a_request_and_its_queue_is_bounded() {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = calls.clone();
        let hang: Resolve = Arc::new(move |_, _| {
            seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            std::thread::sleep(Duration::from_secs(3600));
            Vec::new()
        });
        let check = SenderCheck::with_resolver(hang);
        // Every claim is answered at once although the resolver hangs for an
        // hour (the old code waited up to 2 s per name on tokio's blocking pool).
        for i in 0..10_000 {
            assert!(!check.vouches(&format!("host{i}.example:3000"), remote("127.0.0.1")));
        }
        assert!(check.pending() <= MAX_PENDING, "{} names pending", check.pending());
        assert!(eventually(|| calls.load(std::sync::atomic::Ordering::Relaxed) == 1).await);
        // Chain reads use tokio's blocking pool; it is untouched.
        let read = tokio::task::spawn_blocking(|| 7);
        assert_eq!(tokio::time::timeout(Duration::from_secs(5), read).await.unwrap().unwrap(), 7);
    }

    #[test]
    fn the_cache_is_bounded_and_evicts_the_oldest() {
        let mut cache = Cache::default();
        for i in 0..MAX_CACHED + 10 {
            cache.insert(format!("n{i}"), Vec::new());
        }
        assert_eq!(cache.answers.len(), MAX_CACHED);
        assert!(!cache.answers.contains_key("n0"));
        assert!(cache.answers.contains_key(&format!("n{}", MAX_CACHED + 9)));
    }
}
