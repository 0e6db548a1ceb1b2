//! Hostile clients against the real broker binary: what one client (often
//! one that has not logged in, or has no rights) can make the broker hold
//! or how long it can stall others. Each test measures the bound: the
//! process's peak resident memory from /proc, or a bystander's latency.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use portico_broker::stomp::{Command, Frame};
use tokio::io::AsyncWriteExt;

const MIB: u64 = 1024;

/// A broker process with a plain STOMP transport, a console and `extra`.
struct Broker {
    node: Process,
    stomp: SocketAddr,
    console: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Broker {
    fn start(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let node = broker_node(
            dir.path(),
            "limits",
            &format!(
                "[broker]\nname = \"limits\"\ndata_dir = \"data\"\n\n[[transport]]\nname = \"stomp\"\nbind = \"127.0.0.1:0\"\n\n[console]\nbind = \"127.0.0.1:0\"\n\n{extra}"
            ),
            &[],
        );
        let stomp = node.address("transport=stomp addr=");
        let console = node.address("console listening on ");
        Self {
            node,
            stomp,
            console,
            _dir: dir,
        }
    }

    /// (resident now, peak) in KiB.
    fn memory(&self) -> (u64, u64) {
        hostile::memory_kib(self.node.child.id())
    }

    async fn summary(&self) -> serde_json::Value {
        serde_json::from_str(&http_get(self.console, "/api/broker").await).unwrap()
    }
}

/// A client-ack subscriber that asks for an endless prefetch window.
async fn greedy(broker: &Broker, destination: &str) -> RawClient {
    let mut greedy = RawClient::connect(broker.stomp).await;
    greedy
        .send(
            &Frame::new(Command::Subscribe)
                .header("destination", destination)
                .header("id", "s")
                .header("ack", "client")
                .header("activemq.prefetchSize", "1000000000")
                .header("receipt", "r"),
        )
        .await;
    assert_eq!(greedy.next().await.unwrap().command, Command::Receipt);
    greedy
}

fn send(destination: &str, body: Vec<u8>) -> Frame {
    Frame::new(Command::Send)
        .header("destination", destination)
        .body(body)
}

/// 300 connections that never log in, each sending a 4 MB CONNECT with no
/// end: each is closed once it passes the small frame allowed before
/// login, so together they cost the broker little.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_log_in_cost_little() {
    let broker = Broker::start("");
    let (before, _) = broker.memory();
    let mut head = b"CONNECT\naccept-version:1.2\nhost:x\nlogin:".to_vec();
    head.extend(std::iter::repeat_n(b'a', 4_000_000));
    let tasks: Vec<_> = (0..300)
        .map(|_| {
            let (addr, head) = (broker.stomp, head.clone());
            tokio::spawn(async move {
                let mut c = RawClient::open(addr).await;
                // Written until the broker closes the connection.
                for chunk in head.chunks(64 * 1024) {
                    if c.stream.write_all(chunk).await.is_err() {
                        break;
                    }
                }
                c.until_closed().await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let (_, peak) = broker.memory();
    println!("300 unauthenticated 4 MB CONNECTs: {before} KiB before, {peak} KiB peak");
    assert!(
        peak - before < 64 * MIB,
        "peak {peak} KiB from {before} KiB"
    );
    // Still serving.
    let mut c = RawClient::connect(broker.stomp).await;
    c.send(&send("/queue/after", b"ok".to_vec()).header("receipt", "r"))
        .await;
    assert_eq!(c.next().await.unwrap().command, Command::Receipt);
}

/// ACKs in a transaction are checked when they come (an unknown id is an
/// ERROR at once) and the bodies they carry are not kept; SENDs in open
/// transactions are bounded in bytes per connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_hold_little_and_only_what_is_real() {
    let broker = Broker::start("[limits]\nmax_transaction_bytes = 1048576\n");
    let (before, _) = broker.memory();
    let body = vec![b'x'; 256 * 1024];
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let (addr, body) = (broker.stomp, body.clone());
            tokio::spawn(async move {
                let mut c = RawClient::connect(addr).await;
                c.send(&Frame::new(Command::Begin).header("transaction", "t"))
                    .await;
                if i % 2 == 0 {
                    // An ACK of nothing, with a large body.
                    c.send(
                        &Frame::new(Command::Ack)
                            .header("id", "1-1")
                            .header("transaction", "t")
                            .body(body),
                    )
                    .await;
                } else {
                    for _ in 0..64 {
                        let frame = send("/queue/tx", body.clone()).header("transaction", "t");
                        if c.send_raw(&frame.to_bytes()).await.is_err() {
                            break;
                        }
                    }
                }
                c.until_closed().await
            })
        })
        .collect();
    let mut errors = Vec::new();
    for t in tasks {
        let frames = t.await.unwrap();
        let error = frames
            .iter()
            .find(|f| f.command == Command::Error)
            .expect("an ERROR")
            .get("message")
            .unwrap()
            .to_owned();
        errors.push(error);
    }
    let (_, peak) = broker.memory();
    println!("40 connections filling transactions: {before} KiB before, {peak} KiB peak");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("no message to acknowledge")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("more than 1048576 bytes")),
        "{errors:?}"
    );
    assert!(
        peak - before < 96 * MIB,
        "peak {peak} KiB from {before} KiB"
    );
}

