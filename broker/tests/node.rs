//! A broker node as an operator sees it: the console's pages and JSON with
//! live figures, `check`, clear start-up errors, heart-beats, prefetch.

mod common;

use std::process::Command as Process;
use std::time::Duration;

use common::*;
use portico_broker::stomp::{Command, Frame};

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    http(addr, "GET", path, &[]).await
}

/// The named figures of one queue in the console's `/api/queues`.
async fn queue_figures<const N: usize>(
    console: std::net::SocketAddr,
    queue: &str,
    figures: [&str; N],
) -> [u64; N] {
    let (status, body) = get(console, "/api/queues").await;
    assert_eq!(status, 200, "{body}");
    let queues: serde_json::Value = serde_json::from_str(&body).unwrap();
    let found = queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == queue)
        .unwrap_or_else(|| panic!("no queue {queue} in {body}"));
    figures.map(|f| {
        found[f]
            .as_u64()
            .unwrap_or_else(|| panic!("no {f} in {found}"))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_live_figures_as_html_and_json() {
    let dir = BrokerDir::new("");
    let broker = dir.start().await;
    let addr = broker.transport_addr("stomp").unwrap();
    let console = broker.console_addr().unwrap();
    let mut client = RawClient::connect(addr).await;
    for i in 0..3 {
        client
            .send(
                &Frame::new(Command::Send)
                    .header("destination", "/queue/Orders")
                    .header("receipt", i.to_string())
                    .body("o"),
            )
            .await;
        assert_eq!(client.next().await.unwrap().command, Command::Receipt);
    }
    client
        .send(
            &Frame::new(Command::Subscribe)
                .header("destination", "/topic/Prices")
                .header("id", "p")
                .header("receipt", "s"),
        )
        .await;
    assert_eq!(client.next().await.unwrap().command, Command::Receipt);

    assert_eq!(
        queue_figures(console, "Orders", ["pending", "enqueued", "consumers"]).await,
        [3, 3, 0]
    );

    // A consumer takes them: the figures move.
    client
        .send(
            &Frame::new(Command::Subscribe)
                .header("destination", "/queue/Orders")
                .header("id", "o"),
        )
        .await;
    for _ in 0..3 {
        assert_eq!(client.next().await.unwrap().command, Command::Message);
    }
    assert_eq!(
        queue_figures(console, "Orders", ["pending", "dequeued", "consumers"]).await,
        [0, 3, 1]
    );

    let (_, topics) = get(console, "/api/topics").await;
    assert!(
        topics.contains("\"Prices\"") && topics.contains("\"subscribers\": 1"),
        "{topics}"
    );
    let (_, connections) = get(console, "/api/connections").await;
    let connections: serde_json::Value = serde_json::from_str(&connections).unwrap();
    assert_eq!(connections.as_array().unwrap().len(), 1);
    assert_eq!(connections[0]["subscriptions"], 2);
    // Each connection's destinations (subscribed and sent to) and counts.
    assert_eq!(
        connections[0]["destinations"],
        serde_json::json!(["/queue/Orders", "/topic/Prices"])
    );
    assert_eq!(connections[0]["messages_sent"], 3);
    assert_eq!(connections[0]["messages_delivered"], 3);
    assert_eq!(get(console, "/api/network").await.1.trim(), "[]");
    let (status, health) = get(console, "/health").await;
    assert_eq!(status, 200);
    assert!(health.contains("active"));
    for page in [
        "/",
        "/queues",
        "/queues/Orders",
        "/topics",
        "/durable",
        "/connections",
        "/network",
    ] {
        let (status, html) = get(console, page).await;
        assert_eq!(status, 200, "{page}");
        assert!(html.starts_with("<!doctype html>"), "{page}");
    }
    // Pending, consumers, producers, then counters labelled "since start".
    let (_, html) = get(console, "/queues").await;
    assert!(
        html.contains(
            "<td><a href=\"/queues/Orders\">Orders</a></td><td>0</td><td>1</td><td>1</td><td>3</td><td>3</td>"
        ),
        "{html}"
    );
    assert!(html.contains("<th>Enqueued since start</th>"), "{html}");
    // Empty tables say so.
    let (_, html) = get(console, "/network").await;
    assert!(html.contains("No network bridges"), "{html}");
    broker.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_heart_beating_client_is_dropped() {
    let dir = BrokerDir::new("[limits]\nheart_beat = \"200ms\"\n");
    let broker = dir.start().await;
    let addr = broker.transport_addr("stomp").unwrap();
    let mut client = RawClient::open(addr).await;
    client
        .send(
            &Frame::new(Command::Connect)
                .header("accept-version", "1.2")
                .header("heart-beat", "200,200"),
        )
        .await;
    let connected = client.next().await.unwrap();
    assert_eq!(connected.get("heart-beat"), Some("200,200"));
    // The client promised a beat every 200 ms and sends nothing.
    let started = std::time::Instant::now();
    let frames = client.until_closed().await;
    assert!(started.elapsed() >= Duration::from_millis(350));
    assert!(
        frames.iter().any(|f| f.command == Command::Error),
        "{frames:?}"
    );
    broker.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prefetch_window_bounds_unacknowledged_messages() {
    let dir = BrokerDir::new("");
    let broker = dir.start().await;
    let addr = broker.transport_addr("stomp").unwrap();
    let mut client = RawClient::connect(addr).await;
    for i in 0..5 {
        client
            .send(
                &Frame::new(Command::Send)
                    .header("destination", "/queue/p")
                    .header("n", i.to_string()),
            )
            .await;
    }
    client
        .send(
            &Frame::new(Command::Subscribe)
                .header("destination", "/queue/p")
                .header("id", "s")
                .header("ack", "client-individual")
                .header("activemq.prefetchSize", "2"),
        )
        .await;
    let first = client.next().await.unwrap();
    let second = client.next().await.unwrap();
    assert_eq!((first.get("n"), second.get("n")), (Some("0"), Some("1")));
    // Nothing more until one is acknowledged.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), client.next())
            .await
            .is_err()
    );
    client
        .send(&Frame::new(Command::Ack).header("id", first.get("ack").unwrap()))
        .await;
    assert_eq!(client.next().await.unwrap().get("n"), Some("2"));
    broker.shutdown(Duration::from_secs(1)).await;
}

fn broker_bin() -> Process {
    Process::new(env!("CARGO_BIN_EXE_portico-broker"))
}

#[test]
fn check_reports_every_error_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broker.toml");
    std::fs::write(
        &path,
        "[broker]\nname = \"b\"\ndata_dir = \"d\"\n\n[[transport]]\nname = \"stomp+ssl\"\nbind = \"127.0.0.1:0\"\ncert = \"missing.crt\"\nkey = \"missing.key\"\n\n[[user]]\nname = \"u\"\npassword_env = \"PORTICO_TEST_UNSET_VARIABLE\"\n\n[[authorization]]\ndestination = \"queue://>.x\"\ncolour = 1\n",
    )
    .unwrap();
    let out = broker_bin()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let shown = path.display().to_string();
    assert!(
        stderr.contains(&format!("{shown}:8:8: error: cannot read")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{shown}:13:16: error: environment variable")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{shown}:17:1: error: unknown field `colour`")),
        "{stderr}"
    );
    assert!(stderr.contains("3 errors"), "{stderr}");

    let good = BrokerDir::new("");
    let out = broker_bin()
        .args(["check", "--config"])
        .arg(good.path("broker.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn start_up_errors_are_clear_and_exit_2() {
    let dir = BrokerDir::new("");
    // The port is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let text = std::fs::read_to_string(dir.path("broker.toml")).unwrap();
    let busy = dir.path("busy.toml");
    std::fs::write(
        &busy,
        text.replacen(
            "bind = \"127.0.0.1:0\"",
            &format!("bind = \"127.0.0.1:{port}\""),
            1,
        ),
    )
    .unwrap();
    let out = broker_bin()
        .args(["run", "--config"])
        .arg(&busy)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot bind 127.0.0.1:{port}")),
        "{stderr}"
    );

    // The data_dir cannot be created.
    std::fs::write(dir.path("not-a-dir"), "a file").unwrap();
    let blocked = dir.path("blocked.toml");
    std::fs::write(
        &blocked,
        text.replace("data_dir = \"data\"", "data_dir = \"not-a-dir/data\""),
    )
    .unwrap();
    let out = broker_bin()
        .args(["run", "--config"])
        .arg(&blocked)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("data_dir") && stderr.contains("not-a-dir"),
        "{stderr}"
    );
}

#[test]
fn hash_password_reads_stdin_and_prints_an_argon2_hash() {
    use std::io::Write;
    let mut child = broker_bin()
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap();
    let secret = portico_broker::auth::Secret::hash(hash.trim()).unwrap();
    assert!(secret.verify("s3cret"));
    assert!(!hash.contains("s3cret"));
}

/// Every broker config in `config/` checks out (with dev certificates made
/// where the examples expect them).
#[test]
fn every_example_broker_config_is_valid() {
    let root = tempfile::tempdir().unwrap();
    portico_core::certs::write_dev_certs(
        &root.path().join("certs/dev"),
        &portico_core::certs::CertRequest {
            domains: vec!["mq.localhost".into()],
            brokers: vec!["broker1".into(), "broker2".into(), "broker3".into()],
            ips: vec!["127.0.0.1".parse().unwrap()],
        },
    )
    .unwrap();
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let mut checked = 0;
    let mut folders = vec![std::path::PathBuf::new()];
    while let Some(folder) = folders.pop() {
        std::fs::create_dir_all(root.path().join("config").join(&folder)).unwrap();
        for entry in std::fs::read_dir(source.join(&folder)).unwrap() {
            let path = entry.unwrap().path();
            let relative = folder.join(path.file_name().unwrap());
            if path.is_dir() {
                folders.push(relative);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if !(path.extension().is_some_and(|e| e == "toml") && text.contains("[broker]")) {
                continue;
            }
            let copy = root.path().join("config").join(&relative);
            std::fs::write(&copy, &text).unwrap();
            if let Err(e) = portico_broker::config::BrokerConfig::load(&copy) {
                panic!("{}:\n{e}", path.display());
            }
            checked += 1;
            // An unknown key in any table is rejected at its line.
            let lines: Vec<&str> = text.lines().collect();
            let headers = lines
                .iter()
                .enumerate()
                .filter(|(_, l)| l.trim_start().starts_with('['));
            for (i, _) in headers {
                let mut edited = lines.clone();
                edited.insert(i + 1, "bogus_key = 1");
                let Err(portico_core::diagnostics::ConfigError::Invalid { diagnostics }) =
                    portico_broker::config::BrokerConfig::parse(&edited.join("\n"), &copy)
                else {
                    panic!(
                        "{}: bogus_key after line {} accepted",
                        path.display(),
                        i + 1
                    );
                };
                assert!(
                    diagnostics
                        .iter()
                        .any(|d| d.line == i + 2 && d.message.contains("bogus_key")),
                    "{diagnostics:?}"
                );
            }
        }
    }
    assert!(checked >= 18, "only {checked} broker configs found");
}

/// The fields serde accepts in one broker table, from its "unknown field" error.
fn broker_fields(toml: &str) -> std::collections::BTreeSet<String> {
    let err = portico_broker::config::BrokerConfig::parse(toml, std::path::Path::new("b.toml"))
        .unwrap_err()
        .to_string();
    let line = err
        .lines()
        .find(|l| l.contains("unknown field `bogus_key`"))
        .unwrap_or_else(|| panic!("no unknown-field error in:\n{err}"));
    line.split("expected")
        .nth(1)
        .unwrap_or_default()
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_broker_key_is_documented_and_every_documented_key_exists() {
    let mut all = std::collections::BTreeSet::new();
    for table in [
        "[broker]",
        "[console]",
        "[limits]",
        "[ha]",
        "[[transport]]",
        "[[user]]",
        "[[authorization]]",
        "[[network_connector]]",
        "[[policy]]",
    ] {
        all.extend(broker_fields(&format!("{table}\nbogus_key = 1\n")));
    }
    let reference =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/README.md"))
            .unwrap();
    let broker = reference
        .split("# Broker configuration reference")
        .nth(1)
        .expect("a broker section");
    let documented: std::collections::BTreeSet<String> = broker
        .lines()
        .filter(|l| l.starts_with("| `"))
        .flat_map(|row| {
            let first = row.split('|').nth(1).unwrap_or_default().to_owned();
            first
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    for field in &all {
        assert!(
            documented.contains(field),
            "`{field}` is not documented in config/README.md"
        );
    }
    for key in &documented {
        assert!(
            all.contains(key),
            "config/README.md documents `{key}`, which no broker table accepts"
        );
    }
}
