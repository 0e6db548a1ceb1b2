//! OpenWire with ActiveMQ's own client, unchanged: the `activemq producer`
//! and `activemq consumer` commands of Debian's `activemq` package (the
//! ones Amazon MQ's tutorial runs), over TLS and plain TCP, and messages
//! crossing between OpenWire and STOMP both ways.

mod common;

use std::time::Duration;

use common::*;
use portico_broker::stomp::{Command, Frame};
use portico_test_support::activemq;

const OPENWIRE: &str = r#"
[[transport]]
name = "openwire+ssl"
bind = "127.0.0.1:0"
cert = "broker.crt"
key = "broker.key"

[[transport]]
name = "openwire"
bind = "127.0.0.1:0"
"#;

async fn run(dir: &BrokerDir, args: Vec<String>) -> String {
    let dir_path = dir.dir.path().to_owned();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        activemq(&dir_path.join("activemq"), &dir_path.join("ca.crt"), &args)
    })
    .await
    .unwrap()
}

/// `activemq producer` of `count` messages to `destination`, with `extra`
/// options.
async fn produce(
    dir: &BrokerDir,
    url: &str,
    destination: &str,
    count: u32,
    extra: &[&str],
) -> String {
    let count = count.to_string();
    let mut args = vec![
        "producer",
        "--brokerUrl",
        url,
        "--destination",
        destination,
        "--messageCount",
        &count,
    ];
    args.extend_from_slice(extra);
    run(dir, args.iter().map(|s| (*s).to_owned()).collect()).await
}

/// `activemq consumer` of `count` messages from `destination`.
async fn consume(dir: &BrokerDir, url: &str, destination: &str, count: u32) -> String {
    let count = count.to_string();
    let args = [
        "consumer",
        "--brokerUrl",
        url,
        "--destination",
        destination,
        "--messageCount",
        &count,
    ];
    run(dir, args.iter().map(|s| (*s).to_owned()).collect()).await
}

/// The queue's figures on the console.
async fn queue(console: std::net::SocketAddr, name: &str) -> serde_json::Value {
    queue_figures(console, name).await
}

/// The tutorial's commands, as written, over TLS: persistent messages
/// produced, stored and consumed; the console counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activemqs_producer_and_consumer_work_unchanged_over_tls() {
    let dir = BrokerDir::new(OPENWIRE);
    let broker = dir.start().await;
    let ssl = broker.transport_addr("openwire+ssl").unwrap();
    let console = broker.console_addr().unwrap();
    let url = format!("ssl://localhost:{}", ssl.port());
    let produced = produce(
        &dir,
        &url,
        "queue://MyQueue",
        200,
        &["--messageSize", "1024", "--persistent", "true"],
    )
    .await;
    assert!(produced.contains("Produced: 200 messages"), "{produced}");
    let figures = queue(console, "MyQueue").await;
    assert_eq!(figures["pending"], 200, "{figures}");
    let consumed = consume(&dir, &url, "queue://MyQueue", 200).await;
    assert!(consumed.contains("Consumed: 200 messages"), "{consumed}");
    wait_for("the consumer's acknowledgements", || async {
        queue(console, "MyQueue").await["dequeued"] == 200
    })
    .await;
    assert_eq!(queue(console, "MyQueue").await["pending"], 0);
    broker.shutdown(Duration::from_secs(1)).await;
}

/// A message sent over STOMP reaches an OpenWire consumer as a text
/// message, and one sent over OpenWire reaches a STOMP subscriber with
/// its JMS headers as STOMP headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_cross_between_stomp_and_openwire_both_ways() {
    let dir = BrokerDir::new(OPENWIRE);
    let broker = dir.start().await;
    let openwire = broker.transport_addr("openwire").unwrap();
    let stomp = broker.transport_addr("stomp").unwrap();
    let url = format!("tcp://127.0.0.1:{}", openwire.port());

    // STOMP to OpenWire.
    let mut client = RawClient::connect(stomp).await;
    client
        .send(
            &Frame::new(Command::Send)
                .header("destination", "/queue/crossing")
                .header("persistent", "true")
                .header("receipt", "r")
                .body("hello from STOMP"),
        )
        .await;
    assert_eq!(client.next().await.unwrap().command, Command::Receipt);
    let consumed = consume(&dir, &url, "queue://crossing", 1).await;
    assert!(consumed.contains("Received hello from STOMP"), "{consumed}");

    // OpenWire to STOMP.
    let produced = produce(
        &dir,
        &url,
        "queue://crossing.back",
        3,
        &["--persistent", "true"],
    )
    .await;
    assert!(produced.contains("Produced: 3 messages"), "{produced}");
    client
        .send(
            &Frame::new(Command::Subscribe)
                .header("destination", "/queue/crossing.back")
                .header("id", "s"),
        )
        .await;
    for n in 0..3 {
        let m = client.next().await.unwrap();
        assert_eq!(m.command, Command::Message, "{m:?}");
        assert_eq!(
            String::from_utf8_lossy(&m.body),
            format!("test message: {n}")
        );
        assert_eq!(m.get("persistent"), Some("true"), "{m:?}");
        assert!(m.get("priority").is_some(), "{m:?}");
        assert!(
            !m.headers.iter().any(|(k, _)| k.starts_with("portico-")),
            "{m:?}"
        );
    }
    broker.shutdown(Duration::from_secs(1)).await;
}

