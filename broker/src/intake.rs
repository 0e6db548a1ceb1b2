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

use std::sync::{Arc, Weak};

use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::client::DEDUP_HEADER;
use crate::dedup::Key;
use crate::router::{Destination, Kind, Message, Retired, DEFAULT_PRIORITY, PRIORITIES};
use crate::shared::{ActionError, BrokerCore};
use crate::store::{Durable, JournalError, StoredMessage};

/// The header with a message's expiry time (ms since the epoch; 0: never).
pub(crate) const EXPIRES_HEADER: &str = "expires";
/// The header with a message's JMS priority.
pub(crate) const PRIORITY_HEADER: &str = "priority";
/// The header naming a message's group (JMS).
pub(crate) const GROUP_HEADER: &str = "JMSXGroupID";
/// When a scheduled message may be delivered (ms since the epoch): the
/// broker's own record of it.
pub(crate) const DELIVER_AT_HEADER: &str = "portico-deliver-at";
/// A stored message's id, in its journal record only: a restart or a
/// failover gives it back the id it was delivered and forwarded with.
const STORED_ID_HEADER: &str = "portico-message-id";

/// Takes a journal record's message id out of its headers.
pub(crate) fn take_stored_id(headers: &mut Vec<(String, String)>) -> Option<String> {
    let at = headers.iter().rposition(|(k, _)| k == STORED_ID_HEADER)?;
    Some(headers.remove(at).1)
}
/// ActiveMQ's scheduling headers: a delay before the first delivery, the
/// period between repeats and how many repeats (all in ms or counts).
pub(crate) const SCHEDULED_DELAY_HEADER: &str = "AMQ_SCHEDULED_DELAY";
pub(crate) const SCHEDULED_PERIOD_HEADER: &str = "AMQ_SCHEDULED_PERIOD";
pub(crate) const SCHEDULED_REPEAT_HEADER: &str = "AMQ_SCHEDULED_REPEAT";
/// Deliveries one scheduled SEND may ask for (its repeats, times its
/// destinations): each is a message of its own, stored up front.
pub(crate) const MAX_OCCURRENCES: u64 = 1000;
/// Headers a dead letter gets, as ActiveMQ names them.
pub(crate) const ORIGINAL_DESTINATION_HEADER: &str = "original-destination";
pub(crate) const FAILURE_CAUSE_HEADER: &str = "dlqDeliveryFailureCause";

/// The namespace of the broker network's own headers.
pub(crate) const INTERNAL_PREFIX: &str = "portico-";
/// The headers that carry what an OpenWire message was (its JMS type of
/// body, its JMS message id) to an OpenWire consumer.
pub(crate) const JMS_PREFIX: &str = "portico-jms-";

/// Who a message came from, as far as its headers are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// A client connection (STOMP SEND).
    Client,
    /// An OpenWire client: its message's JMS facts travel in the broker's
    /// own `portico-jms-` headers, which only this source may set.
    OpenWire,
    /// Another broker, over a bridge (a forwarded MESSAGE).
    Bridge,
    /// An MQTT client: like OpenWire's, its JMS facts (a bytes message)
    /// travel in `portico-jms-` headers.
    Mqtt,
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
    /// When it expires (see [`Stamps`]); 0: never.
    pub(crate) expires: u64,
    /// Its JMS priority.
    pub(crate) priority: u8,
    /// Its message group, if any.
    pub(crate) group: Option<Arc<str>>,
    /// When it may be delivered (ms since the epoch; 0: at once).
    pub(crate) deliver_at: u64,
    /// Its id from elsewhere (a forwarded message keeps its origin's).
    pub(crate) message_id: Option<String>,
}

