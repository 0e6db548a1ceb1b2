//! `portico demo`: the whole story on one machine. Dev certificates, an
//! active/standby broker pair plus two brokers networked to it (each a real
//! broker process: this executable re-run as `portico broker-node`), and
//! the front door in front of the pair, all on loopback.
//!
//! The demo owns its brokers for its whole life: every port it needs is
//! checked free before anything starts; a start-up failure stops every
//! broker it started; a broker that dies (say, `kill -9` to watch a
//! failover) is started again, a pair's node as the new standby; and the
//! brokers stop with the demo however it ends, `kill -9` included (each
//! watches a pipe from the demo and stops when it closes).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::process::{Child, ChildStdin, Command};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::certs::{write_dev_certs, CertRequest};
use crate::{Config, Server};

/// One broker process of the demo.
struct Node {
    name: &'static str,
    host: &'static str,
    port: u16,
    /// Its `openwire+ssl` transport (ActiveMQ's clients).
    openwire: u16,
    /// Its `mqtt+ssl` transport (devices).
    mqtt: u16,
    /// Its `stomp+wss` transport (browsers).
    wss: u16,
    console: u16,
    /// Network connector to broker1's pair.
    networked: bool,
}

impl Node {
    fn in_pair(&self) -> bool {
        self.name.starts_with("broker1")
    }
}

const NODES: [Node; 4] = [
    Node {
        name: "broker1-a",
        host: "127.0.0.1",
        port: 61614,
        openwire: 61618,
        mqtt: 8885,
        wss: 61615,
        console: 8162,
        networked: false,
    },
    Node {
        name: "broker1-b",
        host: "127.0.0.2",
        port: 61614,
        openwire: 61618,
        mqtt: 8885,
        wss: 61615,
        console: 8162,
        networked: false,
    },
    Node {
        name: "broker2",
        host: "127.0.0.1",
        port: 61624,
        openwire: 61628,
        mqtt: 8886,
        wss: 61625,
        console: 8163,
        networked: true,
    },
    Node {
        name: "broker3",
        host: "127.0.0.1",
        port: 61634,
        openwire: 61638,
        mqtt: 8887,
        wss: 61635,
        console: 8164,
        networked: true,
    },
];

