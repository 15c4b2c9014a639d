//! Finality votes on the wire: receiving them (SendVotes), relaying what
//! is new, answering GetFinality, and catching up from a peer whose final
//! checkpoint is ahead of ours. The rules are the chain's
//! ([`crate::chain::finality`]); every vote is checked there before it
//! counts.
//!
//! Votes are small (about 150 bytes, not much more than an id and its
//! framing), so they are pushed whole rather than announced and fetched:
//! like gossipsub's mesh push, with the dedup done by the chain, which
//! publishes only the votes that were new to it. Each node therefore sends
//! each vote once per peer, and a network sends about
//! `validators x degree` vote messages per node per checkpoint.

use p2p_proto::node::{GetFinalityRequest, GetFinalityResponse, SendVotesRequest, SendVotesResponse};
use p2p_proto::tls::PeerIdentity;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use crate::chain::finality::{Evidence, MAX_VALIDATORS, Vote, VoteError};
use crate::chain::{ChainEvent, MAX_EVIDENCE};
use crate::convert;
use crate::error::Error;
use crate::metrics::Stats;
use crate::node::NodeHandle;

/// Votes one SendVotes (or GetFinality answer) may carry.
pub const MAX_VOTES_PER_MESSAGE: usize = 4 * MAX_VALIDATORS;
/// Checkpoints after the final one whose votes GetFinality includes.
const CATCH_UP_CHECKPOINTS: u64 = 3;
/// Score a peer loses per message with votes that do not verify.
const BAD_VOTE_PENALTY: i32 = -20;

/// Converts and bounds a vote message before anything is checked.
fn parse(
    votes: Vec<p2p_proto::node::Vote>,
    evidence: Vec<p2p_proto::node::Evidence>,
) -> Result<(Vec<Vote>, Vec<Evidence>), Error> {
    if votes.len() > MAX_VOTES_PER_MESSAGE {
        return Err(Error::invalid("votes", format!("has {}; at most {MAX_VOTES_PER_MESSAGE} per call", votes.len())));
    }
    if evidence.len() > MAX_EVIDENCE {
        return Err(Error::invalid("evidence", format!("has {}; at most {MAX_EVIDENCE} per call", evidence.len())));
    }
    let votes = votes.into_iter().map(convert::vote_from_proto).collect::<Result<Vec<_>, _>>();
    let votes = votes.map_err(|e| Error::invalid("votes", e))?;
    let evidence = evidence.into_iter().map(convert::evidence_from_proto).collect::<Result<Vec<_>, _>>();
    let evidence = evidence.map_err(|e| Error::invalid("evidence", e))?;
    Ok((votes, evidence))
}

/// Offers votes from a peer (or an anonymous client) to the chain; a peer
/// whose votes do not verify loses score; a quorum for a block we lack
/// makes us sync from the peer that had the votes.
async fn offer(
    node: &NodeHandle,
    from: Option<&PeerIdentity>,
    address: Option<String>,
    votes: Vec<Vote>,
    evidence: Vec<Evidence>,
) -> Result<SendVotesResponse, Error> {
    let from_id = from.map(|p| p.node_id.clone());
    let applied = node.chain().offer_votes(votes, evidence, from_id.clone()).await?;
    let mut resp = SendVotesResponse::default();
    for v in &applied.verdicts {
        match v {
            Ok(crate::chain::finality::Added::New) => resp.accepted += 1,
            Ok(_) => {}
            Err(e) => {
                resp.refused += 1;
                if resp.first_error.is_empty() {
                    resp.first_error = e.to_string();
                }
            }
        }
    }
    // Finality being off is our configuration, not the sender's fault.
    let forged = applied.verdicts.iter().any(|v| matches!(v, Err(e) if *e != VoteError::FinalityOff));
    if forged {
        Stats::add(&node.counters().invalid_received, 1);
        if let Some(id) = &from_id {
            node.peers().penalize(id, BAD_VOTE_PENALTY, &resp.first_error, node.now_ms());
        }
    }
    if let Some(hash) = applied.missing_final {
        let address = address.or_else(|| from_id.as_deref().and_then(|id| node.peers().address_of(id)));
        if let Some(address) = address {
            tracing::info!(block = %hex::encode(hash), peer = %address,
                "a quorum finalized a block we do not have: fetching its chain");
            node.sync().request(&address);
        }
    }
    Ok(resp)
}

