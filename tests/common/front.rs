//! A TLS listener in front of a TLS target group: the setup most
//! front-door stories start from.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

use super::*;

/// A TLS listener in front of a TLS group; `extra_group` and `extra_listener`
/// are appended to their tables.
pub fn front_config(
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

pub async fn all_healthy(server: &portico::Server) {
    wait_for("every target healthy", || async {
        states(server).iter().all(|(_, s)| s == "healthy")
    })
    .await;
}

/// One healthy TLS backend behind a front door whose listener has `extra`
/// (a `[listener.tls]` or `[listener.limits]` table, say).
pub async fn front_door_with(extra: &str) -> (Pki, Backend, portico::Server, std::net::SocketAddr) {
    let pki = Pki::front_and_broker();
    let backend = Backend::tls("b1", "127.0.0.1", 0, &pki, "broker").await;
    let server = start_portico(
        pki.dir.path(),
        &front_config(&pki, &[backend.addr.to_string()], "", "", extra),
    )
    .await;
    all_healthy(&server).await;
    let front = server.listener_addr("front").unwrap();
    (pki, backend, server, front)
}

/// Opens a TLS connection from `source` (a loopback address) and reads
/// the greeting: the stream and the name of the backend that answered.
pub async fn tls_from(
    source: &str,
    front: std::net::SocketAddr,
    pki: &Pki,
) -> std::io::Result<(tokio_rustls::client::TlsStream<TcpStream>, String)> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().unwrap())?;
    let tcp = socket.connect(front).await?;
    let name = rustls::pki_types::ServerName::try_from("mq.localhost").unwrap();
    let connect = tokio_rustls::TlsConnector::from(pki.client_config()).connect(name, tcp);
    let tls = tokio::time::timeout(DEADLINE, connect)
        .await
        .map_err(|_| std::io::Error::other("handshake timed out"))??;
    let mut reader = tokio::io::BufReader::new(tls);
    let name = greeting(&mut reader).await?;
    Ok((reader.into_inner(), name))
}

/// `tls_from`, answered by the backend `b1` of `front_door_with`.
pub async fn greeted_from(
    source: &str,
    front: std::net::SocketAddr,
    pki: &Pki,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let (tls, name) = tls_from(source, front, pki).await?;
    assert_eq!(name, "b1");
    Ok(tls)
}

/// Waits until the server's metrics hold every one of `lines` (a session
/// counts how it ended on its own thread, after its client has seen the
/// end); returns them.
pub async fn metrics_showing(server: &portico::Server, lines: &[&str]) -> String {
    wait_for(&format!("the metrics to show {lines:?}"), || async {
        let metrics = server.metrics().render();
        lines.iter().all(|l| metrics.contains(l))
    })
    .await;
    server.metrics().render()
}
