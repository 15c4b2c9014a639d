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
    GetInfoRequest, GetInfoResponse, GetPeersRequest, GetPeersResponse, PeerEvent, PeerEventKind, RegisterRequest,
    RegisterResponse, RemoveRequest, RemoveResponse, WatchPeersRequest,
};
use p2p_proto::limits::{Slots, client_key};
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
    limits: Arc<Limits>,
    watchers: Arc<Slots>,
    /// This bootstrap's node id (what its TLS certificate proves).
    node_id: Arc<str>,
    shutdown: CancellationToken,
    metrics: crate::metrics::Metrics,
}

/// Per-client rate limits, one per kind of call. Keys are clients (an IPv4
/// address or an IPv6 prefix), so one host cannot multiply its quota by
/// using many addresses of its /64.
#[derive(Debug)]
struct Limits {
    register: Option<Limiter>,
    remove: Option<Limiter>,
    get_peers: Option<Limiter>,
}

#[derive(Debug)]
struct Limiter {
    call: &'static str,
    per_minute: u32,
    keyed: DefaultKeyedRateLimiter<IpAddr>,
}

impl Limiter {
    fn new(call: &'static str, per_minute: u32) -> Option<Self> {
        NonZeroU32::new(per_minute).map(|n| Limiter {
            call,
            per_minute,
            keyed: RateLimiter::keyed(Quota::per_minute(n)),
        })
    }

    fn check(&self, client: IpAddr) -> Result<(), Error> {
        self.keyed.check_key(&client).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            Error::ResourceExhausted(format!(
                "too many {} calls from {client}: the limit is {} per minute; retry in {:.1}s",
                self.call,
                self.per_minute,
                wait.as_secs_f64()
            ))
        })
    }

    fn forget_idle(&self) {
        self.keyed.retain_recent();
        self.keyed.shrink_to_fit();
    }
}

impl BootstrapService {
    pub fn new(registry: Arc<dyn PeerStore>, config: Arc<Config>, node_id: &str, shutdown: CancellationToken) -> Self {
        let limits = Arc::new(Limits {
            register: Limiter::new("Register", config.register_per_minute),
            remove: Limiter::new("Remove", config.remove_per_minute),
            get_peers: Limiter::new("GetPeers", config.get_peers_per_minute),
        });
        let watchers = Slots::new(
            "WatchPeers streams",
            config.max_watchers,
            config.max_watchers_per_client,
            config.conn.v6_prefix,
        );
        BootstrapService {
            registry,
            config,
            limits,
            watchers,
            node_id: node_id.into(),
            shutdown,
            metrics: crate::metrics::Metrics::default(),
        }
    }

    /// Uses the store writer's batch and commit histograms.
    pub fn with_commit_metrics(mut self, commits: crate::metrics::CommitMetrics) -> Self {
        self.metrics.commits = commits;
        self
    }

    /// This service's metrics (shared with whoever serves them).
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// Refreshes the gauges that are read rather than counted.
    pub async fn refresh_gauges(&self) {
        self.metrics.watchers.set(self.watchers.in_use() as i64);
        if let Ok(n) = self.registry.count().await {
            self.metrics.registrations.set(n as i64);
        }
    }

    /// Forgets rate-limit state of clients that have been quiet for a while,
    /// so the limiter's memory tracks active clients, not every client ever.
    pub fn forget_idle_clients(&self) {
        let Limits { register, remove, get_peers } = &*self.limits;
        for l in [register, remove, get_peers].into_iter().flatten() {
            l.forget_idle();
        }
    }

    fn check_rate(&self, limiter: &Option<Limiter>, ip: Option<IpAddr>) -> Result<(), Error> {
        let (Some(limiter), Some(ip)) = (limiter, ip) else { return Ok(()) };
        limiter.check(client_key(ip, self.config.conn.v6_prefix))
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
    p2p_proto::tls::ConnInfo::of(req).ip()
}

fn ip_label(ip: Option<IpAddr>) -> String {
    ip.map(|ip| ip.to_string()).unwrap_or_else(|| "unknown".into())
}

type EventStream = Pin<Box<dyn Stream<Item = Result<PeerEvent, Status>> + Send>>;

impl BootstrapService {
    async fn register_call(&self, request: Request<RegisterRequest>) -> Result<Response<RegisterResponse>, Status> {
        let ip = client_ip(&request);
        self.check_rate(&self.limits.register, ip)?;
        let req = request.into_inner();
        let address = canonical_address("address", &req.address)?;
        let fields = RegisterFields {
            address: &address,
            public_key: &req.public_key,
            signature: &req.signature,
            ttl_seconds: req.ttl_seconds,
            timestamp_ms: req.timestamp_unix_ms,
        };
        let claim = auth::check_register(
            &self.registry.registry_id(),
            &fields,
            self.config.require_signatures,
            self.now_ms(),
            self.window_ms(),
        )?;
        let ttl = self.config.lease.grant(req.ttl_seconds);
        let out = self
            .registry
            .register(RegisterCmd {
                address: address.clone(),
                claim,
                ttl_secs: ttl,
                client_ip: ip_label(ip),
                verify: self.config.verify_registrations,
            })
            .await?;
        tracing::info!(peer = %address, created = out.created, ttl, node_id = %out.peer.node_id, pending = out.peer.pending, "register");
        let verb = if out.created { "registered" } else { "refreshed" };
        let pending = if out.peer.pending {
            "; pending until this bootstrap has dialed it and it proved to be a node of this network"
        } else {
            ""
        };
        Ok(Response::new(RegisterResponse {
            created: out.created,
            ttl_seconds: ttl,
            expires_at_unix_ms: out.peer.expires_at_unix_ms,
            message: format!("{verb} {address} for {ttl}s{pending}"),
            peer: Some(out.peer),
        }))
    }

