//! The router: the one owner of every destination, subscription and
//! in-flight message. Connections talk to it through `Router`, a handle on
//! a bounded channel.
//!
//! Queues give each message to one consumer, round robin over consumers
//! with room in their prefetch window; topics give it to every subscriber.
//! Slow consumers: a queue consumer whose connection cannot take more is
//! skipped until it drains (its messages wait in the queue); a topic
//! subscriber's messages wait in its own backlog while its connection is
//! busy. A subscriber is judged by its lag, not by the size of a message:
//! one more than 10,000 messages or 16 MiB (or two frames, if frames may be
//! larger) behind that has taken nothing for [`SLOW_CONSUMER_GRACE`] has
//! stopped reading and is disconnected with an ERROR; one four times
//! further behind is disconnected whatever it does, so one slow reader
//! never grows the broker's memory without bound.
//! Producers: a queue over its memory limit holds back its senders' SENDs
//! (each connection waits for its SEND to be accepted) until consumers
//! make room.

pub mod destination;
mod error;
mod ids;
mod outbox;
pub mod policy;
mod state;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

pub use destination::{Destination, Filter, Kind};
pub use error::RouterError;
pub use ids::{AckId, ConnId, SubKey};
pub use outbox::{Outbox, OutboxReceiver, OUTBOX_BYTES};
pub use policy::{Cause, DeadLetter, Policies, Policy, Retired};

/// A message as the router holds it.
#[derive(Debug, Clone)]
pub struct Message {
    /// Broker-wide sequence number; the journal's id for stored messages.
    pub seq: u64,
    /// The `message-id` header.
    pub message_id: String,
    pub destination: Destination,
    /// Application headers, as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Sent with `persistent:true` to a queue: kept in the journal.
    pub stored: bool,
    /// The user who sent it, when a client of this broker did.
    pub sender: Option<Arc<str>>,
    /// When it expires, in milliseconds since the epoch (the `expires`
    /// header, JMSExpiration); 0: never.
    pub expires: u64,
    /// JMS priority, 0 to 9 (the `priority` header): a queue delivers its
    /// higher ones first.
    pub priority: u8,
    /// Its message group (`JMSXGroupID`): a queue gives a group's messages
    /// to one consumer while it lives.
    pub group: Option<Arc<str>>,
    /// When it may be delivered, in milliseconds since the epoch (a
    /// scheduled message, `AMQ_SCHEDULED_DELAY`); 0: at once.
    pub deliver_at: u64,
}

/// Topics named `VirtualTopic.<name>` are virtual topics (ActiveMQ's
/// default prefix).
pub const VIRTUAL_TOPIC_PREFIX: &str = "VirtualTopic.";

/// Whether queue `queue` takes copies of what is sent to virtual topic
/// `topic`: it is named `Consumer.<consumer>.<topic>`, `<consumer>` one
/// part (ActiveMQ's default `Consumer.*.`).
pub fn virtual_topic_queue(queue: &str, topic: &str) -> bool {
    topic.starts_with(VIRTUAL_TOPIC_PREFIX)
        && queue
            .strip_prefix("Consumer.")
            .and_then(|rest| rest.split_once('.'))
            .is_some_and(|(consumer, rest)| !consumer.is_empty() && rest == topic)
}

/// JMS priorities: 0 to 9.
pub const PRIORITIES: usize = 10;
/// A message without a `priority` header has this one.
pub const DEFAULT_PRIORITY: u8 = 4;

/// The header listing the brokers a forwarded message has crossed.
pub const PATH_HEADER: &str = "portico-path";

impl Message {
    /// The brokers this message crossed before this one, origin first.
    pub fn path(&self) -> Vec<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == PATH_HEADER)
            .map(|(_, v)| v.split(',').filter(|b| !b.is_empty()).collect())
            .unwrap_or_default()
    }

    /// Whether it expired by `now_ms` (milliseconds since the epoch).
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires != 0 && now_ms >= self.expires
    }

    fn size(&self) -> usize {
        self.body.len()
            + self
                .headers
                .iter()
                .map(|(n, v)| n.len() + v.len())
                .sum::<usize>()
            + 64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AckMode {
    Auto,
    Client,
    ClientIndividual,
}

/// How a subscription consumes.
#[derive(Debug, Clone)]
pub struct Consumer {
    pub ack: AckMode,
    /// Messages delivered and not yet acknowledged, at most.
    pub prefetch: usize,
    /// Only messages it selects (JMS selector); all without one.
    pub selector: Option<Arc<crate::selector::Selector>>,
}

/// A message on its way to a subscriber.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub subscription: String,
    /// The `ack` header value, when the subscription acknowledges.
    pub ack: Option<String>,
    pub message: Arc<Message>,
    pub redelivered: bool,
    pub ack_mode: AckMode,
}

