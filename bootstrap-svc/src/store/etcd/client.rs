//! A small etcd v3 client over our own tonic channels: one lazily connected
//! channel per endpoint, every call under a deadline, and a call that fails
//! for a reason another member might not have (refused, no leader, timed
//! out) tried on the next endpoint.
//!
//! Retrying a write is safe here because every write the store makes is a
//! compare-and-swap on the revisions it read: if an attempt that looked
//! failed was in fact applied, the retry's comparison fails and the store
//! reads its own write back (see `super::EtcdStore::update`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use p2p_proto::etcd::kv_client::KvClient;
use p2p_proto::etcd::lease_client::LeaseClient;
use p2p_proto::etcd::watch_client::WatchClient;
use p2p_proto::etcd::{
    CompactionRequest, LeaseGrantRequest, RangeRequest, RangeResponse, TxnRequest, TxnResponse, WatchRequest,
    WatchResponse,
};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::error::Error;

/// Largest response accepted from etcd (a page of records, a watch batch).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// A connection to an etcd cluster through any of its members.
#[derive(Debug)]
pub struct EtcdClient {
    endpoints: Vec<(String, Channel)>,
    /// The member that answered last; calls start there.
    current: AtomicUsize,
    timeout: Duration,
}

impl EtcdClient {
    /// Channels to `endpoints` (`host:port` or `http://host:port`),
    /// connected on first use; `timeout` bounds each call on one member.
    pub fn new(endpoints: &[String], timeout: Duration) -> Result<Self, Error> {
        if endpoints.is_empty() {
            return Err(Error::invalid("etcd endpoints", "at least one is required"));
        }
        let mut out = Vec::with_capacity(endpoints.len());
        for ep in endpoints {
            let uri = if ep.contains("://") { ep.clone() } else { format!("http://{ep}") };
            let channel = Endpoint::from_shared(uri.clone())
                .map_err(|e| Error::invalid("etcd endpoints", format!("{ep:?}: {e}")))?
                .connect_timeout(timeout.min(Duration::from_secs(1)))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(true)
                .connect_lazy();
            out.push((ep.clone(), channel));
        }
        Ok(EtcdClient { endpoints: out, current: AtomicUsize::new(0), timeout })
    }

    /// The endpoints as given.
    pub fn endpoints(&self) -> Vec<String> {
        self.endpoints.iter().map(|(e, _)| e.clone()).collect()
    }

    /// A channel to the member to try first, and its index.
    pub(super) fn channel(&self, offset: usize) -> (usize, Channel) {
        let i = (self.current.load(Ordering::Relaxed) + offset) % self.endpoints.len();
        (i, self.endpoints[i].1.clone())
    }

