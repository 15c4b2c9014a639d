//! The mempool's bookkeeping, pure: no storage, no runtime, time passed in.
//!
//! Bounded by count, bytes and transactions per sender. When full, the
//! oldest transactions make room (deterministic: arrival order); because
//! nonces may have gaps, evicting one never strands a sender's later ones.
//! A sender's pending transactions have distinct nonces, all above the
//! chain's last confirmed one for it.

use std::collections::{BTreeMap, HashMap};

use crate::chain::{Hash, Transaction};

/// Bounds on the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLimits {
    pub max_count: usize,
    pub max_bytes: usize,
    pub max_per_sender: usize,
}

/// One pending transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: Hash,
    pub tx: Transaction,
    /// Arrival order (eviction and paging follow it).
    pub seq: u64,
    pub received_ms: u64,
}

/// Why the pool refused a transaction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("transaction {0} is already pending")]
    Duplicate(String),
    #[error("rule tx-replay: nonce {nonce} of sender {sender} is not above the chain's last one, {last}")]
    Stale { sender: String, nonce: u64, last: u64 },
    #[error("rule tx-nonce-taken: sender {sender} already has a pending transaction with nonce {nonce}")]
    NonceTaken { sender: String, nonce: u64 },
    #[error("sender {sender} has {max} transactions pending, the most one sender may have; wait for some to be mined")]
    SenderFull { sender: String, max: usize },
    #[error("the transaction is {size} bytes; the mempool holds at most {max}")]
    TooLarge { size: usize, max: usize },
}

/// The pool.
#[derive(Debug)]
pub struct Pool {
    limits: PoolLimits,
    by_id: HashMap<Hash, Entry>,
    by_seq: BTreeMap<u64, Hash>,
    by_sender: HashMap<[u8; 32], BTreeMap<u64, Hash>>,
    bytes: usize,
    next_seq: u64,
}

