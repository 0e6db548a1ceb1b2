//! The console changes state only for an admin: purging or deleting a queue,
//! sending to it or retrying its dead letters needs the HTTP Basic login of
//! a user with the `admin` right on it; each is journaled, so it holds after
//! a restart. The pages render in a real browser (headless Chromium).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use portico_broker::stomp::{Command, Frame};
use portico_test_support::{output_within, post_form};

const ADMIN_PASSWORD: &str = "admin-pw:with-a-colon";
const APP_PASSWORD: &str = "app-pw";

fn secured() -> BrokerDir {
    secured_with("")
}

fn secured_with(extra: &str) -> BrokerDir {
    let dir = BrokerDir::new(&format!(
        r#"{extra}
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
"#
    ));
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
    queue_figures(console, queue).await["pending"].as_u64()
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

/// Makes a dead letter: a persistent message to `orders` (whose policy
/// allows no redelivery) that a consumer refuses once; returns once it is
/// in the dead-letter queue.
async fn dead_letter(stomp: SocketAddr, console: SocketAddr, body: &str) {
    let mut app = connect(stomp, "app", APP_PASSWORD).await;
    app.send(
        &Frame::new(Command::Send)
            .header("destination", "/queue/orders")
            .header("persistent", "true")
            .header("kind", "poison")
            .header("receipt", "sent")
            .body(body),
    )
    .await;
    assert_eq!(app.next().await.unwrap().command, Command::Receipt);
    app.send(
        &Frame::new(Command::Subscribe)
            .header("destination", "/queue/orders")
            .header("id", "s")
            .header("ack", "client-individual"),
    )
    .await;
    let m = app.next().await.unwrap();
    assert_eq!(m.command, Command::Message, "{m:?}");
    app.send(
        &Frame::new(Command::Nack)
            .header("id", m.get("ack").unwrap())
            .header("receipt", "refused"),
    )
    .await;
    assert_eq!(app.next().await.unwrap().command, Command::Receipt);
    // The move to the dead-letter queue follows the NACK.
    wait_for("the dead letter in ActiveMQ.DLQ", || async {
        pending(console, "ActiveMQ.DLQ").await.unwrap_or(0) >= 1
    })
    .await;
}

const ONE_DELIVERY: &str = r#"
[[policy]]
destination = "queue://orders"
max_redeliveries = 0
redelivery_delay = "0s"
"#;

/// The queue page lists the waiting messages (headers and body) and its
/// forms act for an admin: send, and retry a dead letter back to its queue
/// (journaled: it holds after a restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_page_shows_messages_and_its_forms_send_and_retry() {
    let dir = secured_with(ONE_DELIVERY);
    let broker = dir.start().await;
    let stomp = broker.transport_addr("stomp").unwrap();
    let console = broker.console_addr().unwrap();
    let admin = basic("admin", ADMIN_PASSWORD);
    let admin = [("authorization", admin.as_str())];

    // Sent from the form: 303 back to the page, which says what was done.
    let sent = post_form(
        console,
        "/queues/invoices/send",
        &admin,
        &[
            ("body", "<b>total</b> 42"),
            ("headers", "customer: ACME\npriority: 7"),
            ("persistent", "true"),
        ],
    )
    .await;
    assert_eq!(sent.status, 303, "{}", sent.body);
    assert!(
        sent.head.contains("location: /queues/invoices?done=sent"),
        "{}",
        sent.head
    );
    let page = http_get(console, "/queues/invoices?done=sent%201%20message").await;
    assert!(page.contains("sent 1 message"), "{page}");
    assert!(page.contains("customer: ACME"), "{page}");
    assert!(page.contains("&lt;b&gt;total&lt;/b&gt; 42"), "{page}");
    assert!(page.contains("<td>7</td><td>yes</td>"), "{page}");
    let listed: serde_json::Value =
        serde_json::from_str(&http_get(console, "/api/queues/invoices/messages").await).unwrap();
    assert_eq!(listed["waiting"], 1);
    assert_eq!(listed["messages"][0]["body"], "<b>total</b> 42");
    // Refused without the admin right, and for bad headers.
    let app = basic("app", APP_PASSWORD);
    let refused = post_form(
        console,
        "/queues/invoices/send",
        &[("authorization", &app)],
        &[("body", "x")],
    )
    .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    let bad = post_form(
        console,
        "/queues/invoices/send",
        &admin,
        &[("body", "x"), ("headers", "priority: 11")],
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("priority"), "{}", bad.body);
    // A consumer gets what the form sent, with its headers.
    let mut consumer = connect(stomp, "app", APP_PASSWORD).await;
    consumer
        .send(
            &Frame::new(Command::Subscribe)
                .header("destination", "/queue/invoices")
                .header("id", "i"),
        )
        .await;
    let m = consumer.next().await.unwrap();
    assert_eq!(m.body, b"<b>total</b> 42");
    assert_eq!(m.get("customer"), Some("ACME"));
    assert_eq!(m.get("persistent"), Some("true"));
    drop(consumer);

    // A dead letter: the DLQ's page offers to retry it.
    dead_letter(stomp, console, "poison pill").await;
    let page = http_get(console, "/queues/ActiveMQ.DLQ").await;
    assert!(page.contains("Retry to /queue/orders"), "{page}");
    assert!(page.contains("dlqDeliveryFailureCause"), "{page}");
    let retried = post_form(console, "/queues/ActiveMQ.DLQ/retry", &admin, &[]).await;
    assert_eq!(retried.status, 303, "{}", retried.body);
    assert_eq!(pending(console, "ActiveMQ.DLQ").await, Some(0));
    assert_eq!(pending(console, "orders").await, Some(1));

    // Journaled: after a restart it is in orders, without the dead
    // letter's headers.
    broker.shutdown(Duration::from_secs(1)).await;
    let broker = dir.start().await;
    let stomp = broker.transport_addr("stomp").unwrap();
    let console = broker.console_addr().unwrap();
    assert_eq!(pending(console, "ActiveMQ.DLQ").await.unwrap_or(0), 0);
    let mut consumer = connect(stomp, "app", APP_PASSWORD).await;
    consumer
        .send(
            &Frame::new(Command::Subscribe)
                .header("destination", "/queue/orders")
                .header("id", "o"),
        )
        .await;
    let m = consumer.next().await.unwrap();
    assert_eq!(m.body, b"poison pill");
    assert_eq!(m.get("kind"), Some("poison"));
    assert!(m.get("original-destination").is_none(), "{m:?}");
    broker.shutdown(Duration::from_secs(1)).await;
}