    async fn remove_call(&self, request: Request<RemoveRequest>) -> Result<Response<RemoveResponse>, Status> {
        let ip = client_ip(&request);
        self.check_rate(&self.limits.remove, ip)?;
        let req = request.into_inner();
        let address = canonical_address("address", &req.address)?;
        auth::check_remove(&req.signature, req.timestamp_unix_ms, self.now_ms(), self.window_ms())?;
        // The signature is checked here, against the key stored now, so the
        // single writer only compares keys; if the owner changed meanwhile
        // the writer refuses.
        let verified_key = if req.signature.is_empty() {
            None
        } else {
            let owner = self.registry.owner_key(&address).await?;
            match owner {
                Some(key) if !key.is_empty() => {
                    let registry = self.registry.registry_id();
                    auth::verify_remove(&registry, &key, &address, req.timestamp_unix_ms, &req.signature)?;
                    Some(key)
                }
                _ => None,
            }
        };
        let removed = self
            .registry
            .remove(RemoveCmd {
                address: address.clone(),
                timestamp_ms: req.timestamp_unix_ms,
                verified_key,
                client_ip: ip_label(ip),
            })
            .await?;
        tracing::info!(peer = %address, removed, "remove");
        let message = if removed { format!("removed {address}") } else { format!("{address} was not registered") };
        Ok(Response::new(RemoveResponse { removed, message }))
    }
}

#[tonic::async_trait]
impl Bootstrap for BootstrapService {
    async fn register(&self, request: Request<RegisterRequest>) -> Result<Response<RegisterResponse>, Status> {
        let result = self.register_call(request).await;
        crate::metrics::Metrics::count(&self.metrics.registers, &result);
        result
    }

    async fn remove(&self, request: Request<RemoveRequest>) -> Result<Response<RemoveResponse>, Status> {
        let result = self.remove_call(request).await;
        crate::metrics::Metrics::count(&self.metrics.removes, &result);
        result
    }
    async fn get_peers(&self, request: Request<GetPeersRequest>) -> Result<Response<GetPeersResponse>, Status> {
        self.check_rate(&self.limits.get_peers, client_ip(&request))?;
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
        let page = self.registry.page(after, limit, exclude, req.include_pending).await?;
        Ok(Response::new(GetPeersResponse {
            peers: page.peers,
            next_page_token: page.next_after.map(|a| hex::encode(a.as_bytes())).unwrap_or_default(),
            total: page.total,
        }))
    }

    async fn get_info(&self, _request: Request<GetInfoRequest>) -> Result<Response<GetInfoResponse>, Status> {
        Ok(Response::new(GetInfoResponse {
            registry_id: self.registry.registry_id().to_vec(),
            server_time_unix_ms: self.now_ms(),
            signature_window_ms: self.window_ms(),
            require_signatures: self.config.require_signatures,
            version: env!("CARGO_PKG_VERSION").into(),
            node_id: self.node_id.to_string(),
            verify_registrations: self.config.verify_registrations,
            network: self.config.network.clone(),
        }))
    }

    type WatchPeersStream = EventStream;

    async fn watch_peers(&self, request: Request<WatchPeersRequest>) -> Result<Response<EventStream>, Status> {
        let permit = self
            .watchers
            .try_acquire(client_ip(&request))
            .map_err(|refused| Error::ResourceExhausted(format!("{refused}; poll GetPeers instead")))?;
        self.metrics.watchers.set(self.watchers.in_use() as i64);
        let clock = self.config.clock.clone();
        let lagged = self.metrics.lagged_events.clone();
        let events = BroadcastStream::new(self.registry.subscribe()).map(move |item| {
            // The permit lives as long as the stream.
            let _permit = &permit;
            Ok(match item {
                Ok(ev) => ev,
                Err(BroadcastStreamRecvError::Lagged(missed)) => {
                    lagged.inc_by(missed);
                    PeerEvent {
                        kind: PeerEventKind::Lagged as i32,
                        peer: None,
                        missed,
                        at_unix_ms: clock.now_unix_ms(),
                    }
                }
            })
        });
        // End the stream on shutdown, or graceful shutdown would wait on it forever.
        let stream = events.take_until(self.shutdown.clone().cancelled_owned());
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Parses a GetPeers page token (hex of the address to continue after).
pub fn decode_page_token(token: &str) -> Result<String, Error> {
    let bad = || Error::invalid("page_token", "is not a token this server issued; pass next_page_token back unchanged");
    if token.len() > 2 * (MAX_ADDRESS_LEN + 2) {
        return Err(bad());
    }
    let bytes = hex::decode(token).map_err(|_| bad())?;
    String::from_utf8(bytes).map_err(|_| bad())
}
