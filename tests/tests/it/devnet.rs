//! `p2pctl devnet up` end to end: the compose scenario against local
//! processes. Mine on node1, see it on node2 and node3 with p2pctl and
//! grpcurl, stop node3, mine more, start node3 again, it catches up; Ctrl-C
//! (SIGINT) stops everything.

use std::process::Stdio;
use std::time::Duration;

use node_svc::testkit::eventually;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::binary;
use crate::grpcurl::tool_available;

async fn p2pctl(args: &[&str]) -> Option<serde_json::Value> {
    let out = tokio::process::Command::new(binary("p2pctl")).arg("--json").args(args).output().await.ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

async fn height_and_tip(node: &str) -> Option<(u64, String)> {
    let v = p2pctl(&["--node", node, "node", "status"]).await?;
    Some((v["height"].as_u64()?, v["tip_hash"].as_str()?.to_string()))
}

fn alive(pid: u32) -> bool {
    crate::signal(pid, None).is_ok()
}

/// Kills a whole process group when dropped: if the test fails half way,
/// devnet's services go with it instead of outliving the test.
///
/// This calls killpg(2) itself. It used to run `kill -KILL -<pgid>`, and
/// procps-ng 4.0.2's kill(1) reads that as `kill -9 -1`: it killed every
/// process the user owned, the test runner and CI included.
struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        if let Ok(pgid) = i32::try_from(self.0)
            && pgid > 1
        {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

#[tokio::test]
async fn devnet_up_runs_the_compose_scenario_as_local_processes() {
    let dir = tempfile::tempdir().unwrap();
    // Port 0 everywhere: every service binds a free port itself, so nothing
    // can take it between choosing and binding.
    let mut devnet = tokio::process::Command::new(binary("p2pctl"))
        .args(["--json", "devnet", "up", "--difficulty-bits", "12", "--bootstrap-port", "0", "--base-port", "0"])
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .process_group(0)
        .spawn()
        .expect("start devnet");
    let _group = Group(devnet.id().expect("devnet pid"));
    // With --json, devnet prints one line describing every service.
    let mut lines = BufReader::new(devnet.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("devnet prints its services")
        .unwrap()
        .expect("a line");
    let printed: serde_json::Value = serde_json::from_str(&line).expect("devnet --json prints JSON");
    let services = printed["services"].as_array().expect("services");
    let field = |name: &str, key: &str| -> serde_json::Value {
        services.iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("{name} listed: {printed}"))[key].clone()
    };
    let pids: std::collections::HashMap<String, u32> =
        services.iter().map(|s| (s["name"].as_str().unwrap().to_string(), s["pid"].as_u64().unwrap() as u32)).collect();
    assert_eq!(pids.len(), 4, "bootstrap and three nodes listed: {pids:?}");
    let node3_cmd: Vec<String> =
        field("node3", "restart").as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect();
    assert!(node3_cmd[0].ends_with("node-svc"), "{node3_cmd:?}");
    let nodes: Vec<String> =
        ["node1", "node2", "node3"].iter().map(|n| field(n, "endpoint").as_str().unwrap().to_string()).collect();
    let bootstrap = field("bootstrap", "endpoint").as_str().unwrap().to_string();
    let admin1 = field("node1", "admin").as_str().expect("node1's admin API is listed").to_string();
    assert!(node3_cmd.contains(&nodes[2]), "node3 restarts on the port it had: {node3_cmd:?}");

    eventually(Duration::from_secs(60), "three nodes registered and verified", || async {
        let v = p2pctl(&["--bootstrap", &bootstrap, "bootstrap", "peers"]).await?;
        (v["peers"].as_array()?.len() == 3).then_some(())
    })
    .await;
    let mined = p2pctl(&["--admin", &admin1, "node", "mine", "hello devnet"]).await.expect("mine on node1");
    let hash = mined["block"]["hash"].as_str().unwrap().to_string();
    for n in &nodes[1..] {
        eventually(Duration::from_secs(30), &format!("{n} has the block (p2pctl)"), || async {
            (height_and_tip(n).await?.1 == hash).then_some(())
        })
        .await;
    }
    if tool_available("grpcurl", "-version") {
        for n in &nodes[1..] {
            let out = tokio::process::Command::new("grpcurl")
                .args(["-insecure", n, "p2p.node.v1.Node/GetStatus"])
                .output()
                .await
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("grpcurl json");
            assert_eq!(v["height"], "1", "grpcurl sees height 1 on {n}: {v}");
        }
    }
    let status = tokio::process::Command::new(binary("p2pctl"))
        .args(["--bootstrap", &bootstrap, "network", "status"])
        .output()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&status.stdout).contains("all 3 reachable nodes agree"));

    // Stop node3 (SIGTERM), mine while it is down, start it again: it catches up.
    let node3 = pids["node3"];
    crate::signal(node3, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM node3");
    eventually(Duration::from_secs(15), "node3 exited", || async { (!alive(node3)).then_some(()) }).await;
    for i in 0..3 {
        p2pctl(&["--admin", &admin1, "node", "mine", &format!("while node3 is down {i}")]).await.expect("mine");
    }
    let mut restarted = tokio::process::Command::new(&node3_cmd[0])
        .args(&node3_cmd[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("restart node3");
    let target = height_and_tip(&nodes[0]).await.unwrap();
    assert_eq!(target.0, 4);
    eventually(Duration::from_secs(60), "node3 caught up", || async {
        (height_and_tip(&nodes[2]).await? == target).then_some(())
    })
    .await;

    // Ctrl-C: devnet stops every process it started.
    crate::signal(devnet.id().unwrap(), nix::sys::signal::Signal::SIGINT).expect("SIGINT devnet");
    let exit = tokio::time::timeout(Duration::from_secs(30), devnet.wait()).await.expect("devnet exits").unwrap();
    assert!(exit.success(), "{exit:?}");
    for (name, pid) in &pids {
        if name != "node3" {
            assert!(!alive(*pid), "{name} still running after Ctrl-C");
        }
    }
    restarted.kill().await.ok();
}
