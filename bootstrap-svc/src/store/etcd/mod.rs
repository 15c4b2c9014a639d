//! The registry on etcd: any number of stateless bootstrap servers share one
//! etcd cluster ([`keys`] has the layout).
//!
//! - **Writes** read an address's keys, decide with the same rules as the
//!   redb store ([`logic`]), and commit with a transaction that compares the
//!   revisions read: a concurrent write makes it fail and the decision is
//!   made again on fresh data. Ownership and the replay floor are thus
//!   checked and applied atomically. A write is acknowledged only after
//!   etcd answered that the transaction committed (a Raft quorum has it).
//! - **Leases are TTLs**: a record is put on an etcd lease that ends just
//!   after it does (leases are shared per second of expiry, so a Register
//!   costs no lease grant of its own), and etcd deletes it then. Reads
//!   treat a record past its expiry as gone at once.
//! - **Reads**: GetPeers pages are etcd ranges in address order. Random
//!   samples and the count come from this server's copy of the listed
//!   records ([`cache`]), kept by list + watch, which also feeds WatchPeers:
//!   events every server wrote (`{prefix}e`) and the deletions etcd made
//!   when leases ended (EXPIRED). After a compaction overtakes the watch,
//!   the copy is listed again and the differences are announced.

mod cache;
mod client;
pub mod keys;
pub mod logic;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use p2p_proto::bootstrap::{Peer, PeerEvent, PeerEventKind};
use p2p_proto::clock::Clock;
use p2p_proto::etcd::{
    Compare, Event, KeyValue, PutRequest, RangeRequest, RequestOp, TxnRequest, WatchCreateRequest, WatchRequest,
    compare, event::EventType, request_op, response_op, watch_request,
};
use p2p_proto::signing::RegistryId;
use prost::Message;
use tokio::sync::{OnceCell, broadcast, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::Status;

pub use self::client::EtcdClient;
use self::keys::{EventBatch, Keys, Kind, Parsed, Tomb};
use self::logic::{After, View};
use super::record::PeerRecord;
use super::{Page, PeerStore, PendingCheck, RegisterCmd, Registered, RemoveCmd, Verification};
use crate::error::Error;
use crate::lease;

/// Attempts of one write before it gives up on a contended address.
const MAX_ATTEMPTS: usize = 8;
/// Records per range when listing.
const LIST_PAGE: i64 = 5_000;
/// How long past its expiry a listed record may stay before a server
/// deletes it itself (its lease normally ends within ~2 s).
const REAP_GRACE: Duration = Duration::from_secs(5);
/// Most overdue records one purge deletes (one transaction each).
const REAP_BATCH: usize = 256;
/// Pending registrations read per verifier poll.
const PENDING_SCAN: i64 = 512;

/// Where the registry lives in etcd and how long to wait for it.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Cluster members, `host:port` (any subset will do; calls fail over).
    pub endpoints: Vec<String>,
    /// Key prefix of this registry; servers sharing it share the registry.
    pub prefix: String,
    /// Deadline of one call to one member.
    pub request_timeout: Duration,
    /// How long startup waits for the cluster before giving up.
    pub startup_timeout: Duration,
}

impl EtcdOptions {
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdOptions {
            endpoints,
            prefix: "/p2p/registry/".into(),
            request_timeout: Duration::from_secs(2),
            startup_timeout: Duration::from_secs(60),
        }
    }
}

/// The etcd store. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct EtcdStore {
    inner: Arc<Inner>,
    registry_id: RegistryId,
    /// Where the verifier's next scan of pending registrations starts.
    pending_cursor: Mutex<Option<String>>,
    stop: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Inner {
    client: EtcdClient,
    keys: Keys,
    clock: Arc<dyn Clock>,
    window_ms: u64,
    listed: RwLock<cache::Listed>,
    events: broadcast::Sender<PeerEvent>,
    serving: watch::Sender<bool>,
    leases: Leases,
    commit_metrics: crate::metrics::CommitMetrics,
}

