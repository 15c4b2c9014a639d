//! Block relay decisions without I/O: a state machine fed events and the
//! time, answering with [`Action`]s. The node ([`crate::gossip`]) and the
//! simulator ([`super::sim`]) drive the same code.
//!
//! # Protocol (Plumtree's eager/lazy push, with BIP152's high-bandwidth idea)
//! - A block new to us and valid is **pushed** in full to our *eager* peers
//!   and **announced** (header only) to every other peer not known to have
//!   it. Nobody is told twice: peers that announced or sent a block to us,
//!   or that we sent it to, are remembered per block.
//! - A peer starts eager if fewer than [`RelayConfig::initial_eager`] peers
//!   are (about three, as BIP152's high-bandwidth peers) and no peer feeds
//!   us yet; the rest start lazy.
//! - A push answered "duplicate" makes that peer lazy (the sender sees the
//!   answer; the receiver knows it too and stops counting on the sender).
//!   What remains eager converges on a tree of who delivers first: each node
//!   ends up fed in full by one peer, the one that was fastest.
//! - An announced block we lack is fetched from the first announcer, after
//!   [`RelayConfig::graft_wait_ms`] if an eager peer that has pushed to us
//!   before may be sending it, at once if none is; a fetch unanswered for [`RelayConfig::fetch_timeout_ms`]
//!   goes to the next announcer. A fetch *grafts*: the peer we fetched from
//!   makes us eager, so the tree repairs itself where it broke.
//!
//! # Bounds
//! Every table is bounded: [`RelayConfig::max_known`] recent blocks (oldest
//! forgotten first), [`RelayConfig::max_missing`] blocks being fetched
//! (announcements beyond it are ignored; a heartbeat sync recovers), and
//! per block at most one entry per connected peer.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash as StdHash;

/// A block id.
pub type BlockId = [u8; 32];

/// Milliseconds on the caller's clock.
pub type Ms = u64;

/// The knobs of [`Relay`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayConfig {
    /// Peers pushed to in full when they connect, until they answer a
    /// duplicate.
    pub initial_eager: usize,
    /// How long an announced block waits for an eager peer's push before we
    /// fetch it.
    pub graft_wait_ms: Ms,
    /// How long a fetch may go unanswered before the next announcer is asked.
    pub fetch_timeout_ms: Ms,
    /// Recent blocks remembered (with who has them).
    pub max_known: usize,
    /// Blocks being fetched at once.
    pub max_missing: usize,
    /// Announcements wait this long and go only to peers still not known
    /// to have the block (Plumtree batches its lazy push likewise): off the
    /// path of the pushes, and skipped when the peer told us first. The
    /// driver calls [`Relay::still_to_announce`] when the time comes.
    pub announce_delay_ms: Ms,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            initial_eager: 3,
            graft_wait_ms: 100,
            fetch_timeout_ms: 2_000,
            max_known: 1_024,
            max_missing: 256,
            announce_delay_ms: 20,
        }
    }
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<P> {
    /// Send the whole block to `to`.
    Push { to: P, id: BlockId },
    /// Send the block's header to `to`.
    Announce { to: P, id: BlockId },
    /// Ask `from` for the block; `graft`: and to push to us from now on.
    Fetch { from: P, id: BlockId, graft: bool },
}

#[derive(Debug, Default)]
struct PeerState {
    /// A tree edge: we push full blocks to this peer, and expect it to
    /// push to us.
    eager: bool,
    /// It has pushed a block to us, or we grafted onto it, since it became
    /// eager: a push from it is worth waiting for.
    pushes_us: bool,
}

#[derive(Debug)]
struct Missing<P> {
    /// Peers that announced it and were not asked yet, first first.
    announcers: VecDeque<P>,
    /// The peer asked, and when we give up on it.
    asked: Option<(P, Ms)>,
    /// Not fetched before this time (an eager push may be on its way).
    not_before: Ms,
}

/// Counters of what [`Relay`] decided; the simulator and metrics read them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayCounts {
    pub pushes: u64,
    pub announces: u64,
    pub fetches: u64,
    pub fetch_timeouts: u64,
    /// Full blocks that arrived when we already had them.
    pub duplicates: u64,
    /// Peers made lazy because they answered a push with "duplicate".
    pub prunes: u64,
    /// Peers made eager by their fetch.
    pub grafts: u64,
    /// Announced blocks fetched without waiting (no peer was expected to push).
    pub unfed: u64,
    /// Delayed announcements dropped: the peer told us first.
    pub announces_skipped: u64,
}