/// What the console shows of a connection.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionInfo {
    pub id: ConnId,
    pub remote: String,
    pub user: String,
    pub transport: String,
    pub version: String,
    pub connected_at: String,
    pub subscriptions: usize,
    /// The destinations it subscribed to and sent to, `/queue/…` or
    /// `/topic/…` (filled in by `Router::stats`).
    pub destinations: Vec<String>,
    /// Messages it sent since it connected (filled in by `Router::stats`).
    pub messages_sent: u64,
    /// Messages delivered to it since it connected (filled in likewise).
    pub messages_delivered: u64,
    /// Where the connection counts what it sends and is delivered.
    #[serde(skip)]
    pub counters: Arc<ConnCounters>,
}

impl ConnectionInfo {
    pub fn new(
        id: ConnId,
        remote: String,
        user: String,
        transport: String,
        version: String,
    ) -> Self {
        Self {
            id,
            remote,
            user,
            transport,
            version,
            connected_at: rfc3339(SystemTime::now()),
            subscriptions: 0,
            destinations: Vec::new(),
            messages_sent: 0,
            messages_delivered: 0,
            counters: Arc::default(),
        }
    }
}

/// A connection's message counts, kept by its session and writer.
#[derive(Debug, Default)]
pub struct ConnCounters {
    pub sent: std::sync::atomic::AtomicU64,
    pub delivered: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueStats {
    pub name: String,
    pub pending: usize,
    pub consumers: usize,
    /// Connections sending to it now.
    pub producers: usize,
    pub enqueued: u64,
    pub dequeued: u64,
    /// Expired before anyone took them.
    pub expired: u64,
    /// Moved to a dead-letter queue after too many deliveries.
    pub dead_lettered: u64,
    /// Bytes of its messages held (waiting, and delivered unacknowledged).
    pub bytes: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct TopicStats {
    pub name: String,
    pub subscribers: usize,
    /// Connections publishing to it now.
    pub producers: usize,
    pub enqueued: u64,
    pub dequeued: u64,
    /// Expired before a subscriber took them.
    pub expired: u64,
}

/// The broker's memory for messages, against its limit.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct MemoryStats {
    /// Bytes of messages held: queues and topic subscribers.
    pub used: usize,
    pub limit: usize,
    /// Senders waiting for room (a queue's or the broker's).
    pub held_senders: usize,
}

/// Live figures for the console.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Scheduled messages waiting for their time.
    pub scheduled: usize,
    pub queues: Vec<QueueStats>,
    pub topics: Vec<TopicStats>,
    pub connections: Vec<ConnectionInfo>,
    pub memory: MemoryStats,
}

enum Op {
    Register {
        conn: ConnId,
        outbox: Outbox,
        info: ConnectionInfo,
    },
    Unregister {
        conn: ConnId,
    },
    Subscribe {
        conn: ConnId,
        id: String,
        destination: Destination,
        consumer: Consumer,
        network: Option<NetworkLink>,
        reply: oneshot::Sender<Result<(), RouterError>>,
    },
    Demand {
        exclude_peer: String,
        reply: oneshot::Sender<Vec<(Destination, u32)>>,
    },
    Unsubscribe {
        conn: ConnId,
        id: String,
        reply: oneshot::Sender<Result<(), RouterError>>,
    },
    Ensure {
        destination: Destination,
        /// The connection about to send to it: one of its producers.
        producer: Option<ConnId>,
        reply: oneshot::Sender<Result<(), RouterError>>,
    },
    VirtualTopicQueues {
        topic: String,
        reply: oneshot::Sender<Vec<Destination>>,
    },
    Send {
        message: Arc<Message>,
        reply: oneshot::Sender<()>,
    },
    Ack {
        conn: ConnId,
        ack: AckId,
        /// That message only, whatever the subscription's ack mode.
        only: bool,
        reply: oneshot::Sender<Result<Vec<u64>, RouterError>>,
    },
    Nack {
        conn: ConnId,
        ack: AckId,
        /// Why, when the consumer refuses it for good.
        poison: Option<String>,
        reply: oneshot::Sender<Result<(), RouterError>>,
    },
    CheckAck {
        conn: ConnId,
        ack: AckId,
        reply: oneshot::Sender<Result<(), RouterError>>,
    },
    Resume {
        conn: ConnId,
    },
    Restore {
        messages: Vec<Arc<Message>>,
    },
    Stats {
        reply: oneshot::Sender<Stats>,
    },
    Purge {
        name: String,
        delete: bool,
        reply: oneshot::Sender<Result<Purged, QueueActionError>>,
    },
    DropTopic {
        name: String,
    },
    Pull {
        conn: ConnId,
        id: String,
        reply: oneshot::Sender<bool>,
    },
    Unpull {
        conn: ConnId,
        id: String,
        reply: oneshot::Sender<bool>,
    },
    Browse {
        name: String,
        limit: usize,
        reply: oneshot::Sender<Result<Browsed, QueueActionError>>,
    },
    Take {
        name: String,
        wanted: Box<dyn Fn(&Message) -> bool + Send>,
        reply: oneshot::Sender<Result<Vec<Arc<Message>>, QueueActionError>>,
    },
}

