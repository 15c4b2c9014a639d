//! The bootstrap registry, driven over gRPC against a real in-process server.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bootstrap_svc::Config;
use bootstrap_svc::clock::ManualClock;
use ed25519_dalek::SigningKey;
use futures::StreamExt;
use node_svc::testkit::{TestBootstrap, eventually};
use p2p_proto::bootstrap::bootstrap_client::BootstrapClient;
use p2p_proto::bootstrap::{
    GetPeersRequest, PeerEvent, PeerEventKind, RegisterRequest, RemoveRequest, WatchPeersRequest,
};
use p2p_proto::signing::{signed_register, signed_remove};
use tonic::Code;
use tonic::transport::Channel;

const T0: u64 = 1_800_000_000_000;

/// A registry whose addresses are made up: listed without being dialed
/// (verification has its own tests, with real nodes, in `verify.rs`).
fn config(dir: &tempfile::TempDir) -> Config {
    let mut c = Config::new(dir.path());
    c.disable_rate_limits();
    c.verify_registrations = false;
    c
}

fn manual(dir: &tempfile::TempDir) -> (Config, ManualClock) {
    let clock = ManualClock::new(T0);
    let mut c = config(dir);
    c.clock = Arc::new(clock.clone());
    (c, clock)
}

fn reg(address: &str) -> RegisterRequest {
    RegisterRequest { address: address.into(), ..Default::default() }
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// Every listed address, page by page.
pub(crate) async fn all_addresses(client: &mut BootstrapClient<Channel>, page: u32) -> Vec<String> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let resp = client
            .get_peers(GetPeersRequest { limit: page, page_token: token.clone(), ..Default::default() })
            .await
            .expect("get_peers")
            .into_inner();
        out.extend(resp.peers.into_iter().map(|p| p.address));
        if resp.next_page_token.is_empty() {
            return out;
        }
        token = resp.next_page_token;
    }
}

#[tokio::test]
async fn register_get_remove_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestBootstrap::start(config(&dir)).await;
    let mut c = server.client().await;

    let r = c.register(reg("localhost:3000")).await.unwrap().into_inner();
    assert!(r.created);
    assert_eq!(r.ttl_seconds, 120, "0 asks for the server default");
    assert!(r.message.contains("registered localhost:3000"), "{}", r.message);
    c.register(reg("Node2.Example:3001")).await.unwrap();

    let peers = c.get_peers(GetPeersRequest::default()).await.unwrap().into_inner();
    assert_eq!(peers.total, 2);
    let addrs: Vec<_> = peers.peers.iter().map(|p| p.address.as_str()).collect();
    assert_eq!(addrs, ["localhost:3000", "node2.example:3001"], "sorted, canonical");
    assert!(peers.peers.iter().all(|p| p.expires_at_unix_ms > p.registered_at_unix_ms));

    let removed = c.remove(RemoveRequest { address: "localhost:3000".into(), ..Default::default() }).await.unwrap();
    assert!(removed.get_ref().removed);
    let again = c.remove(RemoveRequest { address: "localhost:3000".into(), ..Default::default() }).await.unwrap();
    assert!(!again.get_ref().removed);
    assert!(again.get_ref().message.contains("was not registered"));
    assert_eq!(all_addresses(&mut c, 10).await, ["node2.example:3001"]);
    server.stop().await;
}

