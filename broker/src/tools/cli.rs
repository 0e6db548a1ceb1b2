//! The tools' command lines, shared by `portico-broker producer|consumer`
//! and `portico producer|consumer` (the demo's commands: no second build).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::{consume, produce, Connection, ConsumerArgs, ProducerArgs, ToolError};

/// Where and as whom both tools connect.
#[derive(Debug, clap::Args)]
pub struct ConnectionFlags {
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

impl From<ConnectionFlags> for Connection {
    fn from(a: ConnectionFlags) -> Self {
        Self {
            broker_url: a.broker_url,
            user: a.user,
            password: a.password,
            destination: a.destination,
            ca: a.ca,
        }
    }
}

/// `producer`: send messages (stamped with `seq` 1..N and `producer-id`).
#[derive(Debug, clap::Args)]
pub struct ProducerFlags {
    #[command(flatten)]
    connection: ConnectionFlags,
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
    /// A header every message carries, KEY=VALUE (repeatable): what
    /// selectors, groups (JMSXGroupID) or priority read.
    #[arg(long = "header", value_parser = key_value)]
    headers: Vec<(String, String)>,
}

fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, not {text:?}")),
    }
}

/// `consumer`: receive messages, acknowledging each; counts duplicates and gaps.
#[derive(Debug, clap::Args)]
pub struct ConsumerFlags {
    #[command(flatten)]
    connection: ConnectionFlags,
    #[arg(long = "message-count", alias = "messageCount", default_value_t = 1000)]
    message_count: u64,
    /// Stop when nothing arrives for this long.
    #[arg(long = "receive-timeout", default_value = "30s", value_parser = portico_core::duration::parse)]
    receive_timeout: Duration,
    /// Only messages this JMS selector selects, e.g. "region = 'eu'".
    #[arg(long)]
    selector: Option<String>,
}

/// Runs the producer; prints its summary line. Exit 0, or 2 on an error.
pub fn producer(flags: ProducerFlags) -> ExitCode {
    let args = ProducerArgs {
        connection: flags.connection.into(),
        persistent: flags.persistent,
        message_size: flags.message_size,
        message_count: flags.message_count,
        sleep: Duration::from_millis(flags.sleep),
        headers: flags.headers,
    };
    run(async move { produce(&args).await.map(|s| (s.to_string(), true)) })
}

/// Runs the consumer; prints its summary line. Exit 0, 1 if messages are
/// missing, 2 on an error.
pub fn consumer(flags: ConsumerFlags) -> ExitCode {
    let args = ConsumerArgs {
        connection: flags.connection.into(),
        message_count: flags.message_count,
        receive_timeout: flags.receive_timeout,
        selector: flags.selector,
    };
    run(async move {
        consume(&args)
            .await
            .map(|s| (s.to_string(), s.missing == 0))
    })
}

/// Runs a tool; prints its summary line; exit 1 if it fell short, 2 on error.
fn run(work: impl std::future::Future<Output = Result<(String, bool), ToolError>>) -> ExitCode {
    let runtime = match portico_core::signals::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
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
