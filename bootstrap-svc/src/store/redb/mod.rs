//! The peer registry: redb on disk, one writer thread that group-commits, and
//! readers that run off the async workers.
//!
//! Tables:
//! - `peers`: canonical address → [`PeerRecord`] (protobuf-encoded).
//! - `expiry`: (expires_at_ms, address) → (), so expired leases are found in
//!   order without a scan.
//! - `slots`: dense index 0..count → address. A random sample picks uniform
//!   slot numbers and looks them up, so it costs O(k log n) at any size;
//!   removal swaps the last slot into the hole.
//! - `meta`: `count` of registrations.
//!
//! Nothing is loaded into memory at open: a restart serves at once at any
//! size. Every write transaction commits with immediate durability (fsync)
//! before it is acknowledged, and many concurrent writes share one commit.

use std::collections::HashSet;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use p2p_proto::bootstrap::{Peer, PeerEvent, PeerEventKind};
use p2p_proto::signing;
use prost::Message;
use rand::seq::{SliceRandom, index};
use redb::{Database, ReadableTable, TableDefinition, WriteTransaction};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::clock::Clock;
use crate::error::Error;
use crate::lease;

const PEERS: TableDefinition<&str, &[u8]> = TableDefinition::new("peers");
const EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("expiry");
const SLOTS: TableDefinition<u64, &str> = TableDefinition::new("slots");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const COUNT: &str = "count";

/// Most operations folded into one write transaction (one fsync).
const MAX_BATCH: usize = 1024;

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
    fn to_peer(&self, address: &str) -> Peer {
        Peer {
            address: address.to_string(),
            node_id: if self.public_key.is_empty() { String::new() } else { signing::node_id(&self.public_key) },
            public_key: self.public_key.clone(),
            registered_at_unix_ms: self.registered_at_ms,
            last_seen_unix_ms: self.last_seen_ms,
            expires_at_unix_ms: self.expires_at_ms,
        }
    }
}

/// A Register whose fields and signature the service already checked.
#[derive(Debug, Clone)]
pub struct RegisterCmd {
    /// Canonical address.
    pub address: String,
    /// The key the request was signed with, if any.
    pub public_key: Option<Vec<u8>>,
    /// The signed timestamp (only meaningful with `public_key`).
    pub signed_ts_ms: u64,
    pub ttl_secs: u32,
    pub client_ip: String,
}

/// What a Register did.
#[derive(Debug, Clone)]
pub struct Registered {
    pub created: bool,
    pub peer: Peer,
}

/// A Remove; its signature (if any) is checked here against the stored key.
#[derive(Debug, Clone)]
pub struct RemoveCmd {
    pub address: String,
    pub timestamp_ms: u64,
    pub signature: Vec<u8>,
    pub client_ip: String,
}

/// One page of peers.
#[derive(Debug, Clone)]
pub struct Page {
    pub peers: Vec<Peer>,
    /// Address to continue after, when there may be more.
    pub next_after: Option<String>,
    pub total: u64,
}

enum WriteOp {
    Register(RegisterCmd, oneshot::Sender<Result<Registered, Error>>),
    Remove(RemoveCmd, oneshot::Sender<Result<bool, Error>>),
    Purge(usize, oneshot::Sender<Result<usize, Error>>),
}

