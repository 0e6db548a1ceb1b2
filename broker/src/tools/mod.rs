//! `portico-broker producer` and `consumer`: ActiveMQ's tools, over the
//! failover client. The producer stamps each message with `seq` (1..N) and
//! `producer-id`; the consumer counts duplicates and gaps by them.

pub mod cli;
pub mod mqtt_bench;
pub mod stomp_bench;

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::client::{BrokerUrl, Client, ClientError, ClientOptions};
use crate::router::{Destination, Kind};
use crate::stomp::{Command, Frame};

/// What `mqtt-bench` and `stomp-bench` measured, printed as one JSON line.
#[derive(Debug)]
pub struct BenchReport {
    pub received: u64,
    pub messages_per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// Latencies printed in µs (`p50_us`) rather than ms (`p50_ms`).
    pub micros: bool,
}

impl BenchReport {
    /// The report of `latencies` (any order), the first message sent at
    /// `begun` and the last received at `last`.
    pub fn of(mut latencies: Vec<Duration>, begun: Instant, last: Instant, micros: bool) -> Self {
        latencies.sort_unstable();
        let at = |q: f64| {
            let i = ((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1));
            latencies.get(i).copied().unwrap_or_default()
        };
        Self {
            received: latencies.len() as u64,
            messages_per_second: latencies.len() as f64
                / last
                    .saturating_duration_since(begun)
                    .as_secs_f64()
                    .max(1e-9),
            p50: at(0.50),
            p99: at(0.99),
            micros,
        }
    }
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (unit, scale, digits) = if self.micros {
            ("us", 1e6, 1)
        } else {
            ("ms", 1e3, 3)
        };
        write!(
            f,
            "{{\"received\": {}, \"msgs_per_s\": {:.0}, \"p50_{unit}\": {:.digits$}, \"p99_{unit}\": {:.digits$}}}",
            self.received,
            self.messages_per_second,
            self.p50.as_secs_f64() * scale,
            self.p99.as_secs_f64() * scale,
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// What both tools need to connect.
#[derive(Debug, Clone)]
pub struct Connection {
    pub broker_url: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub destination: String,
    /// CA bundle for `ssl://` brokers.
    pub ca: Option<PathBuf>,
}

impl Connection {
    async fn open(&self, window: usize) -> Result<(Client, Destination), ToolError> {
        let url = BrokerUrl::parse(&self.broker_url).map_err(ToolError::Usage)?;
        let destination = Destination::parse(&self.destination).map_err(ToolError::Usage)?;
        let tls = match &self.ca {
            Some(ca) => {
                let roots = portico_core::tls::load_roots(ca)
                    .map_err(|e| ToolError::Usage(e.to_string()))?;
                Some(portico_core::tls::client_config(roots))
            }
            None if url.endpoints.iter().any(|e| e.tls) => {
                return Err(ToolError::Usage(
                    "an ssl:// broker needs --ca FILE (the CA that issued its certificate)".into(),
                ))
            }
            None => None,
        };
        let client = Client::connect(
            url,
            ClientOptions {
                login: self.user.clone(),
                passcode: self.password.clone(),
                tls,
                window,
            },
        )
        .await?;
        Ok((client, destination))
    }
}

/// A progress bar on a terminal, plain lines every tenth otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    verb: &'static str,
    next_line: u64,
}

impl Progress {
    fn new(total: u64, verb: &'static str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_message(verb);
            bar
        });
        Self {
            bar,
            total,
            verb,
            next_line: (total / 10).max(1),
        }
    }

    fn set(&mut self, done: u64) {
        match &self.bar {
            Some(bar) => bar.set_position(done),
            None if done >= self.next_line => {
                eprintln!("{} {done}/{}", self.verb, self.total);
                self.next_line += (self.total / 10).max(1);
            }
            None => {}
        }
    }

    fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProducerArgs {
    pub connection: Connection,
    pub persistent: bool,
    pub message_size: usize,
    pub message_count: u64,
    /// A pause after each message (ActiveMQ's `--sleep`), to pace a run.
    pub sleep: Duration,
    /// Headers every message carries.
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProducerSummary {
    pub sent: u64,
    pub elapsed: Duration,
    pub failovers: u64,
}

impl std::fmt::Display for ProducerSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        write!(
            f,
            "sent {} messages in {secs:.1} s ({:.0} msg/s)",
            self.sent,
            self.sent as f64 / secs.max(1e-9)
        )?;
        if self.failovers > 0 {
            write!(
                f,
                " across {} failover{}",
                self.failovers,
                if self.failovers == 1 { "" } else { "s" }
            )?;
        }
        Ok(())
    }
}

