//! The static-endpoint story end to end: clients use one failover URL to
//! the front door; behind it an active/standby pair shares one data_dir.
//! The active node is SIGKILLed mid-stream; nothing is lost.

#![cfg(feature = "demo")]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command as Process, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use portico_test_support::{activemq, wait_until, DEADLINE};

/// A broker node of the real code (`portico broker-node`, what the demo
/// runs), logging into `dir/NAME.log`; killed when dropped.
fn broker_node(
    dir: &std::path::Path,
    name: &str,
    toml: &str,
    env: &[(&str, &str)],
) -> portico_test_support::Process {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, toml).unwrap();
    let mut env = env.to_vec();
    env.push(("RUST_LOG", "debug"));
    portico_test_support::Process::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_portico")),
        &["broker-node", "--config", config.to_str().unwrap()],
        &env,
        dir.join(format!("{name}.log")),
    )
}
use portico_core::certs::{write_dev_certs, CertRequest};

/// A child process killed if the test ends early.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Running {
    fn new(child: Child) -> Self {
        Self(Some(child))
    }

    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("running")
    }

    fn kill(&self) {
        let pid = self.0.as_ref().expect("running").id().to_string();
        assert!(Process::new("kill")
            .args(["-KILL", &pid])
            .status()
            .unwrap()
            .success());
    }

    fn output(mut self) -> std::process::Output {
        self.0.take().expect("running").wait_with_output().unwrap()
    }
}

/// A pair of broker nodes (127.0.0.2 and 127.0.0.3, same ports, one
/// data_dir) and a front door in front of them.
struct Setup {
    dir: tempfile::TempDir,
    port: u16,
    console: u16,
    nodes: [Option<Running>; 2],
    lines: [Option<mpsc::Receiver<String>>; 2],
    front: SocketAddr,
    /// The front door's listener for OpenWire (to the nodes' openwire+ssl).
    front_openwire: SocketAddr,
    _server: portico::Server,
}

const HOSTS: [&str; 2] = ["127.0.0.2", "127.0.0.3"];

fn same_port() -> u16 {
    for _ in 0..50 {
        let a = std::net::TcpListener::bind((HOSTS[0], 0)).unwrap();
        let port = a.local_addr().unwrap().port();
        if std::net::TcpListener::bind((HOSTS[1], port)).is_ok() {
            return port;
        }
    }
    panic!("no common free port");
}

impl Setup {
    async fn new() -> Self {
        Self::with_node_config("").await
    }