impl EtcdStore {
    /// Connects, creates or reads the registry id, lists the registry and
    /// starts following it. Waits up to `startup_timeout` for the cluster.
    pub async fn open(
        options: EtcdOptions,
        clock: Arc<dyn Clock>,
        event_buffer: usize,
        replay_window_ms: u64,
    ) -> Result<Self, Error> {
        let client = EtcdClient::new(&options.endpoints, options.request_timeout)?;
        let keys = Keys::new(&options.prefix);
        let deadline = Instant::now() + options.startup_timeout;
        let mut listing = Duration::ZERO;
        let (registry_id, (revision, listed)) = loop {
            let attempt = async {
                let id = registry_id(&client, &keys).await?;
                let started = Instant::now();
                let listed = list(&client, &keys).await?;
                listing = started.elapsed();
                Ok::<_, Error>((id, listed))
            };
            match attempt.await {
                Ok(v) => break v,
                Err(e @ Error::StoreDown(_)) if Instant::now() < deadline => {
                    tracing::warn!(error = %e, "waiting for etcd");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let (events, _) = broadcast::channel(event_buffer.max(1));
        let (serving, _) = watch::channel(true);
        let inner = Arc::new(Inner {
            leases: Leases::default(),
            client,
            keys,
            clock,
            window_ms: replay_window_ms,
            listed: RwLock::new(listed),
            events,
            serving,
            commit_metrics: crate::metrics::CommitMetrics::default(),
        });
        let stop = CancellationToken::new();
        let tasks = vec![
            tokio::spawn(follow(inner.clone(), revision + 1, stop.child_token())),
            tokio::spawn(health(inner.clone(), stop.child_token())),
        ];
        tracing::info!(
            endpoints = %options.endpoints.join(","),
            prefix = %options.prefix,
            listed = inner.listed().len(),
            revision,
            list_ms = listing.as_millis() as u64,
            "registry on etcd"
        );
        Ok(EtcdStore { inner, registry_id, pending_cursor: Mutex::new(None), stop, tasks: Mutex::new(tasks) })
    }

    /// Transaction latency (batch size is always 1: etcd batches in Raft).
    pub fn commit_metrics(&self) -> crate::metrics::CommitMetrics {
        self.inner.commit_metrics.clone()
    }
}

impl Inner {
    fn now_ms(&self) -> u64 {
        self.clock.now_unix_ms()
    }

    fn listed(&self) -> std::sync::RwLockReadGuard<'_, cache::Listed> {
        self.listed.read().unwrap_or_else(|p| p.into_inner())
    }

    fn listed_mut(&self) -> std::sync::RwLockWriteGuard<'_, cache::Listed> {
        self.listed.write().unwrap_or_else(|p| p.into_inner())
    }

    /// An address's keys and their revisions (0: absent), read linearizably.
    async fn read(&self, address: &str) -> Result<(View, [i64; 3]), Error> {
        let kinds = [Kind::Listed, Kind::Pending, Kind::Tomb];
        let success = kinds
            .iter()
            .map(|&k| RequestOp {
                request: Some(request_op::Request::RequestRange(RangeRequest {
                    key: self.keys.key(k, address),
                    ..Default::default()
                })),
            })
            .collect();
        let resp = self
            .client
            .txn(TxnRequest { success, ..Default::default() })
            .await
            .map_err(|s| self.client.error("read", s))?;
        let mut view = View::default();
        let mut revs = [0; 3];
        for (i, op) in resp.responses.into_iter().enumerate() {
            let Some(response_op::Response::ResponseRange(r)) = op.response else { continue };
            let Some(kv) = r.kvs.into_iter().next() else { continue };
            revs[i] = kv.mod_revision;
            match kinds[i] {
                // A record under both (never written so) reads as listed.
                Kind::Listed => view.rec = Some(decode_record(&kv.value)?),
                Kind::Pending if view.rec.is_none() => view.rec = Some(decode_record(&kv.value)?),
                Kind::Pending => {}
                Kind::Tomb => view.tomb = Some(Tomb::decode(kv.value.as_slice()).map_err(Error::storage)?),
            }
        }
        Ok((view, revs))
    }

    /// What this server's copy holds for a listed `address`, as a view to
    /// decide on without reading: the record and the revision it was
    /// written at. The transaction then compares that revision (and that
    /// no pending record exists), so a stale copy only costs a retry on
    /// read data. The replay floor is not in the copy: use this only for a
    /// decision that cannot depend on it ([`fast_path_ok`]).
    fn cached(&self, address: &str) -> Option<(View, [i64; 3])> {
        let listed = self.listed();
        let (bytes, revision) = listed.entry(address)?;
        let rec = PeerRecord::decode(bytes).ok()?;
        Some((View { rec: Some(rec), tomb: None }, [revision, 0, UNCHECKED]))
    }

    /// Decides and commits if nothing it decided on has changed (starting
    /// from `hint` if given, else from a read); decides again on freshly
    /// read data if something has.
    async fn update<T: Clone>(
        &self,
        address: &str,
        hint: Option<(View, [i64; 3])>,
        decide: impl Fn(&View, u64) -> Result<(After, T), Error>,
    ) -> Result<T, Error> {
        let mut hint = hint;
        // Every write attempted so far. A failed compare may be our own
        // earlier attempt having landed (a member that timed out after
        // applying it, then a retry on the next member): if what we read
        // back is one of them, it committed.
        let mut attempted: Vec<(After, T)> = Vec::new();
        let mut last_failure = None;
        for _ in 0..MAX_ATTEMPTS {
            let (view, revs) = match hint.take() {
                Some(h) => h,
                None => self.read(address).await?,
            };
            if let Some((_, answer)) = attempted.iter().find(|(after, _)| holds(&view, after)) {
                return Ok(answer.clone());
            }
            let now = self.now_ms();
            let (after, answer) = decide(&view, now)?;
            if after.is_noop(&view) {
                return Ok(answer);
            }
            let txn = self.transaction(address, revs, &after, now).await?;
            attempted.push((after, answer.clone()));
            let started = Instant::now();
            match self.client.txn(txn).await {
                Ok(resp) if resp.succeeded => {
                    self.commit_metrics.batch_size.observe(1.0);
                    self.commit_metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
                    return Ok(answer);
                }
                // Another write came first (or ours did, on a member that
                // then failed to answer): read and decide again.
                Ok(_) => continue,
                Err(s) if client::lease_not_found(&s) => self.leases.forget_expired(now / 1000 + 3),
                Err(s) if client::another_member_may_answer(&s) => {
                    last_failure = Some(self.client.error("write", s));
                }
                Err(s) => return Err(self.client.error("write", s)),
            }
        }
        Err(last_failure.unwrap_or_else(|| {
            Error::Contended(format!(
                "the registration of {address} changed {MAX_ATTEMPTS} times while this request was applied; retry"
            ))
        }))
    }

    /// The compare-and-swap that turns `view` into `after`.
    async fn transaction(&self, address: &str, revs: [i64; 3], after: &After, now: u64) -> Result<TxnRequest, Error> {
        let kinds = [Kind::Listed, Kind::Pending, Kind::Tomb];
        let compare = kinds
            .iter()
            .zip(revs)
            .filter(|(_, rev)| *rev != UNCHECKED)
            .map(|(&k, rev)| unchanged_since(self.keys.key(k, address), rev))
            .collect();
        let mut ops = Vec::new();
        let new_kind = after.rec.as_ref().map(|r| if r.pending { Kind::Pending } else { Kind::Listed });
        for (kind, rev) in [(Kind::Listed, revs[0]), (Kind::Pending, revs[1])] {
            if rev != 0 && new_kind != Some(kind) {
                ops.push(delete(self.keys.key(kind, address)));
            }
        }
        if let (Some(rec), Some(kind)) = (&after.rec, new_kind) {
            let lease = self.leases.for_deadline(&self.client, rec.expires_at_ms, now).await?;
            ops.push(put(self.keys.key(kind, address), rec.encode_to_vec(), lease));
        }
        if let Some(tomb) = &after.tomb {
            let lease = self.leases.for_deadline(&self.client, tomb.until_ms, now).await?;
            ops.push(put(self.keys.key(Kind::Tomb, address), tomb.encode_to_vec(), lease));
        }
        if !after.events.is_empty() {
            let batch = EventBatch { events: after.events.clone() };
            ops.push(put(self.keys.events(), batch.encode_to_vec(), 0));
        }
        Ok(TxnRequest { compare, success: ops, failure: Vec::new() })
    }
}

/// A revision not compared (the key is not part of the decision).
const UNCHECKED: i64 = -1;

/// Whether a Register can be decided on the cached record alone: it is
/// live, and the request is unsigned (the replay floor plays no part) or
/// signed by the record's own key (whose floor is never above the record's
/// last signed timestamp, which the rules check).
fn fast_path_ok(view: &View, cmd: &RegisterCmd, now: u64) -> bool {
    let Some(rec) = &view.rec else { return false };
    !rec.pending
        && lease::is_live(rec.expires_at_ms, now)
        && cmd.claim.as_ref().is_none_or(|c| c.public_key == rec.public_key)
}

/// Whether `view` is what committing `after` leaves.
fn holds(view: &View, after: &After) -> bool {
    view.rec == after.rec && (after.tomb.is_none() || view.tomb == after.tomb)
}

/// The compare "`key` was last written at `revision`" (0: it is absent).
fn unchanged_since(key: Vec<u8>, revision: i64) -> Compare {
    Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Mod as i32,
        key,
        target_union: Some(compare::TargetUnion::ModRevision(revision)),
    }
}

