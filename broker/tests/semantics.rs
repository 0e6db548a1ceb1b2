//! Delivery semantics ActiveMQ applications rely on, on the wire: the
//! redelivery policy and dead-letter queues, expiry.

mod common;

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use portico_broker::config::BrokerConfig;
use portico_broker::stomp::{Command, Frame};

const NODE: &str = r#"
[broker]
name = "semantics"
data_dir = "data"

[[transport]]
name = "stomp"
bind = "127.0.0.1:0"

[console]
bind = "127.0.0.1:0"

[[policy]]
destination = "queue://orders"
max_redeliveries = 2
redelivery_delay = "0s"
"#;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn send(client: &mut RawClient, destination: &str, body: &str, headers: &[(&str, &str)]) {
    let mut frame = Frame::new(Command::Send)
        .header("destination", destination)
        .header("receipt", "r");
    for &(name, value) in headers {
        frame = frame.header(name, value);
    }
    frame.body = body.as_bytes().to_vec();
    client.send(&frame).await;
    let receipt = client.next().await.expect("RECEIPT");
    assert_eq!(receipt.command, Command::Receipt, "{receipt:?}");
}

async fn subscribe(client: &mut RawClient, id: &str, destination: &str, ack: &str) {
    client
        .send(
            &Frame::new(Command::Subscribe)
                .header("destination", destination)
                .header("id", id)
                .header("ack", ack),
        )
        .await;
}

/// A new connection subscribed to `destination` (auto ack), once the
/// broker confirmed the subscription.
async fn subscribed(stomp: SocketAddr, destination: &str, id: &str) -> RawClient {
    let mut client = RawClient::connect(stomp).await;
    client
        .send(
            &Frame::new(Command::Subscribe)
                .header("destination", destination)
                .header("id", id)
                .header("receipt", "ready"),
        )
        .await;
    let receipt = client.next().await.expect("RECEIPT");
    assert_eq!(receipt.command, Command::Receipt, "{receipt:?}");
    client
}

async fn message(client: &mut RawClient) -> Frame {
    let frame = client.next().await.expect("a MESSAGE");
    assert_eq!(frame.command, Command::Message, "{frame:?}");
    frame
}

/// Sends a SEND with `header: value` on a new connection; the ERROR's
/// message.
async fn refused(stomp: SocketAddr, header: &str, value: &str) -> String {
    let mut client = RawClient::connect(stomp).await;
    let frame = match header {
        "destination" => Frame::new(Command::Send).header("destination", value),
        _ => Frame::new(Command::Send)
            .header("destination", "/queue/q")
            .header(header, value),
    };
    client.send(&frame).await;
    let error = client.next().await.expect("ERROR");
    assert_eq!(error.command, Command::Error, "{header}: {value}");
    error.get("message").unwrap_or_default().to_owned()
}

/// The console's figures of one queue (`/api/queues`), 0 if it has none.
async fn figure(console: SocketAddr, queue: &str, name: &str) -> u64 {
    let (_, body) = http(console, "GET", "/api/queues", &[]).await;
    let queues: serde_json::Value = serde_json::from_str(&body).unwrap();
    queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == queue)
        .and_then(|q| q[name].as_u64())
        .unwrap_or(0)
}

