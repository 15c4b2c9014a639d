//! The peer table: every peer a node knows, its state and what it last told us.
//!
//! Pure bookkeeping: no network, no channels, no runtime. Time comes in as
//! arguments and randomness from a seeded generator, so it is unit-tested
//! directly and a simulator can drive it. The tasks that dial peers ask the
//! [`super::Dialer`] for a link to an address this table hands out.
//!
//! Entries are addresses (what we dial), each with the node id that should
//! answer there: verified once our own handshake proved it. Scores and bans
//! key on the culprit: a node id a handshake proved (inbound or outbound),
//! or, without TLS, the address we dialed. Nobody is scored for what
//! someone else claimed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use p2p_proto::node::{PeerSource, PeerState};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;

use super::cache::CachedPeer;
pub use super::entry::{PeerEntry, PeerLimits, PeerTip};

/// Score at or below which a peer is banned.
pub const BAN_SCORE: i32 = -100;
/// Penalty for an invalid block or malformed message.
pub const INVALID_BLOCK_PENALTY: i32 = -50;
/// How long a ban lasts.
pub const BAN_DURATION_MS: u64 = 10 * 60 * 1000;
/// Self aliases remembered at most (addresses found to be this node); the
/// oldest is forgotten first.
const MAX_SELF_ALIASES: usize = 64;
/// Bans remembered at most; when full, the ban ending soonest is lifted early.
pub const MAX_BANS: usize = 4096;
/// Scores remembered at most; when full, the mildest is forgotten.
pub const MAX_SCORES: usize = 4096;

/// How far a node id given for an address is believed, by who gave it: the
/// operator over the bootstrap (or our own earlier handshakes, cached) over
/// what a peer said. A better source may correct a hint; nothing corrects
/// an id our own handshake proved.
pub fn id_trust(source: PeerSource) -> u8 {
    match source {
        PeerSource::Configured => 3,
        PeerSource::Bootstrap | PeerSource::Cached => 2,
        _ => 1,
    }
}

/// The table. Shared by reference; all methods take `&self`.
#[derive(Debug)]
pub struct PeerTable {
    inner: Mutex<Inner>,
    own_address: String,
    own_node_id: String,
    limits: PeerLimits,
}

#[derive(Debug)]
struct Inner {
    peers: HashMap<String, PeerEntry>,
    /// Retry schedules of failing peers.
    backoffs: HashMap<String, ExponentialBackoff>,
    /// Addresses found to be this node itself (by node id), oldest first.
    self_aliases: VecDeque<String>,
    /// Banned culprits (node ids, or addresses without TLS) and when each
    /// ban ends. Kept apart from `peers` so bans never take a slot of the
    /// table or of the inbound share.
    bans: HashMap<String, u64>,
    /// Misbehaviour scores by culprit (only non-zero ones are kept).
    scores: HashMap<String, i32>,
    rng: StdRng,
}

