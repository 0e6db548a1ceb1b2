//! OpenWire's data structures that commands carry: ids, destinations,
//! transaction ids, and the primitive maps of message properties and of a
//! WireFormatInfo's options.

use super::wire::{Reader, Result, WireError, Writer};

/// Data structure types (ActiveMQ's `CommandTypes`).
pub mod kind {
    pub const NULL: u8 = 0;
    pub const WIREFORMAT_INFO: u8 = 1;
    pub const BROKER_INFO: u8 = 2;
    pub const CONNECTION_INFO: u8 = 3;
    pub const SESSION_INFO: u8 = 4;
    pub const CONSUMER_INFO: u8 = 5;
    pub const PRODUCER_INFO: u8 = 6;
    pub const TRANSACTION_INFO: u8 = 7;
    pub const DESTINATION_INFO: u8 = 8;
    pub const REMOVE_SUBSCRIPTION_INFO: u8 = 9;
    pub const KEEP_ALIVE_INFO: u8 = 10;
    pub const SHUTDOWN_INFO: u8 = 11;
    pub const REMOVE_INFO: u8 = 12;
    pub const CONTROL_COMMAND: u8 = 14;
    pub const FLUSH_COMMAND: u8 = 15;
    pub const CONNECTION_ERROR: u8 = 16;
    pub const CONSUMER_CONTROL: u8 = 17;
    pub const CONNECTION_CONTROL: u8 = 18;
    pub const PRODUCER_ACK: u8 = 19;
    pub const MESSAGE_PULL: u8 = 20;
    pub const MESSAGE_DISPATCH: u8 = 21;
    pub const MESSAGE_ACK: u8 = 22;
    pub const MESSAGE: u8 = 23;
    pub const BYTES_MESSAGE: u8 = 24;
    pub const MAP_MESSAGE: u8 = 25;
    pub const OBJECT_MESSAGE: u8 = 26;
    pub const STREAM_MESSAGE: u8 = 27;
    pub const TEXT_MESSAGE: u8 = 28;
    pub const RESPONSE: u8 = 30;
    pub const EXCEPTION_RESPONSE: u8 = 31;
    pub const DATA_RESPONSE: u8 = 32;
    pub const DATA_ARRAY_RESPONSE: u8 = 33;
    pub const INTEGER_RESPONSE: u8 = 34;
    pub const QUEUE: u8 = 100;
    pub const TOPIC: u8 = 101;
    pub const TEMP_QUEUE: u8 = 102;
    pub const TEMP_TOPIC: u8 = 103;
    pub const MESSAGE_ID: u8 = 110;
    pub const LOCAL_TRANSACTION_ID: u8 = 111;
    pub const XA_TRANSACTION_ID: u8 = 112;
    pub const CONNECTION_ID: u8 = 120;
    pub const SESSION_ID: u8 = 121;
    pub const CONSUMER_ID: u8 = 122;
    pub const PRODUCER_ID: u8 = 123;
    pub const BROKER_ID: u8 = 124;
}

/// Reads a nested structure's presence flag and type; `None` when absent.
pub(crate) fn nested_type(r: &mut Reader<'_>) -> Result<Option<u8>> {
    if r.bool()? {
        Ok(Some(r.u8()?))
    } else {
        Ok(None)
    }
}

fn expect(found: u8, wanted: u8, expected: &'static str) -> Result<()> {
    if found == wanted {
        Ok(())
    } else {
        Err(WireError::Unexpected { expected, found })
    }
}

