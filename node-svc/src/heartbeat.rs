//! Heartbeats, both directions: the loop that pings peers (marking replies
//! and misses, then syncing from the peer with the most work) and the
//! handler for a peer's Ping. Every few rounds the loop also runs a peer
//! exchange and saves the known-good peers.

use p2p_proto::node::{PeerSource, PingRequest, PingResponse};

use crate::convert;
use crate::error::Error;
use crate::node::NodeHandle;
use crate::peers::PeerTip;
use p2p_proto::tls::PeerIdentity;

impl NodeHandle {
    /// Pings every peer that is due; marks replies and misses; then syncs
    /// from the peer with the most work if it has more than we do.
    pub async fn heartbeat_round(&self) {
        let now = self.now_ms();
        let Ok((tip, our_final)) = self.chain().read(|r| Ok((r.tip()?, r.finalized()?.height))).await else { return };
        let genesis = self.chain().genesis_hash();
        let req = PingRequest {
            sender: Some(self.sender()),
            height: tip.height,
            tip_hash: tip.hash.to_vec(),
            cumulative_work: p2p_proto::work::to_bytes(tip.work),
            genesis_hash: genesis.to_vec(),
        };
        let timeout = self.config().ping_timeout;
        let due = self.peers().due_for_ping(now);
        let pings =
            due.into_iter().filter_map(|addr| self.link(&addr).map(|l| (addr, l))).map(|(addr, link)| {
                let req = req.clone();
                async move {
                    let mut client = self.peer_client(&link);
                    match tokio::time::timeout(timeout, client.ping(req)).await {
                        Ok(Ok(resp)) => {
                            let r = resp.into_inner();
                            if r.genesis_hash != genesis {
                                // Another network (other consensus parameters) is a
                                // refusal, not misbehaviour: drop it, do not ban it.
                                tracing::warn!(
                                    peer = %addr, ours = %hex::encode(genesis), theirs = %hex::encode(&r.genesis_hash),
                                    "peer is on another network (different genesis, so different consensus parameters); dropped"
                                );
                                self.peers().forget(&addr);
                                return None;
                            }
                            // With TLS the id is the one the handshake proved,
                            // whatever the answer says.
                            let proven = link.proven();
                            let peer_tip = PeerTip {
                                node_id: proven.as_ref().map(|p| p.node_id.clone()).unwrap_or(r.node_id),
                                height: r.height,
                                tip: r.tip_hash,
                                work: p2p_proto::work::from_bytes(&r.cumulative_work),
                            };
                            self.peers().alive(&addr, peer_tip, proven.is_some(), self.now_ms());
                            return (r.finalized_height > our_final).then_some((r.finalized_height, addr));
                        }
                        Ok(Err(status)) if Error::is_wrong_network(&status) => {
                            tracing::warn!(peer = %addr, reason = %status.message(), "peer refused us: another network; dropped");
                            self.peers().forget(&addr);
                        }
                        Ok(Err(status)) => {
                            tracing::debug!(peer = %addr, code = ?status.code(), "ping failed");
                            self.peers().failed(&addr, self.now_ms());
                        }
                        Err(_) => {
                            tracing::debug!(peer = %addr, "ping timed out");
                            self.peers().failed(&addr, self.now_ms());
                        }
                    }
                    None
                }
            });
        let ahead = futures::future::join_all(pings).await.into_iter().flatten().max();
        // One peer per round, the furthest ahead: ask it for the votes and
        // check them (not every peer that is ahead, every round).
        if let Some((_, addr)) = ahead {
            crate::finality::catch_up(self, &addr).await;
        }
        // Relay peers follow the table; new ones are greeted.
        crate::gossip::refresh(self);
        // Sync from the peer with the most work, passing over claimed tips we
        // already store with more work than our main chain: fork choice
        // refused those (they fork below the final checkpoint), and
        // fetching them again every round brings nothing.
        for (addr, claimed) in self.peers().ahead(tip.work) {
            if !self.refused_tip(&claimed).await {
                self.sync().request(&addr);
                break;
            }
        }
    }