impl PeerTable {
    /// A table for the node at `own_address` / `own_node_id`; `seed` makes
    /// its random choices (gossip targets, samples, jitter) reproducible.
    pub fn new(own_address: String, own_node_id: String, limits: PeerLimits, seed: u64) -> Self {
        let inner = Inner {
            peers: HashMap::new(),
            backoffs: HashMap::new(),
            self_aliases: VecDeque::new(),
            bans: HashMap::new(),
            scores: HashMap::new(),
            rng: StdRng::seed_from_u64(seed),
        };
        PeerTable { inner: Mutex::new(inner), own_address, own_node_id, limits }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a peer we heard of; returns true if it is new. Our own address
    /// or id, known aliases of ourselves, banned addresses and ids, ids
    /// already verified at another address, and invalid addresses are
    /// ignored. `node_id` is who should answer at `address`: it fills in an
    /// unknown one, and corrects one from a less trusted source
    /// ([`id_trust`]), but never one our own handshake proved.
    pub fn learn(&self, address: &str, source: PeerSource, node_id: Option<&str>) -> bool {
        let Ok(address) = p2p_proto::address::canonicalize(address) else { return false };
        let node_id = node_id.filter(|id| !id.is_empty());
        if address == self.own_address || node_id.is_some_and(|id| id == self.own_node_id) {
            return false;
        }
        let mut inner = self.lock();
        if inner.self_aliases.contains(&address)
            || inner.bans.contains_key(&address)
            || node_id.is_some_and(|id| inner.bans.contains_key(id))
        {
            return false;
        }
        if let Some(p) = inner.peers.get_mut(&address) {
            if let Some(id) = node_id
                && !p.verified
                && p.node_id != id
                && (p.node_id.is_empty() || id_trust(source) > p.id_trust)
            {
                p.node_id = id.to_string();
                p.id_trust = id_trust(source);
            }
            return false;
        }
        if let Some(id) = node_id
            && inner.peers.values().any(|p| p.verified && p.node_id == id)
        {
            // A node we already reach elsewhere: one entry per node.
            return false;
        }
        if source == PeerSource::Inbound {
            let inbound = inner.peers.values().filter(|p| p.source == PeerSource::Inbound).count();
            if inbound >= self.limits.max_inbound && !inner.evict_one(|p| p.source == PeerSource::Inbound) {
                return false;
            }
        }
        // Configured peers are never evicted to make room.
        if inner.peers.len() >= self.limits.max_peers && !inner.evict_one(|p| p.source != PeerSource::Configured) {
            return false;
        }
        tracing::info!(peer = %address, source = ?source, node_id = node_id.unwrap_or(""), "peer learned");
        let entry = PeerEntry::new(address.clone(), node_id.unwrap_or_default(), source);
        inner.peers.insert(address, entry);
        true
    }

    /// Records a successful exchange *we* started (our ping answered by
    /// whoever listens at `address`); inbound claims never come here.
    /// `proven` says the tip's node id was proven by our TLS handshake (in
    /// plaintext it is only what the answer said). If the peer turns out to
    /// be this node (same node id under another address), the address is
    /// remembered as an alias of ourselves; a banned node is dropped.
    pub fn alive(&self, address: &str, tip: PeerTip, proven: bool, now_ms: u64) {
        let mut inner = self.lock();
        if tip.node_id == self.own_node_id {
            inner.remove(address);
            if !inner.self_aliases.iter().any(|a| a == address) {
                if inner.self_aliases.len() >= MAX_SELF_ALIASES {
                    inner.self_aliases.pop_front();
                }
                inner.self_aliases.push_back(address.to_string());
            }
            tracing::info!(peer = %address, "peer is this node itself; dropped");
            return;
        }
        if inner.bans.get(&tip.node_id).is_some_and(|until| now_ms < *until) {
            inner.remove(address);
            tracing::info!(peer = %address, node_id = %tip.node_id, "peer is a banned node; dropped");
            return;
        }
        inner.backoffs.remove(address);
        let Some(p) = inner.peers.get_mut(address) else { return };
        if p.state != PeerState::Active {
            tracing::info!(peer = %address, from = ?p.state, node_id = %tip.node_id, verified = proven, "peer state -> Active");
        }
        p.state = PeerState::Active;
        p.failures = 0;
        p.next_attempt_ms = 0;
        p.last_seen_ms = now_ms;
        // An answer without a handshake never overrides a proven id.
        if !tip.node_id.is_empty() && (proven || !p.verified) {
            p.node_id = tip.node_id;
            p.verified = proven;
        }
        p.best_height = tip.height;
        p.best_tip = tip.tip;
        p.best_work = tip.work;
    }

    /// Records a failed exchange; after `max_failures` in a row the peer goes
    /// Failing and is retried with exponential backoff and jitter. A peer
    /// that never answered at all is forgotten after `max_dial_attempts`
    /// (configured peers are kept).
    pub fn failed(&self, address: &str, now_ms: u64) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(p) = inner.peers.get_mut(address) else { return };
        p.failures = p.failures.saturating_add(1);
        if p.last_seen_ms == 0 && p.failures >= self.limits.max_dial_attempts && p.source != PeerSource::Configured {
            tracing::info!(peer = %address, tries = p.failures, "peer never answered; forgotten");
            inner.remove(address);
            return;
        }
        if p.failures >= self.limits.max_failures && p.state != PeerState::Failing {
            tracing::warn!(peer = %address, failures = p.failures, "peer state -> Failing");
            p.state = PeerState::Failing;
        }
        if p.state == PeerState::Failing {
            let base = self.limits.base_backoff;
            let rng = &mut inner.rng;
            let schedule = inner.backoffs.entry(address.to_string()).or_insert_with(|| {
                // Capped so a healed partition reconnects within seconds.
                ExponentialBuilder::new()
                    .with_min_delay(base)
                    .with_max_delay(base * 8)
                    .with_jitter()
                    .with_jitter_seed(rand::Rng::random(rng))
                    .without_max_times()
                    .build()
            });
            let delay = schedule.next().unwrap_or(base * 8);
            p.next_attempt_ms = now_ms + delay.as_millis() as u64;
        }
    }

