//! How a client's deliveries are written: MESSAGE frames for its STOMP
//! version, and the ERROR that tells a slow subscriber it was dropped.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::router::{AckMode, ConnCounters, Delivery};
use crate::stomp::{encode_parts_as, Command, Frame, Version};

use super::writer::Encoder;

/// A client's deliveries: MESSAGE frames for its STOMP version.
pub(super) struct StompEncoder {
    pub(super) version: Version,
    /// Counts the deliveries written (for the console).
    pub(super) counters: Arc<ConnCounters>,
}

impl Encoder for StompEncoder {
    fn encode(&self, d: &Delivery, out: &mut Vec<u8>, acks: &mut Vec<u64>) {
        encode_delivery(self.version, d, out, acks);
        self.counters.delivered.fetch_add(1, Ordering::Relaxed);
    }

    fn slow_consumer(&self) -> Option<Vec<u8>> {
        let error = Frame::new(Command::Error)
            .header("message", "slow consumer: messages were not read in time");
        Some(error.to_bytes_as(self.version))
    }
}

pub(super) fn encode_delivery(
    version: Version,
    d: &Delivery,
    buf: &mut Vec<u8>,
    acks: &mut Vec<u64>,
) {
    let m = &d.message;
    // A durable subscription's message names the topic it was sent to.
    let topic = crate::durable::is_hidden(&m.destination)
        .then(|| {
            m.headers
                .iter()
                .find(|(n, _)| n == crate::durable::TOPIC_HEADER)
                .map(|(_, v)| v.clone())
        })
        .flatten();
    let destination = topic.unwrap_or_else(|| m.destination.stomp());
    let fixed = [
        ("subscription", d.subscription.as_str()),
        ("message-id", m.message_id.as_str()),
        ("destination", destination.as_str()),
    ];
    let ack = d.ack.as_deref().map(|ack| ("ack", ack));
    let redelivered = d.redelivered.then_some(("redelivered", "true"));
    let carried = m
        .headers
        .iter()
        .filter(|(n, _)| {
            n != crate::durable::TOPIC_HEADER && !n.starts_with(crate::intake::JMS_PREFIX)
        })
        .map(|(n, v)| (n.as_str(), v.as_str()));
    let headers = fixed
        .into_iter()
        .chain(ack)
        .chain(redelivered)
        .chain(carried);
    encode_parts_as(version, Command::Message, headers, &m.body, buf);
    if d.ack_mode == AckMode::Auto && m.stored {
        acks.push(m.seq);
    }
}
