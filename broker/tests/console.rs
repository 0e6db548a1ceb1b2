//! The console changes state only for an admin: purging or deleting a queue
//! needs the HTTP Basic login of a user with the `admin` right on it; a
//! purge is journaled, so the messages stay gone after a restart.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use portico_broker::stomp::{Command, Frame};

const ADMIN_PASSWORD: &str = "admin-pw:with-a-colon";
const APP_PASSWORD: &str = "app-pw";

fn secured() -> BrokerDir {
    let dir = BrokerDir::new(
        r#"
[[user]]
name = "admin"
password_file = "admin.password"
groups = ["admins"]

[[user]]
name = "app"
password_file = "app.password"
groups = ["apps"]

[[authorization]]
destination = "queue://>"
read = ["admins", "apps"]
write = ["admins", "apps"]
admin = ["admins"]
"#,
    );
    std::fs::write(dir.path("admin.password"), ADMIN_PASSWORD).unwrap();
    std::fs::write(dir.path("app.password"), APP_PASSWORD).unwrap();
    dir
}

fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

async fn connect(addr: SocketAddr, user: &str, password: &str) -> RawClient {
    let (client, answer) = RawClient::login(addr, user, password).await;
    let connected = answer.unwrap();
    assert_eq!(connected.command, Command::Connected, "{connected:?}");
    client
}

/// Sends `count` persistent messages to `queue`, each receipted.
async fn produce(client: &mut RawClient, queue: &str, count: usize) {
    for i in 0..count {
        client
            .send(
                &Frame::new(Command::Send)
                    .header("destination", format!("/queue/{queue}"))
                    .header("persistent", "true")
                    .header("receipt", i.to_string())
                    .body(format!("message {i}")),
            )
            .await;
        let receipt = client.next().await.unwrap();
        assert_eq!(receipt.command, Command::Receipt, "{receipt:?}");
    }
}

/// `queue`'s pending count on the console, `None` if it has no such queue.
async fn pending(console: SocketAddr, queue: &str) -> Option<u64> {
    let queues: serde_json::Value =
        serde_json::from_str(&http_get(console, "/api/queues").await).unwrap();
    queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == queue)
        .map(|q| q["pending"].as_u64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_admin_purges_or_deletes_a_queue_and_a_purge_survives_a_restart() {
    let dir = secured();
    let broker = dir.start().await;
    let stomp = broker.transport_addr("stomp").unwrap();
    let console = broker.console_addr().unwrap();
    let mut app = connect(stomp, "app", APP_PASSWORD).await;
    produce(&mut app, "orders", 5).await;
    assert_eq!(pending(console, "orders").await, Some(5));

    let purge = "/api/queues/orders/purge";
    let admin = basic("admin", ADMIN_PASSWORD);
    for (headers, status, says) in [
        (vec![], 401, "login"),
        (
            vec![("authorization", basic("admin", "wrong"))],
            401,
            "login",
        ),
        (
            vec![("authorization", basic("app", APP_PASSWORD))],
            403,
            "no admin right",
        ),
        (
            vec![
                ("authorization", admin.clone()),
                ("origin", "http://elsewhere.example".to_owned()),
            ],
            403,
            "cross-origin",
        ),
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let (got, body) = http(console, "POST", purge, &headers).await;
        assert_eq!(
            (got, body.contains(says)),
            (status, true),
            "{headers:?}: {body}"
        );
    }
    // Reading never changes anything; other methods are refused.
    assert_eq!(http(console, "GET", purge, &[]).await.0, 404);
    assert_eq!(http(console, "PUT", "/api/queues/orders", &[]).await.0, 405);
    assert_eq!(
        pending(console, "orders").await,
        Some(5),
        "nothing purged yet"
    );

    let (status, body) = http(console, "POST", purge, &[("authorization", &admin)]).await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer, serde_json::json!({"queue": "orders", "purged": 5}));
    assert_eq!(pending(console, "orders").await, Some(0));
    let (status, _) = http(
        console,
        "POST",
        "/api/queues/no-such-queue/purge",
        &[("authorization", &admin)],
    )
    .await;
    assert_eq!(status, 404);

    // The purge is in the journal: the five do not come back.
    drop(app);
    broker.shutdown(Duration::from_secs(1)).await;
    let broker = dir.start().await;
    let stomp = broker.transport_addr("stomp").unwrap();
    let console = broker.console_addr().unwrap();
    assert_eq!(pending(console, "orders").await.unwrap_or(0), 0);

    // A queue with a consumer is not deleted; without one it is.
    let mut app = connect(stomp, "app", APP_PASSWORD).await;
    produce(&mut app, "orders", 2).await;
    let mut consumer = connect(stomp, "app", APP_PASSWORD).await;
    consumer
        .send(
            &Frame::new(Command::Subscribe)
                .header("id", "1")
                .header("destination", "/queue/other")
                .header("ack", "client-individual"),
        )
        .await;
    consumer
        .send(
            &Frame::new(Command::Subscribe)
                .header("id", "2")
                .header("destination", "/queue/busy")
                .header("receipt", "subscribed"),
        )
        .await;
    assert_eq!(consumer.next().await.unwrap().command, Command::Receipt);
    let (status, body) = http(
        console,
        "DELETE",
        "/api/queues/busy",
        &[("authorization", &admin)],
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("consumer"), "{body}");
    let (status, body) = http(
        console,
        "DELETE",
        "/api/queues/orders",
        &[("authorization", &admin)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        serde_json::json!({"queue": "orders", "deleted": 2})
    );
    assert_eq!(pending(console, "orders").await, None);
    assert!(pending(console, "busy").await.is_some());
    broker.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_configured_users_the_console_changes_nothing() {
    let dir = BrokerDir::new("");
    let broker = dir.start().await;
    let mut client = RawClient::connect(broker.transport_addr("stomp").unwrap()).await;
    produce(&mut client, "orders", 1).await;
    let console = broker.console_addr().unwrap();
    let (status, body) = http(
        console,
        "POST",
        "/api/queues/orders/purge",
        &[("authorization", &basic("anyone", "anything"))],
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("configure a [[user]]"), "{body}");
    assert_eq!(pending(console, "orders").await, Some(1));
    broker.shutdown(Duration::from_secs(1)).await;
}
