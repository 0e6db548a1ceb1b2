//! Test harness: brokers on ephemeral loopback ports with certificates from
//! portico's dev CA.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process};

use portico::certs::DevCa;
use portico_broker::config::BrokerConfig;
use portico_broker::Broker;

/// A folder with a dev CA, a broker certificate for 127.0.0.1 and localhost,
/// and a broker.toml.
pub struct BrokerDir {
    pub dir: tempfile::TempDir,
}

impl BrokerDir {
    pub fn new(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::generate().unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca.cert_pem()).unwrap();
        let issued = ca.issue(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        std::fs::write(dir.path().join("broker.crt"), issued.cert_pem).unwrap();
        std::fs::write(dir.path().join("broker.key"), issued.key_pem).unwrap();
        let toml = format!(
            r#"
[broker]
name = "test-broker"
data_dir = "data"

[[transport]]
name = "stomp+ssl"
bind = "127.0.0.1:0"
cert = "broker.crt"
key = "broker.key"

[[transport]]
name = "stomp"
bind = "127.0.0.1:0"

[console]
bind = "127.0.0.1:0"
{extra}
"#
        );
        std::fs::write(dir.path().join("broker.toml"), toml).unwrap();
        Self { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn config(&self) -> BrokerConfig {
        BrokerConfig::load(&self.path("broker.toml")).unwrap_or_else(|e| panic!("{e}"))
    }

    pub async fn start(&self) -> Broker {
        Broker::start(self.config()).await.unwrap()
    }

    pub fn ca(&self) -> PathBuf {
        self.path("ca.crt")
    }
}

pub fn data_dir(dir: &Path) -> PathBuf {
    dir.join("data")
}

use std::net::SocketAddr;
use std::time::Duration;

use portico_broker::stomp::{decode, Command, Decoded, Frame, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const DEADLINE: Duration = Duration::from_secs(10);

/// A bare STOMP client over plain TCP, built on the broker's own codec.
pub struct RawClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl RawClient {
    /// Connects and completes CONNECT/CONNECTED.
    pub async fn connect(addr: SocketAddr) -> Self {
        Self::connect_over(TcpStream::connect(addr).await.unwrap()).await
    }

    /// The same over a connection made by the caller.
    pub async fn connect_over(stream: TcpStream) -> Self {
        let mut client = Self::over(stream);
        client
            .send(
                &Frame::new(Command::Connect)
                    .header("accept-version", "1.2")
                    .header("host", "localhost"),
            )
            .await;
        let connected = client.next().await.expect("CONNECTED");
        assert_eq!(connected.command, Command::Connected, "{connected:?}");
        client
    }

    /// Sends CONNECT with `login` and `passcode`; returns the connection and
    /// the broker's answer (CONNECTED or ERROR; `None` if it just closed).
    pub async fn login(addr: SocketAddr, user: &str, password: &str) -> (Self, Option<Frame>) {
        let mut client = Self::open(addr).await;
        client
            .send(
                &Frame::new(Command::Connect)
                    .header("accept-version", "1.2")
                    .header("host", "localhost")
                    .header("login", user)
                    .header("passcode", password),
            )
            .await;
        let answer = client.next().await;
        (client, answer)
    }

    /// A TCP connection, nothing sent yet.
    pub async fn open(addr: SocketAddr) -> Self {
        Self::over(TcpStream::connect(addr).await.unwrap())
    }

    /// Over a connection made by the caller, nothing sent yet.
    pub fn over(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, frame: &Frame) {
        self.stream.write_all(&frame.to_bytes()).await.unwrap();
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// The next frame, or `None` once the broker closed the connection.
    pub async fn next(&mut self) -> Option<Frame> {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            // Whatever the broker's own limit, up to 64 MiB frames.
            let limits = Limits {
                max_frame_size: 64 * 1024 * 1024,
                ..Limits::default()
            };
            match decode(&mut self.buf, &limits) {
                Ok(Some(Decoded::Frame(f))) => return Some(f),
                Ok(Some(Decoded::HeartBeat)) => continue,
                Ok(None) => {}
                Err(e) => panic!("the broker sent a bad frame: {e}"),
            }
            let n = tokio::time::timeout(DEADLINE, self.stream.read(&mut chunk))
                .await
                .expect("no frame from the broker in time")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads until the connection closes; returns the frames seen.
    pub async fn until_closed(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(f) = self.next().await {
            frames.push(f);
        }
        frames
    }
}

/// How often a condition is looked at while waiting for it.
pub const POLL: Duration = Duration::from_millis(20);

/// Waits until `check` holds, or panics with `what` after the deadline.
pub async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// How often a blocking wait looks (short: it measures outages).
pub const SPIN: Duration = Duration::from_millis(2);

/// The same for a thread that is not in the runtime; returns how long it took.
pub fn wait_until(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let started = std::time::Instant::now();
    while !check() {
        assert!(
            started.elapsed() < deadline,
            "timed out waiting for: {what}"
        );
        std::thread::sleep(SPIN);
    }
    started.elapsed()
}

/// One HTTP/1.1 request with `headers`; returns the status and the body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: 0\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(DEADLINE, tcp.read_to_string(&mut out))
        .await
        .expect("no HTTP answer in time")
        .unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {out:?}"));
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

/// `GET path`: the body, which must come with a 200.
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    let (status, body) = http(addr, "GET", path, &[]).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// A broker process, stopped (by its id) when dropped.
pub struct Node {
    pub child: Child,
    log: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    pub fn start(dir: &Path, name: &str, toml: &str, env: &[(&str, &str)]) -> Self {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, toml).unwrap();
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Process::new(env!("CARGO_BIN_EXE_portico-broker"))
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "debug")
            .envs(env.iter().copied())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Self { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The address logged right after `marker`.
    pub fn address(&self, marker: &str) -> SocketAddr {
        let mut found = None;
        wait_until(
            &format!("{marker:?} in the log"),
            Duration::from_secs(10),
            || {
                found = self.log().lines().find_map(|line| {
                    let at = line.find(marker)?;
                    line[at + marker.len()..]
                        .split_whitespace()
                        .next()?
                        .parse()
                        .ok()
                });
                found.is_some()
            },
        );
        found.unwrap()
    }
}
