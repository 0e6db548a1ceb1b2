//! The `portico-broker` command: flags, tracing and signals around the library.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use portico_broker::config::BrokerConfig;
use portico_broker::tools::cli::{self as tools, ConsumerFlags, ProducerFlags};
use tracing::error;

#[derive(Parser)]
#[command(
    name = "portico-broker",
    version,
    about = "A STOMP broker node of a portico broker network"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one broker node.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Check a broker configuration: exit 0, or print every error and exit 2.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Read a password on standard input and print its hash for `password_hash`.
    HashPassword,
    /// Send messages (stamped with `seq` 1..N and `producer-id`).
    Producer(ProducerFlags),
    /// Receive messages, acknowledging each; counts duplicates and gaps.
    Consumer(ConsumerFlags),
    /// Measure an MQTT broker: one publisher and one subscriber on a topic.
    MqttBench {
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        #[arg(long)]
        port: u16,
        /// 0 or 1.
        #[arg(long, default_value_t = 0)]
        qos: u8,
        #[arg(long, default_value_t = 20_000)]
        count: u64,
        /// Payload bytes (at least 8: the send time).
        #[arg(long, default_value_t = 256)]
        size: usize,
        /// QoS 1 messages in flight from the publisher.
        #[arg(long, default_value_t = 100)]
        window: u64,
        #[arg(long, default_value = "bench/mqtt")]
        topic: String,
    },
    /// Measure a STOMP broker's latency at low load: one producer and one
    /// consumer on a queue, synchronous SENDs or a fixed rate.
    StompBench {
        /// tcp://host:port
        #[arg(long = "broker-url")]
        broker_url: String,
        #[arg(long, default_value = "queue://bench.latency")]
        destination: String,
        #[arg(long, default_value = "true", action = clap::ArgAction::Set)]
        persistent: bool,
        #[arg(long, default_value_t = 5_000)]
        count: u64,
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// Messages per second, without waiting for receipts; without it,
        /// each SEND waits for its RECEIPT (one in flight).
        #[arg(long)]
        rate: Option<u64>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        password: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match cli.command {
        Command::Check { config } => match load(&config) {
            Ok(c) => {
                println!(
                    "{}: ok (broker {}, {} transport{})",
                    config.display(),
                    c.name,
                    c.transports.len(),
                    if c.transports.len() == 1 { "" } else { "s" }
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::HashPassword => hash_password(),
        Command::Run { config } => run(&config),
        Command::Producer(flags) => tools::producer(flags),
        Command::Consumer(flags) => tools::consumer(flags),
        Command::MqttBench {
            host,
            port,
            qos,
            count,
            size,
            window,
            topic,
        } => {
            let args = portico_broker::tools::mqtt_bench::MqttBenchArgs {
                host,
                port,
                qos,
                count,
                size: size.max(8),
                window: window.max(1),
                topic,
            };
            bench("mqtt-bench", count, async move {
                portico_broker::tools::mqtt_bench::mqtt_bench(&args).await
            })
        }
        Command::StompBench {
            broker_url,
            destination,
            persistent,
            count,
            size,
            rate,
            user,
            password,
        } => {
            let args = portico_broker::tools::stomp_bench::StompBenchArgs {
                broker_url,
                destination,
                persistent,
                count,
                size,
                rate: rate.filter(|r| *r > 0),
                login: user,
                passcode: password,
            };
            bench("stomp-bench", count, async move {
                portico_broker::tools::stomp_bench::stomp_bench(&args).await
            })
        }
    }
}

/// Runs one benchmark measurement (`mqtt-bench`, `stomp-bench`); prints
/// its report as JSON. Exit 1 if messages were missing, 2 on an error.
fn bench<F>(name: &str, expected: u64, work: F) -> ExitCode
where
    F: std::future::Future<Output = Result<portico_broker::tools::BenchReport, String>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(work) {
        Ok(report) => {
            println!("{report}");
            ExitCode::from(u8::from(report.received != expected))
        }
        Err(e) => {
            error!("{name}: {e}");
            ExitCode::from(2)
        }
    }
}

fn load(path: &Path) -> Result<BrokerConfig, ExitCode> {
    BrokerConfig::load(path).map_err(|e| {
        eprintln!("{}", e.report(path));
        ExitCode::from(2)
    })
}

fn hash_password() -> ExitCode {
    if std::io::stdin().is_terminal() {
        eprintln!("password (then Enter):");
    }
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        eprintln!("error: cannot read a password from standard input");
        return ExitCode::from(2);
    }
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        eprintln!("error: the password is empty");
        return ExitCode::from(2);
    }
    match portico_broker::auth::hash_password(password) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(path: &Path) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = match portico_core::signals::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(async {
        match portico_broker::run_node(config, portico_core::signals::stop()).await {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                error!("{e}");
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        }
    })
}
