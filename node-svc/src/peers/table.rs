//! The peer table: every peer a node knows, its state and what it last told us.
//!
//! Pure bookkeeping behind a `std::sync::Mutex` (never held across an
//! `.await`); the tasks that dial peers live in [`crate::node`].

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use p2p_proto::node::{PeerInfo, PeerSource, PeerState};
use rand::seq::IndexedRandom;
use tonic::transport::{Channel, Endpoint};

/// Score at or below which a peer is banned.
pub const BAN_SCORE: i32 = -100;
/// Penalty for an invalid block or malformed message.
pub const INVALID_BLOCK_PENALTY: i32 = -50;
/// How long a ban lasts.
pub const BAN_DURATION_MS: u64 = 10 * 60 * 1000;

/// One known peer.
#[derive(Debug, Clone)]
pub struct PeerEntry {
    pub address: String,
    pub node_id: String,
    pub state: PeerState,
    pub source: PeerSource,
    pub last_seen_ms: u64,
    pub failures: u32,
    pub best_height: u64,
    pub best_tip: Vec<u8>,
    pub best_work: u128,
    pub score: i32,
    pub banned_until_ms: u64,
    /// Earliest time the next dial may happen (backoff while failing).
    pub next_attempt_ms: u64,
    channel: Channel,
}

impl PeerEntry {
    pub fn to_info(&self) -> PeerInfo {
        PeerInfo {
            address: self.address.clone(),
            node_id: self.node_id.clone(),
            state: self.state as i32,
            source: self.source as i32,
            last_seen_unix_ms: self.last_seen_ms,
            consecutive_failures: self.failures,
            best_height: self.best_height,
            best_tip_hash: self.best_tip.clone(),
            score: self.score,
        }
    }

    /// Worth sending blocks and pings to.
    pub fn is_usable(&self) -> bool {
        matches!(self.state, PeerState::Connecting | PeerState::Active)
    }
}

/// What a peer said about its chain.
#[derive(Debug, Clone)]
pub struct PeerTip {
    pub node_id: String,
    pub height: u64,
    pub tip: Vec<u8>,
    pub work: u128,
}

/// Bounds on the table.
#[derive(Debug, Clone, Copy)]
pub struct PeerLimits {
    /// Known peers kept in all (the address book).
    pub max_peers: usize,
    /// Peers that reached us first, kept at most; over it the least useful goes.
    pub max_inbound: usize,
    /// Peers we dial (ping) ourselves, picked across sources.
    pub target_outbound: usize,
    /// Missed exchanges in a row before a peer is failing.
    pub max_failures: u32,
    /// First retry delay of a failing peer (doubles, with jitter).
    pub base_backoff: Duration,
}

/// The table. Shared by reference; all methods take `&self`.
#[derive(Debug)]
pub struct PeerTable {
    inner: Mutex<Inner>,
    own_address: String,
    own_node_id: String,
    limits: PeerLimits,
}

#[derive(Debug, Default)]
struct Inner {
    peers: HashMap<String, PeerEntry>,
    /// Addresses found to be this node itself (by node id).
    self_aliases: HashSet<String>,
}

