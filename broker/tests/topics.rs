//! Topic subscribers are judged by their lag, not by the size of one
//! message: subscribers that read get every message however large (within
//! the frame size) or however bursty; one that stopped reading is
//! disconnected, and nobody else notices.

mod common;

use std::time::Duration;

use common::*;
use portico_broker::stomp::{Command, Frame};

/// A subscriber with a small socket receive buffer: it reads, but the
/// broker cannot push much ahead of it.
async fn subscriber(addr: std::net::SocketAddr, topic: &str) -> RawClient {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut c = RawClient::connect_over(socket.connect(addr).await.unwrap()).await;
    c.send(
        &Frame::new(Command::Subscribe)
            .header("destination", topic)
            .header("id", "s")
            .header("receipt", "r"),
    )
    .await;
    assert_eq!(c.next().await.unwrap().command, Command::Receipt);
    c
}

/// Publishes `bodies` to `topic` from a fresh connection, each receipted.
async fn publish(addr: std::net::SocketAddr, topic: &str, bodies: Vec<Vec<u8>>) {
    let mut producer = RawClient::connect(addr).await;
    let count = bodies.len();
    for (i, body) in bodies.into_iter().enumerate() {
        producer
            .send(
                &Frame::new(Command::Send)
                    .header("destination", topic)
                    .header("n", i.to_string())
                    .header("receipt", i.to_string())
                    .body(body),
            )
            .await;
    }
    for _ in 0..count {
        let f = producer.next().await.expect("the producer was closed");
        assert_eq!(f.command, Command::Receipt, "{f:?}");
    }
}

/// Every subscriber reads `count` messages of `size` bytes, in order.
async fn read_all(subscribers: Vec<RawClient>, count: usize, size: usize) {
    let readers = subscribers.into_iter().map(|mut s| {
        tokio::spawn(async move {
            for i in 0..count {
                let f = s.next().await.expect("a reading subscriber was closed");
                assert_eq!(f.command, Command::Message, "{:?}", f.get("message"));
                assert_eq!(
                    (f.get("n"), f.body.len()),
                    (Some(i.to_string().as_str()), size)
                );
            }
        })
    });
    for reader in readers.collect::<Vec<_>>() {
        reader.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_large_topic_message_reaches_every_reading_subscriber() {
    let dir = BrokerDir::new("[limits]\nmax_frame_size = 33554432\n");
    let broker = dir.start().await;
    let addr = broker.transport_addr("stomp").unwrap();
    let mut subscribers = Vec::new();
    for _ in 0..3 {
        subscribers.push(subscriber(addr, "/topic/big").await);
    }
    let size = 20 * 1024 * 1024;
    let reading = tokio::spawn(read_all(subscribers, 1, size));
    publish(addr, "/topic/big", vec![vec![b'b'; size]]).await;
    reading.await.unwrap();
    broker.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_large_topic_messages_reaches_every_reading_subscriber() {
    let dir = BrokerDir::new("");
    let broker = dir.start().await;
    let addr = broker.transport_addr("stomp").unwrap();
    let mut subscribers = Vec::new();
    for _ in 0..2 {
        subscribers.push(subscriber(addr, "/topic/burst").await);
    }
    // Eight messages as large as the default frame size allows: 32 MiB at once.
    let size = 4 * 1024 * 1024 - 4096;
    let reading = tokio::spawn(read_all(subscribers, 8, size));
    publish(addr, "/topic/burst", vec![vec![b'x'; size]; 8]).await;
    reading.await.unwrap();
    broker.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_subscriber_that_reads_nothing_is_dropped_not_buffered() {
    let dir = BrokerDir::new("");
    let broker = dir.start().await;
    let addr = broker.transport_addr("stomp").unwrap();
    let mut stuck = subscriber(addr, "/topic/firehose").await;
    let mut reader = subscriber(addr, "/topic/firehose").await;
    // Publish 1 KiB messages until the reader saw the stuck one dropped,
    // bounded in count; the reader must get every one.
    let max = 400_000;
    let body = vec![b'x'; 1024];
    let mut producer = RawClient::connect(addr).await;
    let console = broker.console_addr().unwrap();
    let mut sent = 0;
    let mut got = 0;
    while sent < max {
        for _ in 0..1000 {
            producer
                .send(
                    &Frame::new(Command::Send)
                        .header("destination", "/topic/firehose")
                        .body(body.clone()),
                )
                .await;
            sent += 1;
        }
        // Keep the reader up to date, so it is never the slow one.
        while got < sent {
            let f = reader
                .next()
                .await
                .expect("the reading subscriber was closed");
            assert_eq!(f.command, Command::Message);
            got += 1;
        }
        let topics: serde_json::Value =
            serde_json::from_str(&http_get(console, "/api/topics").await).unwrap();
        if topics[0]["subscribers"] == 1 {
            break;
        }
    }
    assert!(sent < max, "the stuck subscriber was never dropped");
    // The stuck subscriber, reading at last, finds an ERROR and the end.
    let frames = stuck.until_closed().await;
    let error = frames
        .iter()
        .find(|f| f.command == Command::Error)
        .unwrap_or_else(|| panic!("no ERROR for the stuck subscriber"));
    assert!(
        error.get("message").unwrap().contains("slow consumer"),
        "{error:?}"
    );
    broker.shutdown(Duration::from_secs(1)).await;
}