/// What the broker made of an arriving message.
#[derive(Debug)]
pub(crate) enum Accepted {
    /// Taken already (a re-send): acknowledge it, and nothing more, once
    /// `durable` (if any: queued after the original's record) is written.
    Duplicate { durable: Option<Durable> },
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
    // A key is marked seen and its message's record queued as one step, so
    // a re-send that finds the mark (on another connection, while the
    // original's write is in flight) waits on a marker queued after that
    // record: it is not answered before the original is on disk.
    let _in_order = match arriving.dedup {
        Some(_) => Some(core.dedup_order.lock().await),
        None => None,
    };
    if let Some(key) = arriving.dedup {
        if !core.first_time(key) {
            let durable = core.journal.marker().await?;
            return Ok(Accepted::Duplicate {
                durable: Some(durable),
            });
        }
    }
    let seq = core.next_seq();
    // A temporary queue lives as long as its connection: never stored.
    let stored = arriving.persistent
        && arriving.destination.kind == Kind::Queue
        && !arriving.destination.is_temporary();
    let message = Message {
        seq,
        message_id: arriving.message_id.unwrap_or_else(|| core.message_id(seq)),
        stored,
        destination: arriving.destination,
        headers: headers(arriving.source, arriving.headers),
        body: arriving.body,
        sender: arriving.sender,
        expires: arriving.expires,
        priority: arriving.priority,
        group: arriving.group,
        deliver_at: arriving.deliver_at,
    };
    let mut message = message;
    if message.deliver_at != 0 {
        // Kept with it, so a restart holds it until then too.
        message
            .headers
            .push((DELIVER_AT_HEADER.to_owned(), message.deliver_at.to_string()));
    }
    let durable = if stored {
        Some(core.journal.add(record_of(&message)).await?)
    } else {
        None
    };
    Ok(Accepted::Taken {
        message: Arc::new(message),
        durable,
    })
}

/// A durable subscription's copy of a topic message, on its way to the
/// subscription's hidden queue (see [`crate::durable`]).
#[derive(Debug)]
pub(crate) struct Copy {
    pub(crate) message: Arc<Message>,
    /// Its journal record, when the original was sent persistent.
    pub(crate) durable: Option<Durable>,
}

/// The copies of `message`, just accepted for a topic, that the durable
/// subscriptions selecting it take: each a queue message of its own (its
/// own id, so a STOMP 1.0 ACK by message-id names it), stored when the
/// original was sent persistent. Empty, and free, without subscriptions.
pub(crate) async fn durable_copies(
    core: &BrokerCore,
    message: &Message,
) -> Result<Vec<Copy>, JournalError> {
    let queues = core.durables.copies(message);
    let mut copies = Vec::with_capacity(queues.len());
    if queues.is_empty() {
        return Ok(copies);
    }
    let persistent = message
        .headers
        .iter()
        .any(|(k, v)| k == "persistent" && v == "true");
    for queue in queues {
        let seq = core.next_seq();
        let mut headers = message.headers.clone();
        headers.push((
            crate::durable::TOPIC_HEADER.to_owned(),
            message.destination.stomp(),
        ));
        let copy = Message {
            seq,
            message_id: core.message_id(seq),
            destination: queue,
            headers,
            body: message.body.clone(),
            stored: persistent,
            sender: message.sender.clone(),
            expires: message.expires,
            priority: message.priority,
            group: message.group.clone(),
            deliver_at: message.deliver_at,
        };
        let durable = if persistent {
            Some(core.journal.add(record_of(&copy)).await?)
        } else {
            None
        };
        copies.push(Copy {
            message: Arc::new(copy),
            durable,
        });
    }
    Ok(copies)
}

/// What a message's headers say about its delivery, by JMS's and
/// ActiveMQ's names, read in one pass: `expires` (ms since the epoch, 0 or
/// absent for never), `priority` (0 to 9, 4 when absent), `JMSXGroupID`,
/// ActiveMQ's scheduling headers, and the broker's own `portico-deliver-at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stamps {
    pub(crate) expires: u64,
    pub(crate) priority: u8,
    pub(crate) group: Option<Arc<str>>,
    pub(crate) schedule: Schedule,
    /// When a stored scheduled message is due (its journal record's).
    pub(crate) deliver_at: u64,
}

/// `AMQ_SCHEDULED_DELAY`, `_PERIOD` and `_REPEAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Schedule {
    pub(crate) delay: u64,
    pub(crate) period: u64,
    pub(crate) repeat: u64,
}

impl Schedule {
    /// How many messages the SEND makes.
    pub(crate) fn deliveries(&self) -> u64 {
        self.repeat + 1
    }

    /// When delivery `n` is due (ms since the epoch); 0: at once.
    pub(crate) fn due(&self, now_ms: u64, n: u64) -> u64 {
        if self.delay == 0 && self.repeat == 0 {
            return 0;
        }
        now_ms
            .saturating_add(self.delay)
            .saturating_add(n.saturating_mul(self.period))
    }
}

