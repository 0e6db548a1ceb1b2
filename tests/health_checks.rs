//! How the front door learns about targets: http and https health checks,
//! hostnames re-resolved at their TTL, and the admin endpoints that show it.

mod common;

use std::sync::Arc;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_health_checks_use_the_path_and_matcher() {
    let pki = Pki::front_and_broker();
    let a = Backend::tls("a", "127.0.0.2", 0, &pki, "broker").await;
    let b = Backend::tls("b", "127.0.0.3", 0, &pki, "broker").await;
    let console_port = same_port_on("127.0.0.2", "127.0.0.3").await;
    let _ok = Console::http("127.0.0.2", console_port, 200).await;
    let _unavailable = Console::http("127.0.0.3", console_port, 503).await;
    let health = format!("protocol = \"http\"\n  port = {console_port}\n  path = \"/health\"\n  matcher = \"200-299\"");
    let server = start_portico(
        pki.dir.path(),
        &front_config(
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
async fn https_health_checks_reach_a_tls_console() {
    let pki = Pki::front_and_broker();
    let a = Backend::tls("a", "127.0.0.2", 0, &pki, "broker").await;
    let b = Backend::tls("b", "127.0.0.3", 0, &pki, "broker").await;
    let console_port = same_port_on("127.0.0.2", "127.0.0.3").await;
    // Only a has an HTTPS console; b's port speaks plain HTTP, which fails TLS.
    let _a_console = Console::https("127.0.0.2", console_port, 200, &pki, "broker").await;
    let _b_console = Console::http("127.0.0.3", console_port, 200).await;
    let health = format!("protocol = \"https\"\n  port = {console_port}");
    let server = start_portico(
        pki.dir.path(),
        &front_config(
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
    let pki = Pki::front_and_broker();
    let port = same_port_on("127.0.0.2", "127.0.0.3").await;
    let a = Backend::tls("a", "127.0.0.2", port, &pki, "broker").await;
    let b = Backend::tls("b", "127.0.0.3", port, &pki, "broker").await;
    let dns = TestDns::start(&["127.0.0.2"]).await;
    let resolver = format!("[resolver]\nnameservers = [\"{}\"]\n", dns.addr);
    let toml = format!(
        "{resolver}{}",
        front_config(&pki, &[format!("broker.portico.test:{port}")], "", "", "")
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
