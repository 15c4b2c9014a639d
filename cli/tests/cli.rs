//! p2pctl's command line, as a user meets it.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_p2pctl");

#[test]
fn subcommands_are_documented() {
    let out = Command::new(BIN).arg("--help").output().expect("run p2pctl --help");
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in ["bootstrap", "node", "network", "bench"] {
        assert!(help.contains(cmd), "{cmd} missing:\n{help}");
    }
    let out = Command::new(BIN).args(["bootstrap", "--help"]).output().expect("run");
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in ["register", "peers", "get-peers", "remove", "watch"] {
        assert!(help.contains(cmd), "{cmd} missing:\n{help}");
    }
}

#[test]
fn a_connection_failure_names_the_endpoint_and_the_cause() {
    // Port 1 on loopback: nothing listens there.
    let out = Command::new(BIN).args(["--bootstrap", "127.0.0.1:1", "bootstrap", "peers"]).output().expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http://127.0.0.1:1"), "{err}");
    assert!(err.to_lowercase().contains("refused"), "{err}");
}