/// A persistent message NACKed past `max_redeliveries` moves to
/// `ActiveMQ.DLQ` with ActiveMQ's headers, and a SIGKILL after the move
/// finds it there and only there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_refused_too_often_moves_to_the_dead_letter_queue_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let node = broker_node(dir.path(), "node", NODE, &[]);
    let stomp = node.address("transport=stomp addr=");
    let mut client = RawClient::connect(stomp).await;
    send(
        &mut client,
        "/queue/orders",
        "poison",
        &[("persistent", "true")],
    )
    .await;
    subscribe(&mut client, "s", "/queue/orders", "client-individual").await;
    for delivery in 1..=3 {
        let m = message(&mut client).await;
        assert_eq!(m.body, b"poison");
        assert_eq!(
            m.get("redelivered") == Some("true"),
            delivery > 1,
            "delivery {delivery}: {m:?}"
        );
        client
            .send(&Frame::new(Command::Nack).header("id", m.get("ack").unwrap()))
            .await;
    }
    subscribe(&mut client, "d", "/queue/ActiveMQ.DLQ", "client-individual").await;
    let dead = message(&mut client).await;
    assert_eq!(dead.body, b"poison");
    assert_eq!(dead.get("subscription"), Some("d"));
    assert_eq!(dead.get("original-destination"), Some("/queue/orders"));
    let cause = dead.get("dlqDeliveryFailureCause").unwrap_or_default();
    assert!(cause.contains("Delivery[3]"), "{cause}");
    assert_eq!(dead.get("persistent"), Some("true"));
    drop(client);
    let console = node.address("console listening on ");
    assert_eq!(figure(console, "orders", "dead_lettered").await, 1);

    // SIGKILL, then the same data folder: the dead letter is where it went.
    drop(node);
    let node = broker_node(dir.path(), "again", NODE, &[]);
    let stomp = node.address("transport=stomp addr=");
    let console = node.address("console listening on ");
    assert_eq!(figure(console, "orders", "pending").await, 0);
    assert_eq!(figure(console, "ActiveMQ.DLQ", "pending").await, 1);
    let mut client = RawClient::connect(stomp).await;
    subscribe(&mut client, "d", "/queue/ActiveMQ.DLQ", "auto").await;
    let dead = message(&mut client).await;
    assert_eq!(dead.body, b"poison");
    assert_eq!(dead.get("original-destination"), Some("/queue/orders"));
}

/// A message whose `expires` time passed is never delivered: one sent
/// already expired, and one that expires while it waits; both reach the
/// dead-letter queue (the default policy) without their expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_messages_are_never_delivered() {
    let dir = BrokerDir::new("");
    let broker = dir.start().await;
    let stomp = broker.transport_addr("stomp").unwrap();
    let console = broker.console_addr().unwrap();
    let mut client = RawClient::connect(stomp).await;
    let soon = (now_ms() + 300).to_string();
    let later = (now_ms() + 3_600_000).to_string();
    send(&mut client, "/queue/q", "stale", &[("expires", "1")]).await;
    send(&mut client, "/queue/q", "soon", &[("expires", &soon)]).await;
    send(&mut client, "/queue/q", "fresh", &[("expires", &later)]).await;
    // "soon" expires while it waits: the sweep takes it out.
    wait_for("two expired", || async {
        figure(console, "q", "expired").await == 2
    })
    .await;
    subscribe(&mut client, "s", "/queue/q", "auto").await;
    let m = message(&mut client).await;
    assert_eq!(m.body, b"fresh");
    assert_eq!(m.get("expires"), Some(later.as_str()));
    subscribe(&mut client, "d", "/queue/ActiveMQ.DLQ", "auto").await;
    let mut dead = Vec::new();
    for _ in 0..2 {
        let m = message(&mut client).await;
        assert_eq!(m.get("dlqDeliveryFailureCause"), Some("Message expired"));
        assert_eq!(m.get("expires"), None, "a dead letter does not expire");
        dead.push(String::from_utf8(m.body).unwrap());
    }
    dead.sort();
    assert_eq!(dead, ["soon", "stale"]);
    broker.shutdown(std::time::Duration::from_secs(1)).await;
}

/// An `expires` that is not a number is refused with the reason; the
/// broker goes on serving everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expires_that_is_not_a_number_is_refused() {
    let dir = BrokerDir::new("");
    let broker = dir.start().await;
    let stomp = broker.transport_addr("stomp").unwrap();
    let mut bystander = RawClient::connect(stomp).await;
    let reason = refused(stomp, "expires", "tomorrow").await;
    assert!(reason.contains("expires"), "{reason}");
    send(&mut bystander, "/queue/q", "fine", &[]).await;
    broker.shutdown(std::time::Duration::from_secs(1)).await;
}

