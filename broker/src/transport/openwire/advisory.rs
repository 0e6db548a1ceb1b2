//! ActiveMQ's advisory topics, the part a JMS client relies on: a client
//! learns which temporary destinations exist from `ActiveMQ.Advisory.TempQueue`
//! and `ActiveMQ.Advisory.TempTopic` (it refuses to send to one it has not
//! heard of). When a connection makes or deletes a temporary destination,
//! the broker publishes a message there whose data structure is the
//! DestinationInfo (ADD or REMOVE); a new subscriber first hears of those
//! that exist. Other advisory topics are accepted and stay silent.

use std::sync::Arc;

use crate::openwire::command::{DestinationInfo, Message as JmsMessage};
use crate::openwire::types::{
    kind, ConsumerId, Destination as JmsDestination, DestinationKind, MessageId, ProducerId,
};
use crate::openwire::{encode, Body, Command};
use crate::router::{Destination, Kind, Message};
use crate::shared::BrokerCore;

/// The advisory topics of temporary queues and topics.
pub(super) const TEMP_QUEUE_TOPIC: &str = "ActiveMQ.Advisory.TempQueue";
pub(super) const TEMP_TOPIC_TOPIC: &str = "ActiveMQ.Advisory.TempTopic";
/// What an advisory message says: `add` or `remove`, and of which
/// temporary destination.
const OPERATION_HEADER: &str = "portico-advisory";
const DESTINATION_HEADER: &str = "portico-advisory-destination";

/// Whether `name` is one of ActiveMQ's advisory topics.
pub(super) fn is_advisory(name: &str) -> bool {
    name.starts_with("ActiveMQ.Advisory.")
}

fn topic_of(temporary: &Destination) -> Destination {
    Destination {
        kind: Kind::Topic,
        name: match temporary.kind {
            Kind::Queue => TEMP_QUEUE_TOPIC,
            Kind::Topic => TEMP_TOPIC_TOPIC,
        }
        .to_owned(),
    }
}

/// Tells every advisory subscriber that `temporary` was made (`added`) or
/// deleted.
pub(crate) async fn announce(core: &BrokerCore, temporary: &Destination, added: bool) {
    let seq = core.next_seq();
    let message = Message {
        seq,
        message_id: core.message_id(seq),
        destination: topic_of(temporary),
        headers: vec![
            (
                OPERATION_HEADER.to_owned(),
                if added { "add" } else { "remove" }.to_owned(),
            ),
            (DESTINATION_HEADER.to_owned(), temporary.to_string()),
        ],
        body: Vec::new(),
        stored: false,
        sender: None,
        expires: 0,
        priority: 4,
        group: None,
        deliver_at: 0,
    };
    core.router.send(Arc::new(message)).await;
}

/// The JMS form of an advisory message, if `m` is one.
pub(super) fn to_jms(broker: &str, m: &Message) -> Option<JmsMessage> {
    let header = |name: &str| {
        m.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let operation = header(OPERATION_HEADER)?;
    let temporary = Destination::parse(header(DESTINATION_HEADER)?).ok()?;
    Some(advisory_message(
        broker,
        m.seq,
        &m.destination,
        &temporary,
        operation == "add",
    ))
}

fn advisory_message(
    broker: &str,
    seq: u64,
    topic: &Destination,
    temporary: &Destination,
    added: bool,
) -> JmsMessage {
    let producer = ProducerId {
        connection: format!("ID:{broker}-advisory"),
        value: 0,
        session: 0,
    };
    let info = DestinationInfo {
        connection_id: None,
        destination: Some(super::convert::jms_destination(temporary)),
        operation: if added { 0 } else { 1 },
        timeout: 0,
        broker_path: None,
    };
    JmsMessage {
        kind: kind::MESSAGE,
        producer_id: Some(producer.clone()),
        destination: Some(JmsDestination {
            kind: DestinationKind::Topic,
            name: topic.name.clone(),
        }),
        message_id: Some(MessageId {
            text_view: None,
            producer: Some(producer),
            producer_sequence: i64::try_from(seq).unwrap_or(i64::MAX),
            broker_sequence: i64::try_from(seq).unwrap_or(i64::MAX),
        }),
        priority: 4,
        data_structure: Some(Box::new(Command::new(Body::DestinationInfo(info)))),
        ..JmsMessage::default()
    }
}

/// The temporary destinations that exist now, as advisory dispatches to
/// a new subscriber of `topic` (bytes ready to write).
pub(super) fn existing(core: &BrokerCore, consumer: &ConsumerId, topic: &Destination) -> Vec<u8> {
    let temporaries: Vec<Destination> = core
        .temporaries
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|t| topic_of(t) == *topic)
        .cloned()
        .collect();
    let mut out = Vec::new();
    for t in temporaries {
        let message = advisory_message(&core.name, 0, topic, &t, true);
        let dispatch = Command::new(Body::MessageDispatch(Box::new(
            crate::openwire::command::MessageDispatch {
                consumer_id: Some(consumer.clone()),
                destination: message.destination.clone(),
                redelivery_counter: 0,
                message: Some(Box::new(Command::new(Body::Message(Box::new(message))))),
            },
        )));
        encode(&dispatch, &mut out);
    }
    out
}
