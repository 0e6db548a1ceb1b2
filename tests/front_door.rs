//! End-to-end tests of the front door: real TLS clients, a real portico
//! server and real (in-process) TLS backends, all on loopback.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

/// A TLS listener in front of a TLS group; `extra_group` and `extra_listener`
/// are appended to their tables.
fn config(
    pki: &Pki,
    targets: &[String],
    health: &str,
    extra_group: &str,
    extra_listener: &str,
) -> String {
    let targets = targets
        .iter()
        .map(|t| format!("{t:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let ca = pki.path("ca.crt");
    format!(
        r#"
[admin]
bind = "127.0.0.1:0"

[[listener]]
name = "front"
bind = "127.0.0.1:0"
protocol = "tls"
target_group = "brokers"
handshake_timeout = "2s"
{extra_listener}
  [[listener.certificate]]
  cert = "front.crt"
  key = "front.key"

[[target_group]]
name = "brokers"
protocol = "tls"
ca = {ca:?}
server_name = "broker.internal"
connect_timeout = "1s"
targets = [{targets}]
{extra_group}
  [target_group.health_check]
  interval = "100ms"
  timeout = "100ms"
  healthy_threshold = 2
  unhealthy_threshold = 2
  {health}
"#
    )
}

fn pki() -> Pki {
    let pki = Pki::new();
    pki.issue("front", &["mq.localhost"]);
    pki.issue("broker", &["broker.internal"]);
    pki
}

async fn all_healthy(server: &portico::Server) {
    wait_for("every target healthy", || async {
        states(server).iter().all(|(_, s)| s == "healthy")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reencrypts_to_the_backend_with_its_server_name() {
    let (pki, backend, _server, front) = front_door_with("").await;

    let (mut stream, greeting) = tls_connect(front, pki.client_config(), "mq.localhost")
        .await
        .unwrap();
    assert_eq!(greeting, "b1");
    stream
        .write_all(b"ping through two TLS hops")
        .await
        .unwrap();
    let mut echoed = vec![0u8; 25];
    stream.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ping through two TLS hops");
    // The backend was reached over TLS, asked for its configured name.
    assert_eq!(
        backend.log.sni.lock().unwrap().as_slice(),
        &[Some("broker.internal".to_owned())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_chooses_the_certificate_and_the_first_is_the_default() {
    let pki = pki();
    pki.issue("other", &["other.localhost"]);
    let backend = Backend::tls("b1", "127.0.0.1", 0, &pki, "broker").await;
    let first = "  [[listener.certificate]]\n  cert = \"front.crt\"\n  key = \"front.key\"\n";
    let both = format!(
        "{first}  [[listener.certificate]]\n  cert = \"other.crt\"\n  key = \"other.key\"\n"
    );
    let toml = config(&pki, &[backend.addr.to_string()], "", "", "").replace(first, &both);
    let server = start_portico(pki.dir.path(), &toml).await;
    all_healthy(&server).await;
    let front = server.listener_addr("front").unwrap();

    // Each name verifies only if portico served the certificate for it.
    for name in ["mq.localhost", "other.localhost"] {
        let (_, greeting) = tls_connect(front, pki.client_config(), name).await.unwrap();
        assert_eq!(greeting, "b1", "{name}");
    }
    // An unknown name gets the default (first) certificate, which the client rejects.
    let err = tls_connect(front, pki.client_config(), "unknown.localhost")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
    // Without SNI, the default certificate (mq.localhost) is served.
    let mut config = (*pki.client_config()).clone();
    config.enable_sni = false;
    let (_, greeting) = tls_connect(front, Arc::new(config), "mq.localhost")
        .await
        .unwrap();
    assert_eq!(greeting, "b1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_with_a_certificate_for_another_name_is_never_used() {
    let pki = pki();
    pki.issue("impostor", &["impostor.internal"]);
    let good = Backend::tls("good", "127.0.0.1", 0, &pki, "broker").await;
    let bad = Backend::tls("bad", "127.0.0.1", 0, &pki, "impostor").await;
    let server = start_portico(
        pki.dir.path(),
        &config(
            &pki,
            &[bad.addr.to_string(), good.addr.to_string()],
            "",
            "",
            "",
        ),
    )
    .await;
    all_healthy(&server).await;
    let front = server.listener_addr("front").unwrap();
    for _ in 0..6 {
        assert_eq!(who(front, pki.client_config()).await.unwrap(), "good");
    }
    assert_eq!(
        bad.served(),
        0,
        "the impostor must never carry a client's bytes"
    );
    let view = server.targets();
    let bad_view = view
        .iter()
        .find(|t| t.address == bad.addr.to_string())
        .unwrap();
    assert!(
        bad_view.reason.contains("certificate") || bad_view.reason.contains("health check"),
        "reason: {}",
        bad_view.reason
    );

    // Alone, the impostor gets no client: the connection is closed, not proxied.
    let server2 = start_portico(
        pki.dir.path(),
        &config(&pki, &[bad.addr.to_string()], "", "", ""),
    )
    .await;
    all_healthy(&server2).await;
    let front2 = server2.listener_addr("front").unwrap();
    assert!(who(front2, pki.client_config()).await.is_err());
    assert_eq!(bad.served(), 0);
    let reason = &server2.targets()[0].reason;
    assert!(reason.contains("certificate"), "reason: {reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_active_node_of_a_pair_gets_traffic_and_the_standby_takes_over() {
    let pki = pki();
    let port = same_port_on("127.0.0.2", "127.0.0.3").await;
    let console_port = same_port_on("127.0.0.2", "127.0.0.3").await;
    let a = Backend::tls("a", "127.0.0.2", port, &pki, "broker").await;
    let b = Backend::tls("b", "127.0.0.3", port, &pki, "broker").await;
    let console_a = Console::open("127.0.0.2", console_port).await;
    let targets = [a.addr.to_string(), b.addr.to_string()];
    let pairs = format!("pairs = [[{:?}, {:?}]]", targets[0], targets[1]);
    let health = format!("port = {console_port}");
    let server = start_portico(pki.dir.path(), &config(&pki, &targets, &health, &pairs, "")).await;
    let front = server.listener_addr("front").unwrap();

    wait_for("a healthy, b standby", || async {
        state_of(&server, a.addr).as_deref() == Some("healthy")
            && state_of(&server, b.addr).as_deref() == Some("standby")
    })
    .await;
    for _ in 0..10 {
        assert_eq!(who(front, pki.client_config()).await.unwrap(), "a");
    }
    assert_eq!(b.served(), 0);
    let metrics = server.metrics().render();
    assert!(
        metrics.contains("portico_pair_active_nodes{group=\"brokers\""),
        "{metrics}"
    );

    // The active node dies (ports and console); the standby opens its console.
    a.stop();
    drop(console_a);
    let failed_at = Instant::now();
    let _console_b = Console::open("127.0.0.3", console_port).await;
    wait_for("the standby serves", || async {
        matches!(who(front, pki.client_config()).await.as_deref(), Ok("b"))
    })
    .await;
    let took = failed_at.elapsed();
    // interval × healthy threshold + one interval, plus scheduling slack.
    assert!(
        took < Duration::from_millis(300 + 700),
        "failover took {took:?}"
    );
    wait_for("a unhealthy or standby", || async {
        matches!(state_of(&server, a.addr).as_deref(), Some("standby"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_target_the_checker_has_not_caught_costs_no_client_a_refusal() {
    let pki = pki();
    let console_port = same_port_on("127.0.0.2", "127.0.0.3").await;
    let a = Backend::tls("a", "127.0.0.2", 0, &pki, "broker").await;
    let b = Backend::tls("b", "127.0.0.3", 0, &pki, "broker").await;
    // Both consoles stay up: the active checks keep saying "healthy".
    let _ca = Console::open("127.0.0.2", console_port).await;
    let _cb = Console::open("127.0.0.3", console_port).await;
    let health = format!("port = {console_port}");
    let server = start_portico(
        pki.dir.path(),
        &config(
            &pki,
            &[a.addr.to_string(), b.addr.to_string()],
            &health,
            "",
            "",
        ),
    )
    .await;
    all_healthy(&server).await;
    let front = server.listener_addr("front").unwrap();
    a.stop();
    let mut refused = 0;
    for _ in 0..20 {
        match who(front, pki.client_config()).await {
            Ok(name) => assert_eq!(name, "b"),
            Err(_) => refused += 1,
        }
    }
    assert_eq!(refused, 0, "clients refused while a healthy target existed");
    let metrics = server.metrics().render();
    let failures = metrics
        .lines()
        .find(|l| {
            l.starts_with("portico_upstream_connect_failures_total")
                && l.contains(&a.addr.to_string())
        })
        .unwrap_or_else(|| panic!("no connect failures counted for a:\n{metrics}"));
    let count: u64 = failures.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 1, "{failures}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_shares_connections_equally() {
    let pki = pki();
    let backends = [
        Backend::tls("a", "127.0.0.1", 0, &pki, "broker").await,
        Backend::tls("b", "127.0.0.1", 0, &pki, "broker").await,
        Backend::tls("c", "127.0.0.1", 0, &pki, "broker").await,
    ];
    let targets: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
    let server = start_portico(pki.dir.path(), &config(&pki, &targets, "", "", "")).await;
    all_healthy(&server).await;
    let front = server.listener_addr("front").unwrap();
    for _ in 0..9 {
        who(front, pki.client_config()).await.unwrap();
    }
    for b in &backends {
        assert_eq!(b.served(), 3, "backend {}", b.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_prefers_the_idle_target() {
    let pki = pki();
    let a = Backend::tls("a", "127.0.0.1", 0, &pki, "broker").await;
    let b = Backend::tls("b", "127.0.0.1", 0, &pki, "broker").await;
    let targets = [a.addr.to_string(), b.addr.to_string()];
    let server = start_portico(
        pki.dir.path(),
        &config(&pki, &targets, "", "algorithm = \"least_connections\"", ""),
    )
    .await;
    all_healthy(&server).await;
    let front = server.listener_addr("front").unwrap();
    // Hold three connections open; each new one goes to the less loaded target.
    let (first, name1) = tls_connect(front, pki.client_config(), "mq.localhost")
        .await
        .unwrap();
    let (_second, name2) = tls_connect(front, pki.client_config(), "mq.localhost")
        .await
        .unwrap();
    assert_ne!(name1, name2);
    drop(first);
    wait_for("the closed connection is counted out", || async {
        server
            .targets()
            .iter()
            .map(|t| t.active_connections)
            .sum::<usize>()
            == 1
    })
    .await;
    // One target has a connection, the other none: the next two go to the idle one, then alternate.
    let (_third, name3) = tls_connect(front, pki.client_config(), "mq.localhost")
        .await
        .unwrap();
    assert_eq!(name3, name1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_hash_spreads_client_addresses_over_the_targets() {
    let pki = pki();
    let a = Backend::tls("a", "127.0.0.1", 0, &pki, "broker").await;
    let b = Backend::tls("b", "127.0.0.1", 0, &pki, "broker").await;
    let targets = [a.addr.to_string(), b.addr.to_string()];
    let server = start_portico(
        pki.dir.path(),
        &config(&pki, &targets, "", "algorithm = \"flow_hash\"", ""),
    )
    .await;
    all_healthy(&server).await;
    let front = server.listener_addr("front").unwrap();
    // Sixteen client addresses (the mapping of one address to one target is
    // checked in the selection's unit tests): both targets get some.
    for i in 0..16u8 {
        let socket = TcpSocket::new_v4().unwrap();
        socket
            .bind(format!("127.0.1.{}:0", i + 1).parse().unwrap())
            .unwrap();
        let tcp = socket.connect(front).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("mq.localhost").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(pki.client_config())
            .connect(name, tcp)
            .await
            .unwrap();
        let mut greeting = [0u8; 2];
        tls.read_exact(&mut greeting).await.unwrap();
    }
    assert_eq!(a.served() + b.served(), 16);
    assert!(
        a.served() > 0 && b.served() > 0,
        "a {} b {}",
        a.served(),
        b.served()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_tries_every_target_and_refuse_closes_at_once() {
    let pki = pki();
    let backend = Backend::tls("b1", "127.0.0.1", 0, &pki, "broker").await;
    // The health port is closed, so the target is unhealthy, but its traffic port works.
    let dead_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let health = format!("port = {dead_port}");
    let targets = [backend.addr.to_string()];
    let open = start_portico(pki.dir.path(), &config(&pki, &targets, &health, "", "")).await;
    wait_for("unhealthy", || async {
        state_of(&open, backend.addr).as_deref() == Some("unhealthy")
    })
    .await;
    let front = open.listener_addr("front").unwrap();
    assert_eq!(who(front, pki.client_config()).await.unwrap(), "b1");

    let refuse = start_portico(
        pki.dir.path(),
        &config(
            &pki,
            &targets,
            &health,
            "when_all_unhealthy = \"refuse\"",
            "",
        ),
    )
    .await;
    wait_for("unhealthy", || async {
        state_of(&refuse, backend.addr).as_deref() == Some("unhealthy")
    })
    .await;
    let front = refuse.listener_addr("front").unwrap();
    let served_before = backend.served();
    let started = Instant::now();
    assert!(who(front, pki.client_config()).await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refusal must be immediate"
    );
    assert_eq!(backend.served(), served_before);
    let metrics = refuse.metrics().render();
    assert!(
        metrics.contains(
            "portico_connections_refused_total{listener=\"front\",reason=\"no_target\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_health_checks_use_the_path_and_matcher() {
    let pki = pki();
    let a = Backend::tls("a", "127.0.0.2", 0, &pki, "broker").await;
    let b = Backend::tls("b", "127.0.0.3", 0, &pki, "broker").await;
    let console_port = same_port_on("127.0.0.2", "127.0.0.3").await;
    let _ok = Console::http("127.0.0.2", console_port, 200).await;
    let _unavailable = Console::http("127.0.0.3", console_port, 503).await;
    let health = format!("protocol = \"http\"\n  port = {console_port}\n  path = \"/health\"\n  matcher = \"200-299\"");
    let server = start_portico(
        pki.dir.path(),
        &config(
            &pki,
            &[a.addr.to_string(), b.addr.to_string()],
            &health,
            "",
            "",
        ),
    )
    .await;
    wait_for("a healthy, b unhealthy", || async {
        state_of(&server, a.addr).as_deref() == Some("healthy")
            && state_of(&server, b.addr).as_deref() == Some("unhealthy")
    })
    .await;
    let reason = server
        .targets()
        .into_iter()
        .find(|t| t.address == b.addr.to_string())
        .unwrap()
        .reason;
    assert!(reason.contains("503"), "{reason}");
    let front = server.listener_addr("front").unwrap();
    for _ in 0..4 {
        assert_eq!(who(front, pki.client_config()).await.unwrap(), "a");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_report_health_metrics_and_targets() {
    let (pki, backend, server, front) = front_door_with("").await;
    let (mut stream, _) = tls_connect(front, pki.client_config(), "mq.localhost")
        .await
        .unwrap();
    stream.write_all(b"12345").await.unwrap();
    let mut back = [0u8; 5];
    stream.read_exact(&mut back).await.unwrap();
    drop(stream);
    let admin = server.admin_addr().unwrap();

    let (status, body) = admin_get(admin, "/healthz").await;
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");

    let (status, body) = admin_get(admin, "/targets").await;
    assert_eq!(status, 200);
    let targets: serde_json::Value = serde_json::from_str(&body).unwrap();
    let t = &targets[0];
    assert_eq!(t["group"], "brokers");
    assert_eq!(t["target"], backend.addr.to_string());
    assert_eq!(t["address"], backend.addr.to_string());
    assert_eq!(t["state"], "healthy");
    assert!(t["reason"].is_string() && t["last_check"].is_string());
    assert!(t["active_connections"].is_number());

    wait_for("bytes counted", || async {
        let (_, metrics) = admin_get(admin, "/metrics").await;
        metrics.contains("portico_bytes_total{listener=\"front\",direction=\"upstream\"} 5")
    })
    .await;
    let (_, metrics) = admin_get(admin, "/metrics").await;
    for needle in [
        "portico_connections_total{listener=\"front\"} 1",
        "portico_active_connections{listener=\"front\"}",
        "portico_target_healthy{group=\"brokers\"",
        "portico_health_checks_total{",
        "result=\"success\"",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
    assert_eq!(admin_get(admin, "/nope").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_clients_are_closed_and_counted_without_disturbing_others() {
    let pki = pki();
    let backend = Backend::tls("b1", "127.0.0.1", 0, &pki, "broker").await;
    let server = start_portico(
        pki.dir.path(),
        &config(
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

    let metrics = server.metrics().render();
    for reason in ["not_tls", "timeout", "incompatible"] {
        assert!(
            metrics.contains(&format!(
                "portico_handshake_failures_total{{listener=\"front\",reason=\"{reason}\"}} 1"
            )),
            "{reason} not counted:\n{metrics}"
        );
    }
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
async fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let pki = pki();
    pki.issue("client", &["client.localhost"]);
    let backend = Backend::tls("b1", "127.0.0.1", 0, &pki, "broker").await;
    let tls = format!("  [listener.tls]\n  client_ca = {:?}\n", pki.path("ca.crt"));
    let server = start_portico(
        pki.dir.path(),
        &config(&pki, &[backend.addr.to_string()], "", "", &tls),
    )
    .await;
    all_healthy(&server).await;
    let front = server.listener_addr("front").unwrap();
    let accepted = backend.accepted();
    assert!(who(front, pki.client_config()).await.is_err());
    assert_eq!(
        backend.accepted(),
        accepted,
        "a client without a certificate reached a target"
    );
    assert_eq!(
        who(front, pki.client_config_with_cert("client"))
            .await
            .unwrap(),
        "b1"
    );
    let metrics = server.metrics().render();
    assert!(
        metrics.contains("reason=\"no_client_certificate\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_outside_the_allow_list_are_refused_at_accept() {
    let pki = pki();
    let backend = Backend::tls("b1", "127.0.0.1", 0, &pki, "broker").await;
    let server = start_portico(
        pki.dir.path(),
        &config(
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

    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let tcp = socket.connect(front).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("mq.localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(pki.client_config())
        .connect(name, tcp)
        .await
        .unwrap();
    let mut greeting = [0u8; 3];
    tls.read_exact(&mut greeting).await.unwrap();
    assert_eq!(&greeting, b"b1\n");
    let metrics = server.metrics().render();
    assert!(metrics.contains("reason=\"not_allowed\"} 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_sessions_resume() {
    let (pki, _backend, _server, front) = front_door_with("").await;
    let client = pki.client_config();
    let (first, _) = tls_connect(front, client.clone(), "mq.localhost")
        .await
        .unwrap();
    assert_eq!(
        first.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Full)
    );
    drop(first);
    let (second, _) = tls_connect(front, client, "mq.localhost").await.unwrap();
    assert_eq!(
        second.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );
}

/// The server picks AES-128-GCM for a client that lists AES-256-GCM first
/// (rustls's and OpenSSL's default order), and honours a client that lists
/// ChaCha20-Poly1305 before AES (no AES instructions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_picks_aes_128_gcm_unless_the_client_asks_for_chacha20_first() {
    use rustls::CipherSuite as S;
    let (pki, _backend, _server, front) = front_door_with("").await;
    let client_with = |first: S| {
        let mut provider = rustls::crypto::ring::default_provider();
        provider
            .cipher_suites
            .sort_by_key(|suite| suite.suite() != first);
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(provider))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(pki.roots())
                .with_no_client_auth(),
        )
    };
    for (first, negotiated) in [
        (S::TLS13_AES_256_GCM_SHA384, S::TLS13_AES_128_GCM_SHA256),
        (S::TLS13_AES_128_GCM_SHA256, S::TLS13_AES_128_GCM_SHA256),
        (
            S::TLS13_CHACHA20_POLY1305_SHA256,
            S::TLS13_CHACHA20_POLY1305_SHA256,
        ),
    ] {
        let (tls, greeting) = tls_connect(front, client_with(first), "mq.localhost")
            .await
            .unwrap();
        assert_eq!(greeting, "b1");
        let suite = tls.get_ref().1.negotiated_cipher_suite().unwrap().suite();
        assert_eq!(suite, negotiated, "client offering {first:?} first");
    }
}

/// A plain `tcp` listener and group, with PROXY protocol v2 towards the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_passthrough_with_proxy_protocol_half_close_and_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::tcp_proxy_protocol("plain", "127.0.0.1", 0).await;
    let toml = format!(
        r#"
[[listener]]
name = "plain"
bind = "127.0.0.1:0"
protocol = "tcp"
target_group = "g"
proxy_protocol = true
idle_timeout = "400ms"

[[target_group]]
name = "g"
protocol = "tcp"
targets = ["{}"]
  [target_group.health_check]
  interval = "100ms"
  timeout = "100ms"
"#,
        backend.addr
    );
    let server = start_portico(dir.path(), &toml).await;
    all_healthy(&server).await;
    let front = server.listener_addr("plain").unwrap();

    let mut client = TcpStream::connect(front).await.unwrap();
    let me = client.local_addr().unwrap();
    let mut greeting = vec![0u8; format!("plain from {me}\n").len()];
    client.read_exact(&mut greeting).await.unwrap();
    assert_eq!(
        String::from_utf8(greeting).unwrap(),
        format!("plain from {me}\n")
    );

    // Half-close: the client stops sending, and still gets every byte back.
    client.write_all(b"last words").await.unwrap();
    client.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(DEADLINE, client.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rest, b"last words");

    // Idle: a silent connection is closed after the idle timeout.
    let mut idle = TcpStream::connect(front).await.unwrap();
    let started = Instant::now();
    let mut all = Vec::new();
    tokio::time::timeout(DEADLINE, idle.read_to_end(&mut all))
        .await
        .unwrap()
        .unwrap();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(350), "closed after {took:?}");
}

/// A DNS server for the test's own zone: every A query gets `answers`
/// with a one-second TTL; AAAA queries get no records.
struct TestDns {
    addr: std::net::SocketAddr,
    answers: Arc<std::sync::Mutex<Vec<std::net::Ipv4Addr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestDns {
    async fn start(answers: &[&str]) -> Self {
        use hickory_proto::op::Message;
        use hickory_proto::rr::rdata::A;
        use hickory_proto::rr::{RData, Record, RecordType};
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let answers = Arc::new(std::sync::Mutex::new(
            answers
                .iter()
                .map(|a| a.parse().unwrap())
                .collect::<Vec<_>>(),
        ));
        let current = answers.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut response = Message::response(query.metadata.id, query.metadata.op_code);
                response.metadata.recursion_desired = query.metadata.recursion_desired;
                response.metadata.recursion_available = true;
                response.metadata.authoritative = true;
                response.add_queries(query.queries.clone());
                for q in &query.queries {
                    if q.query_type() == RecordType::A {
                        for ip in current.lock().unwrap().iter() {
                            response.add_answer(Record::from_rdata(
                                q.name().clone(),
                                1,
                                RData::A(A(*ip)),
                            ));
                        }
                    }
                }
                let _ = socket.send_to(&response.to_vec().unwrap(), peer).await;
            }
        });
        Self {
            addr,
            answers,
            task,
        }
    }

    fn answer(&self, ips: &[&str]) {
        *self.answers.lock().unwrap() = ips.iter().map(|a| a.parse().unwrap()).collect();
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostname_targets_are_re_resolved_when_their_ttl_runs_out() {
    let pki = pki();
    let port = same_port_on("127.0.0.2", "127.0.0.3").await;
    let a = Backend::tls("a", "127.0.0.2", port, &pki, "broker").await;
    let b = Backend::tls("b", "127.0.0.3", port, &pki, "broker").await;
    let dns = TestDns::start(&["127.0.0.2"]).await;
    let resolver = format!("[resolver]\nnameservers = [\"{}\"]\n", dns.addr);
    let toml = format!(
        "{resolver}{}",
        config(&pki, &[format!("broker.portico.test:{port}")], "", "", "")
    );
    let server = start_portico(pki.dir.path(), &toml).await;
    let front = server.listener_addr("front").unwrap();
    wait_for("a resolved and healthy", || async {
        state_of(&server, a.addr).as_deref() == Some("healthy")
    })
    .await;
    let view = server.targets();
    assert_eq!(view.len(), 1);
    assert_eq!(view[0].target, format!("broker.portico.test:{port}"));
    assert_eq!(who(front, pki.client_config()).await.unwrap(), "a");

    // The broker moves: the name now points at another host.
    dns.answer(&["127.0.0.3"]);
    wait_for("b resolved and healthy, a gone", || async {
        let states = states(&server);
        states == vec![(b.addr.to_string(), "healthy".to_owned())]
    })
    .await;
    assert_eq!(who(front, pki.client_config()).await.unwrap(), "b");

    // Two addresses: each is its own target.
    dns.answer(&["127.0.0.2", "127.0.0.3"]);
    wait_for("both addresses are targets", || async {
        let states = states(&server);
        states.len() == 2 && states.iter().all(|(_, s)| s == "healthy")
    })
    .await;
    let mut names: Vec<String> = Vec::new();
    for _ in 0..4 {
        names.push(who(front, pki.client_config()).await.unwrap());
    }
    assert!(
        names.contains(&"a".to_owned()) && names.contains(&"b".to_owned()),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_resets_is_skipped_and_its_reason_shown() {
    let pki = pki();
    let good = Backend::tls("good", "127.0.0.1", 0, &pki, "broker").await;
    // A target that accepts and resets every connection at once.
    let resetter = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let reset_addr = resetter.local_addr().unwrap();
    let reset_task = tokio::spawn(async move {
        loop {
            if let Ok((tcp, _)) = resetter.accept().await {
                let _ = tcp.set_zero_linger();
                drop(tcp);
            }
        }
    });
    // Health checks go to a console that is always up, so only connects fail.
    let console = Console::open("127.0.0.1", 0).await;
    let health = format!("port = {}", console.addr.port());
    let good_console_target = good.addr.to_string();
    let server = start_portico(
        pki.dir.path(),
        &config(
            &pki,
            &[reset_addr.to_string(), good_console_target],
            &health,
            "",
            "",
        ),
    )
    .await;
    all_healthy(&server).await;
    let front = server.listener_addr("front").unwrap();
    for _ in 0..6 {
        assert_eq!(who(front, pki.client_config()).await.unwrap(), "good");
    }
    let metrics = server.metrics().render();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("portico_upstream_connect_failures_total")
                && l.contains(&reset_addr.to_string())
                && !l.ends_with(" 0")),
        "{metrics}"
    );
    reset_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_health_checks_reach_a_tls_console() {
    let pki = pki();
    let a = Backend::tls("a", "127.0.0.2", 0, &pki, "broker").await;
    let b = Backend::tls("b", "127.0.0.3", 0, &pki, "broker").await;
    let console_port = same_port_on("127.0.0.2", "127.0.0.3").await;
    // Only a has an HTTPS console; b's port speaks plain HTTP, which fails TLS.
    let _a_console = Console::https("127.0.0.2", console_port, 200, &pki, "broker").await;
    let _b_console = Console::http("127.0.0.3", console_port, 200).await;
    let health = format!("protocol = \"https\"\n  port = {console_port}");
    let server = start_portico(
        pki.dir.path(),
        &config(
            &pki,
            &[a.addr.to_string(), b.addr.to_string()],
            &health,
            "",
            "",
        ),
    )
    .await;
    wait_for("a healthy, b unhealthy", || async {
        state_of(&server, a.addr).as_deref() == Some("healthy")
            && state_of(&server, b.addr).as_deref() == Some("unhealthy")
    })
    .await;
    let view = server.targets();
    let b_reason = &view
        .iter()
        .find(|t| t.address == b.addr.to_string())
        .unwrap()
        .reason;
    assert!(b_reason.contains("TLS"), "{b_reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_is_negotiated_and_a_client_without_a_common_protocol_is_refused() {
    let tls = "  [listener.tls]\n  alpn = [\"stomp\"]\n";
    let (pki, backend, server, front) = front_door_with(tls).await;

    let with_alpn = |protocols: &[&[u8]]| {
        let mut config = (*pki.client_config()).clone();
        config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    };
    let (stream, greeting) = tls_connect(front, with_alpn(&[b"amqp", b"stomp"]), "mq.localhost")
        .await
        .unwrap();
    assert_eq!(greeting, "b1");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"stomp"[..]));

    let accepted = backend.accepted();
    assert!(tls_connect(front, with_alpn(&[b"amqp"]), "mq.localhost")
        .await
        .is_err());
    assert_eq!(
        backend.accepted(),
        accepted,
        "no target is touched for a client that cannot be served"
    );
    // A client that offers no ALPN at all is refused too.
    assert!(tls_connect(front, with_alpn(&[]), "mq.localhost")
        .await
        .is_err());
    assert_eq!(backend.accepted(), accepted);
    let metrics = server.metrics().render();
    assert!(metrics.contains("reason=\"no_alpn_match\"} 1"), "{metrics}");
    assert!(metrics.contains("reason=\"no_alpn\"} 1"), "{metrics}");
}

/// One healthy TLS backend behind a front door whose listener has `extra`
/// (a `[listener.tls]` or `[listener.limits]` table, say).
async fn front_door_with(extra: &str) -> (Pki, Backend, portico::Server, std::net::SocketAddr) {
    let pki = pki();
    let backend = Backend::tls("b1", "127.0.0.1", 0, &pki, "broker").await;
    let server = start_portico(
        pki.dir.path(),
        &config(&pki, &[backend.addr.to_string()], "", "", extra),
    )
    .await;
    all_healthy(&server).await;
    let front = server.listener_addr("front").unwrap();
    (pki, backend, server, front)
}

/// Opens a TLS connection from `source` and reads the backend's greeting.
async fn greeted_from(
    source: &str,
    front: std::net::SocketAddr,
    pki: &Pki,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().unwrap())?;
    let tcp = socket.connect(front).await?;
    let name = rustls::pki_types::ServerName::try_from("mq.localhost").unwrap();
    let connect = tokio_rustls::TlsConnector::from(pki.client_config()).connect(name, tcp);
    let mut tls = tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .map_err(|_| std::io::Error::other("handshake timed out"))??;
    let mut greeting = [0u8; 3];
    tls.read_exact(&mut greeting).await?;
    assert_eq!(&greeting, b"b1\n");
    Ok(tls)
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