    /// Lowers `culprit`'s score (a node id a handshake proved, or without
    /// TLS the address we dialed); at [`BAN_SCORE`] it is banned for
    /// [`BAN_DURATION_MS`]. Returns true if this banned it. Only for what
    /// the culprit itself sent: never for what someone claimed about it.
    pub fn penalize(&self, culprit: &str, amount: i32, why: &str, now_ms: u64) -> bool {
        let mut inner = self.lock();
        let score = {
            let s = inner.scores.entry(culprit.to_string()).or_insert(0);
            *s = s.saturating_add(amount);
            *s
        };
        tracing::warn!(peer = %culprit, score, reason = why, "peer misbehaved");
        if inner.scores.len() > MAX_SCORES {
            // Forget the mildest record (never the one just made).
            let mildest = inner
                .scores
                .iter()
                .filter(|(k, _)| k.as_str() != culprit)
                .max_by_key(|(k, v)| (**v, (*k).clone()))
                .map(|(k, _)| k.clone());
            if let Some(k) = mildest {
                inner.scores.remove(&k);
            }
        }
        if score > BAN_SCORE {
            return false;
        }
        inner.ban(culprit, now_ms + BAN_DURATION_MS);
        true
    }

    /// Bans `culprit` (a node id or an address) until `until_ms`, as an
    /// operator does; returns when the ban ends.
    pub fn ban(&self, culprit: &str, until_ms: u64) -> u64 {
        self.lock().ban(culprit, until_ms);
        until_ms
    }

    /// Lifts a ban (and forgets the score); true if there was one.
    pub fn unban(&self, culprit: &str) -> bool {
        let mut inner = self.lock();
        inner.scores.remove(culprit);
        let lifted = inner.bans.remove(culprit).is_some();
        if lifted {
            tracing::info!(peer = %culprit, "ban lifted by the operator");
        }
        lifted
    }

    /// Whether `address`, or the node our handshake proved is there, is banned now.
    pub fn is_banned(&self, address: &str, now_ms: u64) -> bool {
        let inner = self.lock();
        let banned = |key: &str| inner.bans.get(key).is_some_and(|until| now_ms < *until);
        banned(address) || inner.peers.get(address).is_some_and(|p| p.verified && banned(&p.node_id))
    }

    /// Whether the node `node_id` is banned now.
    pub fn is_node_banned(&self, node_id: &str, now_ms: u64) -> bool {
        self.lock().bans.get(node_id).is_some_and(|until| now_ms < *until)
    }

    /// Lifts the bans that have run out (the heartbeat calls this each
    /// round, so a ban ends on time whether or not the peer speaks again);
    /// returns how many.
    pub fn expire_bans(&self, now_ms: u64) -> usize {
        let mut inner = self.lock();
        let before = inner.bans.len();
        let mut lifted = Vec::new();
        inner.bans.retain(|culprit, until| {
            let keep = now_ms < *until;
            if !keep {
                tracing::info!(peer = %culprit, "ban expired");
                lifted.push(culprit.clone());
            }
            keep
        });
        for culprit in lifted {
            inner.scores.remove(&culprit);
        }
        before - inner.bans.len()
    }

    /// Bans in force (or not yet expired by [`PeerTable::expire_bans`]).
    pub fn ban_count(&self) -> usize {
        self.lock().bans.len()
    }

    /// The node id expected at `address` (proven or not), if any.
    pub fn node_id_of(&self, address: &str) -> Option<String> {
        self.lock().peers.get(address).map(|p| p.node_id.clone()).filter(|id| !id.is_empty())
    }

    /// Where to reach the node `node_id`: the address our handshake proved
    /// it at, else one it was said to be at.
    pub fn address_of(&self, node_id: &str) -> Option<String> {
        let inner = self.lock();
        let mut candidates: Vec<&PeerEntry> = inner.peers.values().filter(|p| p.node_id == node_id).collect();
        candidates.sort_by_key(|p| (!p.verified, p.address.clone()));
        candidates.first().map(|p| p.address.clone())
    }

    pub fn forget(&self, address: &str) {
        if self.lock().remove(address) {
            tracing::info!(peer = %address, "peer forgotten");
        }
    }

    pub fn contains(&self, address: &str) -> bool {
        self.lock().peers.contains_key(address)
    }

