//! Bad input gets an ERROR frame and/or a closed connection, costs bounded
//! memory, and no other client notices.

mod common;

use std::time::Duration;

use common::*;
use portico_broker::stomp::{Command, Frame};

/// A client that keeps working while the others misbehave.
async fn healthy_roundtrip(addr: std::net::SocketAddr, n: usize) {
    let mut c = RawClient::connect(addr).await;
    c.send(
        &Frame::new(Command::Subscribe)
            .header("destination", "/queue/ok")
            .header("id", "s"),
    )
    .await;
    c.send(
        &Frame::new(Command::Send)
            .header("destination", "/queue/ok")
            .header("n", n.to_string())
            .body("fine"),
    )
    .await;
    let m = c.next().await.expect("message");
    assert_eq!(m.command, Command::Message);
    assert_eq!(m.get("n"), Some(n.to_string().as_str()));
}

fn error_of(frames: &[Frame]) -> &Frame {
    frames
        .iter()
        .find(|f| f.command == Command::Error)
        .unwrap_or_else(|| panic!("no ERROR frame in {frames:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_bad_input_gets_an_error_and_others_carry_on() {
    let dir = BrokerDir::new(
        "[limits]\nmax_frame_size = 65536\nmax_headers = 16\nmax_header_length = 1024\nconnect_timeout = \"300ms\"\n",
    );
    let broker = dir.start().await;
    let addr = broker.transport_addr("stomp").unwrap();
    let mut bystander = RawClient::connect(addr).await;
    bystander
        .send(
            &Frame::new(Command::Subscribe)
                .header("destination", "/topic/bystander")
                .header("id", "b"),
        )
        .await;

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "malformed header",
            b"SEND\ndestination:/queue/a\nno colon here\n\nx\0".to_vec(),
            "malformed",
        ),
        ("unknown command", b"FROBNICATE\n\n\0".to_vec(), "malformed"),
        (
            "too many headers",
            {
                let mut f = b"SEND\ndestination:/queue/a\n".to_vec();
                for i in 0..40 {
                    f.extend_from_slice(format!("h{i}:v\n").as_bytes());
                }
                f.extend_from_slice(b"\n\0");
                f
            },
            "headers",
        ),
        (
            "header too long",
            {
                let mut f = b"SEND\ndestination:/queue/a\nbig:".to_vec();
                f.extend(std::iter::repeat_n(b'x', 5000));
                f.extend_from_slice(b"\n\n\0");
                f
            },
            "header line longer",
        ),
        (
            "body over the frame limit",
            {
                let mut f = b"SEND\ndestination:/queue/a\ncontent-length:1000000\n\n".to_vec();
                f.extend(std::iter::repeat_n(b'x', 70_000));
                f
            },
            "larger than",
        ),
        (
            "body longer than content-length",
            b"SEND\ndestination:/queue/a\ncontent-length:3\n\nabcdef\0".to_vec(),
            "content-length",
        ),
        (
            "malformed destination",
            b"SEND\ndestination:queue-without-slash\n\nx\0".to_vec(),
            "destination",
        ),
        (
            "missing destination",
            b"SEND\n\nx\0".to_vec(),
            "destination",
        ),
    ];
    for (i, (what, bytes, needle)) in cases.into_iter().enumerate() {
        let mut bad = RawClient::connect(addr).await;
        let _ = bad.send_raw(&bytes).await;
        let frames = bad.until_closed().await;
        let error = error_of(&frames);
        let text = format!(
            "{} {}",
            error.get("message").unwrap_or(""),
            String::from_utf8_lossy(&error.body)
        );
        assert!(text.contains(needle), "{what}: {text}");
        healthy_roundtrip(addr, i).await;
    }

    // A client that never sends CONNECT is closed after the connect timeout.
    let mut silent = RawClient::open(addr).await;
    let started = std::time::Instant::now();
    let frames = silent.until_closed().await;
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(
        error_of(&frames).get("message"),
        Some("no CONNECT frame in time")
    );

    // A first frame that is not CONNECT.
    let mut rude = RawClient::open(addr).await;
    rude.send(&Frame::new(Command::Send).header("destination", "/queue/a"))
        .await;
    let frames = rude.until_closed().await;
    assert!(error_of(&frames)
        .get("message")
        .unwrap()
        .contains("expected CONNECT"));

    // An ERROR names the receipt of the frame that caused it.
    let mut receipted = RawClient::connect(addr).await;
    receipted
        .send(
            &Frame::new(Command::Send)
                .header("destination", "nowhere")
                .header("receipt", "r-7"),
        )
        .await;
    let frames = receipted.until_closed().await;
    assert_eq!(error_of(&frames).get("receipt-id"), Some("r-7"));

    // Every refusal was counted.
    let summary = http_get(broker.console_addr().unwrap(), "/api/broker").await;
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert!(
        summary["protocol_errors"].as_u64().unwrap() >= 11,
        "{summary}"
    );

    // The bystander saw nothing and still works.
    bystander
        .send(
            &Frame::new(Command::Send)
                .header("destination", "/topic/bystander")
                .body("still here"),
        )
        .await;
    let m = bystander.next().await.unwrap();
    assert_eq!(m.body, b"still here");
    broker.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_versions_and_bad_credentials_are_refused() {
    let hash = portico_broker::auth::hash_password("right").unwrap();
    let dir = BrokerDir::new(&format!(
        "[[user]]\nname = \"app\"\npassword_hash = \"{hash}\"\ngroups = [\"apps\"]\n\n\
         [[authorization]]\ndestination = \"queue://APP.>\"\nread = [\"apps\"]\nwrite = [\"apps\"]\n"
    ));
    let broker = dir.start().await;
    let addr = broker.transport_addr("stomp").unwrap();

    let mut old = RawClient::open(addr).await;
    old.send(&Frame::new(Command::Connect).header("accept-version", "2.0"))
        .await;
    let frames = old.until_closed().await;
    assert!(String::from_utf8_lossy(&error_of(&frames).body).contains("1.0,1.1,1.2"));

    let mut wrong = RawClient::open(addr).await;
    wrong
        .send(
            &Frame::new(Command::Connect)
                .header("accept-version", "1.2")
                .header("login", "app")
                .header("passcode", "wrong"),
        )
        .await;
    let frames = wrong.until_closed().await;
    assert!(error_of(&frames)
        .get("message")
        .unwrap()
        .contains("authentication"));

    let mut app = RawClient::open(addr).await;
    app.send(
        &Frame::new(Command::Connect)
            .header("accept-version", "1.2")
            .header("login", "app")
            .header("passcode", "right"),
    )
    .await;
    assert_eq!(app.next().await.unwrap().command, Command::Connected);
    app.send(
        &Frame::new(Command::Send)
            .header("destination", "/queue/APP.orders")
            .header("receipt", "ok"),
    )
    .await;
    assert_eq!(app.next().await.unwrap().command, Command::Receipt);
    // Not authorized: an ERROR, and the message goes nowhere.
    app.send(
        &Frame::new(Command::Send)
            .header("destination", "/queue/OTHER")
            .header("receipt", "no"),
    )
    .await;
    let frames = app.until_closed().await;
    let error = error_of(&frames);
    assert!(
        error.get("message").unwrap().contains("not authorized"),
        "{error:?}"
    );
    assert_eq!(error.get("receipt-id"), Some("no"));
    let console = broker.console_addr().unwrap();
    let queues = http_get(console, "/api/queues").await;
    assert!(!queues.contains("OTHER"), "{queues}");
    broker.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_slows_its_producer_and_loses_nothing() {
    let dir = BrokerDir::new("[limits]\nqueue_memory = 65536\n");
    let broker = dir.start().await;
    let addr = broker.transport_addr("stomp").unwrap();
    let mut producer = RawClient::connect(addr).await;
    let total = 400;
    for i in 0..total {
        producer
            .send(
                &Frame::new(Command::Send)
                    .header("destination", "/queue/full")
                    .header("receipt", i.to_string())
                    .body(vec![b'x'; 1024]),
            )
            .await;
    }
    // With no consumer the queue fills: receipts stop well short of all.
    let mut receipts = 0;
    while receipts < total {
        match tokio::time::timeout(Duration::from_millis(500), producer.next()).await {
            Ok(Some(f)) if f.command == Command::Receipt => receipts += 1,
            Ok(other) => panic!("{other:?}"),
            Err(_) => break,
        }
    }
    assert!(receipts < total, "the producer was never held back");
    // A consumer drains the queue: the producer is let through, nothing is lost.
    let mut consumer = RawClient::connect(addr).await;
    consumer
        .send(
            &Frame::new(Command::Subscribe)
                .header("destination", "/queue/full")
                .header("id", "c"),
        )
        .await;
    let mut got = 0;
    while got < total {
        let f = consumer.next().await.expect("consumer closed");
        assert_eq!(f.command, Command::Message);
        got += 1;
    }
    while receipts < total {
        let f = producer.next().await.expect("producer closed");
        assert_eq!(f.command, Command::Receipt);
        receipts += 1;
    }
    broker.shutdown(Duration::from_secs(1)).await;
}

/// A queue consumer (auto ack) that stops reading holds at most about a
/// megabyte of messages in its connection's outbox: the rest stay in the
/// queue, where the queue's memory limit covers them, and all of them
/// arrive once it reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_consumer_pins_a_bounded_number_of_bytes_not_messages() {
    let dir = BrokerDir::new("");
    let broker = dir.start().await;
    let addr = broker.transport_addr("stomp").unwrap();
    let console = broker.console_addr().unwrap();
    // A small receive buffer, so little sits in the kernel.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut consumer = RawClient::connect_over(socket.connect(addr).await.unwrap()).await;
    consumer
        .send(
            &Frame::new(Command::Subscribe)
                .header("destination", "/queue/big")
                .header("id", "1")
                .header("receipt", "subscribed"),
        )
        .await;
    assert_eq!(consumer.next().await.unwrap().command, Command::Receipt);

    // 200 messages of 256 KiB (50 MiB) for a consumer that reads nothing.
    let total = 200;
    let mut producer = RawClient::connect(addr).await;
    let body = vec![b'm'; 256 * 1024];
    for i in 0..total {
        producer
            .send(
                &Frame::new(Command::Send)
                    .header("destination", "/queue/big")
                    .header("receipt", i.to_string())
                    .body(body.clone()),
            )
            .await;
        assert_eq!(producer.next().await.unwrap().command, Command::Receipt);
    }
    let pending = || async {
        let queues: serde_json::Value =
            serde_json::from_str(&http_get(console, "/api/queues").await).unwrap();
        queues[0]["pending"].as_u64().unwrap()
    };
    let held = pending().await;
    assert!(
        held >= 150,
        "only {held} of {total} stayed in the queue: the rest went to a connection that reads nothing"
    );
    // Reading again, every message arrives.
    for i in 0..total {
        let message = consumer
            .next()
            .await
            .unwrap_or_else(|| panic!("closed at {i}"));
        assert_eq!(
            (message.command, message.body.len()),
            (Command::Message, body.len())
        );
    }
    assert_eq!(pending().await, 0);
    broker.shutdown(Duration::from_secs(1)).await;
}
