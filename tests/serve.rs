//! The real `portico serve` binary: it reports where it listens, serves,
//! and exits 0 on SIGTERM after its connections finish.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use common::*;

/// Kills the child if a test fails before stopping it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reports_its_address_serves_and_stops_on_sigterm() {
    let pki = Pki::new();
    pki.issue("front", &["mq.localhost"]);
    pki.issue("broker", &["broker.internal"]);
    let backend = Backend::tls("b1", "127.0.0.1", 0, &pki, "broker").await;
    let config = pki.path("portico.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[listener]]
name = "front"
bind = "127.0.0.1:0"
target_group = "brokers"
  [[listener.certificate]]
  cert = "front.crt"
  key = "front.key"

[[target_group]]
name = "brokers"
ca = "ca.crt"
server_name = "broker.internal"
targets = ["{}"]
"#,
            backend.addr
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["serve", "--grace", "5s", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut running = Running(child);
    let stderr = running.0.stderr.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let next_line = |what: &str| -> String {
        loop {
            let line = lines
                .recv_timeout(DEADLINE)
                .unwrap_or_else(|_| panic!("no log line with {what}"));
            if line.contains(what) {
                return line;
            }
        }
    };
    let listening = next_line("listening on ");
    let addr: SocketAddr = listening
        .split("listening on ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();

    wait_for("served through the binary", || async {
        matches!(who(addr, pki.client_config()).await.as_deref(), Ok("b1"))
    })
    .await;
    let closed = next_line("connection closed");
    assert!(
        closed.contains("close_reason=downstream_closed")
            || closed.contains("close_reason=downstream_error"),
        "{closed}"
    );
    assert!(closed.contains("bytes.to_downstream=3"), "{closed}");

    let pid = running.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    next_line("stopped");
    let status = running.0.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}
