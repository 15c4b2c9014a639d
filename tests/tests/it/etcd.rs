//! The registry on a real 3-member etcd cluster (Debian's `etcd-server`,
//! which `.ci/run` installs): members on loopback ports in a temp dir,
//! bootstrap servers in-process and as a process.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bootstrap_svc::store::etcd::EtcdOptions;
use bootstrap_svc::{Config, StoreChoice};
use ed25519_dalek::SigningKey;
use futures::StreamExt;
use node_svc::testkit::{TestBootstrap, connect_bootstrap, eventually, reserve_port};
use p2p_proto::bootstrap::bootstrap_client::BootstrapClient;
use p2p_proto::bootstrap::{
    GetInfoRequest, GetPeersRequest, PeerEvent, PeerEventKind, RegisterRequest, RemoveRequest, WatchPeersRequest,
};
use p2p_proto::etcd::maintenance_client::MaintenanceClient;
use p2p_proto::etcd::{RangeRequest, StatusRequest};
use p2p_proto::signing::{signed_register, signed_remove};
use tonic::Code;
use tonic::transport::Channel;

use crate::grpcurl::tool_available;

/// One etcd member as a child process.
struct Member {
    name: String,
    client: String,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Member {
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("etcd log");
        let child =
            Command::new("etcd").args(&self.args).stdout(Stdio::null()).stderr(log).spawn().expect("start etcd");
        self.child = Some(child);
    }

    /// kill -9: no goodbye to the others.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A 3-member etcd cluster on loopback, in a temp dir.
pub struct EtcdCluster {
    members: Vec<Member>,
    _dir: tempfile::TempDir,
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            m.kill();
        }
    }
}

impl EtcdCluster {
    /// Starts three members and waits until they have a leader; None (the
    /// test is skipped) when etcd is not installed and not required.
    pub async fn start() -> Option<Self> {
        if !tool_available("etcd", "--version") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (reserve_port().addr.port(), reserve_port().addr.port())).collect();
        let token = format!("t{}", rand::random::<u64>());
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let c = format!("http://127.0.0.1:{client}");
            let p = format!("http://127.0.0.1:{peer}");
            let args = vec![
                format!("--name=m{i}"),
                format!("--data-dir={}", dir.path().join(format!("m{i}")).display()),
                format!("--listen-client-urls={c}"),
                format!("--advertise-client-urls={c}"),
                format!("--listen-peer-urls={p}"),
                format!("--initial-advertise-peer-urls={p}"),
                format!("--initial-cluster={initial}"),
                format!("--initial-cluster-token={token}"),
                "--initial-cluster-state=new".into(),
                // Loopback: elections in well under a second.
                "--heartbeat-interval=50".into(),
                "--election-timeout=500".into(),
                "--logger=zap".into(),
                "--log-outputs=stderr".into(),
            ];
            let mut m = Member {
                name: format!("m{i}"),
                client: format!("127.0.0.1:{client}"),
                args,
                log: dir.path().join(format!("m{i}.log")),
                child: None,
            };
            m.start();
            members.push(m);
        }
        let cluster = EtcdCluster { members, _dir: dir };
        cluster.wait_for_leader(&[0, 1, 2]).await;
        Some(cluster)
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client.clone()).collect()
    }

    /// The member ids `member` reports: its own and its leader's (0: none).
    async fn status(&self, member: usize) -> Option<(u64, u64)> {
        let ch = Channel::from_shared(format!("http://{}", self.members[member].client))
            .ok()?
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(1))
            .connect()
            .await
            .ok()?;
        let s = MaintenanceClient::new(ch).status(StatusRequest {}).await.ok()?.into_inner();
        Some((s.header.map(|h| h.member_id).unwrap_or(0), s.leader))
    }

    async fn wait_for_leader(&self, among: &[usize]) -> usize {
        eventually(Duration::from_secs(30), "the etcd members elect a leader", || async {
            let mut ids = Vec::new();
            let mut leaders = HashSet::new();
            for &i in among {
                let (id, leader) = self.status(i).await?;
                ids.push((i, id));
                leaders.insert(leader);
            }
            let leader = *leaders.iter().next().filter(|l| leaders.len() == 1 && **l != 0)?;
            ids.iter().find(|(_, id)| *id == leader).map(|(i, _)| *i)
        })
        .await
    }

    fn kill(&mut self, member: usize) {
        self.members[member].kill();
    }

    fn restart(&mut self, member: usize) {
        self.members[member].start();
    }

    fn name(&self, member: usize) -> &str {
        &self.members[member].name
    }
}

