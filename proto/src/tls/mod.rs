//! Authenticated, encrypted links: TLS 1.3 whose certificates prove the
//! ed25519 identity that defines a node id (libp2p's TLS design, see
//! [`cert`]), for node-to-node connections and for the bootstrap.
//!
//! # Layout
//! - [`cert`]: making and checking the certificates (pure).
//! - [`TlsIdentity`]: this end's certificate and the rustls configs built on it.
//! - [`Verifier`]: the rustls verifier both sides use; a client that knows
//!   whom it dials also checks the node id ([`CertError::WrongNode`]).
//! - [`Connector`]: the client side for tonic channels, reporting the
//!   identity each handshake proved.
//! - The server side lives in [`crate::conn`], which runs the handshake
//!   on every accepted connection and hands handlers a [`ConnInfo`].
//!
//! Servers ask for a client certificate but do not require one: a client
//! without one (grpcurl `-insecure`, p2pctl, a script) is served the public
//! RPCs anonymously, while a node that presents one is known by its
//! verified id.

pub mod cert;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use ed25519_dalek::SigningKey;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};

pub use cert::{CertError, PeerIdentity};

/// The ALPN protocol every endpoint speaks: gRPC over HTTP/2.
const ALPN_H2: &[u8] = b"h2";

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot make a certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// This end's identity on the wire: a certificate for its ed25519 key (on a
/// fresh certificate key each start) and the server config built on it.
/// Cheap to clone.
#[derive(Clone)]
pub struct TlsIdentity {
    inner: Arc<IdentityInner>,
}

struct IdentityInner {
    identity: PeerIdentity,
    certified: cert::Certified,
    server: Arc<ServerConfig>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity").field("node_id", &self.inner.identity.node_id).finish_non_exhaustive()
    }
}

impl TlsIdentity {
    pub fn new(key: &SigningKey) -> Result<Self, TlsError> {
        let certified = cert::generate(key)?;
        let identity = PeerIdentity::from_key(key.verifying_key().to_bytes());
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(Arc::new(Verifier::new(None)))
            .with_single_cert(vec![certified.cert.clone()], certified.key.clone_key())?;
        server.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(TlsIdentity { inner: Arc::new(IdentityInner { identity, certified, server: Arc::new(server) }) })
    }

    pub fn node_id(&self) -> &str {
        &self.inner.identity.node_id
    }

    /// The certificate in PEM (for operators who pin it with standard tools).
    pub fn cert_pem(&self) -> &str {
        &self.inner.certified.pem
    }

    /// The certificate key in PKCS#8 PEM (for `grpcurl -cert -key`).
    pub fn cert_key_pem(&self) -> &str {
        &self.inner.certified.key_pem
    }

    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.inner.server.clone()
    }
}

/// How a client reaches a server.
#[derive(Debug, Clone)]
pub enum ClientTls {
    /// No TLS (servers started with `--plaintext`).
    Plaintext,
    /// TLS, presenting `identity`'s certificate when given (a node), or none
    /// (p2pctl, tests: served anonymously).
    Tls { identity: Option<TlsIdentity> },
}

impl ClientTls {
    /// TLS without a client certificate.
    pub fn anonymous() -> Self {
        ClientTls::Tls { identity: None }
    }

    /// The rustls config for a connection that must reach `expected` (a
    /// node id) when given; None for plaintext.
    pub fn config(&self, expected: Option<&str>) -> Result<Option<Arc<ClientConfig>>, TlsError> {
        let ClientTls::Tls { identity } = self else { return Ok(None) };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Verifier::new(expected.map(str::to_string))));
        let mut config = match identity {
            Some(id) => builder
                .with_client_auth_cert(vec![id.inner.certified.cert.clone()], id.inner.certified.key.clone_key())?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        // libp2p: clients send no server name; the node id is what is checked.
        config.enable_sni = false;
        Ok(Some(Arc::new(config)))
    }
}

/// Checks certificates by the rules of [`cert`], on both sides of a
/// handshake; as a client's verifier it also insists on `expected`.
#[derive(Debug)]
pub struct Verifier {
    expected: Option<String>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl Verifier {
    pub fn new(expected: Option<String>) -> Self {
        Verifier { expected, algorithms: provider().signature_verification_algorithms }
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        if !intermediates.is_empty() {
            return Err(rustls::Error::General("exactly one certificate is expected".into()));
        }
        let verified = cert::verify(end_entity.as_ref(), now).map_err(cert_error)?;
        if let Some(expected) = &self.expected
            && *expected != verified.identity.node_id
        {
            tracing::warn!(%expected, got = %verified.identity.node_id, "the peer proved another node id than the one we dialed; refused");
            return Err(cert_error(CertError::WrongNode {
                expected: expected.clone(),
                got: verified.identity.node_id,
            }));
        }
        Ok(())
    }

    /// The handshake signature by the certificate key; rustls calls this
    /// only for a certificate [`Verifier::check`] accepted.
    fn verify_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let parsed = cert::parse(cert.as_ref()).map_err(cert_error)?;
        let spki = SubjectPublicKeyInfoDer::from(parsed.spki());
        rustls::crypto::verify_tls13_signature_with_raw_key(message, &spki, dss, &self.algorithms)
    }

