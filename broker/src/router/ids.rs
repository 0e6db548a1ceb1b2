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
    /// A `message-id` (STOMP 1.0 and 1.1 acknowledge by it): its sequence,
    /// looked for among the connection's deliveries.
    Message { seq: u64 },
}

impl fmt::Display for AckId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Delivery { sub, seq } => write!(f, "{}-{seq}", sub.0),
            Self::Message { seq } => write!(f, "message {seq}"),
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
        // A message id: `ID:{broker}-{seq}`.
        let seq = text.rsplit('-').next()?.parse().ok()?;
        Some(Self::Message { seq })
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
            Some(AckId::Message { seq: 42 })
        );
        assert_eq!(AckId::parse("nothing"), None);
        assert_eq!(AckId::parse(""), None);
    }
}
