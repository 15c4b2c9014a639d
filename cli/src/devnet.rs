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
        /// Bootstrap port (nodes use 3001, 3002, …).
        #[arg(long, default_value_t = 4000)]
        bootstrap_port: u16,
        /// First node port.
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
    args: Vec<String>,
    program: PathBuf,
    child: Child,
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

pub async fn run(cmd: DevnetCmd) -> anyhow::Result<()> {
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
    let baddr = format!("127.0.0.1:{bootstrap_port}");
    let mut services = Vec::new();
    let bargs: Vec<String> =
        vec!["--listen".into(), baddr.clone(), "--data-dir".into(), dir.join("bootstrap").display().to_string()];
    let child = start(&bootstrap_bin, &bargs, &dir.join("bootstrap.log"))?;
    services.push(Service {
        name: "bootstrap".into(),
        endpoint: baddr.clone(),
        args: bargs,
        program: bootstrap_bin,
        child,
    });
    // Nodes retry the bootstrap with backoff, so they may start right away.
    for i in 0..nodes {
        let addr = format!("127.0.0.1:{}", base_port + i);
        let name = format!("node{}", i + 1);
        let args: Vec<String> = vec![
            "--listen".into(),
            addr.clone(),
            "--advertise".into(),
            addr.clone(),
            "--bootstrap".into(),
            baddr.clone(),
            "--difficulty-bits".into(),
            difficulty_bits.to_string(),
            "--data-dir".into(),
            dir.join(&name).display().to_string(),
        ];
        let child = start(&node_bin, &args, &dir.join(format!("{name}.log")))?;
        services.push(Service { name, endpoint: addr, args, program: node_bin.clone(), child });
    }

    let mut t = Table::new(&["SERVICE", "ENDPOINT", "PID", "LOG"]);
    for s in &services {
        t.row(vec![
            s.name.clone(),
            s.endpoint.clone(),
            s.child.id().map(|p| p.to_string()).unwrap_or_default(),
            dir.join(format!("{}.log", s.name)).display().to_string(),
        ]);
    }
    t.print();
    println!("\ndata: {}{}", dir.display(), if _temp.is_some() { " (removed on exit)" } else { "" });
    println!("try:  p2pctl network status   |   p2pctl --node {} node mine hello", services[1].endpoint);
    println!("restart a node by hand with:");
    for s in services.iter().skip(1) {
        println!("  {} {}", s.program.display(), s.args.join(" "));
    }
    println!("Ctrl-C stops everything.");

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
