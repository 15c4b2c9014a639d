//! Mining: on demand (Admin.MineBlock, the book's "type data, mine a
//! block") and continuously (`--mine`, Admin.StartMining). Both build a
//! template on the current tip (the mempool's transactions, at the target
//! retargeting requires, later than the median time past) and search nonces
//! on the blocking pool, never on the async workers. One search at a time;
//! a search stops when the node shuts down, its caller goes away, or (when
//! mining continuously) the tip moves or the template is due for a refresh.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use p2p_proto::node::BlockOutcome;
use tokio::sync::{broadcast, watch};

use crate::chain::block::HEADER_LEN;
use crate::chain::{Block, ChainEvent, Hash, Origin, Outcome, Transaction, block::Header, pow, tx::merkle_root};
use crate::convert;
use crate::error::Error;
use crate::node::NodeHandle;

/// Mining result.
#[derive(Debug, Clone)]
pub struct Mined {
    pub block: Block,
    pub outcome: BlockOutcome,
    pub attempts: u64,
    pub elapsed: Duration,
    /// The transaction carrying MineBlock's data, if there was data.
    pub tx_id: Option<Hash>,
}

/// Times the tip may move under an on-demand search before the caller is told to retry.
const MAX_ROUNDS: usize = 3;
/// Longest a continuous search runs on one template before taking in new transactions.
const MAX_TEMPLATE_AGE: Duration = Duration::from_secs(5);

/// Whether the node mines continuously, and what it found.
#[derive(Debug)]
pub struct MiningState {
    enabled: watch::Sender<bool>,
    found: AtomicU64,
}

impl MiningState {
    pub fn new(enabled: bool) -> Self {
        MiningState { enabled: watch::Sender::new(enabled), found: AtomicU64::new(0) }
    }

    pub fn enabled(&self) -> bool {
        *self.enabled.borrow()
    }

    pub fn set(&self, on: bool) {
        self.enabled.send_replace(on);
    }

    pub fn blocks_found(&self) -> u64 {
        self.found.load(Ordering::Relaxed)
    }
}

/// A block to search a nonce for.
struct Template {
    header: Header,
    transactions: Vec<Transaction>,
}

impl NodeHandle {
    /// A template on the current tip: the mempool's transactions, then
    /// `last` (which must come after every pending one of its sender).
    async fn template(&self, last: Option<Transaction>) -> Result<Template, Error> {
        let params = &self.config().network;
        let reserved = last.as_ref().map(Transaction::size).unwrap_or(0);
        let budget = params.max_block_bytes.saturating_sub(HEADER_LEN + reserved);
        let max_txs = params.max_block_txs.saturating_sub(usize::from(last.is_some()));
        let mut transactions = self.mempool().template(max_txs, budget);
        transactions.extend(last);
        // The mempool follows the chain a moment behind: drop what the tip
        // (read together with the nonces) has already confirmed past.
        let senders: Vec<[u8; 32]> = transactions.iter().map(|t| t.sender).collect();
        let params = params.clone();
        let (tip, ctx, confirmed) = self
            .chain()
            .read(move |r| {
                let (tip, ctx) = r.next_context(&params)?;
                Ok((tip, ctx, r.last_nonces(&senders)?))
            })
            .await?;
        let mut last_of: std::collections::HashMap<[u8; 32], u64> = std::collections::HashMap::new();
        let mut kept = Vec::with_capacity(transactions.len());
        for (t, chain_nonce) in transactions.into_iter().zip(confirmed) {
            let floor = last_of.get(&t.sender).copied().or(chain_nonce);
            if floor.is_none_or(|f| t.nonce > f) {
                last_of.insert(t.sender, t.nonce);
                kept.push(t);
            }
        }
        let transactions = kept;
        let genesis = self.chain().genesis_hash();
        let ids: Vec<Hash> = transactions.iter().map(|t| t.id(&genesis)).collect();
        let header = Header {
            index: tip.height + 1,
            timestamp_ms: self.now_ms().max(ctx.median_time_past + 1),
            prev_hash: tip.hash,
            merkle_root: merkle_root(&ids),
            bits: ctx.bits,
        };
        Ok(Template { header, transactions })
    }

    /// Mines a block now carrying `data` (as a transaction signed by this
    /// node's key, when not empty) and the mempool's transactions, stores it
    /// (gossip relays it from the chain's event). If another block takes
    /// the tip while mining, it mines again on the new tip (up to 3 times).
    pub async fn mine(&self, data: Vec<u8>) -> Result<Mined, Error> {
        let max = self.config().network.max_tx_payload;
        if data.len() > max {
            return Err(Error::invalid(
                "data",
                format!("is {} bytes; a transaction carries at most {max}", data.len()),
            ));
        }
        if self.mining().enabled() {
            return Err(Error::FailedPrecondition(
                "the node mines continuously: submit a transaction instead, or StopMining first".into(),
            ));
        }
        let job = self.mining_lock().clone().try_lock_owned().map_err(|_| {
            Error::ResourceExhausted(
                "a block is being mined already (one MineBlock at a time); retry when it is done".into(),
            )
        })?;
        let job = Arc::new(job);
        let genesis = self.chain().genesis_hash();
        let own = if data.is_empty() { None } else { Some(self.own_transaction(data).await?) };
        let tx_id = own.as_ref().map(|t| t.id(&genesis));
        let started = Instant::now();
        let mut attempts = 0;
        for _ in 0..MAX_ROUNDS {
            let t = self.template(own.clone()).await?;
            let cancel = Arc::new(AtomicBool::new(false));
            let found = self.search(&t.header, job.clone(), cancel).await?.ok_or(Error::ShuttingDown)?;
            attempts += found.attempts;
            let block = assemble(t, found);
            let verdict = self.offer(vec![block.clone()], Origin::Local).await?.into_iter().next();
            match verdict {
                Some(Ok(a)) if a.outcome == Outcome::SideBranch => {
                    tracing::info!(height = block.index, "tip moved while mining; mining again on the new tip");
                }
                Some(Ok(a)) => {
                    tracing::info!(height = block.index, hash = %hex::encode(block.hash), attempts, txs = block.transactions.len(), "mined block");
                    let outcome = convert::outcome_to_proto(a.outcome);
                    return Ok(Mined { block, outcome, attempts, elapsed: started.elapsed(), tx_id });
                }
                Some(Err(e)) => return Err(Error::Internal(format!("own block rejected: {e}"))),
                None => return Err(Error::Internal("no verdict".into())),
            }
        }
        Err(Error::FailedPrecondition("the tip kept moving while mining; try again".into()))
    }