/// Policy keys of the wrong type or out of range are config errors with
/// their line and column.
#[test]
fn bad_policies_are_config_errors_at_their_place() {
    let text = r#"[broker]
name = "b"
data_dir = "data"

[[policy]]
destination = "queue://a..b"
max_redeliveries = -1
redelivery_delay = "soon"
redelivery_backoff = 0.5
dead_letter = "topic://x"
expired_to_dead_letter = "yes"
"#;
    let err = BrokerConfig::parse(text, std::path::Path::new("broker.toml")).expect_err("refused");
    let report = err.to_string();
    // The whole table is refused by serde at its first wrong type.
    assert!(report.contains("broker.toml:"), "{report}");
    assert!(
        report.contains("expired_to_dead_letter") || report.contains("bool"),
        "{report}"
    );
    let text = text.replace("expired_to_dead_letter = \"yes\"\n", "");
    let report = BrokerConfig::parse(&text, std::path::Path::new("broker.toml"))
        .expect_err("refused")
        .to_string();
    for (line, what) in [
        (6, "invalid destination filter"),
        (7, "max_redeliveries"),
        (8, "soon"),
        (9, "redelivery_backoff"),
        (10, "dead_letter"),
    ] {
        assert!(
            report
                .lines()
                .any(|l| l.contains(&format!("broker.toml:{line}:")) && l.contains(what)),
            "line {line} ({what}) in:\n{report}"
        );
    }
}

/// `priority` 0–9: a queue delivers its waiting messages highest first
/// (first in first out within one); anything else is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priorities_are_delivered_first_and_bad_ones_refused() {
    let dir = BrokerDir::new("");
    let broker = dir.start().await;
    let stomp = broker.transport_addr("stomp").unwrap();
    let mut client = RawClient::connect(stomp).await;
    for (body, priority) in [("low", "0"), ("a", "4"), ("urgent", "9"), ("b", "4")] {
        send(&mut client, "/queue/p", body, &[("priority", priority)]).await;
    }
    send(&mut client, "/queue/p", "plain", &[]).await;
    subscribe(&mut client, "s", "/queue/p", "auto").await;
    let mut order = Vec::new();
    for _ in 0..5 {
        order.push(String::from_utf8(message(&mut client).await.body).unwrap());
    }
    assert_eq!(order, ["urgent", "a", "b", "plain", "low"]);
    for bad in ["10", "-1", "high"] {
        let reason = refused(stomp, "priority", bad).await;
        assert!(reason.contains("priority"), "{bad}: {reason}");
    }
    broker.shutdown(std::time::Duration::from_secs(1)).await;
}

/// A composite destination (`/queue/a,/topic/b`, as in ActiveMQ) sends one
/// message to each; one receipt covers them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_composite_destination_sends_one_message_to_each() {
    let dir = BrokerDir::new("");
    let broker = dir.start().await;
    let stomp = broker.transport_addr("stomp").unwrap();
    let mut listener = subscribed(stomp, "/topic/c.t", "t").await;
    let mut client = RawClient::connect(stomp).await;
    send(
        &mut client,
        "/queue/c.a, /queue/c.b,/topic/c.t",
        "to all",
        &[("persistent", "true")],
    )
    .await;
    let m = message(&mut listener).await;
    assert_eq!(
        (m.get("destination"), m.body.as_slice()),
        (Some("/topic/c.t"), &b"to all"[..])
    );
    for queue in ["/queue/c.a", "/queue/c.b"] {
        subscribe(&mut client, queue, queue, "auto").await;
        let m = message(&mut client).await;
        assert_eq!(m.get("destination"), Some(queue));
        assert_eq!(m.body, b"to all");
    }
    let too_many = vec!["/queue/x"; 65].join(",");
    let reason = refused(stomp, "destination", &too_many).await;
    assert!(reason.contains("at most 64"), "{reason}");
    broker.shutdown(std::time::Duration::from_secs(1)).await;
}

/// `JMSXGroupID`: every message of a group goes to the one consumer that
/// has the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_group_goes_to_one_consumer() {
    let dir = BrokerDir::new("");
    let broker = dir.start().await;
    let stomp = broker.transport_addr("stomp").unwrap();
    let mut consumers = Vec::new();
    for id in ["c1", "c2"] {
        consumers.push(subscribed(stomp, "/queue/g", id).await);
    }
    let mut producer = RawClient::connect(stomp).await;
    for i in 0..3 {
        for group in ["A", "B"] {
            let body = format!("{group}{i}");
            send(&mut producer, "/queue/g", &body, &[("JMSXGroupID", group)]).await;
        }
    }
    let mut seen = Vec::new();
    for c in &mut consumers {
        let mut got = String::new();
        for _ in 0..3 {
            let m = message(c).await;
            got.push_str(std::str::from_utf8(&m.body).unwrap());
            assert!(m.get("JMSXGroupID").is_some(), "{m:?}");
        }
        seen.push(got);
    }
    seen.sort();
    assert_eq!(seen, ["A0A1A2", "B0B1B2"]);
    broker.shutdown(std::time::Duration::from_secs(1)).await;
}

