//! `portico demo` (what `cargo run --release` runs): it reports ready,
//! clients get through its front door with the printed URL, and the
//! printed failover works: kill the active broker, nothing is lost.
//!
//! The demo binds its documented fixed ports (61617, 9090, 61614, 8162…).

#![cfg(feature = "demo")]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How often a stopping demo is checked for having exited.
const EXIT_POLL: Duration = Duration::from_millis(50);

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        for _ in 0..100 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(EXIT_POLL);
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_through_its_front_door_and_fails_over() {
    // A checkout without certificates: the demo makes them.
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("config")).unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/portico.toml"),
        root.path().join("config/portico.toml"),
    )
    .unwrap();
    let mut child = Running(
        Command::new(env!("CARGO_BIN_EXE_portico"))
            .current_dir(root.path())
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the demo never got ready");
        if line.contains("portico demo ready") {
            break;
        }
    }
    let stdout = child.0.stdout.take().unwrap();
    let banner: Vec<String> = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .take_while(|l| !l.starts_with("Logs:"))
        .collect();
    let url = banner
        .iter()
        .find_map(|l| {
            l.split("--broker-url '")
                .nth(1)
                .and_then(|r| r.split('\'').next())
        })
        .expect("no producer command printed")
        .to_owned();
    let active_pid = banner
        .iter()
        .find(|l| l.starts_with("broker1-a"))
        .and_then(|l| l.rsplit(' ').next())
        .expect("no pid for broker1-a")
        .to_owned();
    // The README's client snippets, run as a user runs them (from the
    // repository, which here is the demo's folder).
    let snippets = readme_snippets("python");
    assert!(!snippets.is_empty(), "the README has a Python snippet");
    for code in &snippets {
        let output = Command::new("python3")
            .arg("-c")
            .arg(code)
            .current_dir(root.path())
            .output()
            .expect("python3 with stomp.py");
        assert!(
            output.status.success(),
            "the README snippet failed:\n{code}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        // The durable subscriber gets what was published while it was away.
        if code.contains("activemq.subscriptionName") {
            let printed = String::from_utf8_lossy(&output.stdout);
            assert!(printed.contains("price 1"), "{code}\nprinted: {printed}");
        }
    }
    // The others each send one message to MyQueue.
    let to_my_queue = snippets
        .iter()
        .filter(|code| code.contains("/queue/MyQueue"))
        .count() as u64;
    let readme_queue = portico_broker::tools::Connection {
        broker_url: url.clone(),
        user: None,
        password: None,
        destination: "queue://MyQueue".into(),
        ca: Some(root.path().join("certs/dev/ca.crt")),
    };
    let got = portico_broker::tools::consume(&portico_broker::tools::ConsumerArgs {
        connection: readme_queue,
        message_count: to_my_queue,
        receive_timeout: Duration::from_secs(10),
        selector: None,
    })
    .await
    .unwrap();
    assert_eq!(
        got.unique, to_my_queue,
        "what the README's snippets sent: {got}"
    );

    let connection = portico_broker::tools::Connection {
        broker_url: url.clone(),
        user: None,
        password: None,
        destination: "queue://DemoQueue".into(),
        ca: Some(root.path().join("certs/dev/ca.crt")),
    };
    // The printed producer, with the active broker killed part-way.
    let producer = {
        let args = portico_broker::tools::ProducerArgs {
            connection: connection.clone(),
            persistent: true,
            message_size: 1000,
            message_count: 5000,
            sleep: Duration::ZERO,
            headers: Vec::new(),
        };
        tokio::spawn(async move { portico_broker::tools::produce(&args).await })
    };
    // Kill the active broker once it has taken part of the stream.
    common::wait_for("the producer's progress on broker1-a", || async {
        enqueued_on_broker1_a() >= 500
    })
    .await;
    assert!(Command::new("kill")
        .args(["-KILL", &active_pid])
        .status()
        .unwrap()
        .success());
    // The demo starts the killed node again, as the pair's new standby.
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the demo never restarted broker1-a");
        if line.contains("broker1-a started again") {
            break;
        }
    }
    let sent = tokio::time::timeout(Duration::from_secs(60), producer)
        .await
        .expect("the producer never finished")
        .unwrap()
        .expect("the producer failed");
    assert_eq!(sent.sent, 5000);
    let received = portico_broker::tools::consume(&portico_broker::tools::ConsumerArgs {
        connection,
        message_count: 5000,
        receive_timeout: Duration::from_secs(10),
        selector: None,
    })
    .await
    .unwrap();
    assert_eq!((received.unique, received.missing), (5000, 0), "{received}");

    // ActiveMQ's own commands, as printed, through the front door's
    // OpenWire listener to the pair (broker1-b active now).
    let openwire: Vec<String> = banner
        .iter()
        .filter_map(|l| l.trim().strip_prefix("$AMQ "))
        .map(|l| l.replace('\'', ""))
        .collect();
    assert_eq!(openwire.len(), 2, "{banner:?}");
    let (base, ca) = (
        root.path().join("activemq"),
        root.path().join("certs/dev/ca.crt"),
    );
    for (command, expect) in openwire.iter().zip(["Produced: 1000", "Consumed: 1000"]) {
        let args: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
        let (base, ca) = (base.clone(), ca.clone());
        let out = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            portico_test_support::activemq(&base, &ca, &args)
        })
        .await
        .unwrap();
        assert!(out.contains(expect), "{command}: {out}");
    }
}

/// Messages broker1-a (console 127.0.0.1:8162) accepted for DemoQueue.
fn enqueued_on_broker1_a() -> u64 {
    use std::io::{Read, Write};
    let Ok(mut tcp) = std::net::TcpStream::connect("127.0.0.1:8162") else {
        return 0;
    };
    let _ = tcp.write_all(b"GET /api/queues HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = tcp.read_to_string(&mut out);
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let queues: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    queues
        .as_array()
        .and_then(|qs| qs.iter().find(|q| q["name"] == "DemoQueue"))
        .and_then(|q| q["enqueued"].as_u64())
        .unwrap_or(0)
}

/// The bodies of the README's fenced code blocks in `language`.
fn readme_snippets(language: &str) -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let fence = format!("```{language}\n");
    readme
        .split(fence.as_str())
        .skip(1)
        .filter_map(|rest| rest.split_once("```").map(|(code, _)| code.to_owned()))
        .collect()
}
