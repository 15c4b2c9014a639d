//! `p2pctl devnet up`: the compose topology (a bootstrap and three nodes) as
//! local processes on 127.0.0.1, for machines without Docker.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use tokio::process::{Child, Command};

use crate::output::Table;

#[derive(Debug, Subcommand)]
pub enum DevnetCmd {
    /// Start a bootstrap and N nodes; Ctrl-C stops them all.
    Up {
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: u16,
        /// Bootstrap port (nodes use 3001, 3002, …); 0 picks a free one.
        #[arg(long, default_value_t = 4000)]
        bootstrap_port: u16,
        /// First node port (the others follow it); 0 gives every node a free one.
        #[arg(long, default_value_t = 3001)]
        base_port: u16,
        /// Keep registry, chains and logs here (reused across runs).
        /// By default a temporary directory is used and removed on exit.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Leading zero bits per block hash.
        #[arg(long, default_value_t = 16)]
        difficulty_bits: u32,
    },
}

/// A service process and how to start it again.
struct Service {
    name: String,
    endpoint: String,
    /// A node's admin API (mining, bans, peers), on loopback.
    admin: Option<String>,
    args: Vec<String>,
    program: PathBuf,
    child: Child,
}

/// How long a service may take to bind its port.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts `program` and waits for the address it bound (its `--addr-file`),
/// so ports can be 0 and nothing races for them.
async fn launch(name: &str, program: &Path, mut args: Vec<String>, dir: &Path) -> anyhow::Result<Service> {
    let addr_file = dir.join(format!("{name}.addr"));
    let admin_file = dir.join(format!("{name}.admin"));
    let is_node = name != "bootstrap";
    let _ = std::fs::remove_file(&addr_file);
    let _ = std::fs::remove_file(&admin_file);
    let mut launch_args = args.clone();
    launch_args.extend(["--addr-file".into(), addr_file.display().to_string()]);
    if is_node {
        launch_args.extend(["--admin-addr-file".into(), admin_file.display().to_string()]);
    }
    let mut child = start(program, &launch_args, &dir.join(format!("{name}.log")))?;
    let started = std::time::Instant::now();
    let read = |f: &Path| std::fs::read_to_string(f).ok().map(|t| t.trim().to_string());
    let (endpoint, admin) = loop {
        if let Some(endpoint) = read(&addr_file) {
            if !is_node {
                break (endpoint, None);
            }
            if let Some(admin) = read(&admin_file) {
                break (endpoint, Some(admin));
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            anyhow::bail!(
                "{name} exited ({status}) before listening; see {}",
                dir.join(format!("{name}.log")).display()
            );
        }
        anyhow::ensure!(started.elapsed() < START_TIMEOUT, "{name} did not start listening within {START_TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The command that starts it again, on the port it has now.
    set_flag(&mut args, "--listen", &endpoint);
    if let Some(admin) = &admin {
        set_flag(&mut args, "--advertise", &endpoint);
        set_flag(&mut args, "--admin-listen", admin);
    }
    Ok(Service { name: name.into(), endpoint, admin, args, program: program.to_path_buf(), child })
}

fn set_flag(args: &mut Vec<String>, flag: &str, value: &str) {
    match args.iter().position(|a| a == flag) {
        Some(i) if i + 1 < args.len() => args[i + 1] = value.to_string(),
        _ => args.extend([flag.to_string(), value.to_string()]),
    }
}

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate p2pctl")?;
    let path = exe.with_file_name(name);
    anyhow::ensure!(
        path.exists(),
        "{} not found next to p2pctl; build all binaries first: cargo build --release",
        path.display()
    );
    Ok(path)
}

fn start(program: &Path, args: &[String], log: &Path) -> anyhow::Result<Child> {
    let out = std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let err = out.try_clone()?;
    Command::new(program)
        .args(args)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", program.display()))
}

pub async fn run(cmd: DevnetCmd, json: bool) -> anyhow::Result<()> {
    let DevnetCmd::Up { nodes, bootstrap_port, base_port, data_dir, difficulty_bits } = cmd;
    let (dir, _temp) = match data_dir {
        Some(d) => (d, None),
        None => {
            let t = tempfile::Builder::new().prefix("p2p-devnet-").tempdir()?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    std::fs::create_dir_all(&dir)?;
    let (bootstrap_bin, node_bin) = (sibling("bootstrap-svc")?, sibling("node-svc")?);
    let mut services = Vec::new();
    let bargs: Vec<String> = vec![
        "--listen".into(),
        format!("127.0.0.1:{bootstrap_port}"),
        "--data-dir".into(),
        dir.join("bootstrap").display().to_string(),
    ];
    let bootstrap = launch("bootstrap", &bootstrap_bin, bargs, &dir).await?;
    let baddr = bootstrap.endpoint.clone();
    services.push(bootstrap);
    for i in 0..nodes {
        let port = if base_port == 0 { 0 } else { base_port + i };
        let name = format!("node{}", i + 1);
        let mut args: Vec<String> = vec![
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--bootstrap".into(),
            baddr.clone(),
            "--difficulty-bits".into(),
            difficulty_bits.to_string(),
            "--data-dir".into(),
            dir.join(&name).display().to_string(),
        ];
        if port != 0 {
            args.extend(["--advertise".into(), format!("127.0.0.1:{port}")]);
        }
        services.push(launch(&name, &node_bin, args, &dir).await?);
    }

    let log = |s: &Service| dir.join(format!("{}.log", s.name)).display().to_string();
    let restart = |s: &Service| format!("{} {}", s.program.display(), s.args.join(" "));
    if json {
        let list: Vec<serde_json::Value> = services
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name, "endpoint": s.endpoint, "admin": s.admin, "pid": s.child.id(), "log": log(s),
                    "restart": std::iter::once(s.program.display().to_string()).chain(s.args.iter().cloned()).collect::<Vec<_>>(),
                })
            })
            .collect();
        // One line, so a script can read it before the network stops.
        println!("{}", serde_json::json!({ "services": list, "data_dir": dir.display().to_string() }));
    } else {
        let mut t = Table::new(&["SERVICE", "ENDPOINT", "ADMIN", "PID", "LOG"]);
        for s in &services {
            t.row(vec![
                s.name.clone(),
                s.endpoint.clone(),
                s.admin.clone().unwrap_or_else(|| "-".into()),
                s.child.id().map(|p| p.to_string()).unwrap_or_default(),
                log(s),
            ]);
        }
        t.print();
        println!("\ndata: {}{}", dir.display(), if _temp.is_some() { " (removed on exit)" } else { "" });
        if let Some(first) = services.get(1) {
            println!(
                "try:  p2pctl network status   |   p2pctl --node {} --admin {} node mine hello",
                first.endpoint,
                first.admin.as_deref().unwrap_or("-")
            );
        }
        println!("restart a node by hand with:");
        for s in services.iter().skip(1) {
            println!("  {}", restart(s));
        }
        println!("Ctrl-C stops everything.");
    }
    use std::io::Write as _;
    let _ = std::io::stdout().flush();

    // Report services that die on their own, until Ctrl-C or SIGTERM.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut reported = vec![false; services.len()];
    loop {
        tokio::select! {
            _ = p2p_proto::serving::shutdown_signal() => break,
            _ = tick.tick() => {
                for (s, done) in services.iter_mut().zip(reported.iter_mut()) {
                    if !*done && let Ok(Some(status)) = s.child.try_wait() {
                        eprintln!("{} exited ({status}); see its log", s.name);
                        *done = true;
                    }
                }
            }
        }
    }
    eprintln!("stopping…");
    // Nodes first, so they can deregister while the bootstrap still runs.
    for s in services.iter_mut().rev() {
        stop(s).await;
    }
    eprintln!("stopped");
    Ok(())
}

async fn stop(s: &mut Service) {
    if let Some(pid) = s.child.id() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
    }
    match tokio::time::timeout(Duration::from_secs(10), s.child.wait()).await {
        Ok(_) => {}
        Err(_) => {
            eprintln!("{} did not stop within 10s; killing it", s.name);
            let _ = s.child.kill().await;
        }
    }
}