#[tokio::test]
async fn registering_again_refreshes_the_lease_instead_of_duplicating() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, clock) = manual(&dir);
    let server = TestBootstrap::start(cfg).await;
    let mut c = server.client().await;

    let first = c.register(RegisterRequest { ttl_seconds: 30, ..reg("node1:3000") }).await.unwrap().into_inner();
    clock.advance_ms(10_000);
    let second = c.register(RegisterRequest { ttl_seconds: 30, ..reg("NODE1:3000") }).await.unwrap().into_inner();
    assert!(first.created);
    assert!(!second.created, "same canonical address refreshes");
    assert!(second.message.starts_with("refreshed"));
    assert_eq!(second.expires_at_unix_ms, first.expires_at_unix_ms + 10_000);
    let peer = second.peer.unwrap();
    assert_eq!(peer.registered_at_unix_ms, T0, "registration time is kept");
    assert_eq!(peer.last_seen_unix_ms, T0 + 10_000);
    let resp = c.get_peers(GetPeersRequest::default()).await.unwrap().into_inner();
    assert_eq!(resp.total, 1);
    assert_eq!(resp.peers.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn ttl_is_clamped_to_the_server_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestBootstrap::start(config(&dir)).await;
    let mut c = server.client().await;
    let short = c.register(RegisterRequest { ttl_seconds: 1, ..reg("a:1") }).await.unwrap().into_inner();
    let long = c.register(RegisterRequest { ttl_seconds: 999_999, ..reg("b:1") }).await.unwrap().into_inner();
    assert_eq!((short.ttl_seconds, long.ttl_seconds), (10, 3600));
    server.stop().await;
}