impl Stamps {
    /// As a client sent them: any value that does not parse is refused
    /// with a reason naming the header.
    pub(crate) fn read(headers: &[(String, String)]) -> Result<Self, String> {
        Self::parse(headers, true)
    }

    /// As stored or forwarded (checked where they were sent): what does
    /// not parse is left at its default.
    pub(crate) fn lenient(headers: &[(String, String)]) -> Self {
        Self::parse(headers, false).unwrap_or_else(|_| Self::default())
    }

    fn parse(headers: &[(String, String)], strict: bool) -> Result<Self, String> {
        let mut stamps = Self::default();
        // A value that does not parse: refused, or left at its default.
        let take = |parsed: Result<u64, String>, into: &mut u64| -> Result<(), String> {
            match parsed {
                Ok(v) => *into = v,
                Err(e) if strict => return Err(e),
                Err(_) => {}
            }
            Ok(())
        };
        let number = |name: &str, value: &str| -> Result<u64, String> {
            value
                .trim()
                .parse()
                .map_err(|_| format!("{name} must be a whole number, not {value:?}"))
        };
        for (name, value) in headers {
            match name.as_str() {
                EXPIRES_HEADER => take(
                    value.trim().parse().map_err(|_| {
                        format!("expires must be milliseconds since the epoch (0 for never), not {value:?}")
                    }),
                    &mut stamps.expires,
                )?,
                PRIORITY_HEADER => {
                    let mut priority = u64::from(DEFAULT_PRIORITY);
                    take(
                        value
                            .trim()
                            .parse::<u64>()
                            .ok()
                            .filter(|p| *p < PRIORITIES as u64)
                            .ok_or_else(|| {
                                format!("priority must be a number from 0 to 9, not {value:?}")
                            }),
                        &mut priority,
                    )?;
                    stamps.priority = u8::try_from(priority).unwrap_or(DEFAULT_PRIORITY);
                }
                GROUP_HEADER if !value.is_empty() => {
                    stamps.group = Some(Arc::from(value.as_str()));
                }
                SCHEDULED_DELAY_HEADER => take(number(name, value), &mut stamps.schedule.delay)?,
                SCHEDULED_PERIOD_HEADER => {
                    take(number(name, value), &mut stamps.schedule.period)?;
                }
                SCHEDULED_REPEAT_HEADER => {
                    take(number(name, value), &mut stamps.schedule.repeat)?;
                }
                // The broker's own: never refused.
                DELIVER_AT_HEADER => stamps.deliver_at = value.parse().unwrap_or(0),
                _ => {}
            }
        }
        if stamps.schedule.repeat >= MAX_OCCURRENCES {
            if strict {
                return Err(format!(
                    "{SCHEDULED_REPEAT_HEADER} may be at most {}, not {}",
                    MAX_OCCURRENCES - 1,
                    stamps.schedule.repeat
                ));
            }
            stamps.schedule = Schedule::default();
        }
        Ok(stamps)
    }
}

impl Default for Stamps {
    fn default() -> Self {
        Self {
            expires: 0,
            priority: DEFAULT_PRIORITY,
            group: None,
            schedule: Schedule::default(),
            deliver_at: 0,
        }
    }
}

/// Makes the journal agree with what the router gave up on, in the order
/// it did: a dead letter replaces its original in one journal record and
/// is then routed to its dead-letter queue; a dropped stored message is
/// acknowledged. Until its record is on disk, the original is what a
/// restart finds.
pub(crate) async fn retire(core: Weak<BrokerCore>, mut retired: mpsc::UnboundedReceiver<Retired>) {
    while let Some(r) = retired.recv().await {
        let Some(core) = core.upgrade() else {
            return;
        };
        let (seq, cause) = (r.message.seq, r.cause.clone());
        if let Err(e) = retire_one(&core, r).await {
            warn!(seq, %cause, error = %e, "a message given up on is kept: the journal did not take the change");
        }
    }
}

