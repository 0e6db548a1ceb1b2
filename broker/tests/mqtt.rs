//! MQTT with clients nobody here wrote: paho-mqtt (and stomp.py for the
//! mapping) through every scenario in `tests/py/mqtt_scenarios.py`, and a
//! persistent session's QoS 1 messages across a SIGKILL of the broker.

mod common;

use std::net::SocketAddr;

use common::*;

const MQTT: &str = r#"
[[transport]]
name = "mqtt"
bind = "127.0.0.1:0"

[[transport]]
name = "mqtt+ssl"
bind = "127.0.0.1:0"
cert = "broker.crt"
key = "broker.key"
"#;

/// Runs `name` against an MQTT and a STOMP address.
async fn run(name: &'static str, mqtt: SocketAddr, stomp: SocketAddr) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/mqtt_scenarios.py");
    let args = vec![
        mqtt.ip().to_string(),
        mqtt.port().to_string(),
        stomp.port().to_string(),
    ];
    python_scenario(script, name, args).await;
}

async fn scenario(name: &'static str, extra: &str) {
    let dir = BrokerDir::new(&format!("{MQTT}{extra}"));
    let broker = dir.start().await;
    run(
        name,
        broker.transport_addr("mqtt").unwrap(),
        broker.transport_addr("stomp").unwrap(),
    )
    .await;
    broker.shutdown(std::time::Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_subscribe_with_wildcards_at_each_qos() {
    scenario("pubsub", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_gets_connack_refused() {
    let hash = portico_broker::auth::hash_password("device-secret").unwrap();
    scenario(
        "wrong_password",
        &format!("[[user]]\nname = \"device\"\npassword_hash = \"{hash}\"\n"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_will_is_published_when_a_client_vanishes() {
    scenario("will", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_are_given_replaced_and_cleared() {
    scenario("retained", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_topics_are_activemq_topics_both_ways() {
    scenario("mapping", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_close_the_connection_alone() {
    scenario("violations", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_takes_over_the_client_id() {
    scenario("takeover", "").await;
}

/// A persistent session (`clean_session = false`) subscribes at QoS 1 and
/// goes; five messages are published for it (and one retained); the
/// broker is SIGKILLed and started again; the session comes back, present,
/// and gets all five, and the retained message is still retained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_sessions_messages_survive_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let (mqtt, stomp): (SocketAddr, SocketAddr) = (
        ([127, 0, 0, 1], free_port()).into(),
        ([127, 0, 0, 1], free_port()).into(),
    );
    let toml = format!(
        "[broker]\nname = \"devices\"\ndata_dir = \"data\"\n\n\
         [[transport]]\nname = \"mqtt\"\nbind = \"{mqtt}\"\n\n\
         [[transport]]\nname = \"stomp\"\nbind = \"{stomp}\"\n"
    );
    let start = || {
        let node = broker_node(dir.path(), "devices", &toml, &[]);
        wait_until("the broker's MQTT port", DEADLINE, || {
            std::net::TcpStream::connect(mqtt).is_ok()
        });
        node
    };
    let node = start();
    run("persist_subscribe", mqtt, stomp).await;
    run("persist_publish", mqtt, stomp).await;
    drop(node); // SIGKILL
    let _node = start();
    run("persist_receive", mqtt, stomp).await;
}

const PAIR_NODE: &str = r#"
[broker]
name = "NAME"
data_dir = "shared"

[[transport]]
name = "mqtt"
bind = "127.0.0.1:0"

[[transport]]
name = "stomp"
bind = "127.0.0.1:0"

[ha]
lease_renew = "50ms"
takeover_after = "150ms"
"#;

/// The same across a failover of an active/standby pair: the persistent
/// session subscribes and messages are published on the active node, the
/// active is SIGKILLed, and the standby that took the shared data_dir
/// over has the session, its five messages and the retained message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_survives_a_failover_of_the_pair() {
    let dir = tempfile::tempdir().unwrap();
    let active = broker_node(dir.path(), "a", &PAIR_NODE.replace("NAME", "a"), &[]);
    let (mqtt, stomp) = (
        active.address("transport=mqtt addr="),
        active.address("transport=stomp addr="),
    );
    let standby = broker_node(dir.path(), "b", &PAIR_NODE.replace("NAME", "b"), &[]);
    run("persist_subscribe", mqtt, stomp).await;
    run("persist_publish", mqtt, stomp).await;
    drop(active); // SIGKILL: the standby takes over.
    let (mqtt, stomp) = (
        standby.address("transport=mqtt addr="),
        standby.address("transport=stomp addr="),
    );
    run("persist_receive", mqtt, stomp).await;
}
