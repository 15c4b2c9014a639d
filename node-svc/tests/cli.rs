//! The binary's command line: every flag has its environment variable, and
//! bad values are refused with a message instead of a panic.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_node-svc");

#[test]
fn help_lists_every_flag_with_its_env_var() {
    let out = Command::new(BIN).arg("--help").output().expect("run node-svc --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for (flag, env) in [
        ("--listen", "NODE_LISTEN"),
        ("--advertise", "NODE_ADVERTISE"),
        ("--bootstrap", "NODE_BOOTSTRAP"),
        ("--peer", "NODE_PEERS"),
        ("--data-dir", "NODE_DATA_DIR"),
        ("--network", "NODE_NETWORK"),
        ("--difficulty-bits", "NODE_DIFFICULTY_BITS"),
        ("--retarget", "NODE_RETARGET"),
        ("--block-time-ms", "NODE_BLOCK_TIME_MS"),
        ("--max-block-txs", "NODE_MAX_BLOCK_TXS"),
        ("--max-block-bytes", "NODE_MAX_BLOCK_BYTES"),
        ("--max-tx-payload", "NODE_MAX_TX_PAYLOAD"),
        ("--mine", "NODE_MINE"),
        ("--mempool-max-txs", "NODE_MEMPOOL_MAX_TXS"),
        ("--mempool-max-bytes", "NODE_MEMPOOL_MAX_BYTES"),
        ("--mempool-max-per-sender", "NODE_MEMPOOL_MAX_PER_SENDER"),
        ("--admin-listen", "NODE_ADMIN_LISTEN"),
        ("--admin-token", "NODE_ADMIN_TOKEN"),
        ("--plaintext", "P2P_PLAINTEXT"),
        ("--register-ttl-secs", "NODE_REGISTER_TTL_SECS"),
        ("--ping-interval-ms", "NODE_PING_INTERVAL_MS"),
        ("--max-failures", "NODE_MAX_FAILURES"),
        ("--max-peers", "NODE_MAX_PEERS"),
        ("--max-inbound", "NODE_MAX_INBOUND"),
        ("--target-outbound", "NODE_TARGET_OUTBOUND"),
        ("--gossip-fanout", "NODE_GOSSIP_FANOUT"),
        ("--addr-file", "NODE_ADDR_FILE"),
        ("--log-json", "NODE_LOG_JSON"),
    ] {
        assert!(help.contains(flag) && help.contains(env), "{flag} / {env} missing from --help:\n{help}");
    }
}

#[test]
fn a_bad_advertise_address_is_refused_with_a_message() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("data");
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--advertise", "no-port-here", "--data-dir"])
        .arg(&dir)
        .output()
        .expect("run node-svc");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid advertise"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