/// A bootstrap on `endpoints`, listing without dialing (made-up addresses).
fn etcd_config(dir: &Path, endpoints: Vec<String>, prefix: &str) -> Config {
    let mut c = Config::new(dir);
    c.disable_rate_limits();
    c.verify_registrations = false;
    let mut options = EtcdOptions::new(endpoints);
    options.prefix = prefix.into();
    options.request_timeout = Duration::from_millis(1500);
    c.store = StoreChoice::Etcd(options);
    c
}

fn prefix() -> String {
    format!("/test-{}/", rand::random::<u32>())
}

async fn registry_id(client: &mut BootstrapClient<Channel>) -> [u8; 16] {
    let info = client.get_info(GetInfoRequest {}).await.unwrap().into_inner();
    info.registry_id.as_slice().try_into().expect("16-byte registry id")
}

fn signed(key: &SigningKey, registry: &[u8; 16], address: &str, ttl: u32, ts: u64) -> RegisterRequest {
    signed_register(key, registry, address, ttl, ts)
}

async fn all_addresses(client: &mut BootstrapClient<Channel>) -> Vec<String> {
    crate::bootstrap::all_addresses(client, 1000).await
}

/// A random sample of up to 10 listed addresses (from the server's copy).
async fn sampled(client: &BootstrapClient<Channel>) -> Option<Vec<String>> {
    let resp =
        client.clone().get_peers(GetPeersRequest { limit: 10, random: true, ..Default::default() }).await.ok()?;
    Some(resp.into_inner().peers.into_iter().map(|p| p.address).collect())
}

async fn watch(client: &mut BootstrapClient<Channel>) -> tonic::Streaming<PeerEvent> {
    client.watch_peers(WatchPeersRequest::default()).await.expect("watch").into_inner()
}

/// The next event about `address` (others are skipped), within `within`.
async fn next_about(events: &mut tonic::Streaming<PeerEvent>, address: &str, within: Duration) -> PeerEvent {
    tokio::time::timeout(within, next_about_any(events, address))
        .await
        .unwrap_or_else(|_| panic!("no event about {address} within {within:?}"))
}

fn kind(ev: &PeerEvent) -> PeerEventKind {
    PeerEventKind::try_from(ev.kind).unwrap()
}

fn now_ms() -> u64 {
    p2p_proto::unix_ms_now()
}

