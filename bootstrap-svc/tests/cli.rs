//! The binary's command line: every flag has its environment variable, and
//! bad values are refused with a message instead of a panic.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_bootstrap-svc");

#[test]
fn help_lists_every_flag_with_its_env_var() {
    let out = Command::new(BIN).arg("--help").output().expect("run bootstrap-svc --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for (flag, env) in [
        ("--listen", "BOOTSTRAP_LISTEN"),
        ("--verify-registrations", "BOOTSTRAP_VERIFY_REGISTRATIONS"),
        ("--network", "BOOTSTRAP_NETWORK"),
        ("--verify-concurrency", "BOOTSTRAP_VERIFY_CONCURRENCY"),
        ("--verify-per-host-per-minute", "BOOTSTRAP_VERIFY_PER_HOST_PER_MINUTE"),
        ("--plaintext", "P2P_PLAINTEXT"),
        ("--data-dir", "BOOTSTRAP_DATA_DIR"),
        ("--default-ttl-secs", "BOOTSTRAP_DEFAULT_TTL_SECS"),
        ("--min-ttl-secs", "BOOTSTRAP_MIN_TTL_SECS"),
        ("--max-ttl-secs", "BOOTSTRAP_MAX_TTL_SECS"),
        ("--default-peers-limit", "BOOTSTRAP_DEFAULT_PEERS_LIMIT"),
        ("--max-peers-limit", "BOOTSTRAP_MAX_PEERS_LIMIT"),
        ("--require-signatures", "BOOTSTRAP_REQUIRE_SIGNATURES"),
        ("--signature-window-secs", "BOOTSTRAP_SIGNATURE_WINDOW_SECS"),
        ("--register-per-minute", "BOOTSTRAP_REGISTER_PER_MINUTE"),
        ("--max-watchers", "BOOTSTRAP_MAX_WATCHERS"),
        ("--addr-file", "BOOTSTRAP_ADDR_FILE"),
        ("--log-json", "BOOTSTRAP_LOG_JSON"),
    ] {
        assert!(help.contains(flag) && help.contains(env), "{flag} / {env} missing from --help:\n{help}");
    }
}

#[test]
fn inconsistent_ttl_bounds_are_refused_with_a_message() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("data");
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--min-ttl-secs", "100", "--default-ttl-secs", "50", "--data-dir"])
        .arg(&dir)
        .output()
        .expect("run bootstrap-svc");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TTL bounds"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