impl Pool {
    pub fn new(limits: PoolLimits) -> Self {
        Pool {
            limits,
            by_id: HashMap::new(),
            by_seq: BTreeMap::new(),
            by_sender: HashMap::new(),
            bytes: 0,
            next_seq: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn contains(&self, id: &Hash) -> bool {
        self.by_id.contains_key(id)
    }

    pub fn get(&self, id: &Hash) -> Option<&Entry> {
        self.by_id.get(id)
    }

    /// The highest pending nonce of `sender`.
    pub fn max_nonce(&self, sender: &[u8; 32]) -> Option<u64> {
        self.by_sender.get(sender).and_then(|m| m.keys().next_back().copied())
    }

    /// Admits `tx` (already checked on its own: size, signature), given the
    /// chain's last confirmed nonce of its sender; returns the entries
    /// evicted to make room (oldest first). `seq` orders it (the caller's
    /// arrival counter, so a reload keeps the order).
    pub fn insert(
        &mut self,
        id: Hash,
        tx: Transaction,
        last_confirmed: Option<u64>,
        received_ms: u64,
    ) -> Result<Vec<Entry>, Refused> {
        let sender = hex::encode(tx.sender);
        if self.by_id.contains_key(&id) {
            return Err(Refused::Duplicate(hex::encode(id)));
        }
        if let Some(last) = last_confirmed
            && tx.nonce <= last
        {
            return Err(Refused::Stale { sender, nonce: tx.nonce, last });
        }
        let queue = self.by_sender.get(&tx.sender);
        if queue.is_some_and(|q| q.contains_key(&tx.nonce)) {
            return Err(Refused::NonceTaken { sender, nonce: tx.nonce });
        }
        if queue.is_some_and(|q| q.len() >= self.limits.max_per_sender) {
            return Err(Refused::SenderFull { sender, max: self.limits.max_per_sender });
        }
        let size = tx.size();
        if size > self.limits.max_bytes || self.limits.max_count == 0 {
            return Err(Refused::TooLarge { size, max: self.limits.max_bytes });
        }
        let mut evicted = Vec::new();
        while self.by_id.len() + 1 > self.limits.max_count || self.bytes + size > self.limits.max_bytes {
            let Some((_, oldest)) = self.by_seq.iter().next().map(|(s, h)| (*s, *h)) else { break };
            if let Some(e) = self.remove(&oldest) {
                evicted.push(e);
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_seq.insert(seq, id);
        self.by_sender.entry(tx.sender).or_default().insert(tx.nonce, id);
        self.bytes += size;
        self.by_id.insert(id, Entry { id, tx, seq, received_ms });
        Ok(evicted)
    }

    /// Takes a transaction out (mined, evicted, invalidated).
    pub fn remove(&mut self, id: &Hash) -> Option<Entry> {
        let e = self.by_id.remove(id)?;
        self.by_seq.remove(&e.seq);
        if let Some(q) = self.by_sender.get_mut(&e.tx.sender) {
            q.remove(&e.tx.nonce);
            if q.is_empty() {
                self.by_sender.remove(&e.tx.sender);
            }
        }
        self.bytes -= e.tx.size();
        Some(e)
    }

    /// Drops `sender`'s pending transactions whose nonce is now at or below
    /// the chain's last confirmed `last` (they can never be mined).
    pub fn prune_sender(&mut self, sender: &[u8; 32], last: u64) -> Vec<Entry> {
        let stale: Vec<Hash> =
            self.by_sender.get(sender).map(|q| q.range(..=last).map(|(_, id)| *id).collect()).unwrap_or_default();
        stale.iter().filter_map(|id| self.remove(id)).collect()
    }

    /// Transactions for a block: in arrival order, each sender's in nonce
    /// order (a sender's next one goes in when it is the oldest pending of
    /// all senders' next ones), up to `max_txs` and `max_bytes`.
    pub fn template(&self, max_txs: usize, max_bytes: usize) -> Vec<Transaction> {
        // Each sender's queue in nonce order, and a heap of (arrival of its
        // head, sender) to pick the oldest head next.
        let mut queues: HashMap<[u8; 32], std::collections::btree_map::Values<'_, u64, Hash>> =
            self.by_sender.iter().map(|(s, q)| (*s, q.values())).collect();
        let mut heads = std::collections::BinaryHeap::new();
        for (sender, q) in queues.iter_mut() {
            if let Some(id) = q.next() {
                heads.push(std::cmp::Reverse((self.by_id[id].seq, *sender, *id)));
            }
        }
        let (mut out, mut bytes) = (Vec::new(), 0usize);
        while let Some(std::cmp::Reverse((_, sender, id))) = heads.pop() {
            if out.len() >= max_txs {
                break;
            }
            let e = &self.by_id[&id];
            if bytes + e.tx.size() > max_bytes {
                // Its later nonces must not jump ahead of it: the sender is done.
                continue;
            }
            bytes += e.tx.size();
            out.push(e.tx.clone());
            if let Some(next) = queues.get_mut(&sender).and_then(|q| q.next()) {
                heads.push(std::cmp::Reverse((self.by_id[next].seq, sender, *next)));
            }
        }
        out
    }

    /// Up to `limit` entries after arrival `after` (exclusive), in arrival
    /// order, of at most `max_bytes` together (counting
    /// [`super::ENTRY_FRAMING`] each; the first is taken whatever its size);
    /// and whether more follow.
    pub fn page(&self, after: Option<u64>, limit: usize, max_bytes: usize) -> (Vec<Entry>, bool) {
        let from = after.map(|a| a.saturating_add(1)).unwrap_or(0);
        let (mut out, mut used) = (Vec::new(), 0);
        for (_, id) in self.by_seq.range(from..) {
            let e = &self.by_id[id];
            let size = e.tx.size() + super::ENTRY_FRAMING;
            if out.len() == limit || (!out.is_empty() && used + size > max_bytes) {
                return (out, true);
            }
            used += size;
            out.push(e.clone());
        }
        (out, false)
    }

    /// Every pending sender (to re-check them against the chain).
    pub fn senders(&self) -> Vec<[u8; 32]> {
        self.by_sender.keys().copied().collect()
    }

    /// Continues the arrival counter after a reload.
    pub fn resume_seq(&mut self, seq: u64) {
        self.next_seq = self.next_seq.max(seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use proptest::prelude::*;

    const G: Hash = [1; 32];

    fn tx(key: u8, nonce: u64, len: usize) -> (Hash, Transaction) {
        let t = Transaction::sign(&SigningKey::from_bytes(&[key; 32]), &G, nonce, 0, vec![0; len]);
        (t.id(&G), t)
    }

    fn pool(count: usize, bytes: usize, per_sender: usize) -> Pool {
        Pool::new(PoolLimits { max_count: count, max_bytes: bytes, max_per_sender: per_sender })
    }

    #[test]
    fn duplicates_replays_and_taken_nonces_are_refused() {
        let mut p = pool(10, 1 << 20, 4);
        let (id, t) = tx(1, 5, 10);
        p.insert(id, t.clone(), None, 0).unwrap();
        assert!(matches!(p.insert(id, t.clone(), None, 0), Err(Refused::Duplicate(_))));
        let (id2, t2) = tx(2, 3, 10);
        assert!(matches!(p.insert(id2, t2, Some(3), 0), Err(Refused::Stale { nonce: 3, last: 3, .. })));
        let mut other = t.clone();
        other.payload.push(1);
        assert!(matches!(p.insert(other.id(&G), other, None, 0), Err(Refused::NonceTaken { nonce: 5, .. })));
        for n in 6..9 {
            let (id, t) = tx(1, n, 10);
            p.insert(id, t, None, 0).unwrap();
        }
        let (id, t) = tx(1, 9, 10);
        assert!(matches!(p.insert(id, t, None, 0), Err(Refused::SenderFull { max: 4, .. })));
    }

    #[test]
    fn the_oldest_make_room_and_pruning_drops_what_the_chain_confirmed() {
        let mut p = pool(3, 1 << 20, 10);
        let ids: Vec<Hash> = (0..3u8)
            .map(|i| {
                let (id, t) = tx(i + 1, 1, 10);
                p.insert(id, t, None, 0).unwrap();
                id
            })
            .collect();
        let (id, t) = tx(9, 1, 10);
        let evicted = p.insert(id, t, None, 0).unwrap();
        assert_eq!(evicted.iter().map(|e| e.id).collect::<Vec<_>>(), vec![ids[0]]);
        assert_eq!(p.len(), 3);
        let (a, ta) = tx(5, 2, 10);
        let mut q = pool(10, 1 << 20, 10);
        q.insert(a, ta, None, 0).unwrap();
        let (b, tb) = tx(5, 7, 10);
        q.insert(b, tb, None, 0).unwrap();
        let gone = q.prune_sender(&SigningKey::from_bytes(&[5; 32]).verifying_key().to_bytes(), 4);
        assert_eq!(gone.iter().map(|e| e.id).collect::<Vec<_>>(), vec![a]);
        assert!(q.contains(&b));
    }

    #[test]
    fn a_template_keeps_each_senders_nonce_order_and_the_limits() {
        let mut p = pool(100, 1 << 20, 100);
        // Sender 1's nonce 9 arrives before its nonce 3.
        for (k, n) in [(1u8, 9u64), (2, 1), (1, 3), (3, 4)] {
            let (id, t) = tx(k, n, 100);
            p.insert(id, t, None, 0).unwrap();
        }
        let t = p.template(10, 1 << 20);
        let order: Vec<(u8, u64)> = t.iter().map(|tx| (tx.sender[0], tx.nonce)).collect();
        let s1: Vec<u64> = t.iter().filter(|x| x.sender == tx(1, 0, 0).1.sender).map(|x| x.nonce).collect();
        assert_eq!(s1, vec![3, 9], "nonce order within a sender: {order:?}");
        assert_eq!(t.len(), 4);
        assert_eq!(p.template(2, 1 << 20).len(), 2);
        let one = tx(1, 0, 100).1.size();
        assert_eq!(p.template(10, 2 * one).len(), 2, "bytes bound");
    }

    proptest! {
        #[test]
        fn the_bounds_hold_under_any_flood(ops in proptest::collection::vec((1u8..20, 0u64..50, 0usize..2000), 1..200)) {
            let mut p = pool(25, 20_000, 3);
            for (k, n, len) in ops {
                let (id, t) = tx(k, n, len);
                let _ = p.insert(id, t, None, 0);
                prop_assert!(p.len() <= 25);
                prop_assert!(p.bytes() <= 20_000);
                prop_assert_eq!(p.bytes(), p.by_id.values().map(|e| e.tx.size()).sum::<usize>());
                for q in p.by_sender.values() {
                    prop_assert!(q.len() <= 3);
                }
            }
            let t = p.template(1000, usize::MAX);
            prop_assert_eq!(t.len(), p.len());
        }
    }
}