#[tokio::test]
async fn two_bootstraps_on_one_etcd_cluster_share_the_registry_its_rules_and_its_events() {
    let Some(cluster) = EtcdCluster::start().await else { return };
    let prefix = prefix();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = TestBootstrap::start(etcd_config(da.path(), cluster.endpoints(), &prefix)).await;
    let b = TestBootstrap::start(etcd_config(db.path(), cluster.endpoints(), &prefix)).await;
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    // One registry: the id signed payloads name is the same on both.
    let registry = registry_id(&mut ca).await;
    assert_eq!(registry, registry_id(&mut cb).await);
    let mut on_b = watch(&mut cb).await;
    let mut on_a = watch(&mut ca).await;

    let key = SigningKey::from_bytes(&[7; 32]);
    let t0 = now_ms();
    let first = signed(&key, &registry, "10.0.0.1:7000", 60, t0);
    let r = ca.register(first.clone()).await.expect("register on A").into_inner();
    assert!(r.created);
    // Seen on B at once (its pages are linearizable reads) and announced there.
    assert!(all_addresses(&mut cb).await.contains(&"10.0.0.1:7000".to_string()));
    assert_eq!(kind(&next_about(&mut on_b, "10.0.0.1:7000", Duration::from_secs(10)).await), PeerEventKind::Joined);
    // B's random samples come from its copy, which the watch keeps.
    eventually(Duration::from_secs(10), "B samples the peer registered on A", || async {
        sampled(&cb).await?.contains(&"10.0.0.1:7000".to_string()).then_some(())
    })
    .await;

    // The rules hold across servers: A's request replayed on B is refused,
    // another key cannot take the address, an unsigned request cannot
    // refresh it, and a newer signature by the key refreshes it.
    let replay = cb.register(first).await.unwrap_err();
    assert_eq!(replay.code(), Code::PermissionDenied, "{replay:?}");
    let other = SigningKey::from_bytes(&[8; 32]);
    let stolen = cb.register(signed(&other, &registry, "10.0.0.1:7000", 60, t0 + 1)).await.unwrap_err();
    assert_eq!(stolen.code(), Code::PermissionDenied, "{stolen:?}");
    let unsigned =
        cb.register(RegisterRequest { address: "10.0.0.1:7000".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(unsigned.code(), Code::PermissionDenied, "{unsigned:?}");
    assert!(!cb.register(signed(&key, &registry, "10.0.0.1:7000", 60, t0 + 2)).await.unwrap().into_inner().created);
    assert_eq!(kind(&next_about(&mut on_a, "10.0.0.1:7000", Duration::from_secs(10)).await), PeerEventKind::Joined);
    assert_eq!(kind(&next_about(&mut on_a, "10.0.0.1:7000", Duration::from_secs(10)).await), PeerEventKind::Refreshed);

    // Removed through B with the key's signature: A announces LEFT, and
    // the floor stays: the removed registration's request is still a replay.
    let removed = cb.remove(signed_remove(&key, &registry, "10.0.0.1:7000", t0 + 3)).await.unwrap().into_inner();
    assert!(removed.removed);
    assert_eq!(kind(&next_about(&mut on_a, "10.0.0.1:7000", Duration::from_secs(10)).await), PeerEventKind::Left);
    assert!(!all_addresses(&mut ca).await.contains(&"10.0.0.1:7000".to_string()));
    let late = ca.register(signed(&key, &registry, "10.0.0.1:7000", 60, t0 + 2)).await.unwrap_err();
    assert_eq!(late.code(), Code::PermissionDenied, "{late:?}");

    // Pages walk everything in address order across both servers' writes.
    for i in 0..30 {
        let c = if i % 2 == 0 { &mut ca } else { &mut cb };
        c.register(RegisterRequest { address: format!("10.1.0.{i}:7000"), ..Default::default() }).await.unwrap();
    }
    let mut page_by_page = Vec::new();
    let mut token = String::new();
    loop {
        let resp = cb
            .get_peers(GetPeersRequest { limit: 7, page_token: token.clone(), ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        assert!(resp.peers.len() <= 7);
        page_by_page.extend(resp.peers.into_iter().map(|p| p.address));
        if resp.next_page_token.is_empty() {
            break;
        }
        token = resp.next_page_token;
    }
    let mut expected: Vec<String> = (0..30).map(|i| format!("10.1.0.{i}:7000")).collect();
    expected.sort();
    assert_eq!(page_by_page, expected);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn etcd_leases_end_registrations_on_schedule_with_an_expired_event() {
    let Some(cluster) = EtcdCluster::start().await else { return };
    let prefix = prefix();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut config = etcd_config(da.path(), cluster.endpoints(), &prefix);
    config.lease.min_ttl_secs = 1;
    let a = TestBootstrap::start(config).await;
    let b = TestBootstrap::start(etcd_config(db.path(), cluster.endpoints(), &prefix)).await;
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let mut on_b = watch(&mut cb).await;

    let r = ca
        .register(RegisterRequest { address: "10.0.0.2:7000".into(), ttl_seconds: 3, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let expires = r.expires_at_unix_ms;
    assert_eq!(kind(&next_about(&mut on_b, "10.0.0.2:7000", Duration::from_secs(10)).await), PeerEventKind::Joined);
    assert!(all_addresses(&mut cb).await.contains(&"10.0.0.2:7000".to_string()));

    // Nobody refreshes it: B announces the expiry once the lease has ended,
    // not before, and within a few seconds after.
    let ev = next_about(&mut on_b, "10.0.0.2:7000", Duration::from_secs(15)).await;
    let seen = now_ms();
    assert_eq!(kind(&ev), PeerEventKind::Expired);
    assert!(seen >= expires, "EXPIRED {} ms before the lease ended", expires - seen);
    assert!(seen <= expires + 5_000, "EXPIRED {} ms after the lease ended", seen - expires);
    assert!(!all_addresses(&mut ca).await.contains(&"10.0.0.2:7000".to_string()));
    // And the record is gone from etcd itself, not just hidden.
    let etcd = bootstrap_svc::store::etcd::EtcdClient::new(&cluster.endpoints(), Duration::from_secs(2)).unwrap();
    let key = bootstrap_svc::store::etcd::keys::Keys::new(&prefix)
        .key(bootstrap_svc::store::etcd::keys::Kind::Listed, "10.0.0.2:7000");
    let left = etcd.range(RangeRequest { key, count_only: true, ..Default::default() }).await.unwrap();
    assert_eq!(left.count, 0);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn registrations_continue_without_one_member_fail_unavailable_without_quorum_and_recover() {
    let Some(mut cluster) = EtcdCluster::start().await else { return };
    let prefix = prefix();
    let dir = tempfile::tempdir().unwrap();
    let a = TestBootstrap::start(etcd_config(dir.path(), cluster.endpoints(), &prefix)).await;
    let mut ca = a.client().await;
    let leader = cluster.wait_for_leader(&[0, 1, 2]).await;
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();

    // A follower dies: every registration still succeeds (the client moves
    // to another member when its member stops answering).
    cluster.kill(followers[0]);
    let mut acked = Vec::new();
    for i in 0..30 {
        let addr = format!("10.2.0.{i}:7000");
        ca.register(RegisterRequest { address: addr.clone(), ..Default::default() })
            .await
            .unwrap_or_else(|e| panic!("register {addr} with {} down: {e:?}", cluster.name(followers[0])));
        acked.push(addr);
    }

    // Another dies: no quorum. A Register is refused with UNAVAILABLE
    // (never acknowledged), and the health check says NOT_SERVING.
    cluster.kill(followers[1]);
    let started = Instant::now();
    let err = ca
        .register(RegisterRequest { address: "10.2.1.0:7000".into(), ..Default::default() })
        .await
        .expect_err("a write without quorum must not be acknowledged");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("etcd"), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
    let health =
        tonic_health::pb::health_client::HealthClient::new(node_svc::testkit::connect(&a.endpoint(), false).await);
    eventually(Duration::from_secs(20), "NOT_SERVING without quorum", || {
        let mut h = health.clone();
        async move {
            let s = h.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.ok()?;
            (s.into_inner().status == tonic_health::pb::health_check_response::ServingStatus::NotServing as i32)
                .then_some(())
        }
    })
    .await;

    // One comes back: quorum again, registrations work again.
    cluster.restart(followers[1]);
    eventually(Duration::from_secs(30), "registrations work again with two of three members", || {
        let mut ca = ca.clone();
        async move { ca.register(RegisterRequest { address: "10.2.1.1:7000".into(), ..Default::default() }).await.ok() }
    })
    .await;
    let listed: HashSet<String> = all_addresses(&mut ca).await.into_iter().collect();
    for addr in &acked {
        assert!(listed.contains(addr), "acknowledged {addr} is missing");
    }
    a.stop().await;
}

#[tokio::test]
async fn a_bootstrap_killed_under_register_load_loses_no_acknowledged_registration() {
    let Some(cluster) = EtcdCluster::start().await else { return };
    let prefix = prefix();
    let dir = tempfile::tempdir().unwrap();
    let addr_file = dir.path().join("bootstrap.addr");
    let mut child = Command::new(crate::binary("bootstrap-svc"))
        .args(["--listen", "127.0.0.1:0", "--store", "etcd", "--etcd-prefix", &prefix])
        .args(["--etcd-endpoints", &cluster.endpoints().join(",")])
        .args(["--verify-registrations", "false", "--register-per-minute", "0"])
        .arg("--addr-file")
        .arg(&addr_file)
        .arg("--data-dir")
        .arg(dir.path().join("b"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let endpoint = eventually(Duration::from_secs(30), "the bootstrap listens", || async {
        std::fs::read_to_string(&addr_file).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
    })
    .await;
    let client = connect_bootstrap(&endpoint).await;

    // Eight clients register distinct addresses as fast as they can.
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut load = Vec::new();
    for w in 0..8 {
        let (mut c, acked) = (client.clone(), acked.clone());
        load.push(tokio::spawn(async move {
            for i in 0.. {
                let addr = format!("10.3.{w}.{i}:7000");
                match c.register(RegisterRequest { address: addr.clone(), ..Default::default() }).await {
                    Ok(_) => acked.lock().unwrap().push(addr),
                    Err(_) => return,
                }
            }
        }));
    }
    eventually(Duration::from_secs(60), "300 registrations acknowledged", || async {
        (acked.lock().unwrap().len() >= 300).then_some(())
    })
    .await;
    child.kill().unwrap(); // SIGKILL, mid-load
    child.wait().unwrap();
    for l in load {
        let _ = l.await;
    }
    let acked = acked.lock().unwrap().clone();

    // Another server on the same cluster holds every acknowledged one.
    let other = tempfile::tempdir().unwrap();
    let b = TestBootstrap::start(etcd_config(other.path(), cluster.endpoints(), &prefix)).await;
    let listed: HashSet<String> = all_addresses(&mut b.client().await).await.into_iter().collect();
    let lost: Vec<&String> = acked.iter().filter(|a| !listed.contains(*a)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged registrations lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    b.stop().await;
}

#[tokio::test]
async fn a_watch_overtaken_by_compaction_lists_again_and_announces_what_it_missed() {
    let Some(mut cluster) = EtcdCluster::start().await else { return };
    let prefix = prefix();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leader = cluster.wait_for_leader(&[0, 1, 2]).await;
    let lonely = (leader + 1) % 3;
    let rest: Vec<String> = (0..3).filter(|&i| i != lonely).map(|i| cluster.endpoints()[i].clone()).collect();
    // B reaches the cluster through one member only; A through the others.
    let a = TestBootstrap::start(etcd_config(da.path(), rest.clone(), &prefix)).await;
    let b = TestBootstrap::start(etcd_config(db.path(), vec![cluster.endpoints()[lonely].clone()], &prefix)).await;
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    ca.register(RegisterRequest { address: "10.4.0.1:7000".into(), ..Default::default() }).await.unwrap();
    let mut on_b = watch(&mut cb).await;
    // B's copy has it (its samples say so).
    eventually(Duration::from_secs(10), "B's copy holds the first peer", || async {
        (sampled(&cb).await?.len() == 1).then_some(())
    })
    .await;

    // B's member goes away; meanwhile a peer leaves, another joins, and
    // the history is compacted past what B has seen.
    cluster.kill(lonely);
    let gone = ca.remove(RemoveRequest { address: "10.4.0.1:7000".into(), ..Default::default() }).await.unwrap();
    assert!(gone.into_inner().removed);
    ca.register(RegisterRequest { address: "10.4.0.2:7000".into(), ..Default::default() }).await.unwrap();
    let etcd = bootstrap_svc::store::etcd::EtcdClient::new(&rest, Duration::from_secs(2)).unwrap();
    let head = etcd
        .range(RangeRequest { key: b"/".to_vec(), count_only: true, ..Default::default() })
        .await
        .unwrap()
        .header
        .unwrap()
        .revision;
    etcd.compact(head).await.unwrap();
    cluster.restart(lonely);

    // B lists again and tells its watchers what changed.
    let mut seen = std::collections::HashMap::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while seen.len() < 2 {
            let ev = on_b.next().await.expect("stream open").expect("event");
            if let Some(p) = &ev.peer {
                seen.insert(p.address.clone(), kind(&ev));
            }
        }
    })
    .await
    .expect("B announces the changes it missed");
    assert_eq!(seen.get("10.4.0.1:7000"), Some(&PeerEventKind::Left), "{seen:?}");
    assert_eq!(seen.get("10.4.0.2:7000"), Some(&PeerEventKind::Joined), "{seen:?}");
    assert_eq!(sampled(&cb).await.expect("a sample"), ["10.4.0.2:7000"]);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_record_whose_lease_outlives_its_expiry_is_expired_by_the_servers() {
    let Some(cluster) = EtcdCluster::start().await else { return };
    let prefix = prefix();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // A's clock runs ahead of etcd's: the lease (60 s of etcd's time) is
    // still alive when A's clock says the registration expired, as after an
    // etcd leader change renews leases in full.
    let clock = bootstrap_svc::clock::ManualClock::new(now_ms());
    let mut config = etcd_config(da.path(), cluster.endpoints(), &prefix);
    config.clock = Arc::new(clock.clone());
    let a = TestBootstrap::start(config).await;
    let b = TestBootstrap::start(etcd_config(db.path(), cluster.endpoints(), &prefix)).await;
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let mut on_b = watch(&mut cb).await;
    ca.register(RegisterRequest { address: "10.5.0.1:7000".into(), ttl_seconds: 60, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(kind(&next_about(&mut on_b, "10.5.0.1:7000", Duration::from_secs(10)).await), PeerEventKind::Joined);

    clock.advance_ms(70_000);
    // Well before the 60 s lease could end.
    let ev = next_about(&mut on_b, "10.5.0.1:7000", Duration::from_secs(20)).await;
    assert_eq!(kind(&ev), PeerEventKind::Expired);
    let etcd = bootstrap_svc::store::etcd::EtcdClient::new(&cluster.endpoints(), Duration::from_secs(2)).unwrap();
    let key = bootstrap_svc::store::etcd::keys::Keys::new(&prefix)
        .key(bootstrap_svc::store::etcd::keys::Kind::Listed, "10.5.0.1:7000");
    let left = etcd.range(RangeRequest { key, count_only: true, ..Default::default() }).await.unwrap();
    assert_eq!(left.count, 0, "the overdue record is deleted from etcd");
    // Exactly one EXPIRED: nothing more about it arrives.
    let more = tokio::time::timeout(Duration::from_secs(2), next_about_any(&mut on_b, "10.5.0.1:7000")).await;
    assert!(more.is_err(), "a second event: {more:?}");
    a.stop().await;
    b.stop().await;
}

async fn next_about_any(events: &mut tonic::Streaming<PeerEvent>, address: &str) -> PeerEvent {
    loop {
        let ev = events.next().await.expect("stream open").expect("event");
        if ev.peer.as_ref().is_some_and(|p| p.address == address) {
            return ev;
        }
    }
}

#[tokio::test]
async fn a_bootstrap_waiting_for_an_unreachable_etcd_stops_on_shutdown() {
    // Nothing listens there: startup keeps waiting for the cluster (60 s).
    let port = reserve_port().addr.port();
    let dir = tempfile::tempdir().unwrap();
    let b = TestBootstrap::start(etcd_config(dir.path(), vec![format!("127.0.0.1:{port}")], &prefix())).await;
    tokio::time::timeout(Duration::from_secs(20), b.stop())
        .await
        .expect("a shutdown signal ends the wait for etcd (it would otherwise last 60 s)");
}

/// A TCP proxy to one etcd member whose answers can be held back (the
/// member applies what it is sent; its replies wait while the flag is set).
async fn freezable_proxy(target: String) -> (String, tokio::sync::watch::Sender<bool>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (frozen, f) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&target).await else { continue };
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            tokio::spawn(async move { tokio::io::copy(&mut cr, &mut sw).await });
            let mut f = f.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if f.wait_for(|frozen| !frozen).await.is_err() {
                        return;
                    }
                    if cw.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, frozen)
}

#[tokio::test]
async fn a_write_whose_answer_was_lost_is_recognised_not_refused_as_a_replay() {
    let Some(cluster) = EtcdCluster::start().await else { return };
    let prefix = prefix();
    let endpoints = cluster.endpoints();
    let (proxy, frozen) = freezable_proxy(endpoints[0].clone()).await;
    // The proxied member comes first, so calls go through it while it answers.
    let dir = tempfile::tempdir().unwrap();
    let a =
        TestBootstrap::start(etcd_config(dir.path(), vec![proxy, endpoints[1].clone(), endpoints[2].clone()], &prefix))
            .await;
    let mut ca = a.client().await;
    let registry = registry_id(&mut ca).await;
    let key = SigningKey::from_bytes(&[9; 32]);
    let t0 = now_ms();
    ca.register(signed(&key, &registry, "10.6.0.1:7000", 60, t0)).await.unwrap();
    // Once A's copy holds it, the owner's refresh skips the read and goes
    // straight to a compare-and-swap.
    eventually(Duration::from_secs(10), "A's copy holds the peer", || async {
        (!sampled(&ca).await?.is_empty()).then_some(())
    })
    .await;

    // The member applies the refresh but its answer is held back past the
    // deadline; the retry on the next member finds the revision changed (by
    // this very write). Read back, it is recognised: a success, not a replay.
    frozen.send_replace(true);
    let refreshed = ca.register(signed(&key, &registry, "10.6.0.1:7000", 60, t0 + 1)).await;
    frozen.send_replace(false);
    let refreshed = refreshed.expect("the refresh committed, so it must be acknowledged");
    assert!(!refreshed.into_inner().created);
    // And it did commit: the same request again is now a replay.
    let again = ca.register(signed(&key, &registry, "10.6.0.1:7000", 60, t0 + 1)).await.unwrap_err();
    assert_eq!(again.code(), Code::PermissionDenied, "{again:?}");
    a.stop().await;
}
