//! `portico-broker producer` and `consumer` as a user runs them: what the
//! consumer reports is what the broker saw acknowledged.

mod common;

use std::time::Duration;

use common::*;
use portico_broker::tools::{consume, produce, Connection, ConsumerArgs, ProducerArgs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_stops_part_way_loses_no_acknowledgement() {
    let dir = BrokerDir::new("");
    let broker = dir.start().await;
    let console = broker.console_addr().unwrap();
    let connection = Connection {
        broker_url: format!("tcp://{}", broker.transport_addr("stomp").unwrap()),
        user: None,
        password: None,
        destination: "queue://half".into(),
        ca: None,
    };
    let sent = produce(&ProducerArgs {
        connection: connection.clone(),
        persistent: true,
        message_size: 100,
        message_count: 2000,
        sleep: Duration::ZERO,
    })
    .await
    .unwrap();
    assert_eq!(sent.sent, 2000);
    // Three consumers in turn, each taking a share and stopping with
    // prefetched messages in hand.
    for round in 1..=3u64 {
        let received = consume(&ConsumerArgs {
            connection: connection.clone(),
            message_count: 500,
            receive_timeout: Duration::from_secs(10),
        })
        .await
        .unwrap();
        assert_eq!((received.unique, received.missing), (500, 0), "{received}");
        let figures = || async {
            let queues: serde_json::Value =
                serde_json::from_str(&http_get(console, "/api/queues").await).unwrap();
            let q = &queues[0];
            (
                q["pending"].as_u64().unwrap(),
                q["dequeued"].as_u64().unwrap(),
                q["consumers"].as_u64().unwrap(),
            )
        };
        // Once the consumer is gone, the broker holds exactly what was not
        // acknowledged: its unacknowledged prefetch went back to the queue.
        wait_for("the consumer's session to end", || async {
            figures().await.2 == 0
        })
        .await;
        assert_eq!(
            figures().await,
            (2000 - 500 * round, 500 * round, 0),
            "after consumer {round}"
        );
    }
    broker.shutdown(Duration::from_secs(1)).await;
}