fn put(key: Vec<u8>, value: Vec<u8>, lease: i64) -> RequestOp {
    RequestOp { request: Some(request_op::Request::RequestPut(PutRequest { key, value, lease, prev_kv: false })) }
}

fn delete(key: Vec<u8>) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(p2p_proto::etcd::DeleteRangeRequest {
            key,
            ..Default::default()
        })),
    }
}

fn decode_record(bytes: &[u8]) -> Result<PeerRecord, Error> {
    PeerRecord::decode(bytes).map_err(Error::storage)
}

/// The registry id under `{prefix}id`, created if this is the first server.
async fn registry_id(client: &EtcdClient, keys: &Keys) -> Result<RegistryId, Error> {
    let mut fresh: RegistryId = [0; p2p_proto::signing::REGISTRY_ID_LEN];
    getrandom::fill(&mut fresh).map_err(|e| Error::storage_msg(format!("no randomness: {e}")))?;
    let key = keys.id();
    let txn = TxnRequest {
        compare: vec![unchanged_since(key.clone(), 0)],
        success: vec![put(key.clone(), fresh.to_vec(), 0)],
        failure: vec![RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest { key, ..Default::default() })),
        }],
    };
    let resp = client.txn(txn).await.map_err(|s| client.error("registry id read", s))?;
    if resp.succeeded {
        tracing::info!(registry_id = %hex::encode(fresh), "created the registry on etcd");
        return Ok(fresh);
    }
    let stored = resp
        .responses
        .into_iter()
        .find_map(|op| match op.response {
            Some(response_op::Response::ResponseRange(r)) => r.kvs.into_iter().next(),
            _ => None,
        })
        .ok_or_else(|| Error::storage_msg("the registry id vanished while it was read"))?;
    p2p_proto::signing::registry_id(&stored.value).map_err(Error::storage_msg)
}

