//! How every client in the project dials a server: one place for the URL
//! form and the transport settings (nodes dialing peers and bootstraps,
//! `p2pctl`, the tests).

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// How long to wait for a connection and for a unary call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DialSettings {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
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

    /// A channel that connects on first use (and reconnects after failures).
    pub fn lazy(&self, target: &str) -> Result<Channel, tonic::transport::Error> {
        Ok(self.endpoint(target)?.connect_lazy())
    }

    /// A channel connected now.
    pub async fn connect(&self, target: &str) -> Result<Channel, tonic::transport::Error> {
        self.endpoint(target)?.connect().await
    }
}
