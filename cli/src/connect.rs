//! Turning what a user typed into a gRPC channel, with errors that name the
//! endpoint and the cause.

use std::time::Duration;

use anyhow::Context;
use p2p_proto::dial::DialSettings;
use tonic::transport::Channel;

/// A person is waiting: fail a dead endpoint quickly, let a long call finish.
const CLI: DialSettings = DialSettings::new(Duration::from_secs(5), Duration::from_secs(30));

/// Connects to `endpoint` (a `what` server), failing with a message that says
/// which endpoint and why.
pub async fn channel(what: &str, endpoint: &str) -> anyhow::Result<Channel> {
    let url = p2p_proto::address::grpc_url(endpoint);
    let ep = CLI
        .endpoint(endpoint)
        .with_context(|| format!("{endpoint:?} is not a valid {what} endpoint (expected host:port)"))?;
    ep.connect().await.map_err(|e| anyhow::anyhow!("cannot connect to the {what} at {url}: {}", causes(&e)))
}

/// Renders a gRPC error for a person: the code and the server's message.
pub fn status(e: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", e.code(), e.message())
}

/// "outer: inner: root cause", skipping repeats, so "tcp connect error" comes
/// with the "Connection refused" underneath it.
pub fn causes(e: &(dyn std::error::Error + 'static)) -> String {
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