/// Every listed record, as of one revision (paged, each page read at it).
/// A compaction past that revision while listing starts the listing over.
async fn list(client: &EtcdClient, keys: &Keys) -> Result<(i64, cache::Listed), Error> {
    let mut attempts = 0;
    loop {
        match list_at_one_revision(client, keys).await {
            Err(s) if client::compacted(&s) && attempts < 3 => {
                attempts += 1;
                tracing::info!("etcd compacted the revision being listed; listing again");
            }
            other => return other.map_err(|s| client.error("listing", s)),
        }
    }
}

async fn list_at_one_revision(client: &EtcdClient, keys: &Keys) -> Result<(i64, cache::Listed), Status> {
    let mut out = cache::Listed::default();
    let end = keys.end(Kind::Listed);
    let mut start = keys.start(Kind::Listed);
    let mut revision = 0;
    loop {
        let resp = client
            .range_status(RangeRequest {
                key: start,
                range_end: end.clone(),
                limit: LIST_PAGE,
                revision,
                ..Default::default()
            })
            .await?;
        if revision == 0 {
            revision = resp.header.as_ref().map(|h| h.revision).unwrap_or(0);
        }
        let Some(last) = resp.kvs.last().map(|kv| kv.key.clone()) else { break };
        for kv in &resp.kvs {
            if let Some(Parsed::Address(Kind::Listed, addr)) = keys.parse(&kv.key) {
                out.insert(addr, &kv.value, kv.mod_revision, expiry_of(&kv.value));
            }
        }
        if !resp.more {
            break;
        }
        start = last;
        start.push(0);
    }
    Ok((revision, out))
}

/// How following the registry's changes ended.
enum WatchEnd {
    Shutdown,
    /// The stream broke; resume from this revision.
    Broken(i64),
    /// The history from there is compacted away: list again.
    Compacted,
}