/// The registry. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Registry {
    db: Arc<Database>,
    /// `None` once closed.
    writes: std::sync::Mutex<Option<mpsc::Sender<WriteOp>>>,
    events: broadcast::Sender<PeerEvent>,
    clock: Arc<dyn Clock>,
    writer: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Registry {
    /// Opens (or creates) the registry at `path` and starts its writer thread.
    pub fn open(path: &Path, clock: Arc<dyn Clock>, event_buffer: usize) -> Result<Self, Error> {
        let db = Arc::new(Database::create(path)?);
        {
            // Create the tables up front so readers never see them missing.
            let mut tx = db.begin_write()?;
            tx.set_quick_repair(true);
            tx.open_table(PEERS)?;
            tx.open_table(EXPIRY)?;
            tx.open_table(SLOTS)?;
            tx.open_table(META)?;
            tx.commit()?;
        }
        let (events, _) = broadcast::channel(event_buffer.max(1));
        let (writes, rx) = mpsc::channel(4 * MAX_BATCH);
        let writer = {
            let (db, events, clock) = (db.clone(), events.clone(), clock.clone());
            std::thread::Builder::new()
                .name("registry-writer".into())
                .spawn(move || writer_loop(db, rx, events, clock))
                .map_err(|e| Error::Storage(format!("cannot start writer thread: {e}")))?
        };
        Ok(Registry {
            db,
            writes: std::sync::Mutex::new(Some(writes)),
            events,
            clock,
            writer: std::sync::Mutex::new(Some(writer)),
        })
    }

    /// Subscribes to registry changes committed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<PeerEvent> {
        self.events.subscribe()
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_unix_ms()
    }

    async fn write<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T, Error>>) -> WriteOp) -> Result<T, Error> {
        let writes = lock(&self.writes).clone().ok_or(Error::ShuttingDown)?;
        let (tx, rx) = oneshot::channel();
        writes.send(make(tx)).await.map_err(|_| Error::ShuttingDown)?;
        rx.await.map_err(|_| Error::ShuttingDown)?
    }

    /// Creates or refreshes a registration; returns once it is durable.
    pub async fn register(&self, cmd: RegisterCmd) -> Result<Registered, Error> {
        self.write(|tx| WriteOp::Register(cmd, tx)).await
    }

    /// Removes a registration; `Ok(false)` when there was none to remove.
    pub async fn remove(&self, cmd: RemoveCmd) -> Result<bool, Error> {
        self.write(|tx| WriteOp::Remove(cmd, tx)).await
    }

    /// Deletes up to `max` expired registrations; returns how many.
    pub async fn purge_expired(&self, max: usize) -> Result<usize, Error> {
        self.write(|tx| WriteOp::Purge(max, tx)).await
    }

    /// Registrations held, including expired ones not yet purged.
    pub async fn count(&self) -> Result<u64, Error> {
        let db = self.db.clone();
        blocking(move || {
            let tx = db.begin_read()?;
            read_count(&tx.open_table(META)?)
        })
        .await
    }

    /// Up to `limit` live peers with addresses after `after`, in address order.
    /// Scans a bounded number of entries, so a page never walks the registry.
    pub async fn page(&self, after: Option<String>, limit: usize, exclude: Option<String>) -> Result<Page, Error> {
        let (db, now) = (self.db.clone(), self.now_ms());
        blocking(move || {
            let tx = db.begin_read()?;
            let peers = tx.open_table(PEERS)?;
            let total = read_count(&tx.open_table(META)?)?;
            let lower = match &after {
                Some(a) => Bound::Excluded(a.as_str()),
                None => Bound::Unbounded,
            };
            let scan_budget = limit.saturating_mul(4).saturating_add(64);
            let mut out = Vec::with_capacity(limit);
            let mut last = None;
            let mut exhausted = true;
            for (scanned, entry) in peers.range::<&str>((lower, Bound::Unbounded))?.enumerate() {
                if out.len() >= limit || scanned >= scan_budget {
                    exhausted = false;
                    break;
                }
                let (k, v) = entry?;
                let address = k.value().to_string();
                let rec = decode(v.value())?;
                if lease::is_live(rec.expires_at_ms, now) && exclude.as_deref() != Some(address.as_str()) {
                    out.push(rec.to_peer(&address));
                }
                last = Some(address);
            }
            Ok(Page { peers: out, next_after: if exhausted { None } else { last }, total })
        })
        .await
    }

    /// A uniform random sample of up to `limit` live peers, without
    /// duplicates, found by picking random slots: O(limit log n).
    pub async fn sample(&self, limit: usize, exclude: Option<String>) -> Result<(Vec<Peer>, u64), Error> {
        let (db, now) = (self.db.clone(), self.now_ms());
        blocking(move || {
            let tx = db.begin_read()?;
            let peers = tx.open_table(PEERS)?;
            let slots = tx.open_table(SLOTS)?;
            let total = read_count(&tx.open_table(META)?)?;
            let n = usize::try_from(total).unwrap_or(usize::MAX);
            let mut out = Vec::with_capacity(limit.min(n));
            let mut tried: HashSet<usize> = HashSet::new();
            let mut rng = rand::rng();
            // Expired (not yet purged) and excluded entries are skipped, so a
            // round may come up short; a few more rounds fill it in.
            for _ in 0..4 {
                let want = limit - out.len();
                let untried = n - tried.len();
                if want == 0 || untried == 0 {
                    break;
                }
                let amount = (want + want / 4 + 2).min(untried);
                // When most slots are already tried (only in small registries:
                // `tried` never exceeds a few times `limit`), take a shuffle of
                // the rest rather than sampling around the tried ones.
                let candidates: Vec<usize> = if tried.len() * 2 > n {
                    let mut rest: Vec<usize> = (0..n).filter(|i| !tried.contains(i)).collect();
                    rest.shuffle(&mut rng);
                    rest
                } else {
                    index::sample(&mut rng, n, (amount + tried.len()).min(n))
                        .into_iter()
                        .filter(|i| !tried.contains(i))
                        .collect()
                };
                for i in candidates.into_iter().take(amount) {
                    if out.len() >= limit {
                        break;
                    }
                    tried.insert(i);
                    let Some(addr) = slots.get(i as u64)? else { continue };
                    let address = addr.value().to_string();
                    if exclude.as_deref() == Some(address.as_str()) {
                        continue;
                    }
                    if let Some(v) = peers.get(address.as_str())? {
                        let rec = decode(v.value())?;
                        if lease::is_live(rec.expires_at_ms, now) {
                            out.push(rec.to_peer(&address));
                        }
                    }
                }
            }
            Ok((out, total))
        })
        .await
    }

    /// Stops the writer after it has applied everything already queued and
    /// waits for it, so the database file is closed when this returns. Blocks:
    /// call it from `spawn_blocking` or outside the runtime.
    pub fn close(&self) {
        drop(lock(&self.writes).take());
        if let Some(handle) = lock(&self.writer).take() {
            let _ = handle.join();
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, Error> + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Storage(format!("reader task failed: {e}")))?
}

