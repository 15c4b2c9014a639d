//! The registry on redb: one machine, one file. Readers run on the blocking
//! pool; one writer thread group-commits ([`writer`]); nothing is loaded
//! into memory at open, so a restart serves at once at any size. Every write
//! commits with immediate durability (fsync) before it is acknowledged.

mod tables;
mod writer;

use std::collections::HashSet;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use ::redb::{Database, ReadableTable};
use p2p_proto::bootstrap::{Peer, PeerEvent};
use p2p_proto::clock::Clock;
use p2p_proto::signing::RegistryId;
use p2p_proto::storage::RedbCell;
use rand::seq::{SliceRandom, index};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use self::tables::{
    EXPIRY, INFO, LISTED, META, OLD_TOMBSTONES, PEERS, PENDING, REGISTRY_ID, SCHEMA, SCHEMA_VERSION, SLOTS,
    TOMB_EXPIRY, TOMBSTONES, decode, read_count,
};
use self::writer::{MAX_BATCH, WriteOp};
use super::{Page, PeerStore, PendingCheck, RegisterCmd, Registered, RemoveCmd, Verification};
use crate::error::Error;
use crate::lease;

/// What a request gets while the store is down.
pub(super) fn store_down() -> Error {
    Error::StoreDown("the registry's storage failed (is the disk full?) and is being reopened; retry shortly".into())
}

/// The registry database, reopened after a failure.
#[derive(Debug)]
pub(super) struct DbSlot(RedbCell);

impl DbSlot {
    pub(super) fn get(&self) -> Result<Arc<Database>, Error> {
        self.0.get().ok_or_else(store_down)
    }

    pub(super) fn fail(&self, cause: &Error) {
        self.0.fail(cause);
    }

    /// Reopens the database and proves it can commit again.
    pub(super) fn try_recover(&self) -> bool {
        self.0.try_recover()
    }

    pub(super) fn is_healthy(&self) -> bool {
        self.0.is_healthy()
    }
}

/// The redb store. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct RedbStore {
    db: Arc<DbSlot>,
    /// `None` once closed.
    writes: std::sync::Mutex<Option<mpsc::Sender<WriteOp>>>,
    events: broadcast::Sender<PeerEvent>,
    clock: Arc<dyn Clock>,
    writer: std::sync::Mutex<Option<JoinHandle<()>>>,
    registry_id: RegistryId,
    commit_metrics: crate::metrics::CommitMetrics,
}

impl RedbStore {
    /// The writer's batch size and commit latency histograms.
    pub fn commit_metrics(&self) -> crate::metrics::CommitMetrics {
        self.commit_metrics.clone()
    }
}

