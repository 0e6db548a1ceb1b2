//! MQTT 3.1.1 packets (and 3.1's CONNECT, `MQIsdp` level 3), sans-IO:
//! [`decode`] finds one whole packet at the start of a buffer (or says
//! more is needed), refusing a packet larger than the caller's maximum as
//! soon as its length is read; [`encode`] appends one.

use std::fmt;

/// A packet's delivery guarantee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QoS {
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    fn from_bits(bits: u8) -> Result<Self, MqttError> {
        match bits {
            0 => Ok(Self::AtMostOnce),
            1 => Ok(Self::AtLeastOnce),
            2 => Ok(Self::ExactlyOnce),
            _ => Err(MqttError::BadQoS),
        }
    }
}

/// A client's last will: published for it when it goes without a
/// DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: QoS,
    pub retain: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// 4: MQTT 3.1.1; 3: MQTT 3.1 (`MQIsdp`).
    pub level: u8,
    pub clean_session: bool,
    /// Seconds; 0: none.
    pub keep_alive: u16,
    pub client_id: String,
    pub will: Option<Will>,
    pub username: Option<String>,
    pub password: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    pub topic: String,
    /// Present for QoS 1 and 2.
    pub id: Option<u16>,
    pub payload: Vec<u8>,
}

/// CONNACK's return codes.
pub mod connack {
    pub const ACCEPTED: u8 = 0;
    pub const BAD_PROTOCOL_VERSION: u8 = 1;
    pub const IDENTIFIER_REJECTED: u8 = 2;
    pub const SERVER_UNAVAILABLE: u8 = 3;
    pub const BAD_USERNAME_OR_PASSWORD: u8 = 4;
    pub const NOT_AUTHORIZED: u8 = 5;
}

/// A SUBACK code that refuses a subscription.
pub const SUBSCRIPTION_FAILED: u8 = 0x80;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck {
        session_present: bool,
        code: u8,
    },
    Publish(Publish),
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    Subscribe {
        id: u16,
        filters: Vec<(String, QoS)>,
    },
    /// Each filter's granted QoS (0–2) or [`SUBSCRIPTION_FAILED`].
    SubAck {
        id: u16,
        codes: Vec<u8>,
    },
    Unsubscribe {
        id: u16,
        filters: Vec<String>,
    },
    UnsubAck(u16),
    PingReq,
    PingResp,
    Disconnect,
}

impl Packet {
    /// Its name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Connect(_) => "CONNECT",
            Self::ConnAck { .. } => "CONNACK",
            Self::Publish(_) => "PUBLISH",
            Self::PubAck(_) => "PUBACK",
            Self::PubRec(_) => "PUBREC",
            Self::PubRel(_) => "PUBREL",
            Self::PubComp(_) => "PUBCOMP",
            Self::Subscribe { .. } => "SUBSCRIBE",
            Self::SubAck { .. } => "SUBACK",
            Self::Unsubscribe { .. } => "UNSUBSCRIBE",
            Self::UnsubAck(_) => "UNSUBACK",
            Self::PingReq => "PINGREQ",
            Self::PingResp => "PINGRESP",
            Self::Disconnect => "DISCONNECT",
        }
    }
}

