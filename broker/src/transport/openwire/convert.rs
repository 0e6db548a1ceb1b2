//! JMS messages to the broker's messages and back, as ActiveMQ maps
//! OpenWire to STOMP: JMS headers become `correlation-id`, `reply-to`,
//! `type`, `expires`, `priority`, `persistent`, `timestamp` and
//! `JMSXGroupID`; user properties become headers with their text value; a
//! TextMessage's body is its UTF-8 text, a BytesMessage's its bytes, and
//! Map, Object and Stream bodies are carried as marshalled.
//!
//! What an OpenWire consumer needs back travels in `portico-jms-kind`
//! (which JMS body) and `portico-jms-message-id` (the producer's message
//! id). A message sent over STOMP reaches an OpenWire consumer as a
//! TextMessage when its body is UTF-8 text (`amq-msg-type: bytes` makes it
//! a BytesMessage, `amq-msg-type: text` a TextMessage), else as a
//! BytesMessage.

use crate::openwire::command::Message as JmsMessage;
use crate::openwire::types::{
    kind, map_bytes, read_map, Destination as JmsDestination, DestinationKind, MessageId,
    ProducerId, Value,
};
use crate::openwire::wire::{decode_modified_utf8, encode_modified_utf8};
use crate::router::{Destination, Kind, Message};

pub(super) const KIND_HEADER: &str = "portico-jms-kind";
pub(crate) const MESSAGE_ID_HEADER: &str = "portico-jms-message-id";
/// The JMS types of the properties that are not strings,
/// `name=type,name=type` (property names are Java identifiers), so an
/// OpenWire consumer gets each property as it was sent.
const TYPES_HEADER: &str = "portico-jms-types";

fn type_name(v: &Value) -> Option<&'static str> {
    Some(match v {
        Value::Bool(_) => "boolean",
        Value::Byte(_) => "byte",
        Value::Char(_) => "char",
        Value::Short(_) => "short",
        Value::Int(_) => "int",
        Value::Long(_) => "long",
        Value::Float(_) => "float",
        Value::Double(_) => "double",
        _ => return None,
    })
}

/// A property's text back as the type it was sent with (a string if it no
/// longer reads as one).
fn typed(text: &str, type_name: Option<&str>) -> Value {
    let value = match type_name {
        Some("boolean") => text.parse().ok().map(Value::Bool),
        Some("byte") => text.parse().ok().map(Value::Byte),
        Some("char") => {
            let mut units = text.encode_utf16();
            match (units.next(), units.next()) {
                (Some(c), None) => Some(Value::Char(c)),
                _ => None,
            }
        }
        Some("short") => text.parse().ok().map(Value::Short),
        Some("int") => text.parse().ok().map(Value::Int),
        Some("long") => text.parse().ok().map(Value::Long),
        Some("float") => text.parse().ok().map(Value::Float),
        Some("double") => text.parse().ok().map(Value::Double),
        _ => None,
    };
    value.unwrap_or_else(|| Value::String(text.to_owned()))
}

/// Headers with a JMS meaning of their own (not user properties).
const JMS_HEADERS: [&str; 9] = [
    "correlation-id",
    "reply-to",
    "type",
    "expires",
    "priority",
    "persistent",
    "timestamp",
    "JMSXGroupID",
    "amq-msg-type",
];

fn kind_name(code: u8) -> &'static str {
    match code {
        kind::TEXT_MESSAGE => "text",
        kind::BYTES_MESSAGE => "bytes",
        kind::MAP_MESSAGE => "map",
        kind::OBJECT_MESSAGE => "object",
        kind::STREAM_MESSAGE => "stream",
        _ => "message",
    }
}

fn kind_code(name: &str) -> Option<u8> {
    Some(match name {
        "text" => kind::TEXT_MESSAGE,
        "bytes" => kind::BYTES_MESSAGE,
        "map" => kind::MAP_MESSAGE,
        "object" => kind::OBJECT_MESSAGE,
        "stream" => kind::STREAM_MESSAGE,
        "message" => kind::MESSAGE,
        _ => return None,
    })
}

