//! A registration as every store keeps it (protobuf-encoded), and how it
//! becomes the API's [`Peer`].

use p2p_proto::bootstrap::Peer;
use p2p_proto::signing;
use prost::Message;

use crate::auth::Owner;

/// A registration as stored.
#[derive(Clone, PartialEq, Message)]
pub struct PeerRecord {
    /// 32-byte ed25519 key the registration is bound to; empty when unsigned.
    #[prost(bytes = "vec", tag = "1")]
    pub public_key: Vec<u8>,
    #[prost(uint64, tag = "2")]
    pub registered_at_ms: u64,
    #[prost(uint64, tag = "3")]
    pub last_seen_ms: u64,
    #[prost(uint64, tag = "4")]
    pub expires_at_ms: u64,
    /// Position in the redb store's `slots` table (unused on etcd).
    #[prost(uint64, tag = "5")]
    pub slot: u64,
    /// Newest signed timestamp accepted for this address: anything not newer
    /// is a replay.
    #[prost(uint64, tag = "6")]
    pub last_signed_ts_ms: u64,
    /// IP the registration came from; an unsigned registration can only be
    /// removed from there.
    #[prost(string, tag = "7")]
    pub registrant_ip: String,
    /// Not yet verified: not listed, not announced. (Records written before
    /// verification existed decode as listed.)
    #[prost(bool, tag = "8")]
    pub pending: bool,
    /// Verification attempts that failed so far (for the backoff).
    #[prost(uint32, tag = "9")]
    pub verify_attempts: u32,
    /// When the next verification is due (its key in `pending`).
    #[prost(uint64, tag = "10")]
    pub verify_next_ms: u64,
    /// For an unsigned registration, the node id its address proved.
    #[prost(string, tag = "11")]
    pub proven_node_id: String,
}

impl PeerRecord {
    pub fn to_peer(&self, address: &str) -> Peer {
        Peer {
            address: address.to_string(),
            node_id: if self.public_key.is_empty() {
                self.proven_node_id.clone()
            } else {
                signing::node_id(&self.public_key)
            },
            public_key: self.public_key.clone(),
            registered_at_unix_ms: self.registered_at_ms,
            last_seen_unix_ms: self.last_seen_ms,
            expires_at_unix_ms: self.expires_at_ms,
            pending: self.pending,
            verify_failures: self.verify_attempts,
        }
    }

    /// What the access rules need to know about the owner.
    pub fn owner(&self) -> Owner<'_> {
        Owner {
            public_key: &self.public_key,
            last_signed_ts_ms: self.last_signed_ts_ms,
            registrant_ip: &self.registrant_ip,
            pending: self.pending,
        }
    }
}