/// A message to `topic://VirtualTopic.X` reaches the topic's subscribers
/// and is copied to every queue `Consumer.<name>.VirtualTopic.X` that
/// exists, where each consumer group shares its copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_virtual_topic_fills_its_consumer_queues() {
    let dir = BrokerDir::new("");
    let broker = dir.start().await;
    let stomp = broker.transport_addr("stomp").unwrap();
    let mut queues = Vec::new();
    for (queue, id) in [
        ("/queue/Consumer.A.VirtualTopic.Orders", "a"),
        ("/queue/Consumer.B.VirtualTopic.Orders", "b"),
        ("/topic/VirtualTopic.Orders", "t"),
        ("/queue/Consumer.C.VirtualTopic.Other", "c"),
    ] {
        queues.push(subscribed(stomp, queue, id).await);
    }
    let mut producer = RawClient::connect(stomp).await;
    send(
        &mut producer,
        "/topic/VirtualTopic.Orders",
        "order 1",
        &[("persistent", "true")],
    )
    .await;
    for (c, destination) in queues.iter_mut().zip([
        "/queue/Consumer.A.VirtualTopic.Orders",
        "/queue/Consumer.B.VirtualTopic.Orders",
        "/topic/VirtualTopic.Orders",
    ]) {
        let m = message(c).await;
        assert_eq!(m.get("destination"), Some(destination));
        assert_eq!(m.body, b"order 1");
    }
    // The other virtual topic's queue got nothing: a receipt-backed probe.
    let other = &mut queues[3];
    other
        .send(&Frame::new(Command::Disconnect).header("receipt", "bye"))
        .await;
    let next = other.next().await.expect("RECEIPT");
    assert_eq!(next.command, Command::Receipt, "{next:?}");
    broker.shutdown(std::time::Duration::from_secs(1)).await;
}

/// `AMQ_SCHEDULED_DELAY`: a persistent scheduled message is held until its
/// time, across a SIGKILL of the broker; `AMQ_SCHEDULED_PERIOD` and
/// `AMQ_SCHEDULED_REPEAT` make one message per delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_messages_wait_for_their_time_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = broker_node(dir.path(), "node", NODE, &[]);
    let stomp = node.address("transport=stomp addr=");
    let mut client = RawClient::connect(stomp).await;
    let sent = now_ms();
    send(
        &mut client,
        "/queue/later",
        "after the restart",
        &[("persistent", "true"), ("AMQ_SCHEDULED_DELAY", "1500")],
    )
    .await;
    drop(client);
    drop(node);
    let node = broker_node(dir.path(), "again", NODE, &[]);
    let stomp = node.address("transport=stomp addr=");
    let mut client = RawClient::connect(stomp).await;
    subscribe(&mut client, "s", "/queue/later", "auto").await;
    let m = message(&mut client).await;
    assert_eq!(m.body, b"after the restart");
    assert!(now_ms() >= sent + 1500, "delivered before its time");

    let sent = now_ms();
    send(
        &mut client,
        "/queue/later",
        "tick",
        &[
            ("AMQ_SCHEDULED_DELAY", "100"),
            ("AMQ_SCHEDULED_PERIOD", "200"),
            ("AMQ_SCHEDULED_REPEAT", "2"),
        ],
    )
    .await;
    for n in 0..3 {
        let m = message(&mut client).await;
        assert_eq!(m.body, b"tick");
        assert!(now_ms() >= sent + 100 + 200 * n, "delivery {n} too early");
    }
    for (header, value) in [
        ("AMQ_SCHEDULED_DELAY", "soon"),
        ("AMQ_SCHEDULED_REPEAT", "1000"),
    ] {
        let reason = refused(stomp, header, value).await;
        assert!(reason.contains(header), "{reason}");
    }
}

