//! Prometheus metrics, all prefixed `portico_`.
//!
//! Sessions and health checks hold their own handles (atomics), taken once
//! when a listener or target is set up, so the connection path takes no lock.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::admission::Refusal;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    listener: String,
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    listener: String,
    direction: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    group: String,
    target: String,
    address: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    group: String,
    target: String,
    address: String,
    result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabels {
    group: String,
    target: String,
    address: String,
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PairLabels {
    group: String,
    pair: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

/// Every metric the front door exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    connections: Family<ListenerLabels, Counter>,
    active_connections: Family<ListenerLabels, Gauge>,
    refused: Family<ReasonLabels, Counter>,
    handshake_failures: Family<ReasonLabels, Counter>,
    bytes: Family<DirectionLabels, Counter>,
    upstream_connect_failures: Family<TargetLabels, Counter>,
    upstream_handshakes: Family<HandshakeLabels, Counter>,
    target_healthy: Family<TargetLabels, Gauge>,
    target_connections: Family<TargetLabels, Gauge>,
    health_checks: Family<CheckLabels, Counter>,
    pair_active_nodes: Family<PairLabels, Gauge>,
    config_reloads: Family<ResultLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("portico");
        let connections = Family::default();
        registry.register(
            "connections",
            "Downstream connections accepted, by listener",
            connections.clone(),
        );
        let active_connections = Family::default();
        registry.register(
            "active_connections",
            "Downstream connections open now, by listener",
            active_connections.clone(),
        );
        let refused = Family::default();
        registry.register(
            "connections_refused",
            "Downstream connections closed before proxying: not_allowed (source CIDR), no_target, \
             listener_limit, source_limit, source_rate, handshakes, source_handshakes (over a listener's [listener.limits])",
            refused.clone(),
        );
        let handshake_failures = Family::default();
        registry.register(
            "handshake_failures",
            "Downstream TLS handshakes that failed, by reason",
            handshake_failures.clone(),
        );
        let bytes = Family::default();
        registry.register(
            "bytes",
            "Bytes relayed: direction=\"upstream\" is client to target, \"downstream\" is target to client",
            bytes.clone(),
        );
        let upstream_connect_failures = Family::default();
        registry.register(
            "upstream_connect_failures",
            "Connections (TCP or TLS) to a target that failed",
            upstream_connect_failures.clone(),
        );
        let upstream_handshakes = Family::default();
        registry.register(
            "upstream_tls_handshakes",
            "TLS handshakes with a target, by kind: full, or resumed (the target's session \
             ticket: no certificate sent or verified again)",
            upstream_handshakes.clone(),
        );
        let target_healthy = Family::default();
        registry.register(
            "target_healthy",
            "1 while a target is healthy, 0 otherwise",
            target_healthy.clone(),
        );
        let target_connections = Family::default();
        registry.register(
            "target_active_connections",
            "Connections open now to a target",
            target_connections.clone(),
        );
        let health_checks = Family::default();
        registry.register(
            "health_checks",
            "Health-check probes, by result",
            health_checks.clone(),
        );
        let pair_active_nodes = Family::default();
        registry.register(
            "pair_active_nodes",
            "Healthy nodes of an active/standby pair: 1 is right, 0 is an outage, 2 a split brain",
            pair_active_nodes.clone(),
        );
        let config_reloads = Family::default();
        registry.register(
            "config_reloads",
            "Configuration reloads, by result",
            config_reloads.clone(),
        );
        for result in ["success", "error"] {
            let _ = config_reloads.get_or_create(&ResultLabels {
                result: result.to_owned(),
            });
        }
        Self {
            registry,
            connections,
            active_connections,
            refused,
            handshake_failures,
            bytes,
            upstream_connect_failures,
            upstream_handshakes,
            target_healthy,
            target_connections,
            health_checks,
            pair_active_nodes,
            config_reloads,
        }
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The Prometheus text exposition (format 0.0.4), what scrapers that
    /// do not ask for OpenMetrics and browsers get: a counter's `# HELP`
    /// and `# TYPE` name its `_total` series, and there is no `# EOF`.
    pub fn render_prometheus(&self) -> String {
        portico_core::metrics_text::openmetrics_to_prometheus(&self.render())
    }

    pub(crate) fn listener(&self, listener: &str) -> ListenerMetrics {
        let labels = ListenerLabels {
            listener: listener.to_owned(),
        };
        let reason = |reason: &str| ReasonLabels {
            listener: listener.to_owned(),
            reason: reason.to_owned(),
        };
        let direction = |direction: &str| DirectionLabels {
            listener: listener.to_owned(),
            direction: direction.to_owned(),
        };
        // Series a user looks for exist before their first event.
        for r in crate::session::HANDSHAKE_REASONS {
            let _ = self.handshake_failures.get_or_create(&reason(r));
        }
        ListenerMetrics {
            connections: self.connections.get_or_create_owned(&labels),
            active: self.active_connections.get_or_create_owned(&labels),
            not_allowed: self.refused.get_or_create_owned(&reason("not_allowed")),
            no_target: self.refused.get_or_create_owned(&reason("no_target")),
            over_limit: Refusal::ALL.map(|r| self.refused.get_or_create_owned(&reason(r.as_str()))),
            bytes_upstream: self.bytes.get_or_create_owned(&direction("upstream")),
            bytes_downstream: self.bytes.get_or_create_owned(&direction("downstream")),
        }
    }

    /// Counts a failed downstream handshake (a rare path: takes the family's lock).
    pub(crate) fn handshake_failure(&self, listener: &str, reason: &str) {
        self.handshake_failures
            .get_or_create(&ReasonLabels {
                listener: listener.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub(crate) fn target(&self, group: &str, target: &str, address: &str) -> TargetMetrics {
        let labels = TargetLabels {
            group: group.to_owned(),
            target: target.to_owned(),
            address: address.to_owned(),
        };
        let check = |result: &str| CheckLabels {
            group: group.to_owned(),
            target: target.to_owned(),
            address: address.to_owned(),
            result: result.to_owned(),
        };
        let handshake = |kind: &str| HandshakeLabels {
            group: group.to_owned(),
            target: target.to_owned(),
            address: address.to_owned(),
            kind: kind.to_owned(),
        };
        TargetMetrics {
            full_handshakes: self
                .upstream_handshakes
                .get_or_create_owned(&handshake("full")),
            resumed_handshakes: self
                .upstream_handshakes
                .get_or_create_owned(&handshake("resumed")),
            healthy: self.target_healthy.get_or_create_owned(&labels),
            connections: self.target_connections.get_or_create_owned(&labels),
            connect_failures: self.upstream_connect_failures.get_or_create_owned(&labels),
            checks_ok: self.health_checks.get_or_create_owned(&check("success")),
            checks_failed: self.health_checks.get_or_create_owned(&check("failure")),
        }
    }

    /// Drops a target's series once it is gone for good.
    pub(crate) fn remove_target(&self, group: &str, target: &str, address: &str) {
        let labels = TargetLabels {
            group: group.to_owned(),
            target: target.to_owned(),
            address: address.to_owned(),
        };
        self.target_healthy.remove(&labels);
        self.target_connections.remove(&labels);
        self.upstream_connect_failures.remove(&labels);
        for kind in ["full", "resumed"] {
            self.upstream_handshakes.remove(&HandshakeLabels {
                group: group.to_owned(),
                target: target.to_owned(),
                address: address.to_owned(),
                kind: kind.to_owned(),
            });
        }
        for result in ["success", "failure"] {
            self.health_checks.remove(&CheckLabels {
                group: group.to_owned(),
                target: target.to_owned(),
                address: address.to_owned(),
                result: result.to_owned(),
            });
        }
    }

    pub(crate) fn pair_active_nodes(&self, group: &str, pair: &str) -> Gauge {
        self.pair_active_nodes.get_or_create_owned(&PairLabels {
            group: group.to_owned(),
            pair: pair.to_owned(),
        })
    }

    pub fn config_reload(&self, ok: bool) {
        let result = if ok { "success" } else { "error" };
        self.config_reloads
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }
}

/// A listener's handles.
#[derive(Debug, Clone)]
pub(crate) struct ListenerMetrics {
    pub(crate) connections: Counter,
    pub(crate) active: Gauge,
    pub(crate) not_allowed: Counter,
    pub(crate) no_target: Counter,
    /// Indexed by [`Refusal`].
    pub(crate) over_limit: [Counter; 5],
    pub(crate) bytes_upstream: Counter,
    pub(crate) bytes_downstream: Counter,
}

/// A target's handles.
#[derive(Debug, Clone)]
pub(crate) struct TargetMetrics {
    pub(crate) healthy: Gauge,
    pub(crate) connections: Gauge,
    pub(crate) connect_failures: Counter,
    pub(crate) full_handshakes: Counter,
    pub(crate) resumed_handshakes: Counter,
    pub(crate) checks_ok: Counter,
    pub(crate) checks_failed: Counter,
}