/// The first messages waiting in a queue, as the console shows them.
#[derive(Debug, Default)]
pub struct Browsed {
    /// Messages waiting in all.
    pub waiting: usize,
    /// The first of them, in delivery order, each with whether it was
    /// delivered before.
    pub messages: Vec<(Arc<Message>, bool)>,
}

/// What purging (or deleting) a queue took out.
#[derive(Debug, Default)]
pub struct Purged {
    pub messages: usize,
    /// Journal ids of the stored ones, to be acknowledged there.
    pub stored: Vec<u64>,
}

/// Why a console action on a queue was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueActionError {
    #[error("no queue named {0:?}")]
    NotFound(String),
    #[error("queue {name:?} has {consumers} consumer(s); it can be deleted once they are gone")]
    HasConsumers { name: String, consumers: usize },
}

/// A handle on the router.
#[derive(Debug, Clone)]
pub struct Router {
    tx: mpsc::Sender<Op>,
    demand: watch::Receiver<u64>,
}

/// Router settings (see `config::Limits` for what each means).
#[derive(Debug, Clone, Copy)]
pub struct RouterLimits {
    /// Bytes of messages a queue holds before it holds back senders.
    pub queue_memory: usize,
    /// Bytes of messages the broker holds before it holds back senders.
    pub memory_limit: usize,
    /// The largest frame a client may send: a topic subscriber's backlog
    /// always has room for a couple of such messages.
    pub max_frame_size: usize,
    pub max_destinations: usize,
    pub max_subscriptions_per_connection: usize,
    pub max_inflight_bytes: usize,
}

impl Default for RouterLimits {
    fn default() -> Self {
        Self::from(&crate::config::Limits::default())
    }
}

impl From<&crate::config::Limits> for RouterLimits {
    fn from(l: &crate::config::Limits) -> Self {
        Self {
            queue_memory: l.queue_memory,
            memory_limit: l.memory_limit,
            max_frame_size: l.max_frame_size,
            max_destinations: l.max_destinations,
            max_subscriptions_per_connection: l.max_subscriptions_per_connection,
            max_inflight_bytes: l.max_inflight_bytes,
        }
    }
}

impl RouterLimits {
    /// (messages, bytes) a topic subscriber may lag behind while it reads.
    fn topic_backlog(&self) -> (usize, usize) {
        (
            TOPIC_BACKLOG_MESSAGES,
            TOPIC_BACKLOG_BYTES.max(2 * self.max_frame_size),
        )
    }
}

impl Router {
    /// Starts the router task. What it gives up on (dead letters, expired
    /// messages) comes out of the receiver, for the journal to agree.
    pub fn start(
        limits: RouterLimits,
        policies: Policies,
    ) -> (Self, mpsc::UnboundedReceiver<Retired>) {
        let (tx, rx) = mpsc::channel(1024);
        let (demand_tx, demand) = watch::channel(0);
        let (retired, retirements) = mpsc::unbounded_channel();
        let state = state::State::new(limits, Arc::new(policies), demand_tx, retired);
        tokio::spawn(state.run(rx));
        (Self { tx, demand }, retirements)
    }

    async fn op(&self, op: Op) {
        // The router outlives every connection; a send fails only at exit.
        let _ = self.tx.send(op).await;
    }