    /// Moves on from a member that failed.
    pub(super) fn failed(&self, index: usize) {
        let _ = self.current.compare_exchange(
            index,
            (index + 1) % self.endpoints.len(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Runs `call` on one member after another until one answers or every
    /// one has failed for a reason another might not share.
    async fn each_member<T, F, Fut>(&self, what: &'static str, mut call: F) -> Result<T, Status>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut last = None;
        for offset in 0..self.endpoints.len() {
            let (i, channel) = self.channel(offset);
            let outcome = match tokio::time::timeout(self.timeout, call(channel)).await {
                Ok(r) => r,
                Err(_) => Err(Status::deadline_exceeded(format!("no answer within {:?}", self.timeout))),
            };
            match outcome {
                Ok(v) => {
                    self.current.store(i, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(s) if another_member_may_answer(&s) => {
                    tracing::debug!(endpoint = %self.endpoints[i].0, op = what, error = %s, "etcd member failed; trying the next");
                    self.failed(i);
                    last = Some(s);
                }
                Err(s) => return Err(s),
            }
        }
        Err(last.unwrap_or_else(|| Status::unavailable("no etcd endpoint")))
    }

    pub async fn range(&self, req: RangeRequest) -> Result<RangeResponse, Error> {
        self.range_status(req).await.map_err(|s| self.error("read", s))
    }

    /// [`Self::range`] with etcd's own status (to tell a compacted revision).
    pub(super) async fn range_status(&self, req: RangeRequest) -> Result<RangeResponse, Status> {
        self.each_member("range", |ch| {
            let req = req.clone();
            async move { Ok(kv(ch).range(req).await?.into_inner()) }
        })
        .await
    }

    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, Status> {
        self.each_member("txn", |ch| {
            let req = req.clone();
            async move { Ok(kv(ch).txn(req).await?.into_inner()) }
        })
        .await
    }

    /// A lease of `ttl_secs`; its id.
    pub async fn lease_grant(&self, ttl_secs: i64) -> Result<i64, Error> {
        let resp = self
            .each_member("lease_grant", |ch| async move {
                Ok(LeaseClient::new(ch).lease_grant(LeaseGrantRequest { ttl: ttl_secs, id: 0 }).await?.into_inner())
            })
            .await
            .map_err(|s| self.error("lease grant", s))?;
        if !resp.error.is_empty() {
            return Err(Error::StoreDown(format!("etcd refused a lease: {}", resp.error)));
        }
        Ok(resp.id)
    }

    /// Compacts the history up to `revision` (tests and operators).
    pub async fn compact(&self, revision: i64) -> Result<(), Error> {
        self.each_member("compact", |ch| async move {
            kv(ch).compact(CompactionRequest { revision, physical: true }).await?;
            Ok(())
        })
        .await
        .map_err(|s| self.error("compact", s))
    }

    /// Opens a watch stream on the member at `offset` from the current one,
    /// requiring it to have a leader (a member cut off from the rest ends
    /// the stream instead of going quiet).
    pub(super) async fn watch(
        &self,
        offset: usize,
        requests: tokio::sync::mpsc::Receiver<WatchRequest>,
    ) -> Result<(usize, tonic::Streaming<WatchResponse>), Status> {
        let (i, channel) = self.channel(offset);
        let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(requests));
        req.metadata_mut().insert("hasleader", tonic::metadata::MetadataValue::from_static("true"));
        let mut client = WatchClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES);
        match tokio::time::timeout(self.timeout, client.watch(req)).await {
            Ok(Ok(resp)) => Ok((i, resp.into_inner())),
            Ok(Err(s)) => {
                self.failed(i);
                Err(s)
            }
            Err(_) => {
                self.failed(i);
                Err(Status::deadline_exceeded("opening the watch timed out"))
            }
        }
    }

    /// What a failed etcd call means for a request: the cluster is out of
    /// reach or without quorum (UNAVAILABLE, nothing was applied as far as
    /// the caller will ever be told), or something else went wrong.
    pub fn error(&self, what: &str, s: Status) -> Error {
        if another_member_may_answer(&s) {
            Error::StoreDown(format!(
                "the registry's etcd cluster ({}) did not answer the {what} ({:?}: {}); retry shortly",
                self.endpoints().join(","),
                s.code(),
                s.message()
            ))
        } else {
            Error::storage_msg(format!("etcd {what} failed: {:?}: {}", s.code(), s.message()))
        }
    }
}

fn kv(ch: Channel) -> KvClient<Channel> {
    KvClient::new(ch).max_decoding_message_size(MAX_RESPONSE_BYTES)
}

/// Failures of one member (down, cut off, without a leader, overloaded)
/// rather than of the request.
pub(super) fn another_member_may_answer(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled | Code::Aborted | Code::Internal
    ) || s.message().contains("no leader")
}

/// etcd answers a write naming a lease that has just expired with this.
pub(super) fn lease_not_found(s: &Status) -> bool {
    s.code() == Code::NotFound && s.message().contains("lease not found")
}

/// etcd answers a read or watch at a compacted revision with this.
pub(super) fn compacted(s: &Status) -> bool {
    s.code() == Code::OutOfRange || s.message().contains("compacted")
}
