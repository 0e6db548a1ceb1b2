//! Plain TCP listeners: passthrough with the PROXY header, half-close and
//! the idle timeout.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A plain `tcp` listener and group, with PROXY protocol v2 towards the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_passthrough_with_proxy_protocol_half_close_and_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::tcp_proxy_protocol("plain", "127.0.0.1", 0).await;
    let toml = format!(
        r#"
[[listener]]
name = "plain"
bind = "127.0.0.1:0"
protocol = "tcp"
target_group = "g"
proxy_protocol = true
idle_timeout = "400ms"

[[target_group]]
name = "g"
protocol = "tcp"
targets = ["{}"]
  [target_group.health_check]
  interval = "100ms"
  timeout = "100ms"
"#,
        backend.addr
    );
    let server = start_portico(dir.path(), &toml).await;
    all_healthy(&server).await;
    let front = server.listener_addr("plain").unwrap();

    let mut client = TcpStream::connect(front).await.unwrap();
    let me = client.local_addr().unwrap();
    let mut greeting = vec![0u8; format!("plain from {me}\n").len()];
    client.read_exact(&mut greeting).await.unwrap();
    assert_eq!(
        String::from_utf8(greeting).unwrap(),
        format!("plain from {me}\n")
    );

    // Half-close: the client stops sending, and still gets every byte back.
    client.write_all(b"last words").await.unwrap();
    client.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(DEADLINE, client.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rest, b"last words");

    // Idle: a silent connection is closed after the idle timeout.
    let mut idle = TcpStream::connect(front).await.unwrap();
    let started = Instant::now();
    let mut all = Vec::new();
    tokio::time::timeout(DEADLINE, idle.read_to_end(&mut all))
        .await
        .unwrap()
        .unwrap();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(350), "closed after {took:?}");
}
