//! Hot reload under load: targets rewritten in place, by rename and by a
//! Kubernetes-style symlink swap while clients keep connecting; invalid
//! configs; draining; certificate rotation; listeners added and removed.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use portico::{Config, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

#[derive(Clone, Copy, Debug)]
enum Style {
    /// Truncate and write the file where it is.
    InPlace,
    /// Write a temporary file beside it, then rename it over.
    Rename,
    /// A ConfigMap volume: `portico.toml -> ..data/portico.toml`, with
    /// `..data` a symlink swapped to a new folder.
    SymlinkSwap,
}

/// A config folder with the test PKI's files, written in one style.
struct ConfigDir {
    pki: Pki,
    style: Style,
    generation: usize,
}

impl ConfigDir {
    fn new(style: Style) -> Self {
        let pki = Pki::new();
        pki.issue("front", &["mq.localhost"]);
        pki.issue("broker", &["broker.internal"]);
        Self {
            pki,
            style,
            generation: 0,
        }
    }

    fn dir(&self) -> &Path {
        self.pki.dir.path()
    }

    fn path(&self) -> PathBuf {
        self.dir().join("portico.toml")
    }

    fn write(&mut self, text: &str) {
        self.generation += 1;
        let path = self.path();
        match self.style {
            Style::InPlace => std::fs::write(&path, text).unwrap(),
            Style::Rename => {
                let tmp = self.dir().join(".portico.toml.tmp");
                std::fs::write(&tmp, text).unwrap();
                std::fs::rename(&tmp, &path).unwrap();
            }
            Style::SymlinkSwap => {
                let version = format!("..{}", self.generation);
                let folder = self.dir().join(&version);
                std::fs::create_dir(&folder).unwrap();
                std::fs::write(folder.join("portico.toml"), text).unwrap();
                let tmp = self.dir().join("..data_tmp");
                std::os::unix::fs::symlink(&version, &tmp).unwrap();
                std::fs::rename(&tmp, self.dir().join("..data")).unwrap();
                if !path.exists() {
                    std::os::unix::fs::symlink("..data/portico.toml", &path).unwrap();
                }
                if self.generation > 1 {
                    let old = self.dir().join(format!("..{}", self.generation - 1));
                    std::fs::remove_dir_all(old).unwrap();
                }
            }
        }
    }

    async fn start(&mut self, text: &str) -> Server {
        self.write(text);
        let server = Server::start(Config::load(&self.path()).unwrap())
            .await
            .unwrap();
        server.watch_config().await.unwrap();
        server
    }
}

