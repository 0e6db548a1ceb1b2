//! Who may act as a broker: only a user with the bridge right opens a
//! network bridge; a bridge is authorized per destination like any client;
//! ordinary clients cannot set the network's `portico-` headers; and one
//! user's dedup ids cannot suppress another user's messages.

mod common;

use common::*;
use portico_broker::stomp::{Command, Frame};
use portico_broker::Broker;

const USERS: &[(&str, &str)] = &[
    ("reader", "groups = [\"readers\"]"),
    ("consumer", "groups = [\"consumers\"]"),
    ("bridger", "groups = [\"bridges\"]\nbridge = true"),
];

/// A broker with three users (password = user name): `reader` may write
/// only `open`, `consumer` may read both queues, `bridger` holds the bridge
/// right and may read and write `open` only.
async fn guarded_broker() -> (BrokerDir, Broker) {
    let mut extra = String::new();
    for (user, more) in USERS {
        extra.push_str(&format!(
            "\n[[user]]\nname = \"{user}\"\npassword_file = \"{user}.password\"\n{more}\n"
        ));
    }
    extra.push_str(
        r#"
[[authorization]]
destination = "queue://guarded"
read = ["consumers"]
write = ["writers"]

[[authorization]]
destination = "queue://open"
read = ["consumers", "bridges"]
write = ["readers", "bridges"]
"#,
    );
    let dir = BrokerDir::new(&extra);
    for (user, _) in USERS {
        std::fs::write(dir.path(&format!("{user}.password")), user).unwrap();
    }
    let broker = dir.start().await;
    (dir, broker)
}

async fn login(broker: &Broker, user: &str, extra: &[(&str, &str)]) -> (RawClient, Frame) {
    let mut client = RawClient::open(broker.transport_addr("stomp").unwrap()).await;
    let mut connect = Frame::new(Command::Connect)
        .header("accept-version", "1.2")
        .header("host", "localhost")
        .header("login", user)
        .header("passcode", user);
    for (k, v) in extra {
        connect = connect.header(k, *v);
    }
    client.send(&connect).await;
    let answer = client.next().await.expect("an answer to CONNECT");
    (client, answer)
}

async fn subscribe(client: &mut RawClient, queue: &str) {
    client
        .send(
            &Frame::new(Command::Subscribe)
                .header("destination", queue)
                .header("id", queue)
                .header("receipt", queue),
        )
        .await;
    let receipt = client.next().await.unwrap();
    assert_eq!(receipt.get("receipt-id"), Some(queue), "{receipt:?}");
}

async fn api(broker: &Broker, path: &str) -> serde_json::Value {
    serde_json::from_str(&http_get(broker.console_addr().unwrap(), path).await).unwrap()
}