/// A JMS destination as the broker names it; temporary destinations are
/// not supported here yet (`None`).
pub(crate) fn destination(d: &JmsDestination) -> Result<Destination, String> {
    let kind = match d.kind {
        DestinationKind::Queue => "queue",
        DestinationKind::Topic => "topic",
        DestinationKind::TempQueue => return Destination::temporary(Kind::Queue, &d.name),
        DestinationKind::TempTopic => return Destination::temporary(Kind::Topic, &d.name),
    };
    Destination::parse(&format!("{kind}://{}", d.name))
}

pub(crate) fn jms_destination(d: &Destination) -> JmsDestination {
    match (d.temporary_name(), d.kind) {
        (Some(name), Kind::Queue) => JmsDestination {
            kind: DestinationKind::TempQueue,
            name,
        },
        (Some(name), Kind::Topic) => JmsDestination {
            kind: DestinationKind::TempTopic,
            name,
        },
        (None, kind) => JmsDestination {
            kind: match kind {
                Kind::Queue => DestinationKind::Queue,
                Kind::Topic => DestinationKind::Topic,
            },
            name: d.name.clone(),
        },
    }
}

/// What an arriving JMS message is for the broker: its headers and body.
pub(crate) struct Arrived {
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

/// A JMS message as headers and a body (see the module's comment).
pub(crate) fn from_jms(m: &mut JmsMessage) -> Result<Arrived, String> {
    let mut headers: Vec<(String, String)> = Vec::with_capacity(8);
    let mut push = |name: &str, value: String| headers.push((name.to_owned(), value));
    if m.persistent {
        push("persistent", "true".into());
    }
    if let Some(c) = &m.correlation_id {
        push("correlation-id", c.clone());
    }
    if let Some(reply) = &m.reply_to {
        let name = match reply.kind {
            DestinationKind::Queue => format!("/queue/{}", reply.name),
            DestinationKind::Topic => format!("/topic/{}", reply.name),
            DestinationKind::TempQueue => format!("/temp-queue/{}", reply.name),
            DestinationKind::TempTopic => format!("/temp-topic/{}", reply.name),
        };
        push("reply-to", name);
    }
    if let Some(t) = &m.jms_type {
        push("type", t.clone());
    }
    if m.expiration > 0 {
        push("expires", m.expiration.to_string());
    }
    push("priority", m.priority.min(9).to_string());
    if m.timestamp > 0 {
        push("timestamp", m.timestamp.to_string());
    }
    if let Some(g) = &m.group_id {
        push("JMSXGroupID", g.clone());
    }
    if let Some(properties) = &m.properties {
        let map = read_map(properties).map_err(|e| format!("message properties: {e}"))?;
        let mut types = String::new();
        for (name, value) in map {
            if name.starts_with(crate::intake::INTERNAL_PREFIX)
                || JMS_HEADERS.contains(&name.as_str())
            {
                continue;
            }
            if let Some(text) = value.as_text() {
                let identifier = !name.is_empty() && !name.contains([',', '=']);
                if let (Some(t), true) = (type_name(&value), identifier) {
                    if !types.is_empty() {
                        types.push(',');
                    }
                    types.push_str(&name);
                    types.push('=');
                    types.push_str(t);
                }
                push(&name, text);
            }
        }
        if !types.is_empty() {
            push(TYPES_HEADER, types);
        }
    }
    push(KIND_HEADER, kind_name(m.kind).to_owned());
    if let Some(id) = &m.message_id {
        push(MESSAGE_ID_HEADER, id.text());
    }
    let content = m.content.take().unwrap_or_default();
    let body = if m.kind == kind::TEXT_MESSAGE && !m.compressed {
        text_of(&content)?.into_bytes()
    } else {
        if m.compressed {
            push("portico-jms-compressed", "true".into());
        }
        content
    };
    Ok(Arrived { headers, body })
}

/// A TextMessage's content: an i32 length and modified UTF-8 (or nothing,
/// for a null text).
fn text_of(content: &[u8]) -> Result<String, String> {
    if content.is_empty() {
        return Ok(String::new());
    }
    let Some((len, rest)) = content.split_first_chunk::<4>() else {
        return Err("a text message's body is cut short".into());
    };
    let len = i32::from_be_bytes(*len);
    if len < 0 {
        return Ok(String::new());
    }
    match rest.get(..len as usize) {
        Some(bytes) if bytes.len() == rest.len() => {
            decode_modified_utf8(bytes).map_err(|e| format!("a text message's body: {e}"))
        }
        _ => Err("a text message's body has a wrong length".into()),
    }
}

fn text_content(text: &str) -> Vec<u8> {
    let encoded = encode_modified_utf8(text);
    let mut out = Vec::with_capacity(encoded.len() + 4);
    out.extend_from_slice(
        &i32::try_from(encoded.len())
            .unwrap_or(i32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(&encoded);
    out
}

/// The producer id of messages that did not come from an OpenWire
/// producer of this broker.
fn broker_producer(broker: &str) -> ProducerId {
    ProducerId {
        connection: format!("ID:{broker}"),
        value: 0,
        session: 0,
    }
}

/// The JMS id of a message no OpenWire producer named: from the broker's
/// id of it (`ID:<broker>-<activation>-<seq>`, unique across restarts, the
/// same on every delivery), so ActiveMQ's duplicate audit, which remembers
/// sequence numbers per producer, never takes a new message for an old one.
fn own_message_id(broker: &str, m: &Message) -> MessageId {
    let (producer, sequence) = m
        .message_id
        .rsplit_once('-')
        .and_then(|(head, seq)| Some((head, seq.parse::<i64>().ok()?)))
        .map_or_else(
            || {
                (
                    broker_producer(broker),
                    i64::try_from(m.seq).unwrap_or(i64::MAX),
                )
            },
            |(head, seq)| {
                let producer = ProducerId {
                    connection: head.to_owned(),
                    value: 0,
                    session: 0,
                };
                (producer, seq)
            },
        );
    MessageId {
        text_view: None,
        producer: Some(producer),
        producer_sequence: sequence,
        broker_sequence: 0,
    }
}

/// A JMS message id from its text, `<connection>:<session>:<producer>:<seq>`.
fn parse_message_id(text: &str) -> Option<MessageId> {
    let mut parts = text.rsplitn(4, ':');
    let sequence = parts.next()?.parse().ok()?;
    let producer = parts.next()?.parse().ok()?;
    let session = parts.next()?.parse().ok()?;
    let connection = parts.next()?.to_owned();
    Some(MessageId {
        text_view: None,
        producer: Some(ProducerId {
            connection,
            value: producer,
            session,
        }),
        producer_sequence: sequence,
        broker_sequence: 0,
    })
}

/// The broker's message as a JMS message for a consumer. Its broker
/// sequence is the broker's sequence number, which acknowledgements name.
pub(crate) fn to_jms(broker: &str, m: &Message, destination: Option<&Destination>) -> JmsMessage {
    let header = |name: &str| {
        m.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let jms_kind = header(KIND_HEADER)
        .and_then(kind_code)
        .or_else(|| match header("amq-msg-type") {
            Some("bytes") => Some(kind::BYTES_MESSAGE),
            Some("text") => Some(kind::TEXT_MESSAGE),
            _ => None,
        })
        .unwrap_or(if std::str::from_utf8(&m.body).is_ok() {
            kind::TEXT_MESSAGE
        } else {
            kind::BYTES_MESSAGE
        });
    let compressed = header("portico-jms-compressed") == Some("true");
    let content = if jms_kind == kind::TEXT_MESSAGE && !compressed {
        text_content(&String::from_utf8_lossy(&m.body))
    } else {
        m.body.clone()
    };
    let mut message_id = header(MESSAGE_ID_HEADER)
        .and_then(parse_message_id)
        .unwrap_or_else(|| own_message_id(broker, m));
    message_id.broker_sequence = i64::try_from(m.seq).unwrap_or(i64::MAX);
    let types: Vec<(&str, &str)> = header(TYPES_HEADER)
        .map(|t| t.split(',').filter_map(|p| p.split_once('=')).collect())
        .unwrap_or_default();
    let mut properties: Vec<(String, Value)> = Vec::new();
    for (name, value) in &m.headers {
        if name.starts_with(crate::intake::INTERNAL_PREFIX) || JMS_HEADERS.contains(&name.as_str())
        {
            continue;
        }
        let type_name = types.iter().find(|(n, _)| n == name).map(|(_, t)| *t);
        properties.push((name.clone(), typed(value, type_name)));
    }
    let reply_to = header("reply-to").and_then(|r| {
        let (kind, name) = if let Some(n) = r.strip_prefix("/queue/") {
            (DestinationKind::Queue, n)
        } else if let Some(n) = r.strip_prefix("/topic/") {
            (DestinationKind::Topic, n)
        } else if let Some(n) = r.strip_prefix("/temp-queue/") {
            (DestinationKind::TempQueue, n)
        } else if let Some(n) = r.strip_prefix("/temp-topic/") {
            (DestinationKind::TempTopic, n)
        } else {
            return None;
        };
        Some(JmsDestination {
            kind,
            name: name.to_owned(),
        })
    });
    let number = |name: &str| header(name).and_then(|v| v.trim().parse::<i64>().ok());
    let destination = destination.unwrap_or(&m.destination);
    JmsMessage {
        kind: jms_kind,
        producer_id: message_id.producer.clone(),
        destination: Some(jms_destination(destination)),
        message_id: Some(message_id),
        group_id: m.group.as_deref().map(str::to_owned),
        correlation_id: header("correlation-id").map(str::to_owned),
        persistent: m.stored || header("persistent") == Some("true"),
        expiration: i64::try_from(m.expires).unwrap_or(0),
        priority: m.priority,
        reply_to,
        timestamp: number("timestamp").unwrap_or(0),
        jms_type: header("type").map(str::to_owned),
        content: Some(content),
        properties: (!properties.is_empty()).then(|| map_bytes(&properties)),
        compressed,
        user_id: m.sender.as_deref().map(str::to_owned),
        ..JmsMessage::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_text_message_crosses_to_the_broker_and_back() {
        let mut jms = JmsMessage {
            kind: kind::TEXT_MESSAGE,
            destination: Some(JmsDestination {
                kind: DestinationKind::Queue,
                name: "ORDERS".into(),
            }),
            message_id: Some(MessageId {
                text_view: None,
                producer: Some(ProducerId {
                    connection: "ID:host-1-2-3:1".into(),
                    value: 1,
                    session: 1,
                }),
                producer_sequence: 9,
                broker_sequence: 0,
            }),
            correlation_id: Some("c-1".into()),
            persistent: true,
            priority: 7,
            timestamp: 1_800_000_000_000,
            content: Some(text_content("naïve ☕")),
            properties: Some(map_bytes(&[
                ("count".into(), Value::Int(3)),
                ("region".into(), Value::String("EU".into())),
            ])),
            ..JmsMessage::default()
        };
        let arrived = from_jms(&mut jms).unwrap();
        assert_eq!(arrived.body, "naïve ☕".as_bytes());
        let has = |k: &str, v: &str| arrived.headers.iter().any(|(a, b)| a == k && b == v);
        assert!(has("correlation-id", "c-1") && has("count", "3") && has("region", "EU"));
        assert!(has("persistent", "true") && has("priority", "7"));
        let message = Message {
            seq: 42,
            message_id: "ID:b-42".into(),
            destination: Destination::parse("/queue/ORDERS").unwrap(),
            headers: arrived.headers,
            body: arrived.body,
            stored: true,
            sender: Some(Arc::from("app")),
            expires: 0,
            priority: 7,
            group: None,
            deliver_at: 0,
        };
        let back = to_jms("b", &message, None);
        assert_eq!(back.kind, kind::TEXT_MESSAGE);
        assert_eq!(
            text_of(back.content.as_deref().unwrap()).unwrap(),
            "naïve ☕"
        );
        let id = back.message_id.unwrap();
        assert_eq!((id.producer_sequence, id.broker_sequence), (9, 42));
        assert_eq!(id.producer.unwrap().connection, "ID:host-1-2-3:1");
        assert_eq!(back.correlation_id.as_deref(), Some("c-1"));
        let props = read_map(back.properties.as_deref().unwrap()).unwrap();
        // Typed as sent; a header that no longer reads as its type is a string.
        assert!(props.contains(&("count".into(), Value::Int(3))));
        assert!(props.contains(&("region".into(), Value::String("EU".into()))));
        assert_eq!(typed("x", Some("int")), Value::String("x".into()));
        assert_eq!(typed("1.5", Some("double")), Value::Double(1.5));
        assert!(!props.iter().any(|(k, _)| k.starts_with("portico-")));
    }

    #[test]
    fn a_stomp_body_is_text_when_it_is_utf8() {
        let mut message = Message {
            seq: 1,
            message_id: "ID:b-1".into(),
            destination: Destination::parse("/queue/q").unwrap(),
            headers: vec![],
            body: b"hello".to_vec(),
            stored: false,
            sender: None,
            expires: 0,
            priority: 4,
            group: None,
            deliver_at: 0,
        };
        assert_eq!(to_jms("b", &message, None).kind, kind::TEXT_MESSAGE);
        message.body = vec![0xFF, 0x00];
        assert_eq!(to_jms("b", &message, None).kind, kind::BYTES_MESSAGE);
    }
}

#[cfg(test)]
mod ids {
    use super::*;

    fn message(seq: u64, id: &str) -> Message {
        Message {
            seq,
            message_id: id.into(),
            destination: Destination::parse("/queue/q").unwrap(),
            headers: vec![],
            body: b"x".to_vec(),
            stored: true,
            sender: None,
            expires: 0,
            priority: 4,
            group: None,
            deliver_at: 0,
        }
    }

    /// A STOMP message's JMS id follows the broker's id of it: two
    /// activations numbering from the same sequence give different JMS ids
    /// (ActiveMQ's audit would drop the second as a duplicate otherwise),
    /// and one message keeps its JMS id wherever it is delivered from.
    #[test]
    fn jms_ids_of_broker_messages_differ_across_activations() {
        let first = to_jms("b", &message(7, "ID:b-0123456789ab-7"), None);
        let second = to_jms("b", &message(7, "ID:b-ba9876543210-7"), None);
        let (first, second) = (first.message_id.unwrap(), second.message_id.unwrap());
        assert_ne!(first.producer, second.producer);
        assert_eq!(first.producer_sequence, 7);
        assert_eq!(first.producer.unwrap().connection, "ID:b-0123456789ab");
        // Delivered by a broker that numbers it 99: the same JMS id.
        let forwarded = to_jms("c", &message(99, "ID:b-0123456789ab-7"), None);
        let forwarded = forwarded.message_id.unwrap();
        assert_eq!(forwarded.producer_sequence, 7);
        assert_eq!(forwarded.broker_sequence, 99);
        assert_eq!(forwarded.producer.unwrap().connection, "ID:b-0123456789ab");
    }
}
