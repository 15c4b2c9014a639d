//! p2pctl's command line, as a user meets it.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_p2pctl");

/// The names listed under "Commands:" in `args --help` (global flags such
/// as `--node` must not count as a `node` subcommand).
fn subcommands(args: &[&str]) -> Vec<String> {
    let out = Command::new(BIN).args(args).arg("--help").output().expect("run p2pctl --help");
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let commands = help.split("Commands:").nth(1).unwrap_or_else(|| panic!("no Commands section:\n{help}"));
    let section = commands.split("\n\n").next().unwrap_or_default();
    section.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect()
}

#[test]
fn subcommands_are_documented() {
    let top = subcommands(&[]);
    for cmd in ["bootstrap", "node", "network", "devnet", "health", "bench", "key"] {
        assert!(top.contains(&cmd.to_string()), "{cmd} missing from {top:?}");
    }
    let bootstrap = subcommands(&["bootstrap"]);
    for cmd in ["register", "peers", "remove", "watch"] {
        assert!(bootstrap.contains(&cmd.to_string()), "{cmd} missing from {bootstrap:?}");
    }
    let out = Command::new(BIN).args(["bootstrap", "--help"]).output().expect("run");
    assert!(String::from_utf8_lossy(&out.stdout).contains("[alias: get-peers]"), "the book's name stays an alias");
    let node = subcommands(&["node"]);
    for cmd in ["status", "mine", "blocks", "peers", "send-block"] {
        assert!(node.contains(&cmd.to_string()), "{cmd} missing from {node:?}");
    }
}

#[test]
fn a_connection_failure_names_the_endpoint_and_the_cause() {
    // Port 1 on loopback: nothing listens there.
    let out = Command::new(BIN).args(["--bootstrap", "127.0.0.1:1", "bootstrap", "peers"]).output().expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the bootstrap at 127.0.0.1:1"), "{err}");
    assert!(err.to_lowercase().contains("refused"), "{err}");
}