/// Why bytes are not an MQTT packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MqttError {
    /// The remaining length runs past four bytes.
    BadRemainingLength,
    /// The packet is larger than allowed.
    TooLarge {
        size: usize,
        max: usize,
    },
    /// Packet type 0 or 15.
    UnknownType(u8),
    /// Fixed-header flags the type does not allow.
    BadFlags {
        packet: &'static str,
        flags: u8,
    },
    /// A field runs past the packet's end.
    Truncated(&'static str),
    /// Bytes left over after the packet's fields.
    Trailing(&'static str),
    BadUtf8(&'static str),
    BadQoS,
    /// Not `MQTT` level 4 or `MQIsdp` level 3.
    BadProtocol {
        name: String,
        level: u8,
    },
    /// A CONNECT flag combination the protocol forbids.
    BadConnectFlags(u8),
    /// Packet identifier 0 where one is required.
    ZeroPacketId,
    /// A SUBSCRIBE or UNSUBSCRIBE without topic filters.
    NoFilters,
    /// A PUBLISH at QoS 0 with DUP set.
    DupAtQoS0,
}

impl fmt::Display for MqttError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadRemainingLength => {
                f.write_str("the remaining length is longer than four bytes")
            }
            Self::TooLarge { size, max } => {
                write!(f, "a packet of {size} bytes is over the limit of {max}")
            }
            Self::UnknownType(t) => write!(f, "packet type {t} does not exist"),
            Self::BadFlags { packet, flags } => {
                write!(f, "{packet} with fixed-header flags {flags:#06b}")
            }
            Self::Truncated(what) => write!(f, "{what} runs past the end of the packet"),
            Self::Trailing(what) => write!(f, "bytes left over after {what}"),
            Self::BadUtf8(what) => write!(f, "{what} is not UTF-8 (or holds U+0000)"),
            Self::BadQoS => f.write_str("QoS 3 does not exist"),
            Self::BadProtocol { name, level } => write!(
                f,
                "protocol {name:?} level {level} (MQTT 3.1.1 is \"MQTT\" level 4)"
            ),
            Self::BadConnectFlags(flags) => {
                write!(f, "CONNECT flags {flags:#010b} are not allowed")
            }
            Self::ZeroPacketId => f.write_str("packet identifier 0"),
            Self::NoFilters => f.write_str("a SUBSCRIBE or UNSUBSCRIBE without topic filters"),
            Self::DupAtQoS0 => f.write_str("a QoS 0 PUBLISH with DUP set"),
        }
    }
}

impl std::error::Error for MqttError {}

/// Reads the packet's fields.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self, what: &'static str) -> Result<u8, MqttError> {
        let b = *self.buf.get(self.at).ok_or(MqttError::Truncated(what))?;
        self.at += 1;
        Ok(b)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, MqttError> {
        Ok(u16::from_be_bytes([self.u8(what)?, self.u8(what)?]))
    }

    fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], MqttError> {
        let len = usize::from(self.u16(what)?);
        let end = self.at.checked_add(len).ok_or(MqttError::Truncated(what))?;
        let bytes = self
            .buf
            .get(self.at..end)
            .ok_or(MqttError::Truncated(what))?;
        self.at = end;
        Ok(bytes)
    }

    fn string(&mut self, what: &'static str) -> Result<String, MqttError> {
        let bytes = self.bytes(what)?;
        let text = std::str::from_utf8(bytes).map_err(|_| MqttError::BadUtf8(what))?;
        if text.contains('\0') {
            return Err(MqttError::BadUtf8(what));
        }
        Ok(text.to_owned())
    }

    fn id(&mut self, what: &'static str) -> Result<u16, MqttError> {
        match self.u16(what)? {
            0 => Err(MqttError::ZeroPacketId),
            id => Ok(id),
        }
    }

    fn rest(&mut self) -> &'a [u8] {
        let rest = &self.buf[self.at..];
        self.at = self.buf.len();
        rest
    }

    fn done(&self, what: &'static str) -> Result<(), MqttError> {
        if self.at == self.buf.len() {
            Ok(())
        } else {
            Err(MqttError::Trailing(what))
        }
    }
}

/// One packet at the start of `buf`: the packet and the bytes it took, or
/// `None` until it is whole. A packet whose total size is over `max` is an
/// error as soon as its length is known.
pub fn decode(buf: &[u8], max: usize) -> Result<Option<(Packet, usize)>, MqttError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut remaining: usize = 0;
    let mut header = 1;
    loop {
        let Some(&b) = buf.get(header) else {
            return Ok(None);
        };
        remaining |= usize::from(b & 0x7F) << (7 * (header - 1));
        header += 1;
        if b & 0x80 == 0 {
            break;
        }
        if header > 4 {
            return Err(MqttError::BadRemainingLength);
        }
    }
    let size = header + remaining;
    if size > max {
        return Err(MqttError::TooLarge { size, max });
    }
    let Some(body) = buf.get(header..size) else {
        return Ok(None);
    };
    Ok(Some((packet(first, body)?, size)))
}

fn flags_must_be(packet: &'static str, flags: u8, expected: u8) -> Result<(), MqttError> {
    if flags == expected {
        Ok(())
    } else {
        Err(MqttError::BadFlags { packet, flags })
    }
}