async fn retire_one(core: &BrokerCore, retired: Retired) -> Result<(), JournalError> {
    let Retired { message, cause, to } = retired;
    let Some(to) = to else {
        if message.stored {
            core.journal
                .acknowledge(vec![message.seq])
                .await?
                .wait()
                .await?;
        }
        return Ok(());
    };
    let original = Arc::unwrap_or_clone(message);
    // A dead letter does not expire (as in ActiveMQ), and says where it
    // came from and why.
    let from = original.destination.to_string();
    let dead = rehome(core, &original, to, |headers| {
        headers.push((ORIGINAL_DESTINATION_HEADER.to_owned(), from));
        headers.push((FAILURE_CAUSE_HEADER.to_owned(), cause.to_string()));
    });
    if original.stored {
        core.journal
            .replace(original.seq, record_of(&dead))
            .await?
            .wait()
            .await?;
    }
    info!(from = %original.destination, to = %dead.destination, %cause, "dead letter");
    core.router.send(Arc::new(dead)).await;
    Ok(())
}

/// `original` as a new message to `to` (a dead letter, or one retried
/// from a dead-letter queue): its own id, no expiry and no schedule, the
/// dead-letter headers left out and then what `add` adds.
fn rehome(
    core: &BrokerCore,
    original: &Message,
    to: Destination,
    add: impl FnOnce(&mut Vec<(String, String)>),
) -> Message {
    let seq = core.next_seq();
    let mut headers: Vec<(String, String)> = original
        .headers
        .iter()
        .filter(|(name, _)| {
            name != EXPIRES_HEADER
                && name != ORIGINAL_DESTINATION_HEADER
                && name != FAILURE_CAUSE_HEADER
                && name != DELIVER_AT_HEADER
        })
        .cloned()
        .collect();
    add(&mut headers);
    Message {
        seq,
        message_id: core.message_id(seq),
        destination: to,
        headers,
        body: original.body.clone(),
        stored: original.stored,
        sender: original.sender.clone(),
        expires: 0,
        priority: original.priority,
        group: original.group.clone(),
        deliver_at: 0,
    }
}

/// Where a dead letter came from (its `original-destination`).
pub(crate) fn original_destination(message: &Message) -> Option<Destination> {
    message
        .headers
        .iter()
        .find(|(k, _)| k == ORIGINAL_DESTINATION_HEADER)
        .and_then(|(_, v)| Destination::parse(v).ok())
}

/// The console's "retry": moves the dead letters waiting in queue `name`
/// (all, or the one with `message_id`) back to where they came from, each
/// stored one in one journal record, as its move here was. Returns how
/// many went.
pub(crate) async fn retry(
    core: &BrokerCore,
    name: &str,
    message_id: Option<String>,
) -> Result<usize, ActionError> {
    let taken = core
        .router
        .take(name.to_owned(), move |m| {
            original_destination(m).is_some()
                && message_id.as_ref().is_none_or(|id| *id == m.message_id)
        })
        .await?;
    let count = taken.len();
    for (i, message) in taken.iter().enumerate() {
        let Some(to) = original_destination(message) else {
            continue;
        };
        let back = rehome(core, message, to, |_| {});
        if message.stored {
            let moved = match core.journal.replace(message.seq, record_of(&back)).await {
                Ok(durable) => durable.wait().await,
                Err(e) => Err(e),
            };
            if let Err(e) = moved {
                // Those not moved are still stored where they were: a
                // restart finds them there.
                warn!(queue = name, error = %e, left = count - i, "a retry could not be stored");
                return Err(e.into());
            }
        }
        info!(from = name, to = %back.destination, "dead letter retried");
        core.router.send(Arc::new(back)).await;
    }
    Ok(count)
}

/// What the journal keeps of a message (its copy of the body: the
/// message itself goes on to the router).
fn record_of(message: &Message) -> StoredMessage {
    let mut headers = Vec::with_capacity(message.headers.len() + 1);
    headers.extend_from_slice(&message.headers);
    headers.push((STORED_ID_HEADER.to_owned(), message.message_id.clone()));
    StoredMessage {
        id: message.seq,
        destination: message.destination.stomp(),
        headers,
        body: message.body.clone(),
        sender: message.sender.as_deref().map(str::to_owned),
    }
}

/// Whether a header sent by `source` is kept with the message.
pub(crate) fn keeps(source: Source, name: &str) -> bool {
    if framing(name) {
        return false;
    }
    match source {
        Source::Bridge => true,
        Source::Client => !name.starts_with(INTERNAL_PREFIX) || name == DEDUP_HEADER,
        Source::OpenWire | Source::Mqtt => {
            !name.starts_with(INTERNAL_PREFIX) || name.starts_with(JMS_PREFIX)
        }
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
