//! The real binaries as processes: a bootstrap and three nodes on loopback,
//! like the book's three terminals.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use node_svc::testkit::{connect, connect_bootstrap, eventually};

use crate::binary;
use p2p_proto::admin::MineBlockRequest;
use p2p_proto::admin::admin_client::AdminClient;
use p2p_proto::bootstrap::GetPeersRequest;
use p2p_proto::node::GetStatusRequest;
use p2p_proto::node::node_client::NodeClient;

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
    let mut admins = Vec::new();
    for i in 0..3 {
        let file = addr_file(dir.path(), &format!("node{i}"));
        let admin_file = addr_file(dir.path(), &format!("node{i}-admin"));
        nodes.push(spawn(
            Command::new(binary("node-svc"))
                .args(["--listen", "127.0.0.1:0", "--bootstrap", &baddr])
                .args(["--difficulty-bits", "12", "--ping-interval-ms", "200", "--addr-file"])
                .arg(&file)
                .arg("--admin-addr-file")
                .arg(&admin_file)
                .arg("--data-dir")
                .arg(dir.path().join(format!("node{i}"))),
        ));
        addrs.push(bound_addr(&file).await);
        admins.push(bound_addr(&admin_file).await);
    }
    // Listed only once the bootstrap has dialed each node and its TLS
    // handshake proved the id it registered with.
    let mut bootstrap = connect_bootstrap(&baddr).await;
    eventually(Duration::from_secs(30), "three nodes registered and verified", || {
        let mut b = bootstrap.clone();
        async move { (b.get_peers(GetPeersRequest::default()).await.ok()?.into_inner().peers.len() == 3).then_some(()) }
    })
    .await;

    // Mining is an operator's call: the admin port, never the P2P port.
    let mut node1 = AdminClient::new(connect(&admins[0], true).await);
    let mined = node1.mine_block(MineBlockRequest { data: b"from a process".to_vec() }).await.unwrap().into_inner();
    let hash = mined.block.unwrap().hash;
    for addr in &addrs {
        eventually(Duration::from_secs(30), &format!("{addr} has the mined block"), || {
            let hash = hash.clone();
            async move {
                let mut c = NodeClient::new(connect(addr, false).await);
                let s = c.get_status(GetStatusRequest {}).await.ok()?.into_inner();
                (s.tip_hash == hash).then_some(())
            }
        })
        .await;
    }

    // SIGTERM: the node removes itself from the bootstrap and exits cleanly.
    let mut node3 = nodes.pop().unwrap();
    crate::signal(node3.0.id(), nix::sys::signal::Signal::SIGTERM).expect("SIGTERM node3");
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
                // The addresses are made up: list them without dialing.
                .args(["--verify-registrations", "false"])
                .arg("--addr-file")
                .arg(&file)
                .arg("--data-dir")
                .arg(&data),
        );
        (proc, file)
    };
    let (mut server, file) = start("first");
    let client = connect_bootstrap(&bound_addr(&file).await).await;
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
    let mut client = connect_bootstrap(&bound_addr(&file).await).await;
    let resp = client.get_peers(GetPeersRequest { limit: 1000, ..Default::default() }).await.unwrap().into_inner();
    let stored: std::collections::HashSet<String> = resp.peers.into_iter().map(|p| p.address).collect();
    for a in &acked {
        assert!(stored.contains(a), "acknowledged {a} lost by kill -9");
    }
}

/// CPU time (user + system, in clock ticks) the process has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("process alive");
    // Fields after the command name (which is in parentheses): utime is the 12th, stime the 13th.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[tokio::test]
async fn out_of_file_descriptors_the_servers_neither_spin_nor_stay_down() {
    for server in ["bootstrap-svc", "node-svc"] {
        let dir = tempfile::tempdir().unwrap();
        let file = addr_file(dir.path(), server);
        // A low descriptor limit, set by the shell that then becomes the server.
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("ulimit -n 64 && exec \"$0\" \"$@\"")
            .arg(binary(server))
            .args(["--listen", "127.0.0.1:0", "--addr-file"])
            .arg(&file)
            .arg("--data-dir")
            .arg(dir.path().join("data"));
        let proc = spawn(&mut cmd);
        let addr = bound_addr(&file).await;
        let pid = proc.0.id();
        // Far more connections than descriptors: the server runs out.
        let mut held = Vec::new();
        for _ in 0..200 {
            // Once the listen backlog is full too, a connect just hangs: stop there.
            match tokio::time::timeout(Duration::from_millis(500), tokio::net::TcpStream::connect(&addr)).await {
                Ok(Ok(s)) => held.push(s),
                _ => break,
            }
        }
        assert!(held.len() > 64, "only {} connections: the descriptor limit was not reached", held.len());
        // Out of descriptors, accept fails at once, every time; the old
        // accept loop retried immediately and burned a whole core. Over a
        // 2-second window the server must stay mostly idle.
        let before = cpu_ticks(pid);
        let window = std::time::Instant::now();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let used = cpu_ticks(pid) - before;
        let ticks_per_sec = 100; // USER_HZ on Linux
        let busy = used as f64 / (window.elapsed().as_secs_f64() * ticks_per_sec as f64);
        assert!(busy < 0.3, "{server} used {:.0}% of a core while out of descriptors", busy * 100.0);
        // The clients go away; the server serves again without a restart.
        drop(held);
        let freed = std::time::Instant::now();
        eventually(Duration::from_secs(30), &format!("{server} serves again"), || {
            let addr = addr.clone();
            async move {
                let channel = p2p_proto::dial::DialSettings::new(Duration::from_secs(1), Duration::from_secs(2))
                    .connect(&addr, &p2p_proto::tls::ClientTls::anonymous(), None)
                    .await
                    .ok()?
                    .channel;
                let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
                health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.ok()
            }
        })
        .await;
        eprintln!(
            "{server}: busy {:.1}% of a core at the fd limit; serving again {} ms after the clients left",
            busy * 100.0,
            freed.elapsed().as_millis()
        );
    }
}

