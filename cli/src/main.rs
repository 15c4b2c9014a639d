//! `p2pctl`: drive the bootstrap registry and chain nodes from a terminal.

mod bench;
mod bench_hostile;
mod bench_node;
mod bench_tx;
mod bootstrap;
mod connect;
mod devnet;
mod graph;
mod node;
mod output;
mod plot;
mod sim;
mod tx;

use clap::{Parser, Subcommand};

/// Command-line client for the p2p chain's bootstrap registry and nodes.
#[derive(Debug, Parser)]
#[command(name = "p2pctl", version)]
struct Cli {
    /// Bootstrap server endpoint (host:port or http://host:port).
    #[arg(long, global = true, env = "P2PCTL_BOOTSTRAP", default_value = "127.0.0.1:4000")]
    bootstrap: String,
    /// Node endpoint ([NODE_ID@]host:port; with the id, the node must prove it).
    #[arg(long, global = true, env = "P2PCTL_NODE", default_value = "127.0.0.1:3000")]
    node: String,
    /// The node's admin API (mining, bans, peers); default: the --node host
    /// at its port + 100 (where a node listens on loopback by default).
    #[arg(long, global = true, env = "P2PCTL_ADMIN")]
    admin: Option<String>,
    /// Admin API token (a node bound beyond loopback requires one).
    #[arg(long, global = true, env = "P2PCTL_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// The node's data dir, to read its admin.cookie when no token is given.
    #[arg(long, global = true, env = "P2PCTL_DATA_DIR")]
    data_dir: Option<std::path::PathBuf>,
    /// The servers run without TLS (--plaintext): connect in plaintext.
    #[arg(long, global = true, env = "P2P_PLAINTEXT")]
    plaintext: bool,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Talk to the bootstrap registry.
    #[command(subcommand)]
    Bootstrap(bootstrap::BootstrapCmd),
    /// Talk to a chain node.
    #[command(subcommand)]
    Node(node::NodeCmd),
    /// Look at the whole network.
    #[command(subcommand)]
    Network(node::NetworkCmd),
    /// Send and look up transactions (through --node).
    #[command(subcommand)]
    Tx(tx::TxCmd),
    /// A node's pending transactions, oldest first.
    Mempool {
        /// Most entries to show.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Run a local network of processes (no Docker needed).
    #[command(subcommand)]
    Devnet(devnet::DevnetCmd),
    /// Check a server's grpc.health.v1 status; exits 0 only when SERVING
    /// (the compose healthcheck).
    Health {
        /// host:port of a bootstrap or node.
        endpoint: String,
        /// Service name to check; empty means the server as a whole.
        #[arg(long, default_value = "")]
        service: String,
    },
    /// Measure throughput and latency.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
    /// Simulations that run the node's own logic at scales this machine
    /// cannot host (seeded: same seed, same output).
    #[command(subcommand)]
    Sim(sim::SimCmd),
    /// Write a TLS client certificate proving the identity in an ed25519 key
    /// file (created when missing), for standard clients such as `grpcurl
    /// -insecure -cert C -key K`; prints the node id it proves.
    Cert {
        /// The identity key (64 hex characters, like a node's node.key).
        #[arg(long)]
        key: std::path::PathBuf,
        /// Where to write the certificate (PEM).
        #[arg(long, default_value = "client.crt")]
        cert_out: std::path::PathBuf,
        /// Where to write the certificate's private key (PKCS#8 PEM).
        #[arg(long, default_value = "client.key.pem")]
        key_out: std::path::PathBuf,
    },
    /// Print the public key of an ed25519 key file (created when missing),
    /// e.g. to name validators: `node-svc --validators $(p2pctl key v1.key),...`.
    Key {
        /// The key file (64 hex characters, like a node's node.key).
        file: std::path::PathBuf,
    },
    /// Print a server's Prometheus metrics (`--metrics-listen` of node-svc
    /// or bootstrap-svc), optionally only the lines containing `--grep`.
    Metrics {
        /// host:port of the metrics listener, e.g. 127.0.0.1:9100.
        address: String,
        #[arg(long)]
        grep: Option<String>,
    },
}

/// GET /metrics over plain HTTP/1.1 (what the servers' metrics listener speaks).
async fn metrics(address: &str, grep: Option<&str>) -> anyhow::Result<()> {
    use anyhow::Context;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ask = async {
        let mut s =
            tokio::net::TcpStream::connect(address).await.with_context(|| format!("cannot connect to {address}"))?;
        s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").as_bytes())
            .await?;
        let mut raw = Vec::new();
        s.take(64 * 1024 * 1024).read_to_end(&mut raw).await?;
        anyhow::Ok(raw)
    };
    let raw =
        tokio::time::timeout(std::time::Duration::from_secs(10), ask).await.context("no answer within 10 s")??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").context("not an HTTP answer")?;
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "{}", head.lines().next().unwrap_or(head));
    for line in body.lines().filter(|l| grep.is_none_or(|g| l.contains(g))) {
        println!("{line}");
    }
    Ok(())
}