/// Runs headless Chromium (Debian's `chromium`) with `args` on `url`; its
/// standard output. Bounded in time.
fn chromium(profile: &std::path::Path, args: &[&str], url: &str) -> String {
    let mut command = std::process::Command::new("chromium");
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--window-size=1280,1000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url);
    let output = output_within(&mut command, Duration::from_secs(60));
    assert!(output.status.success(), "chromium failed on {url}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Every page renders in a real browser with what a person came to see
/// (the DOM Chromium built is checked), and a screenshot of each is left
/// for a person to look at: the paths are printed in the test output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_renders_in_headless_chromium() {
    let dir = secured_with(&format!(
        "{ONE_DELIVERY}
[[authorization]]
destination = \"topic://>\"
read = [\"apps\"]
write = [\"apps\"]
"
    ));
    let broker = dir.start().await;
    let stomp = broker.transport_addr("stomp").unwrap();
    let console = broker.console_addr().unwrap();
    // Something to show: waiting messages, a dead letter, a durable
    // subscriber that went away, a connected client.
    let mut app = connect(stomp, "app", APP_PASSWORD).await;
    produce(&mut app, "invoices", 3).await;
    dead_letter(stomp, console, "poison pill").await;
    let (mut durable, connected) = {
        let mut c = RawClient::open(stomp).await;
        c.send(
            &Frame::new(Command::Connect)
                .header("accept-version", "1.2")
                .header("login", "app")
                .header("passcode", APP_PASSWORD)
                .header("client-id", "billing"),
        )
        .await;
        let answer = c.next().await.unwrap();
        (c, answer)
    };
    assert_eq!(connected.command, Command::Connected, "{connected:?}");
    durable
        .send(
            &Frame::new(Command::Subscribe)
                .header("destination", "/topic/prices")
                .header("id", "p")
                .header("activemq.subscriptionName", "price-feed")
                .header("receipt", "ok"),
        )
        .await;
    assert_eq!(durable.next().await.unwrap().command, Command::Receipt);
    drop(durable);

    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let base = format!("http://{console}");
    for (page, file, expect) in [
        (
            "/",
            "overview",
            vec![
                "Overview",
                "Memory",
                "Journal",
                "Active since",
                "Since start",
            ],
        ),
        (
            "/queues",
            "queues",
            vec![
                "invoices",
                "ActiveMQ.DLQ",
                "Producers",
                "Enqueued since start",
            ],
        ),
        (
            "/queues/invoices",
            "queue-invoices",
            vec![
                "message 0",
                "message 2",
                "Send a message",
                "Purge waiting messages",
            ],
        ),
        (
            "/queues/ActiveMQ.DLQ",
            "queue-dlq",
            vec![
                "poison pill",
                "Retry to /queue/orders",
                "dlqDeliveryFailureCause",
            ],
        ),
        (
            "/durable",
            "durable",
            vec!["billing", "price-feed", "/topic/prices", "offline"],
        ),
        (
            "/connections",
            "connections",
            vec!["app", "/queue/invoices", "Sent since connected"],
        ),
        ("/network", "network", vec!["No network bridges"]),
    ] {
        let url = format!("{base}{page}");
        let profile = profile.path().to_owned();
        let (dom, shot) = tokio::task::spawn_blocking({
            let shots = shots.clone();
            move || {
                let dom = chromium(&profile, &["--dump-dom"], &url);
                let shot = shots.join(format!("{file}.png"));
                chromium(
                    &profile,
                    &[&format!("--screenshot={}", shot.display())],
                    &url,
                );
                (dom, shot)
            }
        })
        .await
        .unwrap();
        for text in expect {
            assert!(
                dom.contains(text),
                "{page}: {text:?} not in the DOM:\n{dom}"
            );
        }
        let png = std::fs::read(&shot).unwrap();
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "{page}: the screenshot is not a picture of a page"
        );
        println!("console page {page}: screenshot {}", shot.display());
    }
    drop(app);
    broker.shutdown(Duration::from_secs(1)).await;
}