fn config(ca: &Path, targets: &[String], extra_group: &str) -> String {
    let targets = targets
        .iter()
        .map(|t| format!("{t:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"
[admin]
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
ca = {ca:?}
server_name = "broker.internal"
connect_timeout = "1s"
targets = [{targets}]
{extra_group}
  [target_group.health_check]
  interval = "100ms"
  timeout = "100ms"
"#
    )
}

/// A connection held open that echoes on demand.
struct Stream {
    tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    backend: String,
}

impl Stream {
    async fn open(front: std::net::SocketAddr, pki: &Pki) -> Self {
        let (tls, backend) = tls_connect(front, pki.client_config(), "mq.localhost")
            .await
            .unwrap();
        Self { tls, backend }
    }

    async fn echo(&mut self, text: &str) -> std::io::Result<()> {
        self.tls.write_all(text.as_bytes()).await?;
        let mut back = vec![0u8; text.len()];
        tokio::time::timeout(DEADLINE, self.tls.read_exact(&mut back))
            .await
            .map_err(|_| std::io::Error::other("echo timed out"))??;
        assert_eq!(back, text.as_bytes());
        Ok(())
    }
}

/// Opens short connections without pause until stopped; counts failures.
struct ClientLoop {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl ClientLoop {
    fn start(front: std::net::SocketAddr, pki: &Pki) -> Self {
        let (stop, ok, failed) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let client = pki.client_config();
        let (s, o, f) = (stop.clone(), ok.clone(), failed.clone());
        let task = tokio::spawn(async move {
            let mut errors = Vec::new();
            let started = Instant::now();
            // Bounded in count and time.
            for _ in 0..100_000 {
                if s.load(Ordering::SeqCst) || started.elapsed() > Duration::from_secs(120) {
                    break;
                }
                match who(front, client.clone()).await {
                    Ok(_) => {
                        o.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => {
                        f.fetch_add(1, Ordering::SeqCst);
                        errors.push(e.to_string());
                    }
                }
            }
            errors
        });
        Self {
            stop,
            ok,
            failed,
            task,
        }
    }

    async fn finish(self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let errors = self.task.await.unwrap();
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
            errors,
        )
    }
}

/// A file appended to every few milliseconds (at most 100,000 lines) until
/// stopped.
struct BusyLog {
    stop: std::sync::mpsc::Sender<()>,
    writer: std::thread::JoinHandle<usize>,
}

impl BusyLog {
    fn start(path: PathBuf) -> Self {
        use std::io::Write;
        use std::sync::mpsc::RecvTimeoutError;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let writer = std::thread::spawn(move || {
            let mut file = std::fs::File::create(path).unwrap();
            let mut lines = 0;
            while lines < 100_000 {
                writeln!(file, "log line {lines}").unwrap();
                file.flush().unwrap();
                lines += 1;
                // The pace of a chatty log: the next line after 5 ms,
                // unless told to stop meanwhile.
                match stopped.recv_timeout(Duration::from_millis(5)) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => break,
                }
            }
            lines
        });
        Self { stop, writer }
    }

    /// Stops writing; returns how many lines were written.
    fn stop(self) -> usize {
        drop(self.stop);
        self.writer.join().unwrap()
    }
}

async fn rewrite_targets_under_load(style: Style) {
    let mut dir = ConfigDir::new(style);
    let ca = dir.pki.path("ca.crt");
    let a = Backend::tls("a", "127.0.0.1", 0, &dir.pki, "broker").await;
    let b = Backend::tls("b", "127.0.0.1", 0, &dir.pki, "broker").await;
    let delay = "deregistration_delay = \"60s\"";
    let server = dir.start(&config(&ca, &[a.addr.to_string()], delay)).await;
    let front = server.listener_addr("front").unwrap();
    wait_for("a healthy", || async {
        state_of(&server, a.addr).as_deref() == Some("healthy")
    })
    .await;

    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(Stream::open(front, &dir.pki).await);
    }
    // A log written into the config's folder the whole time (as with
    // `serve 2> ./portico.log`): its events must not hold reloads back.
    let log = BusyLog::start(dir.dir().join("portico.log"));
    let clients = ClientLoop::start(front, &dir.pki);
    let mut latencies = Vec::new();
    for i in 0..20 {
        let (target, name) = if i % 2 == 0 { (&b, "b") } else { (&a, "a") };
        let written = Instant::now();
        dir.write(&config(&ca, &[target.addr.to_string()], delay));
        let client = dir.pki.client_config();
        wait_for(&format!("change {i} ({style:?}) routes to {name}"), || {
            let client = client.clone();
            async move { matches!(who(front, client).await.as_deref(), Ok(n) if n == name) }
        })
        .await;
        latencies.push(written.elapsed());
        for (n, s) in streams.iter_mut().enumerate() {
            s.echo(&format!("stream {n} after change {i}\n"))
                .await
                .unwrap();
        }
    }
    let (ok, failed, errors) = clients.finish().await;
    let lines = log.stop();
    assert!(lines > 20, "the busy log wrote only {lines} lines");
    assert_eq!(
        failed,
        0,
        "{failed} of {} client connections failed: {errors:?}",
        ok + failed
    );
    assert!(ok > 20, "the client loop ran only {ok} connections");
    assert!(streams.iter().all(|s| s.backend == "a"));
    latencies.sort();
    let slowest = *latencies.last().unwrap();
    eprintln!(
        "{style:?}: 20 reloads, write to first routed connection: median {:?}, max {slowest:?}; {ok} client connections, 0 failed",
        latencies[latencies.len() / 2]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_rewritten_in_place_under_load() {
    rewrite_targets_under_load(Style::InPlace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_rewritten_by_rename_under_load() {
    rewrite_targets_under_load(Style::Rename).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_rewritten_by_symlink_swap_under_load() {
    rewrite_targets_under_load(Style::SymlinkSwap).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_changes_nothing_and_the_next_valid_one_applies() {
    let mut dir = ConfigDir::new(Style::Rename);
    let ca = dir.pki.path("ca.crt");
    dir.pki.issue("other", &["other.localhost"]);
    let a = Backend::tls("a", "127.0.0.1", 0, &dir.pki, "broker").await;
    let b = Backend::tls("b", "127.0.0.1", 0, &dir.pki, "broker").await;
    let server = dir.start(&config(&ca, &[a.addr.to_string()], "")).await;
    let front = server.listener_addr("front").unwrap();
    let admin = server.admin_addr().unwrap();
    wait_for("a healthy", || async {
        state_of(&server, a.addr).as_deref() == Some("healthy")
    })
    .await;

    let good_for_b = config(&ca, &[b.addr.to_string()], "");
    let broken = [
        (
            "a syntax error",
            good_for_b.replace("targets = [", "targets = [["),
        ),
        (
            "a missing certificate",
            good_for_b.replace("front.crt", "missing.crt"),
        ),
        (
            "a key that does not match",
            good_for_b.replace("front.key", "other.key"),
        ),
        (
            "an unknown key",
            good_for_b.replace("connect_timeout", "connect_timeot"),
        ),
        ("half a file", good_for_b[..good_for_b.len() / 2].to_owned()),
    ];
    for (i, (what, text)) in broken.iter().enumerate() {
        dir.write(text);
        let errors = i + 1;
        wait_for(&format!("{what} counted as a reload error"), || async {
            server.metrics().render().contains(&format!(
                "portico_config_reloads_total{{result=\"error\"}} {errors}"
            ))
        })
        .await;
        let (_, health) = admin_get(admin, "/healthz").await;
        let health: serde_json::Value = serde_json::from_str(&health).unwrap();
        let error = health["last_reload_error"].as_str().unwrap_or_default();
        assert!(error.contains("portico.toml:"), "{what}: {error}");
        assert_eq!(
            who(front, dir.pki.client_config()).await.unwrap(),
            "a",
            "{what} took effect"
        );
    }
    dir.write(&good_for_b);
    wait_for("the valid config applies", || async {
        matches!(
            who(front, dir.pki.client_config()).await.as_deref(),
            Ok("b")
        )
    })
    .await;
    let (_, health) = admin_get(admin, "/healthz").await;
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert!(health["last_reload_error"].is_null(), "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_target_drains_for_its_deregistration_delay() {
    let mut dir = ConfigDir::new(Style::Rename);
    let ca = dir.pki.path("ca.crt");
    let a = Backend::tls("a", "127.0.0.1", 0, &dir.pki, "broker").await;
    let b = Backend::tls("b", "127.0.0.1", 0, &dir.pki, "broker").await;
    let delay = "deregistration_delay = \"1s\"";
    let both = [a.addr.to_string(), b.addr.to_string()];
    let server = dir.start(&config(&ca, &both, delay)).await;
    let front = server.listener_addr("front").unwrap();
    wait_for("both healthy", || async {
        states(&server)
            .iter()
            .filter(|(_, s)| s == "healthy")
            .count()
            == 2
    })
    .await;
    let mut streams = Vec::new();
    for _ in 0..4 {
        streams.push(Stream::open(front, &dir.pki).await);
    }
    let (mut on_a, mut on_b): (Vec<_>, Vec<_>) =
        streams.into_iter().partition(|s| s.backend == "a");
    assert!(!on_a.is_empty() && !on_b.is_empty());

    dir.write(&config(&ca, &[b.addr.to_string()], delay));
    let removed_at = Instant::now();
    wait_for("a draining", || async {
        state_of(&server, a.addr).as_deref() == Some("draining")
    })
    .await;
    // Within the delay, a's streams still work and new connections avoid it.
    for s in &mut on_a {
        s.echo("still draining\n").await.unwrap();
    }
    assert_eq!(who(front, dir.pki.client_config()).await.unwrap(), "b");
    // Then they are closed.
    for s in &mut on_a {
        let mut buf = [0u8; 1];
        let end = tokio::time::timeout(DEADLINE, s.tls.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(end, Ok(0) | Err(_)), "stream not closed: {end:?}");
    }
    let held = removed_at.elapsed();
    assert!(
        held >= Duration::from_millis(900),
        "closed after {held:?}, before the delay"
    );
    wait_for("a gone from /targets", || async {
        state_of(&server, a.addr).is_none()
    })
    .await;
    for s in &mut on_b {
        s.echo("b untouched\n").await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_serves_new_handshakes_and_old_connections_run_on() {
    let mut dir = ConfigDir::new(Style::InPlace);
    let ca = dir.pki.path("ca.crt");
    let a = Backend::tls("a", "127.0.0.1", 0, &dir.pki, "broker").await;
    let server = dir.start(&config(&ca, &[a.addr.to_string()], "")).await;
    let front = server.listener_addr("front").unwrap();
    wait_for("a healthy", || async {
        state_of(&server, a.addr).as_deref() == Some("healthy")
    })
    .await;

    let mut old = Stream::open(front, &dir.pki).await;
    let served_cert = |s: &Stream| s.tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let before = served_cert(&old);

    // A new certificate and key for the same name, written in place.
    let issued = dir.pki.ca.issue(&["mq.localhost".to_owned()]).unwrap();
    std::fs::write(dir.pki.path("front.crt"), &issued.cert_pem).unwrap();
    std::fs::write(dir.pki.path("front.key"), &issued.key_pem).unwrap();
    let after = portico::tls::load_certificates(&dir.pki.path("front.crt")).unwrap()[0].to_vec();
    assert_ne!(before, after);
    wait_for("new handshakes see the new certificate", || async {
        let s = Stream::open(front, &dir.pki).await;
        served_cert(&s) == after
    })
    .await;
    old.echo("the old connection runs on\n").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_come_and_go_with_the_config() {
    let mut dir = ConfigDir::new(Style::Rename);
    let ca = dir.pki.path("ca.crt");
    let a = Backend::tls("a", "127.0.0.1", 0, &dir.pki, "broker").await;
    let base = config(&ca, &[a.addr.to_string()], "");
    let server = dir.start(&base).await;
    let front = server.listener_addr("front").unwrap();
    let mut held = Stream::open(front, &dir.pki).await;

    // A second listener appears.
    let second = base.replace(
        "[[target_group]]",
        "[[listener]]\nname = \"second\"\nbind = \"127.0.0.1:0\"\ntarget_group = \"brokers\"\nprotocol = \"tcp\"\n\n[[target_group]]",
    );
    dir.write(&second);
    wait_for("second listener bound", || async {
        server.listener_addr("second").is_some()
    })
    .await;
    let second_addr = server.listener_addr("second").unwrap();
    tokio::net::TcpStream::connect(second_addr).await.unwrap();
    assert_eq!(
        server.listener_addr("front"),
        Some(front),
        "an unchanged listener keeps its socket"
    );

    // The first listener is removed: it stops accepting, its connection runs on.
    let without_front = {
        let start = second.find("[[listener]]\nname = \"front\"").unwrap();
        let end = second.find("[[target_group]]").unwrap();
        let mut text = second.clone();
        // Keep the "second" listener, drop "front" with its certificate.
        let second_listener = "[[listener]]\nname = \"second\"\nbind = \"127.0.0.1:0\"\ntarget_group = \"brokers\"\nprotocol = \"tcp\"\n\n";
        text.replace_range(start..end, second_listener);
        text
    };
    dir.write(&without_front);
    wait_for("front removed", || async {
        server.listener_addr("front").is_none()
    })
    .await;
    wait_for("front refuses new connections", || async {
        tokio::net::TcpStream::connect(front).await.is_err()
    })
    .await;
    held.echo("the listener is gone, the connection is not\n")
        .await
        .unwrap();
    assert_eq!(server.listener_addr("second"), Some(second_addr));
}

/// The listener of `config()` with a `[listener.tls]` table of `tls`.
fn config_with_tls(ca: &Path, target: &str, tls: &str) -> String {
    config(ca, &[target.to_owned()], "").replace(
        "  [[listener.certificate]]",
        &format!("{tls}\n  [[listener.certificate]]"),
    )
}

/// A client of exactly `version`, resuming sessions with `pki`'s roots
/// (and presenting `cert`, if any).
fn resuming_client(
    pki: &Pki,
    version: &'static rustls::SupportedProtocolVersion,
    cert: Option<&str>,
) -> std::sync::Arc<rustls::ClientConfig> {
    let base = match cert {
        Some(stem) => pki.client_config_with_cert(stem),
        None => pki.client_config(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(portico::tls::provider())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(pki.roots())
        .with_no_client_auth();
    config.client_auth_cert_resolver = base.client_auth_cert_resolver.clone();
    std::sync::Arc::new(config)
}

/// Connects with `client`; whether the session was resumed, or the error.
async fn resumed(
    front: std::net::SocketAddr,
    client: std::sync::Arc<rustls::ClientConfig>,
) -> std::io::Result<bool> {
    let (stream, _) = tls_connect(front, client, "mq.localhost").await?;
    Ok(stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed))
}

/// A reload that turns mutual TLS on, or trusts another CA, cannot be
/// resumed around: session tickets and the cache made under the old rule
/// are not honoured (TLS 1.3 and TLS 1.2 alike).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_client_authentication_is_not_resumed_around() {
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let mut dir = ConfigDir::new(Style::Rename);
        dir.pki.issue("client", &["client.localhost"]);
        let other_ca = Pki::new();
        std::fs::copy(other_ca.path("ca.crt"), dir.pki.path("other-ca.crt")).unwrap();
        let ca = dir.pki.path("ca.crt");
        let backend = Backend::tls("a", "127.0.0.1", 0, &dir.pki, "broker").await;
        let target = backend.addr.to_string();
        let plain = config_with_tls(&ca, &target, "");
        let server = dir.start(&plain).await;
        let front = server.listener_addr("front").unwrap();
        wait_for("a healthy", || async {
            state_of(&server, backend.addr).as_deref() == Some("healthy")
        })
        .await;

        // No client authentication: a client without a certificate resumes.
        let anonymous = resuming_client(&dir.pki, version, None);
        assert!(!resumed(front, anonymous.clone()).await.unwrap());
        assert!(
            resumed(front, anonymous.clone()).await.unwrap(),
            "{version:?}: resumes"
        );

        // Mutual TLS on: the anonymous client's session is not honoured.
        let mutual = config_with_tls(&ca, &target, "  [listener.tls]\n  client_ca = \"ca.crt\"");
        dir.write(&mutual);
        wait_for("mutual TLS in force", || {
            let fresh = resuming_client(&dir.pki, version, None);
            async move { resumed(front, fresh).await.is_err() }
        })
        .await;
        let holder = resuming_client(&dir.pki, version, Some("client"));
        assert!(!resumed(front, holder.clone()).await.unwrap());
        assert!(
            resumed(front, anonymous.clone()).await.is_err(),
            "{version:?}: a client without a certificate resumed past mutual TLS"
        );
        // The certificate holder resumes under the rule it was checked by.
        assert!(resumed(front, holder.clone()).await.unwrap());

        // Another CA: the holder of an old CA's certificate cannot resume.
        let other = config_with_tls(
            &ca,
            &target,
            "  [listener.tls]\n  client_ca = \"other-ca.crt\"",
        );
        dir.write(&other);
        wait_for("the other CA in force", || {
            let fresh = resuming_client(&dir.pki, version, Some("client"));
            async move { resumed(front, fresh).await.is_err() }
        })
        .await;
        assert!(
            resumed(front, holder.clone()).await.is_err(),
            "{version:?}: a certificate from a CA no longer trusted resumed"
        );
        server.shutdown(Duration::from_secs(1)).await;
    }
}
