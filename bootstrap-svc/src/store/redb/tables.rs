//! The redb tables of the registry and the record stored per address.
//!
//! - `peers`: canonical address → [`PeerRecord`] (protobuf-encoded), listed
//!   or pending verification.
//! - `expiry`: (expires_at_ms, address) → (), so expired leases are found in
//!   order without a scan.
//! - `listed`: address → () of the verified registrations, in address order
//!   (what GetPeers pages walk).
//! - `slots`: dense index 0..count → address of the listed registrations. A
//!   random sample picks uniform slot numbers and looks them up, so it costs
//!   O(k log n) at any size; removal swaps the last slot into the hole.
//! - `pending`: (next_try_ms, address) → () of registrations awaiting
//!   verification, so the verifier finds the due ones in order.
//! - `meta`: `count` of listed registrations.
//! - `info`: `registry_id`, 16 random bytes fixed at creation.
//! - `tombstones_v2`: address → (newest signed timestamp, kept until, key) of
//!   a signed registration that was removed or expired; a Register signed by
//!   that key and not newer than it is a replay. (Only for that key: another
//!   key's floor must not lock a node out of its address.) Kept until that
//!   timestamp is outside the freshness window (`tomb_expiry`: (until_ms,
//!   address) → (), for purging in order).

use ::redb::{ReadableTable, TableDefinition, WriteTransaction};
use prost::Message;

use crate::error::Error;
pub use crate::store::record::PeerRecord;

pub(super) const PEERS: TableDefinition<&str, &[u8]> = TableDefinition::new("peers");
pub(super) const EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("expiry");
pub(super) const SLOTS: TableDefinition<u64, &str> = TableDefinition::new("slots");
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(super) const INFO: TableDefinition<&str, &[u8]> = TableDefinition::new("info");
pub(super) const REGISTRY_ID: &str = "registry_id";
pub(super) const TOMBSTONES: TableDefinition<&str, (u64, u64, [u8; 32])> = TableDefinition::new("tombstones_v2");
/// The tombstones before they named their key (deleted at open).
pub(super) const OLD_TOMBSTONES: TableDefinition<&str, (u64, u64)> = TableDefinition::new("tombstones");
pub(super) const TOMB_EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("tomb_expiry");
pub(super) const LISTED: TableDefinition<&str, ()> = TableDefinition::new("listed");
pub(super) const PENDING: TableDefinition<(u64, &str), ()> = TableDefinition::new("pending");
/// `info` key of the schema version; absent before verification existed
/// (every registration was listed then, see [`super::RedbStore::open`]).
pub(super) const SCHEMA: &str = "schema";
pub(super) const SCHEMA_VERSION: &[u8] = &[2];
const COUNT: &str = "count";

pub(super) fn decode(bytes: &[u8]) -> Result<PeerRecord, Error> {
    PeerRecord::decode(bytes).map_err(Error::storage)
}

pub(super) fn read_count(meta: &impl ReadableTable<&'static str, u64>) -> Result<u64, Error> {
    Ok(meta.get(COUNT)?.map(|v| v.value()).unwrap_or(0))
}

/// The registry's tables in one write transaction, opened once per batch.
pub(super) struct Tables<'tx> {
    pub peers: ::redb::Table<'tx, &'static str, &'static [u8]>,
    pub expiry: ::redb::Table<'tx, (u64, &'static str), ()>,
    pub slots: ::redb::Table<'tx, u64, &'static str>,
    pub meta: ::redb::Table<'tx, &'static str, u64>,
    pub tombstones: ::redb::Table<'tx, &'static str, (u64, u64, [u8; 32])>,
    pub tomb_expiry: ::redb::Table<'tx, (u64, &'static str), ()>,
    pub listed: ::redb::Table<'tx, &'static str, ()>,
    pub pending: ::redb::Table<'tx, (u64, &'static str), ()>,
}

impl<'tx> Tables<'tx> {
    pub fn open(tx: &'tx WriteTransaction) -> Result<Self, Error> {
        Ok(Tables {
            peers: tx.open_table(PEERS)?,
            expiry: tx.open_table(EXPIRY)?,
            slots: tx.open_table(SLOTS)?,
            meta: tx.open_table(META)?,
            tombstones: tx.open_table(TOMBSTONES)?,
            tomb_expiry: tx.open_table(TOMB_EXPIRY)?,
            listed: tx.open_table(LISTED)?,
            pending: tx.open_table(PENDING)?,
        })
    }

    pub fn get(&self, address: &str) -> Result<Option<PeerRecord>, Error> {
        self.peers.get(address)?.map(|v| decode(v.value())).transpose()
    }