/// A wrong password gets ActiveMQ's own refusal; the right one connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_refused_as_activemq_refuses_it() {
    let dir = BrokerDir::new(&format!(
        "{OPENWIRE}
[[user]]
name = \"app\"
password_file = \"app.password\"
"
    ));
    std::fs::write(dir.path("app.password"), "right").unwrap();
    let broker = dir.start().await;
    let openwire = broker.transport_addr("openwire").unwrap();
    let url = format!("tcp://127.0.0.1:{}", openwire.port());
    let login = |password| ["--user", "app", "--password", password];
    let refused = produce(&dir, &url, "queue://q", 1, &login("wrong")).await;
    assert!(
        refused.contains("User name [app] or password is invalid."),
        "{refused}"
    );
    let produced = produce(&dir, &url, "queue://q", 1, &login("right")).await;
    assert!(produced.contains("Produced: 1 messages"), "{produced}");
    broker.shutdown(Duration::from_secs(1)).await;
}

/// `tests/java/JmsScenarios.java`, compiled once against ActiveMQ's client
/// jars; the folder with its class.
fn jms_program() -> &'static std::path::Path {
    static COMPILED: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    COMPILED.get_or_init(|| {
        let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("jms-scenarios");
        std::fs::create_dir_all(&out).unwrap();
        let source = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/java/JmsScenarios.java");
        let compiled = portico_test_support::output_within(
            std::process::Command::new("javac")
                .arg("-d")
                .arg(&out)
                .args(["-cp", "/usr/share/activemq/lib/*", source]),
            Duration::from_secs(120),
        );
        assert!(
            compiled.status.success(),
            "javac (default-jdk-headless) failed:\n{}",
            String::from_utf8_lossy(&compiled.stderr)
        );
        out
    })
}

/// Runs one JMS scenario against a fresh broker's OpenWire port.
async fn jms_scenario(name: &'static str) {
    let dir = BrokerDir::new(OPENWIRE);
    let broker = dir.start().await;
    run_jms(&broker, name).await;
    broker.shutdown(Duration::from_secs(1)).await;
}

