//! Transaction gossip, announce then fetch (Bitcoin's inv/getdata, in one
//! round trip): every few tens of milliseconds a node announces the ids its
//! mempool took in to each usable peer (but not to the one it got them
//! from); the peer answers with the ids it lacks, and only those bodies are
//! sent, each asked of one announcer at a time ([`requests`]). So a
//! transaction's body reaches each node once, whatever the number of links,
//! and the announcements cost 32 bytes per id per link. A peer that sends
//! an invalid transaction loses score (by the id its TLS handshake proved).

pub mod requests;

use std::time::Duration;

use p2p_proto::node::{
    AnnounceTransactionsRequest, GetTransactionRequest, SendTransactionsRequest, Transaction as PbTransaction,
    TransactionStatus,
};
use tokio::sync::broadcast::{self, error::RecvError};

use crate::chain::Hash;
use crate::convert;
use crate::mempool::{Admitted, ENTRY_FRAMING, Source, SubmitError};
use crate::node::NodeHandle;

/// How long new ids are collected before they are announced.
const BATCH_EVERY: Duration = Duration::from_millis(50);

/// How often overdue body requests are looked for.
const OVERDUE_EVERY: Duration = Duration::from_millis(250);

/// Fallback fetches started per look at most (the rest are left to later
/// announcements).
const MAX_FALLBACKS: usize = 256;

/// Score a peer loses for each invalid transaction it sends.
const INVALID_TX_PENALTY: i32 = -25;

/// Announces what the mempool takes in, and asks an alternate announcer
/// for bodies that did not come in time, until shutdown.
pub(crate) async fn run(node: NodeHandle, mut admitted: broadcast::Receiver<Admitted>) {
    let mut tick = tokio::time::interval(BATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut overdue = tokio::time::interval(OVERDUE_EVERY);
    overdue.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
            _ = overdue.tick() => fall_back(&node),
        }
    }
}

/// Transaction bodies from a peer (`from`: the node id its handshake
/// proved; None when anonymous) into the mempool. An invalid one costs the
/// sender score; races, full pools and replays it could not know of do
/// not. Returns how many were new and valid.
pub(crate) async fn receive(node: &NodeHandle, from: Option<String>, txs: Vec<PbTransaction>) -> u32 {
    let penalize = |why: &str| {
        if let Some(id) = &from {
            node.peers().penalize(id, INVALID_TX_PENALTY, why, node.now_ms());
        }
    };
    let mut converted = Vec::with_capacity(txs.len());
    for t in txs {
        match convert::tx_from_proto(t) {
            Ok(t) => converted.push(t),
            Err(e) => penalize(&format!("sent a malformed transaction: {e}")),
        }
    }
    let results = node.mempool().submit(converted, Source::Peer(from.clone())).await;
    let mut accepted = 0;
    for r in results {
        match r {
            Ok(_) => accepted += 1,
            Err(SubmitError::Invalid(e)) => penalize(&format!("sent an invalid transaction: {e}")),
            Err(_) => {}
        }
    }
    accepted
}

/// Bodies asked for and not delivered in time: each is asked of the next
/// peer that announced it (by GetTransaction), so withholding a
/// transaction delays it, and no more.
fn fall_back(node: &NodeHandle) {
    let overdue = node.tx_requests().overdue(node.now_ms());
    let mut started = 0;
    for late in overdue {
        if started == MAX_FALLBACKS {
            break;
        }
        if node.mempool().contains(&late.id) {
            continue;
        }
        let mut alternates = late.alternates.into_iter();
        let Some((peer, address)) = alternates.by_ref().find_map(|p| node.peers().address_of(&p).map(|a| (p, a)))
        else {
            continue;
        };
        let Some(link) = node.link(&address) else { continue };
        node.tx_requests().asked(late.id, &peer, alternates.collect(), node.now_ms());
        started += 1;
        let n = node.clone();
        node.tasks().spawn(async move {
            let mut client = n.peer_client(&link);
            let req = GetTransactionRequest { id: late.id.to_vec() };
            let answer = match tokio::time::timeout(n.config().gossip_timeout, client.get_transaction(req)).await {
                Ok(Ok(r)) => r.into_inner(),
                Ok(Err(s)) => {
                    tracing::debug!(peer = %address, code = ?s.code(), "fallback transaction fetch refused");
                    return;
                }
                Err(_) => return,
            };
            match answer.transaction {
                Some(t) if answer.status() == TransactionStatus::Pending => {
                    // The peer chose what to send: it must be what was asked for.
                    let genesis = n.chain().genesis_hash();
                    match convert::tx_from_proto(t.clone()) {
                        Ok(tx) if tx.id(&genesis) == late.id => {
                            crate::metrics::Stats::add(&n.counters().tx_bodies_received, 1);
                            receive(&n, Some(peer), vec![t]).await;
                        }
                        other => {
                            let why = match other {
                                Err(e) => format!("answered a transaction request with a malformed transaction: {e}"),
                                Ok(_) => "answered a transaction request with another transaction".to_string(),
                            };
                            n.peers().penalize(&peer, INVALID_TX_PENALTY, &why, n.now_ms());
                        }
                    }
                }
                // Confirmed meanwhile, or gone from its pool: nothing to fetch.
                _ => {}
            }
        });
    }
}

/// `txs` cut into consecutive runs of at most `budget` bytes each (a
/// transaction bigger than that goes alone): what one message may carry.
fn within_bytes(txs: &[crate::chain::Transaction], budget: usize) -> Vec<&[crate::chain::Transaction]> {
    let mut parts = Vec::new();
    let (mut start, mut used) = (0, 0);
    for (i, t) in txs.iter().enumerate() {
        let size = t.size() + ENTRY_FRAMING;
        if i > start && used + size > budget {
            parts.push(&txs[start..i]);
            (start, used) = (i, 0);
        }
        used += size;
    }
    if start < txs.len() {
        parts.push(&txs[start..]);
    }
    parts
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
                    .map(|e| e.tx)
                    .collect();
                // In messages the peer can decode: a block's worth of bytes each.
                for part in within_bytes(&txs, node.config().network.max_block_bytes) {
                    crate::metrics::Stats::add(&node.counters().tx_bodies_sent, part.len() as u64);
                    let req = SendTransactionsRequest { transactions: part.iter().map(convert::tx_to_proto).collect() };
                    if let Ok(Err(s)) = tokio::time::timeout(timeout, client.send_transactions(req)).await {
                        tracing::debug!(peer = %addr, code = ?s.code(), "sending transactions failed");
                    }
                }
            }
        }
    });
    futures::future::join_all(sends).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::Transaction;

    fn tx(payload: usize) -> Transaction {
        Transaction { sender: [1; 32], nonce: 1, timestamp_ms: 1, payload: vec![0; payload], signature: [0; 64] }
    }

    #[test]
    fn bodies_are_cut_into_messages_within_the_budget_in_order() {
        let each = tx(100).size() + ENTRY_FRAMING;
        let txs: Vec<_> = (0..10).map(|_| tx(100)).collect();
        let parts = within_bytes(&txs, each * 3);
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), vec![3, 3, 3, 1]);
        assert_eq!(within_bytes(&txs, each * 100).len(), 1);
        assert!(within_bytes(&[], 1000).is_empty());
        // One bigger than the budget still goes, alone.
        let mixed = vec![tx(10), tx(5000), tx(10)];
        assert_eq!(within_bytes(&mixed, 1000).iter().map(|p| p.len()).collect::<Vec<_>>(), vec![1, 1, 1]);
    }
}
