//! New connections per second: each one a full TLS handshake (no session
//! resumption) and one small round trip, from a fixed number of workers.

use std::time::{Duration, Instant};

use clap::Args;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::dial::{Dialer, Sessions};
use crate::report::Samples;
use crate::{Target, Window};

#[derive(Args)]
pub(crate) struct ConnectArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    window: Window,
    /// Workers, each opening one connection after another
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
}

const PING: &[u8; 32] = b"portico-loadgen connect ping 32b";

pub(crate) async fn connect(args: ConnectArgs) -> anyhow::Result<String> {
    let dialer = std::sync::Arc::new(Dialer::new(&args.target, Sessions::Full)?);
    let suite = dialer.describe().await;
    let begin = Instant::now();
    let measure_from = begin + args.window.warmup();
    let end = measure_from + args.window.measured();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let dialer = dialer.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Samples::default();
            let mut errors = 0u64;
            let mut first_error = None;
            loop {
                let started = Instant::now();
                if started >= end {
                    break;
                }
                match tokio::time::timeout(Duration::from_secs(5), once(&dialer)).await {
                    Ok(Ok(())) if started >= measure_from => samples.record(started.elapsed()),
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                    Err(_) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| "timed out after 5 s".to_owned());
                    }
                }
            }
            (samples, errors, first_error)
        }));
    }
    let mut samples = Samples::default();
    let mut errors = 0;
    let mut first_error = None;
    for task in tasks {
        let (s, e, f) = task.await?;
        samples.extend(s);
        errors += e;
        first_error = first_error.or(f);
    }
    let seconds = args.window.measured().as_secs_f64();
    Ok(serde_json::json!({
        "mode": "connect",
        "tls": suite,
        "concurrency": args.concurrency,
        "connections": samples.len(),
        "per_second": samples.len() as f64 / seconds,
        "p50_ms": samples.percentile_us(0.50) / 1_000.0,
        "p99_ms": samples.percentile_us(0.99) / 1_000.0,
        "errors": errors,
        "first_error": first_error,
    })
    .to_string())
}

/// One connection: handshake, 32 bytes there and back, close.
async fn once(dialer: &Dialer) -> anyhow::Result<()> {
    let mut conn = dialer.dial().await?;
    conn.write_all(PING).await?;
    let mut back = [0u8; PING.len()];
    conn.read_exact(&mut back).await?;
    anyhow::ensure!(&back == PING, "the echo differs from what was sent");
    conn.shutdown().await?;
    Ok(())
}
