//! Handshakes over real sockets: who can prove what.

use std::time::Duration;

use ed25519_dalek::SigningKey;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;

use super::*;
use crate::conn::{ConnLimits, incoming};

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// A server with `server_key`'s identity; returns its address and the
/// connection infos of what it accepted.
async fn server(server_key: &SigningKey) -> (std::net::SocketAddr, tokio::sync::mpsc::Receiver<ConnInfo>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let identity = TlsIdentity::new(server_key).unwrap();
    let mut conns =
        Box::pin(incoming(listener, ConnLimits::default(), Some(identity.server_config()), CancellationToken::new()));
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        while let Some(Ok(mut c)) = conns.next().await {
            let _ = tx.send(c.connect_info()).await;
            tokio::spawn(async move {
                let mut b = [0u8; 4];
                if c.read_exact(&mut b).await.is_ok() {
                    let _ = c.write_all(&b).await;
                }
            });
        }
    });
    (addr, rx)
}

async fn dial(
    addr: std::net::SocketAddr,
    tls: &ClientTls,
    expected: Option<&str>,
) -> Result<Option<PeerIdentity>, std::io::Error> {
    let config = tls.config(expected).unwrap().unwrap();
    let seen = Seen::default();
    let mut connector = Connector::new(config, seen.clone());
    let uri: http::Uri = format!("http://{addr}").parse().unwrap();
    let mut io = tower::Service::call(&mut connector, uri).await?.into_inner();
    io.write_all(b"ping").await?;
    let mut b = [0u8; 4];
    io.read_exact(&mut b).await?;
    assert_eq!(&b, b"ping");
    Ok(seen.lock().unwrap().clone())
}

#[tokio::test]
async fn both_ends_learn_the_identity_the_other_proved() {
    let (server_key, client_key) = (key(1), key(2));
    let (addr, mut accepted) = server(&server_key).await;
    let client = ClientTls::Tls { identity: Some(TlsIdentity::new(&client_key).unwrap()) };
    let server_id = crate::signing::node_id(&server_key.verifying_key().to_bytes());
    let proven = dial(addr, &client, Some(&server_id)).await.unwrap().unwrap();
    assert_eq!(proven.node_id, server_id);
    let info = tokio::time::timeout(Duration::from_secs(5), accepted.recv()).await.unwrap().unwrap();
    assert_eq!(info.peer.unwrap().node_id, crate::signing::node_id(&client_key.verifying_key().to_bytes()));
    assert!(info.remote.is_some());
}

#[tokio::test]
async fn a_client_without_a_certificate_is_served_anonymously() {
    let (addr, mut accepted) = server(&key(3)).await;
    assert!(dial(addr, &ClientTls::anonymous(), None).await.unwrap().is_some());
    let info = tokio::time::timeout(Duration::from_secs(5), accepted.recv()).await.unwrap().unwrap();
    assert_eq!(info.peer, None, "no certificate, no identity");
}

#[tokio::test]
async fn dialing_a_node_id_that_the_server_cannot_prove_fails() {
    let (addr, _accepted) = server(&key(4)).await;
    let someone_else = crate::signing::node_id(&key(5).verifying_key().to_bytes());
    let err = dial(addr, &ClientTls::anonymous(), Some(&someone_else)).await.unwrap_err();
    assert!(err.to_string().contains("WrongNode"), "{err}");
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_holds_up_nobody() {
    let (addr, mut accepted) = server(&key(6)).await;
    // Ten silent connections: each would stall a serial accept loop.
    let mut silent = Vec::new();
    for _ in 0..10 {
        silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let started = std::time::Instant::now();
    dial(addr, &ClientTls::anonymous(), None).await.unwrap();
    assert!(started.elapsed() < crate::conn::HANDSHAKE_TIMEOUT, "served before the stalled handshakes timed out");
    let info = tokio::time::timeout(Duration::from_secs(5), accepted.recv()).await.unwrap().unwrap();
    assert!(info.peer.is_none());
    // The silent ones are dropped once their handshake deadline passes.
    let mut b = [0u8; 1];
    let closed = tokio::time::timeout(crate::conn::HANDSHAKE_TIMEOUT * 2, silent[0].read(&mut b)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
}
