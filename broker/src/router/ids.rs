//! What the router's handles name, as types of their own: a connection, a
//! subscription, a delivered message's ack id (parsed once, at the edge).

use std::fmt;

use serde::Serialize;

/// A connection of this broker (a client's or a bridge's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A subscription, broker-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubKey(pub u64);

/// What an ACK or NACK names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckId {
    /// The `ack` header of a delivery: `{subscription}-{sequence}`.
    Delivery { sub: SubKey, seq: u64 },
    /// This broker's sequence number of a delivered message (what an
    /// OpenWire acknowledgement names), looked for among the connection's
    /// deliveries.
    Message { seq: u64 },
    /// A `message-id` (STOMP 1.0 and 1.1 acknowledge by it), looked for
    /// among the connection's deliveries by a fingerprint of the whole id:
    /// a message from another broker keeps its origin's id, whose number is
    /// not this broker's. `hint`: the number an id of this broker's form
    /// ends with, looked at first.
    Named { fingerprint: u64, hint: Option<u64> },
}

impl fmt::Display for AckId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Delivery { sub, seq } => write!(f, "{}-{seq}", sub.0),
            Self::Message { seq } => write!(f, "message {seq}"),
            Self::Named { fingerprint, .. } => write!(f, "message-id {fingerprint:016x}"),
        }
    }
}

impl AckId {
    /// The `ack` header value of a delivery.
    pub fn header(sub: SubKey, seq: u64) -> String {
        format!("{}-{seq}", sub.0)
    }

    /// Reads an `id` (or `message-id`) from an ACK or NACK frame; `None`
    /// if it names nothing this broker hands out.
    pub fn parse(text: &str) -> Option<Self> {
        if let Some((sub, seq)) = text.split_once('-') {
            if let (Ok(sub), Ok(seq)) = (sub.parse(), seq.parse()) {
                return Some(Self::Delivery {
                    sub: SubKey(sub),
                    seq,
                });
            }
        }
        if text.is_empty() {
            return None;
        }
        // A message id: this broker's (`ID:{broker}-{activation}-{seq}`),
        // or a forwarded message's, kept from where it was sent.
        Some(Self::Named {
            fingerprint: Self::fingerprint(text),
            hint: text.rsplit('-').next().and_then(|seq| seq.parse().ok()),
        })
    }

    /// What [`AckId::Named`] compares: a 64-bit hash of a message id (a
    /// connection compares only against its own deliveries).
    pub fn fingerprint(message_id: &str) -> u64 {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        BuildHasherDefault::<DefaultHasher>::default().hash_one(message_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_ids_parse_in_both_forms() {
        assert_eq!(
            AckId::parse(&AckId::header(SubKey(7), 42)),
            Some(AckId::Delivery {
                sub: SubKey(7),
                seq: 42
            })
        );
        assert_eq!(
            AckId::parse("ID:broker-1-42"),
            Some(AckId::Named {
                fingerprint: AckId::fingerprint("ID:broker-1-42"),
                hint: Some(42)
            })
        );
        assert_eq!(
            AckId::parse("ID:host-3-1:1:1:1:5"),
            Some(AckId::Named {
                fingerprint: AckId::fingerprint("ID:host-3-1:1:1:1:5"),
                hint: None
            })
        );
        // Any other text is looked for as a message id (and not found).
        assert!(matches!(
            AckId::parse("nothing"),
            Some(AckId::Named { hint: None, .. })
        ));
        assert_eq!(AckId::parse(""), None);
    }
}
