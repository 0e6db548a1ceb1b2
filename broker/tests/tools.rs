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
