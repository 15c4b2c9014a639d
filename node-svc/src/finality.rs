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
//! each vote once per peer; votes found new within 20 ms of each other go
//! in one message, so a checkpoint costs a node a few messages per peer
//! rather than one per validator per peer.

use p2p_proto::node::{GetFinalityRequest, GetFinalityResponse, SendVotesRequest, SendVotesResponse};
use p2p_proto::tls::PeerIdentity;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use crate::chain::finality::{Checked, Evidence, MAX_VALIDATORS, Vote, VoteError};
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

/// Votes checked at once on the blocking pool, at most.
const CHECK_JOBS: usize = 2;
/// How long a vote message waits for a check slot before it is refused.
const CHECK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// Vote and evidence digests remembered as already checked.
const SEEN: usize = 65_536;

/// Digests checked, and their order (the oldest are forgotten first).
type Seen = (std::collections::HashSet<[u8; 32]>, std::collections::VecDeque<[u8; 32]>);

/// What the node remembers of the votes it was sent: which it has checked
/// (a vote reaches a node from each of its peers; its signature is
/// verified once), and how many checks may run at once.
#[derive(Debug)]
pub struct VoteIntake {
    seen: std::sync::Mutex<Seen>,
    checks: tokio::sync::Semaphore,
}

impl Default for VoteIntake {
    fn default() -> Self {
        VoteIntake { seen: Default::default(), checks: tokio::sync::Semaphore::new(CHECK_JOBS) }
    }
}

impl VoteIntake {
    /// The digest a vote or evidence is remembered by: of all its bytes,
    /// not just a signature, so a forgery cannot shadow the real thing.
    fn digest(bytes: &[u8]) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(bytes).into()
    }

    fn checked_before(&self, digest: &[u8; 32]) -> bool {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).0.contains(digest)
    }

    /// Remembers digests as checked (the oldest are forgotten past [`SEEN`]).
    fn remember(&self, digests: impl IntoIterator<Item = [u8; 32]>) {
        let mut guard = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let (set, order) = &mut *guard;
        for d in digests {
            if set.insert(d) {
                order.push_back(d);
            }
        }
        while order.len() > SEEN {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
    }

    #[cfg(test)]
    fn first_time(&self, bytes: &[u8]) -> bool {
        let d = Self::digest(bytes);
        let new = !self.checked_before(&d);
        self.remember([d]);
        new
    }
}

/// Votes and evidence after their checks, with the digests they are
/// remembered by.
struct Checks {
    votes: Vec<Checked<Vote>>,
    vote_digests: Vec<[u8; 32]>,
    errors: Vec<VoteError>,
    evidence: Vec<Checked<Evidence>>,
    evidence_digests: Vec<[u8; 32]>,
    /// Of the votes and evidence that failed.
    bad_digests: Vec<[u8; 32]>,
}

/// Checks votes and evidence (signatures included): blocking work.
fn check_all(
    votes: Vec<([u8; 32], Vote)>,
    evidence: Vec<([u8; 32], Evidence)>,
    genesis: &crate::chain::Hash,
    params: &crate::chain::finality::FinalityParams,
) -> Checks {
    let mut c = Checks {
        votes: Vec::new(),
        vote_digests: Vec::new(),
        errors: Vec::new(),
        evidence: Vec::new(),
        evidence_digests: Vec::new(),
        bad_digests: Vec::new(),
    };
    for (d, v) in votes {
        match v.verify(genesis, params) {
            Ok(ok) => {
                c.votes.push(ok);
                c.vote_digests.push(d);
            }
            Err(e) => {
                c.errors.push(e);
                c.bad_digests.push(d);
            }
        }
    }
    for (d, e) in evidence {
        match e.verify(genesis, params) {
            Some(ok) => {
                c.evidence.push(ok);
                c.evidence_digests.push(d);
            }
            None => c.bad_digests.push(d),
        }
    }
    c
}

