//! Networks of brokers: real brokers on ephemeral loopback ports, joined
//! by network connectors, driven by raw STOMP clients.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use portico_broker::config::BrokerConfig;
use portico_broker::stomp::{Command, Frame};
use portico_broker::Broker;

/// A broker named `name` with a plain STOMP transport, a console, and
/// `extra` config (connectors).
async fn broker(dir: &std::path::Path, name: &str, extra: &str) -> Broker {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[broker]\nname = \"{name}\"\ndata_dir = \"{name}-data\"\n\n[[transport]]\nname = \"stomp\"\nbind = \"127.0.0.1:0\"\n\n[console]\nbind = \"127.0.0.1:0\"\n\n{extra}"
        ),
    )
    .unwrap();
    Broker::start(BrokerConfig::load(&path).unwrap_or_else(|e| panic!("{e}")))
        .await
        .unwrap()
}

fn connector(name: &str, to: &Broker, options: &str) -> String {
    let addr = to.transport_addr("stomp").unwrap();
    format!(
        "[[network_connector]]\nname = \"{name}\"\nuri = \"static:(tcp://{addr})\"\n{options}\n"
    )
}

async fn get(addr: SocketAddr, path: &str) -> serde_json::Value {
    serde_json::from_str(&http_get(addr, path).await).unwrap()
}

/// Waits until every bridge of `b` is connected.
async fn bridges_up(b: &Broker, count: usize) {
    let console = b.console_addr().unwrap();
    wait_for(&format!("{count} bridges of {} up", b.name()), || async {
        bridges_connected(console).await >= count
    })
    .await;
}

/// Pending messages of a queue on a broker (0 if it has none).
async fn pending(b: &Broker, queue: &str) -> u64 {
    queue_pending(b.console_addr().unwrap(), queue).await
}

async fn subscribe(b: &Broker, dest: &str) -> RawClient {
    let mut c = RawClient::connect(b.transport_addr("stomp").unwrap()).await;
    c.send(
        &Frame::new(Command::Subscribe)
            .header("destination", dest)
            .header("id", "s")
            .header("receipt", "sub"),
    )
    .await;
    assert_eq!(c.next().await.unwrap().command, Command::Receipt);
    c
}

async fn send(b: &Broker, dest: &str, bodies: &[&str]) {
    let mut c = RawClient::connect(b.transport_addr("stomp").unwrap()).await;
    for (i, body) in bodies.iter().enumerate() {
        c.send(
            &Frame::new(Command::Send)
                .header("destination", dest)
                .header("persistent", "true")
                .header("receipt", i.to_string())
                .body(body.as_bytes().to_vec()),
        )
        .await;
        assert_eq!(c.next().await.unwrap().command, Command::Receipt);
    }
}

/// Waits for demand to reach a broker: its bridge subscriptions show as
/// consumers of the queue.
async fn demand_reaches(b: &Broker, queue: &str) {
    wait_for(
        &format!("demand for {queue} to reach {}", b.name()),
        || async {
            let queues = get(b.console_addr().unwrap(), "/api/queues").await;
            queues
                .as_array()
                .unwrap()
                .iter()
                .any(|q| q["name"] == queue && q["consumers"].as_u64() > Some(0))
        },
    )
    .await;
}

