//! Durability: persistent messages whose receipt arrived survive a SIGKILL
//! of the broker process; acknowledged ones are not delivered again.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command as Process, Stdio};
use std::sync::mpsc;

use common::*;
use portico_broker::stomp::{Command, Frame};

const MESSAGES: u64 = 10_000;

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the broker binary; returns it and its plain `stomp` address.
fn start(config: &Path) -> (Running, SocketAddr) {
    let mut running = Running(
        Process::new(env!("CARGO_BIN_EXE_portico-broker"))
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = running.0.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        let line = rx
            .recv_timeout(DEADLINE)
            .expect("the broker did not report its address");
        if line.contains("transport=stomp ") && line.contains("listening on ") {
            let addr = line
                .split("listening on ")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap();
            // Keep draining its log so it never blocks on a full pipe.
            std::thread::spawn(move || while rx.recv().is_ok() {});
            return (running, addr.parse().unwrap());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipted_messages_survive_sigkill_and_acked_ones_stay_gone() {
    let dir = BrokerDir::new("");
    let config = dir.path("broker.toml");
    let (broker, addr) = start(&config);

    // Produce with receipts; SIGKILL the broker part-way through.
    let kill_after = 2_000 + u64::from(std::process::id()) % 6_000;
    let producer = RawClient::connect(addr).await;
    let body = vec![b'x'; 1000];
    let mut receipted = HashSet::new();
    let (mut read, mut write) = producer.stream.into_split();
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        for seq in 1..=MESSAGES {
            let frame = Frame::new(Command::Send)
                .header("destination", "/queue/durable")
                .header("persistent", "true")
                .header("seq", seq.to_string())
                .header("receipt", seq.to_string())
                .body(body.clone());
            if write.write_all(&frame.to_bytes()).await.is_err() {
                break;
            }
        }
    });
    let mut killed = false;
    // Read receipts from the producer's connection.
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut broker = Some(broker);
    loop {
        use tokio::io::AsyncReadExt;
        match portico_broker::stomp::decode(&mut buf, &portico_broker::stomp::Limits::default()) {
            Ok(Some(portico_broker::stomp::Decoded::Frame(f))) => {
                if f.command == Command::Receipt {
                    receipted.insert(f.get("receipt-id").unwrap().parse::<u64>().unwrap());
                    if !killed && receipted.len() as u64 >= kill_after {
                        let pid = broker.as_ref().unwrap().0.id().to_string();
                        assert!(Process::new("kill")
                            .args(["-KILL", &pid])
                            .status()
                            .unwrap()
                            .success());
                        killed = true;
                    }
                }
                continue;
            }
            Ok(Some(_)) => continue,
            Ok(None) => {}
            Err(e) => panic!("{e}"),
        }
        let n = tokio::time::timeout(DEADLINE, read.read(&mut chunk))
            .await
            .expect("receipts stalled")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let _ = writer.await;
    assert!(
        killed,
        "the broker was not killed (only {} receipts)",
        receipted.len()
    );
    drop(broker.take());
    eprintln!(
        "{} receipts before SIGKILL at {kill_after}",
        receipted.len()
    );

    // Restart on the same data_dir and consume everything, acknowledging.
    let (broker, addr) = start(&config);
    let mut consumer = RawClient::connect(addr).await;
    consumer
        .send(
            &Frame::new(Command::Subscribe)
                .header("destination", "/queue/durable")
                .header("id", "c")
                .header("ack", "client-individual"),
        )
        .await;
    let mut delivered = HashSet::new();
    let mut duplicates = 0;
    while !receipted.is_subset(&delivered) {
        let frame = consumer
            .next()
            .await
            .expect("the broker closed the consumer");
        assert_eq!(frame.command, Command::Message, "{frame:?}");
        let seq: u64 = frame.get("seq").unwrap().parse().unwrap();
        if !delivered.insert(seq) {
            duplicates += 1;
        }
        consumer
            .send(&Frame::new(Command::Ack).header("id", frame.get("ack").unwrap()))
            .await;
    }
    let missing: Vec<_> = receipted.difference(&delivered).collect();
    assert!(
        missing.is_empty(),
        "{} receipted messages lost, e.g. {:?}",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );
    assert_eq!(duplicates, 0, "messages delivered twice in one run");
    // Messages stored but not yet receipted may also come back: fine. Drain them.
    consumer
        .send(&Frame::new(Command::Disconnect).header("receipt", "bye"))
        .await;
    let frames = consumer.until_closed().await;
    let extra = frames
        .iter()
        .filter(|f| f.command == Command::Message)
        .count();
    eprintln!(
        "{} delivered after restart ({} beyond the receipted)",
        delivered.len(),
        extra
    );
    drop(broker);

    // Everything acknowledged stays gone after another restart.
    let (_broker, addr) = start(&config);
    let mut late = RawClient::connect(addr).await;
    late.send(
        &Frame::new(Command::Subscribe)
            .header("destination", "/queue/durable")
            .header("id", "late")
            .header("ack", "client-individual"),
    )
    .await;
    late.send(
        &Frame::new(Command::Send)
            .header("destination", "/queue/durable")
            .header("seq", "marker")
            .header("receipt", "m"),
    )
    .await;
    let mut again = Vec::new();
    loop {
        let f = late.next().await.expect("closed");
        match f.command {
            Command::Receipt => continue,
            Command::Message if f.get("seq") == Some("marker") => break,
            Command::Message => again.push(f.get("seq").unwrap().to_owned()),
            _ => panic!("{f:?}"),
        }
    }
    let acked_again: Vec<_> = again
        .iter()
        .filter(|s| s.parse::<u64>().is_ok_and(|n| delivered.contains(&n)))
        .collect();
    assert!(
        acked_again.is_empty(),
        "acknowledged messages delivered again: {acked_again:?}"
    );
}
