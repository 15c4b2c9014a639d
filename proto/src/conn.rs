//! Accepting connections the way both servers do: capped in total and per
//! client, closed when silent, still accepting after the process runs out of
//! file descriptors (EMFILE) without spinning on `accept`, and (unless the
//! server runs in plaintext) TLS with the handshake done off the accept
//! loop, under a deadline, so a client that stalls its handshake holds up
//! nobody else.
//!
//! tonic's own incoming stream logs accept errors and asks again at once,
//! which at the fd limit is a busy loop that starves the workers; here an
//! accept error backs off (1 ms doubling to 1 s) until accepting works again.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::Connected;

use crate::limits::{Slot, Slots};
use crate::tls::{ConnInfo, PeerIdentity};

/// Connection bounds of a server (flags `--max-connections`,
/// `--max-connections-per-ip`, `--idle-timeout-secs`, `--ipv6-prefix`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Open connections at most; over it new ones are closed at once.
    pub max_connections: usize,
    /// Open connections per client (IPv4 address or IPv6 prefix).
    pub max_per_client: usize,
    /// A connection that sends nothing for this long is closed. Live HTTP/2
    /// clients answer the server's keepalive pings, so only dead or silent
    /// sockets reach it.
    pub idle_timeout: Duration,
    /// HTTP/2 keepalive ping interval (the ping must be answered within
    /// `keepalive_timeout`).
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// Requests handled at once per connection; more wait their turn (up
    /// to [`MAX_OPEN_STREAMS`] open streams, beyond which HTTP/2 refuses them).
    pub max_streams_per_connection: u32,
    /// Bits of an IPv6 address that name a client.
    pub v6_prefix: u8,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: 1024,
            max_per_client: 64,
            idle_timeout: Duration::from_secs(120),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            max_streams_per_connection: 256,
            v6_prefix: 64,
        }
    }
}

impl ConnLimits {
    /// A tonic server builder with these limits' HTTP/2 settings.
    pub fn builder(&self) -> tonic::transport::Server {
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(self.keepalive_interval))
            .http2_keepalive_timeout(Some(self.keepalive_timeout))
            .max_concurrent_streams(MAX_OPEN_STREAMS.max(self.max_streams_per_connection))
            .concurrency_limit_per_connection(self.max_streams_per_connection as usize)
            .http2_max_pending_accept_reset_streams(Some(64))
            .http2_max_header_list_size(16 * 1024)
    }
}

/// Open HTTP/2 streams allowed per connection (queued or being handled).
/// The connection's flow-control window bounds what they buffer together.
pub const MAX_OPEN_STREAMS: u32 = 1024;

/// The flags both servers take for [`ConnLimits`].
#[derive(Debug, Clone, clap::Args)]
pub struct ConnArgs {
    /// Open connections at most; more are closed as soon as they are accepted.
    #[arg(long, env = "P2P_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Open connections per client (an IPv4 address or an IPv6 prefix).
    #[arg(long, env = "P2P_MAX_CONNECTIONS_PER_IP", default_value_t = 64)]
    pub max_connections_per_ip: usize,
    /// Seconds a connection may send nothing (not even a keepalive answer) before it is closed.
    #[arg(long, env = "P2P_IDLE_TIMEOUT_SECS", default_value_t = 120)]
    pub idle_timeout_secs: u64,
    /// Requests handled at once per connection (more wait their turn).
    #[arg(long, env = "P2P_MAX_STREAMS_PER_CONNECTION", default_value_t = 256)]
    pub max_streams_per_connection: u32,
    /// Leading bits of an IPv6 address that identify one client for per-client limits.
    #[arg(long, env = "P2P_IPV6_PREFIX", default_value_t = 64, value_parser = clap::value_parser!(u8).range(1..=128))]
    pub ipv6_prefix: u8,
}

impl ConnArgs {
    pub fn limits(&self) -> ConnLimits {
        ConnLimits {
            max_connections: self.max_connections.max(1),
            max_per_client: self.max_connections_per_ip.max(1),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs.max(1)),
            max_streams_per_connection: self.max_streams_per_connection.max(1),
            v6_prefix: self.ipv6_prefix,
            ..ConnLimits::default()
        }
    }
}

/// First and longest pause after a failed accept.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(1);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How long a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The accepted connections of `listener`, within `limits`, each through a
/// TLS handshake with `tls` unless it is None (plaintext). Cancelling
/// `close_all` makes every connection accepted here fail its next read or
/// write, so a server can end connections whose clients stopped reading
/// (graceful shutdown alone would wait for them forever).
pub fn incoming(
    listener: TcpListener,
    limits: ConnLimits,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    close_all: CancellationToken,
) -> impl Stream<Item = io::Result<PeerConn>> + Send {
    use futures::StreamExt;
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    // Handshakes run side by side (at most one per connection slot), so a
    // slow one delays nobody; a failed one is dropped here, not handed on.
    accept(listener, limits, close_all)
        .map(move |conn| {
            let acceptor = acceptor.clone();
            async move {
                let conn = conn.ok()?;
                let Some(acceptor) = acceptor else { return Some(Ok(PeerConn::Plain(conn))) };
                let remote = conn.remote_addr();
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(conn)).await {
                    Ok(Ok(tls)) => {
                        let peer = crate::tls::proven_identity(tls.get_ref().1.peer_certificates());
                        Some(Ok(PeerConn::Tls(Box::new(tls), peer)))
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(?remote, error = %e, "TLS handshake failed");
                        None
                    }
                    Err(_) => {
                        tracing::debug!(?remote, "TLS handshake timed out");
                        None
                    }
                }
            }
        })
        .buffer_unordered(limits.max_connections.max(1))
        .filter_map(futures::future::ready)
}