fn packet(first: u8, body: &[u8]) -> Result<Packet, MqttError> {
    let (kind, flags) = (first >> 4, first & 0x0F);
    let mut r = Reader { buf: body, at: 0 };
    let packet = match kind {
        1 => {
            flags_must_be("CONNECT", flags, 0)?;
            Packet::Connect(Box::new(connect(&mut r)?))
        }
        2 => {
            flags_must_be("CONNACK", flags, 0)?;
            let ack = r.u8("CONNACK's flags")?;
            let code = r.u8("CONNACK's code")?;
            Packet::ConnAck {
                session_present: ack & 1 == 1,
                code,
            }
        }
        3 => {
            let qos = QoS::from_bits((flags >> 1) & 3)?;
            let dup = flags & 8 != 0;
            if dup && qos == QoS::AtMostOnce {
                return Err(MqttError::DupAtQoS0);
            }
            let topic = r.string("PUBLISH's topic")?;
            let id = match qos {
                QoS::AtMostOnce => None,
                _ => Some(r.id("PUBLISH's packet identifier")?),
            };
            Packet::Publish(Publish {
                dup,
                qos,
                retain: flags & 1 != 0,
                topic,
                id,
                payload: r.rest().to_vec(),
            })
        }
        4 => {
            flags_must_be("PUBACK", flags, 0)?;
            Packet::PubAck(r.id("PUBACK's packet identifier")?)
        }
        5 => {
            flags_must_be("PUBREC", flags, 0)?;
            Packet::PubRec(r.id("PUBREC's packet identifier")?)
        }
        6 => {
            flags_must_be("PUBREL", flags, 2)?;
            Packet::PubRel(r.id("PUBREL's packet identifier")?)
        }
        7 => {
            flags_must_be("PUBCOMP", flags, 0)?;
            Packet::PubComp(r.id("PUBCOMP's packet identifier")?)
        }
        8 => {
            flags_must_be("SUBSCRIBE", flags, 2)?;
            let id = r.id("SUBSCRIBE's packet identifier")?;
            let mut filters = Vec::new();
            while r.at < body.len() {
                let filter = r.string("a topic filter")?;
                let options = r.u8("a topic filter's QoS")?;
                if options & 0xFC != 0 {
                    return Err(MqttError::BadQoS);
                }
                filters.push((filter, QoS::from_bits(options)?));
            }
            if filters.is_empty() {
                return Err(MqttError::NoFilters);
            }
            Packet::Subscribe { id, filters }
        }
        9 => {
            flags_must_be("SUBACK", flags, 0)?;
            let id = r.id("SUBACK's packet identifier")?;
            Packet::SubAck {
                id,
                codes: r.rest().to_vec(),
            }
        }
        10 => {
            flags_must_be("UNSUBSCRIBE", flags, 2)?;
            let id = r.id("UNSUBSCRIBE's packet identifier")?;
            let mut filters = Vec::new();
            while r.at < body.len() {
                filters.push(r.string("a topic filter")?);
            }
            if filters.is_empty() {
                return Err(MqttError::NoFilters);
            }
            Packet::Unsubscribe { id, filters }
        }
        11 => {
            flags_must_be("UNSUBACK", flags, 0)?;
            Packet::UnsubAck(r.id("UNSUBACK's packet identifier")?)
        }
        12 => {
            flags_must_be("PINGREQ", flags, 0)?;
            Packet::PingReq
        }
        13 => {
            flags_must_be("PINGRESP", flags, 0)?;
            Packet::PingResp
        }
        14 => {
            flags_must_be("DISCONNECT", flags, 0)?;
            Packet::Disconnect
        }
        other => return Err(MqttError::UnknownType(other)),
    };
    r.done(packet.name())?;
    Ok(packet)
}

