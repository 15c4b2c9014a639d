//! Which transaction bodies are on their way, so that one is asked of one
//! peer at a time (the idea of Bitcoin Core's `TxRequestTracker`, reduced).
//!
//! Without it, a node that hears an id from several peers before the body
//! arrives asks each of them: on 50 well-connected nodes a transaction's
//! body was delivered over three times to every node. With it, the first
//! announcer is asked; later announcers within [`WAIT`] are remembered as
//! alternates, and if the body has not come by then (the first announcer
//! withheld it, or failed), the next alternate is asked. Withholding a
//! transaction therefore delays it by [`WAIT`] per withholding announcer,
//! no more.
//!
//! Pure bookkeeping: time is passed in, the gossip task does the fetching.

use std::collections::HashMap;

use crate::chain::Hash;

/// How long a requested body is waited for before another announcer is asked.
pub const WAIT_MS: u64 = 2_000;

/// Requests tracked at most (about 200 bytes each, alternates included).
pub const TRACKED: usize = 100_000;

/// Bodies one announcer may owe at once (Bitcoin Core's
/// `MAX_PEER_TX_ANNOUNCEMENTS` is 5,000); past it, what it announces is not
/// asked of it, so one identity cannot take the whole table.
pub const PER_ANNOUNCER: usize = 5_000;

/// Announcers remembered per id, to fall back on.
pub const MAX_ALTERNATES: usize = 4;

#[derive(Debug)]
struct InFlight {
    /// Who was asked: a proven node id, or the address of an anonymous connection.
    from: String,
    deadline_ms: u64,
    /// Node ids that announced it meanwhile (proven by TLS, so they can be dialed).
    alternates: Vec<String>,
}

/// Bodies requested and not yet overdue; bounded (past the bound a body is
/// simply asked of every announcer, as if untracked).
#[derive(Debug)]
pub struct Requests {
    entries: HashMap<Hash, InFlight>,
    /// Entries per announcer (`InFlight::from`).
    owed: HashMap<String, usize>,
    cap: usize,
}

/// An overdue request with the announcers left to ask.
#[derive(Debug, PartialEq, Eq)]
pub struct Overdue {
    pub id: Hash,
    pub alternates: Vec<String>,
}