/// `p2pctl cert`: a certificate of our libp2p-style kind for `key`.
fn cert(key: &std::path::Path, cert_out: &std::path::Path, key_out: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let (key, created) = p2p_proto::identity::load_or_create(key)?;
    let identity = p2p_proto::tls::TlsIdentity::new(&key)?;
    std::fs::write(cert_out, identity.cert_pem()).with_context(|| format!("cannot write {}", cert_out.display()))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    std::io::Write::write_all(
        &mut options.open(key_out).with_context(|| format!("cannot write {}", key_out.display()))?,
        identity.cert_key_pem().as_bytes(),
    )?;
    if created {
        eprintln!("created a new identity key");
    }
    println!("{}", identity.node_id());
    Ok(())
}

/// `p2pctl key`: the public key of a key file, created when missing.
fn public_key(file: &std::path::Path) -> anyhow::Result<()> {
    let (key, created) = p2p_proto::identity::load_or_create(file)?;
    if created {
        eprintln!("created {}", file.display());
    }
    println!("{}", hex::encode(key.verifying_key().to_bytes()));
    Ok(())
}

async fn health(endpoint: &str, service: String) -> anyhow::Result<()> {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    let mut client = HealthClient::new(connect::channel("server", endpoint).await?);
    let status = client.check(HealthCheckRequest { service }).await.map_err(connect::status)?.into_inner().status();
    println!("{}", status.as_str_name());
    anyhow::ensure!(status == ServingStatus::Serving, "{endpoint} is not serving");
    Ok(())
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    connect::set_plaintext(cli.plaintext);
    let admin = node::AdminOpts {
        endpoint: cli.admin.clone().unwrap_or_else(|| node::default_admin(&cli.node)),
        token: cli.admin_token.clone(),
        data_dir: cli.data_dir.clone(),
    };
    let result = match cli.command {
        Command::Bootstrap(cmd) => bootstrap::run(&cli.bootstrap, cmd, cli.json).await,
        Command::Node(cmd) => node::run(&cli.node, &admin, cmd, cli.json).await,
        Command::Network(cmd) => node::network(&cli.bootstrap, cmd, cli.json).await,
        Command::Tx(cmd) => tx::run(&cli.node, cmd, cli.json).await,
        Command::Mempool { limit } => tx::mempool(&cli.node, limit, cli.json).await,
        Command::Devnet(cmd) => devnet::run(cmd, cli.json).await,
        Command::Health { endpoint, service } => health(&endpoint, service).await,
        Command::Bench(cmd) => bench::run(cmd).await,
        Command::Sim(cmd) => sim::run(cmd),
        Command::Cert { key, cert_out, key_out } => cert(&key, &cert_out, &key_out),
        Command::Key { file } => public_key(&file),
        Command::Metrics { address, grep } => metrics(&address, grep.as_deref()).await,
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
