//! Every conversion between the wire (protobuf) and the node's domain types,
//! in one place: blocks, transactions, outcomes, peers, tips.

use p2p_proto::node::{Block as PbBlock, BlockOutcome, PeerInfo, PingResponse, Transaction as PbTransaction};

use crate::chain::finality::{Evidence, Vote};
use crate::chain::{Block, BlockError, Outcome, Tip, Transaction, validate};
use crate::peers::PeerEntry;

/// Converts the wire form, checking field sizes.
pub fn block_from_proto(b: PbBlock) -> Result<Block, BlockError> {
    let transactions = b
        .transactions
        .into_iter()
        .enumerate()
        .map(|(index, tx)| tx_from_proto(tx).map_err(|e| BlockError::Malformed(format!("transaction #{index}: {e}"))))
        .collect::<Result<_, _>>()?;
    Ok(Block {
        index: b.index,
        timestamp_ms: b.timestamp_unix_ms,
        prev_hash: validate::hash_field("prev_hash", &b.prev_hash)?,
        hash: validate::hash_field("hash", &b.hash)?,
        bits: b.bits,
        nonce: b.nonce,
        transactions,
    })
}

/// A block's header as announced (the canonical fields, its nonce and hash).
pub fn header_to_proto(b: &Block, genesis: &crate::chain::Hash) -> p2p_proto::node::BlockHeader {
    let h = b.header(genesis);
    p2p_proto::node::BlockHeader {
        index: h.index,
        timestamp_unix_ms: h.timestamp_ms,
        prev_hash: h.prev_hash.to_vec(),
        merkle_root: h.merkle_root.to_vec(),
        bits: h.bits,
        nonce: b.nonce,
        hash: b.hash.to_vec(),
    }
}

/// An announced header and the hash it claims (its fields well-formed;
/// its proof of work is [`validate::check_proof_of_work`]'s business).
pub fn header_from_proto(
    h: &p2p_proto::node::BlockHeader,
) -> Result<(crate::chain::block::Header, crate::chain::Hash), BlockError> {
    let header = crate::chain::block::Header {
        index: h.index,
        timestamp_ms: h.timestamp_unix_ms,
        prev_hash: validate::hash_field("prev_hash", &h.prev_hash)?,
        merkle_root: validate::hash_field("merkle_root", &h.merkle_root)?,
        bits: h.bits,
    };
    Ok((header, validate::hash_field("hash", &h.hash)?))
}

pub fn block_to_proto(b: &Block) -> PbBlock {
    PbBlock {
        index: b.index,
        timestamp_unix_ms: b.timestamp_ms,
        prev_hash: b.prev_hash.to_vec(),
        nonce: b.nonce,
        bits: b.bits,
        hash: b.hash.to_vec(),
        transactions: b.transactions.iter().map(tx_to_proto).collect(),
    }
}

/// A malformed transaction field (its name and what is wrong).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {reason}")]
pub struct TxFieldError {
    pub field: &'static str,
    pub reason: String,
}

/// Converts the wire form, checking field sizes.
pub fn tx_from_proto(t: PbTransaction) -> Result<Transaction, TxFieldError> {
    let sender = <[u8; 32]>::try_from(t.sender.as_slice()).map_err(|_| TxFieldError {
        field: "sender",
        reason: format!("must be a 32-byte ed25519 public key, got {} bytes", t.sender.len()),
    })?;
    let signature = <[u8; 64]>::try_from(t.signature.as_slice()).map_err(|_| TxFieldError {
        field: "signature",
        reason: format!("must be a 64-byte ed25519 signature, got {} bytes", t.signature.len()),
    })?;
    Ok(Transaction { sender, nonce: t.nonce, timestamp_ms: t.timestamp_unix_ms, payload: t.payload, signature })
}

pub fn tx_to_proto(t: &Transaction) -> PbTransaction {
    PbTransaction {
        sender: t.sender.to_vec(),
        nonce: t.nonce,
        payload: t.payload.clone(),
        timestamp_unix_ms: t.timestamp_ms,
        signature: t.signature.to_vec(),
    }
}

pub fn outcome_to_proto(o: Outcome) -> BlockOutcome {
    match o {
        Outcome::Appended => BlockOutcome::Appended,
        Outcome::Duplicate => BlockOutcome::Duplicate,
        Outcome::Orphan => BlockOutcome::Orphan,
        Outcome::SideBranch => BlockOutcome::SideBranch,
        Outcome::Reorg { .. } => BlockOutcome::Reorg,
        Outcome::Deferred => BlockOutcome::Deferred,
        Outcome::BelowFinal => BlockOutcome::BelowFinal,
    }
}

