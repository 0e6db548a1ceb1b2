//! Garbage, truncated and oversized input, 32 connections of each at once,
//! on every port of a real broker process (STOMP, STOMP over TLS, OpenWire,
//! MQTT, the console): every connection is closed, the broker keeps serving, and its
//! peak memory stays far below what it was sent (32 × 4 MiB per kind).
//! Its TLS port keeps the server's cipher order, as the front door does.

mod common;

use common::*;
use hostile::Speaks;
use portico_broker::stomp::{Command, Frame};
use portico_core::certs::DevCa;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_on_every_port_is_closed_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::generate().unwrap();
    let issued = ca.issue(&["127.0.0.1".into()]).unwrap();
    std::fs::write(dir.path().join("broker.crt"), issued.cert_pem).unwrap();
    std::fs::write(dir.path().join("broker.key"), issued.key_pem).unwrap();
    let node = broker_node(
        dir.path(),
        "hostile",
        r#"
[broker]
name = "hostile"
data_dir = "data"

[[transport]]
name = "stomp"
bind = "127.0.0.1:0"

[[transport]]
name = "stomp+ssl"
bind = "127.0.0.1:0"
cert = "broker.crt"
key = "broker.key"

[[transport]]
name = "openwire"
bind = "127.0.0.1:0"

[[transport]]
name = "mqtt"
bind = "127.0.0.1:0"

[console]
bind = "127.0.0.1:0"

[limits]
max_frame_size = 262144
connect_timeout = "2s"
"#,
        &[],
    );
    let stomp = node.address("transport=stomp addr=");
    let stomp_tls = node.address("transport=stomp+ssl addr=");
    let openwire = node.address("transport=openwire addr=");
    let mqtt = node.address("transport=mqtt addr=");
    let console = node.address("console listening on ");
    let pid = node.child.id();
    let (before, _) = hostile::memory_kib(pid);

    hostile::barrage(stomp, Speaks::Stomp).await;
    hostile::barrage(stomp_tls, Speaks::Tls).await;
    hostile::barrage(console, Speaks::Http).await;
    hostile::barrage(openwire, Speaks::OpenWire).await;
    hostile::barrage(mqtt, Speaks::Mqtt).await;

    let (after, peak) = hostile::memory_kib(pid);
    println!("broker resident memory: {before} KiB before, {peak} KiB peak, {after} KiB after");
    assert!(
        peak - before < 48 * 1024,
        "peak {peak} KiB from {before} KiB: input was buffered"
    );
    // Still serving, and the refusals were counted.
    let mut client = RawClient::connect(stomp).await;
    client
        .send(
            &Frame::new(Command::Send)
                .header("destination", "/queue/after")
                .header("receipt", "r")
                .body("ok"),
        )
        .await;
    assert_eq!(client.next().await.unwrap().command, Command::Receipt);
    let summary: serde_json::Value =
        serde_json::from_str(&http_get(console, "/api/broker").await).unwrap();
    let errors = summary["protocol_errors"].as_u64().unwrap();
    assert!(errors >= 5 * hostile::CONNECTIONS as u64, "{summary}");
}

/// The broker's TLS port picks from its own order (AES-128-GCM first, as
/// the front door does), whatever the client lists first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_tls_port_keeps_its_cipher_order() {
    use rustls::CipherSuite as S;
    let dir = BrokerDir::new("");
    let broker = dir.start().await;
    let addr = broker.transport_addr("stomp+ssl").unwrap();
    let roots = portico_core::tls::load_roots(&dir.ca()).unwrap();
    for first in [
        S::TLS13_AES_256_GCM_SHA384,
        S::TLS13_CHACHA20_POLY1305_SHA256,
    ] {
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        provider
            .cipher_suites
            .sort_by_key(|suite| suite.suite() != first);
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .unwrap();
        let suite = tls.get_ref().1.negotiated_cipher_suite().unwrap().suite();
        assert_eq!(
            suite,
            S::TLS13_AES_128_GCM_SHA256,
            "client listing {first:?} first"
        );
    }
    broker.shutdown(std::time::Duration::from_secs(1)).await;
}