    async fn ask<T>(&self, op: impl FnOnce(oneshot::Sender<T>) -> Op) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        self.op(op(reply)).await;
        answer.await.ok()
    }

    pub async fn register(&self, conn: ConnId, outbox: Outbox, info: ConnectionInfo) {
        self.op(Op::Register { conn, outbox, info }).await;
    }

    /// The connection is gone: what it had in flight is redelivered.
    pub async fn unregister(&self, conn: ConnId) {
        self.op(Op::Unregister { conn }).await;
    }

    pub async fn subscribe(
        &self,
        conn: ConnId,
        id: String,
        destination: Destination,
        consumer: Consumer,
    ) -> Result<(), RouterError> {
        self.ask(|reply| Op::Subscribe {
            conn,
            id,
            destination,
            consumer,
            network: None,
            reply,
        })
        .await
        .unwrap_or(Err(RouterError::Stopping))
    }

    /// A bridge's subscription: demand of the broker on its other side.
    pub async fn subscribe_network(
        &self,
        conn: ConnId,
        id: String,
        destination: Destination,
        link: NetworkLink,
    ) -> Result<(), RouterError> {
        self.ask(|reply| Op::Subscribe {
            conn,
            id,
            destination,
            consumer: Consumer {
                ack: AckMode::ClientIndividual,
                prefetch: 1000,
                selector: None,
            },
            network: Some(link),
            reply,
        })
        .await
        .unwrap_or(Err(RouterError::Stopping))
    }

    /// Where this broker has demand, leaving out what `exclude_peer`
    /// itself asked for: each destination with the fewest hops to a
    /// consumer (0: a consumer here).
    pub async fn demand(&self, exclude_peer: &str) -> Vec<(Destination, u32)> {
        let exclude_peer = exclude_peer.to_owned();
        self.ask(|reply| Op::Demand {
            exclude_peer,
            reply,
        })
        .await
        .unwrap_or_default()
    }

    /// Changes whenever a subscription comes or goes.
    pub fn demand_changes(&self) -> watch::Receiver<u64> {
        self.demand.clone()
    }

    pub async fn unsubscribe(&self, conn: ConnId, id: String) -> Result<(), RouterError> {
        self.ask(|reply| Op::Unsubscribe { conn, id, reply })
            .await
            .unwrap_or(Err(RouterError::Stopping))
    }

    /// Makes sure `destination` exists: an error once the broker has its
    /// maximum of destinations and this one is new.
    pub async fn ensure(&self, destination: Destination) -> Result<(), RouterError> {
        self.ask(|reply| Op::Ensure {
            destination,
            producer: None,
            reply,
        })
        .await
        .unwrap_or(Err(RouterError::Stopping))
    }

    /// `ensure`, for a connection about to send to `destination`: it
    /// counts as one of its producers until it goes.
    pub async fn ensure_for(
        &self,
        conn: ConnId,
        destination: Destination,
    ) -> Result<(), RouterError> {
        self.ask(|reply| Op::Ensure {
            destination,
            producer: Some(conn),
            reply,
        })
        .await
        .unwrap_or(Err(RouterError::Stopping))
    }

    /// The queues that take copies of what is sent to virtual topic
    /// `topic` (see [`virtual_topic_queue`]), in name order.
    pub async fn virtual_topic_queues(&self, topic: &str) -> Vec<Destination> {
        let topic = topic.to_owned();
        self.ask(|reply| Op::VirtualTopicQueues { topic, reply })
            .await
            .unwrap_or_default()
    }

    /// Routes a message; returns once the destination has accepted it
    /// (later when a queue, or the broker, is over its memory limit).
    pub async fn send(&self, message: Arc<Message>) {
        self.ask(|reply| Op::Send { message, reply }).await;
    }

    /// Acknowledges; returns the journal ids of stored messages acknowledged.
    pub async fn ack(&self, conn: ConnId, ack: AckId) -> Result<Vec<u64>, RouterError> {
        self.ask(|reply| Op::Ack {
            conn,
            ack,
            only: false,
            reply,
        })
        .await
        .unwrap_or(Err(RouterError::Stopping))
    }

    /// Acknowledges the one message named, even in a cumulative (`client`)
    /// subscription (JMS's individual acknowledgement).
    pub async fn ack_one(&self, conn: ConnId, ack: AckId) -> Result<Vec<u64>, RouterError> {
        self.ask(|reply| Op::Ack {
            conn,
            ack,
            only: true,
            reply,
        })
        .await
        .unwrap_or(Err(RouterError::Stopping))
    }

    pub async fn nack(&self, conn: ConnId, ack: AckId) -> Result<(), RouterError> {
        self.ask(|reply| Op::Nack {
            conn,
            ack,
            poison: None,
            reply,
        })
        .await
        .unwrap_or(Err(RouterError::Stopping))
    }

    /// A NACK for good: a queue's messages go to their dead-letter queue
    /// now, with `why` as the cause (a JMS client's poison acknowledgement).
    pub async fn poison(&self, conn: ConnId, ack: AckId, why: String) -> Result<(), RouterError> {
        self.ask(|reply| Op::Nack {
            conn,
            ack,
            poison: Some(why),
            reply,
        })
        .await
        .unwrap_or(Err(RouterError::Stopping))
    }

    /// Whether `ack` names a message delivered to `conn` and not yet
    /// acknowledged (an ACK held in a transaction is checked when it comes).
    pub async fn check_ack(&self, conn: ConnId, ack: AckId) -> Result<(), RouterError> {
        self.ask(|reply| Op::CheckAck { conn, ack, reply })
            .await
            .unwrap_or(Err(RouterError::Stopping))
    }

    pub async fn resume(&self, conn: ConnId) {
        self.op(Op::Resume { conn }).await;
    }

    /// Puts recovered messages back in their queues.
    pub async fn restore(&self, messages: Vec<Arc<Message>>) {
        self.op(Op::Restore { messages }).await;
    }

    pub async fn stats(&self) -> Stats {
        self.ask(|reply| Op::Stats { reply })
            .await
            .unwrap_or_default()
    }

    /// Takes every message waiting in queue `name` (not those delivered and
    /// awaiting an ack); with `delete`, the queue goes too, if it has no
    /// consumers. Held-back senders' messages are taken as well, and their
    /// senders released.
    pub async fn purge(&self, name: String, delete: bool) -> Result<Purged, QueueActionError> {
        let missing = QueueActionError::NotFound(name.clone());
        self.ask(|reply| Op::Purge {
            name,
            delete,
            reply,
        })
        .await
        .unwrap_or(Err(missing))
    }
}

