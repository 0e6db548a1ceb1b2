//! Which target a client reaches: the active node of a pair, round robin,
//! least connections, flow hash, and what happens when targets fail.

mod common;

use std::time::Duration;

use common::*;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_active_node_of_a_pair_gets_traffic_and_the_standby_takes_over() {
    let pki = Pki::front_and_broker();
    let port = same_port_on("127.0.0.2", "127.0.0.3").await;
    let console_port = same_port_on("127.0.0.2", "127.0.0.3").await;
    let a = Backend::tls("a", "127.0.0.2", port, &pki, "broker").await;
    let b = Backend::tls("b", "127.0.0.3", port, &pki, "broker").await;
    let console_a = Console::open("127.0.0.2", console_port).await;
    let targets = [a.addr.to_string(), b.addr.to_string()];
    let pairs = format!("pairs = [[{:?}, {:?}]]", targets[0], targets[1]);
    let health = format!("port = {console_port}");
    let server = start_portico(
        pki.dir.path(),
        &front_config(&pki, &targets, &health, &pairs, ""),
    )
    .await;
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
    let pki = Pki::front_and_broker();
    let console_port = same_port_on("127.0.0.2", "127.0.0.3").await;
    let a = Backend::tls("a", "127.0.0.2", 0, &pki, "broker").await;
    let b = Backend::tls("b", "127.0.0.3", 0, &pki, "broker").await;
    // Both consoles stay up: the active checks keep saying "healthy".
    let _ca = Console::open("127.0.0.2", console_port).await;
    let _cb = Console::open("127.0.0.3", console_port).await;
    let health = format!("port = {console_port}");
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
    let pki = Pki::front_and_broker();
    let backends = [
        Backend::tls("a", "127.0.0.1", 0, &pki, "broker").await,
        Backend::tls("b", "127.0.0.1", 0, &pki, "broker").await,
        Backend::tls("c", "127.0.0.1", 0, &pki, "broker").await,
    ];
    let targets: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
    let server = start_portico(pki.dir.path(), &front_config(&pki, &targets, "", "", "")).await;
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
    let pki = Pki::front_and_broker();
    let a = Backend::tls("a", "127.0.0.1", 0, &pki, "broker").await;
    let b = Backend::tls("b", "127.0.0.1", 0, &pki, "broker").await;
    let targets = [a.addr.to_string(), b.addr.to_string()];
    let server = start_portico(
        pki.dir.path(),
        &front_config(&pki, &targets, "", "algorithm = \"least_connections\"", ""),
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
    let pki = Pki::front_and_broker();
    let a = Backend::tls("a", "127.0.0.1", 0, &pki, "broker").await;
    let b = Backend::tls("b", "127.0.0.1", 0, &pki, "broker").await;
    let targets = [a.addr.to_string(), b.addr.to_string()];
    let server = start_portico(
        pki.dir.path(),
        &front_config(&pki, &targets, "", "algorithm = \"flow_hash\"", ""),
    )
    .await;
    all_healthy(&server).await;
    let front = server.listener_addr("front").unwrap();
    // Sixteen client addresses (the mapping of one address to one target is
    // checked in the selection's unit tests): both targets get some.
    for i in 0..16u8 {
        tls_from(&format!("127.0.1.{}", i + 1), front, &pki)
            .await
            .unwrap();
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
    let pki = Pki::front_and_broker();
    let backend = Backend::tls("b1", "127.0.0.1", 0, &pki, "broker").await;
    // The health port is closed, so the target is unhealthy, but its traffic port works.
    let dead_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let health = format!("port = {dead_port}");
    let targets = [backend.addr.to_string()];
    let open = start_portico(
        pki.dir.path(),
        &front_config(&pki, &targets, &health, "", ""),
    )
    .await;
    wait_for("unhealthy", || async {
        state_of(&open, backend.addr).as_deref() == Some("unhealthy")
    })
    .await;
    let front = open.listener_addr("front").unwrap();
    assert_eq!(who(front, pki.client_config()).await.unwrap(), "b1");

    let refuse = start_portico(
        pki.dir.path(),
        &front_config(
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
    metrics_showing(
        &refuse,
        &["portico_connections_refused_total{listener=\"front\",reason=\"no_target\"} 1"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_resets_is_skipped_and_its_reason_shown() {
    let pki = Pki::front_and_broker();
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
        &front_config(
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