/// A consumer that asks for an endless prefetch window and acknowledges
/// nothing: its window is capped, what it holds counts against the queue,
/// and the producer is slowed instead of the broker growing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_never_acknowledges_pins_a_bounded_amount() {
    let broker = Broker::start("[limits]\nqueue_memory = 16777216\n");
    let (before, _) = broker.memory();
    let mut greedy = greedy(&broker, "/queue/pinned").await;
    // 400 × 256 KiB (100 MiB) from a producer that does not wait for receipts.
    let mut producer = RawClient::connect(broker.stomp).await;
    let body = vec![b'p'; 256 * 1024];
    let writer = tokio::spawn(async move {
        for i in 0..400 {
            let frame = send("/queue/pinned", body.clone()).header("receipt", i.to_string());
            if producer.send_raw(&frame.to_bytes()).await.is_err() {
                break;
            }
        }
        std::future::pending::<()>().await;
    });
    // The greedy consumer reads what it is given, and never acknowledges.
    let reader = tokio::spawn(async move {
        let mut got = 0;
        while tokio::time::timeout(Duration::from_secs(2), greedy.next())
            .await
            .ok()
            .flatten()
            .is_some()
        {
            got += 1;
        }
        (got, greedy)
    });
    let (got, _greedy) = reader.await.unwrap();
    let summary = broker.summary().await;
    let (_, peak) = broker.memory();
    println!("a never-acknowledging consumer: got {got} of 400; {summary}; {before} KiB before, {peak} KiB peak");
    assert!(
        got < 100,
        "the consumer was given {got} messages of 256 KiB"
    );
    assert!(
        summary["memory"]["held_senders"].as_u64().unwrap() >= 1,
        "the producer was not slowed: {summary}"
    );
    assert!(
        peak - before < 80 * MIB,
        "peak {peak} KiB from {before} KiB"
    );
    writer.abort();
}

/// A topic subscriber that reads but never acknowledges: its window and
/// unacknowledged bytes are capped, so the rest waits in its backlog, where
/// the slow-consumer rule sees it and drops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_reader_that_never_acknowledges_is_dropped_not_buffered() {
    let broker = Broker::start("[limits]\nmax_inflight_bytes = 8388608\n");
    let (before, _) = broker.memory();
    let mut greedy = greedy(&broker, "/topic/pinned").await;
    let reader = tokio::spawn(async move { greedy.until_closed().await });
    // Publish 256 KiB messages until the greedy one is dropped (at most 2,400: 600 MiB).
    let mut producer = RawClient::connect(broker.stomp).await;
    let body = vec![b't'; 256 * 1024];
    let mut sent = 0;
    while !reader.is_finished() && sent < 2400 {
        let frame = send("/topic/pinned", body.clone()).header("receipt", "r");
        producer.send(&frame).await;
        assert_eq!(producer.next().await.unwrap().command, Command::Receipt);
        sent += 1;
    }
    let frames = reader.await.unwrap();
    let (_, peak) = broker.memory();
    println!("a never-acknowledging topic reader: dropped after {sent} messages; {before} KiB before, {peak} KiB peak");
    let error = frames
        .iter()
        .find(|f| f.command == Command::Error)
        .expect("dropped with an ERROR");
    assert!(error.get("message").unwrap().contains("slow consumer"));
    assert!(
        peak - before < 160 * MIB,
        "peak {peak} KiB from {before} KiB"
    );
}