fn decode(bytes: &[u8]) -> Result<PeerRecord, Error> {
    PeerRecord::decode(bytes).map_err(|e| Error::Storage(format!("corrupt peer record: {e}")))
}

fn read_count(meta: &impl ReadableTable<&'static str, u64>) -> Result<u64, Error> {
    Ok(meta.get(COUNT)?.map(|v| v.value()).unwrap_or(0))
}

/// Applies queued writes in batches: one transaction and one fsync for all
/// the operations that arrived while the previous commit was running.
fn writer_loop(
    db: Arc<Database>,
    mut rx: mpsc::Receiver<WriteOp>,
    events: broadcast::Sender<PeerEvent>,
    clock: Arc<dyn Clock>,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let ops = batch.len();
        let (replies, outcome) = apply_batch(&db, batch, clock.now_unix_ms());
        match &outcome {
            Ok(_) => tracing::trace!(ops, "registry batch committed"),
            Err(e) => tracing::error!(error = %e, ops, "registry batch failed; nothing in it was applied"),
        }
        // Replies go out only after the commit is durable.
        for reply in replies {
            reply(outcome.as_ref().err());
        }
        for ev in outcome.unwrap_or_default() {
            // No subscribers is fine: events are a courtesy, the store is the truth.
            let _ = events.send(ev);
        }
    }
    tracing::debug!("registry writer stopped");
}

/// Answers one op: with its own result, or with the batch's storage failure.
type Reply = Box<dyn FnOnce(Option<&Error>) + Send>;

fn reply_with<T: Send + 'static>(tx: oneshot::Sender<Result<T, Error>>, result: Result<T, Error>) -> Reply {
    Box::new(move |batch_failed| {
        let _ = tx.send(match batch_failed {
            None => result,
            Some(e) => Err(Error::Storage(e.to_string())),
        });
    })
}

/// Runs every op of a batch in one transaction. A request error is that op's
/// answer; a storage error aborts the transaction and fails every op in it.
fn apply_batch(db: &Database, batch: Vec<WriteOp>, now: u64) -> (Vec<Reply>, Result<Vec<PeerEvent>, Error>) {
    let fail_all = |batch: Vec<WriteOp>, e: Error| {
        let replies = batch.into_iter().map(|op| reply_with_failure(op, &e)).collect();
        (replies, Err(e))
    };
    let mut tx = match db.begin_write() {
        Ok(tx) => tx,
        Err(e) => return fail_all(batch, e.into()),
    };
    tx.set_quick_repair(true);
    let mut replies = Vec::with_capacity(batch.len());
    let mut events = Vec::new();
    let mut failure: Option<Error> = None;
    {
        let mut t = match Tables::open(&tx) {
            Ok(t) => t,
            Err(e) => return fail_all(batch, e),
        };
        for op in batch {
            if let Some(e) = &failure {
                replies.push(reply_with_failure(op, e));
                continue;
            }
            let reply = match op {
                WriteOp::Register(cmd, r) => apply_one(r, register_in(&mut t, &cmd, now, &mut events), &mut failure),
                WriteOp::Remove(cmd, r) => apply_one(r, remove_in(&mut t, &cmd, now, &mut events), &mut failure),
                WriteOp::Purge(max, r) => apply_one(r, purge_in(&mut t, max, now, &mut events), &mut failure),
            };
            replies.push(reply);
        }
    }
    let committed = match failure {
        Some(e) => Err(e),
        None => tx.commit().map_err(Error::from),
    };
    (replies, committed.map(|()| events))
}