/// `GET /metrics` on the console port: per-queue figures (dead letters and
/// expiry included) in the Prometheus text format, OpenMetrics on request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_serves_prometheus_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let node = broker_node(dir.path(), "node", NODE, &[]);
    let stomp = node.address("transport=stomp addr=");
    let console = node.address("console listening on ");
    let mut client = RawClient::connect(stomp).await;
    for i in 0..3 {
        send(&mut client, "/queue/metered", &format!("m{i}"), &[]).await;
    }
    send(&mut client, "/queue/metered", "stale", &[("expires", "1")]).await;
    send(
        &mut client,
        "/queue/kept",
        "stored",
        &[("persistent", "true")],
    )
    .await;
    send(&mut client, "/queue/orders", "poison", &[]).await;
    subscribe(&mut client, "s", "/queue/orders", "client-individual").await;
    for _ in 0..3 {
        let m = message(&mut client).await;
        client
            .send(&Frame::new(Command::Nack).header("id", m.get("ack").unwrap()))
            .await;
    }
    wait_for("the dead letter counted", || async {
        figure(console, "orders", "dead_lettered").await == 1
    })
    .await;
    let response = request(console, "GET", "/metrics", &[]).await;
    assert_eq!(response.status, 200);
    assert!(
        response.head.contains("text/plain; version=0.0.4"),
        "{}",
        response.head
    );
    let body = response.body;
    for line in [
        "# TYPE portico_broker_queue_enqueued_total counter",
        "portico_broker_queue_enqueued_total{queue=\"metered\"} 4",
        "portico_broker_queue_messages{queue=\"metered\"} 3",
        "portico_broker_queue_expired_total{queue=\"metered\"} 1",
        "portico_broker_queue_dead_lettered_total{queue=\"orders\"} 1",
        "portico_broker_queue_messages{queue=\"ActiveMQ.DLQ\"} 2",
        "portico_broker_connections{transport=\"stomp\"} 1",
        "portico_broker_queue_producers{queue=\"metered\"} 1",
        "# TYPE portico_broker_journal_fsync_seconds histogram",
    ] {
        assert!(body.lines().any(|l| l == line), "{line:?} not in:\n{body}");
    }
    let value = |name: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} not in:\n{body}"))
    };
    assert!(value("portico_broker_journal_bytes") > 0.0);
    assert!(value("portico_broker_journal_fsync_seconds_count") >= 1.0);
    assert!(!body.contains("# EOF"));
    let open = request(
        console,
        "GET",
        "/metrics",
        &[("accept", "application/openmetrics-text; version=1.0.0")],
    )
    .await;
    assert!(
        open.head.contains("application/openmetrics-text"),
        "{}",
        open.head
    );
    assert!(open.body.trim_end().ends_with("# EOF"));
    // The console's queue page shows both counters too.
    let (_, html) = http(console, "GET", "/queues", &[]).await;
    assert!(
        html.contains("<th>Expired since start</th><th>Dead-lettered since start</th>"),
        "{html}"
    );
    let orders = html
        .split("<tr>")
        .find(|row| row.contains(">orders</a></td>"))
        .and_then(|row| row.split("</tr>").next())
        .unwrap_or_default();
    assert!(orders.ends_with("<td>0</td><td>1</td>"), "{orders}");
}

/// Connects with a `client-id`; the broker's answer (CONNECTED or ERROR).
async fn connect_as(stomp: SocketAddr, client_id: &str) -> (RawClient, Frame) {
    let mut client = RawClient::open(stomp).await;
    client
        .send(
            &Frame::new(Command::Connect)
                .header("accept-version", "1.2")
                .header("host", "localhost")
                .header("client-id", client_id),
        )
        .await;
    let answer = client.next().await.expect("an answer to CONNECT");
    (client, answer)
}

