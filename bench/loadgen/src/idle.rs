//! Idle connections: open many, finish one round trip on each, then hold them
//! so the harness can read the contender's resident memory.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::Semaphore;

use crate::dial::{Dialer, Sessions};
use crate::Target;

#[derive(Args)]
pub(crate) struct IdleArgs {
    #[command(flatten)]
    target: Target,
    /// Connections to open and hold
    #[arg(long, default_value_t = 2000)]
    connections: usize,
    /// Connections being opened at once
    #[arg(long, default_value_t = 32)]
    parallel: usize,
    /// Longest time to hold them (the harness normally stops us first)
    #[arg(long, default_value_t = 60.0)]
    hold: f64,
}

/// Prints `{"mode":"idle","established":N,...}` once every connection is up,
/// then holds them until SIGTERM or `--hold` seconds.
pub(crate) async fn run(args: IdleArgs) -> anyhow::Result<String> {
    let dialer = Arc::new(Dialer::new(&args.target, Sessions::Full)?);
    let permits = Arc::new(Semaphore::new(args.parallel.max(1)));
    let mut tasks = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let dialer = dialer.clone();
        let permit = permits.clone().acquire_owned().await?;
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let mut conn = dialer.dial().await?;
            conn.write_all(b"idle").await?;
            let mut back = [0u8; 4];
            conn.read_exact(&mut back).await?;
            anyhow::Ok(conn)
        }));
    }
    let mut held = Vec::with_capacity(tasks.len());
    let mut errors = 0;
    let mut first_error = None;
    for task in tasks {
        match task.await? {
            Ok(conn) => held.push(conn),
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "mode": "idle",
            "established": held.len(),
            "errors": errors,
            "first_error": first_error,
        })
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs_f64(args.hold)) => {}
        _ = term.recv() => {}
    }
    let count = held.len();
    drop(held);
    Ok(serde_json::json!({ "mode": "idle", "released": count }).to_string())
}
