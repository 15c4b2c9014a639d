//! `p2pctl devnet up` end to end: the compose scenario against local
//! processes. Mine on node1, see it on node2 and node3 with p2pctl and
//! grpcurl, stop node3, mine more, start node3 again, it catches up; Ctrl-C
//! (SIGINT) stops everything.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use node_svc::testkit::eventually;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::grpcurl::tool_available;

fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    exe.parent().and_then(|d| d.parent()).expect("target dir").join(name)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

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
    std::process::Command::new("kill").args(["-0", &pid.to_string()]).status().is_ok_and(|s| s.success())
}

#[tokio::test]
async fn devnet_up_runs_the_compose_scenario_as_local_processes() {
    let dir = tempfile::tempdir().unwrap();
    let (bport, base) = (free_port(), free_port());
    // Nodes need three consecutive ports: take them from 20000-39999, below
    // the kernel's ephemeral range that the other tests' port-0 binds use.
    let base = 20000 + base % 20000;
    let mut devnet = tokio::process::Command::new(binary("p2pctl"))
        .args(["devnet", "up", "--difficulty-bits", "12"])
        .args(["--bootstrap-port", &bport.to_string(), "--base-port", &base.to_string(), "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start devnet");
    // Read the printed table: PIDs and the restart command for node3.
    let mut lines = BufReader::new(devnet.stdout.take().unwrap()).lines();
    let mut pids = std::collections::HashMap::new();
    let mut node3_cmd = None;
    while let Ok(Some(line)) =
        tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.expect("devnet prints")
    {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() == 4 && cols[2].parse::<u32>().is_ok() {
            pids.insert(cols[0].to_string(), cols[2].parse::<u32>().unwrap());
        }
        if line.trim_start().contains("node-svc") && line.contains(&format!("127.0.0.1:{}", base + 2)) {
            node3_cmd = Some(line.split_whitespace().map(str::to_string).collect::<Vec<_>>());
        }
        if line.starts_with("Ctrl-C") {
            break;
        }
    }
    assert_eq!(pids.len(), 4, "bootstrap and three nodes listed: {pids:?}");
    let node3_cmd = node3_cmd.expect("restart command for node3 printed");
    let nodes: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", base + i)).collect();
    let bootstrap = format!("127.0.0.1:{bport}");

    eventually(Duration::from_secs(60), "three nodes registered", || async {
        let v = p2pctl(&["--bootstrap", &bootstrap, "bootstrap", "peers"]).await?;
        (v["peers"].as_array()?.len() == 3).then_some(())
    })
    .await;
    let mined = p2pctl(&["--node", &nodes[0], "node", "mine", "hello devnet"]).await.expect("mine on node1");
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
                .args(["-plaintext", n, "p2p.node.v1.Node/GetStatus"])
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
    assert!(std::process::Command::new("kill").args(["-TERM", &node3.to_string()]).status().unwrap().success());
    eventually(Duration::from_secs(15), "node3 exited", || async { (!alive(node3)).then_some(()) }).await;
    for i in 0..3 {
        p2pctl(&["--node", &nodes[0], "node", "mine", &format!("while node3 is down {i}")]).await.expect("mine");
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
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &devnet.id().unwrap().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let exit = tokio::time::timeout(Duration::from_secs(30), devnet.wait()).await.expect("devnet exits").unwrap();
    assert!(exit.success(), "{exit:?}");
    for (name, pid) in &pids {
        if name != "node3" {
            assert!(!alive(*pid), "{name} still running after Ctrl-C");
        }
    }
    restarted.kill().await.ok();
}
