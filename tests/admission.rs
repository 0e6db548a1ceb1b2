//! Hostile and greedy clients: bad handshakes closed and counted, allow
//! lists, per-source connection limits and rates, capped handshakes.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_clients_are_closed_and_counted_without_disturbing_others() {
    let pki = Pki::front_and_broker();
    let backend = Backend::tls("b1", "127.0.0.1", 0, &pki, "broker").await;
    let server = start_portico(
        pki.dir.path(),
        &front_config(
            &pki,
            &[backend.addr.to_string()],
            "",
            "",
            "handshake_timeout = \"300ms\"",
        )
        .replace("handshake_timeout = \"2s\"\n", ""),
    )
    .await;
    all_healthy(&server).await;
    let front = server.listener_addr("front").unwrap();

    // A well-behaved client holds a connection throughout.
    let (mut good, _) = tls_connect(front, pki.client_config(), "mq.localhost")
        .await
        .unwrap();

    // Bytes that are not TLS.
    let mut garbage = TcpStream::connect(front).await.unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, garbage.read_to_end(&mut sink))
        .await
        .unwrap();

    // A client that stalls mid-handshake is closed at the handshake timeout.
    let mut stalled = TcpStream::connect(front).await.unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0x50, 0x01])
        .await
        .unwrap();
    let started = Instant::now();
    let _ = tokio::time::timeout(DEADLINE, stalled.read_to_end(&mut sink))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed too early"
    );

    // A client that offers only TLS 1.0 suites.
    let accepted_before = backend.accepted();
    let mut legacy = TcpStream::connect(front).await.unwrap();
    legacy.write_all(&tls10_client_hello()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, legacy.read_to_end(&mut answer))
        .await
        .unwrap();
    assert!(
        answer.is_empty() || answer[0] == 0x15,
        "expected an alert or nothing, got {answer:?}"
    );
    assert_eq!(
        backend.accepted(),
        accepted_before,
        "no target is touched for an incompatible client"
    );

    // The good connection still works.
    good.write_all(b"still here").await.unwrap();
    let mut back = [0u8; 10];
    good.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"still here");

    let expected = ["not_tls", "timeout", "incompatible"].map(|reason| {
        format!("portico_handshake_failures_total{{listener=\"front\",reason=\"{reason}\"}} 1")
    });
    metrics_showing(&server, &expected.each_ref().map(String::as_str)).await;
}

/// A ClientHello offering TLS 1.0 and only CBC-SHA suites.
fn tls10_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x01];
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x04, 0x00, 0x2f, 0xc0, 0x13]); // suites
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut handshake = vec![0x01, 0x00, 0x00, body.len() as u8];
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01, 0x00, handshake.len() as u8];
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_outside_the_allow_list_are_refused_at_accept() {
    let pki = Pki::front_and_broker();
    let backend = Backend::tls("b1", "127.0.0.1", 0, &pki, "broker").await;
    let server = start_portico(
        pki.dir.path(),
        &front_config(
            &pki,
            &[backend.addr.to_string()],
            "",
            "",
            "allow = [\"127.0.0.2/32\"]",
        ),
    )
    .await;
    all_healthy(&server).await;
    let front = server.listener_addr("front").unwrap();
    assert!(who(front, pki.client_config()).await.is_err());

    let (_tls, name) = tls_from("127.0.0.2", front, &pki).await.unwrap();
    assert_eq!(name, "b1");
    let metrics = server.metrics().render();
    assert!(metrics.contains("reason=\"not_allowed\"} 1"), "{metrics}");
}

/// A source at its connection limit is refused before any TLS while another
/// source is served; closing one connection lets the next one in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_over_its_connection_limit_is_refused_while_another_is_served() {
    let limits = "[listener.limits]\nmax_connections_per_source = 2";
    let (pki, _backend, server, front) = front_door_with(limits).await;
    let first = greeted_from("127.0.0.2", front, &pki).await.unwrap();
    let _second = greeted_from("127.0.0.2", front, &pki).await.unwrap();
    assert!(greeted_from("127.0.0.2", front, &pki).await.is_err());
    let _other = greeted_from("127.0.0.3", front, &pki).await.unwrap();
    let metrics = server.metrics().render();
    assert!(
        metrics.contains(
            "portico_connections_refused_total{listener=\"front\",reason=\"source_limit\"} 1"
        ),
        "{metrics}"
    );
    drop(first);
    wait_for("a freed slot for 127.0.0.2", || async {
        greeted_from("127.0.0.2", front, &pki).await.is_ok()
    })
    .await;
}

