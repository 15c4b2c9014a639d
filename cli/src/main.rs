//! `p2pctl`: drive the bootstrap registry and chain nodes from a terminal.

mod bench;
mod bench_hostile;
mod bench_node;
mod bootstrap;
mod connect;
mod devnet;
mod node;
mod output;

use clap::{Parser, Subcommand};

/// Command-line client for the p2p chain's bootstrap registry and nodes.
#[derive(Debug, Parser)]
#[command(name = "p2pctl", version)]
struct Cli {
    /// Bootstrap server endpoint (host:port or http://host:port).
    #[arg(long, global = true, env = "P2PCTL_BOOTSTRAP", default_value = "127.0.0.1:4000")]
    bootstrap: String,
    /// Node endpoint (host:port or http://host:port).
    #[arg(long, global = true, env = "P2PCTL_NODE", default_value = "127.0.0.1:3000")]
    node: String,
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
    let result = match cli.command {
        Command::Bootstrap(cmd) => bootstrap::run(&cli.bootstrap, cmd, cli.json).await,
        Command::Node(cmd) => node::run(&cli.node, cmd, cli.json).await,
        Command::Network(cmd) => node::network(&cli.bootstrap, cmd, cli.json).await,
        Command::Devnet(cmd) => devnet::run(cmd, cli.json).await,
        Command::Health { endpoint, service } => health(&endpoint, service).await,
        Command::Bench(cmd) => bench::run(cmd).await,
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
