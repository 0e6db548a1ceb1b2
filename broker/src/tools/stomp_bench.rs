//! `portico-broker stomp-bench`: latency of any STOMP broker at low load —
//! one producer and one consumer on one queue, the same client for every
//! broker the benchmark compares. Two shapes:
//!
//! - synchronous: each SEND waits for its RECEIPT before the next (one
//!   message in flight), as a JMS producer's `send()` of a persistent
//!   message does; reports messages per second and send-to-delivery latency;
//! - paced: SENDs at a fixed rate without receipts, reporting the
//!   send-to-delivery latency a steady light load sees.

use std::time::{Duration, Instant};

use super::BenchReport;
use crate::client::{BrokerUrl, Client, ClientOptions};
use crate::stomp::{Command, Frame};

/// What to run.
#[derive(Debug, Clone)]
pub struct StompBenchArgs {
    pub broker_url: String,
    pub destination: String,
    pub persistent: bool,
    pub count: u64,
    pub size: usize,
    /// Messages per second; `None`: synchronous (one SEND in flight).
    pub rate: Option<u64>,
    /// Credentials for both connections, where the broker asks for them.
    pub login: Option<String>,
    pub passcode: Option<String>,
}

/// The header carrying a message's send time (µs since the run's start).
const SENT: &str = "bench-sent-us";
/// Nothing arriving for this long ends the run (what is missing, is).
const STALL: Duration = Duration::from_secs(10);

/// Runs one measurement.
pub async fn stomp_bench(args: &StompBenchArgs) -> Result<BenchReport, String> {
    let limit = Duration::from_secs(120 + args.count / 500);
    tokio::time::timeout(limit, measure(args))
        .await
        .map_err(|_| "the run did not finish in time".to_owned())?
}

async fn open(args: &StompBenchArgs, window: usize) -> Result<Client, String> {
    let url = BrokerUrl::parse(&args.broker_url)?;
    let options = ClientOptions {
        window,
        login: args.login.clone(),
        passcode: args.passcode.clone(),
        ..ClientOptions::default()
    };
    Client::connect(url, options)
        .await
        .map_err(|e| e.to_string())
}

fn message(args: &StompBenchArgs, body: &[u8], sent_us: u64, warm: bool) -> Frame {
    let mut frame = Frame::new(Command::Send)
        .header("destination", args.destination.as_str())
        .header("persistent", if args.persistent { "true" } else { "false" })
        .header(SENT, sent_us.to_string())
        .body(body.to_vec());
    if warm {
        frame = frame.header("bench-warm", "1");
    }
    frame
}

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

async fn measure(args: &StompBenchArgs) -> Result<BenchReport, String> {
    let mut consumer = open(args, 1).await?;
    consumer
        .subscribe(&args.destination, "auto", &[])
        .await
        .map_err(|e| e.to_string())?;
    consumer.push().await.map_err(|e| e.to_string())?;
    // Paced SENDs still carry receipts: reading them every 64 keeps them
    // from piling up unread.
    let window = if args.rate.is_some() { 64 } else { 1 };
    let mut producer = open(args, window).await?;
    let body = vec![b'x'; args.size];
    let start = Instant::now();
    // Until the subscription is in place, messages wait in the queue: one
    // warm-up message round trip first, then the measured run.
    producer
        .send(message(args, &body, 0, true))
        .await
        .map_err(|e| e.to_string())?;
    producer.flush().await.map_err(|e| e.to_string())?;
    let warm = tokio::time::timeout(STALL, consumer.recv())
        .await
        .map_err(|_| "the warm-up message did not arrive".to_owned())?
        .map_err(|e| e.to_string())?;
    if warm.get("bench-warm").is_none() {
        return Err("the queue was not empty at the start".into());
    }
    let count = args.count;
    let rate = args.rate;
    let sending = {
        let args = args.clone();
        tokio::spawn(async move {
            let begun = Instant::now();
            for i in 0..count {
                if let Some(rate) = rate {
                    // A fixed schedule: a late send does not push the rest.
                    let due = begun + Duration::from_secs_f64(i as f64 / rate as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
                producer
                    .send(message(&args, &body, micros(start), false))
                    .await
                    .map_err(|e| e.to_string())?;
                if rate.is_some() {
                    producer.push().await.map_err(|e| e.to_string())?;
                } else {
                    producer.flush().await.map_err(|e| e.to_string())?;
                }
            }
            producer.flush().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((producer, begun))
        })
    };
    let mut latencies = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    let mut last = Instant::now();
    while (latencies.len() as u64) < count {
        let frame = match tokio::time::timeout(STALL, consumer.recv()).await {
            Ok(frame) => frame.map_err(|e| e.to_string())?,
            Err(_) => break,
        };
        let now = micros(start);
        last = Instant::now();
        if let Some(sent) = frame.get(SENT).and_then(|s| s.parse::<u64>().ok()) {
            latencies.push(now.saturating_sub(sent));
        }
    }
    let (producer, begun) = sending.await.map_err(|e| e.to_string())??;
    let _ = producer.close().await;
    let _ = consumer.close().await;
    let latencies = latencies.into_iter().map(Duration::from_micros).collect();
    Ok(BenchReport::of(latencies, begun, last, true))
}
