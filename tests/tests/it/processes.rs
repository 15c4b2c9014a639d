//! The real binaries as processes: a bootstrap and three nodes on loopback,
//! like the book's three terminals.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use node_svc::testkit::{connect_bootstrap, eventually};
use p2p_proto::bootstrap::GetPeersRequest;
use p2p_proto::node::node_client::NodeClient;
use p2p_proto::node::{GetStatusRequest, MineBlockRequest};

/// Where cargo put the binaries (`cargo test --workspace` builds them).
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: run `cargo test --workspace`, which builds it", path.display());
    path
}

/// Kills the process if the test ends early.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn spawn(cmd: &mut Command) -> Proc {
    Proc(cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn"))
}

#[tokio::test]
async fn a_bootstrap_and_three_node_processes_form_a_network() {
    let dir = tempfile::tempdir().unwrap();
    let bport = free_port();
    let baddr = format!("127.0.0.1:{bport}");
    let _bootstrap = spawn(
        Command::new(binary("bootstrap-svc"))
            .args(["--listen", &baddr, "--data-dir"])
            .arg(dir.path().join("bootstrap")),
    );
    let mut nodes = Vec::new();
    let mut addrs = Vec::new();
    for i in 0..3 {
        let addr = format!("127.0.0.1:{}", free_port());
        nodes.push(spawn(
            Command::new(binary("node-svc"))
                .args(["--listen", &addr, "--advertise", &addr, "--bootstrap", &baddr])
                .args(["--difficulty-bits", "12", "--ping-interval-ms", "200", "--data-dir"])
                .arg(dir.path().join(format!("node{i}"))),
        ));
        addrs.push(addr);
    }
    let mut bootstrap = connect_bootstrap(&format!("http://{baddr}")).await;
    eventually(Duration::from_secs(30), "three nodes registered", || {
        let mut b = bootstrap.clone();
        async move { (b.get_peers(GetPeersRequest::default()).await.ok()?.into_inner().peers.len() == 3).then_some(()) }
    })
    .await;

    let mut node1 = NodeClient::connect(format!("http://{}", addrs[0])).await.unwrap();
    let mined = node1.mine_block(MineBlockRequest { data: b"from a process".to_vec() }).await.unwrap().into_inner();
    let hash = mined.block.unwrap().hash;
    for addr in &addrs {
        let endpoint = format!("http://{addr}");
        eventually(Duration::from_secs(30), &format!("{addr} has the mined block"), || {
            let (endpoint, hash) = (endpoint.clone(), hash.clone());
            async move {
                let mut c = NodeClient::connect(endpoint).await.ok()?;
                let s = c.get_status(GetStatusRequest {}).await.ok()?.into_inner();
                (s.tip_hash == hash).then_some(())
            }
        })
        .await;
    }

    // SIGTERM: the node removes itself from the bootstrap and exits cleanly.
    let mut node3 = nodes.pop().unwrap();
    let status = Command::new("kill").args(["-TERM", &node3.0.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || node3.0.wait()).await.unwrap().unwrap();
    assert!(exit.success(), "node exited with {exit:?}");
    let left = bootstrap.get_peers(GetPeersRequest::default()).await.unwrap().into_inner();
    assert_eq!(left.peers.len(), 2, "the stopped node deregistered");
    assert!(left.peers.iter().all(|p| p.address != addrs[2]));
}

#[tokio::test]
async fn every_acknowledged_registration_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let start = || {
        spawn(
            Command::new(binary("bootstrap-svc"))
                .args(["--listen", &addr, "--register-per-minute", "0", "--default-ttl-secs", "3600", "--data-dir"])
                .arg(dir.path()),
        )
    };
    let mut server = start();
    let client = connect_bootstrap(&format!("http://{addr}")).await;
    // Concurrent registrations (sharing group commits); each Ok is an acknowledgement.
    let acked: Vec<String> = futures::future::join_all((0..500).map(|i| {
        let mut c = client.clone();
        async move {
            let address = format!("10.9.{}.{}:3000", i / 250, i % 250);
            c.register(p2p_proto::bootstrap::RegisterRequest { address: address.clone(), ..Default::default() })
                .await
                .ok()
                .map(|_| address)
        }
    }))
    .await
    .into_iter()
    .flatten()
    .collect();
    assert_eq!(acked.len(), 500);
    server.0.kill().unwrap(); // SIGKILL: no shutdown path runs
    server.0.wait().unwrap();
    drop(server);

    let _server = start();
    let mut client = connect_bootstrap(&format!("http://{addr}")).await;
    let resp = client.get_peers(GetPeersRequest { limit: 1000, ..Default::default() }).await.unwrap().into_inner();
    let stored: std::collections::HashSet<String> = resp.peers.into_iter().map(|p| p.address).collect();
    for a in &acked {
        assert!(stored.contains(a), "acknowledged {a} lost by kill -9");
    }
}
