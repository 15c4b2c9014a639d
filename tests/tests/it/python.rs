//! An independent client: Python grpcio stubs generated from the .proto
//! files call every RPC of both services (tests/python/check_all_rpcs.py).

use std::time::Duration;

use node_svc::testkit::{TestBootstrap, TestNode, bootstrap_config, eventually, node_config};

#[tokio::test]
async fn python_grpcio_stubs_call_every_rpc_of_both_services() {
    if !python_has_grpc_tools() {
        return;
    }
    let bdir = tempfile::tempdir().unwrap();
    let bootstrap = TestBootstrap::start(bootstrap_config(bdir.path())).await;
    let ndir = tempfile::tempdir().unwrap();
    let endpoint = bootstrap.endpoint();
    let node = TestNode::start(|addr| {
        let mut c = node_config(ndir.path(), addr, Some(&endpoint), 8);
        // Refreshed every second: WatchPeers has events to show.
        c.register_ttl_secs = 3;
        c
    })
    .await;
    let b = bootstrap.client().await;
    eventually(Duration::from_secs(10), "node registered and verified", || {
        let mut b = b.clone();
        async move {
            (b.get_peers(p2p_proto::bootstrap::GetPeersRequest::default()).await.ok()?.into_inner().total == 1)
                .then_some(())
        }
    })
    .await;

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/check_all_rpcs.py");
    // Python pins each server's certificate (written to its data dir) and
    // checks the node id it names.
    let cert = |dir: &std::path::Path| dir.join(p2p_proto::tls::CERT_FILE).display().to_string();
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .args([bootstrap.addr.to_string(), cert(bdir.path()), bootstrap.node_id().await])
        .args([node.addr.to_string(), cert(ndir.path()), node.node().node_id().to_string()])
        .arg(node.admin_endpoint())
        .output()
        .await
        .expect("run python client");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "python client failed:\n{text}");
    assert!(text.contains(" passed, 0 failed"), "{text}");
    assert!(!text.lines().any(|l| l.starts_with("FAIL")), "{text}");
    node.stop().await;
    bootstrap.stop().await;
}

fn python_has_grpc_tools() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import grpc, grpc_tools"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("P2P_REQUIRE_TOOLS").is_none(),
            "python grpcio/grpcio-tools are required (P2P_REQUIRE_TOOLS is set) but not importable"
        );
        eprintln!("SKIPPED: python3 cannot import grpc/grpc_tools (pip install grpcio grpcio-tools)");
    }
    ok
}
