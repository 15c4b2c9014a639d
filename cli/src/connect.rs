//! Turning what a user typed into a gRPC channel, with errors that name the
//! endpoint and the cause. Servers speak TLS unless started with
//! `--plaintext`; p2pctl then connects without a certificate (served
//! anonymously), and `NODE_ID@host:port` makes the server prove that id.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context;
use p2p_proto::dial::{DialSettings, Target};
use p2p_proto::tls::ClientTls;
use tonic::transport::Channel;

/// A person is waiting: fail a dead endpoint quickly, let a long call finish.
const CLI: DialSettings = DialSettings::new(Duration::from_secs(5), Duration::from_secs(30));

/// Set once from `--plaintext` before anything dials.
static PLAINTEXT: OnceLock<bool> = OnceLock::new();

/// Makes every later connection plaintext (servers run with `--plaintext`).
pub fn set_plaintext(plaintext: bool) {
    let _ = PLAINTEXT.set(plaintext);
}

/// Whether `--plaintext` was given.
pub fn is_plaintext() -> bool {
    PLAINTEXT.get().copied().unwrap_or(false)
}

fn tls() -> ClientTls {
    if is_plaintext() { ClientTls::Plaintext } else { ClientTls::anonymous() }
}

/// Connects to `endpoint` (`[NODE_ID@]host:port`, a `what` server), failing
/// with a message that says which endpoint and why.
pub async fn channel(what: &str, endpoint: &str) -> anyhow::Result<Channel> {
    let target =
        Target::parse(endpoint).map_err(|e| anyhow::anyhow!("{endpoint:?} is not a valid {what} endpoint: {e}"))?;
    CLI.endpoint(&target.address)
        .with_context(|| format!("{endpoint:?} is not a valid {what} endpoint (expected [NODE_ID@]host:port)"))?;
    let link = CLI.connect(&target.address, &tls(), target.node_id.as_deref()).await.map_err(|e| {
        anyhow::anyhow!("cannot connect to the {what} at {endpoint}: {}", p2p_proto::dial::error_chain(&e))
    })?;
    Ok(link.channel)
}

/// A channel to a node's admin API, with its token (given, or read from
/// the node's data dir) attached to every call.
pub async fn admin(
    endpoint: &str,
    token: Option<&str>,
    data_dir: Option<&Path>,
) -> anyhow::Result<
    p2p_proto::admin::admin_client::AdminClient<tonic::service::interceptor::InterceptedService<Channel, AdminToken>>,
> {
    let token = match (token, data_dir) {
        (Some(t), _) => Some(t.to_string()),
        (None, Some(dir)) => {
            let path = dir.join("admin.cookie");
            Some(
                std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read the admin cookie {}", path.display()))?
                    .trim()
                    .to_string(),
            )
        }
        (None, None) => None,
    };
    // The admin API is plaintext (loopback, or a trusted network with a token).
    let link = CLI
        .connect(endpoint, &ClientTls::Plaintext, None)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to the admin API at {endpoint}: {} (is --admin right? a node's admin API listens on loopback at its P2P port + 100 by default)", p2p_proto::dial::error_chain(&e)))?;
    let header = match token {
        Some(t) => Some(format!("Bearer {t}").parse().context("the admin token is not a valid header value")?),
        None => None,
    };
    Ok(p2p_proto::admin::admin_client::AdminClient::with_interceptor(link.channel, AdminToken(header)))
}

/// Adds `authorization: Bearer <token>` to admin calls.
#[derive(Debug, Clone)]
pub struct AdminToken(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for AdminToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

/// Renders a gRPC error for a person: the code and the server's message.
pub fn status(e: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", e.code(), e.message())
}