    /// The pair with `extra` appended to both nodes' configs.
    async fn with_node_config(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        write_dev_certs(
            &dir.path().join("certs"),
            &CertRequest {
                domains: vec!["mq.localhost".into()],
                brokers: vec!["broker1".into()],
                ips: vec!["127.0.0.1".parse().unwrap()],
            },
        )
        .unwrap();
        let (port, console, openwire) = (same_port(), same_port(), same_port());
        for (i, host) in HOSTS.iter().enumerate() {
            std::fs::write(
                dir.path().join(format!("node{i}.toml")),
                format!(
                    r#"
[broker]
name = "broker1"
data_dir = "shared"

[[transport]]
name = "stomp+ssl"
bind = "{host}:{port}"
cert = "certs/broker1.crt"
key = "certs/broker1.key"

[[transport]]
name = "openwire+ssl"
bind = "{host}:{openwire}"
cert = "certs/broker1.crt"
key = "certs/broker1.key"

[console]
bind = "{host}:{console}"

[ha]
lease_renew = "50ms"
takeover_after = "150ms"

{extra}
"#
                ),
            )
            .unwrap();
        }
        let front_toml = dir.path().join("portico.toml");
        std::fs::write(
            &front_toml,
            format!(
                r#"
[[listener]]
name = "front"
bind = "127.0.0.1:0"
target_group = "pair"
  [[listener.certificate]]
  cert = "certs/mq.localhost.crt"
  key = "certs/mq.localhost.key"

[[target_group]]
name = "pair"
ca = "certs/ca.crt"
server_name = "broker1"
targets = ["{a}:{port}", "{b}:{port}"]
pairs = [["{a}:{port}", "{b}:{port}"]]
  [target_group.health_check]
  port = {console}
  interval = "100ms"
  timeout = "100ms"

[[listener]]
name = "front-openwire"
bind = "127.0.0.1:0"
target_group = "pair-openwire"
  [[listener.certificate]]
  cert = "certs/mq.localhost.crt"
  key = "certs/mq.localhost.key"

[[target_group]]
name = "pair-openwire"
ca = "certs/ca.crt"
server_name = "broker1"
targets = ["{a}:{openwire}", "{b}:{openwire}"]
pairs = [["{a}:{openwire}", "{b}:{openwire}"]]
  [target_group.health_check]
  port = {console}
  interval = "100ms"
  timeout = "100ms"
"#,
                a = HOSTS[0],
                b = HOSTS[1]
            ),
        )
        .unwrap();
        let server = portico::Server::start(portico::Config::load(&front_toml).unwrap())
            .await
            .unwrap();
        let front = server.listener_addr("front").unwrap();
        let front_openwire = server.listener_addr("front-openwire").unwrap();
        let mut setup = Self {
            dir,
            port,
            console,
            nodes: [None, None],
            lines: [None, None],
            front,
            front_openwire,
            _server: server,
        };
        setup.start_node(0);
        setup.wait_line(0, "broker active");
        setup.start_node(1);
        setup.wait_line(1, "waiting with no port open");
        setup
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn start_node(&mut self, i: usize) {
        let mut child = Running::new(
            Process::new(env!("CARGO_BIN_EXE_portico"))
                .args(["broker-node", "--config"])
                .arg(self.path(&format!("node{i}.toml")))
                .env("RUST_LOG", "info")
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let stderr = child.child().stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        self.nodes[i] = Some(child);
        self.lines[i] = Some(rx);
    }

    fn wait_line(&self, i: usize, what: &str) {
        let rx = self.lines[i].as_ref().unwrap();
        loop {
            let line = rx
                .recv_timeout(DEADLINE)
                .unwrap_or_else(|_| panic!("node {i}: no line with {what:?}"));
            if line.contains(what) {
                return;
            }
        }
    }

    fn addr(&self, i: usize, port: u16) -> SocketAddr {
        format!("{}:{port}", HOSTS[i]).parse().unwrap()
    }

    fn tool(&self, args: &[&str]) -> Process {
        let mut p = Process::new(env!("CARGO_BIN_EXE_portico"));
        p.args(args)
            .arg("--broker-url")
            .arg(format!(
                "failover:(ssl://{})?initialReconnectDelay=10&maxReconnectDelay=500",
                self.front
            ))
            .arg("--ca")
            .arg(self.path("certs/ca.crt"))
            .args(["--destination", "queue://MyQueue"]);
        p
    }

    /// How many messages node `i` accepted for MyQueue, from its console.
    fn enqueued(&self, i: usize) -> Option<u64> {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect_timeout(
            &self.addr(i, self.console),
            Duration::from_millis(200),
        )
        .ok()?;
        tcp.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        tcp.write_all(b"GET /api/queues HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .ok()?;
        let mut out = String::new();
        tcp.read_to_string(&mut out).ok()?;
        let body = out.split_once("\r\n\r\n")?.1;
        let queues: serde_json::Value = serde_json::from_str(body).ok()?;
        queues.as_array()?.iter().find(|q| q["name"] == "MyQueue")?["enqueued"].as_u64()
    }

    /// SIGKILLs the active node `i` once it has accepted `after` messages;
    /// returns the outage: from the kill to the first message the other
    /// node accepts.
    fn kill_active_after(&mut self, i: usize, after: u64) -> Duration {
        wait_until(
            &format!("node {i} to reach {after} messages"),
            Duration::from_secs(60),
            || self.enqueued(i).unwrap_or(0) >= after,
        );
        self.nodes[i].as_ref().unwrap().kill();
        let other = 1 - i;
        wait_until(&format!("node {other} to take over"), DEADLINE, || {
            self.enqueued(other).unwrap_or(0) > 0
        })
    }
}

fn nothing_answers(addr: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_err()
}

fn summary(out: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success(),
        "tool failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// "… (10000 unique, 3 duplicates, 0 missing) …" → (10000, 3, 0)
fn counts(line: &str) -> (u64, u64, u64) {
    let inner = line.split_once('(').unwrap().1.split_once(')').unwrap().0;
    let n: Vec<u64> = inner
        .split(", ")
        .map(|p| p.split(' ').next().unwrap().parse().unwrap())
        .collect();
    (n[0], n[1], n[2])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_active_node_loses_nothing_through_the_front_door() {
    let mut setup = Setup::new().await;
    // The standby answers on nothing: not its transport, not its console.
    assert!(nothing_answers(setup.addr(1, setup.port)));
    assert!(nothing_answers(setup.addr(1, setup.console)));

    let producer = setup
        .tool(&[
            "producer",
            "--message-count",
            "10000",
            "--message-size",
            "1000",
            "--persistent",
            "true",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let producer = Running::new(producer);
    let outage = tokio::task::block_in_place(|| setup.kill_active_after(0, 3000));
    eprintln!("outage seen by the producer: {outage:?}");
    let out = tokio::task::block_in_place(|| producer.output());
    let sent = summary(&out);
    assert!(sent.starts_with("sent 10000 messages"), "{sent}");
    assert!(
        sent.contains("failover"),
        "the producer did not fail over: {sent}"
    );

    let out = tokio::task::block_in_place(|| {
        setup
            .tool(&[
                "consumer",
                "--message-count",
                "10000",
                "--receive-timeout",
                "20s",
            ])
            .output()
            .unwrap()
    });
    let received = summary(&out);
    let (unique, duplicates, missing) = counts(&received);
    eprintln!("{received}");
    assert_eq!((unique, missing), (10000, 0), "{received}");
    let _ = duplicates;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pair_survives_five_failovers_back_and_forth() {
    let mut setup = Setup::new().await;
    let mut outages = Vec::new();
    let mut active = 0;
    for round in 0..5u64 {
        // Each round: 3000 messages go in, the active node dies early on, so
        // the producer is still sending when the standby takes over.
        let producer = Running::new(
            setup
                .tool(&[
                    "producer",
                    "--message-count",
                    "3000",
                    "--message-size",
                    "100",
                ])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let before = setup.enqueued(active).unwrap_or(0);
        let outage = tokio::task::block_in_place(|| setup.kill_active_after(active, before + 100));
        outages.push(outage);
        let out = tokio::task::block_in_place(|| producer.output());
        let sent = summary(&out);
        assert!(
            sent.starts_with("sent 3000 messages"),
            "round {round}: {sent}"
        );
        // The killed node comes back as the standby.
        setup.nodes[active] = None;
        setup.start_node(active);
        setup.wait_line(active, "waiting with no port open");
        active = 1 - active;
    }
    outages.sort();
    eprintln!(
        "outages over 5 failovers: {outages:?}; median {:?}",
        outages[2]
    );
    let out = tokio::task::block_in_place(|| {
        setup
            .tool(&[
                "consumer",
                "--message-count",
                "15000",
                "--receive-timeout",
                "20s",
            ])
            .output()
            .unwrap()
    });
    let received = summary(&out);
    let (unique, _, missing) = counts(&received);
    assert_eq!((unique, missing), (15000, 0), "{received}");
}

/// How long the soak's faults go on: `PORTICO_SOAK_SECS`, 90 s by default.
/// ActiveMQ's own producer and consumer commands on
/// `failover:(ssl://<front door>)`, OpenWire through the front door to a
/// pair: SIGKILL the active node while the producer sends; every message
/// it produced is consumed from the node that took over (a message may
/// come twice only as JMS allows, redelivered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activemq_clients_fail_over_through_the_front_door_over_openwire() {
    let mut setup = Setup::new().await;
    let url = format!(
        "failover:(ssl://{})?initialReconnectDelay=10&maxReconnectDelay=500",
        setup.front_openwire
    );
    let (base, ca) = (setup.path("activemq"), setup.path("certs/ca.crt"));
    const COUNT: usize = 400;
    let producer = {
        let (base, ca, url) = (base.clone(), ca.clone(), url.clone());
        std::thread::spawn(move || {
            activemq(
                &base,
                &ca,
                &[
                    "producer",
                    "--brokerUrl",
                    &url,
                    "--destination",
                    "queue://MyQueue",
                    "--messageCount",
                    &COUNT.to_string(),
                    "--sleep",
                    "5",
                    "--persistent",
                    "true",
                ],
            )
        })
    };
    let outage = setup.kill_active_after(0, 100);
    let produced = producer.join().unwrap();
    assert!(
        produced.contains(&format!("Produced: {COUNT} messages")),
        "{produced}"
    );
    let consumed = tokio::task::spawn_blocking(move || {
        activemq(
            &base,
            &ca,
            &[
                "consumer",
                "--brokerUrl",
                &url,
                "--destination",
                "queue://MyQueue",
                "--messageCount",
                &COUNT.to_string(),
            ],
        )
    })
    .await
    .unwrap();
    let got: std::collections::BTreeSet<usize> = consumed
        .lines()
        .filter_map(|l| l.split("Received test message: ").nth(1))
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let missing: Vec<usize> = (0..COUNT).filter(|n| !got.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "missing {missing:?} after an outage of {outage:?}:\n{consumed}"
    );
}

fn soak_duration() -> Duration {
    let secs = std::env::var("PORTICO_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(90);
    Duration::from_secs(secs)
}

/// Deterministic choices for the soak (xorshift), from a printed seed.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

type Seen = std::sync::Arc<std::sync::Mutex<std::collections::HashSet<(u64, u64)>>>;

fn client_options(setup: &Setup, tls: bool) -> portico_broker::client::ClientOptions {
    let tls = tls.then(|| {
        portico_core::tls::client_config(
            portico_core::tls::load_roots(&setup.path("certs/ca.crt")).unwrap(),
        )
    });
    portico_broker::client::ClientOptions {
        tls,
        window: 1,
        ..Default::default()
    }
}

/// Sends persistent messages (one per 5 ms at most, so no more than the
/// soak's length allows) until `until`; each counts once its receipt is
/// in. Returns the receipted seqs.
async fn soak_producer(
    url: String,
    options: portico_broker::client::ClientOptions,
    producer: u64,
    until: tokio::time::Instant,
) -> Vec<u64> {
    use portico_broker::client::{BrokerUrl, Client};
    use portico_broker::stomp::{Command, Frame};
    let pace_every = Duration::from_millis(5);
    let limit =
        ((until - tokio::time::Instant::now()).as_millis() / pace_every.as_millis()) as u64 + 1;
    let mut client = Client::connect(BrokerUrl::parse(&url).unwrap(), options)
        .await
        .unwrap();
    let mut pace = tokio::time::interval(pace_every);
    let mut receipted = Vec::new();
    for seq in 1..=limit {
        if tokio::time::Instant::now() >= until {
            break;
        }
        pace.tick().await;
        // Odd ones are consumed through the front door, even ones on the
        // networked broker: they cross the bridge.
        let queue = if seq % 2 == 1 { NEAR } else { FAR };
        let frame = Frame::new(Command::Send)
            .header("destination", queue)
            .header("persistent", "true")
            .header("producer", producer.to_string())
            .header("seq", seq.to_string())
            .body(vec![b'x'; 256]);
        // With a window of one, `send` returns once this SEND is receipted
        // (re-sent across failovers as needed).
        client.send(frame).await.unwrap();
        receipted.push(seq);
    }
    client.flush().await.unwrap();
    receipted
}

const NEAR: &str = "/queue/Soak";
const FAR: &str = "/queue/SoakFar";

/// Receives and acknowledges from `queue` forever, recording each
/// (producer, seq) it sees.
async fn soak_consumer(
    url: String,
    options: portico_broker::client::ClientOptions,
    queue: &'static str,
    seen: Seen,
) {
    use portico_broker::client::{BrokerUrl, Client};
    let mut client = Client::connect(BrokerUrl::parse(&url).unwrap(), options)
        .await
        .unwrap();
    client
        .subscribe(queue, "client-individual", &[])
        .await
        .unwrap();
    loop {
        let message = client.recv().await.unwrap();
        let field = |name: &str| message.get(name).and_then(|v| v.parse().ok()).unwrap();
        seen.lock()
            .unwrap()
            .insert((field("producer"), field("seq")));
        client.ack(&message).await.unwrap();
    }
}

/// The chaos soak: producers through the front door to the pair; one queue
/// consumed through the front door, another on a networked broker (a
/// duplex bridge from the pair, demand forwarding). Meanwhile, at random, the active node of
/// the pair or the networked broker is SIGKILLed and started again. Every
/// persistent message whose receipt arrived is consumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_soak_loses_no_receipted_message() {
    let far_port = same_port();
    let far_console = same_port();
    let mut setup = Setup::with_node_config(&format!(
        "[[network_connector]]\nname = \"to_broker2\"\nuri = \"static:(tcp://127.0.0.1:{far_port})\"\nduplex = true\n"
    ))
    .await;
    let far_toml = format!(
        r#"
[broker]
name = "broker2"
data_dir = "broker2-data"

[[transport]]
name = "stomp"
bind = "127.0.0.1:{far_port}"

[console]
bind = "127.0.0.1:{far_console}"

[ha]
lease_renew = "50ms"
takeover_after = "150ms"
"#
    );
    let far_dir = setup.path("");
    let mut far = Some(broker_node(&far_dir, "broker2", &far_toml, &[]));
    far.as_ref().unwrap().address("listening on ");

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let soak = soak_duration();
    eprintln!("soak: {} s, seed {seed}", soak.as_secs());
    let front_url = format!(
        "failover:(ssl://{})?initialReconnectDelay=10&maxReconnectDelay=200",
        setup.front
    );
    let far_url = format!(
        "failover:(tcp://127.0.0.1:{far_port})?initialReconnectDelay=10&maxReconnectDelay=200"
    );
    let seen: Seen = Default::default();
    let consumers = [
        tokio::spawn(soak_consumer(
            front_url.clone(),
            client_options(&setup, true),
            NEAR,
            seen.clone(),
        )),
        tokio::spawn(soak_consumer(
            far_url,
            client_options(&setup, false),
            FAR,
            seen.clone(),
        )),
    ];
    let until = tokio::time::Instant::now() + soak;
    let producers: Vec<_> = (1..=2)
        .map(|p| {
            tokio::spawn(soak_producer(
                front_url.clone(),
                client_options(&setup, true),
                p,
                until,
            ))
        })
        .collect();

    // The faults.
    let mut dice = Dice(seed);
    let (mut pair_kills, mut far_kills) = (0, 0);
    while tokio::time::Instant::now() + Duration::from_secs(2) < until {
        let pause = Duration::from_millis(1500 + dice.below(2500));
        tokio::time::sleep(pause.min(until - tokio::time::Instant::now())).await;
        let pair = dice.below(3) < 2;
        tokio::task::block_in_place(|| {
            if pair {
                // The pair's active node: the one whose console answers.
                let active = (0..2).find(|&i| !nothing_answers(setup.addr(i, setup.console)));
                if let Some(i) = active {
                    setup.nodes[i].as_ref().unwrap().kill();
                    setup.nodes[i] = None;
                    setup.start_node(i);
                    pair_kills += 1;
                }
            } else {
                drop(far.take()); // SIGKILL, by its id
                far = Some(broker_node(&far_dir, "broker2", &far_toml, &[]));
                far_kills += 1;
            }
        });
    }

    let mut receipted = std::collections::HashSet::new();
    for (p, producer) in producers.into_iter().enumerate() {
        for seq in producer.await.unwrap() {
            receipted.insert((p as u64 + 1, seq));
        }
    }
    let count = receipted.len();
    assert!(count > 1000, "only {count} messages went through");
    let drained = std::time::Instant::now();
    let deadline = Duration::from_secs(60);
    // A failure is explained below: which messages, and what each broker holds.
    tokio::task::block_in_place(|| {
        portico_test_support::holds_within(deadline, || receipted.is_subset(&seen.lock().unwrap()))
    });
    let mut missing: Vec<_> = receipted
        .difference(&seen.lock().unwrap())
        .copied()
        .collect();
    missing.sort_unstable();
    if !missing.is_empty() {
        // What each broker holds, for the failure's message.
        let active = (0..2).find(|&i| !nothing_answers(setup.addr(i, setup.console)));
        let far_console = SocketAddr::from(([127, 0, 0, 1], far_console));
        for (who, console) in [
            (
                "the pair's active node",
                active.map(|i| setup.addr(i, setup.console)),
            ),
            ("broker2", Some(far_console)),
        ] {
            let Some(console) = console else {
                eprintln!("{who}: no console answers");
                continue;
            };
            for path in ["/api/queues", "/api/network", "/api/connections"] {
                let (status, body) = portico_test_support::http(console, "GET", path, &[]).await;
                eprintln!("{who} {path} ({status}): {body}");
            }
        }
        if let Some(far) = &far {
            let log = far.log();
            let notable: Vec<_> = log
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .collect();
            eprintln!(
                "broker2's warnings (last 40):\n{}",
                notable[notable.len().saturating_sub(40)..].join("\n")
            );
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {count} receipted messages not consumed in {} s (seed {seed}; \
         {pair_kills} pair kills, {far_kills} far kills; odd seq on {NEAR}, even on {FAR}): \
         first ones (producer, seq) {:?}",
        missing.len(),
        deadline.as_secs(),
        &missing[..missing.len().min(20)]
    );
    for consumer in consumers {
        consumer.abort();
    }
    println!(
        "soak: {count} persistent messages receipted, all {count} consumed \
         ({pair_kills} SIGKILLs of the pair's active node, {far_kills} of the networked broker, \
         in {} s; last ones drained in {:.1} s)",
        soak.as_secs(),
        drained.elapsed().as_secs_f64()
    );
}