impl Router {
    /// A pulling consumer (prefetch 0) asks for one message: true if it
    /// was delivered at once; else the ask stands until [`Self::unpull`].
    pub async fn pull(&self, conn: ConnId, id: String) -> bool {
        self.ask(|reply| Op::Pull { conn, id, reply })
            .await
            .unwrap_or(false)
    }

    /// Withdraws a standing pull: true if nothing was delivered for it.
    pub async fn unpull(&self, conn: ConnId, id: String) -> bool {
        self.ask(|reply| Op::Unpull { conn, id, reply })
            .await
            .unwrap_or(false)
    }

    /// Removes topic `name` (a temporary one whose connection went) once
    /// it has no subscribers.
    pub async fn drop_topic(&self, name: String) {
        self.op(Op::DropTopic { name }).await;
    }

    /// The first `limit` messages waiting in queue `name` (see [`Browsed`]).
    pub async fn browse(&self, name: String, limit: usize) -> Result<Browsed, QueueActionError> {
        let missing = QueueActionError::NotFound(name.clone());
        self.ask(|reply| Op::Browse { name, limit, reply })
            .await
            .unwrap_or(Err(missing))
    }

    /// Takes the messages waiting in queue `name` that `wanted` says (the
    /// caller makes the journal agree).
    pub async fn take(
        &self,
        name: String,
        wanted: impl Fn(&Message) -> bool + Send + 'static,
    ) -> Result<Vec<Arc<Message>>, QueueActionError> {
        let missing = QueueActionError::NotFound(name.clone());
        self.ask(|reply| Op::Take {
            name,
            wanted: Box::new(wanted),
            reply,
        })
        .await
        .unwrap_or(Err(missing))
    }
}

/// What a bridge's subscription stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkLink {
    /// The broker on the other side of the bridge.
    pub peer: String,
    /// How many brokers away the demand is (1: on the peer itself).
    pub hops: u32,
    /// How many brokers a message may cross in all.
    pub message_ttl: u32,
}

impl NetworkLink {
    /// Topic messages never go back along their path. A queue message goes
    /// back to a broker it crossed only when that broker itself has the
    /// consumer (a message forwarded to a broker whose consumers left flows
    /// back when demand moves, without bouncing through others). Nothing
    /// reaches more than `message_ttl` distinct brokers beyond its origin.
    pub fn may_forward(&self, message: &Message) -> bool {
        let path = message.path();
        let back = path.contains(&self.peer.as_str());
        if message.destination.kind == Kind::Topic {
            return !back && path.len() < self.message_ttl as usize;
        }
        let mut distinct: Vec<&str> = path.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if back {
            return self.hops == 1;
        }
        distinct.len() < self.message_ttl as usize
    }
}

/// A topic subscriber further behind than this, that took nothing for
/// [`SLOW_CONSUMER_GRACE`], is disconnected; four times further, at once.
const TOPIC_BACKLOG_MESSAGES: usize = 10_000;
const TOPIC_BACKLOG_BYTES: usize = 16 * 1024 * 1024;
/// How long a lagging topic subscriber may take nothing before it is
/// judged to have stopped reading.
pub const SLOW_CONSUMER_GRACE: Duration = Duration::from_secs(3);

/// RFC 3339 time for the console.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    time::OffsetDateTime::from(time)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
