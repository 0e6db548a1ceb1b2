//! Failover outage seen by a client: persistent STOMP SENDs with receipts,
//! one every interval, through a front door; on any failure the client
//! reconnects at once and keeps going. The longest time between two receipts
//! is the outage.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::dial::{Conn, Dialer, Sessions};
use crate::Target;

#[derive(Args)]
pub(crate) struct FailoverArgs {
    #[command(flatten)]
    target: Target,
    /// Seconds to keep sending
    #[arg(long, default_value_t = 6.0)]
    seconds: f64,
    /// Milliseconds between SENDs
    #[arg(long, default_value_t = 10)]
    interval_ms: u64,
    #[arg(long)]
    user: Option<String>,
    /// Password of --user (also read from PORTICO_LOADGEN_PASSWORD)
    #[arg(long, env = "PORTICO_LOADGEN_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// STOMP destination
    #[arg(long, default_value = "/queue/bench.failover")]
    destination: String,
}

/// How long one step may take before the connection counts as broken.
const STEP_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest frame read from the broker.
const MAX_FRAME: usize = 64 * 1024;

pub(crate) async fn run(args: FailoverArgs) -> anyhow::Result<String> {
    let dialer = Dialer::new(&args.target, Sessions::Resume)?;
    let interval = Duration::from_millis(args.interval_ms);
    let begin = Instant::now();
    let end = begin + Duration::from_secs_f64(args.seconds);
    let mut receipts = 0u64;
    let mut last_receipt: Option<Instant> = None;
    let mut longest = (Duration::ZERO, Duration::ZERO);
    let mut connects = 0u64;
    let mut errors = Vec::new();
    let mut seq = 0u64;
    while Instant::now() < end {
        let session = async {
            let mut conn = tokio::time::timeout(STEP_TIMEOUT, dialer.dial())
                .await
                .context("connect timed out")??;
            connect_stomp(&mut conn, &args).await?;
            anyhow::Ok(conn)
        };
        let mut conn = match session.await {
            Ok(conn) => conn,
            Err(e) => {
                remember(&mut errors, begin, &e);
                tokio::time::sleep(interval).await;
                continue;
            }
        };
        connects += 1;
        while Instant::now() < end {
            seq += 1;
            match send(&mut conn, &args.destination, seq).await {
                Ok(()) => {
                    let now = Instant::now();
                    if let Some(last) = last_receipt {
                        if now - last > longest.0 {
                            longest = (now - last, last - begin);
                        }
                    }
                    last_receipt = Some(now);
                    receipts += 1;
                }
                Err(e) => {
                    remember(&mut errors, begin, &e);
                    break;
                }
            }
            tokio::time::sleep(interval).await;
        }
    }
    // A send that never came back counts to the end of the run.
    let mut recovered = true;
    if let Some(last) = last_receipt {
        let tail = end.max(Instant::now()) - last;
        if tail > longest.0 + interval * 20 {
            longest = (tail, last - begin);
            recovered = false;
        }
    }
    Ok(serde_json::json!({
        "mode": "failover",
        "recovered": recovered,
        "receipts": receipts,
        "connects": connects,
        "outage_ms": longest.0.as_secs_f64() * 1_000.0,
        "outage_began_at_s": longest.1.as_secs_f64(),
        "errors": errors,
    })
    .to_string())
}

fn remember(errors: &mut Vec<String>, begin: Instant, error: &anyhow::Error) {
    if errors.len() < 5 {
        errors.push(format!("{:.3}s: {error:#}", begin.elapsed().as_secs_f64()));
    }
}

async fn connect_stomp(conn: &mut Box<dyn Conn>, args: &FailoverArgs) -> anyhow::Result<()> {
    let mut frame = String::from("CONNECT\naccept-version:1.2\nhost:/\nheart-beat:0,0\n");
    if let Some(user) = &args.user {
        frame.push_str(&format!("login:{user}\n"));
    }
    if let Some(password) = &args.password {
        frame.push_str(&format!("passcode:{password}\n"));
    }
    frame.push_str("\n\0");
    conn.write_all(frame.as_bytes()).await?;
    let reply = read_frame(conn).await?;
    anyhow::ensure!(
        reply.starts_with("CONNECTED"),
        "broker answered CONNECT with {}",
        reply.lines().next().unwrap_or("")
    );
    Ok(())
}

async fn send(conn: &mut Box<dyn Conn>, destination: &str, seq: u64) -> anyhow::Result<()> {
    let body = format!("failover probe {seq}");
    let frame = format!(
        "SEND\ndestination:{destination}\npersistent:true\nreceipt:{seq}\ncontent-length:{}\n\n{body}\0",
        body.len()
    );
    conn.write_all(frame.as_bytes()).await?;
    let reply = read_frame(conn).await?;
    anyhow::ensure!(
        reply.starts_with("RECEIPT") && reply.contains(&format!("receipt-id:{seq}\n")),
        "expected the receipt of SEND {seq}, got {}",
        reply.lines().next().unwrap_or("")
    );
    Ok(())
}

/// Reads one frame up to its NUL, skipping heart-beat newlines, within the
/// step timeout.
async fn read_frame(conn: &mut Box<dyn Conn>) -> anyhow::Result<String> {
    tokio::time::timeout(STEP_TIMEOUT, async {
        let mut frame = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            let n = conn.read(&mut byte).await?;
            anyhow::ensure!(n == 1, "connection closed");
            match byte[0] {
                0 => return Ok(String::from_utf8_lossy(&frame).into_owned()),
                b'\n' | b'\r' if frame.is_empty() => {}
                b => frame.push(b),
            }
            anyhow::ensure!(
                frame.len() <= MAX_FRAME,
                "frame longer than {MAX_FRAME} bytes"
            );
        }
    })
    .await
    .context("no reply within 2 s")?
}
