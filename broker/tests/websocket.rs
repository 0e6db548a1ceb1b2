//! STOMP over WebSocket with clients nobody here wrote: stomp.py's
//! WebSocket connection over ws:// and wss://, and websocket-client for
//! the subprotocol, one frame per message, and frames a server must refuse.

mod common;

use common::*;

const WS: &str = r#"
[[transport]]
name = "stomp+ws"
bind = "127.0.0.1:0"

[[transport]]
name = "stomp+wss"
bind = "127.0.0.1:0"
cert = "broker.crt"
key = "broker.key"
"#;

async fn scenario(name: &'static str) {
    let dir = BrokerDir::new(WS);
    let broker = dir.start().await;
    let ws = broker.transport_addr("stomp+ws").unwrap();
    let wss = broker.transport_addr("stomp+wss").unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/ws_scenarios.py");
    let args = vec![
        "127.0.0.1".to_owned(),
        ws.port().to_string(),
        wss.port().to_string(),
        dir.ca().display().to_string(),
    ];
    python_scenario(script, name, args).await;
    broker.shutdown(std::time::Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stomp_py_over_ws_and_wss() {
    scenario("stomp_py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stomp_frame_per_websocket_message() {
    scenario("one_frame_per_message").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmasked_and_oversized_frames_close_the_connection_alone() {
    scenario("bad_frames").await;
}

/// The console's live page, in a real headless Chromium with the
/// `@stomp/stompjs` library from npm: it subscribes over the broker's
/// WebSocket transport and shows messages as they arrive, newest first,
/// bodies as text (markup in a body stays text). A screenshot is left in
/// `target/tmp/console-screenshots/live.png`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_page_shows_messages_as_they_arrive_in_chromium() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    // Plain ws:// (the test CA is not one Chromium trusts).
    let dir = BrokerDir::new("[[transport]]\nname = \"stomp+ws\"\nbind = \"127.0.0.1:0\"\n");
    let broker = dir.start().await;
    let console = broker.console_addr().unwrap();
    let stomp = broker.transport_addr("stomp").unwrap();
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let screenshot = shots.join("live.png");
    let url = format!("http://{console}/live?destination=/topic/prices");
    let mut browser = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/py/live_page.py"
        ))
        .arg(dir.path("chromium-profile"))
        .arg(&url)
        .arg("3")
        .arg(&screenshot)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with websocket-client, and chromium");
    let (tx, lines) = std::sync::mpsc::channel();
    let stdout = browser.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let next_line = |what: &str| {
        lines
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the live page never reported {what}"))
    };
    assert_eq!(next_line("its subscription"), "subscribed");
    let mut publisher = RawClient::connect(stomp).await;
    for body in ["EUR 1.08", "USD 0.93", "<b>not bold</b>"] {
        publisher
            .send(
                &portico_broker::stomp::Frame::new(portico_broker::stomp::Command::Send)
                    .header("destination", "/topic/prices")
                    .body(body),
            )
            .await;
    }
    let bodies: Vec<String> = serde_json::from_str(&next_line("its messages")).unwrap();
    assert_eq!(bodies, ["<b>not bold</b>", "USD 0.93", "EUR 1.08"]);
    let status = tokio::task::spawn_blocking(move || browser.wait())
        .await
        .unwrap();
    assert!(status.unwrap().success());
    println!("screenshot: {}", screenshot.display());
    broker.shutdown(std::time::Duration::from_secs(2)).await;
}
