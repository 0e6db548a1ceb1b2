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