/// A nested structure of one kind: absent, or present with type `wanted`.
fn nested<T>(
    r: &mut Reader<'_>,
    wanted: u8,
    expected: &'static str,
    read: impl FnOnce(&mut Reader<'_>) -> Result<T>,
) -> Result<Option<T>> {
    match nested_type(r)? {
        None => Ok(None),
        Some(t) => {
            expect(t, wanted, expected)?;
            read(r).map(Some)
        }
    }
}

fn write_nested<T>(
    w: &mut Writer,
    value: Option<&T>,
    kind: u8,
    write: impl FnOnce(&mut Writer, &T),
) {
    w.bool(value.is_some());
    if let Some(v) = value {
        w.u8(kind);
        write(w, v);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConnectionId(pub String);

impl ConnectionId {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Option<Self>> {
        nested(r, kind::CONNECTION_ID, "a ConnectionId", |r| {
            Ok(Self(r.string()?.unwrap_or_default()))
        })
    }

    pub(crate) fn write(w: &mut Writer, v: Option<&Self>) {
        write_nested(w, v, kind::CONNECTION_ID, |w, v| w.string(Some(&v.0)));
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionId {
    pub connection: String,
    pub value: i64,
}

impl SessionId {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Option<Self>> {
        nested(r, kind::SESSION_ID, "a SessionId", |r| {
            Ok(Self {
                connection: r.string()?.unwrap_or_default(),
                value: r.i64()?,
            })
        })
    }

    pub(crate) fn write(w: &mut Writer, v: Option<&Self>) {
        write_nested(w, v, kind::SESSION_ID, |w, v| {
            w.string(Some(&v.connection));
            w.i64(v.value);
        });
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConsumerId {
    pub connection: String,
    pub session: i64,
    pub value: i64,
}

impl ConsumerId {
    pub(crate) fn read_fields(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Self {
            connection: r.string()?.unwrap_or_default(),
            session: r.i64()?,
            value: r.i64()?,
        })
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Option<Self>> {
        nested(r, kind::CONSUMER_ID, "a ConsumerId", Self::read_fields)
    }

    pub(crate) fn write_fields(w: &mut Writer, v: &Self) {
        w.string(Some(&v.connection));
        w.i64(v.session);
        w.i64(v.value);
    }

    pub(crate) fn write(w: &mut Writer, v: Option<&Self>) {
        write_nested(w, v, kind::CONSUMER_ID, Self::write_fields);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProducerId {
    pub connection: String,
    pub value: i64,
    pub session: i64,
}

impl ProducerId {
    pub(crate) fn read_fields(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Self {
            connection: r.string()?.unwrap_or_default(),
            value: r.i64()?,
            session: r.i64()?,
        })
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Option<Self>> {
        nested(r, kind::PRODUCER_ID, "a ProducerId", Self::read_fields)
    }

    pub(crate) fn write_fields(w: &mut Writer, v: &Self) {
        w.string(Some(&v.connection));
        w.i64(v.value);
        w.i64(v.session);
    }

    pub(crate) fn write(w: &mut Writer, v: Option<&Self>) {
        write_nested(w, v, kind::PRODUCER_ID, Self::write_fields);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageId {
    pub text_view: Option<String>,
    pub producer: Option<ProducerId>,
    pub producer_sequence: i64,
    pub broker_sequence: i64,
}

impl MessageId {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Option<Self>> {
        nested(r, kind::MESSAGE_ID, "a MessageId", |r| {
            Ok(Self {
                text_view: r.string()?,
                producer: ProducerId::read(r)?,
                producer_sequence: r.i64()?,
                broker_sequence: r.i64()?,
            })
        })
    }

    pub(crate) fn write(w: &mut Writer, v: Option<&Self>) {
        write_nested(w, v, kind::MESSAGE_ID, |w, v| {
            w.string(v.text_view.as_deref());
            ProducerId::write(w, v.producer.as_ref());
            w.i64(v.producer_sequence);
            w.i64(v.broker_sequence);
        });
    }

    /// `ID:<connection>:<session>:<producer>:<sequence>`, as JMS shows it.
    pub fn text(&self) -> String {
        if let Some(text) = &self.text_view {
            return text.clone();
        }
        match &self.producer {
            Some(p) => format!(
                "{}:{}:{}:{}",
                p.connection, p.session, p.value, self.producer_sequence
            ),
            None => format!("ID:unknown:{}", self.producer_sequence),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BrokerId(pub String);

impl BrokerId {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Option<Self>> {
        nested(r, kind::BROKER_ID, "a BrokerId", |r| {
            Ok(Self(r.string()?.unwrap_or_default()))
        })
    }

    pub(crate) fn write(w: &mut Writer, v: Option<&Self>) {
        write_nested(w, v, kind::BROKER_ID, |w, v| w.string(Some(&v.0)));
    }

    /// An array of broker ids behind a presence flag (a broker path).
    pub(crate) fn read_array(r: &mut Reader<'_>) -> Result<Option<Vec<Self>>> {
        if !r.bool()? {
            return Ok(None);
        }
        let count = r.i16()?;
        let n = r.length("a broker path", i64::from(count), 1)?;
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            if let Some(id) = Self::read(r)? {
                ids.push(id);
            }
        }
        Ok(Some(ids))
    }

    pub(crate) fn write_array(w: &mut Writer, ids: Option<&[Self]>) {
        w.bool(ids.is_some());
        if let Some(ids) = ids {
            w.i16(i16::try_from(ids.len()).unwrap_or(i16::MAX));
            for id in ids.iter().take(i16::MAX as usize) {
                Self::write(w, Some(id));
            }
        }
    }
}

/// An OpenWire destination: its kind and physical name (`ORDERS`, or a
/// composite `a,b`; a temporary one's name is the broker's).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    pub kind: DestinationKind,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DestinationKind {
    Queue,
    Topic,
    TempQueue,
    TempTopic,
}

impl DestinationKind {
    fn code(self) -> u8 {
        match self {
            Self::Queue => kind::QUEUE,
            Self::Topic => kind::TOPIC,
            Self::TempQueue => kind::TEMP_QUEUE,
            Self::TempTopic => kind::TEMP_TOPIC,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            kind::QUEUE => Self::Queue,
            kind::TOPIC => Self::Topic,
            kind::TEMP_QUEUE => Self::TempQueue,
            kind::TEMP_TOPIC => Self::TempTopic,
            _ => return None,
        })
    }

    pub fn is_topic(self) -> bool {
        matches!(self, Self::Topic | Self::TempTopic)
    }
}

impl Destination {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Option<Self>> {
        let Some(code) = nested_type(r)? else {
            return Ok(None);
        };
        let kind = DestinationKind::from_code(code).ok_or(WireError::Unexpected {
            expected: "a destination",
            found: code,
        })?;
        Ok(Some(Self {
            kind,
            name: r.string()?.unwrap_or_default(),
        }))
    }

    pub(crate) fn write(w: &mut Writer, v: Option<&Self>) {
        w.bool(v.is_some());
        if let Some(v) = v {
            w.u8(v.kind.code());
            w.string(Some(&v.name));
        }
    }
}

/// A transaction: a local one (a JMS transacted session) or XA.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TransactionId {
    Local {
        value: i64,
        connection: Option<ConnectionId>,
    },
    Xa {
        format: i32,
        global: Option<Vec<u8>>,
        branch: Option<Vec<u8>>,
    },
}

impl TransactionId {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Option<Self>> {
        let Some(code) = nested_type(r)? else {
            return Ok(None);
        };
        Ok(Some(match code {
            kind::LOCAL_TRANSACTION_ID => Self::Local {
                value: r.i64()?,
                connection: ConnectionId::read(r)?,
            },
            kind::XA_TRANSACTION_ID => Self::Xa {
                format: r.i32()?,
                global: r.bytes("an XA global transaction id")?,
                branch: r.bytes("an XA branch qualifier")?,
            },
            found => {
                return Err(WireError::Unexpected {
                    expected: "a transaction id",
                    found,
                })
            }
        }))
    }

    pub(crate) fn write(w: &mut Writer, v: Option<&Self>) {
        w.bool(v.is_some());
        match v {
            None => {}
            Some(Self::Local { value, connection }) => {
                w.u8(kind::LOCAL_TRANSACTION_ID);
                w.i64(*value);
                ConnectionId::write(w, connection.as_ref());
            }
            Some(Self::Xa {
                format,
                global,
                branch,
            }) => {
                w.u8(kind::XA_TRANSACTION_ID);
                w.i32(*format);
                w.bytes(global.as_deref());
                w.bytes(branch.as_deref());
            }
        }
    }
}

/// A value in a primitive map (message properties, a MapMessage's body,
/// a WireFormatInfo's options).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Byte(i8),
    Char(u16),
    Short(i16),
    Int(i32),
    Long(i64),
    Float(f32),
    Double(f64),
    String(String),
    Bytes(Vec<u8>),
    Map(Vec<(String, Self)>),
    List(Vec<Self>),
}

/// Nesting of maps and lists followed at most.
const MAX_VALUE_DEPTH: u8 = 16;

impl Value {
    fn read(r: &mut Reader<'_>, depth: u8) -> Result<Self> {
        Ok(match r.u8()? {
            0 => Self::Null,
            1 => Self::Bool(r.bool()?),
            2 => Self::Byte(r.u8()? as i8),
            3 => Self::Char(r.u16()?),
            4 => Self::Short(r.i16()?),
            5 => Self::Int(r.i32()?),
            6 => Self::Long(r.i64()?),
            7 => Self::Double(r.f64()?),
            8 => Self::Float(r.f32()?),
            9 => Self::String(r.utf()?),
            10 => {
                let length = r.i32()?;
                let n = r.length("a byte array property", i64::from(length), 1)?;
                Self::Bytes(r.raw(n)?.to_vec())
            }
            11 => Self::Map(read_map_at(r, depth + 1)?.unwrap_or_default()),
            12 => {
                if depth >= MAX_VALUE_DEPTH {
                    return Err(WireError::TooDeep);
                }
                let count = r.i32()?;
                let n = r.length("a list property", i64::from(count), 1)?;
                let mut items = Vec::with_capacity(n.min(128));
                for _ in 0..n {
                    items.push(Self::read(r, depth + 1)?);
                }
                Self::List(items)
            }
            13 => {
                let length = r.i32()?;
                let n = r.length("a long string property", i64::from(length), 1)?;
                Self::String(super::wire::decode_modified_utf8(r.raw(n)?)?)
            }
            other => {
                return Err(WireError::Unexpected {
                    expected: "a property type (0 to 13)",
                    found: other,
                })
            }
        })
    }

    fn write(&self, w: &mut Writer) {
        match self {
            Self::Null => w.u8(0),
            Self::Bool(b) => {
                w.u8(1);
                w.bool(*b);
            }
            Self::Byte(b) => {
                w.u8(2);
                w.u8(*b as u8);
            }
            Self::Char(c) => {
                w.u8(3);
                w.i16(*c as i16);
            }
            Self::Short(s) => {
                w.u8(4);
                w.i16(*s);
            }
            Self::Int(i) => {
                w.u8(5);
                w.i32(*i);
            }
            Self::Long(l) => {
                w.u8(6);
                w.i64(*l);
            }
            Self::Double(d) => {
                w.u8(7);
                w.f64(*d);
            }
            Self::Float(f) => {
                w.u8(8);
                w.f32(*f);
            }
            Self::String(s) => {
                let encoded = super::wire::encode_modified_utf8(s);
                if encoded.len() < usize::from(u16::MAX) / 4 {
                    w.u8(9);
                    w.utf(s);
                } else {
                    w.u8(13);
                    w.i32(i32::try_from(encoded.len()).unwrap_or(i32::MAX));
                    w.raw(&encoded);
                }
            }
            Self::Bytes(b) => {
                w.u8(10);
                w.i32(i32::try_from(b.len()).unwrap_or(i32::MAX));
                w.raw(b);
            }
            Self::Map(m) => {
                w.u8(11);
                write_map(w, Some(m));
            }
            Self::List(items) => {
                w.u8(12);
                w.i32(i32::try_from(items.len()).unwrap_or(i32::MAX));
                for item in items {
                    item.write(w);
                }
            }
        }
    }

    /// The value as text, the way JMS converts a property to a String.
    pub fn as_text(&self) -> Option<String> {
        Some(match self {
            Self::Null | Self::Map(_) | Self::List(_) | Self::Bytes(_) => return None,
            Self::Bool(b) => b.to_string(),
            Self::Byte(b) => b.to_string(),
            Self::Char(c) => char::from_u32(u32::from(*c))?.to_string(),
            Self::Short(s) => s.to_string(),
            Self::Int(i) => i.to_string(),
            Self::Long(l) => l.to_string(),
            Self::Float(f) => f.to_string(),
            Self::Double(d) => d.to_string(),
            Self::String(s) => s.clone(),
        })
    }
}

fn read_map_at(r: &mut Reader<'_>, depth: u8) -> Result<Option<Vec<(String, Value)>>> {
    if depth >= MAX_VALUE_DEPTH {
        return Err(WireError::TooDeep);
    }
    let count = r.i32()?;
    if count < 0 {
        return Ok(None);
    }
    // Each entry is at least a two-byte name and a type byte.
    let n = r.length("a property map", i64::from(count), 3)?;
    let mut entries = Vec::with_capacity(n.min(128));
    for _ in 0..n {
        let name = r.utf()?;
        entries.push((name, Value::read(r, depth)?));
    }
    Ok(Some(entries))
}

/// A marshalled primitive map: an i32 count (-1: none), then each name
/// (`writeUTF`) and typed value.
pub fn read_map(bytes: &[u8]) -> Result<Vec<(String, Value)>> {
    let mut r = Reader::new(bytes);
    let map = read_map_at(&mut r, 0)?.unwrap_or_default();
    r.finish()?;
    Ok(map)
}

pub(crate) fn write_map(w: &mut Writer, map: Option<&[(String, Value)]>) {
    match map {
        None => w.i32(-1),
        Some(entries) => {
            w.i32(i32::try_from(entries.len()).unwrap_or(i32::MAX));
            for (name, value) in entries {
                w.utf(name);
                value.write(w);
            }
        }
    }
}

/// A map as marshalled bytes.
pub fn map_bytes(map: &[(String, Value)]) -> Vec<u8> {
    let mut w = Writer::default();
    write_map(&mut w, Some(map));
    w.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_of_every_type_round_trip() {
        let map = vec![
            ("null".to_owned(), Value::Null),
            ("bool".to_owned(), Value::Bool(true)),
            ("byte".to_owned(), Value::Byte(-3)),
            ("char".to_owned(), Value::Char(u16::from(b'x'))),
            ("short".to_owned(), Value::Short(-300)),
            ("int".to_owned(), Value::Int(70_000)),
            ("long".to_owned(), Value::Long(-1 << 40)),
            ("float".to_owned(), Value::Float(1.5)),
            ("double".to_owned(), Value::Double(-2.25)),
            ("string".to_owned(), Value::String("naïve".into())),
            ("big".to_owned(), Value::String("x".repeat(40_000))),
            ("bytes".to_owned(), Value::Bytes(vec![0, 1, 2])),
            (
                "map".to_owned(),
                Value::Map(vec![("inner".into(), Value::Int(1))]),
            ),
            (
                "list".to_owned(),
                Value::List(vec![Value::Int(1), Value::String("two".into())]),
            ),
        ];
        assert_eq!(read_map(&map_bytes(&map)).unwrap(), map);
    }

    #[test]
    fn a_map_that_lies_about_its_size_is_refused() {
        let mut w = Writer::default();
        w.i32(1_000_000);
        w.utf("a");
        w.u8(0);
        assert!(matches!(read_map(&w.out), Err(WireError::BadLength { .. })));
        // Maps nested deeper than the limit.
        let mut bytes = Vec::new();
        for _ in 0..40 {
            bytes.extend_from_slice(&1i32.to_be_bytes());
            bytes.extend_from_slice(&[0, 1, b'm', 11]);
        }
        assert!(read_map(&bytes).is_err());
    }
}
