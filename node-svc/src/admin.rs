//! `p2p.admin.v1.Admin`: the operator's API (mining, bans, configured
//! peers, the connection list), served on its own listener and never on
//! the public P2P port. Bound to loopback it is open to local callers, as
//! the P2P port is open to everyone; bound anywhere else every call needs
//! the token: `authorization: Bearer <token>`, the token being the
//! configured one or the cookie file [`COOKIE_FILE`] written in the data
//! dir at start (bitcoind's scheme: whoever can read the data dir may
//! administer the node).

use std::path::Path;
use std::sync::Arc;

use p2p_proto::admin::admin_server::Admin;
use p2p_proto::admin::{
    AddPeerRequest, AddPeerResponse, BanPeerRequest, BanPeerResponse, Connection, ListConnectionsRequest,
    ListConnectionsResponse, MineBlockRequest, MineBlockResponse, MiningResponse, RemovePeerRequest,
    RemovePeerResponse, StartMiningRequest, StopMiningRequest, UnbanPeerRequest, UnbanPeerResponse,
};
use p2p_proto::node::PeerSource;
use subtle::ConstantTimeEq;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::error::Error;
use crate::node::NodeHandle;
use crate::peers::table::BAN_DURATION_MS;

/// The cookie file in a node's data dir: the admin token when none is configured.
pub const COOKIE_FILE: &str = "admin.cookie";

/// Who may call the Admin service.
#[derive(Clone)]
pub enum AdminAuth {
    /// Loopback listener, no token configured: local callers are trusted.
    Open,
    /// Every call must carry this token.
    Token(Arc<str>),
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AdminAuth::Open => "Open",
            AdminAuth::Token(_) => "Token(..)",
        })
    }
}

impl AdminAuth {
    /// The rule for a listener bound to `addr`: a configured token always
    /// applies; without one, loopback is open and anything else needs the
    /// cookie. The cookie is written fresh at every start (mode 0600).
    pub fn for_listener(
        addr: std::net::SocketAddr,
        configured: Option<&str>,
        data_dir: &Path,
    ) -> std::io::Result<Self> {
        if let Some(t) = configured.filter(|t| !t.is_empty()) {
            return Ok(AdminAuth::Token(t.into()));
        }
        let cookie = write_cookie(data_dir)?;
        Ok(if addr.ip().is_loopback() { AdminAuth::Open } else { AdminAuth::Token(cookie.into()) })
    }

    /// The interceptor that enforces the rule.
    #[allow(clippy::result_large_err)] // tonic's interceptor signature
    pub fn check(&self, request: Request<()>) -> Result<Request<()>, Status> {
        let AdminAuth::Token(token) = self else { return Ok(request) };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if bool::from(presented.as_bytes().ct_eq(token.as_bytes())) {
            Ok(request)
        } else {
            Err(Status::unauthenticated(
                "the admin API needs `authorization: Bearer <token>`: the node's --admin-token, or the contents of \
                 admin.cookie in its data dir (p2pctl: --admin-token or --data-dir)",
            ))
        }
    }
}

/// Writes a fresh random token to `dir`/[`COOKIE_FILE`], readable by the
/// owner only; returns it.
fn write_cookie(dir: &Path) -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    let token = hex::encode(bytes);
    let path = dir.join(COOKIE_FILE);
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(&tmp)?;
        f.write_all(token.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    Ok(token)
}

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct AdminService {
    node: NodeHandle,
}

impl AdminService {
    pub fn new(node: NodeHandle) -> Self {
        AdminService { node }
    }
}

impl AdminService {
    fn mining(&self) -> MiningResponse {
        MiningResponse { mining: self.node.mining().enabled(), blocks_found: self.node.mining().blocks_found() }
    }
}