/// The registry's tables in one write transaction, opened once per batch.
struct Tables<'tx> {
    peers: redb::Table<'tx, &'static str, &'static [u8]>,
    expiry: redb::Table<'tx, (u64, &'static str), ()>,
    slots: redb::Table<'tx, u64, &'static str>,
    meta: redb::Table<'tx, &'static str, u64>,
}

impl<'tx> Tables<'tx> {
    fn open(tx: &'tx WriteTransaction) -> Result<Self, Error> {
        Ok(Tables {
            peers: tx.open_table(PEERS)?,
            expiry: tx.open_table(EXPIRY)?,
            slots: tx.open_table(SLOTS)?,
            meta: tx.open_table(META)?,
        })
    }

    fn get(&self, address: &str) -> Result<Option<PeerRecord>, Error> {
        self.peers.get(address)?.map(|v| decode(v.value())).transpose()
    }

    fn put(&mut self, address: &str, rec: &PeerRecord) -> Result<(), Error> {
        self.peers.insert(address, rec.encode_to_vec().as_slice())?;
        Ok(())
    }
}

fn apply_one<T: Send + 'static>(
    reply: oneshot::Sender<Result<T, Error>>,
    result: Result<T, Error>,
    failure: &mut Option<Error>,
) -> Reply {
    if let Err(Error::Storage(msg)) = &result {
        *failure = Some(Error::Storage(msg.clone()));
    }
    reply_with(reply, result)
}

fn reply_with_failure(op: WriteOp, e: &Error) -> Reply {
    let e = Error::Storage(e.to_string());
    match op {
        WriteOp::Register(_, r) => reply_with(r, Err(e)),
        WriteOp::Remove(_, r) => reply_with(r, Err(e)),
        WriteOp::Purge(_, r) => reply_with(r, Err(e)),
    }
}

fn event(kind: PeerEventKind, peer: Peer, now: u64) -> PeerEvent {
    PeerEvent { kind: kind as i32, peer: Some(peer), missed: 0, at_unix_ms: now }
}

fn register_in(
    t: &mut Tables<'_>,
    cmd: &RegisterCmd,
    now: u64,
    events: &mut Vec<PeerEvent>,
) -> Result<Registered, Error> {
    let addr = cmd.address.as_str();
    let expires = lease::expires_at(now, cmd.ttl_secs);
    // An expired lease is gone, even if not purged yet: the address is free.
    let existing = match t.get(addr)? {
        Some(rec) if lease::is_live(rec.expires_at_ms, now) => Some(rec),
        Some(stale) => {
            delete_in(t, addr, &stale)?;
            events.push(event(PeerEventKind::Expired, stale.to_peer(addr), now));
            None
        }
        None => None,
    };
    let (rec, created) = match existing {
        Some(mut rec) => {
            if !rec.public_key.is_empty() {
                let owner = signing::node_id(&rec.public_key);
                match &cmd.public_key {
                    Some(k) if *k == rec.public_key => {}
                    Some(_) => {
                        return Err(Error::PermissionDenied(format!(
                            "address {addr} is registered by node {owner}; a different key cannot refresh or take it over"
                        )));
                    }
                    None => {
                        return Err(Error::PermissionDenied(format!(
                            "address {addr} is registered by node {owner}; refresh it with a request signed by that key"
                        )));
                    }
                }
                if cmd.signed_ts_ms <= rec.last_signed_ts_ms {
                    return Err(replayed(cmd.signed_ts_ms, rec.last_signed_ts_ms));
                }
            }
            if let Some(k) = &cmd.public_key {
                // Signed refresh, or an unsigned registration claimed by a key.
                rec.public_key = k.clone();
                rec.last_signed_ts_ms = cmd.signed_ts_ms;
            }
            t.expiry.remove((rec.expires_at_ms, addr))?;
            rec.expires_at_ms = expires;
            rec.last_seen_ms = now;
            rec.registrant_ip = cmd.client_ip.clone();
            (rec, false)
        }
        None => {
            let slot = read_count(&t.meta)?;
            t.meta.insert(COUNT, slot + 1)?;
            t.slots.insert(slot, addr)?;
            let rec = PeerRecord {
                public_key: cmd.public_key.clone().unwrap_or_default(),
                registered_at_ms: now,
                last_seen_ms: now,
                expires_at_ms: expires,
                slot,
                last_signed_ts_ms: if cmd.public_key.is_some() { cmd.signed_ts_ms } else { 0 },
                registrant_ip: cmd.client_ip.clone(),
            };
            (rec, true)
        }
    };
    t.put(addr, &rec)?;
    t.expiry.insert((rec.expires_at_ms, addr), ())?;
    let peer = rec.to_peer(addr);
    let kind = if created { PeerEventKind::Joined } else { PeerEventKind::Refreshed };
    events.push(event(kind, peer.clone(), now));
    Ok(Registered { created, peer })
}

