//! Mining on demand (MineBlock): proof of work on the blocking pool, never
//! on the async workers. One job at a time (a second MineBlock is refused
//! while one runs), and the search stops when the node shuts down or the
//! caller goes away (the request future is dropped).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use p2p_proto::node::BlockOutcome;

use crate::chain::{Block, Origin, Outcome, block::Header, pow};
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
}

/// Times the tip may move under a search before the caller is told to retry.
const MAX_ROUNDS: usize = 3;

impl NodeHandle {
    /// Mines a block carrying `data` on the current tip, stores it (gossip
    /// relays it from the chain's event). If another block takes the tip
    /// while mining, it mines again on the new tip (up to 3 times).
    pub async fn mine(&self, data: Vec<u8>) -> Result<Mined, Error> {
        let max = self.config().network.max_data_bytes;
        if data.len() > max {
            return Err(Error::invalid("data", format!("is {} bytes; a block carries at most {max}", data.len())));
        }
        let job = self.mining_lock().clone().try_lock_owned().map_err(|_| {
            Error::ResourceExhausted(
                "a block is being mined already (one MineBlock at a time); retry when it is done".into(),
            )
        })?;
        let job = Arc::new(job);
        let started = Instant::now();
        let mut attempts = 0;
        for _ in 0..MAX_ROUNDS {
            let tip = self.chain().tip().await?;
            let header = Header {
                index: tip.height + 1,
                timestamp_ms: self.now_ms().max(tip.timestamp_ms),
                prev_hash: tip.hash,
                data_digest: <sha2::Sha256 as sha2::Digest>::digest(&data).into(),
                difficulty_bits: self.config().network.difficulty_bits,
            };
            let found = self.search(&header, job.clone()).await?;
            attempts += found.attempts;
            let block = Block {
                index: header.index,
                timestamp_ms: header.timestamp_ms,
                data: data.clone(),
                prev_hash: header.prev_hash,
                nonce: found.nonce,
                difficulty_bits: header.difficulty_bits,
                hash: found.hash,
            };
            let verdict = self.offer(vec![block.clone()], Origin::Local).await?.into_iter().next();
            match verdict {
                Some(Ok(a)) if a.outcome == Outcome::SideBranch => {
                    tracing::info!(height = block.index, "tip moved while mining; mining again on the new tip");
                }
                Some(Ok(a)) => {
                    tracing::info!(height = block.index, hash = %hex::encode(block.hash), attempts, "mined block");
                    let outcome = convert::outcome_to_proto(a.outcome);
                    return Ok(Mined { block, outcome, attempts, elapsed: started.elapsed() });
                }
                Some(Err(e)) => return Err(Error::Internal(format!("own block rejected: {e}"))),
                None => return Err(Error::Internal("no verdict".into())),
            }
        }
        Err(Error::FailedPrecondition("the tip kept moving while mining; try again".into()))
    }

    /// Searches nonces on the blocking pool until one meets the difficulty,
    /// the node shuts down, or this future is dropped. The search thread
    /// holds `job` (the mining lock) until it has really stopped.
    async fn search(&self, header: &Header, job: Arc<tokio::sync::OwnedMutexGuard<()>>) -> Result<pow::Found, Error> {
        let cancel = Arc::new(AtomicBool::new(false));
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
        found?.ok_or(Error::ShuttingDown)
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