/// Runs JMS scenario `name` against `broker`'s OpenWire port.
async fn run_jms(broker: &portico_broker::Broker, name: &'static str) {
    let openwire = broker.transport_addr("openwire").unwrap();
    let url = format!("tcp://127.0.0.1:{}", openwire.port());
    let output = tokio::task::spawn_blocking(move || {
        let classes = jms_program();
        portico_test_support::output_within(
            std::process::Command::new("java")
                .arg("-cp")
                .arg(format!("{}:/usr/share/activemq/lib/*", classes.display()))
                .args(["JmsScenarios", name, &url]),
            Duration::from_secs(120),
        )
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains(&format!("ok {name}")),
        "JMS scenario {name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jms_poison_acknowledgements_make_dead_letters_at_once() {
    jms_scenario("dead_letter").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jms_local_transactions_commit_and_roll_back() {
    jms_scenario("transactions").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jms_client_acknowledge_is_cumulative() {
    jms_scenario("client_ack").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jms_selectors_pick_by_property() {
    jms_scenario("selectors").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jms_durable_subscribers_get_what_they_missed() {
    jms_scenario("durable").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jms_message_types_headers_and_properties_round_trip() {
    jms_scenario("types").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jms_consumers_with_prefetch_0_pull_each_message() {
    jms_scenario("pull").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jms_request_reply_over_a_temporary_queue() {
    jms_scenario("request_reply").await;
}

/// What an OpenWire client that is not one gets: the broker's
/// WireFormatInfo, then a closed connection (an old version, a wrong
/// magic, a lying length); the broker counts each and serves the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_openwire_clients_are_closed_and_counted() {
    use portico_broker::openwire::command::WireFormatInfo;
    use portico_broker::openwire::{decode_frame, encode, Body};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = BrokerDir::new(OPENWIRE);
    let broker = dir.start().await;
    let openwire = broker.transport_addr("openwire").unwrap();
    let console = broker.console_addr().unwrap();
    let old_version = {
        let mut bytes = Vec::new();
        encode(
            &portico_broker::openwire::Command::new(Body::WireFormatInfo(WireFormatInfo {
                version: 9,
                properties: None,
            })),
            &mut bytes,
        );
        bytes
    };
    let mut wrong_magic = old_version.clone();
    wrong_magic[5..13].copy_from_slice(b"NotActiv");
    let mut lying = old_version.clone();
    // Version 12, and options that claim a gigabyte.
    lying[13..17].copy_from_slice(&12i32.to_be_bytes());
    lying.truncate(17);
    lying.extend_from_slice(&[1, 0x40, 0, 0, 0]);
    let size = (lying.len() - 4) as i32;
    lying[..4].copy_from_slice(&size.to_be_bytes());
    for (what, bytes) in [
        ("an old version", old_version),
        ("a wrong magic", wrong_magic),
        ("a lying length", lying),
    ] {
        let mut tcp = tokio::net::TcpStream::connect(openwire).await.unwrap();
        tcp.write_all(&bytes).await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(DEADLINE, tcp.read_to_end(&mut got))
            .await
            .unwrap_or_else(|_| panic!("{what}: still open"))
            .unwrap();
        let (hello, _) = decode_frame(&got, 1 << 20)
            .unwrap()
            .expect("a WireFormatInfo");
        assert!(matches!(hello.body, Body::WireFormatInfo(_)), "{what}");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&http_get(console, "/api/broker").await).unwrap();
    assert!(
        summary["protocol_errors"].as_u64().unwrap() >= 3,
        "{summary}"
    );
    // The next client is served.
    let url = format!("tcp://127.0.0.1:{}", openwire.port());
    let produced = produce(&dir, &url, "queue://after", 1, &[]).await;
    assert!(produced.contains("Produced: 1 messages"), "{produced}");
    broker.shutdown(Duration::from_secs(1)).await;
}

/// Keep-alives both ways, at the inactivity duration the client offers
/// (the smaller of both sides'): the broker sends KeepAliveInfo when it
/// has nothing else to send, and drops a client silent for twice the
/// duration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alives_go_both_ways_and_a_silent_client_is_dropped() {
    use portico_broker::openwire::command::{ConnectionInfo, WireFormatInfo};
    use portico_broker::openwire::types::{map_bytes, ConnectionId, Value};
    use portico_broker::openwire::{encode, Body, Command as Ow};

    let dir = BrokerDir::new(OPENWIRE);
    let broker = dir.start().await;
    let openwire = broker.transport_addr("openwire").unwrap();
    let mut hello = Vec::new();
    let options = vec![("MaxInactivityDuration".to_owned(), Value::Long(600))];
    encode(
        &Ow::new(Body::WireFormatInfo(WireFormatInfo {
            version: 12,
            properties: Some(map_bytes(&options)),
        })),
        &mut hello,
    );
    encode(
        &Ow {
            id: 1,
            response_required: true,
            body: Body::ConnectionInfo(Box::new(ConnectionInfo {
                connection_id: Some(ConnectionId("ID:silent-1".into())),
                ..ConnectionInfo::default()
            })),
        },
        &mut hello,
    );
    let (seen, closed_after) = commands_until_closed(openwire, &hello).await;
    let kinds: Vec<u8> = seen.iter().map(|(_, b)| b.kind()).collect();
    // WireFormatInfo, BrokerInfo, the Response to ConnectionInfo, then
    // keep-alives.
    assert_eq!(&kinds[..3], &[1, 2, 30], "{kinds:?}");
    let keep_alives = seen
        .iter()
        .filter(|(_, b)| matches!(b, Body::KeepAliveInfo))
        .count();
    assert!(keep_alives >= 2, "{kinds:?}");
    // Silent for twice 600 ms: dropped, well before our deadline.
    assert!(
        closed_after >= Duration::from_millis(1100) && closed_after < Duration::from_secs(5),
        "closed after {closed_after:?}"
    );
    broker.shutdown(Duration::from_secs(1)).await;
}

/// Request and reply across protocols: a JMS requester's temporary queue
/// is `/temp-queue/…` in its request's `reply-to`, and a STOMP responder's
/// answer sent there reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stomp_client_answers_a_jms_request_on_its_temporary_queue() {
    let dir = BrokerDir::new(OPENWIRE);
    let broker = dir.start().await;
    let stomp = broker.transport_addr("stomp").unwrap();
    let mut responder = RawClient::connect(stomp).await;
    responder
        .send(
            &Frame::new(Command::Subscribe)
                .header("destination", "/queue/jms.requests.stomp")
                .header("id", "r")
                .header("receipt", "ready"),
        )
        .await;
    assert_eq!(responder.next().await.unwrap().command, Command::Receipt);
    let answering = tokio::spawn(async move {
        let request = responder.next().await.expect("the JMS request");
        assert_eq!(request.body, b"ping", "{request:?}");
        let reply_to = request.get("reply-to").expect("reply-to").to_owned();
        assert!(reply_to.starts_with("/temp-queue/"), "{reply_to}");
        responder
            .send(
                &Frame::new(Command::Send)
                    .header("destination", reply_to.clone())
                    .header(
                        "correlation-id",
                        request.get("correlation-id").unwrap_or(""),
                    )
                    .header("receipt", "answered")
                    .body("pong"),
            )
            .await;
        let receipt = responder.next().await.unwrap();
        assert_eq!(receipt.command, Command::Receipt, "{receipt:?}");
        // Only the JMS connection that made it reads from it.
        responder
            .send(
                &Frame::new(Command::Subscribe)
                    .header("destination", reply_to)
                    .header("id", "steal"),
            )
            .await;
        let refused = responder.next().await.unwrap();
        assert_eq!(refused.command, Command::Error, "{refused:?}");
    });
    run_jms(&broker, "request_reply_stomp").await;
    answering.await.unwrap();
    broker.shutdown(Duration::from_secs(1)).await;
}

/// A broker's network connection (BrokerInfo with `networkConnection`)
/// from a user without `bridge = true` is refused with ActiveMQ's
/// SecurityException, and opens no bridge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_connection_needs_a_user_that_may_bridge() {
    use portico_broker::openwire::command::{BrokerInfo, ConnectionInfo, WireFormatInfo};
    use portico_broker::openwire::types::{BrokerId, ConnectionId};
    use portico_broker::openwire::{encode, Body, Command as Ow};

    let hash = portico_broker::auth::hash_password("app-secret").unwrap();
    let dir = BrokerDir::new(&format!(
        "{OPENWIRE}\n[[user]]\nname = \"app\"\npassword_hash = \"{hash}\"\n"
    ));
    let broker = dir.start().await;
    let openwire = broker.transport_addr("openwire").unwrap();
    let mut hello = Vec::new();
    encode(
        &Ow::new(Body::WireFormatInfo(WireFormatInfo {
            version: 12,
            properties: None,
        })),
        &mut hello,
    );
    encode(
        &Ow::new(Body::BrokerInfo(Box::new(BrokerInfo {
            broker_id: Some(BrokerId("ID:onprem-1".into())),
            broker_url: None,
            peers: None,
            broker_name: Some("onprem".into()),
            slave: false,
            master: false,
            fault_tolerant: false,
            duplex: true,
            network: true,
            connection_id: 0,
            upload_url: None,
            network_properties: None,
        }))),
        &mut hello,
    );
    encode(
        &Ow {
            id: 1,
            response_required: true,
            body: Body::ConnectionInfo(Box::new(ConnectionInfo {
                connection_id: Some(ConnectionId("ID:onprem-bridge-1".into())),
                user: Some("app".into()),
                password: Some("app-secret".into()),
                ..ConnectionInfo::default()
            })),
        },
        &mut hello,
    );
    let (seen, _) = commands_until_closed(openwire, &hello).await;
    let (correlation, error) = seen
        .into_iter()
        .find_map(|(_, body)| match body {
            Body::ExceptionResponse { correlation, error } => Some((correlation, error)),
            _ => None,
        })
        .expect("an ExceptionResponse before the close");
    let error = error.unwrap();
    assert_eq!(correlation, 1);
    assert_eq!(error.class.as_deref(), Some("java.lang.SecurityException"));
    assert!(
        error
            .message
            .as_deref()
            .unwrap_or("")
            .contains("network bridges"),
        "{error:?}"
    );
    let bridges = http_get(broker.console_addr().unwrap(), "/api/network").await;
    assert_eq!(bridges.trim(), "[]");
    broker.shutdown(Duration::from_secs(1)).await;
}

/// Connects to `addr`, sends `hello`, and reads every command the broker
/// sends until it closes the connection: each with when it came, and when
/// the connection closed (from the moment `hello` was sent).
async fn commands_until_closed(
    addr: std::net::SocketAddr,
    hello: &[u8],
) -> (Vec<(Duration, portico_broker::openwire::Body)>, Duration) {
    use portico_broker::openwire::decode_frame;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(hello).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(DEADLINE, tcp.read(&mut chunk))
            .await
            .expect("the broker neither wrote nor closed")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some((command, used)) = decode_frame(&buf, 1 << 20).unwrap() {
            buf.drain(..used);
            seen.push((started.elapsed(), command.body));
        }
    }
    (seen, started.elapsed())
}