/// Subscribes durably (`activemq.subscriptionName`) and waits for the
/// receipt; returns the messages that came before it, oldest last.
async fn subscribe_durably(
    client: &mut RawClient,
    name: &str,
    selector: Option<&str>,
) -> Vec<Frame> {
    let mut frame = Frame::new(Command::Subscribe)
        .header("destination", "/topic/news")
        .header("id", "d")
        .header("ack", "client-individual")
        .header("activemq.subscriptionName", name)
        .header("receipt", "subscribed");
    if let Some(selector) = selector {
        frame = frame.header("selector", selector);
    }
    client.send(&frame).await;
    let mut early = Vec::new();
    loop {
        let frame = client.next().await.expect("RECEIPT");
        match frame.command {
            Command::Receipt => break,
            Command::Message => early.insert(0, frame),
            _ => panic!("{frame:?}"),
        }
    }
    early
}

/// The next MESSAGE: one that came early, or one read now.
async fn next_message(client: &mut RawClient, early: &mut Vec<Frame>) -> Frame {
    match early.pop() {
        Some(frame) => frame,
        None => message(client).await,
    }
}

/// `/api/durable-subscriptions`.
async fn durables(console: SocketAddr) -> Vec<serde_json::Value> {
    let (_, body) = http(console, "GET", "/api/durable-subscriptions", &[]).await;
    serde_json::from_str::<serde_json::Value>(&body)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Publishes to `/topic/news`: persistent `a1`, `a2` and `b` (kind b,
/// which the selector leaves out), and non-persistent `a3`.
async fn publish_news(stomp: SocketAddr) {
    let mut publisher = RawClient::connect(stomp).await;
    for (body, kind, persistent) in [
        ("a1", "a", "true"),
        ("b", "b", "true"),
        ("a2", "a", "true"),
        ("a3", "a", "false"),
    ] {
        send(
            &mut publisher,
            "/topic/news",
            body,
            &[("kind", kind), ("persistent", persistent)],
        )
        .await;
    }
}

/// A durable subscriber (client-id + activemq.subscriptionName) gets the
/// persistent messages its selector chose that were published while it was
/// away, across a SIGKILL; its client id is one connection's at a time;
/// UNSUBSCRIBE with the name removes it and what it kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_subscriber_gets_what_was_published_while_it_was_away() {
    let dir = tempfile::tempdir().unwrap();
    let node = broker_node(dir.path(), "node", NODE, &[]);
    let stomp = node.address("transport=stomp addr=");
    let console = node.address("console listening on ");

    // A durable subscription needs a client id.
    let mut anonymous = RawClient::connect(stomp).await;
    anonymous
        .send(
            &Frame::new(Command::Subscribe)
                .header("destination", "/topic/news")
                .header("id", "d")
                .header("activemq.subscriptionName", "s"),
        )
        .await;
    let error = anonymous.next().await.expect("ERROR");
    assert_eq!(error.command, Command::Error);
    assert!(
        error.get("message").unwrap().contains("client-id"),
        "{error:?}"
    );

    let (mut app, connected) = connect_as(stomp, "app").await;
    assert_eq!(connected.command, Command::Connected, "{connected:?}");
    let (_, second) = connect_as(stomp, "app").await;
    assert_eq!(second.command, Command::Error, "{second:?}");
    assert!(second.get("message").unwrap().contains("already connected"));
    assert!(subscribe_durably(&mut app, "news", Some("kind = 'a'"))
        .await
        .is_empty());
    // Its hidden queue is not for clients.
    let hidden = refused(stomp, "destination", "/queue/$durable.0").await;
    assert!(hidden.contains("durable subscription"), "{hidden}");
    app.send(&Frame::new(Command::Disconnect).header("receipt", "bye"))
        .await;
    let _ = app.until_closed().await;

    publish_news(stomp).await;
    let listed = durables(console).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["client_id"], "app");
    assert_eq!(listed[0]["subscription"], "news");
    assert_eq!(listed[0]["topic"], "/topic/news");
    assert_eq!(listed[0]["active"], false);
    assert_eq!(listed[0]["pending"], 3);
    let (_, html) = http(console, "GET", "/durable", &[]).await;
    assert!(html.contains("news") && html.contains("offline"), "{html}");
    let (_, queues) = http(console, "GET", "/api/queues", &[]).await;
    assert!(!queues.contains("$durable"), "{queues}");

    // SIGKILL: the persistent ones it chose are kept, the other is not.
    drop(node);
    let node = broker_node(dir.path(), "again", NODE, &[]);
    let stomp = node.address("transport=stomp addr=");
    let console = node.address("console listening on ");
    let (mut app, connected) = connect_as(stomp, "app").await;
    assert_eq!(connected.command, Command::Connected, "{connected:?}");
    let mut early = subscribe_durably(&mut app, "news", Some("kind = 'a'")).await;
    for body in ["a1", "a2"] {
        let m = next_message(&mut app, &mut early).await;
        assert_eq!(String::from_utf8_lossy(&m.body), body);
        assert_eq!(m.get("destination"), Some("/topic/news"));
        assert_eq!(m.get("subscription"), Some("d"));
        assert_eq!(m.get("kind"), Some("a"));
        assert!(m.get("portico-durable-topic").is_none(), "{m:?}");
        app.send(&Frame::new(Command::Ack).header("id", m.get("ack").unwrap()))
            .await;
    }
    // While it is connected, it gets what is published at once.
    publish_news(stomp).await;
    for body in ["a1", "a2", "a3"] {
        let m = message(&mut app).await;
        assert_eq!(String::from_utf8_lossy(&m.body), body);
        app.send(&Frame::new(Command::Ack).header("id", m.get("ack").unwrap()))
            .await;
    }
    let listed = durables(console).await;
    assert_eq!(listed[0]["active"], true, "{listed:?}");

    // Unsubscribed by its id only, it keeps what is published; with its
    // name, it goes with what it kept.
    app.send(
        &Frame::new(Command::Unsubscribe)
            .header("id", "d")
            .header("receipt", "gone"),
    )
    .await;
    let receipt = app.next().await.expect("RECEIPT");
    assert_eq!(receipt.command, Command::Receipt, "{receipt:?}");
    publish_news(stomp).await;
    app.send(
        &Frame::new(Command::Unsubscribe)
            .header("id", "d")
            .header("activemq.subscriptionName", "news")
            .header("receipt", "removed"),
    )
    .await;
    let receipt = app.next().await.expect("RECEIPT");
    assert_eq!(receipt.command, Command::Receipt, "{receipt:?}");
    assert!(durables(console).await.is_empty());
    // Subscribing again starts afresh: nothing from before.
    let early = subscribe_durably(&mut app, "news", Some("kind = 'a'")).await;
    assert!(early.is_empty(), "{early:?}");
    let mut publisher = RawClient::connect(stomp).await;
    send(&mut publisher, "/topic/news", "fresh", &[("kind", "a")]).await;
    let m = message(&mut app).await;
    assert_eq!(m.body, b"fresh");
}

