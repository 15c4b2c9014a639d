//! Storage faults on a real file system: a full disk (a small tmpfs, which
//! needs root to mount; `.ci/run` runs as root and sets P2P_REQUIRE_TOOLS,
//! so there the test cannot skip).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use node_svc::testkit::{TestBootstrap, eventually};
use p2p_proto::bootstrap::{GetPeersRequest, RegisterRequest};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A tmpfs of a fixed size, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(Tmpfs(dir.to_path_buf()));
        }
        assert!(
            std::env::var_os("P2P_REQUIRE_TOOLS").is_none(),
            "cannot mount a tmpfs (P2P_REQUIRE_TOOLS is set): the disk-full test needs root"
        );
        eprintln!("SKIPPED: cannot mount a tmpfs (needs root)");
        None
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `path` with one file; returns it. Its
/// size is well above the stores' recovery headroom (16 MiB), so removing
/// it is what lets them recover.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 16 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
    path
}

async fn health(endpoint: &str) -> Option<ServingStatus> {
    let channel = p2p_proto::dial::DialSettings::new(Duration::from_secs(2), Duration::from_secs(2))
        .connect(endpoint, &p2p_proto::tls::ClientTls::anonymous(), None)
        .await
        .ok()?
        .channel;
    let r = HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await.ok()?;
    ServingStatus::try_from(r.into_inner().status).ok()
}

#[tokio::test]
async fn a_full_disk_makes_the_registry_not_serving_until_it_recovers_and_nothing_acknowledged_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_fs) = Tmpfs::mount(dir.path(), "32m") else { return };
    let mut cfg = bootstrap_svc::Config::new(dir.path().join("registry"));
    cfg.disable_rate_limits();
    // Made-up addresses: listed without dialing them.
    cfg.verify_registrations = false;
    let server = TestBootstrap::start(cfg).await;
    let endpoint = server.endpoint();
    let mut c = server.client().await;
    let name = |i: usize| format!("{0}.{0}.{0}-{i}.example:3000", "n".repeat(55));
    let mut acked = Vec::new();
    for i in 0..20 {
        c.register(RegisterRequest { address: name(i), ..Default::default() }).await.unwrap();
        acked.push(name(i));
    }
    let filler = fill(dir.path());
    // Register until the disk refuses; every acknowledged one must survive.
    let mut refused = None;
    for i in 20..50_000 {
        match c.register(RegisterRequest { address: name(i), ..Default::default() }).await {
            Ok(_) => acked.push(name(i)),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let refused = refused.expect("the full disk refused a write");
    assert!(matches!(refused.code(), tonic::Code::Internal | tonic::Code::Unavailable), "{refused:?}");
    eventually(Duration::from_secs(30), "health says NOT_SERVING", || async {
        (health(&endpoint).await == Some(ServingStatus::NotServing)).then_some(())
    })
    .await;
    let err = c.register(RegisterRequest { address: "late:1".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "while failed, writes are refused at once: {err:?}");
    // Room again: the store reopens by itself and serves.
    std::fs::remove_file(filler).unwrap();
    eventually(Duration::from_secs(30), "health says SERVING again", || async {
        (health(&endpoint).await == Some(ServingStatus::Serving)).then_some(())
    })
    .await;
    c.register(RegisterRequest { address: "after:1".into(), ..Default::default() }).await.unwrap();
    let mut seen = std::collections::HashSet::new();
    let mut token = String::new();
    loop {
        let page = c
            .get_peers(GetPeersRequest { limit: 1000, page_token: token.clone(), ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.peers.into_iter().map(|p| p.address));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    for a in &acked {
        assert!(seen.contains(a), "acknowledged registration {a} was lost");
    }
    assert!(seen.contains("after:1"));
    eprintln!("{} registrations acknowledged before the disk filled; all present after recovery", acked.len());
    server.stop().await;
}

#[tokio::test]
async fn a_full_disk_makes_a_node_not_serving_until_it_recovers_and_no_accepted_block_is_lost() {
    use node_svc::chain::Origin;
    use node_svc::testkit::{TestNode, node_config, test_network};
    let dir = tempfile::tempdir().unwrap();
    let Some(_fs) = Tmpfs::mount(dir.path(), "32m") else { return };
    let data = dir.path().join("node");
    let node = TestNode::start(|addr| node_config(&data, addr, None, 8)).await;
    let endpoint = node.endpoint();
    let params = test_network(8);
    // 200 blocks of 60 KB: more than the disk will hold.
    let blocks = node_svc::chain::testing::extend_with(
        &params,
        &[params.genesis()],
        200,
        p2p_proto::unix_ms_now() - 600_000,
        |h| vec![h as u8; 60 * 1024],
        |_| {},
    );
    // Five blocks while there is room, then the disk fills up.
    let v = node.node().chain().accept(blocks[1..=5].to_vec(), Origin::Local).await.unwrap();
    assert!(v.iter().all(|v| v.is_ok()));
    let filler = fill(dir.path());
    let mut accepted = 5u64;
    let mut failed = None;
    for b in &blocks[6..] {
        match node.node().chain().accept(vec![b.clone()], Origin::Local).await {
            Ok(v) if v.iter().all(|v| v.is_ok()) => accepted += 1,
            Ok(v) => panic!("{v:?}"),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let failed = failed.expect("the full disk refused a block");
    assert_eq!(tonic::Status::from(failed).code(), tonic::Code::Internal);
    eventually(Duration::from_secs(30), "node health says NOT_SERVING", || async {
        (health(&endpoint).await == Some(ServingStatus::NotServing)).then_some(())
    })
    .await;
    std::fs::remove_file(filler).unwrap();
    eventually(Duration::from_secs(30), "node health says SERVING again", || async {
        (health(&endpoint).await == Some(ServingStatus::Serving)).then_some(())
    })
    .await;
    assert_eq!(node.height().await, accepted, "every accepted block is still there");
    let next = &blocks[accepted as usize + 1];
    let v = node.node().chain().accept(vec![next.clone()], Origin::Local).await.unwrap();
    assert!(v[0].is_ok());
    assert_eq!(node.height().await, accepted + 1);
    eprintln!("{accepted} blocks accepted before the disk filled; all present after recovery");
    node.stop().await;
}