fn replayed(ts: u64, last: u64) -> Error {
    Error::PermissionDenied(format!(
        "replayed or out-of-order request: timestamp_unix_ms {ts} is not newer than the last one accepted for this address ({last})"
    ))
}

fn remove_in(t: &mut Tables<'_>, cmd: &RemoveCmd, now: u64, events: &mut Vec<PeerEvent>) -> Result<bool, Error> {
    let addr = cmd.address.as_str();
    let Some(rec) = t.get(addr)? else { return Ok(false) };
    if !lease::is_live(rec.expires_at_ms, now) {
        delete_in(t, addr, &rec)?;
        events.push(event(PeerEventKind::Expired, rec.to_peer(addr), now));
        return Ok(false);
    }
    if rec.public_key.is_empty() {
        if cmd.client_ip != rec.registrant_ip {
            return Err(Error::PermissionDenied(format!(
                "address {addr} was registered without a key from {}; only that host can remove it (or let its lease expire)",
                rec.registrant_ip
            )));
        }
    } else {
        let owner = signing::node_id(&rec.public_key);
        if cmd.signature.is_empty() {
            return Err(Error::PermissionDenied(format!(
                "address {addr} is registered by node {owner}; removing it needs a signature by that key"
            )));
        }
        let payload = signing::remove_payload(addr, cmd.timestamp_ms);
        signing::verify(&rec.public_key, &payload, &cmd.signature)
            .map_err(|e| Error::PermissionDenied(format!("address {addr} is registered by node {owner}: {e}")))?;
        if cmd.timestamp_ms <= rec.last_signed_ts_ms {
            return Err(replayed(cmd.timestamp_ms, rec.last_signed_ts_ms));
        }
    }
    delete_in(t, addr, &rec)?;
    events.push(event(PeerEventKind::Left, rec.to_peer(addr), now));
    Ok(true)
}

fn purge_in(t: &mut Tables<'_>, max: usize, now: u64, events: &mut Vec<PeerEvent>) -> Result<usize, Error> {
    let expired: Vec<String> = {
        let mut out = Vec::new();
        for entry in t.expiry.range::<(u64, &str)>(..(now.saturating_add(1), ""))?.take(max) {
            let (k, _) = entry?;
            let (at, addr) = k.value();
            if at <= now {
                out.push(addr.to_string());
            }
        }
        out
    };
    for addr in &expired {
        if let Some(rec) = t.get(addr)? {
            delete_in(t, addr, &rec)?;
            events.push(event(PeerEventKind::Expired, rec.to_peer(addr), now));
        }
    }
    Ok(expired.len())
}

/// Deletes a registration from every table, moving the last slot into its hole.
fn delete_in(t: &mut Tables<'_>, addr: &str, rec: &PeerRecord) -> Result<(), Error> {
    t.peers.remove(addr)?;
    t.expiry.remove((rec.expires_at_ms, addr))?;
    let last = read_count(&t.meta)?.saturating_sub(1);
    if rec.slot != last {
        let moved = t.slots.get(last)?.map(|v| v.value().to_string());
        if let Some(moved) = moved {
            t.slots.insert(rec.slot, moved.as_str())?;
            if let Some(mut moved_rec) = t.get(&moved)? {
                moved_rec.slot = rec.slot;
                t.put(&moved, &moved_rec)?;
            }
        }
    }
    t.slots.remove(last)?;
    t.meta.insert(COUNT, last)?;
    Ok(())
}
