//! Transaction gossip, announce then fetch (Bitcoin's inv/getdata, in one
//! round trip): every few tens of milliseconds a node announces the ids its
//! mempool took in to each usable peer (but not to the one it got them
//! from); the peer answers with the ids it lacks, and only those bodies are
//! sent. So a transaction's body reaches each node about once, whatever the
//! number of links, and the announcements cost 32 bytes per id per link.
//! A peer that sends an invalid transaction loses score (by the id its TLS
//! handshake proved).

use std::time::Duration;

use p2p_proto::node::{AnnounceTransactionsRequest, SendTransactionsRequest};
use tokio::sync::broadcast::{self, error::RecvError};

use crate::chain::Hash;
use crate::convert;
use crate::mempool::{Admitted, Source};
use crate::node::NodeHandle;

/// How long new ids are collected before they are announced.
const BATCH_EVERY: Duration = Duration::from_millis(50);

/// Announces what the mempool takes in, until shutdown.
pub(crate) async fn run(node: NodeHandle, mut admitted: broadcast::Receiver<Admitted>) {
    let mut tick = tokio::time::interval(BATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch: Vec<Admitted> = Vec::new();
    loop {
        tokio::select! {
            _ = node.shutdown_token().cancelled() => return,
            a = admitted.recv() => match a {
                Ok(a) => batch.push(a),
                Err(RecvError::Lagged(missed)) => tracing::warn!(missed, "transaction gossip fell behind; those are announced by no one here"),
                Err(RecvError::Closed) => return,
            },
            _ = tick.tick() => {
                if !batch.is_empty() {
                    let b = std::mem::take(&mut batch);
                    let n = node.clone();
                    node.tasks().spawn(async move { announce(&n, b).await });
                }
            }
        }
    }
}

/// Announces `batch` to every usable peer, and sends the bodies each wants.
async fn announce(node: &NodeHandle, batch: Vec<Admitted>) {
    let targets = node.peers().gossip_targets(None, usize::MAX);
    let timeout = node.config().gossip_timeout;
    let max = node.config().max_tx_batch;
    let sends = targets.into_iter().filter_map(|addr| node.link(&addr).map(|l| (addr, l))).map(|(addr, link)| {
        let peer_id = node.peers().node_id_of(&addr);
        // Not back to the peer that sent it.
        let ids: Vec<Hash> = batch
            .iter()
            .filter(|a| !matches!(&a.source, Source::Peer(Some(from)) if Some(from) == peer_id.as_ref()))
            .map(|a| a.id)
            .collect();
        async move {
            let mut client = node.peer_client(&link);
            for chunk in ids.chunks(max.max(1)) {
                let req = AnnounceTransactionsRequest { ids: chunk.iter().map(|i| i.to_vec()).collect() };
                let wanted = match tokio::time::timeout(timeout, client.announce_transactions(req)).await {
                    Ok(Ok(r)) => r.into_inner().wanted,
                    Ok(Err(s)) => {
                        tracing::debug!(peer = %addr, code = ?s.code(), "transaction announcement refused");
                        return;
                    }
                    Err(_) => return,
                };
                let txs: Vec<_> = wanted
                    .iter()
                    .filter_map(|w| <[u8; 32]>::try_from(w.as_slice()).ok())
                    .filter(|w| chunk.contains(w))
                    .filter_map(|w| node.mempool().get(&w))
                    .map(|e| convert::tx_to_proto(&e.tx))
                    .collect();
                if txs.is_empty() {
                    continue;
                }
                crate::metrics::Stats::add(&node.counters().tx_bodies_sent, txs.len() as u64);
                let req = SendTransactionsRequest { transactions: txs };
                if let Ok(Err(s)) = tokio::time::timeout(timeout, client.send_transactions(req)).await {
                    tracing::debug!(peer = %addr, code = ?s.code(), "sending transactions failed");
                }
            }
        }
    });
    futures::future::join_all(sends).await;
}
