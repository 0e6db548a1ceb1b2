//! Hybrid networks: Debian's ActiveMQ broker and portico-broker in one
//! network of brokers. An ActiveMQ `<networkConnector duplex="true">` to
//! portico-broker's `openwire+ssl` port, and a portico-broker
//! `[[network_connector]]` with `protocol = "openwire"` to ActiveMQ's
//! `ssl://` port: messages produced on one side are consumed on the other,
//! both ways, by demand, and none is lost across a restart (SIGKILL) of
//! either broker.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command as Cmd;
use std::time::Duration;

use common::*;
use portico_broker::stomp::{Command, Frame};
use portico_test_support::activemq;

const BRIDGE_PASSWORD: &str = "bridge-secret";
const APP_PASSWORD: &str = "app-secret";
/// Long enough for a JVM to start, a bridge to reconnect and demand to
/// travel.
const SLOW: Duration = Duration::from_secs(90);

/// A portico-broker node with fixed ports (a restart keeps them).
struct Node {
    name: &'static str,
    toml: String,
    stomp: SocketAddr,
    console: SocketAddr,
    openwire_ssl: u16,
}

impl Node {
    fn new(name: &'static str, extra: &str) -> Self {
        let (stomp, console, openwire_ssl) = (free_port(), free_port(), free_port());
        let bridge = portico_broker::auth::hash_password(BRIDGE_PASSWORD).unwrap();
        let app = portico_broker::auth::hash_password(APP_PASSWORD).unwrap();
        let toml = format!(
            r#"
[broker]
name = "{name}"
data_dir = "{name}-data"

[[transport]]
name = "openwire+ssl"
bind = "127.0.0.1:{openwire_ssl}"
cert = "broker.crt"
key = "broker.key"

[[transport]]
name = "stomp"
bind = "127.0.0.1:{stomp}"

[console]
bind = "127.0.0.1:{console}"

[[user]]
name = "bridge"
password_hash = "{bridge}"
bridge = true

[[user]]
name = "app"
password_hash = "{app}"
{extra}
"#
        );
        Self {
            name,
            toml,
            stomp: ([127, 0, 0, 1], stomp).into(),
            console: ([127, 0, 0, 1], console).into(),
            openwire_ssl,
        }
    }

    fn start(&self, dir: &Path) -> Process {
        let node = broker_node(dir, self.name, &self.toml, &[]);
        let stomp = self.stomp;
        wait_until(&format!("{} listening", self.name), SLOW, || {
            std::net::TcpStream::connect(stomp).is_ok()
        });
        node
    }

    /// Bridges of this node that are connected.
    async fn bridges_up(&self) -> usize {
        bridges_connected(self.console).await
    }

    async fn pending(&self, queue: &str) -> u64 {
        queue_pending(self.console, queue).await
    }
}

/// A STOMP client of `app`, with the broker's heart-beats keeping reads
/// alive while it waits on the network.
async fn app(addr: SocketAddr) -> RawClient {
    let mut client = RawClient::open(addr).await;
    client
        .send(
            &Frame::new(Command::Connect)
                .header("accept-version", "1.2")
                .header("host", "localhost")
                .header("login", "app")
                .header("passcode", APP_PASSWORD)
                .header("heart-beat", "0,1000"),
        )
        .await;
    let connected = client.next().await.expect("CONNECTED");
    assert_eq!(connected.command, Command::Connected, "{connected:?}");
    client
}

