//! The mempool: signed transactions waiting for a block.
//!
//! [`pool`] is the bookkeeping (bounds, eviction, templates), pure. The
//! [`Mempool`] here wraps it with its own thread, which checks signatures
//! (CPU work kept off the async workers), asks the chain for each sender's
//! last nonce, and persists every change to `mempool.redb` before a
//! submission is acknowledged, so an accepted transaction survives `kill -9`
//! and the pool is there after a restart (re-checked against the chain).
//! It follows the chain's events: mined transactions leave, transactions of
//! blocks a reorganisation abandoned come back if still valid.
//!
//! Readers (templates, pages, lookups, gossip) read the pool under a mutex
//! that is never held across an await or a disk write.

pub mod pool;

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use redb::{Database, ReadableTable, TableDefinition};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::chain::{ChainEvent, ChainReader, Hash, StoreError, Transaction};
use crate::convert;
use pool::{Entry, Pool, PoolLimits, Refused};
use prost::Message;

const POOL: TableDefinition<[u8; 32], (u64, u64, &[u8])> = TableDefinition::new("pool");

/// Why a submission was refused (each maps to its own gRPC code).
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// Broke a rule of its own (size, key, signature).
    #[error(transparent)]
    Invalid(#[from] crate::chain::tx::TxError),
    /// Refused by the pool's rules.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// Already in a main-chain block.
    #[error("transaction {0} is already confirmed")]
    Confirmed(String),
    #[error(transparent)]
    Storage(#[from] StoreError),
    #[error("the mempool is shutting down")]
    ShuttingDown,
}

/// Where a transaction came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A client's SubmitTransaction (or this node's own).
    Client,
    /// Gossip from the peer that proved this node id (None: anonymous).
    Peer(Option<String>),
    /// Back from a block a reorganisation abandoned.
    Reorg,
}

/// A transaction the pool took in, for gossip.
#[derive(Debug, Clone)]
pub struct Admitted {
    pub id: Hash,
    pub source: Source,
}

enum Cmd {
    Submit(Vec<Transaction>, Source, oneshot::Sender<Vec<Result<Hash, SubmitError>>>),
    Chain(ChainEvent),
}

/// Bytes a transaction takes in a message beyond [`Transaction::size`]
/// (field tags and lengths, the id beside it in a mempool page), rounded up.
pub const ENTRY_FRAMING: usize = 64;

/// Transactions one group commit takes at most (submissions already
/// queued join the first one's write until this many).
const MAX_GROUP_TXS: usize = 4096;

/// [`Transaction::check`] of every transaction, in order: on a few threads
/// when there are enough to be worth it.
fn check_all<'a>(
    txs: impl Iterator<Item = &'a Transaction>,
    genesis: &Hash,
    max_payload: usize,
) -> Vec<Result<(), crate::chain::tx::TxError>> {
    let txs: Vec<&Transaction> = txs.collect();
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(4);
    if txs.len() < 64 || threads < 2 {
        return txs.iter().map(|t| t.check(genesis, max_payload)).collect();
    }
    let per = txs.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = txs
            .chunks(per)
            .map(|part| scope.spawn(move || part.iter().map(|t| t.check(genesis, max_payload)).collect::<Vec<_>>()))
            .collect();
        parts.into_iter().flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    })
}

/// The mempool; cheap to clone.
#[derive(Debug, Clone)]
pub struct Mempool {
    pool: Arc<Mutex<Pool>>,
    tx: mpsc::Sender<Cmd>,
    admitted: broadcast::Sender<Admitted>,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cmd::Submit(..) => "Submit",
            Cmd::Chain(_) => "Chain",
        })
    }
}

/// What the mempool thread works with.
struct Worker {
    pool: Arc<Mutex<Pool>>,
    db: Database,
    chain: ChainReader,
    genesis: Hash,
    max_payload: usize,
    clock: Arc<dyn p2p_proto::clock::Clock>,
    admitted: broadcast::Sender<Admitted>,
}