/// Many queues of one large message each: the broker's memory limit holds
/// producers back, and the number of destinations is capped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_limits_its_memory_and_its_destinations() {
    let broker = Broker::start(
        "[limits]\nqueue_memory = 4194304\nmemory_limit = 67108864\nmax_destinations = 200\n",
    );
    let (before, _) = broker.memory();
    let body = vec![b'q'; 4 * 1024 * 1024 - 4096];
    // 300 queues from 30 producers, none waiting for its receipts (their
    // writes block once the broker holds them back).
    let producers: Vec<_> = (0..30)
        .map(|p| {
            let (addr, body) = (broker.stomp, body.clone());
            tokio::spawn(async move {
                let mut c = RawClient::connect(addr).await;
                for q in 0..10 {
                    let frame = send(&format!("/queue/many.{p}.{q}"), body.clone())
                        .header("receipt", q.to_string());
                    if c.send_raw(&frame.to_bytes()).await.is_err() {
                        break;
                    }
                }
                std::future::pending::<()>().await;
            })
        })
        .collect();
    wait_for("producers held back at the memory limit", || async {
        broker.summary().await["memory"]["held_senders"]
            .as_u64()
            .unwrap()
            > 0
    })
    .await;
    let summary = broker.summary().await;
    let used = summary["memory"]["used"].as_u64().unwrap();
    assert!(used <= 64 * 1024 * 1024 + 4 * 1024 * 1024, "{summary}");
    let (_, peak) = broker.memory();
    println!("300 queues × 4 MiB: {summary}; {before} KiB before, {peak} KiB peak");
    // 30 connections each reading a 4 MiB frame, 8 MiB each on its way in,
    // and the 64 MiB limit.
    assert!(
        peak - before < 400 * MIB,
        "peak {peak} KiB from {before} KiB"
    );
    // The destination cap: a SUBSCRIBE to a 201st destination is refused.
    let mut c = RawClient::connect(broker.stomp).await;
    let mut refused = None;
    for i in 0..250 {
        c.send(
            &Frame::new(Command::Subscribe)
                .header("destination", format!("/topic/cap.{i}"))
                .header("id", i.to_string())
                .header("receipt", i.to_string()),
        )
        .await;
        let answer = c.next().await.unwrap();
        if answer.command == Command::Error {
            refused = Some(answer);
            break;
        }
    }
    let refused = refused.expect("the destination cap refused nothing");
    assert!(
        refused
            .get("message")
            .unwrap()
            .contains("maximum of 200 destinations"),
        "{refused:?}"
    );
    for p in producers {
        p.abort();
    }
}

