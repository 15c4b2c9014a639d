//! The chain actor: one thread owns the writable [`Chain`]; everything else
//! sends it blocks through a [`ChainHandle`] and reads through a
//! [`ChainReader`] on the blocking pool, so storage never runs on the async
//! workers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{mpsc, oneshot};

use crate::chain::{Accepted, Block, BlockError, Chain, ChainReader, StoreError, Tip};
use crate::error::Error;

type Verdicts = Result<Vec<Result<Accepted, BlockError>>, StoreError>;

struct AcceptCmd {
    blocks: Vec<Block>,
    reply: oneshot::Sender<Verdicts>,
}

/// Cloneable access to the chain.
#[derive(Debug, Clone)]
pub struct ChainHandle {
    tx: mpsc::Sender<AcceptCmd>,
    reader: ChainReader,
    orphans: Arc<AtomicUsize>,
    genesis_hash: [u8; 32],
}

impl ChainHandle {
    /// Starts the actor thread; it stops when every handle is dropped.
    pub fn spawn(mut chain: Chain) -> Result<(Self, std::thread::JoinHandle<()>), Error> {
        let (tx, mut rx) = mpsc::channel::<AcceptCmd>(256);
        let reader = chain.reader();
        let genesis_hash = chain.genesis().hash;
        let orphans = Arc::new(AtomicUsize::new(0));
        let count = orphans.clone();
        let thread = std::thread::Builder::new()
            .name("chain".into())
            .spawn(move || {
                while let Some(cmd) = rx.blocking_recv() {
                    let result = chain.accept(cmd.blocks, p2p_proto::unix_ms_now());
                    count.store(chain.orphan_count(), Ordering::Relaxed);
                    let _ = cmd.reply.send(result);
                }
            })
            .map_err(|e| Error::Internal(format!("cannot start chain thread: {e}")))?;
        Ok((ChainHandle { tx, reader, orphans, genesis_hash }, thread))
    }

    /// Offers blocks in order; one verdict each (plus connected orphans).
    pub async fn accept(&self, blocks: Vec<Block>) -> Result<Vec<Result<Accepted, BlockError>>, Error> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(AcceptCmd { blocks, reply }).await.map_err(|_| Error::ShuttingDown)?;
        Ok(rx.await.map_err(|_| Error::ShuttingDown)??)
    }

    /// Runs a read on the blocking pool.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ChainReader) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, Error> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || f(&reader))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(Error::from)
    }

    pub async fn tip(&self) -> Result<Tip, Error> {
        self.read(|r| r.tip()).await
    }

    pub fn orphan_count(&self) -> usize {
        self.orphans.load(Ordering::Relaxed)
    }

    pub fn genesis_hash(&self) -> [u8; 32] {
        self.genesis_hash
    }
}