    /// A peer's Ping: check the network and answer with our tip. A node
    /// that proved its id in the TLS handshake and names its address is
    /// learned as a candidate at that address (our own dial there must prove
    /// the same id) and, if it claims more work, synced from. An inbound Ping
    /// never marks a peer alive or changes its score; only our own pings do.
    pub async fn handle_ping(&self, req: PingRequest, caller: Option<PeerIdentity>) -> Result<PingResponse, Error> {
        let genesis = self.chain().genesis_hash();
        if !req.genesis_hash.is_empty() && req.genesis_hash != genesis {
            return Err(Error::WrongNetwork { ours: hex::encode(genesis), theirs: hex::encode(&req.genesis_hash) });
        }
        let (tip, finalized) = self.chain().read(|r| Ok((r.tip()?, r.finalized()?))).await?;
        let pong = convert::pong(self.node_id(), &tip, genesis, self.now_ms(), finalized.height);
        let Some(caller) = caller else { return Ok(pong) };
        if self.peers().is_node_banned(&caller.node_id, self.now_ms()) {
            return Ok(pong);
        }
        if let Some(hint) = req.sender.as_ref().filter(|s| !s.address.is_empty()) {
            let address =
                p2p_proto::address::canonicalize(&hint.address).map_err(|e| Error::invalid("sender.address", e))?;
            self.peers().learn(&address, PeerSource::Inbound, Some(&caller.node_id));
        }
        if p2p_proto::work::from_bytes(&req.cumulative_work) > tip.work
            && !self.refused_tip(&req.tip_hash).await
            && let Some(address) = self.peers().address_of(&caller.node_id)
        {
            self.sync().request(&address);
        }
        Ok(pong)
    }

    /// True when syncing toward a peer's claimed tip (said to have more
    /// work than our main chain) brings nothing now: block relay is already
    /// bringing it (announced and being fetched, being checked, or just
    /// checked and being stored), or may still (it was first claimed less
    /// than [`crate::gossip::SYNC_GRACE`] ago), or it is stored here
    /// already, so fork choice refused it (its branch forks below the final
    /// checkpoint).
    async fn refused_tip(&self, tip: &[u8]) -> bool {
        let Ok(hash) = crate::chain::validate::hash_field("tip", tip) else { return false };
        if self.relay().expects(&hash) || !self.relay().sync_due(&hash) {
            return true;
        }
        self.chain().read(move |r| r.contains(&hash)).await.unwrap_or(false)
    }

    /// Writes the known-good peers to disk when the set changed.
    async fn save_peer_cache(&self, last: &mut Vec<String>) {
        let good = self.peers().good_peers();
        let mut addresses: Vec<String> = good.iter().map(|p| p.address.clone()).collect();
        addresses.sort();
        if addresses == *last {
            return;
        }
        let cache = self.peer_cache().clone();
        let (max, now) = (self.config().max_peers, self.now_ms());
        match tokio::task::spawn_blocking(move || cache.save(&good, now, max)).await {
            Ok(Ok(())) => *last = addresses,
            Ok(Err(e)) => tracing::warn!(error = %e, "saving the peer cache failed"),
            Err(e) => tracing::warn!(error = %e, "peer cache task failed"),
        }
    }
}

/// Heartbeat rounds between side-branch prunes.
const PRUNE_EVERY: u32 = 10;

/// Heartbeats until shutdown; every few rounds a peer exchange; the
/// known-good peers are saved whenever they change.
pub(crate) async fn run(node: NodeHandle) {
    let mut tick = tokio::time::interval(node.config().ping_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round: u32 = 0;
    let mut saved = Vec::new();
    loop {
        tokio::select! {
            _ = node.shutdown_token().cancelled() => {
                // A clean stop keeps the latest good peers for the next start.
                node.save_peer_cache(&mut saved).await;
                return;
            }
            _ = tick.tick() => {}
        }
        node.peers().expire_bans(node.now_ms());
        if let Err(e) = node.chain().retry_early().await {
            tracing::warn!(error = %e, "offering held early blocks failed");
        }
        node.heartbeat_round().await;
        round = round.wrapping_add(1);
        // Prune between imports: a sync may be building a branch that is
        // still below the tip.
        if round.is_multiple_of(PRUNE_EVERY)
            && !node.bulk_imports().active()
            && let Err(e) = node.chain().prune_side_branches(node.config().prune_side_depth).await
        {
            tracing::warn!(error = %e, "pruning side branches failed");
        }
        if round.is_multiple_of(node.config().peer_exchange_every.max(1)) {
            node.exchange_peers().await;
        }
        // Channels follow the table: forgotten and evicted peers' go.
        node.dialer().retain(|a| node.peers().contains(a));
        node.save_peer_cache(&mut saved).await;
    }
}