fn connect(r: &mut Reader<'_>) -> Result<Connect, MqttError> {
    let name = r.string("the protocol name")?;
    let level = r.u8("the protocol level")?;
    match (name.as_str(), level) {
        ("MQTT", 4) | ("MQIsdp", 3) => {}
        _ => return Err(MqttError::BadProtocol { name, level }),
    }
    let flags = r.u8("CONNECT's flags")?;
    let (username, password, will_retain, will_flag, clean) = (
        flags & 0x80 != 0,
        flags & 0x40 != 0,
        flags & 0x20 != 0,
        flags & 0x04 != 0,
        flags & 0x02 != 0,
    );
    let will_qos = (flags >> 3) & 3;
    let forbidden = flags & 1 != 0
        || will_qos == 3
        || (!will_flag && (will_qos != 0 || will_retain))
        || (level == 4 && password && !username);
    if forbidden {
        return Err(MqttError::BadConnectFlags(flags));
    }
    let keep_alive = r.u16("the keep-alive")?;
    let client_id = r.string("the client identifier")?;
    let will = if will_flag {
        Some(Will {
            topic: r.string("the will's topic")?,
            payload: r.bytes("the will's message")?.to_vec(),
            qos: QoS::from_bits(will_qos)?,
            retain: will_retain,
        })
    } else {
        None
    };
    let username = if username {
        Some(r.string("the user name")?)
    } else {
        None
    };
    let password = if password {
        Some(r.bytes("the password")?.to_vec())
    } else {
        None
    };
    Ok(Connect {
        level,
        clean_session: clean,
        keep_alive,
        client_id,
        will,
        username,
        password,
    })
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&bytes[..usize::from(len)]);
}

/// Appends `packet`. A string or payload longer than the protocol allows
/// is cut to fit (the broker never makes one).
pub fn encode(packet: &Packet, out: &mut Vec<u8>) {
    let mut body = Vec::new();
    let first = match packet {
        Packet::Connect(c) => {
            put_bytes(&mut body, if c.level == 3 { b"MQIsdp" } else { b"MQTT" });
            body.push(c.level);
            let mut flags = 0u8;
            if c.username.is_some() {
                flags |= 0x80;
            }
            if c.password.is_some() {
                flags |= 0x40;
            }
            if let Some(w) = &c.will {
                flags |= 0x04 | ((w.qos as u8) << 3);
                if w.retain {
                    flags |= 0x20;
                }
            }
            if c.clean_session {
                flags |= 0x02;
            }
            body.push(flags);
            body.extend_from_slice(&c.keep_alive.to_be_bytes());
            put_bytes(&mut body, c.client_id.as_bytes());
            if let Some(w) = &c.will {
                put_bytes(&mut body, w.topic.as_bytes());
                put_bytes(&mut body, &w.payload);
            }
            if let Some(u) = &c.username {
                put_bytes(&mut body, u.as_bytes());
            }
            if let Some(p) = &c.password {
                put_bytes(&mut body, p);
            }
            0x10
        }
        Packet::ConnAck {
            session_present,
            code,
        } => {
            body.push(u8::from(*session_present));
            body.push(*code);
            0x20
        }
        Packet::Publish(p) => {
            put_bytes(&mut body, p.topic.as_bytes());
            if p.qos != QoS::AtMostOnce {
                body.extend_from_slice(&p.id.unwrap_or(1).to_be_bytes());
            }
            body.extend_from_slice(&p.payload);
            0x30 | (u8::from(p.dup && p.qos != QoS::AtMostOnce) << 3)
                | ((p.qos as u8) << 1)
                | u8::from(p.retain)
        }
        Packet::PubAck(id) => {
            body.extend_from_slice(&id.to_be_bytes());
            0x40
        }
        Packet::PubRec(id) => {
            body.extend_from_slice(&id.to_be_bytes());
            0x50
        }
        Packet::PubRel(id) => {
            body.extend_from_slice(&id.to_be_bytes());
            0x62
        }
        Packet::PubComp(id) => {
            body.extend_from_slice(&id.to_be_bytes());
            0x70
        }
        Packet::Subscribe { id, filters } => {
            body.extend_from_slice(&id.to_be_bytes());
            for (filter, qos) in filters {
                put_bytes(&mut body, filter.as_bytes());
                body.push(*qos as u8);
            }
            0x82
        }
        Packet::SubAck { id, codes } => {
            body.extend_from_slice(&id.to_be_bytes());
            body.extend_from_slice(codes);
            0x90
        }
        Packet::Unsubscribe { id, filters } => {
            body.extend_from_slice(&id.to_be_bytes());
            for filter in filters {
                put_bytes(&mut body, filter.as_bytes());
            }
            0xA2
        }
        Packet::UnsubAck(id) => {
            body.extend_from_slice(&id.to_be_bytes());
            0xB0
        }
        Packet::PingReq => 0xC0,
        Packet::PingResp => 0xD0,
        Packet::Disconnect => 0xE0,
    };
    out.push(first);
    let mut len = body.len().min(MAX_REMAINING);
    body.truncate(len);
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(&body);
}