/// Sends `message_count` messages and waits for every receipt.
pub async fn produce(args: &ProducerArgs) -> Result<ProducerSummary, ToolError> {
    let (mut client, destination) = args.connection.open(1000).await?;
    let producer_id = client.id().to_owned();
    let body: Vec<u8> = b"portico "
        .iter()
        .copied()
        .cycle()
        .take(args.message_size)
        .collect();
    let mut progress = Progress::new(args.message_count, "sent");
    let started = Instant::now();
    for seq in 1..=args.message_count {
        let mut frame = Frame::new(Command::Send)
            .header("destination", destination.stomp())
            .header("persistent", if args.persistent { "true" } else { "false" })
            .header("seq", seq.to_string())
            .header("producer-id", producer_id.clone());
        for (k, v) in &args.headers {
            frame = frame.header(k, v.clone());
        }
        let frame = frame.body(body.clone());
        client.send(frame).await?;
        if seq % 100 == 0 {
            progress.set(seq);
        }
        if !args.sleep.is_zero() {
            // Paced: what is queued goes out now, not when the window fills.
            client.push().await?;
            tokio::time::sleep(args.sleep).await;
        }
    }
    client.flush().await?;
    progress.set(args.message_count);
    progress.finish();
    let summary = ProducerSummary {
        sent: args.message_count,
        elapsed: started.elapsed(),
        failovers: client.reconnects,
    };
    client.close().await?;
    Ok(summary)
}

#[derive(Debug, Clone)]
pub struct ConsumerArgs {
    pub connection: Connection,
    pub message_count: u64,
    /// Give up when nothing arrives for this long.
    pub receive_timeout: Duration,
    /// A JMS selector for the subscription.
    pub selector: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerSummary {
    pub received: u64,
    pub unique: u64,
    pub duplicates: u64,
    pub missing: u64,
    pub elapsed: Duration,
}

impl std::fmt::Display for ConsumerSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        write!(
            f,
            "received {} messages ({} unique, {} duplicates, {} missing) in {secs:.1} s ({:.0} msg/s)",
            self.received,
            self.unique,
            self.duplicates,
            self.missing,
            self.received as f64 / secs.max(1e-9)
        )
    }
}

/// Receives until `message_count` distinct messages arrived (or nothing
/// came for the receive timeout), acknowledging each.
pub async fn consume(args: &ConsumerArgs) -> Result<ConsumerSummary, ToolError> {
    let (mut client, destination) = args.connection.open(1000).await?;
    let ack = if destination.kind == Kind::Queue {
        "client-individual"
    } else {
        "auto"
    };
    let mut extra = vec![("activemq.prefetchSize", "1000")];
    if let Some(selector) = &args.selector {
        extra.push(("selector", selector.as_str()));
    }
    client.subscribe(&destination.stomp(), ack, &extra).await?;
    let mut seen = HashSet::new();
    let mut received = 0u64;
    let mut progress = Progress::new(args.message_count, "received");
    let mut started = None;
    while (seen.len() as u64) < args.message_count {
        let message = match tokio::time::timeout(args.receive_timeout, client.recv()).await {
            Ok(m) => m?,
            Err(_) => break,
        };
        started.get_or_insert_with(Instant::now);
        received += 1;
        let key = match (message.get("producer-id"), message.get("seq")) {
            (Some(p), Some(s)) => format!("{p}/{s}"),
            _ => message.get("message-id").unwrap_or_default().to_owned(),
        };
        seen.insert(key);
        client.ack(&message).await?;
        progress.set(seen.len() as u64);
    }
    progress.finish();
    let unique = seen.len() as u64;
    let summary = ConsumerSummary {
        received,
        unique,
        duplicates: received - unique,
        missing: args.message_count.saturating_sub(unique),
        elapsed: started.map_or(Duration::ZERO, |s| s.elapsed()),
    };
    if summary.missing > 0 {
        // What fell short, per producer: the gaps below what did arrive.
        report_gaps(&seen);
    }
    // Acknowledgements are only done once the broker has the DISCONNECT:
    // a session that did not end cleanly is an error, not a success.
    client.close().await?;
    Ok(summary)
}

/// Prints, per producer, the first sequence numbers below the highest one
/// received that did not arrive (a shortfall's likely whereabouts).
fn report_gaps(seen: &HashSet<String>) {
    let mut by_producer: std::collections::BTreeMap<&str, Vec<u64>> = Default::default();
    for key in seen {
        if let Some((producer, seq)) = key.rsplit_once('/') {
            if let Ok(seq) = seq.parse() {
                by_producer.entry(producer).or_default().push(seq);
            }
        }
    }
    for (producer, mut seqs) in by_producer {
        seqs.sort_unstable();
        let max = seqs.last().copied().unwrap_or(0);
        let present: HashSet<u64> = seqs.into_iter().collect();
        let gaps: Vec<u64> = (1..=max)
            .filter(|s| !present.contains(s))
            .take(20)
            .collect();
        if !gaps.is_empty() {
            eprintln!("producer {producer}: missing seq {gaps:?} (of 1..={max})");
        }
    }
}
