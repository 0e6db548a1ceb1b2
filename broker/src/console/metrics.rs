//! `GET /metrics` on the console port: the broker's figures for
//! Prometheus (`portico_broker_` prefix), read from one snapshot of the
//! router and the bridges at each scrape.

use std::collections::BTreeMap;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::network::BridgeInfo;
use crate::router::Stats;
use crate::shared::BrokerCore;

type Labels = Vec<(&'static str, String)>;

/// The exposition in OpenMetrics text (see `portico_core::metrics_text`
/// for the Prometheus format).
pub(super) fn render(core: &BrokerCore, stats: &Stats, bridges: &[BridgeInfo]) -> String {
    let mut registry = Registry::with_prefix("portico_broker");
    let gauges = |rows: Vec<(Labels, i64)>| {
        let f = Family::<Labels, Gauge>::default();
        for (labels, value) in rows {
            f.get_or_create(&labels).set(value);
        }
        f
    };
    let counters = |rows: Vec<(Labels, u64)>| {
        let f = Family::<Labels, Counter>::default();
        for (labels, value) in rows {
            f.get_or_create(&labels).inc_by(value);
        }
        f
    };
    let gauge = |value: i64| {
        let g = Gauge::<i64>::default();
        g.set(value);
        g
    };
    let counter = |value: u64| {
        let c = Counter::<u64>::default();
        c.inc_by(value);
        c
    };
    let queue = |name: &str| vec![("queue", name.to_owned())];
    let q: Vec<_> = super::visible_queues(stats).collect();
    registry.register(
        "queue_messages",
        "Messages a queue holds: waiting, scheduled to come back, delivered and not acknowledged",
        gauges(
            q.iter()
                .map(|s| (queue(&s.name), s.pending as i64))
                .collect(),
        ),
    );
    registry.register(
        "queue_bytes",
        "Bytes of the messages a queue holds",
        gauges(q.iter().map(|s| (queue(&s.name), s.bytes as i64)).collect()),
    );
    registry.register(
        "queue_consumers",
        "Consumers of a queue",
        gauges(
            q.iter()
                .map(|s| (queue(&s.name), s.consumers as i64))
                .collect(),
        ),
    );
    registry.register(
        "queue_producers",
        "Connections sending to a queue now",
        gauges(
            q.iter()
                .map(|s| (queue(&s.name), s.producers as i64))
                .collect(),
        ),
    );
    registry.register(
        "queue_enqueued",
        "Messages a queue took since start",
        counters(q.iter().map(|s| (queue(&s.name), s.enqueued)).collect()),
    );
    registry.register(
        "queue_dequeued",
        "Messages a queue's consumers took (acknowledged) since start",
        counters(q.iter().map(|s| (queue(&s.name), s.dequeued)).collect()),
    );
    registry.register(
        "queue_expired",
        "Messages that expired in a queue since start",
        counters(q.iter().map(|s| (queue(&s.name), s.expired)).collect()),
    );
    registry.register(
        "queue_dead_lettered",
        "Messages a queue moved to a dead-letter queue since start",
        counters(
            q.iter()
                .map(|s| (queue(&s.name), s.dead_lettered))
                .collect(),
        ),
    );
    let durables = super::durable_views(core, stats);
    let durable = |d: &super::DurableView| {
        vec![
            ("client_id", d.client_id.clone()),
            ("subscription", d.subscription.clone()),
        ]
    };
    registry.register(
        "durable_subscription_messages",
        "Messages a durable topic subscription keeps for its subscriber",
        gauges(
            durables
                .iter()
                .map(|d| (durable(d), d.pending as i64))
                .collect(),
        ),
    );
    registry.register(
        "durable_subscription_active",
        "1 while a durable topic subscription's subscriber is connected",
        gauges(
            durables
                .iter()
                .map(|d| (durable(d), i64::from(d.active)))
                .collect(),
        ),
    );
    let topic = |name: &str| vec![("topic", name.to_owned())];
    let t = &stats.topics;
    registry.register(
        "topic_subscribers",
        "Subscribers of a topic",
        gauges(
            t.iter()
                .map(|s| (topic(&s.name), s.subscribers as i64))
                .collect(),
        ),
    );
    registry.register(
        "topic_producers",
        "Connections publishing to a topic now",
        gauges(
            t.iter()
                .map(|s| (topic(&s.name), s.producers as i64))
                .collect(),
        ),
    );
    registry.register(
        "topic_enqueued",
        "Messages published to a topic since start",
        counters(t.iter().map(|s| (topic(&s.name), s.enqueued)).collect()),
    );
    registry.register(
        "topic_dequeued",
        "Deliveries to a topic's subscribers since start",
        counters(t.iter().map(|s| (topic(&s.name), s.dequeued)).collect()),
    );
    registry.register(
        "topic_expired",
        "Messages that expired before a subscriber took them, since start",
        counters(t.iter().map(|s| (topic(&s.name), s.expired)).collect()),
    );
    let mut by_transport: BTreeMap<&str, i64> = BTreeMap::new();
    for c in &stats.connections {
        *by_transport.entry(c.transport.as_str()).or_default() += 1;
    }
    registry.register(
        "connections",
        "Open connections by transport (bridges included)",
        gauges(
            by_transport
                .into_iter()
                .map(|(transport, n)| (vec![("transport", transport.to_owned())], n))
                .collect(),
        ),
    );
    let summary = core.summary(stats.memory);
    registry.register(
        "connections_accepted",
        "Client connections accepted since start",
        counter(summary.connections_total),
    );
    registry.register(
        "failed_logins",
        "CONNECTs refused since start",
        counter(summary.failed_logins),
    );
    registry.register(
        "protocol_errors",
        "Connections closed with an ERROR since start",
        counter(summary.protocol_errors),
    );
    let memory = stats.memory;
    registry.register(
        "memory_used_bytes",
        "Bytes of messages the broker holds",
        gauge(memory.used as i64),
    );
    registry.register(
        "memory_limit_bytes",
        "The broker's memory_limit",
        gauge(memory.limit as i64),
    );
    registry.register(
        "held_senders",
        "Senders waiting for room (a queue's or the broker's)",
        gauge(memory.held_senders as i64),
    );
    registry.register(
        "journal_bytes",
        "Bytes of the journal's segments on disk",
        gauge(i64::try_from(summary.journal_bytes).unwrap_or(i64::MAX)),
    );
    registry.register(
        "journal_fsync_seconds",
        "How long the journal's group commits took to write and fsync",
        core.journal.fsync_histogram(),
    );
    registry.register(
        "scheduled_messages",
        "Scheduled messages waiting for their time",
        gauge(stats.scheduled as i64),
    );
    let bridge = |b: &BridgeInfo| {
        vec![
            ("bridge", b.name.clone()),
            ("direction", b.direction.to_owned()),
        ]
    };
    registry.register(
        "bridge_up",
        "1 while a network bridge is connected",
        gauges(
            bridges
                .iter()
                .map(|b| (bridge(b), i64::from(b.state == "connected")))
                .collect(),
        ),
    );
    registry.register(
        "bridge_forwarded",
        "Messages a bridge forwarded to its peer since start",
        counters(
            bridges
                .iter()
                .map(|b| (bridge(b), b.messages_forwarded))
                .collect(),
        ),
    );
    registry.register(
        "bridge_received",
        "Messages a bridge received from its peer since start",
        counters(
            bridges
                .iter()
                .map(|b| (bridge(b), b.messages_received))
                .collect(),
        ),
    );
    let mut out = String::new();
    // Writing into a String does not fail.
    let _ = encode(&mut out, &registry);
    out
}