#[tokio::test]
async fn the_real_binaries_refuse_an_impostor_and_mine_only_on_a_token_guarded_admin_port() {
    use p2p_proto::admin::{AddPeerRequest, ListConnectionsRequest};
    let dir = tempfile::tempdir().unwrap();
    let start = |name: &str, extra: &[&str]| {
        let (file, admin_file) = (addr_file(dir.path(), name), addr_file(dir.path(), &format!("{name}-admin")));
        let proc = spawn(
            Command::new(binary("node-svc"))
                .args(["--listen", "127.0.0.1:0", "--difficulty-bits", "8", "--ping-interval-ms", "200"])
                .args(extra)
                .arg("--addr-file")
                .arg(&file)
                .arg("--admin-addr-file")
                .arg(&admin_file)
                .arg("--data-dir")
                .arg(dir.path().join(name)),
        );
        (proc, file, admin_file)
    };
    // A: a real node whose admin API insists on a token.
    let (_a, a_file, a_admin_file) = start("a", &["--admin-token", "let-me-in"]);
    let (a_addr, a_admin) = (bound_addr(&a_file).await, bound_addr(&a_admin_file).await);
    let a_id = {
        let (key, _) = p2p_proto::identity::load_or_create(&dir.path().join("a").join("node.key")).unwrap();
        p2p_proto::signing::node_id(&key.verifying_key().to_bytes())
    };
    // B is told that another node id lives at A's address: A cannot prove it.
    let impostor_id = p2p_proto::signing::node_id(&[3; 32]);
    let (_b, b_file, b_admin_file) = start("b", &["--peer", &format!("{impostor_id}@{a_addr}"), "--max-failures", "1"]);
    let b_admin = bound_addr(&b_admin_file).await;
    let mut b = AdminClient::new(connect(&b_admin, true).await);
    let a_entry = |b: AdminClient<tonic::transport::Channel>| {
        let a_addr = a_addr.clone();
        async move {
            let list = b.clone().list_connections(ListConnectionsRequest {}).await.ok()?.into_inner().connections;
            list.into_iter().find(|c| c.address == a_addr)
        }
    };
    eventually(Duration::from_secs(30), "A is failing at B: its handshake proves the wrong id", || async {
        a_entry(b.clone()).await.filter(|c| c.state() == p2p_proto::node::PeerState::Failing)
    })
    .await;
    let entry = a_entry(b.clone()).await.unwrap();
    assert!(!entry.verified && entry.node_id == impostor_id, "{entry:?}");
    // The operator corrects it (remove, add with the right id): A is active, proven.
    b.remove_peer(p2p_proto::admin::RemovePeerRequest { address: a_addr.clone() }).await.unwrap();
    b.add_peer(AddPeerRequest { peer: format!("{a_id}@{a_addr}") }).await.unwrap();
    eventually(Duration::from_secs(30), "A is active at B under its proven id", || async {
        a_entry(b.clone())
            .await
            .filter(|c| c.verified && c.node_id == a_id && c.state() == p2p_proto::node::PeerState::Active)
    })
    .await;

    // A same-host attacker with a certificate of its own sends B invalid
    // blocks in A's name: the attacker is banned, A stays active.
    let attacker = ed25519_dalek::SigningKey::from_bytes(&[77; 32]);
    let attacker_id = p2p_proto::signing::node_id(&attacker.verifying_key().to_bytes());
    let b_addr = bound_addr(&b_file).await;
    let mut evil = NodeClient::new(node_svc::testkit::channel_as(&b_addr, &attacker, None).await);
    let params = node_svc::chain::NetworkParams { difficulty_bits: 8, ..node_svc::chain::NetworkParams::devnet() };
    let mut tampered = node_svc::convert::block_to_proto(
        &node_svc::chain::testing::chain_of(&params, 1, p2p_proto::unix_ms_now() - 60_000)[1],
    );
    tampered.nonce += 1;
    let as_a = p2p_proto::node::Sender { node_id: a_id.clone(), address: a_addr.clone() };
    for _ in 0..3 {
        let req = p2p_proto::node::SendBlockRequest { block: Some(tampered.clone()), sender: Some(as_a.clone()) };
        assert!(evil.send_block(req).await.is_err());
    }
    let list = b.list_connections(ListConnectionsRequest {}).await.unwrap().into_inner().connections;
    assert!(
        list.iter().any(|c| c.node_id == attacker_id && c.state() == p2p_proto::node::PeerState::Banned),
        "the attacker's proven id is banned: {list:?}"
    );
    let a_now = a_entry(b.clone()).await.unwrap();
    assert_eq!(a_now.state(), p2p_proto::node::PeerState::Active, "A is neither banned nor dropped: {a_now:?}");
    assert!(a_now.score >= 0, "{a_now:?}");

    // The public port serves no MineBlock; the admin port wants the token.
    let mut on_p2p = AdminClient::new(connect(&a_addr, false).await);
    let err = on_p2p.mine_block(MineBlockRequest { data: b"x".to_vec() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");
    let mut admin = AdminClient::new(connect(&a_admin, true).await);
    let err = admin.mine_block(MineBlockRequest { data: b"x".to_vec() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    let mut wrong = tonic::Request::new(MineBlockRequest { data: b"x".to_vec() });
    wrong.metadata_mut().insert("authorization", "Bearer let-me-out".parse().unwrap());
    assert_eq!(admin.mine_block(wrong).await.unwrap_err().code(), tonic::Code::Unauthenticated);
    let mut right = tonic::Request::new(MineBlockRequest { data: b"from the operator".to_vec() });
    right.metadata_mut().insert("authorization", "Bearer let-me-in".parse().unwrap());
    let mined = admin.mine_block(right).await.unwrap().into_inner();
    assert_eq!(mined.block.unwrap().index, 1);
}

#[tokio::test]
async fn p2pctl_reads_the_admin_cookie_of_a_node_whose_admin_api_is_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let (file, admin_file) = (addr_file(dir.path(), "n"), addr_file(dir.path(), "n-admin"));
    let data = dir.path().join("n");
    let _node = spawn(
        Command::new(binary("node-svc"))
            .args(["--listen", "127.0.0.1:0", "--difficulty-bits", "8", "--admin-listen", "0.0.0.0:0"])
            .arg("--addr-file")
            .arg(&file)
            .arg("--admin-addr-file")
            .arg(&admin_file)
            .arg("--data-dir")
            .arg(&data),
    );
    bound_addr(&file).await;
    let port = bound_addr(&admin_file).await.rsplit(':').next().unwrap().to_string();
    let admin = format!("127.0.0.1:{port}");
    let p2pctl = |extra: &[&str]| {
        let mut cmd = Command::new(binary("p2pctl"));
        cmd.args(["--admin", &admin]).args(extra).args(["node", "mine", "with the cookie"]);
        cmd.output().unwrap()
    };
    // Bound to every interface: no token, no mining.
    let refused = p2pctl(&[]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Unauthenticated"), "{refused:?}");
    let ok = p2pctl(&["--data-dir", data.to_str().unwrap()]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("mined block 1"), "{ok:?}");
}

#[tokio::test]
async fn an_acknowledged_transaction_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("n");
    let start = |name: &str| {
        let file = addr_file(dir.path(), name);
        let proc = spawn(
            Command::new(binary("node-svc"))
                .args(["--listen", "127.0.0.1:0", "--difficulty-bits", "8", "--admin-listen", "off"])
                .arg("--addr-file")
                .arg(&file)
                .arg("--data-dir")
                .arg(&data),
        );
        (proc, file)
    };
    let (mut first, file) = start("first");
    let addr = bound_addr(&file).await;
    let mut c = NodeClient::new(connect(&addr, false).await);
    let genesis = c.get_status(GetStatusRequest {}).await.unwrap().into_inner().genesis_hash;
    let genesis: [u8; 32] = genesis.try_into().unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&[12; 32]);
    let tx = node_svc::chain::Transaction::sign(&key, &genesis, 1, p2p_proto::unix_ms_now(), b"kept".to_vec());
    let id = c.submit_transaction(node_svc::convert::tx_to_proto(&tx)).await.unwrap().into_inner().id;
    // The acknowledgement came after the mempool's commit: SIGKILL now.
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let (_second, file) = start("second");
    let addr = bound_addr(&file).await;
    let mut c = NodeClient::new(connect(&addr, false).await);
    let r = c.get_transaction(p2p_proto::node::GetTransactionRequest { id }).await.unwrap().into_inner();
    assert_eq!(r.status(), p2p_proto::node::TransactionStatus::Pending);
    assert_eq!(r.transaction.unwrap().payload, b"kept");
}