/// Keeps the listed copy current and announces changes, from `next`
/// on, until `stop`.
async fn follow(inner: Arc<Inner>, mut next: i64, stop: CancellationToken) {
    let mut offset = 0;
    let mut backoff = Duration::from_millis(100);
    loop {
        match watch_once(&inner, next, offset, &stop).await {
            WatchEnd::Shutdown => return,
            WatchEnd::Broken(resume) => {
                if resume > next {
                    backoff = Duration::from_millis(100);
                }
                next = resume;
                offset += 1;
            }
            WatchEnd::Compacted => match list(&inner.client, &inner.keys).await {
                Ok((revision, fresh)) => {
                    // Diffing (and decoding) up to every record: not on an async worker.
                    let copy = inner.clone();
                    let _ = tokio::task::spawn_blocking(move || resync(&copy, fresh)).await;
                    next = revision + 1;
                    continue;
                }
                Err(e) => tracing::warn!(error = %e, "listing the registry again failed; will retry"),
            },
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn watch_once(inner: &Inner, next: i64, offset: usize, stop: &CancellationToken) -> WatchEnd {
    let (requests, rx) = tokio::sync::mpsc::channel(1);
    let prefix = inner.keys.prefix().to_vec();
    let create = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(WatchCreateRequest {
            range_end: keys::prefix_end(&prefix),
            key: prefix,
            start_revision: next,
            progress_notify: true,
            prev_kv: true,
        })),
    };
    if requests.send(create).await.is_err() {
        return WatchEnd::Broken(next);
    }
    let (member, mut stream) = match inner.client.watch(offset, rx).await {
        Ok(s) => s,
        Err(s) => {
            tracing::debug!(error = %s, "opening the etcd watch failed");
            return WatchEnd::Broken(next);
        }
    };
    let mut next = next;
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => return WatchEnd::Shutdown,
            m = stream.message() => m,
        };
        let resp = match msg {
            Ok(Some(resp)) => resp,
            Ok(None) => return WatchEnd::Broken(next),
            Err(s) if client::compacted(&s) => return WatchEnd::Compacted,
            Err(s) => {
                tracing::debug!(error = %s, "the etcd watch broke; resuming on another member");
                inner.client.failed(member);
                return WatchEnd::Broken(next);
            }
        };
        if resp.compact_revision > 0 {
            tracing::warn!(
                from = next,
                compacted_to = resp.compact_revision,
                "etcd compacted the history this server had not seen yet; listing again"
            );
            return WatchEnd::Compacted;
        }
        if resp.canceled {
            tracing::debug!(reason = %resp.cancel_reason, "etcd cancelled the watch");
            inner.client.failed(member);
            return WatchEnd::Broken(next);
        }
        if resp.events.is_empty() {
            // A progress notification: everything up to its revision was sent.
            if !resp.created
                && let Some(h) = &resp.header
            {
                next = next.max(h.revision + 1);
            }
            continue;
        }
        let mut group: Vec<Event> = Vec::new();
        for ev in resp.events {
            let rev = ev.kv.as_ref().map(|kv| kv.mod_revision).unwrap_or(0);
            if group.first().and_then(|e| e.kv.as_ref()).is_some_and(|kv| kv.mod_revision != rev) {
                apply_revision(inner, std::mem::take(&mut group));
            }
            next = next.max(rev + 1);
            group.push(ev);
        }
        apply_revision(inner, group);
    }
}

/// Applies the changes of one revision to the copy and announces them.
fn apply_revision(inner: &Inner, events: Vec<Event>) {
    let written = events.iter().any(|e| {
        e.r#type == EventType::Put as i32 && key_of(e).is_some_and(|k| inner.keys.parse(k) == Some(Parsed::Events))
    });
    let now = inner.now_ms();
    for ev in events {
        let Some(kv) = ev.kv else { continue };
        match inner.keys.parse(&kv.key) {
            Some(Parsed::Events) if ev.r#type == EventType::Put as i32 => match EventBatch::decode(kv.value.as_slice())
            {
                Ok(batch) => {
                    for e in batch.events {
                        let _ = inner.events.send(e);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "undecodable registry events in etcd; skipped"),
            },
            Some(Parsed::Address(Kind::Listed, addr)) if ev.r#type == EventType::Put as i32 => {
                inner.listed_mut().insert(addr, &kv.value, kv.mod_revision, expiry_of(&kv.value));
            }
            Some(Parsed::Address(Kind::Listed, addr)) => {
                let held = inner.listed_mut().remove(addr);
                // No server wrote this deletion: etcd ended the lease.
                if !written {
                    let prev = ev.prev_kv.map(|p: KeyValue| p.value).or(held.map(|h| h.to_vec()));
                    let peer = prev
                        .and_then(|v| PeerRecord::decode(v.as_slice()).ok())
                        .map(|r| r.to_peer(addr))
                        .unwrap_or_else(|| Peer { address: addr.to_string(), ..Default::default() });
                    let _ = inner.events.send(super::event(PeerEventKind::Expired, peer, now));
                }
            }
            _ => {}
        }
    }
}

/// When an encoded record expires (0, at once, if it cannot be decoded).
fn expiry_of(record: &[u8]) -> u64 {
    PeerRecord::decode(record).map(|r| r.expires_at_ms).unwrap_or(0)
}

fn key_of(e: &Event) -> Option<&[u8]> {
    e.kv.as_ref().map(|kv| kv.key.as_slice())
}