impl Requests {
    pub fn new(cap: usize) -> Self {
        Requests { entries: HashMap::new(), owed: HashMap::new(), cap }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether to ask `announcer` for `id` now (the caller has checked that
    /// the node lacks it). `dialable` is the announcer's proven node id, if
    /// any: only those can be fallen back on.
    pub fn want(&mut self, id: Hash, announcer: &str, dialable: Option<&str>, now_ms: u64) -> bool {
        if let Some(e) = self.entries.get_mut(&id) {
            if e.deadline_ms > now_ms && e.from != announcer {
                if let Some(d) = dialable
                    && e.alternates.len() < MAX_ALTERNATES
                    && !e.alternates.iter().any(|a| a == d)
                {
                    e.alternates.push(d.to_string());
                }
                return false;
            }
            // Overdue, or the same announcer again: ask it (again).
            if self.owed.get(announcer).copied().unwrap_or(0) >= PER_ANNOUNCER && e.from != announcer {
                return false;
            }
            let previous = std::mem::replace(&mut e.from, announcer.to_string());
            e.deadline_ms = now_ms + WAIT_MS;
            e.alternates.retain(|a| a != announcer);
            Self::release(&mut self.owed, &previous);
            *self.owed.entry(announcer.to_string()).or_default() += 1;
            return true;
        }
        if self.owed.get(announcer).copied().unwrap_or(0) >= PER_ANNOUNCER {
            return false;
        }
        if self.entries.len() >= self.cap {
            let owed = &mut self.owed;
            self.entries.retain(|_, e| {
                let keep = e.deadline_ms > now_ms;
                if !keep {
                    Self::release(owed, &e.from);
                }
                keep
            });
            if self.entries.len() >= self.cap {
                return true;
            }
        }
        self.track(id, announcer, Vec::new(), now_ms);
        true
    }

    /// Takes out every request overdue at `now_ms`, with its alternates (the
    /// caller drops those it has meanwhile received).
    pub fn overdue(&mut self, now_ms: u64) -> Vec<Overdue> {
        let ids: Vec<Hash> = self.entries.iter().filter(|(_, e)| e.deadline_ms <= now_ms).map(|(id, _)| *id).collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(e) = self.entries.remove(&id) {
                Self::release(&mut self.owed, &e.from);
                out.push(Overdue { id, alternates: e.alternates });
            }
        }
        out
    }

    /// `id` was asked of `from` (an alternate); `rest` stay behind it.
    pub fn asked(&mut self, id: Hash, from: &str, rest: Vec<String>, now_ms: u64) {
        if self.entries.len() < self.cap && !self.entries.contains_key(&id) {
            self.track(id, from, rest, now_ms);
        }
    }

    fn track(&mut self, id: Hash, from: &str, alternates: Vec<String>, now_ms: u64) {
        self.entries.insert(id, InFlight { from: from.to_string(), deadline_ms: now_ms + WAIT_MS, alternates });
        *self.owed.entry(from.to_string()).or_default() += 1;
    }

    fn release(owed: &mut HashMap<String, usize>, from: &str) {
        if let Some(n) = owed.get_mut(from) {
            *n -= 1;
            if *n == 0 {
                owed.remove(from);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever the announcements, overdue sweeps and fallbacks, the
        /// table stays within its bound and its per-announcer counts match
        /// its entries (so no announcer is ever locked out by a stale count).
        #[test]
        fn the_bookkeeping_always_adds_up(
            ops in proptest::collection::vec((0u8..3, 0u8..12, 0u8..5, 0u64..1500), 1..300),
        ) {
            let mut r = Requests::new(8);
            let mut now = 0;
            for (op, id, who, step) in ops {
                now += step;
                let who = format!("p{who}");
                match op {
                    0 => { r.want([id; 32], &who, Some(&who), now); }
                    1 => { r.overdue(now); }
                    _ => r.asked([id; 32], &who, vec![], now),
                }
                prop_assert!(r.entries.len() <= 8);
                let mut counted: HashMap<String, usize> = HashMap::new();
                for e in r.entries.values() {
                    *counted.entry(e.from.clone()).or_default() += 1;
                    prop_assert!(e.alternates.len() <= MAX_ALTERNATES);
                }
                prop_assert_eq!(&counted, &r.owed);
            }
        }
    }

    const ID: Hash = [1; 32];

    #[test]
    fn a_body_is_asked_of_the_first_announcer_only_until_it_is_overdue() {
        let mut r = Requests::new(100);
        assert!(r.want(ID, "a", Some("a"), 0));
        assert!(!r.want(ID, "b", Some("b"), 10), "b announced while a's body is on its way");
        assert!(!r.want(ID, "c", None, 20), "an anonymous announcer is not asked either");
        assert!(r.want(ID, "d", Some("d"), WAIT_MS + 1), "overdue: the next announcer is asked");
        assert!(r.want([2; 32], "b", Some("b"), 10), "other ids are independent");
    }

    #[test]
    fn an_overdue_request_hands_back_its_dialable_alternates_once() {
        let mut r = Requests::new(100);
        r.want(ID, "a", Some("a"), 0);
        for who in ["b", "c", "b", "x", "y", "z", "w"] {
            r.want(ID, who, Some(who), 5);
        }
        r.want(ID, "anon", None, 6);
        assert!(r.overdue(WAIT_MS - 1).is_empty(), "not yet overdue");
        let late = r.overdue(WAIT_MS);
        assert_eq!(late, vec![Overdue { id: ID, alternates: vec!["b".into(), "c".into(), "x".into(), "y".into()] }]);
        assert!(r.is_empty());
        assert!(r.overdue(WAIT_MS * 10).is_empty(), "handed back once");
    }

    #[test]
    fn asking_an_alternate_starts_a_new_wait_with_the_rest_behind_it() {
        let mut r = Requests::new(100);
        r.asked(ID, "b", vec!["c".into()], 1000);
        assert!(!r.want(ID, "d", Some("d"), 1500));
        let late = r.overdue(1000 + WAIT_MS);
        assert_eq!(late, vec![Overdue { id: ID, alternates: vec!["c".into(), "d".into()] }]);
    }

    #[test]
    fn the_same_announcer_again_is_asked_again_and_not_its_own_alternate() {
        let mut r = Requests::new(100);
        r.want(ID, "a", Some("a"), 0);
        r.want(ID, "b", Some("b"), 1);
        assert!(r.want(ID, "b", Some("b"), WAIT_MS + 5), "overdue: b is asked");
        assert_eq!(r.overdue(2 * WAIT_MS + 5), vec![Overdue { id: ID, alternates: vec![] }]);
    }

    #[test]
    fn one_announcer_owes_at_most_its_share_and_regains_room_as_requests_end() {
        let mut r = Requests::new(PER_ANNOUNCER * 2);
        let id = |i: usize| {
            let mut h = [0u8; 32];
            h[..8].copy_from_slice(&(i as u64).to_be_bytes());
            h
        };
        for i in 0..PER_ANNOUNCER {
            assert!(r.want(id(i), "greedy", Some("greedy"), 0));
        }
        assert!(!r.want(id(PER_ANNOUNCER), "greedy", Some("greedy"), 0), "past its share: not asked");
        assert!(r.want(id(PER_ANNOUNCER), "honest", Some("honest"), 0), "others still are");
        assert_eq!(r.overdue(WAIT_MS).len(), PER_ANNOUNCER + 1);
        assert!(r.want(id(PER_ANNOUNCER + 1), "greedy", Some("greedy"), WAIT_MS), "room again once they ended");
        assert!(r.owed.len() == 1 && r.owed["greedy"] == 1, "{:?}", r.owed.len());
    }

    #[test]
    fn past_the_bound_bodies_are_asked_untracked_and_overdue_entries_make_room() {
        let mut r = Requests::new(2);
        assert!(r.want([1; 32], "a", None, 0));
        assert!(r.want([2; 32], "a", None, 0));
        assert!(r.want([3; 32], "a", None, 1), "full: asked, not tracked");
        assert!(r.want([3; 32], "b", None, 2), "still untracked, so asked again");
        assert_eq!(r.len(), 2);
        assert!(r.want([3; 32], "a", None, WAIT_MS + 1), "overdue entries were dropped for it");
        assert!(!r.want([3; 32], "b", None, WAIT_MS + 2), "and now it is tracked");
        assert_eq!(r.len(), 1);
    }
}