#[tokio::test]
async fn expired_leases_are_never_returned_and_get_purged() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, clock) = manual(&dir);
    let server = TestBootstrap::start(cfg).await;
    let mut c = server.client().await;
    c.register(RegisterRequest { ttl_seconds: 10, ..reg("short:1") }).await.unwrap();
    c.register(RegisterRequest { ttl_seconds: 60, ..reg("long:1") }).await.unwrap();

    clock.advance_ms(9_999);
    assert_eq!(all_addresses(&mut c, 10).await, ["long:1", "short:1"]);
    clock.advance_ms(1);
    // Filtered out at once, whether or not the purge has run yet.
    assert_eq!(all_addresses(&mut c, 10).await, ["long:1"]);
    let sample = c.get_peers(GetPeersRequest { random: true, ..Default::default() }).await.unwrap().into_inner();
    assert_eq!(sample.peers.len(), 1);
    // The background purge deletes it for good.
    eventually(Duration::from_secs(10), "expired lease purged", || {
        let mut c = c.clone();
        async move {
            let total = c.get_peers(GetPeersRequest::default()).await.ok()?.into_inner().total;
            (total == 1).then_some(())
        }
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn a_key_bound_registration_only_answers_to_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, clock) = manual(&dir);
    let server = TestBootstrap::start(cfg).await;
    let mut c = server.client().await;
    let rid = registry(&mut c).await;
    let (owner, thief) = (key(1), key(2));

    let first = c.register(signed_register(&owner, &rid, "node1:3000", 600, T0)).await.unwrap().into_inner();
    let peer = first.peer.unwrap();
    assert_eq!(peer.node_id, p2p_proto::signing::node_id(&owner.verifying_key().to_bytes()));

    // Another key, or no key at all, cannot refresh, take over or remove it.
    let err = c.register(signed_register(&thief, &rid, "node1:3000", 600, T0 + 1)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains(&peer.node_id), "names the owner: {}", err.message());
    let err = c.register(reg("node1:3000")).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = c.remove(signed_remove(&thief, &rid, "node1:3000", T0 + 2)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = c.remove(RemoveRequest { address: "node1:3000".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // A tampered field breaks the signature.
    let mut tampered = signed_register(&owner, &rid, "node1:3000", 600, T0 + 3);
    tampered.ttl_seconds = 3600;
    assert_eq!(c.register(tampered).await.unwrap_err().code(), Code::PermissionDenied);

    // The owner refreshes; replaying that exact request is rejected.
    let refresh = signed_register(&owner, &rid, "node1:3000", 600, T0 + 5);
    assert!(!c.register(refresh.clone()).await.unwrap().into_inner().created);
    let err = c.register(refresh).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("replayed"), "{}", err.message());

    // A timestamp outside the freshness window is rejected even if signed.
    clock.advance_ms(120_000);
    let err = c.remove(signed_remove(&owner, &rid, "node1:3000", T0 + 6)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("away from the server's clock"), "{}", err.message());

    // The owner's fresh, signed Remove works; replaying it does nothing more.
    let now = T0 + 120_000;
    let remove = signed_remove(&owner, &rid, "node1:3000", now);
    assert!(c.remove(remove.clone()).await.unwrap().into_inner().removed);
    assert!(!c.remove(remove).await.unwrap().into_inner().removed);
    server.stop().await;
}

#[tokio::test]
async fn an_unsigned_registration_can_be_claimed_by_a_key_but_not_removed_by_strangers() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestBootstrap::start(config(&dir)).await;
    let mut c = server.client().await;
    let rid = registry(&mut c).await;
    c.register(reg("node9:3000")).await.unwrap();

    // A client on another IP (127.0.0.2) cannot remove it.
    let channel = node_svc::testkit::channel_from(&server.endpoint(), "127.0.0.2").await;
    let mut stranger = BootstrapClient::new(channel);
    let err = stranger.remove(RemoveRequest { address: "node9:3000".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("127.0.0.1"), "{}", err.message());

    // A key may claim the unbound address; from then on it is key-bound.
    let k = key(3);
    let ts = p2p_proto::unix_ms_now();
    c.register(signed_register(&k, &rid, "node9:3000", 60, ts)).await.unwrap();
    let err = c.register(reg("node9:3000")).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    server.stop().await;
}

#[tokio::test]
async fn the_registry_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestBootstrap::start(config(&dir)).await;
    let mut c = server.client().await;
    for i in 0..50 {
        c.register(reg(&format!("node{i}:3000"))).await.unwrap();
    }
    c.remove(RemoveRequest { address: "node7:3000".into(), ..Default::default() }).await.unwrap();
    let before = all_addresses(&mut c, 1000).await;
    server.stop().await;

    let server = TestBootstrap::start(config(&dir)).await;
    let mut c = server.client().await;
    let after = all_addresses(&mut c, 1000).await;
    assert_eq!(after.len(), 49);
    assert_eq!(before, after);
    // Slots were compacted correctly across the restart: sampling sees everyone.
    let sample = c.get_peers(GetPeersRequest { random: true, limit: 1000, ..Default::default() }).await.unwrap();
    assert_eq!(sample.into_inner().peers.len(), 49);
    server.stop().await;
}

#[tokio::test]
async fn paging_returns_every_peer_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestBootstrap::start(config(&dir)).await;
    let mut c = server.client().await;
    let mut expected = Vec::new();
    let mut joins = Vec::new();
    for i in 0..300 {
        let addr = format!("10.0.{}.{}:{}", i / 250, i % 250, 3000 + i);
        expected.push(addr.clone());
        let mut c = c.clone();
        // Concurrent registers exercise the group commit.
        joins.push(tokio::spawn(async move { c.register(reg(&addr)).await.map(|_| ()) }));
    }
    for j in joins {
        j.await.unwrap().unwrap();
    }
    expected.sort();
    for page in [1, 7, 100, 1000] {
        let got = all_addresses(&mut c, page).await;
        assert_eq!(got, expected, "page size {page}");
    }
    // A page honours exclude_address too.
    let resp = c
        .get_peers(GetPeersRequest { limit: 1000, exclude_address: expected[0].clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.peers.len(), 299);
    server.stop().await;
}

#[tokio::test]
async fn a_random_sample_has_no_duplicates_and_honours_exclude() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestBootstrap::start(config(&dir)).await;
    let mut c = server.client().await;
    for i in 0..40 {
        c.register(reg(&format!("n{i}:1"))).await.unwrap();
    }
    let mut seen_anywhere = HashSet::new();
    for _ in 0..30 {
        let resp = c
            .get_peers(GetPeersRequest {
                limit: 10,
                random: true,
                exclude_address: "n0:1".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.peers.len(), 10);
        let addrs: HashSet<_> = resp.peers.iter().map(|p| p.address.clone()).collect();
        assert_eq!(addrs.len(), 10, "no duplicates");
        assert!(!addrs.contains("n0:1"), "exclude honoured");
        seen_anywhere.extend(addrs);
    }
    // 300 draws of 10 from 39: every peer shows up (fails with p < 1e-12 if uniform).
    assert_eq!(seen_anywhere.len(), 39);
    // Asking for more than exist returns all of them once.
    let all = c
        .get_peers(GetPeersRequest { limit: 1000, random: true, exclude_address: "n0:1".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.peers.iter().map(|p| &p.address).collect::<HashSet<_>>().len(), 39);
    assert_eq!(all.peers.len(), 39);
    server.stop().await;
}

#[tokio::test]
async fn each_kind_of_invalid_input_gets_its_code_and_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestBootstrap::start(config(&dir)).await;
    let mut c = server.client().await;
    let rid = registry(&mut c).await;
    let k = key(4);
    let now = p2p_proto::unix_ms_now();
    let cases: Vec<(RegisterRequest, Code, &str)> = vec![
        (reg(""), Code::InvalidArgument, "address"),
        (reg("node1"), Code::InvalidArgument, "address"),
        (reg("node1:0"), Code::InvalidArgument, "address"),
        (reg("node1:70000"), Code::InvalidArgument, "address"),
        (reg("bad_host:1"), Code::InvalidArgument, "address"),
        (reg("::1:3000"), Code::InvalidArgument, "address"),
        (reg(&format!("{}:1", "a".repeat(400))), Code::InvalidArgument, "address"),
        (RegisterRequest { public_key: vec![1; 5], ..reg("a:1") }, Code::InvalidArgument, "public_key"),
        (RegisterRequest { signature: vec![1; 64], ..reg("a:1") }, Code::InvalidArgument, "public_key"),
        (
            RegisterRequest { signature: vec![1; 10], ..signed_register(&k, &rid, "a:1", 0, now) },
            Code::InvalidArgument,
            "signature",
        ),
        (
            RegisterRequest { timestamp_unix_ms: 0, ..signed_register(&k, &rid, "a:1", 0, now) },
            Code::InvalidArgument,
            "timestamp_unix_ms",
        ),
    ];
    for (req, code, field) in cases {
        let err = c.register(req.clone()).await.expect_err(&format!("{req:?}"));
        assert_eq!(err.code(), code, "{req:?}: {err:?}");
        assert!(err.message().contains(field), "{:?} should name {field}", err.message());
    }
    let err = c.get_peers(GetPeersRequest { page_token: "zz-not-hex".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!((err.code(), err.message().contains("page_token")), (Code::InvalidArgument, true));
    let err = c.get_peers(GetPeersRequest { exclude_address: "nope".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!((err.code(), err.message().contains("exclude_address")), (Code::InvalidArgument, true));
    let err = c
        .remove(RemoveRequest { address: "a:1".into(), signature: vec![0; 3], timestamp_unix_ms: now })
        .await
        .unwrap_err();
    assert_eq!((err.code(), err.message().contains("signature")), (Code::InvalidArgument, true));
    // An oversized message is refused before it is decoded.
    let err = c.register(reg(&"a".repeat(64 * 1024))).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    // The server is still fine.
    c.register(reg("ok:1")).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn unsigned_registrations_are_refused_when_signatures_are_required() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir);
    cfg.require_signatures = true;
    let server = TestBootstrap::start(cfg).await;
    let mut c = server.client().await;
    let rid = registry(&mut c).await;
    let err = c.register(reg("a:1")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let ok = c.register(signed_register(&key(5), &rid, "a:1", 0, p2p_proto::unix_ms_now())).await.unwrap();
    assert!(ok.into_inner().created);
    server.stop().await;
}

#[tokio::test]
async fn register_is_rate_limited_per_client_ip() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir);
    cfg.register_per_minute = 5;
    let server = TestBootstrap::start(cfg).await;
    let mut c = server.client().await;
    for i in 0..5 {
        c.register(reg(&format!("n{i}:1"))).await.unwrap();
    }
    let err = c.register(reg("n5:1")).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("5 per minute"), "{}", err.message());
    // Reads are not limited, and another client IP has its own budget.
    c.get_peers(GetPeersRequest::default()).await.unwrap();
    let channel = node_svc::testkit::channel_from(&server.endpoint(), "127.0.0.3").await;
    BootstrapClient::new(channel).register(reg("other:1")).await.unwrap();
    server.stop().await;
}

async fn registry(c: &mut BootstrapClient<Channel>) -> p2p_proto::signing::RegistryId {
    let info = c.get_info(p2p_proto::bootstrap::GetInfoRequest {}).await.unwrap().into_inner();
    p2p_proto::signing::registry_id(&info.registry_id).unwrap()
}

async fn next_event(stream: &mut tonic::Streaming<PeerEvent>) -> PeerEvent {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("event within 10s")
        .expect("stream open")
        .expect("event ok")
}

#[tokio::test]
async fn watch_peers_delivers_join_refresh_leave_and_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, clock) = manual(&dir);
    let server = TestBootstrap::start(cfg).await;
    let mut c = server.client().await;
    let mut events = c.watch_peers(WatchPeersRequest {}).await.unwrap().into_inner();

    c.register(RegisterRequest { ttl_seconds: 10, ..reg("w1:1") }).await.unwrap();
    let ev = next_event(&mut events).await;
    assert_eq!(ev.kind(), PeerEventKind::Joined);
    assert_eq!(ev.peer.unwrap().address, "w1:1");

    c.register(RegisterRequest { ttl_seconds: 10, ..reg("w1:1") }).await.unwrap();
    assert_eq!(next_event(&mut events).await.kind(), PeerEventKind::Refreshed);

    c.register(reg("w2:1")).await.unwrap();
    assert_eq!(next_event(&mut events).await.kind(), PeerEventKind::Joined);
    c.remove(RemoveRequest { address: "w2:1".into(), ..Default::default() }).await.unwrap();
    let ev = next_event(&mut events).await;
    assert_eq!((ev.kind(), ev.peer.unwrap().address.as_str()), (PeerEventKind::Left, "w2:1"));

    clock.advance_ms(10_000);
    let ev = next_event(&mut events).await;
    assert_eq!((ev.kind(), ev.peer.unwrap().address.as_str()), (PeerEventKind::Expired, "w1:1"));
    server.stop().await;
}