impl RedbStore {
    /// Opens (or creates) the registry at `path` and starts its writer
    /// thread. `replay_window_ms` is how long a removed or expired signed
    /// registration keeps its replay floor (the signature freshness window).
    pub fn open(path: &Path, clock: Arc<dyn Clock>, event_buffer: usize, replay_window_ms: u64) -> Result<Self, Error> {
        let db = Database::create(path)?;
        let registry_id = {
            // Create the tables up front so readers never see them missing.
            let mut tx = db.begin_write()?;
            tx.set_quick_repair(true);
            tx.open_table(PEERS)?;
            tx.open_table(EXPIRY)?;
            tx.open_table(SLOTS)?;
            tx.open_table(META)?;
            tx.open_table(TOMBSTONES)?;
            tx.open_table(TOMB_EXPIRY)?;
            tx.open_table(PENDING)?;
            let mut listed = tx.open_table(LISTED)?;
            let id = {
                let mut info = tx.open_table(INFO)?;
                if info.get(SCHEMA)?.is_none() {
                    // Written before verification existed: everything held
                    // was listed, and tombstones named no key.
                    let peers = tx.open_table(PEERS)?;
                    for entry in peers.iter()? {
                        let (address, _) = entry?;
                        listed.insert(address.value(), ())?;
                    }
                    tx.delete_table(OLD_TOMBSTONES)?;
                    info.insert(SCHEMA, SCHEMA_VERSION)?;
                }
                let stored = info.get(REGISTRY_ID)?.map(|v| v.value().to_vec());
                match stored {
                    Some(id) => p2p_proto::signing::registry_id(&id).map_err(Error::storage_msg)?,
                    None => {
                        let mut id: RegistryId = [0; p2p_proto::signing::REGISTRY_ID_LEN];
                        getrandom::fill(&mut id).map_err(|e| Error::storage_msg(format!("no randomness: {e}")))?;
                        info.insert(REGISTRY_ID, id.as_slice())?;
                        id
                    }
                }
            };
            drop(listed);
            tx.commit()?;
            id
        };
        let db = Arc::new(DbSlot(RedbCell::new("registry", path, db)));
        let (events, _) = broadcast::channel(event_buffer.max(1));
        let (writes, rx) = mpsc::channel(4 * MAX_BATCH);
        let commit_metrics = crate::metrics::CommitMetrics::default();
        let writer = {
            let (db, events, clock, metrics) = (db.clone(), events.clone(), clock.clone(), commit_metrics.clone());
            std::thread::Builder::new()
                .name("registry-writer".into())
                .spawn(move || writer::run(db, rx, events, clock, replay_window_ms, metrics))
                .map_err(Error::storage)?
        };
        Ok(RedbStore {
            db,
            writes: std::sync::Mutex::new(Some(writes)),
            events,
            clock,
            writer: std::sync::Mutex::new(Some(writer)),
            registry_id,
            commit_metrics,
        })
    }

    async fn write<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T, Error>>) -> WriteOp) -> Result<T, Error> {
        let writes = lock(&self.writes).clone().ok_or(Error::ShuttingDown)?;
        let (tx, rx) = oneshot::channel();
        writes.send(make(tx)).await.map_err(|_| Error::ShuttingDown)?;
        rx.await.map_err(|_| Error::ShuttingDown)?
    }

    fn now_ms(&self) -> u64 {
        self.clock.now_unix_ms()
    }
}

#[tonic::async_trait]
impl PeerStore for RedbStore {
    /// Creates or refreshes a registration; returns once it is durable.
    async fn register(&self, cmd: RegisterCmd) -> Result<Registered, Error> {
        self.write(|tx| WriteOp::Register(cmd, tx)).await
    }

    /// Removes a registration; `Ok(false)` when there was none to remove.
    async fn remove(&self, cmd: RemoveCmd) -> Result<bool, Error> {
        self.write(|tx| WriteOp::Remove(cmd, tx)).await
    }

    fn registry_id(&self) -> RegistryId {
        self.registry_id
    }

    fn serving(&self) -> watch::Receiver<bool> {
        self.db.0.subscribe()
    }

    async fn owner_key(&self, address: &str) -> Result<Option<Vec<u8>>, Error> {
        let (db, address, now) = (self.db.get()?, address.to_string(), self.now_ms());
        blocking(move || {
            let tx = db.begin_read()?;
            let peers = tx.open_table(PEERS)?;
            let rec = peers.get(address.as_str())?.map(|v| decode(v.value())).transpose()?;
            Ok(rec.filter(|r| lease::is_live(r.expires_at_ms, now)).map(|r| r.public_key))
        })
        .await
    }

    /// Deletes up to `max` expired registrations; returns how many.
    async fn purge_expired(&self, max: usize) -> Result<usize, Error> {
        self.write(|tx| WriteOp::Purge(max, tx)).await
    }

    /// Listed registrations, including expired ones not yet purged.
    async fn count(&self) -> Result<u64, Error> {
        let db = self.db.get()?;
        blocking(move || {
            let tx = db.begin_read()?;
            read_count(&tx.open_table(META)?)
        })
        .await
    }

