//! Finality votes over real nodes (in-process, TLS): four validators, a
//! checkpoint every 5 blocks, voted once 1 block deep. Partitions are made
//! by starting each side knowing only its own nodes (no bootstrap) and
//! healed by teaching one side the other's address.

use std::ops::Range;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use node_svc::chain::finality::{FinalityParams, Vote};
use node_svc::chain::{Finalized, NetworkParams};
use node_svc::testkit::{TestNode, converged, eventually, node_config, test_network};
use p2p_proto::node::{BlockOutcome, GetFinalityRequest, PeerSource, SendBlockRequest, SendVotesRequest};

const BITS: u32 = 8;
const WAIT: Duration = Duration::from_secs(60);
const INTERVAL: u64 = 5;
const DEPTH: u64 = 1;

fn keys(n: u8) -> Vec<SigningKey> {
    (1..=n).map(|i| SigningKey::from_bytes(&[i; 32])).collect()
}

fn network(keys: &[SigningKey]) -> NetworkParams {
    let validators = keys.iter().map(|k| k.verifying_key().to_bytes()).collect();
    NetworkParams { finality: FinalityParams::new(validators, INTERVAL, DEPTH).unwrap(), ..test_network(BITS) }
}

/// One node per key (its identity key, so it is a validator), started in
/// index order, in groups of the given sizes; each knows only the earlier
/// nodes of its own group.
async fn start(keys: &[SigningKey], sizes: &[usize]) -> (Vec<TestNode>, Vec<tempfile::TempDir>) {
    let groups: Vec<Range<usize>> = sizes
        .iter()
        .scan(0, |at, n| {
            *at += n;
            Some(*at - n..*at)
        })
        .collect();
    assert_eq!(groups.last().map(|g| g.end), Some(keys.len()), "the groups cover every key");
    let params = network(keys);
    let mut dirs = Vec::new();
    for k in keys {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("node.key"), format!("{}\n", hex::encode(k.to_bytes()))).unwrap();
        dirs.push(dir);
    }
    let mut nodes: Vec<TestNode> = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let group = groups.iter().find(|g| g.contains(&i)).expect("every node is in a group");
        let peers: Vec<String> = group.clone().filter(|&j| j < i).map(|j| nodes[j].endpoint()).collect();
        let node = TestNode::start(|addr| {
            let mut c = node_config(dir.path(), addr, None, BITS);
            c.network = params.clone();
            c.peers = peers;
            c
        })
        .await;
        assert!(node.node().is_validator(), "node {i}'s identity key is in the set");
        nodes.push(node);
    }
    for g in &groups {
        for i in g.clone() {
            let n = &nodes[i];
            eventually(WAIT, "each node sees its group as active", || async {
                (n.node().peers().active_count() >= g.len() - 1).then_some(())
            })
            .await;
        }
    }
    (nodes, dirs)
}

async fn finalized(n: &TestNode) -> Finalized {
    n.node().chain().finalized().await.unwrap()
}

async fn mine(n: &TestNode, blocks: u64, tag: &str) {
    for i in 0..blocks {
        n.node().mine(format!("{tag} {i}").into_bytes()).await.unwrap_or_else(|e| panic!("mining {tag} {i}: {e}"));
    }
}

/// Waits until every node in `nodes` has the final checkpoint at `height`; returns it.
async fn all_final_at(nodes: &[&TestNode], height: u64) -> Finalized {
    let mut seen = Vec::new();
    for n in nodes {
        let f = eventually(WAIT, &format!("finalized height {height}"), || async {
            let f = finalized(n).await;
            (f.height >= height).then_some(f)
        })
        .await;
        assert_eq!(f.height, height, "finality went past {height}");
        seen.push(f);
    }
    assert!(seen.iter().all(|f| *f == seen[0]), "every node has the same final block: {seen:?}");
    seen[0]
}

