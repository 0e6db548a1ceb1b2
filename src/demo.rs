//! `portico demo`: the whole story on one machine. Dev certificates, an
//! active/standby broker pair plus two brokers networked to it (each a real
//! broker process: this executable re-run as `portico broker-node`), and
//! the front door in front of the pair, all on loopback.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::certs::{write_dev_certs, CertRequest};
use crate::{Config, Server};

/// One broker process of the demo.
struct Node {
    name: &'static str,
    host: &'static str,
    port: u16,
    console: u16,
    /// Network connector to broker1's pair.
    networked: bool,
}

const NODES: [Node; 4] = [
    Node {
        name: "broker1-a",
        host: "127.0.0.1",
        port: 61614,
        console: 8162,
        networked: false,
    },
    Node {
        name: "broker1-b",
        host: "127.0.0.2",
        port: 61614,
        console: 8162,
        networked: false,
    },
    Node {
        name: "broker2",
        host: "127.0.0.1",
        port: 61624,
        console: 8163,
        networked: true,
    },
    Node {
        name: "broker3",
        host: "127.0.0.1",
        port: 61634,
        console: 8164,
        networked: true,
    },
];

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
    #[error("{0}")]
    Config(#[from] crate::ConfigError),
    #[error("{0}")]
    Start(#[from] crate::StartError),
}

/// The running demo; dropping it stops the broker processes.
pub struct Demo {
    server: Option<Server>,
    children: Vec<(&'static str, Child)>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Demo {
    /// Starts everything under `root` (the repository: `certs/dev`,
    /// `config/portico.toml`, `data/demo`).
    pub async fn start(root: &Path) -> Result<Self, DemoError> {
        let certs = root.join("certs/dev");
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
                &certs,
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
        let data = root.join("data/demo");
        std::fs::create_dir_all(&data).map_err(|source| DemoError::Write {
            path: data.clone(),
            source,
        })?;
        let exe = std::env::current_exe().map_err(|source| DemoError::Spawn {
            name: "broker",
            source,
        })?;
        let mut children = Vec::new();
        for node in &NODES {
            let path = data.join(format!("{}.toml", node.name));
            std::fs::write(&path, broker_toml(node, &certs)).map_err(|source| {
                DemoError::Write {
                    path: path.clone(),
                    source,
                }
            })?;
            let log = data.join(format!("{}.log", node.name));
            let log_file = std::fs::File::create(&log)
                .map_err(|source| DemoError::Write { path: log, source })?;
            let child = Command::new(&exe)
                .args(["broker-node", "--config"])
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .map_err(|source| DemoError::Spawn {
                    name: node.name,
                    source,
                })?;
            children.push((node.name, child));
            if node.name == "broker1-a" {
                // Let the first node take the pair's lock, so it is the active one.
                wait_for_port(node.host, node.console).await;
            }
        }
        let config = Config::load(&root.join("config/portico.toml"))?;
        let server = Server::start(config).await?;
        let _ = server.watch_config().await;
        Ok(Self {
            server: Some(server),
            children,
        })
    }

    /// What to try, with the addresses.
    pub fn banner(&self) -> String {
        let server = self.server.as_ref();
        let front = server
            .and_then(|s| s.listener_addr("stomp"))
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
            "front door   ssl://mq.localhost:61617 (listening on {front})\n"
        ));
        out.push_str(&format!(
            "admin        http://{admin}/targets  /metrics  /healthz\n"
        ));
        for (node, (_, child)) in NODES.iter().zip(&self.children) {
            out.push_str(&format!(
                "{:<12} ssl://{}:{}  console http://{}:{}/  pid {}\n",
                node.name,
                node.host,
                node.port,
                node.host,
                node.console,
                child.id()
            ));
        }
        if !resolves {
            out.push_str("\nmq.localhost does not resolve here: the commands use 127.0.0.1, which the dev certificate also covers.\n");
        }
        let url = format!("failover:(ssl://{host}:61617)");
        out.push_str(&format!(
            "\nSend and receive through the front door:\n  \
             cargo run --release -p portico-broker -- producer --broker-url '{url}' --ca certs/dev/ca.crt --destination queue://MyQueue --message-count 10000\n  \
             cargo run --release -p portico-broker -- consumer --broker-url '{url}' --ca certs/dev/ca.crt --destination queue://MyQueue --message-count 10000\n\
             Fail over: kill -9 the pid of broker1-a; broker1-b takes over and the clients follow.\n\
             Logs: data/demo/*.log. Stop with Ctrl-C.\n"
        ));
        out
    }

    /// Stops the brokers (SIGTERM, so each hands over cleanly), then the
    /// front door.
    pub async fn stop(mut self) {
        for (_, child) in &self.children {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
        }
        for (_, child) in &mut self.children {
            for _ in 0..100 {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        if let Some(server) = self.server.take() {
            server.shutdown(Duration::from_secs(2)).await;
        }
    }
}

async fn wait_for_port(host: &str, port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect((host, port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn broker_toml(node: &Node, certs: &Path) -> String {
    let cert_name = if node.name.starts_with("broker1") {
        "broker1"
    } else {
        node.name
    };
    let data_dir = if node.name.starts_with("broker1") {
        "broker1"
    } else {
        node.name
    };
    let mut toml = format!(
        "[broker]\nname = \"{name}\"\ndata_dir = \"{data_dir}\"\n\n\
         [[transport]]\nname = \"stomp+ssl\"\nbind = \"{host}:{port}\"\ncert = {cert:?}\nkey = {key:?}\n\n\
         [console]\nbind = \"{host}:{console}\"\n",
        name = cert_name,
        host = node.host,
        port = node.port,
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