/// Offers votes from a peer (or an anonymous client) to the chain. Votes
/// seen before are skipped; the rest are checked (signatures included) on
/// the blocking pool, a couple of jobs at a time, before the chain sees
/// them. A peer whose votes do not verify loses score; a quorum for a
/// block we lack makes us sync from the peer that had the votes.
async fn offer(
    node: &NodeHandle,
    from: Option<&PeerIdentity>,
    address: Option<String>,
    votes: Vec<Vote>,
    evidence: Vec<Evidence>,
) -> Result<SendVotesResponse, Error> {
    let intake = node.vote_intake();
    // Skip what was checked before; remember the rest once it is checked
    // (not before: a message refused for being busy must not hide its votes).
    let votes: Vec<([u8; 32], Vote)> = votes
        .into_iter()
        .map(|v| (VoteIntake::digest(&v.encode()), v))
        .filter(|(d, _)| !intake.checked_before(d))
        .collect();
    let evidence: Vec<([u8; 32], Evidence)> = evidence
        .into_iter()
        .map(|e| (VoteIntake::digest(&crate::chain::store::encode_evidence(&e)), e))
        .filter(|(d, _)| !intake.checked_before(d))
        .collect();
    let mut resp = SendVotesResponse::default();
    if votes.is_empty() && evidence.is_empty() {
        return Ok(resp);
    }
    let genesis = node.chain().genesis_hash();
    let params = node.config().network.finality.clone();
    // Wait for a slot a bounded time: a flood of vote messages is told to
    // come back rather than queued without end.
    let permit = tokio::time::timeout(CHECK_WAIT, intake.checks.acquire())
        .await
        .map_err(|_| Error::ResourceExhausted("busy checking finality votes; retry shortly".into()))?
        .map_err(|_| Error::ShuttingDown)?;
    let checked = tokio::task::spawn_blocking(move || check_all(votes, evidence, &genesis, &params))
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    drop(permit);
    let Checks { votes: checked, vote_digests, errors, evidence: checked_evidence, evidence_digests, bad_digests } =
        checked;
    let bad_evidence = bad_digests.len() - errors.len();
    // What does not verify never will; what does is remembered once the
    // chain has it (a store failure must not hide it from a later copy).
    intake.remember(bad_digests);
    resp.refused = errors.len() as u32;
    if let Some(e) = errors.first() {
        resp.first_error = e.to_string();
    } else if bad_evidence > 0 {
        resp.first_error = "rule vote-evidence: evidence that does not convict its validator".into();
    }
    let from_id = from.map(|p| p.node_id.clone());
    // Finality being off is our configuration, not the sender's fault.
    let forged = bad_evidence > 0 || errors.iter().any(|e| *e != VoteError::FinalityOff);
    if forged {
        Stats::add(&node.counters().invalid_received, 1);
        if let Some(id) = &from_id {
            node.peers().penalize(id, BAD_VOTE_PENALTY, &resp.first_error, node.now_ms());
        }
    }
    if checked.is_empty() && checked_evidence.is_empty() {
        return Ok(resp);
    }
    let applied = node.chain().offer_votes(checked, checked_evidence, from_id.clone()).await?;
    // Votes outside the window are not kept yet: a later copy is worth checking.
    let kept = vote_digests
        .into_iter()
        .zip(&applied.verdicts)
        .filter(|(_, v)| !matches!(v, crate::chain::finality::Added::OutOfWindow))
        .map(|(d, _)| d);
    intake.remember(kept.chain(evidence_digests));
    resp.accepted = applied.verdicts.iter().filter(|v| matches!(v, crate::chain::finality::Added::New)).count() as u32;
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

/// How long the relay gathers new votes before sending: the validators
/// vote on a checkpoint at about the same moment, so one message per peer
/// carries most of a checkpoint's votes instead of one message per vote.
const COALESCE: std::time::Duration = std::time::Duration::from_millis(20);

/// New votes and evidence, and the peer (node id) they came from.
type Gathered = Vec<(std::sync::Arc<Vec<Vote>>, std::sync::Arc<Vec<Evidence>>, Option<String>)>;

/// Relays the votes and evidence the chain found new to every usable peer
/// except the one each came from, gathered for [`COALESCE`], until shutdown.
pub(crate) async fn run(node: NodeHandle, mut events: broadcast::Receiver<ChainEvent>) {
    let lagged =
        |missed| tracing::warn!(missed, "vote relay fell behind the chain's events; peers catch up by GetFinality");
    loop {
        let mut gathered: Gathered = Vec::new();
        let event = tokio::select! {
            _ = node.shutdown_token().cancelled() => return,
            ev = events.recv() => ev,
        };
        match event {
            Ok(ChainEvent::Votes { votes, evidence, from }) => gathered.push((votes, evidence, from)),
            Ok(_) => continue,
            Err(RecvError::Lagged(missed)) => {
                lagged(missed);
                continue;
            }
            Err(RecvError::Closed) => return,
        }
        let deadline = tokio::time::Instant::now() + COALESCE;
        let mut closed = false;
        while gathered.iter().map(|g| g.0.len()).sum::<usize>() < MAX_VOTES_PER_MESSAGE {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Err(_) => break,
                Ok(Ok(ChainEvent::Votes { votes, evidence, from })) => gathered.push((votes, evidence, from)),
                Ok(Ok(_)) => {}
                Ok(Err(RecvError::Lagged(missed))) => lagged(missed),
                Ok(Err(RecvError::Closed)) => {
                    closed = true;
                    break;
                }
            }
        }
        let node2 = node.clone();
        node.tasks().spawn(async move { relay(&node2, gathered).await });
        if closed {
            return;
        }
    }
}