#[tokio::test]
async fn a_slow_watcher_is_told_what_it_missed_and_stalls_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir);
    cfg.watch_buffer = 4;
    let server = TestBootstrap::start(cfg).await;
    let mut c = server.client().await;
    // Subscribe and then do not read while many events happen.
    let mut slow = c.watch_peers(WatchPeersRequest {}).await.unwrap().into_inner();
    let mut fast = c.watch_peers(WatchPeersRequest {}).await.unwrap().into_inner();
    // A watcher that keeps reading still gets the latest events.
    let reader = tokio::spawn(async move {
        loop {
            let ev = next_event(&mut fast).await;
            if ev.peer.is_some_and(|p| p.address == "last:1") {
                return;
            }
        }
    });
    // Enough events to overflow the HTTP/2 windows and send buffers between
    // the server and the idle subscriber. Writes never wait for watchers.
    const N: usize = 8000;
    futures::stream::iter(0..N)
        .map(|i| {
            let mut c = c.clone();
            async move { c.register(reg(&format!("s{i}:1"))).await.map(|_| ()) }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<()>, _>>()
        .expect("every register succeeds while a watcher is stalled");
    c.register(reg("last:1")).await.unwrap();
    reader.await.expect("reading watcher saw the last registration");
    let mut saw_lagged = false;
    for _ in 0..N {
        let ev = next_event(&mut slow).await;
        if ev.kind() == PeerEventKind::Lagged {
            assert!(ev.missed > 0);
            saw_lagged = true;
            break;
        }
    }
    assert!(saw_lagged, "the slow watcher was told it lagged");
    server.stop().await;
}

#[tokio::test]
async fn an_unsigned_registration_stays_with_its_registrant_ip() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestBootstrap::start(config(&dir)).await;
    let mut owner = server.client().await;
    owner.register(reg("node7:3000")).await.unwrap();
    let channel = node_svc::testkit::channel_from(&server.endpoint(), "127.0.0.2").await;
    let mut stranger = BootstrapClient::new(channel);
    // A refresh from elsewhere used to move the registrant IP, after which
    // the stranger could remove it.
    let err = stranger.register(reg("node7:3000")).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("127.0.0.1"), "{}", err.message());
    let rid = registry(&mut owner).await;
    let err = stranger.register(signed_register(&key(8), &rid, "node7:3000", 60, p2p_proto::unix_ms_now())).await;
    assert_eq!(err.unwrap_err().code(), Code::PermissionDenied, "nor claimed by a key from elsewhere");
    let err = stranger.remove(RemoveRequest { address: "node7:3000".into(), ..Default::default() }).await;
    assert_eq!(err.unwrap_err().code(), Code::PermissionDenied);
    assert!(
        owner
            .remove(RemoveRequest { address: "node7:3000".into(), ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .removed
    );
    server.stop().await;
}

#[tokio::test]
async fn a_signed_register_cannot_be_replayed_after_removal_expiry_or_at_another_registry() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, clock) = manual(&dir);
    let server = TestBootstrap::start(cfg).await;
    let mut c = server.client().await;
    let rid = registry(&mut c).await;
    let k = key(4);
    let first = signed_register(&k, &rid, "node4:3000", 600, T0);
    c.register(first.clone()).await.unwrap();
    assert!(c.remove(signed_remove(&k, &rid, "node4:3000", T0 + 1)).await.unwrap().into_inner().removed);
    // Replaying the captured Register after the owner left brings nothing back.
    let err = c.register(first.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("replayed"), "{}", err.message());
    assert_eq!(c.get_peers(GetPeersRequest::default()).await.unwrap().into_inner().total, 0);
    // After a lease expires, the same.
    let second = signed_register(&k, &rid, "node4:3000", 10, T0 + 2);
    c.register(second.clone()).await.unwrap();
    clock.advance_ms(11_000);
    eventually(Duration::from_secs(10), "the lease is purged", || {
        let mut c = c.clone();
        async move { (c.get_peers(GetPeersRequest::default()).await.ok()?.into_inner().total == 0).then_some(()) }
    })
    .await;
    let err = c.register(second).await.unwrap_err();
    assert!(err.message().contains("replayed"), "{}", err.message());
    // The owner's fresh request works.
    c.register(signed_register(&k, &rid, "node4:3000", 600, T0 + 11_000)).await.unwrap();
    // A request signed for this registry is refused by another one.
    let other_dir = tempfile::tempdir().unwrap();
    let (other_cfg, _) = manual(&other_dir);
    let other = TestBootstrap::start(other_cfg).await;
    let mut o = other.client().await;
    assert_ne!(registry(&mut o).await, rid);
    let err = o.register(signed_register(&k, &rid, "node4:3000", 600, T0 + 12_000)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("registry"), "{}", err.message());
    other.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn remove_get_peers_and_watchers_are_limited_per_client() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir);
    cfg.get_peers_per_minute = 3;
    cfg.remove_per_minute = 2;
    cfg.max_watchers_per_client = 1;
    let server = TestBootstrap::start(cfg).await;
    let mut c = server.client().await;
    for _ in 0..3 {
        c.get_peers(GetPeersRequest::default()).await.unwrap();
    }
    let err = c.get_peers(GetPeersRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("GetPeers"), "{}", err.message());
    for _ in 0..2 {
        c.remove(RemoveRequest { address: "x:1".into(), ..Default::default() }).await.unwrap();
    }
    let err = c.remove(RemoveRequest { address: "x:1".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    let _watch = c.watch_peers(WatchPeersRequest {}).await.unwrap();
    let err = c.watch_peers(WatchPeersRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "one client cannot take every watcher slot");
    // Another client has its own budgets.
    let channel = node_svc::testkit::channel_from(&server.endpoint(), "127.0.0.4").await;
    let mut other = BootstrapClient::new(channel);
    other.get_peers(GetPeersRequest::default()).await.unwrap();
    let _other_watch = other.watch_peers(WatchPeersRequest {}).await.unwrap();
    server.stop().await;
}
