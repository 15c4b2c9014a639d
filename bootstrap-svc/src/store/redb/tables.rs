//! The redb tables of the registry and the record stored per address.
//!
//! - `peers`: canonical address → [`PeerRecord`] (protobuf-encoded).
//! - `expiry`: (expires_at_ms, address) → (), so expired leases are found in
//!   order without a scan.
//! - `slots`: dense index 0..count → address. A random sample picks uniform
//!   slot numbers and looks them up, so it costs O(k log n) at any size;
//!   removal swaps the last slot into the hole.
//! - `meta`: `count` of registrations.
//! - `info`: `registry_id`, 16 random bytes fixed at creation.
//! - `tombstones`: address → (newest signed timestamp, kept until) of a
//!   signed registration that was removed or expired; a signed Register not newer than it is a
//!   replay. Kept until that timestamp is outside the freshness window
//!   (`tomb_expiry`: (until_ms, address) → (), for purging in order).

use ::redb::{ReadableTable, TableDefinition, WriteTransaction};
use p2p_proto::bootstrap::Peer;
use p2p_proto::signing;
use prost::Message;

use crate::auth::Owner;
use crate::error::Error;

pub(super) const PEERS: TableDefinition<&str, &[u8]> = TableDefinition::new("peers");
pub(super) const EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("expiry");
pub(super) const SLOTS: TableDefinition<u64, &str> = TableDefinition::new("slots");
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(super) const INFO: TableDefinition<&str, &[u8]> = TableDefinition::new("info");
pub(super) const REGISTRY_ID: &str = "registry_id";
pub(super) const TOMBSTONES: TableDefinition<&str, (u64, u64)> = TableDefinition::new("tombstones");
pub(super) const TOMB_EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("tomb_expiry");
const COUNT: &str = "count";

/// A registration as stored.
#[derive(Clone, PartialEq, Message)]
pub struct PeerRecord {
    /// 32-byte ed25519 key the registration is bound to; empty when unsigned.
    #[prost(bytes = "vec", tag = "1")]
    pub public_key: Vec<u8>,
    #[prost(uint64, tag = "2")]
    pub registered_at_ms: u64,
    #[prost(uint64, tag = "3")]
    pub last_seen_ms: u64,
    #[prost(uint64, tag = "4")]
    pub expires_at_ms: u64,
    /// Position in the `slots` table.
    #[prost(uint64, tag = "5")]
    pub slot: u64,
    /// Newest signed timestamp accepted for this address: anything not newer
    /// is a replay.
    #[prost(uint64, tag = "6")]
    pub last_signed_ts_ms: u64,
    /// IP the registration came from; an unsigned registration can only be
    /// removed from there.
    #[prost(string, tag = "7")]
    pub registrant_ip: String,
}

impl PeerRecord {
    pub fn to_peer(&self, address: &str) -> Peer {
        Peer {
            address: address.to_string(),
            node_id: if self.public_key.is_empty() { String::new() } else { signing::node_id(&self.public_key) },
            public_key: self.public_key.clone(),
            registered_at_unix_ms: self.registered_at_ms,
            last_seen_unix_ms: self.last_seen_ms,
            expires_at_unix_ms: self.expires_at_ms,
        }
    }

    /// What the access rules need to know about the owner.
    pub fn owner(&self) -> Owner<'_> {
        Owner {
            public_key: &self.public_key,
            last_signed_ts_ms: self.last_signed_ts_ms,
            registrant_ip: &self.registrant_ip,
        }
    }
}

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
    pub tombstones: ::redb::Table<'tx, &'static str, (u64, u64)>,
    pub tomb_expiry: ::redb::Table<'tx, (u64, &'static str), ()>,
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
        if rec.public_key.is_empty() {
            return Ok(());
        }
        let old = self.tombstones.insert(addr, (last_ts, until_ms))?.map(|v| v.value());
        if let Some((_, old_until)) = old {
            self.tomb_expiry.remove((old_until, addr))?;
        }
        self.tomb_expiry.insert((until_ms, addr), ())?;
        Ok(())
    }

    /// The replay floor of `addr` (a signed timestamp), if one is kept.
    pub fn replay_floor(&self, addr: &str) -> Result<Option<u64>, Error> {
        Ok(self.tombstones.get(addr)?.map(|v| v.value().0))
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

    /// Takes the next free slot for `address`; returns its number.
    pub fn add_slot(&mut self, address: &str) -> Result<u64, Error> {
        let slot = read_count(&self.meta)?;
        self.meta.insert(COUNT, slot + 1)?;
        self.slots.insert(slot, address)?;
        Ok(slot)
    }

    /// Deletes a registration from every table, moving the last slot into its hole.
    pub fn delete(&mut self, addr: &str, rec: &PeerRecord) -> Result<(), Error> {
        self.peers.remove(addr)?;
        self.expiry.remove((rec.expires_at_ms, addr))?;
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
