//! Where registrations live: the [`PeerStore`] trait the service talks to,
//! and its implementations ([`redb`]: one machine, group-committed;
//! [`etcd`]: any number of servers on one etcd cluster). Every
//! store applies the [`crate::auth`] rules inside its write, and answers a
//! write only once it is durable.

pub mod etcd;
pub mod record;
pub mod redb;

use p2p_proto::bootstrap::{Peer, PeerEvent, PeerEventKind};
use tokio::sync::broadcast;

use crate::auth::SignedClaim;
use crate::error::Error;

/// A registry event as every store announces it.
pub(crate) fn event(kind: PeerEventKind, peer: Peer, now_ms: u64) -> PeerEvent {
    PeerEvent { kind: kind as i32, peer: Some(peer), missed: 0, at_unix_ms: now_ms }
}

/// A Register whose fields and signature the service already checked.
#[derive(Debug, Clone)]
pub struct RegisterCmd {
    /// Canonical address.
    pub address: String,
    /// The verified key ownership claim, if the request was signed.
    pub claim: Option<SignedClaim>,
    pub ttl_secs: u32,
    pub client_ip: String,
    /// List it only once its address is verified (false: list at once).
    pub verify: bool,
}

/// What a Register did.
#[derive(Debug, Clone)]
pub struct Registered {
    pub created: bool,
    pub peer: Peer,
}

/// A Remove whose signature (if any) the service already verified.
#[derive(Debug, Clone)]
pub struct RemoveCmd {
    pub address: String,
    pub timestamp_ms: u64,
    /// The stored key the request's signature verified against (None: unsigned
    /// or no key was stored); the writer checks it is still the owner's
    /// ([`crate::auth::may_remove`]).
    pub verified_key: Option<Vec<u8>>,
    pub client_ip: String,
}

/// A registration awaiting verification, as the verifier sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCheck {
    pub address: String,
    /// The key the registration is bound to (empty: unsigned); the outcome
    /// applies only if it is still the owner when the outcome is recorded.
    pub public_key: Vec<u8>,
    /// Failed attempts so far.
    pub attempts: u32,
}

/// What the verifier found at a pending registration's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// A node of this network answered, proving `node_id` (the key's id for
    /// a key-bound registration): list it.
    Passed { node_id: String },
    /// Nothing answered as required: try again at `retry_at_ms`.
    Failed { retry_at_ms: u64 },
}

/// One page of peers.
#[derive(Debug, Clone)]
pub struct Page {
    pub peers: Vec<Peer>,
    /// Address to continue after, when there may be more.
    pub next_after: Option<String>,
    pub total: u64,
}

/// The registry's storage, as the gRPC service sees it.
#[tonic::async_trait]
pub trait PeerStore: Send + Sync + std::fmt::Debug + 'static {
    /// Creates or refreshes a registration; returns once it is durable.
    async fn register(&self, cmd: RegisterCmd) -> Result<Registered, Error>;

    /// Removes a registration; `Ok(false)` when there was none to remove.
    async fn remove(&self, cmd: RemoveCmd) -> Result<bool, Error>;

    /// True while the store can serve; false from a storage failure until
    /// it has recovered (the server reports NOT_SERVING meanwhile).
    fn serving(&self) -> tokio::sync::watch::Receiver<bool>;

    /// This registry's id (fixed at creation), which signed payloads name.
    fn registry_id(&self) -> p2p_proto::signing::RegistryId;

    /// The key a live registration of `address` is bound to (empty when
    /// unsigned); None when there is none.
    async fn owner_key(&self, address: &str) -> Result<Option<Vec<u8>>, Error>;

    /// Deletes up to `max` expired registrations; returns how many.
    async fn purge_expired(&self, max: usize) -> Result<usize, Error>;

    /// Listed registrations, including expired ones not yet purged.
    async fn count(&self) -> Result<u64, Error>;

    /// Up to `limit` live listed peers (and pending ones too with
    /// `include_pending`) with addresses after `after`, in address order,
    /// scanning a bounded number of entries.
    async fn page(
        &self,
        after: Option<String>,
        limit: usize,
        exclude: Option<String>,
        include_pending: bool,
    ) -> Result<Page, Error>;

    /// A uniform random sample of up to `limit` live peers (and the total).
    async fn sample(&self, limit: usize, exclude: Option<String>) -> Result<(Vec<Peer>, u64), Error>;

    /// Up to `max` live pending registrations whose verification is due,
    /// the longest-waiting first.
    async fn due_verifications(&self, max: usize) -> Result<Vec<PendingCheck>, Error>;

    /// Records what the verifier found; ignored when the registration is
    /// gone, listed already or bound to another key by now.
    async fn record_verification(&self, check: PendingCheck, outcome: Verification) -> Result<(), Error>;

    /// Changes committed from now on.
    fn subscribe(&self) -> broadcast::Receiver<PeerEvent>;

    /// Applies what is queued, then closes the storage.
    async fn close(&self);
}
