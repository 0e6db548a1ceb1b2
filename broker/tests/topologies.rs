//! Every layout of `config/topologies/` runs: its configs, with fresh
//! loopback ports, start real brokers; a message produced on one broker is
//! consumed on another reached only through the network.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use portico_broker::config::BrokerConfig;
use portico_broker::stomp::{Command, Frame};
use portico_broker::Broker;

/// Copies a layout with every `127.0.0.1:PORT` moved to a free port.
fn copy_layout(name: &str, into: &Path) -> Vec<PathBuf> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config/topologies")
        .join(name);
    let mut ports: HashMap<String, u16> = HashMap::new();
    let mut files = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&source)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
    {
        let mut text = std::fs::read_to_string(&path).unwrap();
        let mut out = String::new();
        while let Some(at) = text.find("127.0.0.1:") {
            out.push_str(&text[..at + 10]);
            let rest = &text[at + 10..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            let port = *ports.entry(digits.clone()).or_insert_with(free_port);
            out.push_str(&port.to_string());
            text = rest[digits.len()..].to_owned();
        }
        out.push_str(&text);
        let out = out.replace("../../../data/", "data/");
        let copy = into.join(path.file_name().unwrap());
        std::fs::write(&copy, out).unwrap();
        files.push(copy);
    }
    files
}

struct Layout {
    _dir: tempfile::TempDir,
    brokers: HashMap<String, Broker>,
}

impl Layout {
    /// Starts every broker of the layout on free ports. A port picked free
    /// can be taken by another test before its broker binds it: then the
    /// layout starts again on other ports (a few times at most).
    async fn start(name: &str) -> Self {
        let mut attempt = 0;
        'layout: loop {
            attempt += 1;
            let dir = tempfile::tempdir().unwrap();
            let mut brokers = HashMap::new();
            for file in copy_layout(name, dir.path()) {
                let config = BrokerConfig::load(&file).unwrap_or_else(|e| panic!("{e}"));
                match Broker::start(config).await {
                    Ok(broker) => {
                        brokers.insert(broker.name().to_owned(), broker);
                    }
                    Err(
                        e @ (portico_broker::StartError::Bind { .. }
                        | portico_broker::StartError::ConsoleBind { .. }),
                    ) if attempt < 5 => {
                        eprintln!("{e}; starting the layout again on other ports");
                        for (_, b) in brokers {
                            b.shutdown(std::time::Duration::from_secs(1)).await;
                        }
                        continue 'layout;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            return Self { _dir: dir, brokers };
        }
    }

    fn addr(&self, broker: &str) -> std::net::SocketAddr {
        self.brokers[broker].transport_addr("stomp").unwrap()
    }

    /// Subscribes on `to`, sends on `from` until the consumer gets them
    /// (demand takes a moment to spread), checks nothing was lost.
    async fn route(&self, from: &str, to: &str, dest: &str, count: usize) {
        let mut consumer = RawClient::connect(self.addr(to)).await;
        consumer
            .send(
                &Frame::new(Command::Subscribe)
                    .header("destination", dest)
                    .header("id", "s"),
            )
            .await;
        // A probe, resent until it arrives, shows the demand has spread.
        let mut producer = RawClient::connect(self.addr(from)).await;
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            producer
                .send(
                    &Frame::new(Command::Send)
                        .header("destination", dest)
                        .header("probe", "1"),
                )
                .await;
            match tokio::time::timeout(Duration::from_millis(300), consumer.next()).await {
                Ok(Some(m)) if m.get("probe").is_some() => break,
                Ok(other) => panic!("{other:?}"),
                Err(_) => assert!(
                    tokio::time::Instant::now() < deadline,
                    "{from} → {to}: demand never spread"
                ),
            }
        }
        for i in 0..count {
            producer
                .send(
                    &Frame::new(Command::Send)
                        .header("destination", dest)
                        .header("persistent", "true")
                        .header("n", i.to_string()),
                )
                .await;
        }
        let mut seen = std::collections::HashSet::new();
        while seen.len() < count {
            let m = consumer.next().await.expect("consumer closed");
            if let Some(n) = m.get("n") {
                assert!(
                    m.get("portico-path").is_some_and(|p| p.starts_with(from)),
                    "{m:?}"
                );
                seen.insert(n.to_owned());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh() {
    let layout = Layout::start("mesh").await;
    layout.route("m1", "m3", "/queue/orders", 200).await;
    layout.route("m2", "m1", "/queue/returns", 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_and_spoke() {
    let layout = Layout::start("hub-and-spoke").await;
    layout.route("spoke1", "spoke4", "/queue/jobs", 200).await;
    layout.route("hub", "spoke2", "/queue/updates", 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concentrator() {
    let layout = Layout::start("concentrator").await;
    layout
        .route("edge1", "central1", "/queue/telemetry", 200)
        .await;
    layout
        .route("edge3", "central2", "/queue/telemetry2", 200)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_region() {
    let layout = Layout::start("cross-region").await;
    layout.route("us2", "eu2", "/queue/settlements", 200).await;
    layout.route("eu2", "us2", "/queue/replies", 100).await;
}