/// New connections per second from one source: a burst of the rate is let
/// in, the next is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_over_its_connection_rate_is_refused() {
    let limits = "[listener.limits]\nnew_connections_per_source = 3";
    let (pki, _backend, server, front) = front_door_with(limits).await;
    let mut served = 0;
    let mut refused = 0;
    // Well within one second: at most the burst of 3 gets in.
    for _ in 0..6 {
        match greeted_from("127.0.0.2", front, &pki).await {
            Ok(_) => served += 1,
            Err(_) => refused += 1,
        }
    }
    assert!(
        served >= 3 && refused >= 1,
        "served {served}, refused {refused}"
    );
    assert!(greeted_from("127.0.0.3", front, &pki).await.is_ok());
    let metrics = server.metrics().render();
    assert!(metrics.contains("reason=\"source_rate\"}"), "{metrics}");
}

/// Connections that never finish their handshake hold handshake slots only:
/// over `max_handshakes` a new one is refused; once they go, clients are
/// served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_in_progress_are_capped() {
    let limits = "[listener.limits]\nmax_handshakes = 2";
    let (pki, _backend, server, front) = front_door_with(limits).await;
    // Finished handshakes do not count.
    let _done = greeted_from("127.0.0.1", front, &pki).await.unwrap();
    let _done_too = greeted_from("127.0.0.1", front, &pki).await.unwrap();
    let silent: Vec<TcpStream> = vec![
        TcpStream::connect(front).await.unwrap(),
        TcpStream::connect(front).await.unwrap(),
    ];
    // Each worker accepts from its own socket, so a later client may be
    // accepted first: the silent two are in once four connections are open.
    metrics_showing(
        &server,
        &["portico_active_connections{listener=\"front\"} 4"],
    )
    .await;
    wait_for("the silent connections to be counted", || async {
        greeted_from("127.0.0.1", front, &pki).await.is_err()
    })
    .await;
    drop(silent);
    wait_for("a client served once the slots are free", || async {
        greeted_from("127.0.0.1", front, &pki).await.is_ok()
    })
    .await;
    let metrics = server.metrics().render();
    assert!(metrics.contains("reason=\"handshakes\"}"), "{metrics}");
}

/// 2,000 connections that never send a ClientHello (slow loris) cost the
/// front door a waiting task each; a normal client is still served within
/// a second, and the loris connections are closed at the handshake timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_slow_loris_connections_do_not_keep_a_client_out() {
    // The test holds both ends: 4,000 descriptors and more.
    rlimit::increase_nofile_limit(16_384).unwrap();
    let (pki, _backend, server, front) = front_door_with("").await;
    // From 40 addresses (50 each: within each source's handshake share).
    let mut loris = Vec::with_capacity(2_000);
    for i in 0..2_000 {
        let socket = TcpSocket::new_v4().unwrap();
        let source = format!("127.0.1.{}:0", 1 + i % 40);
        socket.bind(source.parse().unwrap()).unwrap();
        loris.push(socket.connect(front).await.unwrap());
    }
    wait_for("the loris connections to be accepted", || async {
        let metrics = server.metrics().render();
        metrics.contains("portico_connections_total{listener=\"front\"} 2000")
    })
    .await;
    let started = Instant::now();
    let served = greeted_from("127.0.0.1", front, &pki).await;
    let took = started.elapsed();
    assert!(served.is_ok(), "{served:?}");
    assert!(took < Duration::from_secs(1), "served after {took:?}");
    // handshake_timeout is 2 s in this config: every loris is closed.
    let mut closed = 0;
    for mut tcp in loris {
        let mut byte = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut byte)).await
        {
            closed += 1;
        }
    }
    assert_eq!(closed, 2_000);
}

/// With default limits, one source that opens more handshakes than the
/// listener has slots (each sends one byte of a ClientHello, then nothing)
/// gets only its share: every other client is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_cannot_take_every_handshake_slot() {
    rlimit::increase_nofile_limit(16_384).unwrap();
    let (pki, _backend, server, front) = front_door_with("").await;
    let mut hogs = Vec::with_capacity(4_200);
    for _ in 0..4_200 {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut tcp = socket.connect(front).await.unwrap();
        let _ = tcp.write_all(&[0x16]).await;
        hogs.push(tcp);
    }
    // All but its share (64) refused at accept; some of the share may
    // have timed out meanwhile and been replaced.
    let series =
        "portico_connections_refused_total{listener=\"front\",reason=\"source_handshakes\"} ";
    wait_for("the hogs to be refused", || async {
        let metrics = server.metrics().render();
        let refused: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        refused >= 4_000
    })
    .await;
    let served = greeted_from("127.0.0.1", front, &pki).await;
    assert!(served.is_ok(), "{served:?}");
    drop(hogs);
}
