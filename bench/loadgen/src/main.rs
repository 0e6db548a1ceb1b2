//! `portico-loadgen`: the one client every contender of `bench/run.sh` is
//! driven by, and the echo backend they all relay to. Each measuring command
//! prints one JSON object on stdout.

mod crypto;
mod dial;
mod echo;
mod failover;
mod idle;
mod rate;
mod report;
mod stream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "portico-loadgen", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the benchmark backend: echo every byte back (TLS unless --plain),
    /// and answer HTTP 200 on the health port.
    Echo(echo::EchoArgs),
    /// A few long connections streaming both ways; MB/s each way.
    Throughput(stream::ThroughputArgs),
    /// New TLS connections (full handshakes, no resumption), one small round trip each.
    Connect(rate::ConnectArgs),
    /// Request/response round trips on established connections: p50, p99, p99.9.
    Latency(stream::LatencyArgs),
    /// Open connections, finish one round trip on each, then hold them idle.
    Idle(idle::IdleArgs),
    /// STOMP SENDs with receipts through a front door; reports the longest gap.
    Failover(failover::FailoverArgs),
    /// A handshake's public-key operations per second, one core, through
    /// each rustls crypto provider (ring, aws-lc-rs).
    Crypto(crypto::CryptoArgs),
}

/// Where a measuring command connects, and how it checks the certificate.
#[derive(Args, Clone)]
pub(crate) struct Target {
    /// host:port of the contender (or of the backend, for the direct baseline)
    #[arg(long)]
    target: SocketAddr,
    /// CA bundle that verifies the contender's certificate
    #[arg(long, required_unless_present = "plain")]
    ca: Option<PathBuf>,
    /// Name sent as SNI and verified in the certificate
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Plain TCP instead of TLS
    #[arg(long)]
    plain: bool,
}

/// How long a measuring command runs.
#[derive(Args, Clone, Copy)]
pub(crate) struct Window {
    /// Seconds measured, after the warm-up
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Seconds of load before measuring starts
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
}

impl Window {
    fn measured(self) -> Duration {
        Duration::from_secs_f64(self.seconds)
    }

    fn warmup(self) -> Duration {
        Duration::from_secs_f64(self.warmup)
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        match cli.command {
            Command::Echo(args) => echo::run(args).await,
            Command::Throughput(args) => stream::throughput(args).await,
            Command::Connect(args) => rate::connect(args).await,
            Command::Latency(args) => stream::latency(args).await,
            Command::Idle(args) => idle::run(args).await,
            Command::Failover(args) => failover::run(args).await,
            Command::Crypto(args) => crypto::run(&args),
        }
    })?;
    println!("{report}");
    Ok(())
}