async fn nothing_more(c: &mut RawClient) {
    assert!(
        tokio::time::timeout(Duration::from_millis(400), c.next())
            .await
            .is_err(),
        "an unexpected frame arrived"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_produced_on_one_broker_reaches_a_consumer_on_another() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path(), "b", "").await;
    let a = broker(dir.path(), "a", &connector("a-to-b", &b, "")).await;
    bridges_up(&a, 1).await;
    let mut consumer = subscribe(&b, "/queue/orders").await;
    demand_reaches(&a, "orders").await;
    send(&a, "/queue/orders", &["one", "two"]).await;
    for want in ["one", "two"] {
        let m = consumer.next().await.unwrap();
        assert_eq!(m.body, want.as_bytes());
        assert_eq!(m.get("portico-path"), Some("a"));
    }
    // Store and forward: nothing is left on a once b stored and acknowledged.
    wait_for("nothing left on a", || async {
        pending(&a, "orders").await == 0
    })
    .await;
    let bridges = get(a.console_addr().unwrap(), "/api/network").await;
    assert_eq!(bridges[0]["remote_broker"], "b");
    assert_eq!(bridges[0]["direction"], "outbound");
    assert_eq!(bridges[0]["messages_forwarded"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_demand_nothing_moves_and_static_inclusion_moves_anyway() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path(), "b", "").await;
    let a = broker(
        dir.path(),
        "a",
        &connector(
            "a-to-b",
            &b,
            "statically_included_destinations = [\"queue://uplink\"]",
        ),
    )
    .await;
    bridges_up(&a, 1).await;
    send(&a, "/queue/local", &["stays"]).await;
    send(&a, "/queue/uplink", &["goes"]).await;
    wait_for("the static destination forwarded", || async {
        pending(&b, "uplink").await >= 1
    })
    .await;
    assert_eq!(
        pending(&a, "local").await,
        1,
        "a message without demand moved"
    );
    assert_eq!(pending(&b, "local").await, 0);
    // (No receipt asked: the waiting message may come first.)
    let mut consumer = RawClient::connect(b.transport_addr("stomp").unwrap()).await;
    consumer
        .send(
            &Frame::new(Command::Subscribe)
                .header("destination", "/queue/uplink")
                .header("id", "s"),
        )
        .await;
    assert_eq!(consumer.next().await.unwrap().body, b"goes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplex_carries_both_ways_and_one_way_never_backwards() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path(), "b", "").await;
    let c = broker(dir.path(), "c", "").await;
    let a = broker(
        dir.path(),
        "a",
        &format!(
            "{}{}",
            connector("a-b-duplex", &b, "duplex = true"),
            connector("a-c-oneway", &c, "")
        ),
    )
    .await;
    bridges_up(&a, 2).await;
    // Duplex: a consumer on a (the connecting side) gets what b produces.
    let mut on_a = subscribe(&a, "/queue/back").await;
    demand_reaches(&b, "back").await;
    send(&b, "/queue/back", &["from b"]).await;
    assert_eq!(on_a.next().await.unwrap().body, b"from b");
    // One way: c's messages never flow to a, even with a consumer there.
    let mut on_a2 = subscribe(&a, "/queue/never").await;
    send(&c, "/queue/never", &["from c"]).await;
    nothing_more(&mut on_a2).await;
    assert_eq!(pending(&c, "never").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_ttl_stops_a_message_at_the_right_hop() {
    for (ttl, reaches) in [(1u32, false), (2, true)] {
        let dir = tempfile::tempdir().unwrap();
        let c = broker(dir.path(), "c", "").await;
        let b = broker(
            dir.path(),
            "b",
            &connector("b-c", &c, &format!("network_ttl = {ttl}")),
        )
        .await;
        let a = broker(
            dir.path(),
            "a",
            &connector("a-b", &b, &format!("network_ttl = {ttl}")),
        )
        .await;
        bridges_up(&a, 1).await;
        bridges_up(&b, 1).await;
        let mut on_c = subscribe(&c, "/queue/far").await;
        demand_reaches(&b, "far").await;
        if reaches {
            demand_reaches(&a, "far").await;
        }
        send(&a, "/queue/far", &["hop"]).await;
        if reaches {
            assert_eq!(on_c.next().await.unwrap().get("portico-path"), Some("a,b"));
        } else {
            nothing_more(&mut on_c).await;
            assert_eq!(pending(&a, "far").await, 1, "ttl {ttl}: the message left a");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_delivers_each_topic_message_once_to_every_subscriber() {
    let dir = tempfile::tempdir().unwrap();
    let c = broker(dir.path(), "c", "").await;
    let b = broker(
        dir.path(),
        "b",
        &connector("b-c", &c, "duplex = true\nnetwork_ttl = 2"),
    )
    .await;
    let a = broker(
        dir.path(),
        "a",
        &format!(
            "{}{}",
            connector("a-b", &b, "duplex = true\nnetwork_ttl = 2"),
            connector("a-c", &c, "duplex = true\nnetwork_ttl = 2")
        ),
    )
    .await;
    bridges_up(&a, 2).await;
    bridges_up(&b, 1).await;
    let mut subs = Vec::new();
    for broker in [&a, &b, &c] {
        subs.push(subscribe(broker, "/topic/news").await);
    }
    // Let demand settle across the mesh: on every broker, its own
    // subscriber and one from each of its two bridges.
    for broker in [&a, &b, &c] {
        wait_for("demand to settle across the mesh", || async {
            let topics = get(broker.console_addr().unwrap(), "/api/topics").await;
            let n = topics
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["name"] == "news")
                .map_or(0, |t| t["subscribers"].as_u64().unwrap());
            n >= 3
        })
        .await;
    }
    let mut publisher = RawClient::connect(a.transport_addr("stomp").unwrap()).await;
    for i in 0..5 {
        publisher
            .send(
                &Frame::new(Command::Send)
                    .header("destination", "/topic/news")
                    .body(format!("n{i}")),
            )
            .await;
    }
    for (i, sub) in subs.iter_mut().enumerate() {
        for n in 0..5 {
            let m = sub.next().await.unwrap();
            assert_eq!(m.body, format!("n{n}").as_bytes(), "subscriber {i}");
        }
        nothing_more(sub).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_refused_on_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let hash = portico_broker::auth::hash_password("right").unwrap();
    let b = broker(
        dir.path(),
        "b",
        &format!("[[user]]\nname = \"bridge\"\npassword_hash = \"{hash}\"\n"),
    )
    .await;
    std::fs::write(dir.path().join("wrong.txt"), "wrong\n").unwrap();
    let a = broker(
        dir.path(),
        "a",
        &connector(
            "a-b",
            &b,
            "user = \"bridge\"\npassword_file = \"wrong.txt\"",
        ),
    )
    .await;
    wait_for("b to refuse the bridge", || async {
        let summary = get(b.console_addr().unwrap(), "/api/broker").await;
        summary["protocol_errors"].as_u64().unwrap() > 0
    })
    .await;
    let bridges = get(a.console_addr().unwrap(), "/api/network").await;
    assert_eq!(bridges[0]["state"], "connecting", "{bridges}");
    assert_eq!(
        get(b.console_addr().unwrap(), "/api/network")
            .await
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_messages_flow_back_when_demand_moves() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path(), "b", "").await;
    let a = broker(dir.path(), "a", &connector("a-b", &b, "duplex = true")).await;
    bridges_up(&a, 1).await;
    // A consumer on b that takes one message and leaves the rest unacked.
    let mut on_b = RawClient::connect(b.transport_addr("stomp").unwrap()).await;
    on_b.send(
        &Frame::new(Command::Subscribe)
            .header("destination", "/queue/moving")
            .header("id", "s")
            .header("ack", "client-individual")
            .header("activemq.prefetchSize", "1"),
    )
    .await;
    demand_reaches(&a, "moving").await;
    send(&a, "/queue/moving", &["m0", "m1", "m2"]).await;
    let first = on_b.next().await.unwrap();
    assert_eq!(first.body, b"m0");
    // Wait until all three were forwarded to b.
    wait_for("all three forwarded to b", || async {
        pending(&a, "moving").await == 0
    })
    .await;
    // b's consumer goes away; a consumer appears on a: the messages come back.
    drop(on_b);
    let mut on_a = RawClient::connect(a.transport_addr("stomp").unwrap()).await;
    on_a.send(
        &Frame::new(Command::Subscribe)
            .header("destination", "/queue/moving")
            .header("id", "s"),
    )
    .await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(String::from_utf8(on_a.next().await.unwrap().body).unwrap());
    }
    got.sort();
    assert_eq!(got, ["m0", "m1", "m2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_in_the_middle_of_a_stream_loses_nothing_persistent() {
    let dir = tempfile::tempdir().unwrap();
    // b on a fixed port, so a's connector finds it again after the restart.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let b_toml = dir.path().join("b.toml");
    std::fs::write(
        &b_toml,
        format!("[broker]\nname = \"b\"\ndata_dir = \"b-data\"\n\n[[transport]]\nname = \"stomp\"\nbind = \"127.0.0.1:{port}\"\n\n[console]\nbind = \"127.0.0.1:0\"\n"),
    )
    .unwrap();
    let start_b = || async {
        Broker::start(BrokerConfig::load(&b_toml).unwrap())
            .await
            .unwrap()
    };
    let b = start_b().await;
    let a = broker(
        dir.path(),
        "a",
        &format!(
            "[[network_connector]]\nname = \"a-b\"\nuri = \"static:(tcp://127.0.0.1:{port})\"\n"
        ),
    )
    .await;
    bridges_up(&a, 1).await;
    let total = 2000;
    let mut consumer = subscribe(&b, "/queue/stream").await;
    demand_reaches(&a, "stream").await;
    let mut producer = RawClient::connect(a.transport_addr("stomp").unwrap()).await;
    for i in 0..total {
        producer
            .send(
                &Frame::new(Command::Send)
                    .header("destination", "/queue/stream")
                    .header("persistent", "true")
                    .header("n", i.to_string())
                    .header("receipt", i.to_string())
                    .body(vec![b'x'; 1024]),
            )
            .await;
    }
    let mut got = std::collections::HashSet::new();
    // Some arrive, then b restarts in the middle of the stream.
    while got.len() < 300 {
        let m = consumer.next().await.unwrap();
        got.insert(m.get("n").unwrap().to_owned());
    }
    b.shutdown(Duration::from_secs(1)).await;
    for m in consumer.until_closed().await {
        if let Some(n) = m.get("n") {
            got.insert(n.to_owned());
        }
    }
    let b = start_b().await;
    let mut consumer = RawClient::connect(b.transport_addr("stomp").unwrap()).await;
    consumer
        .send(
            &Frame::new(Command::Subscribe)
                .header("destination", "/queue/stream")
                .header("id", "s"),
        )
        .await;
    while got.len() < total {
        let m = tokio::time::timeout(DEADLINE, consumer.next())
            .await
            .unwrap_or_else(|_| panic!("stuck at {} of {total}", got.len()))
            .expect("consumer closed");
        got.insert(m.get("n").unwrap().to_owned());
    }
    let mut receipts = 0;
    while receipts < total {
        assert_eq!(producer.next().await.unwrap().command, Command::Receipt);
        receipts += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridges_run_over_tls_and_filters_keep_excluded_destinations_home() {
    // b takes bridges on a TLS transport with a dev certificate.
    let dir = BrokerDir::new("");
    let b = dir.start().await;
    let tls = b.transport_addr("stomp+ssl").unwrap();
    let ca = dir.ca();
    let a = broker(
        dir.path("").as_path(),
        "a",
        &format!(
            "[[network_connector]]\nname = \"a-b\"\nuri = \"static:(ssl://{tls})\"\nca = {:?}\nexcluded_destinations = [\"queue://PRIVATE.>\"]\n",
            ca
        ),
    )
    .await;
    bridges_up(&a, 1).await;
    let b_addr = b.transport_addr("stomp").unwrap();
    let mut public = RawClient::connect(b_addr).await;
    public
        .send(
            &Frame::new(Command::Subscribe)
                .header("destination", "/queue/PUBLIC.x")
                .header("id", "p"),
        )
        .await;
    let mut private = RawClient::connect(b_addr).await;
    private
        .send(
            &Frame::new(Command::Subscribe)
                .header("destination", "/queue/PRIVATE.x")
                .header("id", "q"),
        )
        .await;
    demand_reaches(&a, "PUBLIC.x").await;
    send(&a, "/queue/PRIVATE.x", &["stays"]).await;
    send(&a, "/queue/PUBLIC.x", &["crosses"]).await;
    assert_eq!(public.next().await.unwrap().body, b"crosses");
    nothing_more(&mut private).await;
    assert_eq!(pending(&a, "PRIVATE.x").await, 1);
}

#[test]
fn a_password_written_in_a_connector_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.toml");
    std::fs::write(
        &path,
        "[broker]\nname = \"b\"\ndata_dir = \"d\"\n\n[[network_connector]]\nname = \"c\"\nuri = \"static:(tcp://127.0.0.1:61616)\"\nuser = \"u\"\npassword = \"s3cret\"\n",
    )
    .unwrap();
    let Err(portico_core::diagnostics::ConfigError::Invalid { diagnostics }) =
        BrokerConfig::load(&path)
    else {
        panic!("accepted");
    };
    let text: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    assert!(
        text.iter()
            .any(|d| d.contains(":9:12: error: a network connector's password is never written")),
        "{text:?}"
    );
    assert!(
        !text.iter().any(|d| d.contains("s3cret")),
        "the password leaked into an error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_consumers_come_before_remote_ones() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path(), "b", "").await;
    let a = broker(dir.path(), "a", &connector("a-b", &b, "duplex = true")).await;
    bridges_up(&a, 1).await;
    let mut remote = subscribe(&b, "/queue/work").await;
    demand_reaches(&a, "work").await;
    let mut local = subscribe(&a, "/queue/work").await;
    send(&a, "/queue/work", &["1", "2", "3", "4", "5", "6"]).await;
    for _ in 0..6 {
        assert_eq!(local.next().await.unwrap().command, Command::Message);
    }
    nothing_more(&mut remote).await;
}

/// A TCP relay whose open connections can go silent: they move no bytes
/// either way and stay open, as across a network partition that drops
/// packets; connections made afterwards pass.
struct Relay {
    addr: SocketAddr,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// One switch per connection made so far.
    switches: std::sync::Arc<std::sync::Mutex<Vec<tokio::sync::watch::Sender<bool>>>>,
}

impl Relay {
    async fn start(upstream: SocketAddr) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let switches = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (count, all) = (accepted.clone(), switches.clone());
        tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let up = tokio::net::TcpStream::connect(upstream).await.unwrap();
                let (dr, dw) = down.into_split();
                let (ur, uw) = up.into_split();
                let (switch, frozen) = tokio::sync::watch::channel(false);
                all.lock().unwrap().push(switch);
                tokio::spawn(pipe(dr, uw, frozen.clone()));
                tokio::spawn(pipe(ur, dw, frozen));
            }
        });
        Self {
            addr,
            accepted,
            switches,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Every connection open now goes silent.
    fn freeze_open(&self) {
        for switch in self.switches.lock().unwrap().iter() {
            switch.send_replace(true);
        }
    }
}

/// Copies until the relay freezes; then holds both sockets, silent.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            _ = async { frozen.wait_for(|f| *f).await.is_ok() } => break,
            n = from.read(&mut buf) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if to.write_all(&buf[..n]).await.is_err() { return },
            },
        }
    }
    // Silent, not closed (both halves stay held): only heart-beats can tell.
    let _held = (from, to);
    std::future::pending::<()>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_whose_peer_goes_silent_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let beats = "[limits]\nheart_beat = \"200ms\"\n";
    let b = broker(dir.path(), "b", beats).await;
    let relay = Relay::start(b.transport_addr("stomp").unwrap()).await;
    let a = broker(
        dir.path(),
        "a",
        &format!(
            "{beats}\n[[network_connector]]\nname = \"a-b\"\nuri = \"static:(tcp://{})\"\nduplex = true\n",
            relay.addr
        ),
    )
    .await;
    bridges_up(&a, 1).await;
    assert_eq!(relay.accepted(), 1);
    // The partition: the open bridge connection goes silent.
    relay.freeze_open();
    wait_for("a to notice the silence and connect again", || async {
        relay.accepted() >= 2
    })
    .await;
    bridges_up(&a, 1).await;
    // b dropped its silent end too: one bridge, connected.
    wait_for("b to drop the silent bridge", || async {
        let bridges = get(b.console_addr().unwrap(), "/api/network").await;
        bridges.as_array().unwrap().len() == 1 && bridges[0]["state"] == "connected"
    })
    .await;
    // And the new bridge carries messages.
    let mut sub = subscribe(&b, "/queue/after").await;
    demand_reaches(&a, "after").await;
    send(&a, "/queue/after", &["m"]).await;
    assert_eq!(sub.next().await.unwrap().body, b"m");
}

/// A message as large as the brokers' frame size allows crosses a bridge:
/// the receiving end reads frames by its own limits, with room for the
/// headers the network adds, not by a client library's default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_as_large_as_the_frame_size_allows_crosses_a_bridge() {
    let dir = tempfile::tempdir().unwrap();
    let limits = "[limits]\nmax_frame_size = 33554432\n";
    let b = broker(dir.path(), "b", limits).await;
    let a = broker(
        dir.path(),
        "a",
        &format!("{limits}\n{}", connector("a-b", &b, "")),
    )
    .await;
    bridges_up(&a, 1).await;
    let mut sub = subscribe(&b, "/queue/large").await;
    demand_reaches(&a, "large").await;
    let body = "L".repeat(20 * 1024 * 1024);
    send(&a, "/queue/large", &[body.as_str()]).await;
    let m = sub.next().await.unwrap();
    assert_eq!((m.command, m.body.len()), (Command::Message, body.len()));
}

/// A bridged peer drops a message whose id it has seen (a re-forward after
/// a lost ACK), so a broker must never give an id twice: not to a new
/// message after a restart (non-persistent messages' numbers never reach the
/// journal), and a stored message keeps the id it had across the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_broker_gives_no_message_id_twice() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path(), "b", "").await;
    let a = broker(dir.path(), "a", &connector("a-to-b", &b, "")).await;
    bridges_up(&a, 1).await;
    let mut consumer = subscribe(&b, "/queue/ids").await;
    demand_reaches(&a, "ids").await;
    // One stored message nobody consumes yet (numbered
    // before the others): its id survives the restart.
    send(&a, "/queue/kept", &["kept"]).await;
    let browse = |a: &Broker| {
        let console = a.console_addr().unwrap();
        async move {
            let listed = get(console, "/api/queues/kept/messages").await;
            listed["messages"][0]["message_id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let kept = browse(&a).await;
    let mut producer = RawClient::connect(a.transport_addr("stomp").unwrap()).await;
    for i in 0..3 {
        producer
            .send(
                &Frame::new(Command::Send)
                    .header("destination", "/queue/ids")
                    .header("receipt", i.to_string())
                    .body(format!("fleeting {i}").into_bytes()),
            )
            .await;
        assert_eq!(producer.next().await.unwrap().command, Command::Receipt);
    }
    let mut seen = std::collections::HashSet::new();
    for _ in 0..3 {
        let m = consumer.next().await.unwrap();
        seen.insert(m.get("message-id").unwrap().to_owned());
    }
    drop(producer);
    a.shutdown(Duration::from_secs(1)).await;

    let a = broker(dir.path(), "a", &connector("a-to-b", &b, "")).await;
    bridges_up(&a, 1).await;
    demand_reaches(&a, "ids").await;
    assert_eq!(browse(&a).await, kept, "a stored message's id changed");
    send(&a, "/queue/ids", &["after the restart"]).await;
    let m = tokio::time::timeout(DEADLINE, consumer.next())
        .await
        .expect("the message after the restart was dropped as seen")
        .unwrap();
    assert_eq!(m.body, b"after the restart");
    let id = m.get("message-id").unwrap();
    assert!(!seen.contains(id), "{id} was given twice");
    assert_ne!(id, kept);
}

/// A STOMP 1.1 client acknowledges by `message-id`. A forwarded message
/// keeps its origin's id, whose number is not the receiving broker's:
/// the ACK still names that message, and only it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stomp_11_ack_by_message_id_names_the_forwarded_message() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path(), "b", "").await;
    let a = broker(dir.path(), "a", &connector("a-to-b", &b, "")).await;
    bridges_up(&a, 1).await;
    // b numbers messages of its own first, so its numbers and a's differ.
    send(&b, "/queue/elsewhere", &["b1", "b2", "b3", "b4", "b5"]).await;
    let consumer_on_b = || async {
        let mut c = RawClient::open(b.transport_addr("stomp").unwrap()).await;
        c.send(
            &Frame::new(Command::Connect)
                .header("accept-version", "1.1")
                .header("host", "b"),
        )
        .await;
        assert_eq!(c.next().await.unwrap().command, Command::Connected);
        c.send(
            &Frame::new(Command::Subscribe)
                .header("destination", "/queue/forwarded")
                .header("id", "s")
                .header("ack", "client-individual")
                .header("receipt", "sub"),
        )
        .await;
        // Messages waiting for it may come before the receipt.
        let mut early = Vec::new();
        loop {
            let frame = c.next().await.unwrap();
            match frame.command {
                Command::Receipt => return (c, early),
                Command::Message => early.push(frame),
                _ => panic!("{frame:?}"),
            }
        }
    };
    let (mut consumer, early) = consumer_on_b().await;
    assert!(early.is_empty());
    demand_reaches(&a, "forwarded").await;
    send(&a, "/queue/forwarded", &["one", "two", "three"]).await;
    let mut ids = Vec::new();
    for want in ["one", "two", "three"] {
        let m = consumer.next().await.unwrap();
        assert_eq!(m.body, want.as_bytes());
        ids.push(m.get("message-id").unwrap().to_owned());
    }
    assert!(ids.iter().all(|id| id.starts_with("ID:a-")), "{ids:?}");
    consumer
        .send(
            &Frame::new(Command::Ack)
                .header("message-id", ids[1].as_str())
                .header("subscription", "s")
                .header("receipt", "acked"),
        )
        .await;
    let answer = consumer.next().await.unwrap();
    assert_eq!(answer.command, Command::Receipt, "{answer:?}");
    drop(consumer);
    // Only "two" was acknowledged: the others come back.
    let (mut again, early) = consumer_on_b().await;
    let mut back: Vec<String> = early
        .into_iter()
        .map(|m| String::from_utf8(m.body).unwrap())
        .collect();
    while back.len() < 2 {
        back.push(String::from_utf8(again.next().await.unwrap().body).unwrap());
    }
    back.sort();
    assert_eq!(back, ["one", "three"]);
    nothing_more(&mut again).await;
}