/// The relay state of one node; `P` names a peer.
#[derive(Debug)]
pub struct Relay<P> {
    config: RelayConfig,
    peers: HashMap<P, PeerState>,
    /// Recent blocks and the peers known to have each.
    known: HashMap<BlockId, HashSet<P>>,
    known_order: VecDeque<BlockId>,
    missing: HashMap<BlockId, Missing<P>>,
    counts: RelayCounts,
}

impl<P: Clone + Eq + StdHash + Ord> Relay<P> {
    pub fn new(config: RelayConfig) -> Self {
        Relay {
            config,
            peers: HashMap::new(),
            known: HashMap::new(),
            known_order: VecDeque::new(),
            missing: HashMap::new(),
            counts: RelayCounts::default(),
        }
    }

    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    pub fn counts(&self) -> RelayCounts {
        self.counts
    }

    /// Peers we push full blocks to.
    pub fn eager_peers(&self) -> Vec<P> {
        let mut v: Vec<P> = self.peers.iter().filter(|(_, s)| s.eager).map(|(p, _)| p.clone()).collect();
        v.sort();
        v
    }

    /// Every peer, sorted.
    pub fn peers(&self) -> Vec<P> {
        let mut v: Vec<P> = self.peers.keys().cloned().collect();
        v.sort();
        v
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    pub fn is_connected(&self, peer: &P) -> bool {
        self.peers.contains_key(peer)
    }

    /// Whether `id` is known (stored or relayed here recently).
    pub fn knows(&self, id: &BlockId) -> bool {
        self.known.contains_key(id)
    }

    /// Whether `peer` is known to have `id` (it announced or sent it to us,
    /// or we sent it or announced it to it).
    pub fn peer_has(&self, id: &BlockId, peer: &P) -> bool {
        self.known.get(id).is_some_and(|have| have.contains(peer))
    }

    /// A delayed announcement of `id` to `peer` is due: true if it should
    /// go (and it is counted as sent), false if `peer` has told us of the
    /// block meanwhile or is gone.
    pub fn still_to_announce(&mut self, id: BlockId, peer: &P) -> bool {
        if !self.peers.contains_key(peer) || self.peer_has(&id, peer) {
            self.counts.announces_skipped += 1;
            return false;
        }
        self.counts.announces += 1;
        self.remember(id, peer);
        true
    }

    /// Whether `id` was announced to us and is being fetched (or waits to be).
    pub fn is_missing(&self, id: &BlockId) -> bool {
        self.missing.contains_key(id)
    }

    /// Blocks announced to us and not yet here.
    pub fn missing_count(&self) -> usize {
        self.missing.len()
    }

    /// A peer is usable for relay.
    pub fn connected(&mut self, peer: P) {
        if self.peers.contains_key(&peer) {
            return;
        }
        // Eager at first, to get going; once in the tree (someone pushes to
        // us), new links start lazy and are grafted when they prove faster.
        let in_tree = self.peers.values().any(|s| s.eager && s.pushes_us);
        let eager = !in_tree && self.peers.values().filter(|s| s.eager).count() < self.config.initial_eager;
        self.peers.insert(peer, PeerState { eager, pushes_us: false });
    }

    /// A peer went away: forget its roles; fetches it owed go elsewhere on
    /// the next [`Relay::tick`].
    pub fn disconnected(&mut self, peer: &P) {
        self.peers.remove(peer);
        for have in self.known.values_mut() {
            have.remove(peer);
        }
        for m in self.missing.values_mut() {
            m.announcers.retain(|p| p != peer);
            if m.asked.as_ref().is_some_and(|(p, _)| p == peer) {
                m.asked = None;
                m.not_before = 0;
            }
        }
    }

    /// A block new to us passed validation (received from `from`, pushed
    /// or fetched; or ours, `from` None): relay it.
    pub fn validated(&mut self, id: BlockId, from: Option<&P>, pushed: bool) -> Vec<Action<P>> {
        // The link it came over is a tree edge, both ways (Plumtree).
        if let Some(p) = from
            && let Some(s) = self.peers.get_mut(p)
        {
            if !s.eager && pushed {
                self.counts.grafts += 1;
            }
            s.eager = true;
            // Pushed to us, or fetched from it (every fetch grafts): it
            // pushes to us from now on.
            s.pushes_us = true;
        }
        let missing = self.missing.remove(&id);
        if self.known.contains_key(&id) {
            // Already relayed (e.g. the chain reports a tip we relayed on validation).
            if let Some(p) = from {
                self.remember(id, p);
            }
            return Vec::new();
        }
        self.insert_known(id);
        if let Some(p) = from {
            self.remember(id, p);
        }
        // Whoever announced it has it.
        if let Some(m) = missing {
            for p in m.announcers.iter().chain(m.asked.iter().map(|(p, _)| p)) {
                self.remember(id, p);
            }
        }
        let have = self.known.get(&id).cloned().unwrap_or_default();
        let mut targets: Vec<(&P, &PeerState)> = self.peers.iter().filter(|(p, _)| !have.contains(*p)).collect();
        targets.sort_by(|a, b| a.0.cmp(b.0));
        let actions: Vec<Action<P>> = targets
            .into_iter()
            .map(
                |(p, s)| {
                    if s.eager { Action::Push { to: p.clone(), id } } else { Action::Announce { to: p.clone(), id } }
                },
            )
            .collect();
        for a in &actions {
            match a {
                Action::Push { to, .. } => {
                    self.counts.pushes += 1;
                    self.remember(id, &to.clone());
                }
                // Remembered when sent (see still_to_announce).
                Action::Announce { .. } => {}
                Action::Fetch { .. } => {}
            }
        }
        actions
    }

    /// A full block arrived that we already had. A pushed duplicate means
    /// the link is redundant: its sender makes us lazy when it sees our
    /// answer, and we make it lazy too (the tree is undirected).
    pub fn duplicate(&mut self, id: BlockId, from: &P, pushed: bool) {
        self.counts.duplicates += 1;
        if pushed && let Some(s) = self.peers.get_mut(from) {
            if s.eager {
                self.counts.prunes += 1;
            }
            s.eager = false;
            s.pushes_us = false;
        }
        self.remember(id, from);
        self.missing.remove(&id);
    }

    /// `to` answered our push of `id`; `duplicate`: it had it already.
    pub fn push_answered(&mut self, id: BlockId, to: &P, duplicate: bool) {
        if duplicate && let Some(s) = self.peers.get_mut(to) {
            if s.eager {
                self.counts.prunes += 1;
            }
            s.eager = false;
            s.pushes_us = false;
        }
        self.remember(id, to);
    }

    /// `from` fetched a block from us; `graft`: it wants pushes from now on.
    pub fn fetched_from_us(&mut self, id: BlockId, from: &P, graft: bool) {
        if graft && let Some(s) = self.peers.get_mut(from) {
            if !s.eager {
                self.counts.grafts += 1;
            }
            s.eager = true;
        }
        self.remember(id, from);
    }

    /// `from` announced `id` (its header passed our cheap checks).
    pub fn announced(&mut self, id: BlockId, from: &P, now: Ms) -> Vec<Action<P>> {
        if !self.peers.contains_key(from) {
            return Vec::new();
        }
        if self.known.contains_key(&id) {
            self.remember(id, from);
            return Vec::new();
        }
        // Wait for a push only from a peer that has pushed to us before:
        // an eager link the other side has not taken up yet feeds nobody.
        let fed = self.peers.values().any(|s| s.eager && s.pushes_us);
        let wait = if fed { self.config.graft_wait_ms } else { 0 };
        match self.missing.get_mut(&id) {
            Some(m) => {
                let asked = m.asked.as_ref().is_some_and(|(p, _)| p == from);
                if !asked && !m.announcers.contains(from) {
                    m.announcers.push_back(from.clone());
                }
            }
            None => {
                if self.missing.len() >= self.config.max_missing {
                    return Vec::new();
                }
                let m = Missing { announcers: VecDeque::from([from.clone()]), asked: None, not_before: now + wait };
                self.missing.insert(id, m);
                if !fed {
                    self.counts.unfed += 1;
                }
            }
        }
        self.tick(now)
    }

    /// A fetch from `from` failed (an error answer, or it did not have it):
    /// the next announcer is asked on the next tick.
    pub fn fetch_failed(&mut self, id: BlockId, from: &P) {
        if let Some(m) = self.missing.get_mut(&id)
            && m.asked.as_ref().is_some_and(|(p, _)| p == from)
        {
            m.asked = None;
            m.not_before = 0;
        }
    }

    /// Fetches that are due: waits that ran out, asked peers that timed out.
    pub fn tick(&mut self, now: Ms) -> Vec<Action<P>> {
        let mut actions = Vec::new();
        let mut gone = Vec::new();
        let mut ids: Vec<BlockId> = self.missing.keys().copied().collect();
        ids.sort();
        for id in ids {
            let Some(m) = self.missing.get_mut(&id) else { continue };
            match &m.asked {
                Some((_, deadline)) if *deadline > now => continue,
                Some(_) => {
                    self.counts.fetch_timeouts += 1;
                    m.asked = None;
                }
                None if m.not_before > now => continue,
                None => {}
            }
            match m.announcers.pop_front() {
                Some(p) => {
                    m.asked = Some((p.clone(), now + self.config.fetch_timeout_ms));
                    self.counts.fetches += 1;
                    actions.push(Action::Fetch { from: p, id, graft: true });
                }
                None => gone.push(id),
            }
        }
        for id in gone {
            self.missing.remove(&id);
        }
        actions
    }

    /// When [`Relay::tick`] next has something to do, if ever.
    pub fn next_deadline(&self) -> Option<Ms> {
        self.missing
            .values()
            .map(|m| match &m.asked {
                Some((_, deadline)) => *deadline,
                None => m.not_before,
            })
            .min()
    }

    fn insert_known(&mut self, id: BlockId) {
        if self.known.contains_key(&id) {
            return;
        }
        while self.known_order.len() >= self.config.max_known.max(1) {
            if let Some(old) = self.known_order.pop_front() {
                self.known.remove(&old);
            }
        }
        self.known.insert(id, HashSet::new());
        self.known_order.push_back(id);
    }

    fn remember(&mut self, id: BlockId, peer: &P) {
        if !self.peers.contains_key(peer) {
            return;
        }
        if let Some(have) = self.known.get_mut(&id) {
            have.insert(peer.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> BlockId {
        [n; 32]
    }

    fn relay(peers: &[u32]) -> Relay<u32> {
        with(RelayConfig::default(), peers)
    }

    /// Nobody eager: every block moves by announcement and fetch.
    fn lazy(peers: &[u32]) -> Relay<u32> {
        with(RelayConfig { initial_eager: 0, ..RelayConfig::default() }, peers)
    }

    fn with(config: RelayConfig, peers: &[u32]) -> Relay<u32> {
        let mut r = Relay::new(config);
        for p in peers {
            r.connected(*p);
        }
        r
    }

    #[test]
    fn pushes_to_the_first_three_and_announces_to_the_rest_never_to_the_sender() {
        let mut r = relay(&[1, 2, 3, 4, 5]);
        assert_eq!(r.eager_peers(), vec![1, 2, 3]);
        let acts = r.validated(id(9), Some(&2), true);
        assert_eq!(
            acts,
            vec![
                Action::Push { to: 1, id: id(9) },
                Action::Push { to: 3, id: id(9) },
                Action::Announce { to: 4, id: id(9) },
                Action::Announce { to: 5, id: id(9) },
            ]
        );
        // The announcements are delayed; peer 5 told us of it meanwhile.
        let _ = r.announced(id(9), &5, 0);
        assert!(r.still_to_announce(id(9), &4));
        assert!(!r.still_to_announce(id(9), &5));
        assert!(!r.still_to_announce(id(9), &4), "told once");
        assert_eq!((r.counts().announces, r.counts().announces_skipped), (1, 2));
        // Told once: the chain reporting the same tip later relays nothing.
        assert!(r.validated(id(9), None, false).is_empty());
    }

    #[test]
    fn peers_that_announced_a_block_are_not_told_about_it() {
        let mut r = relay(&[1, 2, 3, 4]);
        let _ = r.announced(id(7), &4, 0);
        let acts = r.validated(id(7), Some(&1), true);
        assert!(acts.iter().all(|a| !matches!(a, Action::Announce { to: 4, .. } | Action::Push { to: 4, .. })));
        assert!(acts.iter().all(|a| !matches!(a, Action::Push { to: 1, .. })));
    }

    #[test]
    fn duplicates_prune_the_link_and_fresh_deliveries_or_grafts_restore_it() {
        let mut r = relay(&[1, 2, 3]);
        assert_eq!(r.eager_peers(), vec![1, 2, 3]);
        // Our push was a duplicate there: that link is redundant.
        r.push_answered(id(1), &1, true);
        assert_eq!(r.eager_peers(), vec![2, 3]);
        r.push_answered(id(1), &2, false);
        assert_eq!(r.eager_peers(), vec![2, 3]);
        // Its push was a duplicate here: redundant too, both ways.
        let _ = r.validated(id(2), Some(&2), true);
        r.duplicate(id(2), &3, true);
        assert_eq!(r.eager_peers(), vec![2]);
        // A fetch that grafts makes the fetcher eager; so does a fresh block
        // from a lazy peer (the tree edge it came over).
        r.fetched_from_us(id(2), &1, true);
        assert_eq!(r.eager_peers(), vec![1, 2]);
        let _ = r.validated(id(3), Some(&3), true);
        assert_eq!(r.eager_peers(), vec![1, 2, 3]);
        assert_eq!(r.counts().prunes, 2);
        assert_eq!(r.counts().grafts, 2);
    }

    #[test]
    fn unfed_nodes_fetch_at_once_fed_ones_wait_for_the_push() {
        // We push to both (they start eager), but neither pushes to us yet.
        let mut r = relay(&[1, 2]);
        assert_eq!(r.announced(id(1), &2, 100), vec![Action::Fetch { from: 2, id: id(1), graft: true }]);
        assert_eq!(r.counts().unfed, 1);
        // The fetch grafted onto peer 2: from now on announcements wait for its push.
        let _ = r.validated(id(1), Some(&2), false);
        assert!(r.announced(id(3), &1, 1_000).is_empty());
        assert_eq!(r.next_deadline(), Some(1_000 + r.config().graft_wait_ms));
        // The push came: nothing to fetch.
        let _ = r.validated(id(3), Some(&2), true);
        assert!(r.tick(10_000).is_empty());
        assert_eq!(r.missing_count(), 0);
        // It did not come: fetch once the wait is over.
        assert!(r.announced(id(4), &1, 20_000).is_empty());
        assert!(r.tick(20_000 + r.config().graft_wait_ms - 1).is_empty());
        assert_eq!(r.tick(20_000 + r.config().graft_wait_ms), vec![Action::Fetch { from: 1, id: id(4), graft: true }]);
        // Its push turned out a duplicate: it no longer feeds us, so the
        // next announcement is fetched at once.
        let _ = r.validated(id(4), Some(&1), false);
        r.duplicate(id(4), &2, true);
        r.duplicate(id(4), &1, true);
        assert_eq!(r.announced(id(5), &1, 30_000), vec![Action::Fetch { from: 1, id: id(5), graft: true }]);
    }

    #[test]
    fn a_silent_announcer_is_replaced_by_the_next_and_then_given_up() {
        let mut r = lazy(&[1, 2, 3]);
        assert_eq!(r.announced(id(5), &3, 0), vec![Action::Fetch { from: 3, id: id(5), graft: true }]);
        assert!(r.announced(id(5), &1, 1).is_empty());
        assert!(r.announced(id(5), &3, 2).is_empty(), "the asked peer is not queued again");
        let t = r.config().fetch_timeout_ms;
        assert!(r.tick(t - 1).is_empty());
        assert_eq!(r.tick(t), vec![Action::Fetch { from: 1, id: id(5), graft: true }]);
        r.fetch_failed(id(5), &1);
        assert!(r.tick(t + 1).is_empty());
        assert_eq!(r.missing_count(), 0);
        assert_eq!(r.counts().fetch_timeouts, 1);
    }

    #[test]
    fn a_disconnected_announcer_hands_the_fetch_to_the_next() {
        let mut r = lazy(&[1, 2]);
        let _ = r.announced(id(5), &1, 0);
        let _ = r.announced(id(5), &2, 0);
        r.disconnected(&1);
        assert_eq!(r.tick(1), vec![Action::Fetch { from: 2, id: id(5), graft: true }]);
        assert!(r.announced(id(6), &1, 2).is_empty(), "announcements from unknown peers are ignored");
    }

    #[test]
    fn tables_stay_bounded() {
        let config = RelayConfig { max_known: 4, max_missing: 2, ..RelayConfig::default() };
        let mut r = Relay::new(config);
        r.connected(1u32);
        for n in 0..100u8 {
            let _ = r.validated(id(n), None, false);
        }
        assert!(r.known.len() <= 4 && r.known_order.len() <= 4);
        assert!(r.knows(&id(99)) && !r.knows(&id(0)));
        for n in 100..200u8 {
            let _ = r.announced(id(n), &1, 0);
        }
        assert_eq!(r.missing_count(), 2);
    }
}