/// How long a stopping broker may take before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long the first node may take to open its console.
const FIRST_NODE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}")]
    Certs(#[from] crate::certs::CertError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start broker {name}: {source}")]
    Spawn {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{what} cannot listen on {addr}: {source}; another program holds the port \
         (an earlier demo, or brokers from the walkthrough?): stop it and run the demo again"
    )]
    PortTaken {
        what: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("broker {name} exited during start-up ({status}); its log: {log}")]
    NodeExited {
        name: &'static str,
        status: std::process::ExitStatus,
        log: PathBuf,
    },
    #[error(
        "broker {name} did not open its console within {FIRST_NODE_TIMEOUT:?}; its log: {log}"
    )]
    NodeSlow { name: &'static str, log: PathBuf },
    #[error("{0} (run the demo from the repository: it reads config/portico.toml)")]
    Config(#[from] crate::ConfigError),
    #[error("{0}")]
    Start(#[from] crate::StartError),
}

/// The running demo; dropping it kills the broker processes.
pub struct Demo {
    server: Option<Server>,
    pids: Arc<Mutex<[Option<u32>; 4]>>,
    stop: CancellationToken,
    supervisors: TaskTracker,
}

impl Demo {
    /// Starts everything under `root` (the repository: `certs/dev`,
    /// `config/portico.toml`, `data/demo`).
    pub async fn start(root: &Path) -> Result<Self, DemoError> {
        let certs = root.join("certs/dev");
        ensure_certs(&certs)?;
        let config = Config::load(&root.join("config/portico.toml"))?;
        ports_free(&config)?;
        let data = root.join("data/demo");
        std::fs::create_dir_all(&data).map_err(|source| DemoError::Write {
            path: data.clone(),
            source,
        })?;
        let exe = std::env::current_exe().map_err(|source| DemoError::Spawn {
            name: "broker",
            source,
        })?;
        let mut launchers = Vec::new();
        for node in &NODES {
            let path = data.join(format!("{}.toml", node.name));
            std::fs::write(&path, broker_toml(node, &certs)).map_err(|source| {
                DemoError::Write {
                    path: path.clone(),
                    source,
                }
            })?;
            launchers.push(Launcher {
                node,
                exe: exe.clone(),
                config: path,
                log: data.join(format!("{}.log", node.name)),
            });
        }
        // Children are killed when dropped: an error below leaves none behind.
        let mut children = Vec::new();
        for launcher in &launchers {
            let mut running = launcher.spawn()?;
            if launcher.node.name == "broker1-a" {
                // Let the first node take the pair's lock, so it is the active one.
                launcher.wait_until_serving(&mut running.child).await?;
            }
            children.push(running);
        }
        let server = Server::start(config).await?;
        let _ = server.watch_config().await;
        // Ready means a client gets through: the front door has admitted
        // the pair's active node.
        let deadline = tokio::time::Instant::now() + FIRST_NODE_TIMEOUT;
        while !server.targets().iter().any(|t| t.state == "healthy") {
            if tokio::time::Instant::now() >= deadline {
                return Err(DemoError::NodeSlow {
                    name: "broker1-a",
                    log: data.join("broker1-a.log"),
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let pids = Arc::new(Mutex::new([None; 4]));
        let stop = CancellationToken::new();
        let supervisors = TaskTracker::new();
        for (i, (launcher, running)) in launchers.into_iter().zip(children).enumerate() {
            lock(&pids)[i] = running.child.id();
            supervisors.spawn(supervise(launcher, running, i, pids.clone(), stop.clone()));
        }
        supervisors.close();
        Ok(Self {
            server: Some(server),
            pids,
            stop,
            supervisors,
        })
    }

    /// The brokers' process ids, in [`NODES`] order.
    pub fn pids(&self) -> [Option<u32>; 4] {
        *lock(&self.pids)
    }

    /// What to try, with the addresses.
    pub fn banner(&self) -> String {
        let server = self.server.as_ref();
        let front = server
            .and_then(|s| s.listener_addr("stomp"))
            .map_or_else(String::new, |a| a.to_string());
        let front_openwire = server
            .and_then(|s| s.listener_addr("openwire"))
            .map_or_else(String::new, |a| a.to_string());
        let front_mqtt = server
            .and_then(|s| s.listener_addr("mqtt"))
            .map_or_else(String::new, |a| a.to_string());
        let front_wss = server
            .and_then(|s| s.listener_addr("wss"))
            .map_or_else(String::new, |a| a.to_string());
        let admin = server
            .and_then(Server::admin_addr)
            .map_or_else(String::new, |a| a.to_string());
        let resolves = std::net::ToSocketAddrs::to_socket_addrs(&("mq.localhost", 61617))
            .is_ok_and(|mut a| a.next().is_some());
        let host = if resolves {
            "mq.localhost"
        } else {
            "127.0.0.1"
        };
        let mut out = String::new();
        out.push_str(&format!(
            "front door   ssl://mq.localhost:61617 (STOMP, listening on {front})\n\
             front door   ssl://mq.localhost:61616 (OpenWire, listening on {front_openwire})\n\
             front door   mqtts://mq.localhost:8883 (MQTT, listening on {front_mqtt})\n\
             front door   wss://mq.localhost:61619/ (STOMP over WebSocket, listening on {front_wss}; \
             live page http://127.0.0.1:8162/live)\n"
        ));
        out.push_str(&format!(
            "admin        http://{admin}/targets  /metrics  /healthz\n"
        ));
        for (node, pid) in NODES.iter().zip(self.pids()) {
            out.push_str(&format!(
                "{:<12} ssl://{}:{}  console http://{}:{}/  pid {}\n",
                node.name,
                node.host,
                node.port,
                node.host,
                node.console,
                pid.map_or_else(|| "-".to_owned(), |p| p.to_string())
            ));
        }
        if !resolves {
            out.push_str("\nmq.localhost does not resolve here: the commands use 127.0.0.1, which the dev certificate also covers.\n");
        }
        let url = format!("failover:(ssl://{host}:61617)");
        let active = self.pids()[0].map_or_else(|| "-".to_owned(), |p| p.to_string());
        out.push_str(&format!(
            "\nSend and receive through the front door, about a minute of each (two terminals):\n  \
             cargo run --release -- producer --broker-url '{url}' --ca certs/dev/ca.crt --destination queue://MyQueue --message-count 20000 --sleep 2\n  \
             cargo run --release -- consumer --broker-url '{url}' --ca certs/dev/ca.crt --destination queue://MyQueue --message-count 20000\n\
             Fail over while they run: kill -9 {active} (broker1-a); broker1-b takes over, the clients follow,\n\
             and the demo starts broker1-a again as the pair's new standby.\n\
             ActiveMQ's own commands (Debian's activemq; $AMQ as in the README) over OpenWire:\n  \
             $AMQ producer --brokerUrl 'failover:(ssl://{host}:61616)' --destination queue://MyQueue --messageCount 1000 --persistent true\n  \
             $AMQ consumer --brokerUrl 'failover:(ssl://{host}:61616)' --destination queue://MyQueue --messageCount 1000\n\
             Logs: data/demo/*.log. Stop with Ctrl-C.\n"
        ));
        out
    }

    /// Stops the brokers (SIGTERM, so each hands over cleanly; killed after
    /// a grace period), then the front door.
    pub async fn stop(mut self) {
        self.stop.cancel();
        self.supervisors.wait().await;
        if let Some(server) = self.server.take() {
            server.shutdown(Duration::from_secs(2)).await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Every address the demo will listen on must be free before anything
/// starts: a port held by someone else (an earlier demo's broker, say)
/// would otherwise be mistaken for one of ours.
fn ports_free(config: &Config) -> Result<(), DemoError> {
    let mut wanted: Vec<(String, SocketAddr)> = config
        .listeners
        .iter()
        .map(|l| (format!("the front door's listener {:?}", l.name), l.bind))
        .collect();
    if let Some(admin) = &config.admin {
        wanted.push(("the front door's admin server".into(), admin.bind));
    }
    for node in &NODES {
        for port in [node.port, node.openwire, node.mqtt, node.wss, node.console] {
            let ip = node.host.parse().expect("a demo host is an IP");
            wanted.push((format!("broker {}", node.name), SocketAddr::new(ip, port)));
        }
    }
    for (what, addr) in wanted {
        if addr.port() == 0 {
            continue;
        }
        // Bound and released at once: only a check.
        std::net::TcpListener::bind(addr).map_err(|source| DemoError::PortTaken {
            what,
            addr,
            source,
        })?;
    }
    Ok(())
}

fn ensure_certs(certs: &Path) -> Result<(), DemoError> {
    let missing = |f: &str| !certs.join(f).is_file();
    let brokers: Vec<String> = ["broker1", "broker2", "broker3"]
        .iter()
        .filter(|b| missing(&format!("{b}.crt")))
        .map(|b| b.to_string())
        .collect();
    let domains: Vec<String> = if missing("mq.localhost.crt") {
        vec!["mq.localhost".into()]
    } else {
        Vec::new()
    };
    if !brokers.is_empty() || !domains.is_empty() {
        write_dev_certs(
            certs,
            &CertRequest {
                domains,
                brokers,
                ips: vec![
                    "127.0.0.1".parse().expect("an IP"),
                    "127.0.0.2".parse().expect("an IP"),
                ],
            },
        )?;
    }
    Ok(())
}

/// A node's process and the demo's end of its stdin pipe (held, never
/// written: the node stops when it closes). Kept apart from the child
/// because waiting on a child closes the stdin it still holds.
struct Running {
    child: Child,
    _pipe: Option<ChildStdin>,
}

/// How to start one node.
struct Launcher {
    node: &'static Node,
    exe: PathBuf,
    config: PathBuf,
    log: PathBuf,
}

impl Launcher {
    /// Starts the node. Its standard input is a pipe from the demo that is
    /// never written: when the demo ends, however it ends, the pipe closes
    /// and the node stops. Dropping the child kills it.
    fn spawn(&self) -> Result<Running, DemoError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|source| DemoError::Write {
                path: self.log.clone(),
                source,
            })?;
        let mut child = Command::new(&self.exe)
            .args(["broker-node", "--stop-with-stdin", "--config"])
            .arg(&self.config)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| DemoError::Spawn {
                name: self.node.name,
                source,
            })?;
        let pipe = child.stdin.take();
        Ok(Running { child, _pipe: pipe })
    }

    /// Waits until the node's console answers (it is active), or fails if
    /// the node exits or takes too long.
    async fn wait_until_serving(&self, child: &mut Child) -> Result<(), DemoError> {
        let deadline = tokio::time::Instant::now() + FIRST_NODE_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(DemoError::NodeExited {
                    name: self.node.name,
                    status,
                    log: self.log.clone(),
                });
            }
            let console = (self.node.host, self.node.console);
            if tokio::net::TcpStream::connect(console).await.is_ok() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(DemoError::NodeSlow {
                    name: self.node.name,
                    log: self.log.clone(),
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// Keeps one node running until the demo stops: a node that dies is
/// started again (with a growing pause if it keeps dying at once).
async fn supervise(
    launcher: Launcher,
    mut running: Running,
    index: usize,
    pids: Arc<Mutex<[Option<u32>; 4]>>,
    stop: CancellationToken,
) {
    let name = launcher.node.name;
    let mut pause = Duration::from_millis(500);
    loop {
        let started = tokio::time::Instant::now();
        let status = tokio::select! {
            status = running.child.wait() => status,
            _ = stop.cancelled() => {
                stop_node(&mut running.child).await;
                return;
            }
        };
        let how = status.map_or_else(|e| e.to_string(), |s| s.to_string());
        if started.elapsed() > Duration::from_secs(30) {
            pause = Duration::from_millis(500);
        }
        if launcher.node.in_pair() {
            warn!(broker = name, "{name} exited ({how}); starting it again as the pair's standby (the other node takes over)");
        } else {
            warn!(broker = name, "{name} exited ({how}); starting it again");
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.cancelled() => return,
        }
        pause = (pause * 2).min(Duration::from_secs(30));
        match launcher.spawn() {
            Ok(new) => {
                running = new;
                let pid = running.child.id();
                lock(&pids)[index] = pid;
                info!(broker = name, pid, "{name} started again");
            }
            Err(e) => {
                warn!(broker = name, error = %e, "cannot start {name} again");
                lock(&pids)[index] = None;
                return;
            }
        }
    }
}

/// SIGTERM, so the node hands over cleanly; SIGKILL after [`STOP_GRACE`].
async fn stop_node(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await;
    }
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

fn broker_toml(node: &Node, certs: &Path) -> String {
    let cert_name = if node.in_pair() { "broker1" } else { node.name };
    let data_dir = cert_name;
    let mut toml = format!(
        "[broker]\nname = \"{name}\"\ndata_dir = \"{data_dir}\"\n\n\
         [[transport]]\nname = \"stomp+ssl\"\nbind = \"{host}:{port}\"\ncert = {cert:?}\nkey = {key:?}\n\n\
         [[transport]]\nname = \"openwire+ssl\"\nbind = \"{host}:{openwire}\"\ncert = {cert:?}\nkey = {key:?}\n\n\
         [[transport]]\nname = \"mqtt+ssl\"\nbind = \"{host}:{mqtt}\"\ncert = {cert:?}\nkey = {key:?}\n\n\
         [[transport]]\nname = \"stomp+wss\"\nbind = \"{host}:{wss}\"\ncert = {cert:?}\nkey = {key:?}\n\n\
         [console]\nbind = \"{host}:{console}\"\n{live}",
        name = cert_name,
        host = node.host,
        port = node.port,
        openwire = node.openwire,
        mqtt = node.mqtt,
        wss = node.wss,
        // The pair's live page connects through the front door.
        live = if node.in_pair() {
            "websocket_url = \"wss://mq.localhost:61619/\"\n"
        } else {
            ""
        },
        console = node.console,
        cert = certs.join(format!("{cert_name}.crt")),
        key = certs.join(format!("{cert_name}.key")),
    );
    if node.networked {
        toml.push_str(&format!(
            "\n[[network_connector]]\nname = \"{}-to-broker1\"\nuri = \"static:(ssl://127.0.0.1:61614,ssl://127.0.0.2:61614)\"\nduplex = true\nnetwork_ttl = 2\nca = {:?}\n",
            node.name,
            certs.join("ca.crt")
        ));
    }
    toml
}
