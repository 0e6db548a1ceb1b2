//! Test harness: brokers on ephemeral loopback ports with certificates from
//! portico's dev CA.
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::path::{Path, PathBuf};

pub use portico_test_support::{
    hostile, http, http_get, request, wait_for, wait_until, Process, DEADLINE, POLL, SPIN,
};

use portico_broker::config::BrokerConfig;
use portico_broker::Broker;
use portico_core::certs::DevCa;

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

/// A broker process (the real binary) from `toml`, logging at debug into
/// `dir/NAME.log`; killed when dropped.
pub fn broker_node(dir: &Path, name: &str, toml: &str, env: &[(&str, &str)]) -> Process {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, toml).unwrap();
    let mut env = env.to_vec();
    env.push(("RUST_LOG", "debug"));
    Process::start(
        Path::new(env!("CARGO_BIN_EXE_portico-broker")),
        &["run", "--config", config.to_str().unwrap()],
        &env,
        dir.join(format!("{name}.log")),
    )
}

/// A loopback port free now (for a node that must keep its port across a
/// restart).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `python3 SCRIPT NAME ARGS…` (within 60 s); panics unless it
/// succeeded and printed `ok NAME`.
pub async fn python_scenario(script: &'static str, name: &'static str, args: Vec<String>) {
    let output = tokio::task::spawn_blocking(move || {
        portico_test_support::output_within(
            std::process::Command::new("python3")
                .arg(script)
                .arg(name)
                .args(args),
            std::time::Duration::from_secs(60),
        )
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains(&format!("ok {name}")),
        "scenario {name} of {script} failed:\n{stdout}\n{stderr}"
    );
}

/// How many bridges the broker with console `console` has connected (0
/// while the console does not answer: a node starting again).
pub async fn bridges_connected(console: std::net::SocketAddr) -> usize {
    let (status, body) = http(console, "GET", "/api/network", &[]).await;
    if status != 200 {
        return 0;
    }
    let bridges: serde_json::Value = serde_json::from_str(&body).unwrap();
    bridges
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["state"] == "connected")
        .count()
}

/// `queue`'s figures on the console (`/api/queues`), `Null` if the broker
/// has no such queue.
pub async fn queue_figures(console: std::net::SocketAddr, queue: &str) -> serde_json::Value {
    let queues: serde_json::Value =
        serde_json::from_str(&http_get(console, "/api/queues").await).unwrap();
    queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == queue)
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

/// Messages waiting in `queue` on the broker with console `console` (0 if
/// it has no such queue).
pub async fn queue_pending(console: std::net::SocketAddr, queue: &str) -> u64 {
    queue_figures(console, queue).await["pending"]
        .as_u64()
        .unwrap_or(0)
}
