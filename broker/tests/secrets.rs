//! Secrets stay secret: two broker processes (a bridge between them, users
//! whose passwords come from a file and from the environment), driven with
//! right and wrong passwords at debug logging; no password appears in any
//! log line or console page.

mod common;

use std::net::SocketAddr;

use common::*;
use portico_broker::stomp::Command;

const APP_PASSWORD: &str = "app-s3cret-from-a-file";
const BRIDGE_PASSWORD: &str = "bridge-s3cret-from-env";
const WRONG_PASSWORD: &str = "wrong-s3cret-typed-by-someone";

async fn login(addr: SocketAddr, user: &str, password: &str) -> Command {
    let (_, answer) = RawClient::login(addr, user, password).await;
    answer.map_or(Command::Error, |f| f.command)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_reaches_a_log_or_a_console_page() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.password"), format!("{APP_PASSWORD}\n")).unwrap();
    let b = broker_node(
        dir.path(),
        "b",
        r#"[broker]
name = "b"
data_dir = "b-data"

[[transport]]
name = "stomp"
bind = "127.0.0.1:0"

[console]
bind = "127.0.0.1:0"

[[user]]
name = "app"
password_file = "app.password"

[[user]]
name = "bridge"
password_env = "B_BRIDGE_PASSWORD"
bridge = true
"#,
        &[("B_BRIDGE_PASSWORD", BRIDGE_PASSWORD)],
    );
    let b_stomp = b.address(": listening on ");
    let b_console = b.address("console listening on ");
    let a = broker_node(
        dir.path(),
        "a",
        &format!(
            r#"[broker]
name = "a"
data_dir = "a-data"

[[transport]]
name = "stomp"
bind = "127.0.0.1:0"

[console]
bind = "127.0.0.1:0"

[[network_connector]]
name = "a-b"
uri = "static:(tcp://{b_stomp})"
duplex = true
user = "bridge"
password_env = "A_BRIDGE_PASSWORD"
"#
        ),
        &[("A_BRIDGE_PASSWORD", BRIDGE_PASSWORD)],
    );
    let a_console = a.address("console listening on ");

    assert_eq!(
        login(b_stomp, "app", APP_PASSWORD).await,
        Command::Connected
    );
    assert_eq!(login(b_stomp, "app", WRONG_PASSWORD).await, Command::Error);
    assert_eq!(
        login(b_stomp, "bridge", WRONG_PASSWORD).await,
        Command::Error
    );
    wait_for("the bridge up on a's console", || async {
        http_get(a_console, "/api/network")
            .await
            .contains("connected")
    })
    .await;

    let mut seen = String::new();
    for console in [a_console, b_console] {
        for path in [
            "/",
            "/queues",
            "/topics",
            "/connections",
            "/network",
            "/api/queues",
            "/api/topics",
            "/api/connections",
            "/api/network",
            "/api/broker",
            "/health",
        ] {
            seen.push_str(&http_get(console, path).await);
        }
    }
    let logs = format!("{}\n{}", a.log(), b.log());
    drop((a, b));
    // The passwords were used (the bridge logged in with one from the
    // environment) and the failures were logged, without them.
    assert!(logs.contains("bridge connected"), "{logs}");
    assert!(logs.matches("authentication failed").count() >= 2, "{logs}");
    for secret in [APP_PASSWORD, BRIDGE_PASSWORD, WRONG_PASSWORD] {
        assert!(!logs.contains(secret), "{secret} in a log:\n{logs}");
        assert!(!seen.contains(secret), "{secret} on a console page");
    }
}