    /// A transaction of this node's key carrying `payload`, with a nonce
    /// above everything confirmed or pending for the key (the time in ms,
    /// or one more than the highest used, whichever is larger).
    async fn own_transaction(&self, payload: Vec<u8>) -> Result<Transaction, Error> {
        let sender = self.key().verifying_key().to_bytes();
        let confirmed = self.chain().read(move |r| r.last_nonce(&sender)).await?;
        let floor = confirmed.max(self.mempool().max_nonce(&sender)).map(|n| n + 1).unwrap_or(0);
        let nonce = self.now_ms().max(floor);
        Ok(Transaction::sign(self.key(), &self.chain().genesis_hash(), nonce, self.now_ms(), payload))
    }

    /// Searches nonces on the blocking pool until one meets the target,
    /// `cancel` is set, the node shuts down, or this future is dropped
    /// (None when stopped). The search thread holds `job` (the mining lock)
    /// until it has really stopped.
    async fn search(
        &self,
        header: &Header,
        job: Arc<tokio::sync::OwnedMutexGuard<()>>,
        cancel: Arc<AtomicBool>,
    ) -> Result<Option<pow::Found>, Error> {
        let _on_drop = CancelOnDrop(cancel.clone());
        let stop = cancel.clone();
        let shutdown = self.shutdown_token().clone();
        let watcher = tokio::spawn(async move {
            shutdown.cancelled().await;
            stop.store(true, Ordering::Relaxed);
        });
        let h = header.clone();
        let start = self.random_u64() >> 1;
        let found = tokio::task::spawn_blocking(move || {
            let _job = job;
            pow::mine(&h, start, &cancel)
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()));
        watcher.abort();
        found
    }
}

fn assemble(t: Template, found: pow::Found) -> Block {
    Block {
        index: t.header.index,
        timestamp_ms: t.header.timestamp_ms,
        prev_hash: t.header.prev_hash,
        bits: t.header.bits,
        nonce: found.nonce,
        transactions: t.transactions,
        hash: found.hash,
    }
}

/// Stops a search when the future that started it is dropped (a client
/// that cancelled or disconnected, a deadline that passed).
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Mines continuously while enabled, until shutdown: a template on the tip,
/// searched until found, the tip moves, or the template is a few seconds
/// old (so new transactions get in).
pub(crate) async fn run(node: NodeHandle, mut events: broadcast::Receiver<ChainEvent>) {
    let mut enabled = node.mining().enabled.subscribe();
    let shutdown = node.shutdown_token().clone();
    loop {
        if !*enabled.borrow_and_update() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = enabled.changed() => if changed.is_err() { return },
            }
            continue;
        }
        let Ok(job) = node.mining_lock().clone().try_lock_owned() else {
            // A MineBlock is finishing; look again shortly.
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
            }
        };
        let t = match node.template(None).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "cannot build a block template");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let header = t.header.clone();
        let search = node.search(&header, Arc::new(job), cancel.clone());
        tokio::pin!(search);
        let refresh = tokio::time::sleep(
            MAX_TEMPLATE_AGE.min(Duration::from_millis(node.config().network.block_time_ms.max(100) / 2)),
        );
        tokio::pin!(refresh);
        let found: Result<Option<pow::Found>, Error> = loop {
            tokio::select! {
                r = &mut search => break r,
                _ = &mut refresh => cancel.store(true, Ordering::Relaxed),
                ev = events.recv() => match ev {
                    Ok(ChainEvent::TipChanged { .. }) | Err(broadcast::error::RecvError::Lagged(_)) => cancel.store(true, Ordering::Relaxed),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                changed = enabled.changed() => {
                    if changed.is_err() || !*enabled.borrow() {
                        cancel.store(true, Ordering::Relaxed);
                    }
                }
            }
        };
        match found {
            Ok(Some(found)) => {
                let block = assemble(t, found);
                match node.offer(vec![block.clone()], Origin::Local).await {
                    Ok(v) if v.first().is_some_and(|v| v.as_ref().is_ok_and(|a| a.outcome.stored())) => {
                        node.mining().found.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(height = block.index, hash = %hex::encode(block.hash), txs = block.transactions.len(), "mined block");
                    }
                    Ok(v) => tracing::debug!(verdict = ?v.first(), "a mined block was not kept (the tip moved)"),
                    Err(e) => tracing::warn!(error = %e, "storing a mined block failed"),
                }
            }
            Ok(None) => {
                if shutdown.is_cancelled() {
                    return;
                }
            }
            Err(e) => tracing::warn!(error = %e, "mining failed"),
        }
    }
}
