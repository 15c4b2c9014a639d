//! How every client in the project dials a server: one place for the URL
//! form, the transport settings and TLS (nodes dialing peers and
//! bootstraps, `p2pctl`, the tests).

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::tls::{ClientTls, Connector, PeerIdentity, Seen, TlsError};

/// How long to wait for a connection and for a unary call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DialSettings {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

/// Why a channel could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("{0}")]
    Target(String),
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// A channel and, for TLS, the identity its last handshake proved.
#[derive(Debug, Clone)]
pub struct Link {
    pub channel: Channel,
    seen: Seen,
}

impl Link {
    /// The identity the server proved in the latest handshake (None before
    /// the first connection, and always for plaintext).
    pub fn proven(&self) -> Option<PeerIdentity> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A server to dial: `host:port` (or a URL), optionally prefixed with the
/// node id it must prove: `NODE_ID@host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub address: String,
    pub node_id: Option<String>,
}

impl Target {
    pub fn parse(input: &str) -> Result<Target, String> {
        match input.split_once('@') {
            Some((id, address)) if !input.contains("://") => {
                if !crate::signing::is_node_id(id) {
                    return Err(format!("{id:?} is not a node id (40 lowercase hex characters) in {input:?}"));
                }
                Ok(Target { address: address.to_string(), node_id: Some(id.to_string()) })
            }
            _ => Ok(Target { address: input.to_string(), node_id: None }),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.node_id {
            Some(id) => write!(f, "{id}@{}", self.address),
            None => f.write_str(&self.address),
        }
    }
}

impl DialSettings {
    pub const fn new(connect_timeout: Duration, request_timeout: Duration) -> Self {
        DialSettings { connect_timeout, request_timeout }
    }

    /// The endpoint for `target` (`host:port` or a URL).
    pub fn endpoint(&self, target: &str) -> Result<Endpoint, tonic::transport::Error> {
        Ok(Endpoint::from_shared(crate::address::grpc_url(target))?
            .connect_timeout(self.connect_timeout)
            .timeout(self.request_timeout)
            .tcp_nodelay(true))
    }

    /// A link that connects on first use (and reconnects after failures);
    /// with TLS every handshake must prove `expected` when it is given.
    pub fn lazy(&self, target: &str, tls: &ClientTls, expected: Option<&str>) -> Result<Link, DialError> {
        let endpoint = self.endpoint(target)?;
        let seen = Seen::default();
        let channel = match tls.config(expected)? {
            None => endpoint.connect_lazy(),
            Some(config) => endpoint.connect_with_connector_lazy(Connector::new(config, seen.clone())),
        };
        Ok(Link { channel, seen })
    }

    /// A link connected now.
    pub async fn connect(&self, target: &str, tls: &ClientTls, expected: Option<&str>) -> Result<Link, DialError> {
        let endpoint = self.endpoint(target)?;
        let seen = Seen::default();
        let channel = match tls.config(expected)? {
            None => endpoint.connect().await?,
            Some(config) => endpoint.connect_with_connector(Connector::new(config, seen.clone())).await?,
        };
        Ok(Link { channel, seen })
    }

    /// A channel connected now to `target` (`[NODE_ID@]host:port`).
    pub async fn connect_target(&self, target: &str, tls: &ClientTls) -> Result<Link, DialError> {
        let t = Target::parse(target).map_err(DialError::Target)?;
        self.connect(&t.address, tls, t.node_id.as_deref()).await
    }
}

/// An error and its sources on one line ("outer: inner: root cause"),
/// skipping repeats and tonic's bare "transport error", so "tcp connect
/// error" comes with the "Connection refused" or "WrongNode" underneath it.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) && text != "transport error" {
            parts.push(text);
        }
        cur = err.source();
    }
    parts.join(": ")
}