/// `field` of queue `name` on the console (0 if the queue is not there).
async fn queue_figure(broker: &Broker, name: &str, field: &str) -> u64 {
    let queues = api(broker, "/api/queues").await;
    queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == name)
        .map_or(0, |q| q[field].as_u64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_user_with_the_bridge_right_opens_a_bridge() {
    let (_dir, broker) = guarded_broker().await;
    let (mut evil, answer) = login(&broker, "reader", &[("portico-bridge", "evil")]).await;
    assert_eq!(answer.command, Command::Error, "{answer:?}");
    assert!(
        answer
            .get("message")
            .unwrap()
            .contains("may not open a network bridge"),
        "{answer:?}"
    );
    assert!(
        evil.until_closed().await.is_empty(),
        "closed after the ERROR"
    );
    let summary = api(&broker, "/api/broker").await;
    assert_eq!(summary["failed_logins"], 1, "{summary}");
    // The same user without the header is an ordinary client.
    let (_client, answer) = login(&broker, "reader", &[]).await;
    assert_eq!(answer.command, Command::Connected);
    assert_eq!(answer.get("portico-bridge"), None);
    // A user with the right gets the bridge answer.
    let (_bridge, answer) = login(&broker, "bridger", &[("portico-bridge", "peer")]).await;
    assert_eq!(answer.command, Command::Connected, "{answer:?}");
    assert_eq!(answer.get("portico-bridge"), Some("test-broker"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_reads_and_writes_only_what_its_user_may() {
    let (_dir, broker) = guarded_broker().await;
    let (mut consumer, _) = login(&broker, "consumer", &[]).await;
    subscribe(&mut consumer, "/queue/guarded").await;
    subscribe(&mut consumer, "/queue/open").await;
    let (mut bridge, answer) = login(
        &broker,
        "bridger",
        &[("portico-bridge", "peer"), ("portico-duplex", "true")],
    )
    .await;
    assert_eq!(answer.command, Command::Connected, "{answer:?}");
    // Demand: the bridge's user may read `open`, not `guarded`.
    for queue in ["/queue/guarded", "/queue/open"] {
        bridge
            .send(
                &Frame::new(Command::Subscribe)
                    .header("destination", queue)
                    .header("id", queue),
            )
            .await;
    }
    wait_for("the bridge's demand for open", || async {
        queue_figure(&broker, "open", "consumers").await == 2
    })
    .await;
    assert_eq!(queue_figure(&broker, "guarded", "consumers").await, 1);
    // Forwarding: a message for `guarded` is refused, one for `open` taken.
    for (queue, id, ack) in [
        ("/queue/guarded", "ID:evil-1", "a1"),
        ("/queue/open", "ID:ok-1", "a2"),
    ] {
        bridge
            .send(
                &Frame::new(Command::Message)
                    .header("destination", queue)
                    .header("message-id", id)
                    .header("ack", ack)
                    .header("portico-path", "peer")
                    .body(id.as_bytes().to_vec()),
            )
            .await;
    }
    let delivered = consumer.next().await.unwrap();
    assert_eq!(
        (delivered.get("destination"), delivered.body.as_slice()),
        (Some("/queue/open"), b"ID:ok-1".as_slice())
    );
    // The bridge hears an ACK for what was taken only, and is told of
    // demand only where its user may write.
    let mut acks = Vec::new();
    let mut advertised = Vec::new();
    while !acks.contains(&"a2".to_owned()) {
        let f = bridge.next().await.expect("the bridge stays up");
        match f.command {
            Command::Ack => acks.push(f.get("id").unwrap().to_owned()),
            Command::Subscribe => advertised.push(f.get("destination").unwrap().to_owned()),
            _ => {}
        }
    }
    assert_eq!(acks, ["a2"]);
    assert_eq!(advertised, ["/queue/open"]);
    assert_eq!(queue_figure(&broker, "guarded", "enqueued").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cannot_set_the_networks_headers() {
    let (_dir, broker) = guarded_broker().await;
    let (mut consumer, _) = login(&broker, "consumer", &[]).await;
    subscribe(&mut consumer, "/queue/open").await;
    let (mut reader, _) = login(&broker, "reader", &[]).await;
    reader
        .send(
            &Frame::new(Command::Send)
                .header("destination", "/queue/open")
                .header("portico-path", "evil,other")
                .header("portico-origin", "ID:victim-1")
                .header("portico-hops", "1")
                .header("portico-dedup-id", "d-1")
                .header("redelivered", "true")
                .header("app", "kept")
                .header("receipt", "sent")
                .body("x"),
        )
        .await;
    assert_eq!(reader.next().await.unwrap().command, Command::Receipt);
    let m = consumer.next().await.unwrap();
    for stripped in ["portico-path", "portico-origin", "portico-hops"] {
        assert_eq!(m.get(stripped), None, "{stripped} kept: {m:?}");
    }
    assert_eq!(m.get("redelivered"), None, "{m:?}");
    assert_eq!(
        (m.get("app"), m.get("portico-dedup-id")),
        (Some("kept"), Some("d-1"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_users_dedup_ids_cannot_suppress_anothers_messages() {
    let (_dir, broker) = guarded_broker().await;
    let (mut consumer, _) = login(&broker, "consumer", &[]).await;
    subscribe(&mut consumer, "/queue/open").await;
    let (victim, _) = login(&broker, "bridger", &[]).await;
    let (other, _) = login(&broker, "reader", &[]).await;
    let mut clients = [victim, other];
    let sends = [
        (0, Some("shared-id"), "victim"),
        (1, Some("shared-id"), "other"),
        // The same user re-sending the same id: a failover re-send, dropped.
        (1, Some("shared-id"), "other again"),
        (1, None, "marker"),
    ];
    for (who, id, body) in sends {
        let mut frame = Frame::new(Command::Send)
            .header("destination", "/queue/open")
            .header("receipt", body)
            .body(body);
        if let Some(id) = id {
            frame = frame.header("portico-dedup-id", id);
        }
        clients[who].send(&frame).await;
        assert_eq!(clients[who].next().await.unwrap().command, Command::Receipt);
    }
    let mut bodies = Vec::new();
    while bodies.last().map(String::as_str) != Some("marker") {
        let m = consumer.next().await.unwrap();
        bodies.push(String::from_utf8(m.body).unwrap());
    }
    assert_eq!(bodies, ["victim", "other", "marker"]);
}