impl PeerTable {
    pub fn new(own_address: String, own_node_id: String, limits: PeerLimits) -> Self {
        PeerTable { inner: Mutex::new(Inner::default()), own_address, own_node_id, limits }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a peer we heard of; returns true if it is new. Our own address,
    /// known aliases of ourselves and invalid addresses are ignored.
    pub fn learn(&self, address: &str, source: PeerSource, node_id: Option<&str>) -> bool {
        let Ok(address) = p2p_proto::address::canonicalize(address) else { return false };
        if address == self.own_address || node_id.is_some_and(|id| id == self.own_node_id) {
            return false;
        }
        let mut inner = self.lock();
        if inner.self_aliases.contains(&address) {
            return false;
        }
        if let Some(p) = inner.peers.get_mut(&address) {
            if let Some(id) = node_id.filter(|id| !id.is_empty()) {
                p.node_id = id.to_string();
            }
            return false;
        }
        if source == PeerSource::Inbound {
            let inbound = inner.peers.values().filter(|p| p.source == PeerSource::Inbound).count();
            if inbound >= self.limits.max_inbound && !evict_one(&mut inner.peers, |p| p.source == PeerSource::Inbound) {
                return false;
            }
        }
        // Configured peers are never evicted to make room.
        if inner.peers.len() >= self.limits.max_peers
            && !evict_one(&mut inner.peers, |p| p.source != PeerSource::Configured)
        {
            return false;
        }
        let Ok(endpoint) = Endpoint::from_shared(p2p_proto::address::grpc_url(&address)) else { return false };
        let channel = endpoint
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .connect_lazy();
        tracing::info!(peer = %address, source = ?source, "peer learned");
        inner.peers.insert(
            address.clone(),
            PeerEntry {
                address,
                node_id: node_id.unwrap_or_default().to_string(),
                state: PeerState::Connecting,
                source,
                last_seen_ms: 0,
                failures: 0,
                best_height: 0,
                best_tip: Vec::new(),
                best_work: 0,
                score: 0,
                banned_until_ms: 0,
                next_attempt_ms: 0,
                channel,
            },
        );
        true
    }

    /// Records a successful exchange. If the peer turns out to be this node
    /// (same node id under another address), it is dropped for good.
    pub fn alive(&self, address: &str, tip: PeerTip, now_ms: u64) {
        let mut inner = self.lock();
        if tip.node_id == self.own_node_id {
            inner.peers.remove(address);
            inner.self_aliases.insert(address.to_string());
            tracing::info!(peer = %address, "peer is this node itself; dropped");
            return;
        }
        let Some(p) = inner.peers.get_mut(address) else { return };
        if p.state == PeerState::Banned {
            return;
        }
        if p.state != PeerState::Active {
            tracing::info!(peer = %address, from = ?p.state, "peer state -> Active");
        }
        p.state = PeerState::Active;
        p.failures = 0;
        p.next_attempt_ms = 0;
        p.last_seen_ms = now_ms;
        if !tip.node_id.is_empty() {
            p.node_id = tip.node_id;
        }
        p.best_height = tip.height;
        p.best_tip = tip.tip;
        p.best_work = tip.work;
    }

    /// Records a failed exchange; after `max_failures` in a row the peer goes
    /// Failing and is retried with exponential backoff and jitter.
    pub fn failed(&self, address: &str, now_ms: u64) {
        let mut inner = self.lock();
        let Some(p) = inner.peers.get_mut(address) else { return };
        if p.state == PeerState::Banned {
            return;
        }
        p.failures = p.failures.saturating_add(1);
        if p.failures >= self.limits.max_failures && p.state != PeerState::Failing {
            tracing::warn!(peer = %address, failures = p.failures, "peer state -> Failing");
            p.state = PeerState::Failing;
        }
        if p.state == PeerState::Failing {
            // Capped at 16x the base so a healed partition reconnects within seconds.
            let exp = p.failures.saturating_sub(self.limits.max_failures).min(4);
            let base = self.limits.base_backoff.as_millis() as u64 * (1u64 << exp);
            let jitter = rand::random_range(0..=base / 2);
            p.next_attempt_ms = now_ms + base + jitter;
        }
    }

    /// Lowers a peer's score; at [`BAN_SCORE`] it is banned for a while.
    /// Returns true if this banned it.
    pub fn penalize(&self, address: &str, amount: i32, why: &str, now_ms: u64) -> bool {
        let mut inner = self.lock();
        let Some(p) = inner.peers.get_mut(address) else { return false };
        p.score = p.score.saturating_add(amount);
        tracing::warn!(peer = %address, score = p.score, reason = why, "peer misbehaved");
        if p.score <= BAN_SCORE && p.state != PeerState::Banned {
            p.state = PeerState::Banned;
            p.banned_until_ms = now_ms + BAN_DURATION_MS;
            tracing::warn!(peer = %address, until_ms = p.banned_until_ms, "peer state -> Banned");
            return true;
        }
        false
    }

    /// Whether blocks from `address` must be refused.
    pub fn is_banned(&self, address: &str, now_ms: u64) -> bool {
        let mut inner = self.lock();
        let Some(p) = inner.peers.get_mut(address) else { return false };
        if p.state == PeerState::Banned && now_ms >= p.banned_until_ms {
            p.state = PeerState::Connecting;
            p.score = 0;
            tracing::info!(peer = %address, "ban expired");
        }
        p.state == PeerState::Banned
    }

    pub fn forget(&self, address: &str) {
        if self.lock().peers.remove(address).is_some() {
            tracing::info!(peer = %address, "peer forgotten");
        }
    }

    /// Peers to ping now (not banned, past their backoff): every inbound
    /// peer, and up to `target_outbound` of the others, taken round-robin
    /// across sources (bootstrap, exchange, cached, configured) so that no
    /// single source supplies them all; within a source, working peers first.
    pub fn due_for_ping(&self, now_ms: u64) -> Vec<(String, Channel)> {
        let inner = self.lock();
        let due = |p: &&PeerEntry| p.state != PeerState::Banned && p.next_attempt_ms <= now_ms;
        let mut out: Vec<(String, Channel)> = inner
            .peers
            .values()
            .filter(|p| p.source == PeerSource::Inbound)
            .filter(due)
            .map(|p| (p.address.clone(), p.channel.clone()))
            .collect();
        let mut by_source: std::collections::BTreeMap<i32, Vec<&PeerEntry>> = Default::default();
        for p in inner.peers.values().filter(|p| p.source != PeerSource::Inbound).filter(due) {
            by_source.entry(p.source as i32).or_default().push(p);
        }
        let rank = |p: &PeerEntry| match p.state {
            PeerState::Active => 0,
            PeerState::Connecting => 1,
            _ => 2,
        };
        let mut queues: Vec<std::vec::IntoIter<&PeerEntry>> = by_source
            .into_values()
            .map(|mut v| {
                v.sort_by_key(|p| (rank(p), u64::MAX - p.last_seen_ms));
                v.into_iter()
            })
            .collect();
        let mut picked = 0;
        while picked < self.limits.target_outbound && !queues.is_empty() {
            queues.retain_mut(|q| match q.next() {
                Some(p) if picked < self.limits.target_outbound => {
                    out.push((p.address.clone(), p.channel.clone()));
                    picked += 1;
                    true
                }
                _ => false,
            });
        }
        out
    }

    /// Peers that answered us, for the on-disk cache.
    pub fn good_peers(&self) -> Vec<crate::peer_cache::CachedPeer> {
        self.lock()
            .peers
            .values()
            .filter(|p| p.state == PeerState::Active)
            .map(|p| crate::peer_cache::CachedPeer {
                address: p.address.clone(),
                node_id: p.node_id.clone(),
                last_seen_ms: p.last_seen_ms,
            })
            .collect()
    }

    /// Up to `fanout` random usable peers except `except`, for gossip.
    pub fn gossip_targets(&self, except: Option<&str>, fanout: usize) -> Vec<(String, Channel)> {
        let inner = self.lock();
        let usable: Vec<&PeerEntry> =
            inner.peers.values().filter(|p| p.is_usable() && Some(p.address.as_str()) != except).collect();
        usable.choose_multiple(&mut rand::rng(), fanout).map(|p| (p.address.clone(), p.channel.clone())).collect()
    }

    pub fn channel(&self, address: &str) -> Option<Channel> {
        self.lock().peers.get(address).map(|p| p.channel.clone())
    }

    /// The usable peer with the most work, if it has more than `than`.
    pub fn best_ahead(&self, than: u128) -> Option<(String, Channel)> {
        self.lock()
            .peers
            .values()
            .filter(|p| p.state == PeerState::Active && p.best_work > than)
            .max_by_key(|p| p.best_work)
            .map(|p| (p.address.clone(), p.channel.clone()))
    }

    /// A random active peer, for peer exchange.
    pub fn random_active(&self) -> Option<(String, Channel)> {
        let inner = self.lock();
        let active: Vec<&PeerEntry> = inner.peers.values().filter(|p| p.state == PeerState::Active).collect();
        active.choose(&mut rand::rng()).map(|p| (p.address.clone(), p.channel.clone()))
    }

    pub fn active_count(&self) -> usize {
        self.lock().peers.values().filter(|p| p.state == PeerState::Active).count()
    }

    pub fn snapshot(&self) -> Vec<PeerEntry> {
        let mut v: Vec<PeerEntry> = self.lock().peers.values().cloned().collect();
        v.sort_by(|a, b| a.address.cmp(&b.address));
        v
    }

    /// A random sample of non-banned peers, for peer exchange.
    pub fn sample(&self, limit: usize) -> Vec<PeerEntry> {
        let inner = self.lock();
        let candidates: Vec<&PeerEntry> = inner.peers.values().filter(|p| p.state != PeerState::Banned).collect();
        candidates.choose_multiple(&mut rand::rng(), limit).map(|p| (*p).clone()).collect()
    }
}

/// Makes room by dropping the least useful peer among those `eligible`:
/// failing before connecting before active, and among those the one with
/// most failures / oldest contact.
fn evict_one(peers: &mut HashMap<String, PeerEntry>, eligible: impl Fn(&PeerEntry) -> bool) -> bool {
    let rank = |p: &PeerEntry| match p.state {
        PeerState::Failing => 0,
        PeerState::Connecting => 1,
        PeerState::Active => 2,
        // Banned entries are kept so the ban holds.
        PeerState::Banned | PeerState::Unspecified => 3,
    };
    let victim = peers
        .values()
        .filter(|p| rank(p) < 3 && eligible(p))
        .min_by_key(|p| (rank(p), u32::MAX - p.failures, p.last_seen_ms))
        .map(|p| p.address.clone());
    match victim {
        Some(a) => {
            tracing::info!(peer = %a, "peer evicted to make room");
            peers.remove(&a).is_some()
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> PeerLimits {
        PeerLimits {
            max_peers: 3,
            max_inbound: 2,
            target_outbound: 2,
            max_failures: 2,
            base_backoff: Duration::from_millis(100),
        }
    }

    fn table() -> PeerTable {
        PeerTable::new("me:1".into(), "me".into(), limits())
    }

    fn tip(id: &str, work: u128) -> PeerTip {
        PeerTip { node_id: id.into(), height: 1, tip: vec![1], work }
    }

    #[tokio::test]
    async fn self_and_invalid_addresses_are_never_learned() {
        let t = table();
        assert!(!t.learn("me:1", PeerSource::Bootstrap, None));
        assert!(!t.learn("other:1", PeerSource::Bootstrap, Some("me")));
        assert!(!t.learn("bad address", PeerSource::Bootstrap, None));
        assert!(t.learn("a:1", PeerSource::Bootstrap, None));
        assert!(!t.learn("A:1", PeerSource::Inbound, None), "same canonical address");
        // Discovered by node id under another address: dropped and remembered.
        t.alive("a:1", tip("me", 5), 10);
        assert!(t.snapshot().is_empty());
        assert!(!t.learn("a:1", PeerSource::Bootstrap, None));
    }

    #[tokio::test]
    async fn misses_make_a_peer_failing_with_backoff_and_a_reply_revives_it() {
        let t = table();
        t.learn("a:1", PeerSource::Bootstrap, None);
        t.alive("a:1", tip("x", 5), 1_000);
        t.failed("a:1", 2_000);
        assert_eq!(t.snapshot()[0].state, PeerState::Active);
        t.failed("a:1", 3_000);
        let p = &t.snapshot()[0];
        assert_eq!(p.state, PeerState::Failing);
        assert!(p.next_attempt_ms >= 3_100 && p.next_attempt_ms <= 3_150, "{}", p.next_attempt_ms);
        assert!(t.due_for_ping(3_000).is_empty());
        assert_eq!(t.due_for_ping(3_200).len(), 1);
        assert!(t.gossip_targets(None, 8).is_empty(), "failing peers get no gossip");
        t.alive("a:1", tip("x", 5), 4_000);
        assert_eq!(t.snapshot()[0].state, PeerState::Active);
    }

    #[tokio::test]
    async fn misbehaviour_bans_until_the_ban_expires() {
        let t = table();
        t.learn("a:1", PeerSource::Inbound, None);
        assert!(!t.penalize("a:1", INVALID_BLOCK_PENALTY, "bad block", 0));
        assert!(t.penalize("a:1", INVALID_BLOCK_PENALTY, "bad block", 0));
        assert!(t.is_banned("a:1", 1));
        t.alive("a:1", tip("x", 5), 2);
        assert!(t.is_banned("a:1", 3), "a reply does not lift a ban");
        assert!(!t.is_banned("a:1", BAN_DURATION_MS + 1));
    }

    #[tokio::test]
    async fn the_table_is_bounded_and_evicts_the_least_useful() {
        let t = table();
        for a in ["a:1", "b:1", "c:1"] {
            t.learn(a, PeerSource::Bootstrap, None);
        }
        t.alive("a:1", tip("a", 1), 1);
        t.alive("b:1", tip("b", 1), 1);
        assert!(t.learn("d:1", PeerSource::Bootstrap, None));
        let addrs: Vec<_> = t.snapshot().into_iter().map(|p| p.address).collect();
        assert_eq!(addrs, ["a:1", "b:1", "d:1"], "the never-reached peer made room");
        t.alive("a:1", tip("a", 9), 2);
        assert_eq!(t.best_ahead(5).map(|(a, _)| a).as_deref(), Some("a:1"));
        assert!(t.best_ahead(9).is_none());
    }

    #[tokio::test]
    async fn inbound_peers_are_capped_and_the_least_useful_one_makes_room() {
        let t = PeerTable::new("me:1".into(), "me".into(), PeerLimits { max_peers: 100, ..limits() });
        t.learn("in1:1", PeerSource::Inbound, None);
        t.learn("in2:1", PeerSource::Inbound, None);
        t.alive("in1:1", tip("1", 1), 5);
        for i in 3..20 {
            t.learn(&format!("in{i}:1"), PeerSource::Inbound, None);
        }
        let inbound: Vec<String> =
            t.snapshot().into_iter().filter(|p| p.source == PeerSource::Inbound).map(|p| p.address).collect();
        assert_eq!(inbound.len(), 2);
        assert!(inbound.contains(&"in1:1".to_string()), "the working inbound peer is kept: {inbound:?}");
    }

    #[tokio::test]
    async fn outbound_dials_are_bounded_and_spread_over_sources() {
        let t =
            PeerTable::new("me:1".into(), "me".into(), PeerLimits { max_peers: 100, target_outbound: 4, ..limits() });
        for i in 0..10 {
            t.learn(&format!("boot{i}:1"), PeerSource::Bootstrap, None);
        }
        t.learn("pex1:1", PeerSource::PeerExchange, None);
        t.learn("pex2:1", PeerSource::PeerExchange, None);
        t.learn("in1:1", PeerSource::Inbound, None);
        let dialed: Vec<String> = t.due_for_ping(0).into_iter().map(|(a, _)| a).collect();
        assert_eq!(dialed.len(), 5, "4 outbound + every inbound: {dialed:?}");
        assert!(dialed.contains(&"in1:1".to_string()));
        assert_eq!(dialed.iter().filter(|a| a.starts_with("pex")).count(), 2, "{dialed:?}");
        assert_eq!(dialed.iter().filter(|a| a.starts_with("boot")).count(), 2, "{dialed:?}");
    }
}
