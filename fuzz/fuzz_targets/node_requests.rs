//! Every Node and Admin request message, decoded from arbitrary bytes and
//! turned into the node's domain types the way the services do: nothing may
//! panic, and a block that converts must survive a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use node_svc::chain::{NetworkParams, validate};
use node_svc::convert::{block_from_proto, block_to_proto};
use p2p_proto::admin::{AddPeerRequest, BanPeerRequest, MineBlockRequest, RemovePeerRequest};
use p2p_proto::node::{
    Block, BroadcastBlockchainResponse, GetBlocksRequest, GetPeersRequest, PingRequest, SendBlockRequest,
};
use prost::Message;

fn check_block(pb: Block, params: &NetworkParams) {
    if let Ok(b) = block_from_proto(pb) {
        assert_eq!(block_from_proto(block_to_proto(&b)).ok().as_ref(), Some(&b));
        let _ = validate::check_standalone(&b, params, &params.genesis().hash, 1_800_000_000_000);
    }
}

fn check_sender(address: &str) {
    let _ = p2p_proto::address::canonicalize(address);
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else { return };
    let params = NetworkParams { difficulty_bits: 1, ..NetworkParams::devnet() };
    match kind % 8 {
        0 => {
            if let Ok(r) = SendBlockRequest::decode(bytes) {
                if let Some(b) = r.block {
                    check_block(b, &params);
                }
                if let Some(s) = r.sender {
                    check_sender(&s.address);
                }
            }
        }
        1 => {
            if let Ok(b) = Block::decode(bytes) {
                check_block(b, &params);
            }
        }
        2 => {
            if let Ok(r) = GetBlocksRequest::decode(bytes) {
                for h in &r.locator {
                    let _ = validate::hash_field("locator", h);
                }
            }
        }
        3 => {
            if let Ok(r) = PingRequest::decode(bytes) {
                let _ = p2p_proto::work::from_bytes(&r.cumulative_work);
                if let Some(s) = r.sender {
                    check_sender(&s.address);
                }
            }
        }
        4 => {
            let _ = MineBlockRequest::decode(bytes);
            let _ = GetPeersRequest::decode(bytes);
            if let Ok(r) = AddPeerRequest::decode(bytes)
                && let Ok(t) = p2p_proto::dial::Target::parse(&r.peer)
            {
                check_sender(&t.address);
            }
            if let Ok(r) = BanPeerRequest::decode(bytes) {
                let _ = p2p_proto::signing::is_node_id(&r.peer) || p2p_proto::address::canonicalize(&r.peer).is_ok();
            }
            if let Ok(r) = RemovePeerRequest::decode(bytes) {
                check_sender(&r.address);
            }
        }
        5 => {
            // Transactions as SubmitTransaction, SendTransactions and
            // AnnounceTransactions carry them.
            if let Ok(t) = p2p_proto::node::Transaction::decode(bytes)
                && let Ok(tx) = node_svc::convert::tx_from_proto(t)
            {
                assert_eq!(node_svc::convert::tx_from_proto(node_svc::convert::tx_to_proto(&tx)).ok(), Some(tx.clone()));
                let _ = tx.check(&params.genesis().hash, params.max_tx_payload);
            }
            if let Ok(r) = p2p_proto::node::SendTransactionsRequest::decode(bytes) {
                for t in r.transactions {
                    let _ = node_svc::convert::tx_from_proto(t);
                }
            }
            let _ = p2p_proto::node::AnnounceTransactionsRequest::decode(bytes);
        }
        6 => {
            // Finality votes and evidence, as SendVotes and GetFinality
            // answers carry them: a vote that converts round-trips, and its
            // checks (validator set, height, signature) never panic.
            let keys: Vec<[u8; 32]> = (1..=4u8)
                .map(|i| ed25519_dalek::SigningKey::from_bytes(&[i; 32]).verifying_key().to_bytes())
                .collect();
            let finality = node_svc::chain::finality::FinalityParams::new(keys, 5, 1).expect("valid set");
            let genesis = params.genesis().hash;
            if let Ok(r) = p2p_proto::node::SendVotesRequest::decode(bytes) {
                for v in r.votes {
                    if let Ok(vote) = node_svc::convert::vote_from_proto(v) {
                        let back = node_svc::convert::vote_from_proto(node_svc::convert::vote_to_proto(&vote));
                        assert_eq!(back.as_ref().ok(), Some(&vote));
                        let _ = vote.check(&genesis, &finality);
                    }
                }
                for e in r.evidence {
                    if let Ok(e) = node_svc::convert::evidence_from_proto(e) {
                        let _ = e.convicts(&genesis, &finality);
                    }
                }
            }
            let _ = p2p_proto::node::GetFinalityResponse::decode(bytes);
        }
        _ => {
            let _ = BroadcastBlockchainResponse::decode(bytes);
        }
    }
});