async fn stop(nodes: Vec<TestNode>) {
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test]
async fn four_validators_finalize_and_a_node_joining_later_checks_the_votes_and_agrees() {
    let ks = keys(4);
    let (mut nodes, _dirs) = start(&ks, &[4]).await;
    // Tip 11: checkpoint 2 (height 10) is 1 deep.
    mine(&nodes[0], 11, "block").await;
    converged(&nodes.iter().collect::<Vec<_>>(), 11, WAIT).await;
    let f = all_final_at(&nodes.iter().collect::<Vec<_>>(), 10).await;
    let tip = nodes[0].tip().await;
    let on_main = tip.hash;
    let main_at_10 = nodes[0].node().chain().read(|r| r.main_from(10, 1)).await.unwrap();
    assert_eq!(main_at_10[0].hash, f.hash, "the final block is the main chain's block at height 10");
    // GetStatus says it, for grpcurl and p2pctl.
    let status = nodes[1].client().await.get_status(p2p_proto::node::GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!((status.finalized_height, status.finalized_hash.as_slice()), (10, f.hash.as_slice()));
    assert_eq!((status.validator_count, status.validator), (4, true));

    // A node that is no validator joins later, from one peer: it syncs the
    // chain, downloads the votes (GetFinality) and checks them itself.
    let dir = tempfile::tempdir().unwrap();
    let params = network(&ks);
    let first = nodes[0].endpoint();
    let late = TestNode::start(|addr| {
        let mut c = node_config(dir.path(), addr, None, BITS);
        c.network = params.clone();
        c.peers = vec![first];
        c
    })
    .await;
    assert!(!late.node().is_validator());
    let late_final = eventually(WAIT, "the late node reaches the same final checkpoint", || async {
        let f = finalized(&late).await;
        (f.height == 10).then_some(f)
    })
    .await;
    assert_eq!(late_final, f);
    assert_eq!(late.tip().await.hash, on_main);
    let votes = late.node().chain().read(|r| r.votes(2, 2, 100)).await.unwrap();
    assert!(votes.len() >= 3, "it holds the quorum's votes: {}", votes.len());
    nodes.push(late);
    stop(nodes).await;
}

#[tokio::test]
async fn a_two_two_partition_finalizes_nothing_and_converges_and_finalizes_after_healing() {
    let ks = keys(4);
    let (nodes, _dirs) = start(&ks, &[2, 2]).await;
    let (a, b) = ((&nodes[0], &nodes[1]), (&nodes[2], &nodes[3]));
    mine(a.0, 11, "side a").await;
    mine(b.0, 13, "side b").await;
    converged(&[a.0, a.1], 11, WAIT).await;
    converged(&[b.0, b.1], 13, WAIT).await;
    // Both validators of each side have voted for checkpoint 2 and each node
    // holds both votes: two of four is no quorum.
    for (n, side) in [(a.0, "a"), (a.1, "a"), (b.0, "b"), (b.1, "b")] {
        eventually(WAIT, &format!("side {side} holds both of its votes for checkpoint 2"), || async {
            (n.node().chain().read(|r| r.votes(2, 2, 10)).await.unwrap().len() == 2).then_some(())
        })
        .await;
        assert_eq!(finalized(n).await.height, 0, "nothing final on side {side}");
    }
    // Heal: side a hears of side b.
    a.0.node().peers().learn(&b.0.endpoint(), PeerSource::Configured, None);
    a.1.node().peers().learn(&b.1.endpoint(), PeerSource::Configured, None);
    let all: Vec<&TestNode> = nodes.iter().collect();
    let healed = converged(&all, 13, WAIT).await;
    assert_eq!(healed.hash, b.0.tip().await.hash, "everyone on the heavier side's chain");
    // Finality resumes: every validator can vote for checkpoint 3.
    mine(b.0, 5, "after healing").await;
    converged(&all, 18, WAIT).await;
    let f = all_final_at(&all, 15).await;
    let main = b.0.node().chain().read(|r| r.main_from(15, 1)).await.unwrap();
    assert_eq!(main[0].hash, f.hash);
    stop(nodes).await;
}

#[tokio::test]
async fn after_a_three_one_partition_the_final_checkpoint_holds_against_the_heavier_minority_branch() {
    let ks = keys(4);
    let (nodes, _dirs) = start(&ks, &[3, 1]).await;
    let majority: Vec<&TestNode> = nodes[..3].iter().collect();
    let lone = &nodes[3];
    mine(&nodes[0], 6, "majority").await;
    let f = all_final_at(&majority, 5).await;
    // The lone validator mines a longer, heavier chain by itself.
    mine(lone, 12, "minority").await;
    let heavy = lone.tip().await;
    let light = nodes[0].tip().await;
    assert!(heavy.work > light.work, "the minority branch has more work");
    assert_eq!(finalized(lone).await.height, 0, "one of four finalizes nothing");
    // The heavier branch offered to the majority block by block (SendBlock,
    // as gossip would): stored, refused as the main chain.
    let branch = lone.node().chain().read(|r| r.main_from(1, 100)).await.unwrap();
    assert_eq!(branch.last().unwrap().hash, heavy.hash);
    let mut client = nodes[1].client().await;
    let mut outcomes = Vec::new();
    for b in &branch {
        let req = SendBlockRequest { block: Some(node_svc::convert::block_to_proto(b)), sender: None };
        outcomes.push(client.send_block(req).await.unwrap().into_inner().outcome());
    }
    assert_eq!(outcomes.last(), Some(&BlockOutcome::BelowFinal), "{outcomes:?}");
    assert!(!outcomes.contains(&BlockOutcome::Reorg), "{outcomes:?}");
    // Heal: the lone node fetches the final branch and moves onto it.
    lone.node().peers().learn(&nodes[0].endpoint(), PeerSource::Configured, None);
    eventually(WAIT, "the lone node adopts the final checkpoint and the majority's chain", || async {
        (finalized(lone).await == f && lone.tip().await.hash == nodes[0].tip().await.hash).then_some(())
    })
    .await;
    for n in &majority {
        assert_eq!(finalized(n).await, f, "the final checkpoint holds");
        assert_eq!(n.tip().await.hash, light.hash, "the heavier branch is not adopted");
    }
    // And the chain goes on from the final checkpoint.
    mine(&nodes[0], 5, "after").await;
    converged(&nodes.iter().collect::<Vec<_>>(), 11, WAIT).await;
    stop(nodes).await;
}

#[tokio::test]
async fn an_equivocation_is_detected_and_its_evidence_reaches_every_node_and_forged_votes_are_refused() {
    let ks = keys(4);
    let (nodes, _dirs) = start(&ks, &[4]).await;
    let genesis = nodes[0].node().chain().genesis_hash();
    let params = network(&ks).finality;
    // Validator 4 signs two different blocks for checkpoint 7, and tells
    // each to a different node.
    let one = Vote::sign(&ks[3], &genesis, &params, 7, [1; 32]);
    let two = Vote::sign(&ks[3], &genesis, &params, 7, [2; 32]);
    for (node, vote) in [(&nodes[0], &one), (&nodes[1], &two)] {
        let resp = node
            .client()
            .await
            .send_votes(SendVotesRequest { votes: vec![node_svc::convert::vote_to_proto(vote)], evidence: vec![] })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.refused, 0, "{resp:?}");
    }
    for n in &nodes {
        eventually(WAIT, "every node holds the evidence", || async {
            let e = n.node().chain().read(|r| r.evidence(10)).await.unwrap();
            (e.len() == 1 && e[0].first.validator == ks[3].verifying_key().to_bytes()).then_some(())
        })
        .await;
    }
    let served = nodes[2].client().await.get_finality(GetFinalityRequest {}).await.unwrap().into_inner();
    assert_eq!(served.evidence.len(), 1, "GetFinality serves the evidence");

    // A vote whose signature does not verify, or from a key outside the set, counts for nothing.
    let mut forged = Vote::sign(&ks[0], &genesis, &params, 1, [3; 32]);
    forged.signature[5] ^= 0x40;
    let stranger = Vote::sign(&SigningKey::from_bytes(&[200; 32]), &genesis, &params, 1, [3; 32]);
    let resp = nodes[0]
        .client()
        .await
        .send_votes(SendVotesRequest {
            votes: vec![node_svc::convert::vote_to_proto(&forged), node_svc::convert::vote_to_proto(&stranger)],
            evidence: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((resp.accepted, resp.refused), (0, 2), "{resp:?}");
    assert!(resp.first_error.contains("vote-signature"), "{resp:?}");
    // A message beyond the bound is refused before anything is checked.
    let too_many = vec![node_svc::convert::vote_to_proto(&one); node_svc::finality::MAX_VOTES_PER_MESSAGE + 1];
    let err =
        nodes[0].client().await.send_votes(SendVotesRequest { votes: too_many, evidence: vec![] }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    // The three honest validators still finalize.
    mine(&nodes[0], 6, "block").await;
    all_final_at(&nodes.iter().collect::<Vec<_>>(), 5).await;
    stop(nodes).await;
}

#[tokio::test]
async fn a_heavier_tip_refused_below_the_final_checkpoint_is_not_fetched_again_every_heartbeat() {
    use std::sync::atomic::Ordering;
    // One validator: its own vote is a quorum.
    let ks = keys(1);
    let (nodes, _dirs) = start(&ks, &[1]).await;
    let a = &nodes[0];
    mine(a, 6, "main").await;
    all_final_at(&[a], 5).await;
    // A heavier branch from genesis, offered by SendBlock: stored and refused.
    let params = network(&ks);
    let heavy = node_svc::chain::testing::chain_of(&params, 12, p2p_proto::unix_ms_now() - 3_600_000);
    let mut client = a.client().await;
    let mut last = None;
    for b in &heavy[1..] {
        let req = SendBlockRequest { block: Some(node_svc::convert::block_to_proto(b)), sender: None };
        last = Some(client.send_block(req).await.unwrap().into_inner().outcome());
    }
    assert_eq!(last, Some(BlockOutcome::BelowFinal));
    let genesis = a.node().chain().genesis_hash().to_vec();
    // A peer that keeps claiming that refused tip, with more work than ours.
    let refused = crate::hostile::fake_claiming(genesis.clone(), heavy[12].hash.to_vec()).await;
    // And, for comparison, one claiming a tip we do not have.
    let unknown = crate::hostile::fake_claiming(genesis, vec![7; 32]).await;
    for f in [&refused, &unknown] {
        a.node().peers().learn(&f.addr, PeerSource::Configured, Some(&f.node_id));
    }
    eventually(WAIT, "the peer claiming an unknown tip is synced from", || async {
        (unknown.calls.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    let pings = refused.pings.load(Ordering::SeqCst);
    eventually(WAIT, "three more heartbeats answered by the peer claiming the refused tip", || async {
        assert_eq!(refused.calls.load(Ordering::SeqCst), 0, "no GetBlocks toward a tip we hold and refused");
        (refused.pings.load(Ordering::SeqCst) >= pings + 3).then_some(())
    })
    .await;
    assert_eq!(refused.calls.load(Ordering::SeqCst), 0, "no GetBlocks toward a tip we hold and refused");
    assert_eq!(finalized(a).await.height, 5);
    stop(nodes).await;
}
