//! A portico broker behind the front door with PROXY protocol v2: the
//! broker sees each client's own address (in its console, its logs, its
//! per-source limits), and a connection that does not start with the
//! header is closed.

mod common;

use std::time::Duration;

use common::*;
use portico_broker::config::BrokerConfig;
use portico_broker::stomp::{decode, Command, Decoded, Frame, Limits};
use portico_broker::Broker;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A STOMP CONNECT over `stream`; the broker's answer (None: closed).
async fn connect(mut stream: TcpStream) -> (TcpStream, Option<Frame>) {
    let connect = Frame::new(Command::Connect)
        .header("accept-version", "1.2")
        .header("host", "x");
    if stream.write_all(&connect.to_bytes()).await.is_err() {
        return (stream, None);
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Ok(Some(Decoded::Frame(f))) = decode(&mut buf, &Limits::default()) {
            return (stream, Some(f));
        }
        match tokio::time::timeout(DEADLINE, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return (stream, None),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_sees_the_client_through_the_front_door() {
    let dir = tempfile::tempdir().unwrap();
    let broker_toml = dir.path().join("broker.toml");
    std::fs::write(
        &broker_toml,
        "[broker]\nname = \"behind\"\ndata_dir = \"data\"\n\n[[transport]]\nname = \"stomp\"\nbind = \"127.0.0.1:0\"\nproxy_protocol = true\n\n[console]\nbind = \"127.0.0.1:0\"\n\n[limits]\nmax_connections_per_source = 1\n",
    )
    .unwrap();
    let broker = Broker::start(BrokerConfig::load(&broker_toml).unwrap())
        .await
        .unwrap();
    let stomp = broker.transport_addr("stomp").unwrap();
    let front = start_portico(
        dir.path(),
        &format!(
            r#"
[[listener]]
name = "front"
bind = "127.0.0.1:0"
protocol = "tcp"
target_group = "brokers"
proxy_protocol = true

[[target_group]]
name = "brokers"
protocol = "tcp"
targets = ["{stomp}"]
"#
        ),
    )
    .await;
    wait_for("the broker healthy", || async {
        front.targets().iter().all(|t| t.state == "healthy")
    })
    .await;
    let front_addr = front.listener_addr("front").unwrap();
    // A client on 127.0.0.3, through the front door.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.3:0".parse().unwrap()).unwrap();
    let (_client, answer) = connect(socket.connect(front_addr).await.unwrap()).await;
    assert_eq!(answer.map(|f| f.command), Some(Command::Connected));
    let connections: serde_json::Value = serde_json::from_str(
        &admin_get(broker.console_addr().unwrap(), "/api/connections")
            .await
            .1,
    )
    .unwrap();
    let remote = connections[0]["remote"].as_str().unwrap().to_owned();
    assert!(remote.starts_with("127.0.0.3:"), "{connections}");
    // Per-source limits see that address: a second client from 127.0.0.3
    // is refused, one from 127.0.0.4 served (all through one front door).
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.3:0".parse().unwrap()).unwrap();
    let (_, second) = connect(socket.connect(front_addr).await.unwrap()).await;
    assert_eq!(second, None, "a second connection from 127.0.0.3");
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.4:0".parse().unwrap()).unwrap();
    let (_other, answer) = connect(socket.connect(front_addr).await.unwrap()).await;
    assert_eq!(answer.map(|f| f.command), Some(Command::Connected));
    // Straight to the broker, with no PROXY header: closed.
    let (_, direct) = connect(TcpStream::connect(stomp).await.unwrap()).await;
    assert_eq!(direct, None);
    front.shutdown(Duration::from_secs(1)).await;
    broker.shutdown(Duration::from_secs(1)).await;
}
