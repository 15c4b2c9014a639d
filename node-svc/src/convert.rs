//! Every conversion between the wire (protobuf) and the node's domain types,
//! in one place: blocks, outcomes, peers, tips.

use p2p_proto::node::{Block as PbBlock, BlockOutcome, PeerInfo, PingResponse};

use crate::chain::{Block, BlockError, Outcome, Tip, validate};
use crate::peers::PeerEntry;

/// Converts the wire form, checking field sizes.
pub fn block_from_proto(b: PbBlock) -> Result<Block, BlockError> {
    Ok(Block {
        index: b.index,
        timestamp_ms: b.timestamp_unix_ms,
        prev_hash: validate::hash_field("prev_hash", &b.prev_hash)?,
        hash: validate::hash_field("hash", &b.hash)?,
        data: b.data,
        nonce: b.nonce,
        difficulty_bits: b.difficulty_bits,
    })
}

pub fn block_to_proto(b: &Block) -> PbBlock {
    PbBlock {
        index: b.index,
        timestamp_unix_ms: b.timestamp_ms,
        data: b.data.clone(),
        prev_hash: b.prev_hash.to_vec(),
        nonce: b.nonce,
        difficulty_bits: b.difficulty_bits,
        hash: b.hash.to_vec(),
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
pub fn pong(node_id: &str, tip: &Tip, genesis: [u8; 32], now_ms: u64) -> PingResponse {
    PingResponse {
        node_id: node_id.to_string(),
        height: tip.height,
        tip_hash: tip.hash.to_vec(),
        cumulative_work: p2p_proto::work::to_bytes(tip.work),
        genesis_hash: genesis.to_vec(),
        timestamp_unix_ms: now_ms,
    }
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
        let b = crate::chain::testing::params().genesis();
        assert_eq!(block_from_proto(block_to_proto(&b)).unwrap(), b);
        let mut pb = block_to_proto(&b);
        pb.hash.pop();
        assert!(block_from_proto(pb).is_err());
    }
}