/// The largest remaining length four bytes can say (256 MiB − 1).
pub const MAX_REMAINING: usize = 268_435_455;

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(p: Packet) {
        let mut bytes = Vec::new();
        encode(&p, &mut bytes);
        let (back, used) = decode(&bytes, usize::MAX).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(back, p);
        // Cut anywhere: more is needed, never an error.
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut], usize::MAX), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn every_packet_round_trips() {
        round_trip(Packet::Connect(Box::new(Connect {
            level: 4,
            clean_session: false,
            keep_alive: 60,
            client_id: "sensor-1".into(),
            will: Some(Will {
                topic: "sensors/hall/status".into(),
                payload: b"gone".to_vec(),
                qos: QoS::AtLeastOnce,
                retain: true,
            }),
            username: Some("device".into()),
            password: Some(b"secret".to_vec()),
        })));
        round_trip(Packet::ConnAck {
            session_present: true,
            code: connack::ACCEPTED,
        });
        round_trip(Packet::Publish(Publish {
            dup: true,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "a/b".into(),
            id: Some(7),
            payload: vec![0; 300],
        }));
        round_trip(Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: true,
            topic: "a".into(),
            id: None,
            payload: Vec::new(),
        }));
        for p in [
            Packet::PubAck(1),
            Packet::PubRec(2),
            Packet::PubRel(3),
            Packet::PubComp(4),
            Packet::UnsubAck(5),
            Packet::PingReq,
            Packet::PingResp,
            Packet::Disconnect,
        ] {
            round_trip(p);
        }
        round_trip(Packet::Subscribe {
            id: 9,
            filters: vec![
                ("a/+/c".into(), QoS::AtLeastOnce),
                ("#".into(), QoS::AtMostOnce),
            ],
        });
        round_trip(Packet::SubAck {
            id: 9,
            codes: vec![1, SUBSCRIPTION_FAILED],
        });
        round_trip(Packet::Unsubscribe {
            id: 10,
            filters: vec!["a/+/c".into()],
        });
    }

    #[test]
    fn bad_packets_are_refused_with_a_reason() {
        // Five bytes of remaining length.
        assert_eq!(
            decode(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], 1 << 30),
            Err(MqttError::BadRemainingLength)
        );
        // Over the limit, known from the header alone.
        assert_eq!(
            decode(&[0x30, 0xFF, 0xFF, 0x7F], 1024),
            Err(MqttError::TooLarge {
                size: 2_097_155,
                max: 1024
            })
        );
        // SUBSCRIBE must have flags 0010.
        assert!(matches!(
            decode(&[0x80, 0x02, 0x00, 0x01], 1024),
            Err(MqttError::BadFlags { .. })
        ));
        // A string longer than its packet.
        assert_eq!(
            decode(&[0x30, 0x03, 0x00, 0x09, b'a'], 1024),
            Err(MqttError::Truncated("PUBLISH's topic"))
        );
        // QoS 3.
        assert_eq!(
            decode(&[0x36, 0x03, 0x00, 0x01, b'a'], 1024),
            Err(MqttError::BadQoS)
        );
        // Another protocol.
        let mut bad = Vec::new();
        encode(
            &Packet::Connect(Box::new(Connect {
                level: 4,
                clean_session: true,
                keep_alive: 0,
                client_id: String::new(),
                will: None,
                username: None,
                password: None,
            })),
            &mut bad,
        );
        bad[8] = 5;
        assert!(matches!(
            decode(&bad, 1024),
            Err(MqttError::BadProtocol { level: 5, .. })
        ));
        // Packet types 0 and 15.
        assert_eq!(decode(&[0x00, 0x00], 1024), Err(MqttError::UnknownType(0)));
        assert_eq!(decode(&[0xF0, 0x00], 1024), Err(MqttError::UnknownType(15)));
        // Bytes after a PINGREQ.
        assert!(matches!(
            decode(&[0xC0, 0x01, 0x00], 1024),
            Err(MqttError::Trailing(_))
        ));
        // A null in a topic.
        assert!(matches!(
            decode(&[0x30, 0x04, 0x00, 0x02, b'a', 0], 1024),
            Err(MqttError::BadUtf8(_))
        ));
    }
}
