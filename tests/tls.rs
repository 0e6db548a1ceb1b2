//! TLS at the front door: SNI picks the certificate, re-encryption checks
//! the backend's name, client certificates, resumption, cipher choice, ALPN.

mod common;

use std::sync::Arc;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    let pki = Pki::front_and_broker();
    pki.issue("other", &["other.localhost"]);
    let backend = Backend::tls("b1", "127.0.0.1", 0, &pki, "broker").await;
    let first = "  [[listener.certificate]]\n  cert = \"front.crt\"\n  key = \"front.key\"\n";
    let both = format!(
        "{first}  [[listener.certificate]]\n  cert = \"other.crt\"\n  key = \"other.key\"\n"
    );
    let toml = front_config(&pki, &[backend.addr.to_string()], "", "", "").replace(first, &both);
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
    let pki = Pki::front_and_broker();
    pki.issue("impostor", &["impostor.internal"]);
    let good = Backend::tls("good", "127.0.0.1", 0, &pki, "broker").await;
    let bad = Backend::tls("bad", "127.0.0.1", 0, &pki, "impostor").await;
    let server = start_portico(
        pki.dir.path(),
        &front_config(
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
        &front_config(&pki, &[bad.addr.to_string()], "", "", ""),
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
async fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let pki = Pki::front_and_broker();
    pki.issue("client", &["client.localhost"]);
    let backend = Backend::tls("b1", "127.0.0.1", 0, &pki, "broker").await;
    let tls = format!("  [listener.tls]\n  client_ca = {:?}\n", pki.path("ca.crt"));
    let server = start_portico(
        pki.dir.path(),
        &front_config(&pki, &[backend.addr.to_string()], "", "", &tls),
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
    metrics_showing(&server, &["reason=\"no_client_certificate\"} 1"]).await;
}

/// Both legs: the client resumes with the front door, and the front door
/// with the target (its ticket from the first connection), so the second
/// connection costs no certificate signature or verification on either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_sessions_resume() {
    let (pki, _backend, server, front) = front_door_with("").await;
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
    let metrics = server.metrics().render();
    let count = |kind: &str| -> u64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("portico_upstream_tls_handshakes_total{")
                    && l.contains(&format!("kind=\"{kind}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {kind} series in:\n{metrics}"))
    };
    assert_eq!((count("full"), count("resumed")), (1, 1), "{metrics}");
}

/// The server picks AES-128-GCM for a client that lists AES-256-GCM first
/// (rustls's and OpenSSL's default order), and honours a client that lists
/// ChaCha20-Poly1305 before AES (no AES instructions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_picks_aes_128_gcm_unless_the_client_asks_for_chacha20_first() {
    use rustls::CipherSuite as S;
    let (pki, _backend, _server, front) = front_door_with("").await;
    let client_with = |first: S| {
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
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
    metrics_showing(
        &server,
        &["reason=\"no_alpn_match\"} 1", "reason=\"no_alpn\"} 1"],
    )
    .await;
}
