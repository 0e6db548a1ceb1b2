//! What the broker keeps of a message's headers when it arrives, by who
//! sent it: the one rule every way in applies.
//!
//! Headers that describe the frame rather than the message (its
//! destination, receipt, length, ack id, …) are never kept: the broker
//! writes its own when it delivers. Headers in the `portico-` namespace
//! carry the broker network's bookkeeping (the path a message crossed, its
//! origin, hop counts): only a bridge, whose user holds the bridge right,
//! may set them. From an ordinary client they are dropped, except the
//! failover client's `portico-dedup-id`, which the broker scopes by user.

use crate::client::DEDUP_HEADER;

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
