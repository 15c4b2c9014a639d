//! Known-good peers on disk (`peers.redb`), so a restarted node can rejoin
//! the network without the bootstrap, as Bitcoin Core's peers.dat does.
//!
//! A separate database from the chain: the chain writer never waits on it.
//! Entries are peers that answered recently; ones not seen for
//! [`FORGET_AFTER_MS`] are dropped when the cache is saved.

use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition};

use crate::chain::StoreError;

/// address -> (last_seen_unix_ms, node_id)
const KNOWN: TableDefinition<&str, (u64, &str)> = TableDefinition::new("known_peers");
/// Peers silent this long are not worth redialing after a restart.
pub const FORGET_AFTER_MS: u64 = 7 * 24 * 3600 * 1000;

/// A cached peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedPeer {
    pub address: String,
    pub node_id: String,
    pub last_seen_ms: u64,
}

/// The on-disk cache. Blocking: call from `spawn_blocking`.
#[derive(Debug)]
pub struct PeerCache {
    db: Database,
}

impl PeerCache {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        tx.open_table(KNOWN)?;
        tx.commit()?;
        Ok(PeerCache { db })
    }

    /// Every cached peer, most recently seen first.
    pub fn load(&self) -> Result<Vec<CachedPeer>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(KNOWN)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            let (last_seen_ms, node_id) = v.value();
            out.push(CachedPeer { address: k.value().to_string(), node_id: node_id.to_string(), last_seen_ms });
        }
        out.sort_by_key(|p| std::cmp::Reverse(p.last_seen_ms));
        Ok(out)
    }

    /// Records `good` peers and forgets the ones silent for too long; keeps
    /// at most `max` entries (the most recently seen).
    pub fn save(&self, good: &[CachedPeer], now_ms: u64, max: usize) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write()?;
        tx.set_quick_repair(true);
        {
            let mut table = tx.open_table(KNOWN)?;
            for p in good {
                table.insert(p.address.as_str(), (p.last_seen_ms, p.node_id.as_str()))?;
            }
            let mut all: Vec<(String, u64)> = Vec::new();
            for entry in table.iter()? {
                let (k, v) = entry?;
                all.push((k.value().to_string(), v.value().0));
            }
            all.sort_by_key(|p| std::cmp::Reverse(p.1));
            for (i, (address, last_seen)) in all.iter().enumerate() {
                if i >= max || now_ms.saturating_sub(*last_seen) > FORGET_AFTER_MS {
                    table.remove(address.as_str())?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(a: &str, seen: u64) -> CachedPeer {
        CachedPeer { address: a.into(), node_id: format!("id-{a}"), last_seen_ms: seen }
    }

    #[test]
    fn saved_peers_load_back_newest_first_and_stale_or_excess_ones_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.redb");
        let now = FORGET_AFTER_MS * 2;
        {
            let cache = PeerCache::open(&path).unwrap();
            cache.save(&[peer("a:1", now - 10), peer("b:1", now - 5), peer("old:1", 1)], now, 10).unwrap();
        }
        let cache = PeerCache::open(&path).unwrap();
        assert_eq!(cache.load().unwrap(), vec![peer("b:1", now - 5), peer("a:1", now - 10)]);
        cache.save(&[peer("c:1", now)], now, 2).unwrap();
        let kept: Vec<String> = cache.load().unwrap().into_iter().map(|p| p.address).collect();
        assert_eq!(kept, ["c:1", "b:1"], "capped at the most recent two");
    }
}