/// `count` messages of `destination` (a subscription with `ack`), within SLOW.
async fn receive(client: &mut RawClient, destination: &str, ack: &str, count: usize) -> Vec<Frame> {
    client
        .send(
            &Frame::new(Command::Subscribe)
                .header("destination", destination)
                .header("id", "s")
                .header("ack", ack),
        )
        .await;
    let mut got = Vec::new();
    tokio::time::timeout(SLOW, async {
        while got.len() < count {
            let f = client
                .next()
                .await
                .expect("the broker closed the connection");
            if f.command == Command::Message {
                got.push(f);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} of {count} messages of {destination} in time", got.len()));
    got
}

/// Sends `count` persistent messages to `destination`, each with a receipt.
async fn send(client: &mut RawClient, destination: &str, count: usize) {
    for i in 0..count {
        client
            .send(
                &Frame::new(Command::Send)
                    .header("destination", destination)
                    .header("persistent", "true")
                    .header("receipt", format!("r{i}"))
                    .body(format!("from portico {i}")),
            )
            .await;
        let receipt = client.next().await.expect("RECEIPT");
        assert_eq!(receipt.command, Command::Receipt, "{receipt:?}");
    }
}

/// Debian's ActiveMQ broker named `onprem`: OpenWire on `openwire`, and
/// with `ssl` also on TLS (the test CA's certificate for localhost); a
/// network connector to `network` if given.
struct ActiveMq {
    base: PathBuf,
    openwire: u16,
    ssl: u16,
}

impl ActiveMq {
    fn new(dir: &Path, network: Option<u16>) -> Self {
        let base = dir.join("onprem");
        std::fs::create_dir_all(base.join("conf")).unwrap();
        let (openwire, ssl) = (free_port(), free_port());
        // Its TLS identity and trust: the test CA and its broker certificate.
        let p12 = base.join("conf/broker.p12");
        let made = Cmd::new("openssl")
            .args([
                "pkcs12",
                "-export",
                "-passout",
                "pass:changeit",
                "-name",
                "onprem",
            ])
            .arg("-in")
            .arg(dir.join("broker.crt"))
            .arg("-inkey")
            .arg(dir.join("broker.key"))
            .arg("-out")
            .arg(&p12)
            .output()
            .expect("openssl is needed");
        assert!(made.status.success(), "{made:?}");
        let trust = base.join("conf/trust.p12");
        let made = Cmd::new("keytool")
            .args([
                "-importcert",
                "-noprompt",
                "-alias",
                "ca",
                "-storetype",
                "PKCS12",
            ])
            .args(["-storepass", "changeit", "-file"])
            .arg(dir.join("ca.crt"))
            .arg("-keystore")
            .arg(&trust)
            .output()
            .expect("keytool (a JDK) is needed");
        assert!(made.status.success(), "{made:?}");
        let connector = network.map_or(String::new(), |port| {
            format!(
                r#"<networkConnectors>
      <networkConnector name="to-cloud" uri="static:(ssl://localhost:{port})" duplex="true"
                        userName="bridge" password="{BRIDGE_PASSWORD}"/>
    </networkConnectors>"#
            )
        });
        let xml = format!(
            r#"<beans xmlns="http://www.springframework.org/schema/beans"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="http://www.springframework.org/schema/beans http://www.springframework.org/schema/beans/spring-beans-2.0.xsd
  http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <broker xmlns="http://activemq.apache.org/schema/core" useJmx="false" brokerName="onprem"
          dataDirectory="{data}">
    <persistenceAdapter><kahaDB directory="{data}/kahadb"/></persistenceAdapter>
    <sslContext><sslContext keyStore="file:{p12}" keyStorePassword="changeit" keyStoreType="PKCS12"
        trustStore="file:{trust}" trustStorePassword="changeit" trustStoreType="PKCS12"/></sslContext>
    {connector}
    <transportConnectors>
      <transportConnector name="openwire" uri="tcp://127.0.0.1:{openwire}"/>
      <transportConnector name="ssl" uri="ssl://127.0.0.1:{ssl}"/>
    </transportConnectors>
  </broker>
</beans>
"#,
            data = base.join("data").display(),
            p12 = p12.display(),
            trust = trust.display(),
        );
        std::fs::write(base.join("conf/activemq.xml"), xml).unwrap();
        std::fs::write(
            base.join("conf/log4j.properties"),
            "log4j.rootLogger=INFO, out\n\
             log4j.logger.org.apache.activemq.network=DEBUG\n\
             log4j.appender.out=org.apache.log4j.ConsoleAppender\n\
             log4j.appender.out.layout=org.apache.log4j.PatternLayout\n\
             log4j.appender.out.layout.ConversionPattern=%d{HH:mm:ss.SSS} %-5p %c{1} - %m%n\n",
        )
        .unwrap();
        Self {
            base,
            openwire,
            ssl,
        }
    }

    /// Starts it (as Debian's `activemq start` runs it) and waits for its port.
    fn start(&self) -> Process {
        let home = "/usr/share/activemq";
        let conf = self.base.join("conf");
        let arg = |k: &str, v: &Path| format!("-D{k}={}", v.display());
        let args = [
            "-Xmx256m".to_owned(),
            format!("-Dactivemq.home={home}"),
            arg("activemq.base", &self.base),
            arg("activemq.conf", &conf),
            arg("activemq.data", &self.base.join("data")),
            format!(
                "-Dlog4j.configuration=file:{}",
                conf.join("log4j.properties").display()
            ),
            "-jar".to_owned(),
            format!("{home}/bin/activemq.jar"),
            "start".to_owned(),
            format!("xbean:file:{}", conf.join("activemq.xml").display()),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = self.base.join("activemq.log");
        let process = Process::start(Path::new("java"), &args, &[], log);
        let port = self.openwire;
        wait_until("ActiveMQ's OpenWire port", SLOW, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        process
    }

    fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.openwire)
    }

    /// ActiveMQ's `producer` command against this broker.
    async fn produce(&self, dir: &Path, destination: &str, count: u32) {
        let out = cli(
            dir,
            vec![
                "producer".into(),
                "--brokerUrl".into(),
                self.url(),
                "--destination".into(),
                destination.into(),
                "--messageCount".into(),
                count.to_string(),
                "--persistent".into(),
                "true".into(),
            ],
        )
        .await;
        assert!(
            out.contains(&format!("Produced: {count} messages")),
            "{out}"
        );
    }

    /// ActiveMQ's `consumer` command against this broker, until `count`.
    async fn consume(&self, dir: &Path, destination: &str, count: u32) -> String {
        cli(
            dir,
            vec![
                "consumer".into(),
                "--brokerUrl".into(),
                self.url(),
                "--destination".into(),
                destination.into(),
                "--messageCount".into(),
                count.to_string(),
            ],
        )
        .await
    }
}

async fn cli(dir: &Path, args: Vec<String>) -> String {
    let (base, ca) = (dir.join("cli"), dir.join("ca.crt"));
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        activemq(&base, &ca, &args)
    })
    .await
    .unwrap()
}

/// `count` persistent messages each way between `node` and ActiveMQ, on
/// queues `(inbound, outbound)`: ActiveMQ's `producer` to a STOMP consumer
/// on the node (its demand crosses to ActiveMQ), and a STOMP producer on
/// the node to ActiveMQ's `consumer` (whose demand crosses back).
async fn queues_both_ways(
    node: &Node,
    onprem: &ActiveMq,
    dir: &Path,
    (inbound, outbound): (&str, &str),
    count: u32,
) {
    let (stomp_in, amq_in) = (format!("/queue/{inbound}"), format!("queue://{inbound}"));
    let (stomp_out, amq_out) = (format!("/queue/{outbound}"), format!("queue://{outbound}"));
    let mut consumer = app(node.stomp).await;
    let (received, ()) = tokio::join!(
        receive(&mut consumer, &stomp_in, "auto", count as usize),
        onprem.produce(dir, &amq_in, count),
    );
    assert_eq!(received.len(), count as usize);
    let mut producer = app(node.stomp).await;
    let (consumed, ()) = tokio::join!(
        onprem.consume(dir, &amq_out, count),
        send(&mut producer, &stomp_out, count as usize),
    );
    let expected = format!("Consumed: {count} messages");
    assert!(consumed.contains(&expected), "{consumed}");
}

/// An ActiveMQ broker's duplex network connector to portico-broker's
/// `openwire+ssl` port, logged in as a bridge user: queues and topics both
/// ways by demand, and what waits on either broker survives its SIGKILL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activemq_network_connector_bridges_both_ways_across_restarts() {
    let dir = BrokerDir::new("");
    let cloud = Node::new("cloud", "");
    let mut cloud_process = cloud.start(dir.dir.path());
    let onprem = ActiveMq::new(dir.dir.path(), Some(cloud.openwire_ssl));
    let mut onprem_process = onprem.start();
    wait_for("ActiveMQ's bridge to portico", || async {
        cloud.bridges_up().await == 1
    })
    .await;

    queues_both_ways(
        &cloud,
        &onprem,
        dir.dir.path(),
        ("from.onprem", "to.onprem"),
        20,
    )
    .await;
    let mut producer = app(cloud.stomp).await;

    // Topics, both ways. What is published before the subscriber's demand
    // has crossed is for nobody, so the publisher goes on until it arrives.
    let mut subscriber = app(cloud.stomp).await;
    let ticks = {
        let receiving = receive(&mut subscriber, "/topic/ticks", "auto", 5);
        tokio::pin!(receiving);
        loop {
            tokio::select! {
                got = &mut receiving => break got,
                () = onprem.produce(dir.dir.path(), "topic://ticks", 5) => {}
            }
        }
    };
    assert_eq!(ticks.len(), 5);
    drop(subscriber);
    let consuming = onprem.consume(dir.dir.path(), "topic://news", 5);
    tokio::pin!(consuming);
    let mut pace = tokio::time::interval(Duration::from_millis(200));
    let news = loop {
        tokio::select! {
            out = &mut consuming => break out,
            _ = pace.tick() => send(&mut producer, "/topic/news", 1).await,
        }
    };
    assert!(news.contains("Consumed: 5 messages"), "{news}");

    // ActiveMQ restarted: what it held for portico's demand is forwarded.
    onprem
        .produce(dir.dir.path(), "queue://held.onprem", 10)
        .await;
    drop(onprem_process);
    onprem_process = onprem.start();
    let mut consumer = app(cloud.stomp).await;
    let held = receive(&mut consumer, "/queue/held.onprem", "auto", 10).await;
    assert_eq!(held.len(), 10);
    drop(consumer);

    // portico restarted (SIGKILL): what it stored from ActiveMQ, unacknowledged,
    // and what it held for ActiveMQ's consumers, are still there.
    let mut holder = app(cloud.stomp).await;
    let (kept, ()) = tokio::join!(
        receive(&mut holder, "/queue/kept.cloud", "client", 10),
        onprem.produce(dir.dir.path(), "queue://kept.cloud", 10),
    );
    assert_eq!(kept.len(), 10);
    send(&mut producer, "/queue/later.onprem", 10).await;
    drop(cloud_process);
    cloud_process = cloud.start(dir.dir.path());
    assert_eq!(cloud.pending("kept.cloud").await, 10);
    let mut consumer = app(cloud.stomp).await;
    let again = receive(&mut consumer, "/queue/kept.cloud", "auto", 10).await;
    assert_eq!(again.len(), 10);
    let consumed = onprem
        .consume(dir.dir.path(), "queue://later.onprem", 10)
        .await;
    assert!(consumed.contains("Consumed: 10 messages"), "{consumed}");
    drop((cloud_process, onprem_process));
}

/// portico-broker's `[[network_connector]]` with `protocol = "openwire"`
/// to ActiveMQ's `ssl://` port, duplex: one message each way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portico_network_connector_bridges_to_activemq_over_ssl() {
    let dir = BrokerDir::new("");
    let onprem = ActiveMq::new(dir.dir.path(), None);
    let _onprem_process = onprem.start();
    let edge = Node::new(
        "edge",
        &format!(
            r#"
[[network_connector]]
name = "edge-to-onprem"
uri = "static:(ssl://localhost:{})"
protocol = "openwire"
duplex = true
ca = "ca.crt"
"#,
            onprem.ssl
        ),
    );
    let _edge_process = edge.start(dir.dir.path());
    wait_for("portico's bridge to ActiveMQ", || async {
        edge.bridges_up().await == 1
    })
    .await;
    queues_both_ways(&edge, &onprem, dir.dir.path(), ("to.edge", "from.edge"), 10).await;
}