const PAIR_NODE: &str = r#"
[broker]
name = "NAME"
data_dir = "shared"

[[transport]]
name = "stomp"
bind = "127.0.0.1:0"

[console]
bind = "127.0.0.1:0"

[ha]
lease_renew = "50ms"
takeover_after = "150ms"
"#;

/// A durable subscription and what it kept survive a failover of an
/// active/standby pair: the standby takes over the shared data_dir and
/// knows the subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_subscription_survives_a_failover_of_the_pair() {
    let dir = tempfile::tempdir().unwrap();
    let active = broker_node(dir.path(), "a", &PAIR_NODE.replace("NAME", "a"), &[]);
    let stomp = active.address("transport=stomp addr=");
    let standby = broker_node(dir.path(), "b", &PAIR_NODE.replace("NAME", "b"), &[]);
    let (mut app, connected) = connect_as(stomp, "app").await;
    assert_eq!(connected.command, Command::Connected, "{connected:?}");
    assert!(subscribe_durably(&mut app, "news", None).await.is_empty());
    drop(app);
    publish_news(stomp).await;

    drop(active); // SIGKILL: the standby takes over.
    let stomp = standby.address("transport=stomp addr=");
    let console = standby.address("console listening on ");
    let listed = durables(console).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["pending"], 3, "{listed:?}");
    let (mut app, connected) = connect_as(stomp, "app").await;
    assert_eq!(connected.command, Command::Connected, "{connected:?}");
    let mut early = subscribe_durably(&mut app, "news", None).await;
    for body in ["a1", "b", "a2"] {
        let m = next_message(&mut app, &mut early).await;
        assert_eq!(String::from_utf8_lossy(&m.body), body);
        assert_eq!(m.get("destination"), Some("/topic/news"));
    }
}
