//! Interop with a client nobody here wrote: stomp.py drives the broker over
//! TLS through every scenario in `tests/py/scenarios.py`.

mod common;

use std::process::Command;

use common::BrokerDir;

async fn scenario(name: &'static str) {
    let dir = BrokerDir::new("");
    let broker = dir.start().await;
    let addr = broker.transport_addr("stomp+ssl").unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/scenarios.py");
    let ca = dir.ca();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .arg(name)
            .arg(addr.ip().to_string())
            .arg(addr.port().to_string())
            .arg(ca)
            .output()
    })
    .await
    .unwrap()
    .expect("python3 with stomp.py (pip install stomp-py) is needed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains(&format!("ok {name}")),
        "scenario {name} failed:\n{stdout}\n{stderr}"
    );
    broker.shutdown(std::time::Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_send_receive() {
    scenario("queue_send_receive").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_fanout() {
    scenario("topic_fanout").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ack_is_cumulative() {
    scenario("client_ack_is_cumulative").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_individual_and_nack() {
    scenario("client_individual_and_nack").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions() {
    scenario("transactions").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_and_errors() {
    scenario("receipts_and_errors").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heart_beats() {
    scenario("heart_beats").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_nack_is_cumulative() {
    scenario("client_nack_is_cumulative").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stomp10_headers_are_not_escaped() {
    scenario("stomp10_headers_are_not_escaped").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors() {
    scenario("selectors").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_subscriber() {
    scenario("durable_subscriber").await;
}