    pub fn put(&mut self, address: &str, rec: &PeerRecord) -> Result<(), Error> {
        self.peers.insert(address, rec.encode_to_vec().as_slice())?;
        Ok(())
    }

    /// Remembers the newest signed timestamp of a signed registration being
    /// deleted, until `until_ms`.
    pub fn tombstone(&mut self, addr: &str, rec: &PeerRecord, last_ts: u64, until_ms: u64) -> Result<(), Error> {
        let Ok(key) = <[u8; 32]>::try_from(rec.public_key.as_slice()) else { return Ok(()) };
        let old = self.tombstones.insert(addr, (last_ts, until_ms, key))?.map(|v| v.value());
        if let Some((_, old_until, _)) = old {
            self.tomb_expiry.remove((old_until, addr))?;
        }
        self.tomb_expiry.insert((until_ms, addr), ())?;
        Ok(())
    }

    /// The replay floor of `addr` for requests signed by `key` (a signed
    /// timestamp), if one is kept.
    pub fn replay_floor(&self, addr: &str, key: &[u8]) -> Result<Option<u64>, Error> {
        Ok(self.tombstones.get(addr)?.map(|v| v.value()).filter(|(_, _, k)| k.as_slice() == key).map(|(ts, _, _)| ts))
    }

    /// Drops up to `max` replay floors kept until `now` or before.
    pub fn purge_tombstones(&mut self, now: u64, max: usize) -> Result<usize, Error> {
        let mut due = Vec::new();
        for entry in self.tomb_expiry.range::<(u64, &str)>(..(now.saturating_add(1), ""))?.take(max) {
            let (k, _) = entry?;
            let (until, addr) = k.value();
            due.push((until, addr.to_string()));
        }
        for (until, addr) in &due {
            self.tomb_expiry.remove((*until, addr.as_str()))?;
            self.tombstones.remove(addr.as_str())?;
        }
        Ok(due.len())
    }

    /// Lists `rec` (verified): takes the next free slot and its place in
    /// `listed`. The caller stores `rec` afterwards.
    pub fn list(&mut self, address: &str, rec: &mut PeerRecord) -> Result<(), Error> {
        if rec.pending {
            self.pending.remove((rec.verify_next_ms, address))?;
        }
        let slot = read_count(&self.meta)?;
        self.meta.insert(COUNT, slot + 1)?;
        self.slots.insert(slot, address)?;
        self.listed.insert(address, ())?;
        rec.slot = slot;
        rec.pending = false;
        rec.verify_attempts = 0;
        rec.verify_next_ms = 0;
        Ok(())
    }

    /// Makes `rec` pending, due for verification at `next_ms` (unlisting
    /// it if it was listed). The caller stores `rec` afterwards.
    pub fn make_pending(&mut self, address: &str, rec: &mut PeerRecord, next_ms: u64) -> Result<(), Error> {
        if rec.pending {
            self.pending.remove((rec.verify_next_ms, address))?;
        } else {
            self.unlist(address, rec)?;
        }
        rec.pending = true;
        rec.verify_next_ms = next_ms;
        self.pending.insert((next_ms, address), ())?;
        Ok(())
    }

    /// Queues a registration that is in no index yet for verification at `next_ms`.
    pub fn enqueue_new(&mut self, address: &str, rec: &mut PeerRecord, next_ms: u64) -> Result<(), Error> {
        rec.pending = true;
        rec.verify_next_ms = next_ms;
        self.pending.insert((next_ms, address), ())?;
        Ok(())
    }

    /// Deletes a registration from every table.
    pub fn delete(&mut self, addr: &str, rec: &PeerRecord) -> Result<(), Error> {
        self.peers.remove(addr)?;
        self.expiry.remove((rec.expires_at_ms, addr))?;
        if rec.pending {
            self.pending.remove((rec.verify_next_ms, addr))?;
            return Ok(());
        }
        self.unlist(addr, rec)
    }

    /// Takes a listed registration out of `listed` and `slots`, moving the
    /// last slot into its hole.
    fn unlist(&mut self, addr: &str, rec: &PeerRecord) -> Result<(), Error> {
        self.listed.remove(addr)?;
        let last = read_count(&self.meta)?.saturating_sub(1);
        if rec.slot != last {
            let moved = self.slots.get(last)?.map(|v| v.value().to_string());
            if let Some(moved) = moved {
                self.slots.insert(rec.slot, moved.as_str())?;
                if let Some(mut moved_rec) = self.get(&moved)? {
                    moved_rec.slot = rec.slot;
                    self.put(&moved, &moved_rec)?;
                }
            }
        }
        self.slots.remove(last)?;
        self.meta.insert(COUNT, last)?;
        Ok(())
    }
}