/// A peer as the operator names it: a node id, or an address.
fn culprit(peer: &str) -> Result<String, Error> {
    let peer = peer.trim();
    if p2p_proto::signing::is_node_id(peer) {
        return Ok(peer.to_string());
    }
    p2p_proto::address::canonicalize(peer)
        .map_err(|e| Error::invalid("peer", format!("is neither a node id (40 hex characters) nor an address: {e}")))
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn mine_block(&self, request: Request<MineBlockRequest>) -> Result<Response<MineBlockResponse>, Status> {
        let mined = self.node.mine(request.into_inner().data).await?;
        Ok(Response::new(MineBlockResponse {
            block: Some(convert::block_to_proto(&mined.block)),
            outcome: mined.outcome as i32,
            attempts: mined.attempts,
            elapsed_ms: mined.elapsed.as_millis() as u64,
            transaction_id: mined.tx_id.map(|id| id.to_vec()).unwrap_or_default(),
        }))
    }

    async fn start_mining(&self, _request: Request<StartMiningRequest>) -> Result<Response<MiningResponse>, Status> {
        self.node.mining().set(true);
        tracing::info!("continuous mining started by the operator");
        Ok(Response::new(self.mining()))
    }

    async fn stop_mining(&self, _request: Request<StopMiningRequest>) -> Result<Response<MiningResponse>, Status> {
        self.node.mining().set(false);
        tracing::info!("continuous mining stopped by the operator");
        Ok(Response::new(self.mining()))
    }

    async fn list_connections(
        &self,
        _request: Request<ListConnectionsRequest>,
    ) -> Result<Response<ListConnectionsResponse>, Status> {
        let connections = self
            .node
            .peers()
            .snapshot()
            .into_iter()
            .map(|p| Connection {
                address: p.address,
                node_id: p.node_id,
                verified: p.verified,
                state: p.state as i32,
                source: p.source as i32,
                last_seen_unix_ms: p.last_seen_ms,
                score: p.score,
                banned_until_unix_ms: p.banned_until_ms,
                best_height: p.best_height,
            })
            .collect();
        Ok(Response::new(ListConnectionsResponse { connections, node_id: self.node.node_id().to_string() }))
    }

    async fn ban_peer(&self, request: Request<BanPeerRequest>) -> Result<Response<BanPeerResponse>, Status> {
        let req = request.into_inner();
        let who = culprit(&req.peer)?;
        let ms = match req.duration_secs {
            0 => BAN_DURATION_MS,
            s => u64::from(s) * 1000,
        };
        let until = self.node.peers().ban(&who, self.node.now_ms().saturating_add(ms));
        tracing::warn!(peer = %who, secs = ms / 1000, "banned by the operator");
        Ok(Response::new(BanPeerResponse {
            banned_until_unix_ms: until,
            message: format!("{who} is banned for {}s", ms / 1000),
        }))
    }

    async fn unban_peer(&self, request: Request<UnbanPeerRequest>) -> Result<Response<UnbanPeerResponse>, Status> {
        let who = culprit(&request.into_inner().peer)?;
        Ok(Response::new(UnbanPeerResponse { unbanned: self.node.peers().unban(&who) }))
    }

    async fn add_peer(&self, request: Request<AddPeerRequest>) -> Result<Response<AddPeerResponse>, Status> {
        let target =
            p2p_proto::dial::Target::parse(&request.into_inner().peer).map_err(|e| Error::invalid("peer", e))?;
        let address = p2p_proto::address::canonicalize(&target.address).map_err(|e| Error::invalid("peer", e))?;
        let added = self.node.peers().learn(&address, PeerSource::Configured, target.node_id.as_deref());
        let message = if added {
            format!("added {address}; it is dialed at the next heartbeat")
        } else {
            format!("{address} was not added: already known, banned, or this node itself")
        };
        Ok(Response::new(AddPeerResponse { added, message }))
    }

    async fn remove_peer(&self, request: Request<RemovePeerRequest>) -> Result<Response<RemovePeerResponse>, Status> {
        let address = p2p_proto::address::canonicalize(&request.into_inner().address)
            .map_err(|e| Error::invalid("address", e))?;
        let removed = self.node.peers().contains(&address);
        self.node.peers().forget(&address);
        Ok(Response::new(RemovePeerResponse { removed }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(token: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(t) = token {
            r.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        r
    }

    #[test]
    fn beyond_loopback_every_call_needs_the_cookie_and_loopback_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let auth = AdminAuth::for_listener("10.1.2.3:3100".parse().unwrap(), None, dir.path()).unwrap();
        let cookie = std::fs::read_to_string(dir.path().join(COOKIE_FILE)).unwrap();
        assert_eq!(cookie.len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(COOKIE_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "only the owner reads the cookie");
        }
        assert_eq!(auth.check(call(None)).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert_eq!(auth.check(call(Some("guess"))).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert!(auth.check(call(Some(&cookie))).is_ok());
        // A new start, a new cookie: the old one is worthless.
        let again = AdminAuth::for_listener("10.1.2.3:3100".parse().unwrap(), None, dir.path()).unwrap();
        assert!(again.check(call(Some(&cookie))).is_err());

        let open = AdminAuth::for_listener("127.0.0.1:3100".parse().unwrap(), None, dir.path()).unwrap();
        assert!(open.check(call(None)).is_ok(), "loopback without a configured token is open");
        let configured = AdminAuth::for_listener("127.0.0.1:3100".parse().unwrap(), Some("tok"), dir.path()).unwrap();
        assert!(configured.check(call(None)).is_err(), "a configured token applies on loopback too");
        assert!(configured.check(call(Some("tok"))).is_ok());
    }
}
