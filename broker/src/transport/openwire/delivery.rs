//! An OpenWire connection's deliveries.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::durable::{self};
use crate::openwire::command::MessageDispatch;
use crate::openwire::types::ConsumerId;
use crate::openwire::{encode, Body, Command};
use crate::router::{ConnCounters, Delivery, Destination};
use crate::transport::writer::Encoder;

use super::convert;
use super::session::consumer_of;

/// An OpenWire connection's deliveries: MessageDispatch commands.
pub(super) struct OpenWireEncoder {
    pub(super) broker: String,
    /// The client's connection id (its consumers' ids carry it).
    pub(super) connection: String,
    pub(super) counters: Arc<ConnCounters>,
}

impl Encoder for OpenWireEncoder {
    fn encode(&self, d: &Delivery, out: &mut Vec<u8>, _acks: &mut Vec<u64>) {
        let consumer = consumer_of(&d.subscription).unwrap_or_else(|| ConsumerId {
            connection: self.connection.clone(),
            session: 0,
            value: 0,
        });
        // A durable subscription's message names its topic.
        let topic = durable::is_hidden(&d.message.destination)
            .then(|| {
                d.message
                    .headers
                    .iter()
                    .find(|(n, _)| n == durable::TOPIC_HEADER)
                    .and_then(|(_, v)| Destination::parse(v).ok())
            })
            .flatten();
        let message = super::advisory::to_jms(&self.broker, &d.message)
            .unwrap_or_else(|| convert::to_jms(&self.broker, &d.message, topic.as_ref()));
        let dispatch = Command::new(Body::MessageDispatch(Box::new(MessageDispatch {
            consumer_id: Some(consumer),
            destination: message.destination.clone(),
            redelivery_counter: i32::from(d.redelivered),
            message: Some(Box::new(Command::new(Body::Message(Box::new(message))))),
        })));
        encode(&dispatch, out);
        self.counters.delivered.fetch_add(1, Ordering::Relaxed);
    }

    fn slow_consumer(&self) -> Option<Vec<u8>> {
        None
    }

    fn heartbeat(&self, out: &mut Vec<u8>) {
        encode(&Command::new(Body::KeepAliveInfo), out);
    }
}
