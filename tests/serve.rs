//! The real `portico serve` binary: it reports where it listens, serves,
//! and exits 0 on SIGTERM after its connections finish.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// Kills the child if a test fails before stopping it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The portico binary and its log lines.
struct Portico {
    child: Running,
    lines: mpsc::Receiver<String>,
    /// Every line so far.
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Portico {
    fn start(config: &std::path::Path, args: &[&str]) -> Self {
        Self::start_logging(config, args, "info")
    }

    /// With `RUST_LOG=level`.
    fn start_logging(config: &std::path::Path, args: &[&str], level: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_portico"))
            .arg("serve")
            .args(args)
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", level)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let all = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut all = all.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
                drop(all);
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child: Running(child),
            lines,
            log,
        }
    }

    /// The next log line containing `what`.
    fn line(&self, what: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(DEADLINE)
                .unwrap_or_else(|_| panic!("no log line with {what}"));
            if line.contains(what) {
                return line;
            }
        }
    }

    /// The address from its "listening on" line.
    fn listening(&self) -> SocketAddr {
        let line = self.line("listening on ");
        line.split("listening on ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// The listener's and the admin server's addresses, from their
    /// "listening on" lines (in either order).
    fn listener_and_admin(&self) -> (SocketAddr, SocketAddr) {
        let (mut front, mut admin) = (None, None);
        while front.is_none() || admin.is_none() {
            let line = self.line("listening on ");
            let addr: SocketAddr = line
                .split("listening on ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|a| a.parse().ok())
                .unwrap();
            if line.contains("admin") {
                admin = Some(addr);
            } else {
                front = Some(addr);
            }
        }
        (front.unwrap(), admin.unwrap())
    }

    fn signal(&self, name: &str) {
        let pid = self.child.0.id().to_string();
        assert!(Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap()
            .success());
    }

    fn wait(mut self) -> Option<i32> {
        self.child.0.wait().unwrap().code()
    }
}

fn write_config(pki: &Pki, target: SocketAddr) -> std::path::PathBuf {
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
targets = ["{target}"]
"#
        ),
    )
    .unwrap();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reports_its_address_serves_and_stops_on_sigterm() {
    let pki = Pki::front_and_broker();
    let backend = Backend::tls("b1", "127.0.0.1", 0, &pki, "broker").await;
    let portico = Portico::start(&write_config(&pki, backend.addr), &["--grace", "5s"]);
    let addr = portico.listening();

    wait_for("served through the binary", || async {
        matches!(who(addr, pki.client_config()).await.as_deref(), Ok("b1"))
    })
    .await;
    let closed = portico.line("connection closed");
    assert!(
        closed.contains("close_reason=downstream_closed")
            || closed.contains("close_reason=downstream_error"),
        "{closed}"
    );
    assert!(closed.contains("bytes.to_downstream=3"), "{closed}");

    portico.signal("TERM");
    portico.line("stopped");
    assert_eq!(portico.wait(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_live_streams_finish_within_the_grace_period() {
    let pki = Pki::front_and_broker();
    let backend = Backend::tls("b1", "127.0.0.1", 0, &pki, "broker").await;
    let portico = Portico::start(&write_config(&pki, backend.addr), &["--grace", "30s"]);
    let addr = portico.listening();
    let (mut stream, _) = tls_connect(addr, pki.client_config(), "mq.localhost")
        .await
        .unwrap();

    portico.signal("TERM");
    portico.line("waiting for open connections to finish");
    // New connections are no longer accepted; the live stream still works.
    wait_for("no longer accepting", || async {
        who(addr, pki.client_config()).await.is_err()
    })
    .await;
    stream.write_all(b"during shutdown").await.unwrap();
    let mut back = [0u8; 15];
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"during shutdown");
    // The client finishes: the process exits at once, well inside the grace period.
    let closed_at = Instant::now();
    drop(stream);
    portico.line("stopped");
    assert!(closed_at.elapsed() < Duration::from_secs(10));
    assert_eq!(portico.wait(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_what_is_left_when_the_grace_period_ends() {
    let pki = Pki::front_and_broker();
    let backend = Backend::tls("b1", "127.0.0.1", 0, &pki, "broker").await;
    let portico = Portico::start(&write_config(&pki, backend.addr), &["--grace", "500ms"]);
    let addr = portico.listening();
    let (mut stream, _) = tls_connect(addr, pki.client_config(), "mq.localhost")
        .await
        .unwrap();
    let signalled = Instant::now();
    portico.signal("TERM");
    let mut buf = [0u8; 1];
    let end = tokio::time::timeout(DEADLINE, stream.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(end, Ok(0) | Err(_)), "{end:?}");
    assert!(
        signalled.elapsed() >= Duration::from_millis(450),
        "closed before the grace period ended"
    );
    portico.line("grace period over");
    assert_eq!(portico.wait(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_configuration() {
    let pki = Pki::front_and_broker();
    let a = Backend::tls("a", "127.0.0.1", 0, &pki, "broker").await;
    let b = Backend::tls("b", "127.0.0.1", 0, &pki, "broker").await;
    let config = write_config(&pki, a.addr);
    let portico = Portico::start(&config, &["--no-watch"]);
    let addr = portico.listening();
    wait_for("a serves", || async {
        matches!(who(addr, pki.client_config()).await.as_deref(), Ok("a"))
    })
    .await;
    write_config(&pki, b.addr);
    // Without the file watch nothing changes until SIGHUP.
    assert_eq!(who(addr, pki.client_config()).await.unwrap(), "a");
    portico.signal("HUP");
    portico.line("configuration reloaded");
    assert_eq!(who(addr, pki.client_config()).await.unwrap(), "b");
    // A broken file on SIGHUP: logged with its position, nothing changes.
    std::fs::write(&config, "[[listener]]\nname = 1\n").unwrap();
    portico.signal("HUP");
    let error = portico.line("reload failed");
    assert!(error.contains("portico.toml:2:8"), "{error}");
    assert_eq!(who(addr, pki.client_config()).await.unwrap(), "b");
    portico.signal("TERM");
    assert_eq!(portico.wait(), Some(0));
}

/// [`write_config`] with an admin server on a free port.
fn write_config_with_admin(pki: &Pki, target: SocketAddr) -> std::path::PathBuf {
    let config = write_config(pki, target);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("[admin]\nbind = \"127.0.0.1:0\"\n\n{text}"),
    )
    .unwrap();
    config
}

/// Garbage, truncated and oversized input, 32 connections of each at once,
/// on the TLS listener and the admin port of the real binary: every one is
/// closed, the process keeps serving, and its peak memory stays far below
/// what it was sent (32 × 4 MiB per kind).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_on_every_port_is_closed_with_bounded_memory() {
    let pki = Pki::front_and_broker();
    let backend = Backend::tls("b1", "127.0.0.1", 0, &pki, "broker").await;
    let config = write_config_with_admin(&pki, backend.addr);
    let portico = Portico::start(&config, &[]);
    let (front, admin) = portico.listener_and_admin();
    wait_for("served", || async {
        matches!(who(front, pki.client_config()).await.as_deref(), Ok("b1"))
    })
    .await;
    let pid = portico.child.0.id();
    let (before, _) = hostile::memory_kib(pid);

    hostile::barrage(front, hostile::Speaks::Tls).await;
    hostile::barrage(admin, hostile::Speaks::Http).await;

    let (after, peak) = hostile::memory_kib(pid);
    println!("portico resident memory: {before} KiB before, {peak} KiB peak, {after} KiB after");
    assert!(
        peak - before < 48 * 1024,
        "peak {peak} KiB from {before} KiB: input was buffered"
    );
    assert_eq!(who(front, pki.client_config()).await.unwrap(), "b1");
    assert_eq!(admin_get(admin, "/healthz").await.0, 200);
    let (_, metrics) = admin_get(admin, "/metrics").await;
    assert!(
        metrics.contains("portico_handshake_failures_total{listener=\"front\",reason=\"not_tls\"}"),
        "{metrics}"
    );
}

/// No key material reaches the log (at debug level), `/targets` or
/// `/metrics`: neither the listener's private key nor the backend's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_material_in_logs_or_admin_endpoints() {
    let pki = Pki::front_and_broker();
    let backend = Backend::tls("b1", "127.0.0.1", 0, &pki, "broker").await;
    let config = write_config_with_admin(&pki, backend.addr);
    let portico = Portico::start_logging(&config, &[], "debug");
    let (front, admin) = portico.listener_and_admin();
    wait_for("served", || async {
        matches!(who(front, pki.client_config()).await.as_deref(), Ok("b1"))
    })
    .await;
    // A failed handshake too: errors are logged.
    let mut bad = tokio::net::TcpStream::connect(front).await.unwrap();
    bad.write_all(b"not tls at all\r\n").await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, bad.read_to_end(&mut sink)).await;
    let mut seen = String::new();
    for path in ["/targets", "/metrics", "/healthz"] {
        seen.push_str(&admin_get(admin, path).await.1);
    }
    portico.signal("TERM");
    portico.line("stopped");
    let log = portico.log.lock().unwrap().clone();
    assert!(log.contains("DEBUG"), "not at debug level:\n{log}");
    for key in ["front.key", "broker.key"] {
        let pem = std::fs::read_to_string(pki.path(key)).unwrap();
        // Every line of the key's base64 body, and the PEM label.
        for line in pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!log.contains(line), "{key} in the log");
            assert!(!seen.contains(line), "{key} in an admin endpoint");
        }
    }
    assert!(!log.contains("PRIVATE KEY") && !seen.contains("PRIVATE KEY"));
}

/// `/healthz` names what keeps clients from being served, `/metrics`
/// speaks the format its reader asks for with every series a user looks
/// for there from the start, and the log names target states as
/// `/targets` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_reported_the_same_way_everywhere() {
    let pki = Pki::front_and_broker();
    let port = same_port_on("127.0.0.2", "127.0.0.3").await;
    let console_port = same_port_on("127.0.0.2", "127.0.0.3").await;
    let a = Backend::tls("a", "127.0.0.2", port, &pki, "broker").await;
    let b = Backend::tls("b", "127.0.0.3", port, &pki, "broker").await;
    let console_a = Console::open("127.0.0.2", console_port).await;
    let console_b = Console::open("127.0.0.3", console_port).await;
    let config = pki.path("portico.toml");
    let text = format!(
        r#"[admin]
bind = "127.0.0.1:0"

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
targets = ["{a}", "{b}"]
pairs = [["{a}", "{b}"]]
  [target_group.health_check]
  port = {console_port}
  interval = "100ms"
  timeout = "100ms"
"#,
        a = a.addr,
        b = b.addr
    );
    std::fs::write(&config, &text).unwrap();
    let portico = Portico::start(&config, &["--no-watch"]);
    let (_, admin) = portico.listener_and_admin();
    let health = || async {
        let (code, body) = admin_get(admin, "/healthz").await;
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        (
            code,
            body["status"].as_str().unwrap().to_owned(),
            body["problems"].to_string(),
        )
    };

    // Both nodes answer: served, but a split brain to look at.
    wait_for("two active nodes reported", || async {
        let (code, status, problems) = health().await;
        code == 200 && status == "degraded" && problems.contains("two active nodes")
    })
    .await;
    // b's console closes: b is the standby, in the log as in /targets.
    drop(console_b);
    let changed = loop {
        let line = portico.line(&format!("target={}", b.addr));
        if line.contains("from=\"healthy\"") {
            break line;
        }
    };
    assert!(changed.contains("to=\"standby\""), "{changed}");
    wait_for("ok", || async {
        health().await == (200, "ok".into(), "[]".into())
    })
    .await;
    // a's console closes too: nobody can be served.
    drop(console_a);
    wait_for("unavailable", || async {
        let (code, status, problems) = health().await;
        code == 503
            && status == "unavailable"
            && problems.contains("no active node")
            && problems.contains("no healthy target")
    })
    .await;
    // Back, then a reload that fails: served, with the failure to look at.
    let _console_a = Console::open("127.0.0.2", console_port).await;
    wait_for("ok again", || async { health().await.1 == "ok" }).await;
    std::fs::write(&config, "[[listener]]\nname = 1\n").unwrap();
    portico.signal("HUP");
    portico.line("reload failed");
    let (code, status, problems) = health().await;
    assert_eq!((code, status.as_str()), (200, "degraded"), "{problems}");
    assert!(problems.contains("the last reload failed"), "{problems}");

    // Metrics: the Prometheus text format unless OpenMetrics is asked for.
    let (_, head, body) = admin_request(admin, "/metrics", &[]).await;
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(!body.contains("# EOF"), "{body}");
    assert!(
        body.contains("# TYPE portico_connections_total counter"),
        "{body}"
    );
    for zero in [
        "portico_config_reloads_total{result=\"success\"} 0",
        "portico_handshake_failures_total{listener=\"front\",reason=\"timeout\"} 0",
        "portico_connections_refused_total{listener=\"front\",reason=\"no_target\"} 0",
    ] {
        assert!(body.contains(zero), "{zero} missing:\n{body}");
    }
    let (_, head, body) = admin_request(
        admin,
        "/metrics",
        &[("accept", "application/openmetrics-text; version=1.0.0")],
    )
    .await;
    assert!(
        head.contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    portico.signal("TERM");
    assert_eq!(portico.wait(), Some(0));
}