/// A connection as handlers see it: plaintext, or TLS with the identity
/// the client proved (None when it presented no certificate).
#[derive(Debug)]
pub enum PeerConn {
    Plain(Conn),
    Tls(Box<tokio_rustls::server::TlsStream<Conn>>, Option<PeerIdentity>),
}

impl Connected for PeerConn {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        match self {
            PeerConn::Plain(c) => ConnInfo { remote: c.remote_addr(), peer: None },
            PeerConn::Tls(t, peer) => ConnInfo { remote: t.get_ref().0.remote_addr(), peer: peer.clone() },
        }
    }
}

impl AsyncRead for PeerConn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerConn::Plain(c) => Pin::new(c).poll_read(cx, buf),
            PeerConn::Tls(t, _) => Pin::new(t.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PeerConn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PeerConn::Plain(c) => Pin::new(c).poll_write(cx, buf),
            PeerConn::Tls(t, _) => Pin::new(t.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerConn::Plain(c) => Pin::new(c).poll_flush(cx),
            PeerConn::Tls(t, _) => Pin::new(t.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerConn::Plain(c) => Pin::new(c).poll_shutdown(cx),
            PeerConn::Tls(t, _) => Pin::new(t.as_mut()).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PeerConn::Plain(c) => Pin::new(c).poll_write_vectored(cx, bufs),
            PeerConn::Tls(t, _) => Pin::new(t.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            PeerConn::Plain(c) => c.is_write_vectored(),
            PeerConn::Tls(t, _) => t.is_write_vectored(),
        }
    }
}

/// The accepted TCP connections of `listener`, within `limits`.
fn accept(
    listener: TcpListener,
    limits: ConnLimits,
    close_all: CancellationToken,
) -> impl Stream<Item = io::Result<Conn>> + Send {
    let slots = Slots::new("connections", limits.max_connections, limits.max_per_client, limits.v6_prefix);
    futures::stream::unfold((listener, slots, ACCEPT_BACKOFF_MIN), move |(listener, slots, mut backoff)| {
        let close_all = close_all.clone();
        async move {
            loop {
                match listener.accept().await {
                    Ok((stream, remote)) => {
                        backoff = ACCEPT_BACKOFF_MIN;
                        match slots.try_acquire(Some(remote.ip())) {
                            Ok(slot) => {
                                let _ = stream.set_nodelay(true);
                                let conn = Conn::new(stream, slot, limits.idle_timeout, close_all.clone());
                                return Some((Ok(conn), (listener, slots, backoff)));
                            }
                            Err(refused) => {
                                // Dropping the stream closes it.
                                tracing::debug!(%remote, %refused, "connection refused");
                            }
                        }
                    }
                    Err(e) if is_per_connection(&e) => {}
                    Err(e) => {
                        if backoff == ACCEPT_BACKOFF_MIN {
                            tracing::error!(error = %e, "accept failed (out of file descriptors?); backing off until it works again");
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    }
                }
            }
        }
    })
}

/// Errors that concern one connection only (the listener is fine).
fn is_per_connection(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted)
}

/// An accepted connection holding its slot; reads fail with `TimedOut`
/// after `idle` without a byte from the client.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    _slot: Slot,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl Conn {
    fn new(stream: TcpStream, slot: Slot, idle: Duration, close: CancellationToken) -> Self {
        let closed = Box::pin(close.cancelled_owned());
        Conn { stream, _slot: slot, idle, deadline: Box::pin(tokio::time::sleep(idle)), closed }
    }

    /// Ready with an error once the server closed all connections.
    fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        match self.closed.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(io::ErrorKind::ConnectionAborted, "server shutting down")),
            Poll::Pending => Poll::Pending,
        }
    }

    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.stream.peer_addr().ok()
    }
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if let Poll::Ready(e) = self.poll_closed(cx) {
            return Poll::Ready(Err(e));
        }
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let next = Instant::now() + self.idle;
                    self.deadline.as_mut().reset(next);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "connection idle for too long")))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if let Poll::Ready(e) = self.poll_closed(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Poll::Ready(e) = self.poll_closed(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio::io::AsyncReadExt;

    async fn closed(mut s: TcpStream) -> bool {
        let mut b = [0u8; 1];
        matches!(tokio::time::timeout(Duration::from_secs(10), s.read(&mut b)).await, Ok(Ok(0)) | Ok(Err(_)))
    }

    #[tokio::test]
    async fn over_the_per_client_cap_a_connection_is_closed_and_a_silent_one_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = ConnLimits { max_per_client: 2, idle_timeout: Duration::from_millis(300), ..Default::default() };
        let mut accepted = Box::pin(accept(listener, limits, CancellationToken::new()));
        let a = TcpStream::connect(addr).await.unwrap();
        let conn_a = accepted.next().await.unwrap().unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let mut conn_b = accepted.next().await.unwrap().unwrap();
        let c = TcpStream::connect(addr).await.unwrap();
        // The third is accepted and dropped inside the stream; the stream
        // waits for the next one.
        let next = tokio::spawn(async move { accepted.next().await.map(|r| r.is_ok()) });
        assert!(closed(c).await, "the third connection from one client is closed");
        drop(conn_a);
        drop(a);
        let _d = TcpStream::connect(addr).await.unwrap();
        assert_eq!(next.await.unwrap(), Some(true), "a freed slot admits the next connection");
        // conn_b's client sends nothing: its reads fail once it has been idle.
        let mut buf = [0u8; 8];
        let err = conn_b.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
