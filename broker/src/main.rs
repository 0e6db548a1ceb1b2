//! The `portico-broker` command: flags, tracing and signals around the library.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use portico_broker::config::BrokerConfig;
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
    Producer {
        #[command(flatten)]
        connection: ConnectionArgs,
        /// Send with persistent:true (stored before the receipt).
        #[arg(long, default_value = "true", action = clap::ArgAction::Set)]
        persistent: bool,
        #[arg(long = "message-size", alias = "messageSize", default_value_t = 1000)]
        message_size: usize,
        #[arg(long = "message-count", alias = "messageCount", default_value_t = 1000)]
        message_count: u64,
        /// Milliseconds to pause after each message (paces a long run).
        #[arg(long, default_value_t = 0)]
        sleep: u64,
    },
    /// Receive messages, acknowledging each; counts duplicates and gaps.
    Consumer {
        #[command(flatten)]
        connection: ConnectionArgs,
        #[arg(long = "message-count", alias = "messageCount", default_value_t = 1000)]
        message_count: u64,
        /// Stop when nothing arrives for this long.
        #[arg(long = "receive-timeout", default_value = "30s", value_parser = parse_duration)]
        receive_timeout: Duration,
    },
}

#[derive(clap::Args)]
struct ConnectionArgs {
    /// ssl://host:port, tcp://host:port or failover:(ssl://a:port,ssl://b:port)?options
    #[arg(long = "broker-url", alias = "brokerUrl")]
    broker_url: String,
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    password: Option<String>,
    /// queue://NAME or topic://NAME
    #[arg(long)]
    destination: String,
    /// CA bundle that verifies ssl:// brokers.
    #[arg(long)]
    ca: Option<PathBuf>,
}

impl From<ConnectionArgs> for portico_broker::tools::Connection {
    fn from(a: ConnectionArgs) -> Self {
        Self {
            broker_url: a.broker_url,
            user: a.user,
            password: a.password,
            destination: a.destination,
            ca: a.ca,
        }
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    portico_core::duration::parse(text)
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
        Command::Producer {
            connection,
            persistent,
            message_size,
            message_count,
            sleep,
        } => tool(async move {
            let args = portico_broker::tools::ProducerArgs {
                connection: connection.into(),
                persistent,
                message_size,
                message_count,
                sleep: Duration::from_millis(sleep),
            };
            portico_broker::tools::produce(&args)
                .await
                .map(|s| (s.to_string(), true))
        }),
        Command::Consumer {
            connection,
            message_count,
            receive_timeout,
        } => tool(async move {
            let args = portico_broker::tools::ConsumerArgs {
                connection: connection.into(),
                message_count,
                receive_timeout,
            };
            portico_broker::tools::consume(&args)
                .await
                .map(|s| (s.to_string(), s.missing == 0))
        }),
    }
}

fn load(path: &Path) -> Result<BrokerConfig, ExitCode> {
    BrokerConfig::load(path).map_err(|e| {
        eprintln!("{}", e.report(path));
        ExitCode::from(2)
    })
}

/// Runs a tool; prints its summary line; exit 1 if it fell short, 2 on error.
fn tool(
    work: impl std::future::Future<Output = Result<(String, bool), portico_broker::tools::ToolError>>,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(work) {
        Ok((summary, complete)) => {
            println!("{summary}");
            if complete {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
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