    /// Peers by (state, direction), and how many; direction is `inbound`
    /// for peers that reached us first, `outbound` for the rest.
    pub fn census(&self) -> Vec<((&'static str, &'static str), usize)> {
        let inner = self.lock();
        let mut counts: std::collections::BTreeMap<(&'static str, &'static str), usize> = Default::default();
        for p in inner.peers.values() {
            let state = match p.state {
                PeerState::Connecting => "connecting",
                PeerState::Active => "active",
                PeerState::Failing => "failing",
                PeerState::Banned => "banned",
                PeerState::Unspecified => "unknown",
            };
            let dir = if p.source == p2p_proto::node::PeerSource::Inbound { "inbound" } else { "outbound" };
            *counts.entry((state, dir)).or_default() += 1;
        }
        counts.into_iter().collect()
    }

    /// Whether `address` is in the table and usable (connecting or active).
    pub fn is_usable(&self, address: &str) -> bool {
        self.lock().peers.get(address).is_some_and(|p| p.is_usable())
    }

    /// Peers to ping now (not banned, past their backoff): every inbound
    /// peer, and up to `target_outbound` of the others, taken round-robin
    /// across sources (bootstrap, exchange, cached, configured) so that no
    /// single source supplies them all; within a source, working peers first.
    pub fn due_for_ping(&self, now_ms: u64) -> Vec<String> {
        let inner = self.lock();
        let due = |p: &&PeerEntry| p.next_attempt_ms <= now_ms;
        let mut out: Vec<String> = inner
            .peers
            .values()
            .filter(|p| p.source == PeerSource::Inbound)
            .filter(due)
            .map(|p| p.address.clone())
            .collect();
        let mut by_source: BTreeMap<i32, Vec<&PeerEntry>> = BTreeMap::new();
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
                v.sort_by_key(|p| (rank(p), u64::MAX - p.last_seen_ms, p.address.clone()));
                v.into_iter()
            })
            .collect();
        let mut picked = 0;
        while picked < self.limits.target_outbound && !queues.is_empty() {
            queues.retain_mut(|q| match q.next() {
                Some(p) if picked < self.limits.target_outbound => {
                    out.push(p.address.clone());
                    picked += 1;
                    true
                }
                _ => false,
            });
        }
        out
    }

    /// Peers that answered us, for the on-disk cache.
    pub fn good_peers(&self) -> Vec<CachedPeer> {
        self.lock()
            .peers
            .values()
            .filter(|p| p.state == PeerState::Active)
            .map(|p| CachedPeer {
                address: p.address.clone(),
                node_id: p.node_id.clone(),
                last_seen_ms: p.last_seen_ms,
            })
            .collect()
    }

    /// Up to `fanout` random usable peers except `except` (the peer a block
    /// came from: its address, or its node id), for gossip.
    pub fn gossip_targets(&self, except: Option<&str>, fanout: usize) -> Vec<String> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let skip = |p: &PeerEntry| except.is_some_and(|e| p.address == e || p.node_id == e);
        let usable = sorted(inner.peers.values().filter(|p| p.is_usable() && !skip(p)));
        usable.choose_multiple(&mut inner.rng, fanout).map(|p| p.address.clone()).collect()
    }

    /// The highest tip height an active peer claims (0 with none): where
    /// this node's chain is headed, for sync progress.
    pub fn best_claimed_height(&self) -> u64 {
        self.lock().peers.values().filter(|p| p.state == PeerState::Active).map(|p| p.best_height).max().unwrap_or(0)
    }

    /// The active peers that claim more work than `than`, the most first,
    /// with the tip each claims.
    pub fn ahead(&self, than: p2p_proto::work::Work) -> Vec<(String, Vec<u8>)> {
        let inner = self.lock();
        let mut peers: Vec<&PeerEntry> =
            inner.peers.values().filter(|p| p.state == PeerState::Active && p.best_work > than).collect();
        peers.sort_by_key(|p| (std::cmp::Reverse(p.best_work), p.address.clone()));
        peers.into_iter().map(|p| (p.address.clone(), p.best_tip.clone())).collect()
    }

    /// The cumulative work `address` last claimed (0 if unknown).
    pub fn claimed_work(&self, address: &str) -> p2p_proto::work::Work {
        self.lock().peers.get(address).map(|p| p.best_work).unwrap_or_default()
    }

    /// Stops believing `address`'s claimed work until its next answer;
    /// true if there was a claim.
    pub fn forget_claim(&self, address: &str) -> bool {
        let mut inner = self.lock();
        match inner.peers.get_mut(address) {
            Some(p) if !p.best_work.is_zero() => {
                p.best_work = p2p_proto::work::Work::ZERO;
                true
            }
            _ => false,
        }
    }

    /// A random active peer, for peer exchange.
    pub fn random_active(&self) -> Option<String> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let active = sorted(inner.peers.values().filter(|p| p.state == PeerState::Active));
        active.choose(&mut inner.rng).map(|p| p.address.clone())
    }

    pub fn active_count(&self) -> usize {
        self.lock().peers.values().filter(|p| p.state == PeerState::Active).count()
    }

    /// Every peer with its score, and every ban (state Banned; a banned
    /// node id has no address), in address order.
    pub fn snapshot(&self) -> Vec<PeerEntry> {
        let inner = self.lock();
        let score = |p: &PeerEntry| {
            let by_id = if p.verified { inner.scores.get(&p.node_id).copied() } else { None };
            by_id.or_else(|| inner.scores.get(&p.address).copied()).unwrap_or(0)
        };
        let mut v: Vec<PeerEntry> = inner.peers.values().map(|p| PeerEntry { score: score(p), ..p.clone() }).collect();
        v.extend(inner.bans.iter().map(|(culprit, until)| {
            let is_id = p2p_proto::signing::is_node_id(culprit);
            let (address, node_id) = if is_id { ("", culprit.as_str()) } else { (culprit.as_str(), "") };
            let mut e = PeerEntry::new(address.to_string(), node_id, PeerSource::Unspecified);
            e.verified = is_id;
            e.state = PeerState::Banned;
            e.score = inner.scores.get(culprit).copied().unwrap_or(BAN_SCORE);
            e.banned_until_ms = *until;
            e
        }));
        v.sort_by(|a, b| (&a.address, &a.node_id).cmp(&(&b.address, &b.node_id)));
        v
    }

    /// A random sample of non-banned peers, for peer exchange.
    pub fn sample(&self, limit: usize) -> Vec<PeerEntry> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let candidates = sorted(inner.peers.values());
        candidates.choose_multiple(&mut inner.rng, limit).map(|p| (*p).clone()).collect()
    }
}