/// Sends each usable peer what it did not send us, in messages within the
/// per-message bounds.
async fn relay(node: &NodeHandle, gathered: Gathered) {
    let targets = node.peers().gossip_targets(None, usize::MAX);
    let timeout = node.config().gossip_timeout;
    let sends = targets.into_iter().filter_map(|addr| node.link(&addr).map(|l| (addr, l))).map(|(addr, link)| {
        let peer_id = node.peers().node_id_of(&addr);
        let mut votes = Vec::new();
        let mut evidence = Vec::new();
        for (v, e, from) in &gathered {
            if from.is_some() && *from == peer_id {
                continue;
            }
            votes.extend(v.iter().map(convert::vote_to_proto));
            evidence.extend(e.iter().map(convert::evidence_to_proto));
        }
        async move {
            let mut client = node.peer_client(&link);
            let (mut votes, mut evidence) = (votes.into_iter().peekable(), evidence.into_iter().peekable());
            while votes.peek().is_some() || evidence.peek().is_some() {
                let req = SendVotesRequest {
                    votes: votes.by_ref().take(MAX_VOTES_PER_MESSAGE).collect(),
                    evidence: evidence.by_ref().take(MAX_EVIDENCE).collect(),
                };
                Stats::add(&node.counters().vote_messages_sent, 1);
                match tokio::time::timeout(timeout, client.send_votes(req)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(status)) => {
                        tracing::debug!(peer = %addr, code = ?status.code(), msg = status.message(), "peer refused votes");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(peer = %addr, "vote relay timed out");
                        return;
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

    #[test]
    fn a_vote_is_checked_once_and_a_forgery_does_not_shadow_the_real_one() {
        let intake = VoteIntake::default();
        let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let params = crate::chain::finality::FinalityParams::new(vec![key.verifying_key().to_bytes()], 5, 1).unwrap();
        let real = Vote::sign(&key, &[0; 32], &params, 1, [9; 32]);
        // Same signature, another block: a different vote.
        let forged = Vote { hash: [8; 32], ..real.clone() };
        assert!(intake.first_time(&forged.encode()));
        assert!(intake.first_time(&real.encode()), "the forgery did not take the real vote's place");
        assert!(!intake.first_time(&real.encode()), "seen once, skipped after");
        // Bounded: the oldest are forgotten.
        for i in 0..SEEN as u64 {
            intake.first_time(&i.to_be_bytes());
        }
        assert!(intake.first_time(&real.encode()), "forgotten after {SEEN} newer ones");
        let guard = intake.seen.lock().unwrap();
        assert!(guard.0.len() <= SEEN && guard.1.len() <= SEEN);
    }
}