/// Replaces the copy with a fresh listing and announces what changed
/// meanwhile (a removal is told from an expiry by the record's lease).
fn resync(inner: &Inner, fresh: cache::Listed) {
    let now = inner.now_ms();
    let mut announce = Vec::new();
    {
        let old = inner.listed();
        for (addr, rec) in fresh.iter() {
            let kind = match old.get(addr) {
                None => PeerEventKind::Joined,
                Some(prev) if prev != rec => PeerEventKind::Refreshed,
                Some(_) => continue,
            };
            if let Ok(r) = PeerRecord::decode(rec) {
                announce.push((kind, r.to_peer(addr)));
            }
        }
        for (addr, rec) in old.iter() {
            if fresh.get(addr).is_none()
                && let Ok(r) = PeerRecord::decode(rec)
            {
                let kind =
                    if lease::is_live(r.expires_at_ms, now) { PeerEventKind::Left } else { PeerEventKind::Expired };
                announce.push((kind, r.to_peer(addr)));
            }
        }
    }
    tracing::info!(changes = announce.len(), listed = fresh.len(), "listed the registry again");
    *inner.listed_mut() = fresh;
    for (kind, peer) in announce {
        let _ = inner.events.send(super::event(kind, peer, now));
    }
}

/// Reports whether the cluster answers a linearizable read (quorum).
async fn health(inner: Arc<Inner>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let probe = inner.client.range(RangeRequest { key: inner.keys.id(), count_only: true, ..Default::default() });
        let ok = tokio::select! {
            _ = stop.cancelled() => return,
            r = probe => r.is_ok(),
        };
        inner.serving.send_if_modified(|s| {
            let changed = *s != ok;
            if changed {
                tracing::warn!(serving = ok, "etcd quorum {}", if ok { "reachable again" } else { "unreachable" });
            }
            *s = ok;
            changed
        });
    }
}

/// Leases shared by every record that ends in the same second, so a
/// Register costs no lease grant of its own.
#[derive(Debug, Default)]
struct Leases {
    /// Second (Unix) a lease ends → its id, granted once.
    by_end: Mutex<BTreeMap<u64, Arc<OnceCell<i64>>>>,
}

impl Leases {
    /// A lease ending 1-2 s after `deadline_ms`.
    async fn for_deadline(&self, client: &EtcdClient, deadline_ms: u64, now_ms: u64) -> Result<i64, Error> {
        let end = deadline_ms.div_ceil(1000) + 1;
        let cell = {
            let mut m = self.by_end.lock().unwrap_or_else(|p| p.into_inner());
            // Leases that have ended are gone from etcd too.
            let live = m.split_off(&(now_ms / 1000 + 1));
            *m = live;
            m.entry(end).or_default().clone()
        };
        let ttl = (end * 1000).saturating_sub(now_ms).div_ceil(1000).max(2) as i64;
        cell.get_or_try_init(|| client.lease_grant(ttl)).await.copied()
    }

    /// Drops every lease ending before `end_secs` (etcd said one is gone).
    fn forget_expired(&self, end_secs: u64) {
        let mut m = self.by_end.lock().unwrap_or_else(|p| p.into_inner());
        let live = m.split_off(&end_secs);
        *m = live;
    }
}

#[tonic::async_trait]
impl PeerStore for EtcdStore {
    /// A refresh of a listed record (most Registers) decides on this
    /// server's copy and commits in one round trip; anything else reads first.
    async fn register(&self, cmd: RegisterCmd) -> Result<Registered, Error> {
        let window = self.inner.window_ms;
        let now = self.inner.now_ms();
        let hint = self.inner.cached(&cmd.address).filter(|(view, _)| fast_path_ok(view, &cmd, now));
        self.inner.update(&cmd.address.clone(), hint, |view, now| logic::register(view, &cmd, now, window)).await
    }

    async fn remove(&self, cmd: RemoveCmd) -> Result<bool, Error> {
        let window = self.inner.window_ms;
        self.inner.update(&cmd.address.clone(), None, |view, now| logic::remove(view, &cmd, now, window)).await
    }

    fn serving(&self) -> watch::Receiver<bool> {
        self.inner.serving.subscribe()
    }

    fn registry_id(&self) -> RegistryId {
        self.registry_id
    }

    async fn owner_key(&self, address: &str) -> Result<Option<Vec<u8>>, Error> {
        let (view, _) = self.inner.read(address).await?;
        let now = self.inner.now_ms();
        Ok(view.rec.filter(|r| lease::is_live(r.expires_at_ms, now)).map(|r| r.public_key))
    }

