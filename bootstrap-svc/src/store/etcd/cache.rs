//! Each server's copy of the listed registrations, kept by list + watch (as
//! Kubernetes informers keep theirs), for what etcd cannot answer cheaply:
//! a uniform random sample (etcd ranges have no offset, so no "k-th key"),
//! the count, which records are past their expiry, and where a page of
//! addresses ends (etcd 3.4 walks a range's whole span even with a limit).
//! Records live in a dense vector with an ordered address index, so a
//! sample of k costs O(k) at any size and removal swaps the last entry into
//! the hole.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use rand::seq::index;

/// The listed registrations: address → encoded record, with the etcd
/// revision it was written at and when it expires.
#[derive(Debug, Default)]
pub struct Listed {
    index: BTreeMap<Box<str>, usize>,
    slots: Vec<Entry>,
    by_expiry: BTreeSet<(u64, Box<str>)>,
}

#[derive(Debug)]
struct Entry {
    address: Box<str>,
    record: Box<[u8]>,
    revision: i64,
    expires_at_ms: u64,
}

impl Listed {
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn get(&self, address: &str) -> Option<&[u8]> {
        self.index.get(address).map(|&i| &*self.slots[i].record)
    }

    /// The address `n` places after `after` (0: the first after it; all
    /// addresses when `after` is None), in address order.
    pub fn nth_after(&self, after: Option<&str>, n: usize) -> Option<&str> {
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.index.range::<str, _>((lower, Bound::Unbounded)).nth(n).map(|(a, _)| &**a)
    }

    /// The record and the etcd revision it was written at.
    pub fn entry(&self, address: &str) -> Option<(&[u8], i64)> {
        self.index.get(address).map(|&i| (&*self.slots[i].record, self.slots[i].revision))
    }

    pub fn insert(&mut self, address: &str, record: &[u8], revision: i64, expires_at_ms: u64) {
        match self.index.get(address) {
            Some(&i) => {
                let e = &mut self.slots[i];
                self.by_expiry.remove(&(e.expires_at_ms, e.address.clone()));
                e.record = record.into();
                e.revision = revision;
                e.expires_at_ms = expires_at_ms;
            }
            None => {
                self.index.insert(address.into(), self.slots.len());
                self.slots.push(Entry { address: address.into(), record: record.into(), revision, expires_at_ms });
            }
        }
        self.by_expiry.insert((expires_at_ms, address.into()));
    }

    /// Removes `address`; its record if it was there.
    pub fn remove(&mut self, address: &str) -> Option<Box<[u8]>> {
        let i = self.index.remove(address)?;
        let e = self.slots.swap_remove(i);
        self.by_expiry.remove(&(e.expires_at_ms, e.address));
        if let Some(moved) = self.slots.get(i) {
            self.index.insert(moved.address.clone(), i);
        }
        Some(e.record)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.slots.iter().map(|e| (&*e.address, &*e.record))
    }

    /// Up to `max` records that expired before `before_ms`, the oldest
    /// first: (address, record, revision).
    pub fn expired(&self, before_ms: u64, max: usize) -> Vec<(String, Box<[u8]>, i64)> {
        self.by_expiry
            .range(..(before_ms, Box::<str>::from("")))
            .take(max)
            .filter_map(|(_, a)| self.index.get(a).map(|&i| &self.slots[i]))
            .map(|e| (e.address.to_string(), e.record.clone(), e.revision))
            .collect()
    }

    /// Up to `want` distinct entries chosen uniformly at random, in random order.
    pub fn sample(&self, want: usize) -> Vec<(&str, &[u8])> {
        let n = self.slots.len();
        index::sample(&mut rand::rng(), n, want.min(n))
            .into_iter()
            .map(|i| (&*self.slots[i].address, &*self.slots[i].record))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    proptest! {
        /// Whatever the inserts and removals, the index and the slots agree.
        #[test]
        fn index_and_slots_agree(ops in proptest::collection::vec((any::<bool>(), 0u8..32), 0..200)) {
            let mut l = Listed::default();
            let mut model = std::collections::BTreeMap::new();
            for (insert, a) in ops {
                let addr = format!("h{a}:1");
                if insert {
                    l.insert(&addr, &[a], 1, u64::from(a));
                    model.insert(addr, a);
                } else {
                    prop_assert_eq!(l.remove(&addr).map(|r| r[0]), model.remove(&addr));
                }
            }
            prop_assert_eq!(l.len(), model.len());
            for (addr, v) in &model {
                prop_assert_eq!(l.get(addr), Some(&[*v][..]));
            }
            // The expiry index holds exactly the entries, by expiry.
            let expired: Vec<u8> = l.expired(16, usize::MAX).iter().map(|(_, r, _)| r[0]).collect();
            let mut want: Vec<u8> = model.values().copied().filter(|v| *v < 16).collect();
            want.sort();
            prop_assert_eq!(expired, want);
            // Pages end where the ordered index says.
            let ordered: Vec<&String> = model.keys().collect();
            for n in 0..3 {
                prop_assert_eq!(l.nth_after(None, n), ordered.get(n).map(|a| a.as_str()));
                if let Some(first) = ordered.first() {
                    prop_assert_eq!(l.nth_after(Some(first), n), ordered.get(n + 1).map(|a| a.as_str()));
                }
            }
            let sampled = l.sample(10);
            prop_assert_eq!(sampled.len(), model.len().min(10));
            let distinct: std::collections::HashSet<_> = sampled.iter().map(|(a, _)| *a).collect();
            prop_assert_eq!(distinct.len(), sampled.len());
        }
    }

    /// Every entry is about equally likely: 20,000 samples of 5 from 100
    /// entries put each entry near 1,000 times. A chi-square statistic
    /// over 99 degrees of freedom beyond 160 has probability below 1e-4.
    #[test]
    fn samples_are_uniform() {
        let mut l = Listed::default();
        for i in 0..120 {
            l.insert(&format!("h{i}:1"), &[], 1, 0);
        }
        // Removals reshuffle slots; the sample must not care.
        for i in 0..20 {
            l.remove(&format!("h{}:1", i * 6));
        }
        let mut hits: HashMap<String, u32> = HashMap::new();
        let rounds = 20_000;
        for _ in 0..rounds {
            for (a, _) in l.sample(5) {
                *hits.entry(a.to_string()).or_default() += 1;
            }
        }
        assert_eq!(hits.len(), 100);
        let expected = f64::from(rounds * 5) / 100.0;
        let chi2: f64 = hits.values().map(|&h| (f64::from(h) - expected).powi(2) / expected).sum();
        assert!(chi2 < 160.0, "chi-square {chi2:.1} over 99 degrees of freedom");
    }
}
