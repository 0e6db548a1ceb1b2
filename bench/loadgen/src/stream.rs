//! Measurements on established connections: bulk throughput both ways, and
//! request/response latency.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::dial::{Dialer, Sessions};
use crate::report::Samples;
use crate::{Target, Window};

#[derive(Args)]
pub(crate) struct ThroughputArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    window: Window,
    /// Long connections streaming at once
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Bytes per write
    #[arg(long, default_value_t = 16 * 1024)]
    chunk: usize,
}

/// Every connection writes as fast as it can while reading the echo back;
/// what comes back within the window is what went through each way.
pub(crate) async fn throughput(args: ThroughputArgs) -> anyhow::Result<String> {
    let dialer = Dialer::new(&args.target, Sessions::Resume)?;
    let suite = dialer.describe().await;
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let conn = dialer.dial().await?;
        let (mut reader, mut writer) = tokio::io::split(conn);
        let stop_writing = stop.clone();
        let chunk = vec![0x5au8; args.chunk];
        tasks.push(tokio::spawn(async move {
            while !stop_writing.load(Ordering::Relaxed) {
                if writer.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            let _ = writer.shutdown().await;
        }));
        let received = received.clone();
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n @ 1..) = reader.read(&mut buf).await {
                received.fetch_add(n as u64, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(args.window.warmup()).await;
    let start_bytes = received.load(Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(args.window.measured()).await;
    let bytes = received.load(Ordering::Relaxed) - start_bytes;
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let drained = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        for task in tasks {
            let _ = task.await;
        }
    })
    .await;
    let total = received.load(Ordering::Relaxed);
    Ok(serde_json::json!({
        "mode": "throughput",
        "tls": suite,
        "connections": args.connections,
        "seconds": elapsed,
        "mb_per_s_each_way": bytes as f64 / elapsed / 1e6,
        // Everything echoed over the whole run, warm-up and drain included:
        // the bytes a contender relayed in each direction.
        "total_bytes_each_way": total,
        "drained": drained.is_ok(),
    })
    .to_string())
}

#[derive(Args)]
pub(crate) struct LatencyArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    window: Window,
    /// Connections doing round trips at once
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Bytes of each request (the response is as long)
    #[arg(long, default_value_t = 1024)]
    size: usize,
}

/// Each connection writes a request and waits for the whole echo before the
/// next; every round trip after the warm-up is one sample.
pub(crate) async fn latency(args: LatencyArgs) -> anyhow::Result<String> {
    let dialer = Dialer::new(&args.target, Sessions::Resume)?;
    let suite = dialer.describe().await;
    let begin = Instant::now();
    let measure_from = begin + args.window.warmup();
    let end = measure_from + args.window.measured();
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let mut conn = dialer.dial().await?;
        let size = args.size;
        tasks.push(tokio::spawn(async move {
            let request = vec![0x42u8; size];
            let mut response = vec![0u8; size];
            let mut samples = Samples::default();
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                conn.write_all(&request).await?;
                conn.read_exact(&mut response).await?;
                if sent >= measure_from {
                    samples.record(sent.elapsed());
                }
            }
            anyhow::Ok(samples)
        }));
    }
    let mut samples = Samples::default();
    for task in tasks {
        samples.extend(task.await??);
    }
    Ok(serde_json::json!({
        "mode": "latency",
        "tls": suite,
        "connections": args.connections,
        "size": args.size,
        "round_trips": samples.len(),
        "p50_us": samples.percentile_us(0.50),
        "p99_us": samples.percentile_us(0.99),
        "p999_us": samples.percentile_us(0.999),
    })
    .to_string())
}