/// Subscriptions per connection are capped; a connection with many of
/// them leaves without stalling anyone (its subscriptions go in one pass).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_subscriptions_neither_grow_without_bound_nor_stall_others() {
    let broker = Broker::start("[limits]\nmax_subscriptions_per_connection = 20000\n");
    let mut many = RawClient::connect(broker.stomp).await;
    for i in 0..20_000 {
        let frame = Frame::new(Command::Subscribe)
            .header("destination", "/queue/crowded")
            .header("id", i.to_string());
        many.send(&frame).await;
    }
    // One more is refused.
    many.send(
        &Frame::new(Command::Subscribe)
            .header("destination", "/queue/crowded")
            .header("id", "one-too-many")
            .header("receipt", "r"),
    )
    .await;
    let answer = many.next().await.unwrap();
    assert_eq!(answer.command, Command::Error, "{answer:?}");
    assert!(answer
        .get("message")
        .unwrap()
        .contains("at most 20000 subscriptions"));
    // (The ERROR closed it: its 20,000 subscriptions go now.) A bystander
    // sends with receipts meanwhile.
    let mut bystander = RawClient::connect(broker.stomp).await;
    let mut slowest = Duration::ZERO;
    for i in 0..50 {
        let started = Instant::now();
        bystander
            .send(&send("/queue/bystander", b"b".to_vec()).header("receipt", i.to_string()))
            .await;
        assert_eq!(bystander.next().await.unwrap().command, Command::Receipt);
        slowest = slowest.max(started.elapsed());
    }
    println!("bystander's slowest receipt while 20,000 subscriptions went: {slowest:?}");
    assert!(slowest < Duration::from_secs(1), "{slowest:?}");
}

/// The password of every user below is its name.
fn users(names: &[&str]) -> String {
    let hash = portico_broker::auth::hash_password("app").unwrap();
    let mut toml = String::new();
    for name in names {
        let hash = if *name == "app" {
            hash.clone()
        } else {
            portico_broker::auth::hash_password(name).unwrap()
        };
        toml.push_str(&format!(
            "[[user]]\nname = \"{name}\"\npassword_hash = \"{hash}\"\ngroups = [\"admins\"]\n\n"
        ));
    }
    toml.push_str("[[authorization]]\ndestination = \">\"\nread = [\"admins\"]\nwrite = [\"admins\"]\nadmin = [\"admins\"]\n");
    toml
}

/// The median of `samples`.
fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Clients with wrong passwords (a new user name each time, so no back-off
/// spares the broker the work) do not slow a logged-in bystander: password
/// checks run off the async workers, a few at a time. And an unknown user
/// costs as long as a known one: names cannot be told by timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_neither_stall_others_nor_tell_user_names() {
    let broker = Broker::start(&users(&["app"]));
    let (mut bystander, answer) = RawClient::login(broker.stomp, "app", "app").await;
    assert_eq!(answer.unwrap().command, Command::Connected);
    let quiet: Vec<Duration> = {
        let mut samples = Vec::new();
        for i in 0..20 {
            let started = Instant::now();
            bystander
                .send(&send("/queue/by", b"b".to_vec()).header("receipt", i.to_string()))
                .await;
            assert_eq!(bystander.next().await.unwrap().command, Command::Receipt);
            samples.push(started.elapsed());
        }
        samples
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attackers: Vec<_> = (0..8)
        .map(|a| {
            let (addr, stop) = (broker.stomp, stop.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 200 {
                    let _ = RawClient::login(addr, &format!("nobody-{a}-{n}"), "wrong").await;
                    n += 1;
                }
            })
        })
        .collect();
    let mut busy = Vec::new();
    for i in 0..40 {
        let started = Instant::now();
        bystander
            .send(&send("/queue/by", b"b".to_vec()).header("receipt", format!("b{i}")))
            .await;
        assert_eq!(bystander.next().await.unwrap().command, Command::Receipt);
        busy.push(started.elapsed());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for a in attackers {
        a.await.unwrap();
    }
    let (quiet, busy) = (median(quiet), median(busy));
    println!(
        "bystander SEND→RECEIPT median: {quiet:?} quiet, {busy:?} under 8 wrong-password clients"
    );
    assert!(busy < Duration::from_millis(100), "{busy:?}");

    // Known and unknown user names, wrong passwords: about the same time.
    let timing = |user: &'static str| {
        let addr = broker.stomp;
        async move {
            let mut samples = Vec::new();
            for _ in 0..3 {
                let started = Instant::now();
                let (_, answer) = RawClient::login(addr, user, "wrong").await;
                assert_eq!(answer.unwrap().command, Command::Error);
                samples.push(started.elapsed());
            }
            median(samples)
        }
    };
    let known = timing("app").await;
    let unknown = timing("nobody-at-all").await;
    println!("a wrong password takes {known:?} for a known user, {unknown:?} for an unknown one");
    let ratio = known.as_secs_f64() / unknown.as_secs_f64();
    assert!((0.5..2.0).contains(&ratio), "{known:?} vs {unknown:?}");
}