    /// etcd deletes a record when its lease ends. A lease can outlive its
    /// schedule (a new etcd leader renews every lease in full), so records
    /// still listed [`REAP_GRACE`] after their expiry are deleted here,
    /// each only if unchanged since this server saw it, with its EXPIRED
    /// event. Every server may try; the compare lets one succeed.
    async fn purge_expired(&self, max: usize) -> Result<usize, Error> {
        let inner = &self.inner;
        let now = inner.now_ms();
        let due = inner.listed().expired(now.saturating_sub(REAP_GRACE.as_millis() as u64), max.min(REAP_BATCH));
        let mut reaped = 0;
        for (address, record, revision) in due {
            let key = inner.keys.key(Kind::Listed, &address);
            let peer = decode_record(&record)?.to_peer(&address);
            let expired = super::event(PeerEventKind::Expired, peer, now);
            let txn = TxnRequest {
                compare: vec![unchanged_since(key.clone(), revision)],
                success: vec![
                    delete(key),
                    put(inner.keys.events(), EventBatch { events: vec![expired] }.encode_to_vec(), 0),
                ],
                failure: Vec::new(),
            };
            match inner.client.txn(txn).await {
                Ok(r) if r.succeeded => reaped += 1,
                // Refreshed, or reaped by another server, meanwhile.
                Ok(_) => {}
                Err(s) => return Err(inner.client.error("expiry", s)),
            }
        }
        Ok(reaped)
    }

    /// Listed registrations this server knows of (its copy, ms behind etcd).
    async fn count(&self) -> Result<u64, Error> {
        Ok(self.inner.listed().len() as u64)
    }

    /// A linearizable etcd range from the token, in address order. etcd
    /// 3.4 walks a range's whole key span even with a limit, so the listed
    /// range ends where this server's copy says the page will: at the
    /// `fetch`-th address after the token. Its cost is then the page's, at
    /// any size; a copy a little behind only makes a page a little short.
    async fn page(
        &self,
        after: Option<String>,
        limit: usize,
        exclude: Option<String>,
        include_pending: bool,
    ) -> Result<Page, Error> {
        let inner = &self.inner;
        let fetch = limit.saturating_add(8).min(10_000);
        let kinds: &[Kind] = if include_pending { &[Kind::Listed, Kind::Pending] } else { &[Kind::Listed] };
        let mut merged: Vec<(String, Vec<u8>)> = Vec::new();
        // How far every range that may hold more reached: a page must not
        // pass it, or it would skip that range's next keys.
        let mut bound: Option<String> = None;
        for &kind in kinds {
            let start = match &after {
                Some(a) => inner.keys.after(kind, a),
                None => inner.keys.start(kind),
            };
            let upto = match kind {
                Kind::Listed => inner.listed().nth_after(after.as_deref(), fetch - 1).map(str::to_string),
                _ => None,
            };
            let range_end = match &upto {
                Some(u) => inner.keys.after(kind, u),
                None => inner.keys.end(kind),
            };
            let resp = inner
                .client
                .range(RangeRequest { key: start, range_end, limit: fetch as i64, ..Default::default() })
                .await?;
            let mut last = None;
            for kv in resp.kvs {
                if let Some(Parsed::Address(_, addr)) = inner.keys.parse(&kv.key) {
                    last = Some(addr.to_string());
                    merged.push((addr.to_string(), kv.value));
                }
            }
            let reached = if resp.more { last } else { upto };
            if let Some(r) = reached {
                bound = Some(bound.map_or(r.clone(), |b: String| b.min(r)));
            }
        }
        merged.sort_by(|a, b| a.0.cmp(&b.0));
        let now = inner.now_ms();
        let mut peers = Vec::with_capacity(limit);
        let mut last = None;
        let mut full = false;
        for (addr, value) in merged {
            if bound.as_ref().is_some_and(|b| &addr > b) {
                break;
            }
            if peers.len() >= limit {
                full = true;
                break;
            }
            let rec = decode_record(&value)?;
            if lease::is_live(rec.expires_at_ms, now) && exclude.as_deref() != Some(addr.as_str()) {
                peers.push(rec.to_peer(&addr));
            }
            last = Some(addr);
        }
        // Full: continue after the last address taken. Otherwise everything
        // up to the bound was seen (continue from there), or everything was.
        let next_after = if full { last } else { bound };
        Ok(Page { peers, next_after, total: inner.listed().len() as u64 })
    }

