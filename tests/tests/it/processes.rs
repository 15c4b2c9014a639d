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

/// Where a process started with `--addr-file FILE` says it listens; the
/// file is removed first, so what is read is the new process's.
fn addr_file(dir: &std::path::Path, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.addr"));
    let _ = std::fs::remove_file(&path);
    path
}

async fn bound_addr(path: &std::path::Path) -> String {
    eventually(Duration::from_secs(30), &format!("{} written", path.display()), || async {
        std::fs::read_to_string(path).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
    })
    .await
}

fn spawn(cmd: &mut Command) -> Proc {
    Proc(cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn"))
}

#[tokio::test]
async fn a_bootstrap_and_three_node_processes_form_a_network() {
    let dir = tempfile::tempdir().unwrap();
    // Every process binds port 0 and reports the port it got.
    let bfile = addr_file(dir.path(), "bootstrap");
    let _bootstrap = spawn(
        Command::new(binary("bootstrap-svc"))
            .args(["--listen", "127.0.0.1:0", "--addr-file"])
            .arg(&bfile)
            .arg("--data-dir")
            .arg(dir.path().join("bootstrap")),
    );
    let baddr = bound_addr(&bfile).await;
    let mut nodes = Vec::new();
    let mut addrs = Vec::new();
    for i in 0..3 {
        let file = addr_file(dir.path(), &format!("node{i}"));
        nodes.push(spawn(
            Command::new(binary("node-svc"))
                .args(["--listen", "127.0.0.1:0", "--bootstrap", &baddr])
                .args(["--difficulty-bits", "12", "--ping-interval-ms", "200", "--addr-file"])
                .arg(&file)
                .arg("--data-dir")
                .arg(dir.path().join(format!("node{i}"))),
        ));
        addrs.push(bound_addr(&file).await);
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
    let data = dir.path().join("registry");
    // Each start binds a free port and reports it (no port is given up and re-bound).
    let start = |name: &str| {
        let file = addr_file(dir.path(), name);
        let proc = spawn(
            Command::new(binary("bootstrap-svc"))
                .args(["--listen", "127.0.0.1:0", "--register-per-minute", "0", "--default-ttl-secs", "3600"])
                .arg("--addr-file")
                .arg(&file)
                .arg("--data-dir")
                .arg(&data),
        );
        (proc, file)
    };
    let (mut server, file) = start("first");
    let client = connect_bootstrap(&format!("http://{}", bound_addr(&file).await)).await;
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

    let (_server, file) = start("second");
    let mut client = connect_bootstrap(&format!("http://{}", bound_addr(&file).await)).await;
    let resp = client.get_peers(GetPeersRequest { limit: 1000, ..Default::default() }).await.unwrap().into_inner();
    let stored: std::collections::HashSet<String> = resp.peers.into_iter().map(|p| p.address).collect();
    for a in &acked {
        assert!(stored.contains(a), "acknowledged {a} lost by kill -9");
    }
}