impl Mempool {
    /// Opens `path`, reloads what was pending (dropping what the chain has
    /// confirmed or made stale meanwhile) and starts the thread, which stops
    /// when every handle is gone.
    pub fn open(
        path: &Path,
        limits: PoolLimits,
        chain: ChainReader,
        genesis: Hash,
        max_payload: usize,
        clock: Arc<dyn p2p_proto::clock::Clock>,
    ) -> Result<(Self, std::thread::JoinHandle<()>), StoreError> {
        let db = Database::create(path)?;
        let pool = Arc::new(Mutex::new(Pool::new(limits)));
        // Room for several full groups (MAX_GROUP_TXS) between two gossip ticks.
        let (admitted, _) = broadcast::channel(4 * MAX_GROUP_TXS);
        let worker = Worker { pool: pool.clone(), db, chain, genesis, max_payload, clock, admitted: admitted.clone() };
        let reloaded = worker.reload()?;
        if reloaded > 0 {
            tracing::info!(transactions = reloaded, "mempool reloaded");
        }
        let (tx, rx) = mpsc::channel(1024);
        let thread = std::thread::Builder::new()
            .name("mempool".into())
            .spawn(move || worker.run(rx))
            .map_err(|e| StoreError::Inconsistent(format!("cannot start the mempool thread: {e}")))?;
        Ok((Mempool { pool, tx, admitted }, thread))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Submits transactions; each gets its id or why it was refused, once
    /// the accepted ones are durable.
    pub async fn submit(&self, txs: Vec<Transaction>, source: Source) -> Vec<Result<Hash, SubmitError>> {
        let n = txs.len();
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Cmd::Submit(txs, source, reply)).await.is_err() {
            return (0..n).map(|_| Err(SubmitError::ShuttingDown)).collect();
        }
        rx.await.unwrap_or_else(|_| (0..n).map(|_| Err(SubmitError::ShuttingDown)).collect())
    }

    /// Follows a chain event (mined transactions leave, abandoned ones return).
    pub async fn chain_moved(&self, event: ChainEvent) {
        let _ = self.tx.send(Cmd::Chain(event)).await;
    }

    /// Transactions the pool takes in from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Admitted> {
        self.admitted.subscribe()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.lock().bytes()
    }

    pub fn contains(&self, id: &Hash) -> bool {
        self.lock().contains(id)
    }

    pub fn get(&self, id: &Hash) -> Option<Entry> {
        self.lock().get(id).cloned()
    }

    /// The highest pending nonce of `sender`.
    pub fn max_nonce(&self, sender: &[u8; 32]) -> Option<u64> {
        self.lock().max_nonce(sender)
    }

    /// Transactions for the next block.
    pub fn template(&self, max_txs: usize, max_bytes: usize) -> Vec<Transaction> {
        self.lock().template(max_txs, max_bytes)
    }

    /// A page in arrival order after `after`, of at most `limit` entries
    /// and `max_bytes`; and whether more follow.
    pub fn page(&self, after: Option<u64>, limit: usize, max_bytes: usize) -> (Vec<Entry>, bool) {
        self.lock().page(after, limit, max_bytes)
    }
}