/// In address order, so a seeded choice does not depend on hash-map order.
fn sorted<'a>(peers: impl Iterator<Item = &'a PeerEntry>) -> Vec<&'a PeerEntry> {
    let mut v: Vec<&PeerEntry> = peers.collect();
    v.sort_by(|a, b| a.address.cmp(&b.address));
    v
}

impl Inner {
    /// Bans `culprit` until `until_ms` and drops its entries: the address
    /// itself, or every entry where our handshake proved that node id (whose
    /// addresses are banned with it: the node listens there, so nobody else
    /// does).
    fn ban(&mut self, culprit: &str, until_ms: u64) {
        let gone: Vec<String> = self
            .peers
            .values()
            .filter(|p| p.address == culprit || (p.verified && p.node_id == culprit))
            .map(|p| p.address.clone())
            .collect();
        for a in &gone {
            self.remove(a);
            if a != culprit {
                self.insert_ban(a, until_ms);
            }
        }
        self.insert_ban(culprit, until_ms);
        tracing::warn!(peer = %culprit, until_ms, "peer state -> Banned");
    }

    /// Records a ban; when the list is full the ban ending soonest goes.
    fn insert_ban(&mut self, key: &str, until_ms: u64) {
        if !self.bans.contains_key(key) && self.bans.len() >= MAX_BANS {
            let soonest = self.bans.iter().min_by_key(|(a, until)| (**until, (*a).clone())).map(|(a, _)| a.clone());
            if let Some(a) = soonest {
                self.bans.remove(&a);
            }
        }
        self.bans.insert(key.to_string(), until_ms);
    }

    fn remove(&mut self, address: &str) -> bool {
        self.backoffs.remove(address);
        self.peers.remove(address).is_some()
    }

    /// Makes room by dropping the least useful peer among those `eligible`:
    /// failing before connecting before active, and among those the one with
    /// most failures / oldest contact.
    fn evict_one(&mut self, eligible: impl Fn(&PeerEntry) -> bool) -> bool {
        let rank = |p: &PeerEntry| match p.state {
            PeerState::Failing => 0,
            PeerState::Connecting => 1,
            PeerState::Active => 2,
            PeerState::Banned | PeerState::Unspecified => 3,
        };
        let victim = self
            .peers
            .values()
            .filter(|p| rank(p) < 3 && eligible(p))
            .min_by_key(|p| (rank(p), u32::MAX - p.failures, p.last_seen_ms, p.address.clone()))
            .map(|p| p.address.clone());
        match victim {
            Some(a) => {
                tracing::info!(peer = %a, "peer evicted to make room");
                self.remove(&a)
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests;
