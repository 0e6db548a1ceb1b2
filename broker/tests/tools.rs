//! `portico-broker producer` and `consumer` as a user runs them: what the
//! consumer reports is what the broker saw acknowledged.

mod common;

use std::time::Duration;

use common::*;
use portico_broker::tools::{consume, produce, Connection, ConsumerArgs, ProducerArgs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_stops_part_way_loses_no_acknowledgement() {
    let dir = BrokerDir::new("");
    let broker = dir.start().await;
    let console = broker.console_addr().unwrap();
    let connection = Connection {
        broker_url: format!("tcp://{}", broker.transport_addr("stomp").unwrap()),
        user: None,
        password: None,
        destination: "queue://half".into(),
        ca: None,
    };
    let sent = produce(&ProducerArgs {
        connection: connection.clone(),
        persistent: true,
        message_size: 100,
        message_count: 2000,
        sleep: Duration::ZERO,
        headers: Vec::new(),
    })
    .await
    .unwrap();
    assert_eq!(sent.sent, 2000);
    // Three consumers in turn, each taking a share and stopping with
    // prefetched messages in hand.
    for round in 1..=3u64 {
        let received = consume(&ConsumerArgs {
            connection: connection.clone(),
            message_count: 500,
            receive_timeout: Duration::from_secs(10),
            selector: None,
        })
        .await
        .unwrap();
        assert_eq!((received.unique, received.missing), (500, 0), "{received}");
        let figures = || async {
            let queues: serde_json::Value =
                serde_json::from_str(&http_get(console, "/api/queues").await).unwrap();
            let q = &queues[0];
            (
                q["pending"].as_u64().unwrap(),
                q["dequeued"].as_u64().unwrap(),
                q["consumers"].as_u64().unwrap(),
            )
        };
        // Once the consumer is gone, the broker holds exactly what was not
        // acknowledged: its unacknowledged prefetch went back to the queue.
        wait_for("the consumer's session to end", || async {
            figures().await.2 == 0
        })
        .await;
        assert_eq!(
            figures().await,
            (2000 - 500 * round, 500 * round, 0),
            "after consumer {round}"
        );
    }
    broker.shutdown(Duration::from_secs(1)).await;
}

/// A failover URL with a wrong port does not retry in silence: each failed
/// round is logged (at a bounded rate) with what went wrong.
#[test]
fn a_failover_url_that_reaches_nothing_says_so() {
    use std::io::{BufRead, BufReader};
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut consumer = std::process::Command::new(env!("CARGO_BIN_EXE_portico-broker"))
        .args([
            "consumer",
            "--broker-url",
            &format!("failover:(tcp://127.0.0.1:{port})?initialReconnectDelay=10"),
            "--destination",
            "queue://nowhere",
        ])
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(consumer.stderr.take().unwrap());
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut line = None;
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(l) if l.contains("cannot reach the broker") => {
                line = Some(l);
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let _ = consumer.kill();
    let _ = consumer.wait();
    let line = line.expect("no log line about the failed attempts");
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    assert!(line.contains("attempt=1"), "{line}");
}

/// A broker that floods the producer with MESSAGEs it never asked for
/// cannot fill the producer's memory: they are not kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_broker_cannot_fill_the_producer() {
    use portico_broker::stomp::{decode, Command, Decoded, Frame, Limits};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (at_disconnect, disconnecting) = tokio::sync::oneshot::channel::<()>();
    let (go_on, may_finish) = tokio::sync::oneshot::channel::<()>();
    let fake = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let flood = Frame::new(Command::Message)
            .header("destination", "/queue/x")
            .header("message-id", "m")
            .header("subscription", "none")
            .body(vec![b'f'; 256 * 1024])
            .to_bytes();
        let (mut buf, mut chunk) = (Vec::new(), vec![0u8; 64 * 1024]);
        let (mut at_disconnect, mut may_finish) = (Some(at_disconnect), Some(may_finish));
        loop {
            let n = tcp.read(&mut chunk).await.unwrap();
            if n == 0 {
                return;
            }
            buf.extend_from_slice(&chunk[..n]);
            while let Some(Decoded::Frame(f)) = decode(&mut buf, &Limits::default()).unwrap() {
                let mut out = Vec::new();
                match f.command {
                    Command::Connect => {
                        Frame::new(Command::Connected)
                            .header("version", "1.2")
                            .encode(&mut out);
                    }
                    Command::Send => {
                        // Two unasked-for MESSAGEs of 256 KiB before each receipt.
                        out.extend_from_slice(&flood);
                        out.extend_from_slice(&flood);
                        let id = f.get("receipt").unwrap().to_owned();
                        Frame::new(Command::Receipt)
                            .header("receipt-id", id)
                            .encode(&mut out);
                    }
                    Command::Disconnect => {
                        at_disconnect.take().unwrap().send(()).unwrap();
                        may_finish.take().unwrap().await.unwrap();
                        let id = f.get("receipt").unwrap().to_owned();
                        Frame::new(Command::Receipt)
                            .header("receipt-id", id)
                            .encode(&mut out);
                    }
                    _ => {}
                }
                tcp.write_all(&out).await.unwrap();
            }
        }
    });
    let mut producer = std::process::Command::new(env!("CARGO_BIN_EXE_portico-broker"))
        .args([
            "producer",
            "--broker-url",
            &format!("tcp://{addr}"),
            "--destination",
            "queue://x",
            "--message-count",
            "1000",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::timeout(DEADLINE * 3, disconnecting)
        .await
        .expect("the producer never finished")
        .unwrap();
    let (_, peak) = hostile::memory_kib(producer.id());
    go_on.send(()).unwrap();
    let status = producer.wait().unwrap();
    fake.await.unwrap();
    println!("producer flooded with 500 MiB of MESSAGEs: peak {peak} KiB");
    assert!(status.success());
    assert!(peak < 64 * 1024, "the producer peaked at {peak} KiB");
}