    fn schemes() -> Vec<SignatureScheme> {
        vec![SignatureScheme::ECDSA_NISTP256_SHA256, SignatureScheme::ED25519]
    }
}

fn cert_error(e: CertError) -> rustls::Error {
    match e {
        CertError::BadDer | CertError::TooLarge(_) => rustls::Error::InvalidCertificate(CertificateError::BadEncoding),
        CertError::Expired => rustls::Error::InvalidCertificate(CertificateError::Expired),
        CertError::BadSelfSignature | CertError::BadIdentitySignature => {
            rustls::Error::InvalidCertificate(CertificateError::BadSignature)
        }
        other => rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(other)))),
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, intermediates, now)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("only TLS 1.3 is spoken".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        Self::schemes()
    }
}

impl ClientCertVerifier for Verifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    /// Anonymous clients are served the public RPCs; only what they claim
    /// about themselves is not believed.
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, intermediates, now)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("only TLS 1.3 is spoken".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        Self::schemes()
    }
}

/// File name of a server's current certificate in its data dir.
pub const CERT_FILE: &str = "tls-cert.pem";

/// Writes `identity`'s certificate to `dir`/[`CERT_FILE`] (atomically), so
/// standard TLS clients can pin this run's certificate.
pub fn write_cert_pem(dir: &std::path::Path, identity: &TlsIdentity) -> std::io::Result<()> {
    let path = dir.join(CERT_FILE);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, identity.cert_pem())?;
    std::fs::rename(&tmp, &path)
}

/// The identity the other end proved in a finished handshake (whose
/// verifier already checked the certificate).
pub fn proven_identity(certs: Option<&[CertificateDer<'_>]>) -> Option<PeerIdentity> {
    let first = certs?.first()?;
    cert::parse(first.as_ref()).ok().map(|p| p.identity)
}

/// What a server knows about the connection a request came over: the
/// client's address, and its verified identity when it presented a
/// certificate (never a claim the client made in the request).
#[derive(Debug, Clone, Default)]
pub struct ConnInfo {
    pub remote: Option<SocketAddr>,
    pub peer: Option<PeerIdentity>,
}

impl ConnInfo {
    /// The connection info of a request (empty when the server was not
    /// started through [`crate::conn::incoming`], e.g. in unit tests).
    pub fn of<T>(request: &tonic::Request<T>) -> ConnInfo {
        request.extensions().get::<ConnInfo>().cloned().unwrap_or_default()
    }

    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.remote.map(|a| a.ip())
    }
}

/// Where a client connector reports the identity each handshake proved.
pub type Seen = Arc<Mutex<Option<PeerIdentity>>>;

/// The client side of a TLS link for a tonic channel: connects TCP, runs
/// the handshake with `config` (which insists on an expected node id when
/// the dialer knows one) and records the proven identity in `seen`.
#[derive(Debug, Clone)]
pub struct Connector {
    config: Arc<ClientConfig>,
    seen: Seen,
    /// Connect from this local address (tests acting as another host).
    local: Option<std::net::IpAddr>,
}

impl Connector {
    pub fn new(config: Arc<ClientConfig>, seen: Seen) -> Self {
        Connector { config, seen, local: None }
    }

    /// Connections start from `ip` (e.g. 127.0.0.2, to act as another host).
    pub fn from_local_ip(mut self, ip: std::net::IpAddr) -> Self {
        self.local = Some(ip);
        self
    }
}

async fn tcp_connect(host: &str, port: u16, local: Option<std::net::IpAddr>) -> std::io::Result<tokio::net::TcpStream> {
    let Some(local) = local else { return tokio::net::TcpStream::connect((host, port)).await };
    let remote =
        tokio::net::lookup_host((host, port)).await?.find(|a| a.is_ipv4() == local.is_ipv4()).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{host} has no address of the local one's family"),
            )
        })?;
    let socket = if local.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(local, 0))?;
    socket.connect(remote).await
}

type TlsIo = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

impl tower::Service<http::Uri> for Connector {
    type Response = TlsIo;
    type Error = std::io::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<TlsIo, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let (config, seen, local) = (self.config.clone(), self.seen.clone(), self.local);
        Box::pin(async move {
            let invalid =
                |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{what} in {uri}"));
            let host = uri.host().ok_or_else(|| invalid("no host"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
            let port = uri.port_u16().ok_or_else(|| invalid("no port"))?;
            let tcp = tcp_connect(&host, port, local).await?;
            let _ = tcp.set_nodelay(true);
            // The name is not sent (no SNI) and not checked: the node id is.
            let name = ServerName::try_from("p2p-node").map_err(|_| invalid("server name"))?;
            let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
            let proven = proven_identity(tls.get_ref().1.peer_certificates());
            *seen.lock().unwrap_or_else(|p| p.into_inner()) = proven;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

#[cfg(test)]
mod tests;