/// What a SendBlock reply says about each outcome.
pub fn outcome_message(o: BlockOutcome) -> &'static str {
    match o {
        BlockOutcome::Appended => "appended to the main chain and forwarded",
        BlockOutcome::Duplicate => "already known; not forwarded again",
        BlockOutcome::Orphan => "parent unknown; kept while the missing blocks are fetched",
        BlockOutcome::SideBranch => "stored on a side branch with no more work than the main chain",
        BlockOutcome::Reorg => "its branch has the most work: the main chain was reorganised",
        BlockOutcome::Deferred => {
            "stamped ahead of this node's clock by more than the drift rule allows; held and offered again when its time comes"
        }
        BlockOutcome::BelowFinal => {
            "valid, but its branch forks below the final checkpoint: kept aside and never adopted, whatever its work"
        }
        BlockOutcome::Unspecified => "",
    }
}

pub fn peer_info(p: &PeerEntry) -> PeerInfo {
    PeerInfo {
        address: p.address.clone(),
        node_id: p.node_id.clone(),
        state: p.state as i32,
        source: p.source as i32,
        last_seen_unix_ms: p.last_seen_ms,
        consecutive_failures: p.failures,
        best_height: p.best_height,
        best_tip_hash: p.best_tip.clone(),
        score: p.score,
    }
}

/// A Ping reply carrying our tip.
pub fn pong(node_id: &str, tip: &Tip, genesis: [u8; 32], now_ms: u64, finalized_height: u64) -> PingResponse {
    PingResponse {
        node_id: node_id.to_string(),
        height: tip.height,
        tip_hash: tip.hash.to_vec(),
        cumulative_work: p2p_proto::work::to_bytes(tip.work),
        genesis_hash: genesis.to_vec(),
        timestamp_unix_ms: now_ms,
        finalized_height,
    }
}

pub fn vote_to_proto(v: &Vote) -> p2p_proto::node::Vote {
    p2p_proto::node::Vote {
        validator: v.validator.to_vec(),
        checkpoint: v.checkpoint,
        height: v.height,
        block_hash: v.hash.to_vec(),
        signature: v.signature.to_vec(),
    }
}

/// A vote with its fields' lengths checked (the signature is checked by the chain).
pub fn vote_from_proto(v: p2p_proto::node::Vote) -> Result<Vote, String> {
    fn fixed<const N: usize>(name: &str, bytes: &[u8]) -> Result<[u8; N], String> {
        bytes.try_into().map_err(|_| format!("vote.{name} must be {N} bytes, got {}", bytes.len()))
    }
    Ok(Vote {
        validator: fixed("validator", &v.validator)?,
        checkpoint: v.checkpoint,
        height: v.height,
        hash: fixed("block_hash", &v.block_hash)?,
        signature: fixed("signature", &v.signature)?,
    })
}

pub fn evidence_to_proto(e: &Evidence) -> p2p_proto::node::Evidence {
    p2p_proto::node::Evidence { first: Some(vote_to_proto(&e.first)), second: Some(vote_to_proto(&e.second)) }
}

pub fn evidence_from_proto(e: p2p_proto::node::Evidence) -> Result<Evidence, String> {
    Ok(Evidence {
        first: vote_from_proto(e.first.ok_or("evidence.first is missing")?)?,
        second: vote_from_proto(e.second.ok_or("evidence.second is missing")?)?,
    })
}

/// The canonical spelling of a peer address, or the input when it does not parse.
pub fn canonical(address: &str) -> String {
    p2p_proto::address::canonicalize(address).unwrap_or_else(|_| address.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_and_bad_hash_lengths_are_refused() {
        let p = crate::chain::testing::params();
        let b = crate::chain::testing::chain_of(&p, 1, 1_700_000_000_000).pop().unwrap();
        assert_eq!(b.transactions.len(), 1);
        assert_eq!(block_from_proto(block_to_proto(&b)).unwrap(), b);
        let mut pb = block_to_proto(&b);
        pb.hash.pop();
        assert!(block_from_proto(pb).is_err());
        let mut pb = block_to_proto(&b);
        pb.transactions[0].signature.pop();
        assert!(block_from_proto(pb).unwrap_err().to_string().contains("signature"));
    }
}