/// SendVotes.
pub async fn receive(
    node: &NodeHandle,
    caller: Option<PeerIdentity>,
    req: SendVotesRequest,
) -> Result<SendVotesResponse, Error> {
    let (votes, evidence) = parse(req.votes, req.evidence)?;
    offer(node, caller.as_ref(), None, votes, evidence).await
}

/// GetFinality: the final checkpoint, its votes and the next few
/// checkpoints' votes, and the evidence held.
pub async fn answer(node: &NodeHandle, _req: GetFinalityRequest) -> Result<GetFinalityResponse, Error> {
    let interval = node.config().network.finality.checkpoint_interval.max(1);
    let (finalized, votes, evidence) = node
        .chain()
        .read(move |r| {
            let f = r.finalized()?;
            let cp = f.height / interval;
            let votes = r.votes(cp, cp + CATCH_UP_CHECKPOINTS, MAX_VOTES_PER_MESSAGE)?;
            Ok((f, votes, r.evidence(MAX_EVIDENCE)?))
        })
        .await?;
    Ok(GetFinalityResponse {
        finalized_height: finalized.height,
        finalized_hash: finalized.hash.to_vec(),
        checkpoint_interval: interval,
        votes: votes.iter().map(convert::vote_to_proto).collect(),
        evidence: evidence.iter().map(convert::evidence_to_proto).collect(),
    })
}

/// Asks the peer at `address` for its finality and offers what it sends:
/// each vote is checked here, so a peer can only speed finality up, never
/// make us believe a checkpoint the validators did not sign.
pub async fn catch_up(node: &NodeHandle, address: &str) {
    let Some(link) = node.link(address) else { return };
    let mut client = node.peer_client(&link);
    let timeout = node.config().ping_timeout;
    let resp = match tokio::time::timeout(timeout, client.get_finality(GetFinalityRequest {})).await {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(status)) => {
            tracing::debug!(peer = %address, code = ?status.code(), "GetFinality failed");
            return;
        }
        Err(_) => {
            tracing::debug!(peer = %address, "GetFinality timed out");
            return;
        }
    };
    let proven = link.proven();
    match parse(resp.votes, resp.evidence) {
        Ok((votes, evidence)) => {
            if let Err(e) = offer(node, proven.as_ref(), Some(address.to_string()), votes, evidence).await {
                tracing::debug!(peer = %address, error = %e, "finality from peer not applied");
            }
        }
        Err(e) => {
            let culprit = node.culprit_at(address);
            node.peers().penalize(&culprit, BAD_VOTE_PENALTY, &e.to_string(), node.now_ms());
        }
    }
}

/// Relays the votes and evidence the chain found new to every usable peer
/// except the one they came from, until shutdown.
pub(crate) async fn run(node: NodeHandle, mut events: broadcast::Receiver<ChainEvent>) {
    loop {
        let event = tokio::select! {
            _ = node.shutdown_token().cancelled() => return,
            ev = events.recv() => ev,
        };
        match event {
            Ok(ChainEvent::Votes { votes, evidence, from }) => {
                let req = SendVotesRequest {
                    votes: votes.iter().map(convert::vote_to_proto).collect(),
                    evidence: evidence.iter().map(convert::evidence_to_proto).collect(),
                };
                let node2 = node.clone();
                node.tasks().spawn(async move { relay(&node2, req, from.as_deref()).await });
            }
            Ok(_) => {}
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "vote relay fell behind the chain's events; peers catch up by GetFinality");
            }
            Err(RecvError::Closed) => return,
        }
    }
}

async fn relay(node: &NodeHandle, req: SendVotesRequest, except: Option<&str>) {
    let targets = node.peers().gossip_targets(except, usize::MAX);
    let timeout = node.config().gossip_timeout;
    let sends = targets.into_iter().filter_map(|addr| node.link(&addr).map(|l| (addr, l))).map(|(addr, link)| {
        let req = req.clone();
        async move {
            Stats::add(&node.counters().vote_messages_sent, 1);
            let mut client = node.peer_client(&link);
            match tokio::time::timeout(timeout, client.send_votes(req)).await {
                Ok(Ok(_)) => {}
                Ok(Err(status)) => {
                    tracing::debug!(peer = %addr, code = ?status.code(), msg = status.message(), "peer refused votes")
                }
                Err(_) => tracing::debug!(peer = %addr, "vote relay timed out"),
            }
        }
    });
    futures::future::join_all(sends).await;
}
