//! `p2pctl`: drive the bootstrap registry and chain nodes from a terminal.

mod bench;
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
    /// Measure throughput and latency.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bootstrap(cmd) => bootstrap::run(&cli.bootstrap, cmd, cli.json).await,
        Command::Node(cmd) => node::run(&cli.node, cmd, cli.json).await,
        Command::Network(cmd) => node::network(&cli.bootstrap, cmd, cli.json).await,
        Command::Devnet(cmd) => devnet::run(cmd).await,
        Command::Bench(cmd) => bench::run(cmd).await,
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