/// 64 console requests at once with wrong Basic credentials: checked a few
/// at a time, so memory stays far below 64 argon2 checks' worth; then the
/// address is made to wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_logins_are_checked_a_few_at_a_time() {
    let broker = Broker::start(&users(&["app"]));
    let (before, _) = broker.memory();
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let console = broker.console;
            tokio::spawn(async move {
                use base64::Engine as _;
                let credentials =
                    base64::engine::general_purpose::STANDARD.encode(format!("user{i}:wrong"));
                http(
                    console,
                    "POST",
                    "/api/queues/q/purge",
                    &[("authorization", &format!("Basic {credentials}"))],
                )
                .await
                .0
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 401);
    }
    let (_, peak) = broker.memory();
    println!("64 concurrent console logins: {before} KiB before, {peak} KiB peak");
    assert!(
        peak - before < 100 * MIB,
        "peak {peak} KiB from {before} KiB"
    );
    // The same wrong user, again and again: made to wait.
    let mut codes = Vec::new();
    for _ in 0..5 {
        use base64::Engine as _;
        let credentials = base64::engine::general_purpose::STANDARD.encode("app:wrong");
        codes.push(
            http(
                broker.console,
                "POST",
                "/api/queues/q/purge",
                &[("authorization", &format!("Basic {credentials}"))],
            )
            .await
            .0,
        );
    }
    assert_eq!(codes, [401, 401, 401, 429, 429]);
}

/// Connections per source: one over its share is closed at once and
/// counted; the others, and other sources, are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_gets_its_share_of_connections() {
    let broker = Broker::start("[limits]\nmax_connections_per_source = 5\n");
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(RawClient::connect(broker.stomp).await);
    }
    // The sixth from 127.0.0.1 is closed before it is served.
    let mut sixth = RawClient::open(broker.stomp).await;
    // (Writing may already fail: the broker closes it at accept.)
    let connect = Frame::new(Command::Connect).header("accept-version", "1.2");
    let _ = sixth.send_raw(&connect.to_bytes()).await;
    assert!(sixth.until_closed().await.is_empty());
    assert_eq!(broker.summary().await["refused_connections"], 1);
    // Another source address is served.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let other = RawClient::connect_over(socket.connect(broker.stomp).await.unwrap()).await;
    drop(other);
    // One of the five leaves: its slot is free again.
    drop(held.pop());
    wait_for("a slot given back", || async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        let stream = socket.connect(broker.stomp).await.unwrap();
        let mut c = RawClient::over(stream);
        let connect = Frame::new(Command::Connect).header("accept-version", "1.2");
        c.send_raw(&connect.to_bytes()).await.is_ok()
            && c.next()
                .await
                .is_some_and(|f| f.command == Command::Connected)
    })
    .await;
}

/// A user name with a line break in it (sent through the console's Basic
/// authentication) cannot forge a log line: untrusted text is logged escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_text_cannot_forge_a_log_line() {
    use base64::Engine as _;
    let broker = Broker::start(&users(&["app"]));
    let forged =
        "x\n2026-01-01T00:00:00Z  INFO console: change allowed user=\"admin\" method=DELETE";
    let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{forged}:wrong"));
    let (status, _) = http(
        broker.console,
        "DELETE",
        "/api/queues/q",
        &[("authorization", &format!("Basic {credentials}"))],
    )
    .await;
    assert_eq!(status, 401);
    wait_for("the refusal logged", || async {
        broker.node.log().contains("console: authentication failed")
    })
    .await;
    let log = broker.node.log();
    assert!(
        !log.lines().any(|l| l.starts_with("2026-01-01T00:00:00Z")),
        "a forged line:\n{log}"
    );
}
