//! `p2p.bootstrap.v1.Bootstrap`: request validation, authentication (the
//! rules of [`crate::auth`]) and rate limiting in front of a [`PeerStore`].

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock as _};
use p2p_proto::address::{self, MAX_ADDRESS_LEN};
use p2p_proto::bootstrap::bootstrap_server::Bootstrap;
use p2p_proto::bootstrap::{
    GetPeersRequest, GetPeersResponse, PeerEvent, PeerEventKind, RegisterRequest, RegisterResponse, RemoveRequest,
    RemoveResponse, WatchPeersRequest,
};
use tokio::sync::Semaphore;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::auth::{self, RegisterFields};
use crate::config::Config;
use crate::error::Error;
use crate::store::{PeerStore, RegisterCmd, RemoveCmd};

/// The gRPC service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BootstrapService {
    registry: Arc<dyn PeerStore>,
    config: Arc<Config>,
    limiter: Option<Arc<DefaultKeyedRateLimiter<IpAddr>>>,
    watchers: Arc<Semaphore>,
    shutdown: CancellationToken,
}

impl BootstrapService {
    pub fn new(registry: Arc<dyn PeerStore>, config: Arc<Config>, shutdown: CancellationToken) -> Self {
        let limiter =
            NonZeroU32::new(config.register_per_minute).map(|n| Arc::new(RateLimiter::keyed(Quota::per_minute(n))));
        let watchers = Arc::new(Semaphore::new(config.max_watchers));
        BootstrapService { registry, config, limiter, watchers, shutdown }
    }

    /// Forgets rate-limit state of clients that have been quiet for a while,
    /// so the limiter's memory tracks active clients, not every client ever.
    pub fn forget_idle_clients(&self) {
        if let Some(l) = &self.limiter {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    fn check_rate(&self, ip: Option<IpAddr>) -> Result<(), Error> {
        let (Some(limiter), Some(ip)) = (&self.limiter, ip) else { return Ok(()) };
        limiter.check_key(&ip).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            Error::ResourceExhausted(format!(
                "too many Register calls from {ip}: the limit is {} per minute; retry in {:.1}s",
                self.config.register_per_minute,
                wait.as_secs_f64()
            ))
        })
    }

    fn now_ms(&self) -> u64 {
        self.config.clock.now_unix_ms()
    }

    fn window_ms(&self) -> u64 {
        self.config.signature_window.as_millis() as u64
    }
}

fn canonical_address(field: &'static str, input: &str) -> Result<String, Error> {
    address::canonicalize(input).map_err(|e| Error::invalid(field, e))
}

fn client_ip<T>(req: &Request<T>) -> Option<IpAddr> {
    req.remote_addr().map(|a| a.ip())
}

fn ip_label(ip: Option<IpAddr>) -> String {
    ip.map(|ip| ip.to_string()).unwrap_or_else(|| "unknown".into())
}

type EventStream = Pin<Box<dyn Stream<Item = Result<PeerEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Bootstrap for BootstrapService {
    async fn register(&self, request: Request<RegisterRequest>) -> Result<Response<RegisterResponse>, Status> {
        let ip = client_ip(&request);
        self.check_rate(ip)?;
        let req = request.into_inner();
        let address = canonical_address("address", &req.address)?;
        let fields = RegisterFields {
            address: &address,
            public_key: &req.public_key,
            signature: &req.signature,
            ttl_seconds: req.ttl_seconds,
            timestamp_ms: req.timestamp_unix_ms,
        };
        let claim = auth::check_register(&fields, self.config.require_signatures, self.now_ms(), self.window_ms())?;
        let ttl = self.config.lease.grant(req.ttl_seconds);
        let out = self
            .registry
            .register(RegisterCmd { address: address.clone(), claim, ttl_secs: ttl, client_ip: ip_label(ip) })
            .await?;
        tracing::info!(peer = %address, created = out.created, ttl, node_id = %out.peer.node_id, "register");
        let verb = if out.created { "registered" } else { "refreshed" };
        Ok(Response::new(RegisterResponse {
            created: out.created,
            ttl_seconds: ttl,
            expires_at_unix_ms: out.peer.expires_at_unix_ms,
            message: format!("{verb} {address} for {ttl}s"),
            peer: Some(out.peer),
        }))
    }

    async fn get_peers(&self, request: Request<GetPeersRequest>) -> Result<Response<GetPeersResponse>, Status> {
        let req = request.into_inner();
        let limit = match req.limit {
            0 => self.config.default_peers_limit,
            n => n.min(self.config.max_peers_limit),
        } as usize;
        let exclude = match req.exclude_address.as_str() {
            "" => None,
            a => Some(canonical_address("exclude_address", a)?),
        };
        if req.random {
            let (peers, total) = self.registry.sample(limit, exclude).await?;
            return Ok(Response::new(GetPeersResponse { peers, next_page_token: String::new(), total }));
        }
        let after = match req.page_token.as_str() {
            "" => None,
            t => Some(decode_page_token(t)?),
        };
        let page = self.registry.page(after, limit, exclude).await?;
        Ok(Response::new(GetPeersResponse {
            peers: page.peers,
            next_page_token: page.next_after.map(|a| hex::encode(a.as_bytes())).unwrap_or_default(),
            total: page.total,
        }))
    }

    async fn remove(&self, request: Request<RemoveRequest>) -> Result<Response<RemoveResponse>, Status> {
        let ip = client_ip(&request);
        let req = request.into_inner();
        let address = canonical_address("address", &req.address)?;
        auth::check_remove(&req.signature, req.timestamp_unix_ms, self.now_ms(), self.window_ms())?;
        let removed = self
            .registry
            .remove(RemoveCmd {
                address: address.clone(),
                timestamp_ms: req.timestamp_unix_ms,
                signature: req.signature,
                client_ip: ip_label(ip),
            })
            .await?;
        tracing::info!(peer = %address, removed, "remove");
        let message = if removed { format!("removed {address}") } else { format!("{address} was not registered") };
        Ok(Response::new(RemoveResponse { removed, message }))
    }

    type WatchPeersStream = EventStream;

    async fn watch_peers(&self, _request: Request<WatchPeersRequest>) -> Result<Response<EventStream>, Status> {
        let permit = self.watchers.clone().try_acquire_owned().map_err(|_| {
            Error::ResourceExhausted(format!(
                "{} WatchPeers streams are open, the most this server allows; poll GetPeers instead",
                self.config.max_watchers
            ))
        })?;
        let clock = self.config.clock.clone();
        let events = BroadcastStream::new(self.registry.subscribe()).map(move |item| {
            // The permit lives as long as the stream.
            let _permit = &permit;
            Ok(match item {
                Ok(ev) => ev,
                Err(BroadcastStreamRecvError::Lagged(missed)) => PeerEvent {
                    kind: PeerEventKind::Lagged as i32,
                    peer: None,
                    missed,
                    at_unix_ms: clock.now_unix_ms(),
                },
            })
        });
        // End the stream on shutdown, or graceful shutdown would wait on it forever.
        let stream = events.take_until(self.shutdown.clone().cancelled_owned());
        Ok(Response::new(Box::pin(stream)))
    }
}

fn decode_page_token(token: &str) -> Result<String, Error> {
    let bad = || Error::invalid("page_token", "is not a token this server issued; pass next_page_token back unchanged");
    if token.len() > 2 * (MAX_ADDRESS_LEN + 2) {
        return Err(bad());
    }
    let bytes = hex::decode(token).map_err(|_| bad())?;
    String::from_utf8(bytes).map_err(|_| bad())
}
