//! Peer exchange (CometBFT's PEX over `Node.GetPeers`): discovery that does
//! not depend on the bootstrap, both asking and answering.

use p2p_proto::node::{GetPeersRequest, PeerInfo, PeerSource, PeerState};

use crate::convert;
use crate::node::NodeHandle;

/// Peers asked of one peer per exchange.
const ASK: u32 = 32;

impl NodeHandle {
    /// Asks one random active peer for the peers it knows.
    pub async fn exchange_peers(&self) {
        let Some(addr) = self.peers().random_active() else { return };
        let Some(link) = self.link(&addr) else { return };
        let mut client = self.peer_client(&link);
        match tokio::time::timeout(self.config().ping_timeout, client.get_peers(GetPeersRequest { limit: ASK })).await {
            Ok(Ok(resp)) => {
                // Relay only what the other side has itself reached; the ids
                // it names are hints our own handshakes must confirm.
                let learned = resp
                    .into_inner()
                    .peers
                    .iter()
                    .take(ASK as usize)
                    .filter(|p| p.state() == PeerState::Active)
                    .filter(|p| self.peers().learn(&p.address, PeerSource::PeerExchange, Some(&p.node_id)))
                    .count();
                if learned > 0 {
                    tracing::info!(peer = %addr, learned, "peer exchange");
                }
            }
            Ok(Err(status)) => tracing::debug!(peer = %addr, code = ?status.code(), "peer exchange refused"),
            Err(_) => tracing::debug!(peer = %addr, "peer exchange timed out"),
        }
    }

    /// The answer to a peer's GetPeers: a bounded random sample of known peers.
    pub fn peers_to_share(&self, requested: u32) -> Vec<PeerInfo> {
        let max = self.config().max_exchange_peers;
        let limit = match requested {
            0 => max,
            n => n.min(max),
        } as usize;
        self.peers().sample(limit).iter().map(convert::peer_info).collect()
    }
}
