//! The one way in for a message, whichever protocol or bridge brought it:
//! the headers it keeps, dedup, its id and sequence number, the journal
//! (when it is stored), and the message the router then takes. Protocol
//! adapters authorize, then hand what arrived to [`accept`]; they never
//! build journal records.
//!
//! Headers that describe the frame rather than the message (its
//! destination, receipt, length, ack id, …) are never kept: the broker
//! writes its own when it delivers. Headers in the `portico-` namespace
//! carry the broker network's bookkeeping (the path a message crossed, its
//! origin, hop counts): only a bridge, whose user holds the bridge right,
//! may set them. From an ordinary client they are dropped, except the
//! failover client's `portico-dedup-id`, which the broker scopes by user.

use std::sync::Arc;

use crate::client::DEDUP_HEADER;
use crate::dedup::Key;
use crate::router::{Destination, Kind, Message};
use crate::shared::BrokerCore;
use crate::store::{Durable, JournalError, StoredMessage};

/// The namespace of the broker network's own headers.
pub(crate) const INTERNAL_PREFIX: &str = "portico-";

/// Who a message came from, as far as its headers are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// A client connection (STOMP SEND).
    Client,
    /// Another broker, over a bridge (a forwarded MESSAGE).
    Bridge,
}

/// Headers of the frame itself, which the broker rewrites on delivery.
fn framing(name: &str) -> bool {
    matches!(
        name,
        "destination"
            | "transaction"
            | "receipt"
            | "content-length"
            | "message-id"
            | "subscription"
            | "ack"
            | "redelivered"
    )
}

/// A message as it arrived, authorized, before the broker takes it.
#[derive(Debug)]
pub(crate) struct Arriving<'a> {
    pub(crate) source: Source,
    pub(crate) destination: Destination,
    /// The frame's headers, as sent (the rule above picks what is kept).
    pub(crate) headers: &'a [(String, String)],
    pub(crate) body: Vec<u8>,
    /// `persistent:true`: a queue message is stored before it is taken.
    pub(crate) persistent: bool,
    /// The user who sent it (a client's), for its dedup scope and the journal.
    pub(crate) sender: Option<Arc<str>>,
    /// What makes a re-send of it recognisable, if anything.
    pub(crate) dedup: Option<Key<'a>>,
    /// Its id from elsewhere (a forwarded message keeps its origin's).
    pub(crate) message_id: Option<String>,
}

/// What the broker made of an arriving message.
#[derive(Debug)]
pub(crate) enum Accepted {
    /// Taken already (a re-send): acknowledge it, and nothing more.
    Duplicate,
    /// To route once `durable` (if any) is on disk.
    Taken {
        message: Arc<Message>,
        durable: Option<Durable>,
    },
}

/// Takes an arriving message: dedup, a sequence number and id, the journal
/// for a stored one. The caller routes it once the journal has it, so
/// nothing is routed that a crash could lose.
pub(crate) async fn accept(
    core: &BrokerCore,
    arriving: Arriving<'_>,
) -> Result<Accepted, JournalError> {
    if let Some(key) = arriving.dedup {
        if !core.first_time(key) {
            return Ok(Accepted::Duplicate);
        }
    }
    let seq = core.next_seq();
    let stored = arriving.persistent && arriving.destination.kind == Kind::Queue;
    let message = Message {
        seq,
        message_id: arriving
            .message_id
            .unwrap_or_else(|| format!("ID:{}-{seq}", core.name)),
        stored,
        destination: arriving.destination,
        headers: headers(arriving.source, arriving.headers),
        body: arriving.body,
        sender: arriving.sender,
    };
    let durable = if stored {
        let record = StoredMessage {
            id: seq,
            destination: message.destination.stomp(),
            headers: message.headers.clone(),
            body: message.body.clone(),
            sender: message.sender.as_deref().map(str::to_owned),
        };
        Some(core.journal.add(record).await?)
    } else {
        None
    };
    Ok(Accepted::Taken {
        message: Arc::new(message),
        durable,
    })
}

/// Whether a header sent by `source` is kept with the message.
pub(crate) fn keeps(source: Source, name: &str) -> bool {
    if framing(name) {
        return false;
    }
    match source {
        Source::Bridge => true,
        Source::Client => !name.starts_with(INTERNAL_PREFIX) || name == DEDUP_HEADER,
    }
}

/// The headers of an arriving frame that its message keeps.
pub(crate) fn headers(source: Source, frame: &[(String, String)]) -> Vec<(String, String)> {
    frame
        .iter()
        .filter(|(name, _)| keeps(source, name))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_cannot_set_the_networks_headers() {
        let sent: Vec<(String, String)> = [
            ("destination", "/queue/a"),
            ("portico-path", "evil"),
            ("portico-origin", "ID:victim-1"),
            ("portico-hops", "1"),
            ("portico-dedup-id", "c-1"),
            ("redelivered", "true"),
            ("app", "kept"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let names = |source| -> Vec<String> {
            headers(source, &sent).into_iter().map(|(k, _)| k).collect()
        };
        assert_eq!(names(Source::Client), ["portico-dedup-id", "app"]);
        assert_eq!(
            names(Source::Bridge),
            [
                "portico-path",
                "portico-origin",
                "portico-hops",
                "portico-dedup-id",
                "app"
            ]
        );
    }
}