impl Worker {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run(self, mut rx: mpsc::Receiver<Cmd>) {
        while let Some(first) = rx.blocking_recv() {
            let mut next = Some(first);
            while let Some(cmd) = next.take() {
                match cmd {
                    Cmd::Submit(txs, source, reply) => {
                        // Group commit: every submission already queued joins
                        // this one's write (one fsync for all of them).
                        let mut count = txs.len();
                        let mut group = vec![(txs, source, reply)];
                        while count < MAX_GROUP_TXS {
                            match rx.try_recv() {
                                Ok(Cmd::Submit(t, s, r)) => {
                                    count += t.len();
                                    group.push((t, s, r));
                                }
                                Ok(other) => {
                                    next = Some(other);
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        let answers = self
                            .submit_group(group.iter_mut().map(|(t, s, _)| (std::mem::take(t), s.clone())).collect());
                        for ((_, _, reply), results) in group.into_iter().zip(answers) {
                            let _ = reply.send(results);
                        }
                    }
                    Cmd::Chain(event) => {
                        if let Err(e) = self.follow(event) {
                            tracing::warn!(error = %e, "mempool could not follow the chain");
                        }
                    }
                }
            }
        }
        tracing::debug!("mempool stopped");
    }

    /// Re-admits what the file holds, in arrival order, against the chain as it is.
    fn reload(&self) -> Result<usize, StoreError> {
        let mut stored = Vec::new();
        {
            let tx = self.db.begin_read()?;
            if let Ok(table) = tx.open_table(POOL) {
                for entry in table.iter()? {
                    let (_, v) = entry?;
                    let (seq, received, bytes) = v.value();
                    let pb = p2p_proto::node::Transaction::decode(bytes)?;
                    if let Ok(t) = convert::tx_from_proto(pb) {
                        stored.push((seq, received, t));
                    }
                }
            }
        }
        stored.sort_by_key(|(seq, _, _)| *seq);
        let mut kept = Vec::new();
        let mut dropped = Vec::new();
        {
            let mut pool = self.lock();
            for (seq, received, t) in stored {
                let id = t.id(&self.genesis);
                pool.resume_seq(seq);
                let valid = t.check(&self.genesis, self.max_payload).is_ok() && !self.chain.is_confirmed(&id)?;
                let last = self.chain.last_nonce(&t.sender)?;
                if valid && pool.insert(id, t, last, received).is_ok() {
                    kept.push(id);
                } else {
                    dropped.push(id);
                }
            }
        }
        self.write(&[], &dropped)?;
        Ok(kept.len())
    }

    /// Checks and admits a batch, persists it in one commit, then answers.
    fn submit(&self, txs: Vec<Transaction>, source: &Source) -> Vec<Result<Hash, SubmitError>> {
        self.submit_group(vec![(txs, source.clone())]).pop().unwrap_or_default()
    }

    /// Checks and admits several submissions in order, persists them all in
    /// one commit, then answers each. Signatures are verified first, side by
    /// side on a few threads when there are many.
    fn submit_group(&self, group: Vec<(Vec<Transaction>, Source)>) -> Vec<Vec<Result<Hash, SubmitError>>> {
        let now = self.clock.now_unix_ms();
        let checks = check_all(group.iter().flat_map(|(txs, _)| txs), &self.genesis, self.max_payload);
        let mut checks = checks.into_iter();
        let mut answers: Vec<Vec<Result<Hash, SubmitError>>> = Vec::with_capacity(group.len());
        let (mut added, mut evicted) = (Vec::new(), Vec::new());
        let mut sources = Vec::with_capacity(group.len());
        for (txs, source) in group {
            let mut results = Vec::with_capacity(txs.len());
            for t in txs {
                // One verdict per transaction, in order; never admitted unchecked.
                let checked = checks.next().unwrap_or_else(|| t.check(&self.genesis, self.max_payload));
                results.push(
                    checked.map_err(SubmitError::from).and_then(|()| self.admit(t, now, &mut added, &mut evicted)),
                );
            }
            answers.push(results);
            sources.push(source);
        }
        let gone: Vec<Hash> = evicted.iter().map(|e: &Entry| e.id).collect();
        if let Err(e) = self.write(&added, &gone) {
            // Nothing was persisted: take the batch back out, put back what
            // it evicted, and say so.
            let mut pool = self.lock();
            for id in &added {
                pool.remove(id);
            }
            for e in evicted {
                let _ = pool.insert(e.id, e.tx, None, e.received_ms);
            }
            tracing::error!(error = %e, "mempool write failed; the batch was refused");
            return answers
                .into_iter()
                .map(|results| {
                    results
                        .into_iter()
                        .map(|_| Err(SubmitError::Storage(StoreError::Inconsistent(e.to_string()))))
                        .collect()
                })
                .collect();
        }
        // Announced in admission order, each with its own submission's source
        // (what the group admitted and then evicted is not announced).
        let kept: HashSet<Hash> = added.iter().copied().collect();
        for (results, source) in answers.iter().zip(&sources) {
            for id in results.iter().flatten().filter(|id| kept.contains(*id)) {
                let _ = self.admitted.send(Admitted { id: *id, source: source.clone() });
            }
        }
        answers
    }

    fn admit(
        &self,
        t: Transaction,
        now: u64,
        added: &mut Vec<Hash>,
        evicted: &mut Vec<Entry>,
    ) -> Result<Hash, SubmitError> {
        let id = t.id(&self.genesis);
        if self.chain.is_confirmed(&id)? {
            return Err(SubmitError::Confirmed(hex::encode(id)));
        }
        let last = self.chain.last_nonce(&t.sender)?;
        let out = self.lock().insert(id, t, last, now)?;
        added.push(id);
        // A transaction admitted and evicted within one batch is not written.
        for e in out {
            if let Some(i) = added.iter().position(|a| *a == e.id) {
                added.remove(i);
            } else {
                evicted.push(e);
            }
        }
        Ok(id)
    }

    /// Persists additions (from the pool's current entries) and removals.
    fn write(&self, added: &[Hash], removed: &[Hash]) -> Result<(), StoreError> {
        if added.is_empty() && removed.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.begin_write()?;
        // As the chain's block commits: durable without quick-repair, which
        // would write the allocator state on every commit.
        tx.set_quick_repair(false);
        {
            let mut table = tx.open_table(POOL)?;
            let pool = self.lock();
            for id in added {
                if let Some(e) = pool.get(id) {
                    let bytes = convert::tx_to_proto(&e.tx).encode_to_vec();
                    table.insert(*id, (e.seq, e.received_ms, bytes.as_slice()))?;
                }
            }
            for id in removed {
                table.remove(*id)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Mined transactions leave; every sender they touched is pruned of
    /// nonces now confirmed; transactions of abandoned blocks come back.
    fn follow(&self, event: ChainEvent) -> Result<(), StoreError> {
        let (gone_blocks, new_blocks) = match event {
            ChainEvent::TipChanged { block, .. } => (Vec::new(), vec![(*block).clone()]),
            ChainEvent::Reorg { removed, added } => {
                let read = |hashes: &[Hash]| -> Result<Vec<_>, StoreError> {
                    hashes.iter().filter_map(|h| self.chain.block(h).transpose()).collect()
                };
                (read(&removed)?, read(&added)?)
            }
            ChainEvent::Votes { .. } | ChainEvent::Finalized(_) | ChainEvent::TipValidated { .. } => return Ok(()),
        };
        let mut removed = Vec::new();
        let mut senders = std::collections::HashSet::new();
        {
            let mut pool = self.lock();
            for b in &new_blocks {
                for (t, id) in b.transactions.iter().zip(b.tx_ids(&self.genesis)) {
                    senders.insert(t.sender);
                    if pool.remove(&id).is_some() {
                        removed.push(id);
                    }
                }
            }
        }
        for sender in senders {
            if let Some(last) = self.chain.last_nonce(&sender)? {
                removed.extend(self.lock().prune_sender(&sender, last).into_iter().map(|e| e.id));
            }
        }
        self.write(&[], &removed)?;
        if !gone_blocks.is_empty() {
            let back: Vec<Transaction> = gone_blocks.into_iter().flat_map(|b| b.transactions).collect();
            let n = back.len();
            let accepted = self.submit(back, &Source::Reorg).iter().filter(|r| r.is_ok()).count();
            tracing::info!(returned = accepted, of = n, "transactions of abandoned blocks back in the mempool");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