    /// Up to `limit` live listed peers (and pending ones with
    /// `include_pending`) with addresses after `after`, in address order.
    /// Scans a bounded number of entries, so a page never walks the registry.
    async fn page(
        &self,
        after: Option<String>,
        limit: usize,
        exclude: Option<String>,
        include_pending: bool,
    ) -> Result<Page, Error> {
        let (db, now) = (self.db.get()?, self.now_ms());
        blocking(move || {
            let tx = db.begin_read()?;
            let peers = tx.open_table(PEERS)?;
            let listed = tx.open_table(LISTED)?;
            let total = read_count(&tx.open_table(META)?)?;
            let lower = match &after {
                Some(a) => Bound::Excluded(a.as_str()),
                None => Bound::Unbounded,
            };
            let scan_budget = limit.saturating_mul(4).saturating_add(64);
            let mut out = Vec::with_capacity(limit);
            let mut last = None;
            let mut exhausted = true;
            // Listed addresses only, unless the operator asks for everything.
            let keys: Box<dyn Iterator<Item = Result<String, ::redb::StorageError>>> = if include_pending {
                Box::new(peers.range::<&str>((lower, Bound::Unbounded))?.map(|e| e.map(|(k, _)| k.value().to_string())))
            } else {
                Box::new(
                    listed.range::<&str>((lower, Bound::Unbounded))?.map(|e| e.map(|(k, _)| k.value().to_string())),
                )
            };
            for (scanned, address) in keys.enumerate() {
                if out.len() >= limit || scanned >= scan_budget {
                    exhausted = false;
                    break;
                }
                let address = address?;
                if let Some(v) = peers.get(address.as_str())? {
                    let rec = decode(v.value())?;
                    if lease::is_live(rec.expires_at_ms, now) && exclude.as_deref() != Some(address.as_str()) {
                        out.push(rec.to_peer(&address));
                    }
                }
                last = Some(address);
            }
            Ok(Page { peers: out, next_after: if exhausted { None } else { last }, total })
        })
        .await
    }

    async fn due_verifications(&self, max: usize) -> Result<Vec<PendingCheck>, Error> {
        let (db, now) = (self.db.get()?, self.now_ms());
        blocking(move || {
            let tx = db.begin_read()?;
            let peers = tx.open_table(PEERS)?;
            let pending = tx.open_table(PENDING)?;
            let mut out = Vec::new();
            for entry in pending.range::<(u64, &str)>(..(now.saturating_add(1), ""))?.take(max) {
                let (k, _) = entry?;
                let (_, address) = k.value();
                let Some(v) = peers.get(address)? else { continue };
                let rec = decode(v.value())?;
                if rec.pending && lease::is_live(rec.expires_at_ms, now) {
                    out.push(PendingCheck {
                        address: address.to_string(),
                        public_key: rec.public_key,
                        attempts: rec.verify_attempts,
                    });
                }
            }
            Ok(out)
        })
        .await
    }

    async fn record_verification(&self, check: PendingCheck, outcome: Verification) -> Result<(), Error> {
        self.write(|tx| WriteOp::Verified(check, outcome, tx)).await
    }

    /// A uniform random sample of up to `limit` live peers, without
    /// duplicates, found by picking random slots: O(limit log n).
    async fn sample(&self, limit: usize, exclude: Option<String>) -> Result<(Vec<Peer>, u64), Error> {
        let (db, now) = (self.db.get()?, self.now_ms());
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

    /// Subscribes to registry changes committed from now on.
    fn subscribe(&self) -> broadcast::Receiver<PeerEvent> {
        self.events.subscribe()
    }

    /// Stops the writer after it has applied everything already queued and
    /// waits for it, so the database file is closed when this returns.
    async fn close(&self) {
        drop(lock(&self.writes).take());
        let writer = lock(&self.writer).take();
        if let Some(handle) = writer {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, Error> + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f).await.map_err(Error::storage)?
}