    /// Uniform over this server's copy of the listed records: O(limit).
    async fn sample(&self, limit: usize, exclude: Option<String>) -> Result<(Vec<Peer>, u64), Error> {
        let now = self.inner.now_ms();
        let listed = self.inner.listed();
        // Records past their expiry (etcd deletes them within ~2 s) and the
        // excluded address are skipped, so draw a few extra.
        let out = listed
            .sample(limit + limit / 4 + 2)
            .into_iter()
            .filter(|(addr, _)| exclude.as_deref() != Some(*addr))
            .filter_map(|(addr, rec)| PeerRecord::decode(rec).ok().map(|r| (addr, r)))
            .filter(|(_, r)| lease::is_live(r.expires_at_ms, now))
            .take(limit)
            .map(|(addr, r)| r.to_peer(addr))
            .collect();
        Ok((out, listed.len() as u64))
    }

    /// Scans the pending registrations a window at a time, round the ring,
    /// and returns the due ones, longest-waiting first.
    async fn due_verifications(&self, max: usize) -> Result<Vec<PendingCheck>, Error> {
        let inner = &self.inner;
        let cursor = self.pending_cursor.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let start = match &cursor {
            Some(a) => inner.keys.after(Kind::Pending, a),
            None => inner.keys.start(Kind::Pending),
        };
        let resp = inner
            .client
            .range(RangeRequest {
                key: start,
                range_end: inner.keys.end(Kind::Pending),
                limit: PENDING_SCAN,
                ..Default::default()
            })
            .await?;
        let now = inner.now_ms();
        let mut due = Vec::new();
        let mut last = None;
        for kv in &resp.kvs {
            let Some(Parsed::Address(_, addr)) = inner.keys.parse(&kv.key) else { continue };
            last = Some(addr.to_string());
            let rec = decode_record(&kv.value)?;
            if rec.pending && lease::is_live(rec.expires_at_ms, now) && rec.verify_next_ms <= now {
                due.push((
                    rec.verify_next_ms,
                    PendingCheck {
                        address: addr.to_string(),
                        public_key: rec.public_key,
                        attempts: rec.verify_attempts,
                    },
                ));
            }
        }
        *self.pending_cursor.lock().unwrap_or_else(|p| p.into_inner()) = if resp.more { last } else { None };
        due.sort_by_key(|(at, _)| *at);
        Ok(due.into_iter().take(max).map(|(_, c)| c).collect())
    }

    async fn record_verification(&self, check: PendingCheck, outcome: Verification) -> Result<(), Error> {
        self.inner
            .update(&check.address.clone(), None, |view, now| Ok((logic::verified(view, &check, &outcome, now), ())))
            .await
    }

    fn subscribe(&self) -> broadcast::Receiver<PeerEvent> {
        self.inner.events.subscribe()
    }

    async fn close(&self) {
        self.stop.cancel();
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refreshes_that_cannot_depend_on_the_floor_skip_the_read() {
        let signed = PeerRecord { public_key: vec![1; 32], expires_at_ms: 100, ..Default::default() };
        let view = View { rec: Some(signed.clone()), tomb: None };
        let cmd = |claim: Option<u8>| RegisterCmd {
            address: "a:1".into(),
            claim: claim.map(|k| crate::auth::SignedClaim { public_key: vec![k; 32], timestamp_ms: 5 }),
            ttl_secs: 10,
            client_ip: "1.1.1.1".into(),
            verify: false,
        };
        assert!(fast_path_ok(&view, &cmd(Some(1)), 50), "the owner's refresh");
        assert!(fast_path_ok(&view, &cmd(None), 50), "unsigned: no floor involved (the rules refuse it)");
        assert!(!fast_path_ok(&view, &cmd(Some(2)), 50), "another key: its floor matters");
        assert!(!fast_path_ok(&view, &cmd(Some(1)), 100), "expired: a new registration");
        let pending = View { rec: Some(PeerRecord { pending: true, ..signed }), tomb: None };
        assert!(!fast_path_ok(&pending, &cmd(Some(1)), 50));
        assert!(!fast_path_ok(&View::default(), &cmd(None), 50));
    }

    #[test]
    fn a_write_is_recognised_when_read_back() {
        let rec = PeerRecord { last_seen_ms: 5, ..Default::default() };
        let after = After { rec: Some(rec.clone()), tomb: None, events: Vec::new() };
        assert!(holds(&View { rec: Some(rec.clone()), tomb: None }, &after));
        let other = PeerRecord { last_seen_ms: 6, ..rec };
        assert!(!holds(&View { rec: Some(other), tomb: None }, &after));
        // A removal holds once the record is gone and its floor is in place.
        let tomb = Tomb { ts_ms: 1, key: vec![1; 32], until_ms: 2 };
        let removal = After { rec: None, tomb: Some(tomb.clone()), events: Vec::new() };
        assert!(holds(&View { rec: None, tomb: Some(tomb) }, &removal));
        assert!(!holds(&View { rec: None, tomb: None }, &removal));
    }
}
