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

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, warn};

pub use destination::{Destination, Filter, Kind};

/// A message as the router holds it.
#[derive(Debug)]
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
}

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

pub type ConnId = u64;

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
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueStats {
    pub name: String,
    pub pending: usize,
    pub consumers: usize,
    pub enqueued: u64,
    pub dequeued: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TopicStats {
    pub name: String,
    pub subscribers: usize,
    pub enqueued: u64,
    pub dequeued: u64,
}

/// Live figures for the console.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub queues: Vec<QueueStats>,
    pub topics: Vec<TopicStats>,
    pub connections: Vec<ConnectionInfo>,
}

/// Bytes of messages a connection's outbox holds before the router holds
/// the rest back (one message always fits), whatever their count: a slow
/// reader pins at most this much beyond its prefetch window.
pub const OUTBOX_BYTES: usize = 1024 * 1024;

/// A connection's way to receive deliveries: at most `capacity` of them
/// and [`OUTBOX_BYTES`] of messages.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Delivery>,
    bytes: Arc<AtomicUsize>,
    /// Set by the router when the outbox was full; the connection asks to
    /// resume once it has written what was queued.
    pub stalled: Arc<AtomicBool>,
    /// Set by the router when it drops a slow subscriber's connection.
    pub evicted: Arc<AtomicBool>,
}

/// The connection's end of its [`Outbox`].
#[derive(Debug)]
pub struct OutboxReceiver {
    rx: mpsc::Receiver<Delivery>,
    bytes: Arc<AtomicUsize>,
}

impl Outbox {
    pub fn new(capacity: usize) -> (Self, OutboxReceiver) {
        let (tx, rx) = mpsc::channel(capacity);
        let bytes = Arc::new(AtomicUsize::new(0));
        let outbox = Self {
            tx,
            bytes: bytes.clone(),
            stalled: Arc::new(AtomicBool::new(false)),
            evicted: Arc::new(AtomicBool::new(false)),
        };
        (outbox, OutboxReceiver { rx, bytes })
    }

    fn offer(&self, delivery: Delivery) -> Result<(), mpsc::error::TrySendError<Delivery>> {
        let size = delivery.message.size();
        // Counted before it can be taken out, so the count never goes below zero.
        let before = self.bytes.fetch_add(size, Ordering::AcqRel);
        if before > 0 && before + size > OUTBOX_BYTES {
            self.bytes.fetch_sub(size, Ordering::AcqRel);
            return Err(mpsc::error::TrySendError::Full(delivery));
        }
        self.tx.try_send(delivery).inspect_err(|_| {
            self.bytes.fetch_sub(size, Ordering::AcqRel);
        })
    }
}

impl OutboxReceiver {
    pub async fn recv(&mut self) -> Option<Delivery> {
        let delivery = self.rx.recv().await?;
        self.taken(&delivery);
        Some(delivery)
    }

    pub fn try_recv(&mut self) -> Option<Delivery> {
        let delivery = self.rx.try_recv().ok()?;
        self.taken(&delivery);
        Some(delivery)
    }

    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    fn taken(&self, delivery: &Delivery) {
        self.bytes
            .fetch_sub(delivery.message.size(), Ordering::AcqRel);
    }
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
        ack: AckMode,
        prefetch: usize,
        network: Option<NetworkLink>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Demand {
        exclude_peer: String,
        reply: oneshot::Sender<Vec<(Destination, u32)>>,
    },
    Unsubscribe {
        conn: ConnId,
        id: String,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Send {
        message: Arc<Message>,
        reply: oneshot::Sender<()>,
    },
    Ack {
        conn: ConnId,
        ack: String,
        reply: oneshot::Sender<Result<Vec<u64>, String>>,
    },
    Nack {
        conn: ConnId,
        ack: String,
        reply: oneshot::Sender<Result<(), String>>,
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

/// Router settings.
#[derive(Debug, Clone, Copy)]
pub struct RouterLimits {
    /// Bytes of pending messages a queue holds before it holds back senders.
    pub queue_memory: usize,
    /// The largest frame a client may send: a topic subscriber's backlog
    /// always has room for a couple of such messages.
    pub max_frame_size: usize,
}

impl Default for RouterLimits {
    fn default() -> Self {
        Self {
            queue_memory: 64 * 1024 * 1024,
            max_frame_size: 4 * 1024 * 1024,
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
    /// Starts the router task.
    pub fn start(limits: RouterLimits) -> Self {
        let (tx, rx) = mpsc::channel(1024);
        let (demand_tx, demand) = watch::channel(0);
        let state = State {
            demand: demand_tx,
            limits,
            queues: HashMap::new(),
            topics: HashMap::new(),
            conns: HashMap::new(),
            subs: HashMap::new(),
            next_sub: 1,
        };
        tokio::spawn(state.run(rx));
        Self { tx, demand }
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
        ack: AckMode,
        prefetch: usize,
    ) -> Result<(), String> {
        self.ask(|reply| Op::Subscribe {
            conn,
            id,
            destination,
            ack,
            prefetch,
            network: None,
            reply,
        })
        .await
        .unwrap_or_else(|| Err("the broker is stopping".into()))
    }

    /// A bridge's subscription: demand of the broker on its other side.
    pub async fn subscribe_network(
        &self,
        conn: ConnId,
        id: String,
        destination: Destination,
        link: NetworkLink,
    ) -> Result<(), String> {
        self.ask(|reply| Op::Subscribe {
            conn,
            id,
            destination,
            ack: AckMode::ClientIndividual,
            prefetch: 1000,
            network: Some(link),
            reply,
        })
        .await
        .unwrap_or_else(|| Err("the broker is stopping".into()))
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

    pub async fn unsubscribe(&self, conn: ConnId, id: String) -> Result<(), String> {
        self.ask(|reply| Op::Unsubscribe { conn, id, reply })
            .await
            .unwrap_or_else(|| Err("the broker is stopping".into()))
    }

    /// Routes a message; returns once the destination has accepted it
    /// (later when a queue is over its memory limit).
    pub async fn send(&self, message: Arc<Message>) {
        self.ask(|reply| Op::Send { message, reply }).await;
    }

    /// Acknowledges; returns the journal ids of stored messages acknowledged.
    pub async fn ack(&self, conn: ConnId, ack: String) -> Result<Vec<u64>, String> {
        self.ask(|reply| Op::Ack { conn, ack, reply })
            .await
            .unwrap_or_else(|| Err("the broker is stopping".into()))
    }

    pub async fn nack(&self, conn: ConnId, ack: String) -> Result<(), String> {
        self.ask(|reply| Op::Nack { conn, ack, reply })
            .await
            .unwrap_or_else(|| Err("the broker is stopping".into()))
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

struct Pending {
    message: Arc<Message>,
    redelivered: bool,
}

#[derive(Default)]
struct Queue {
    messages: VecDeque<Pending>,
    bytes: usize,
    consumers: Vec<u64>,
    next: usize,
    enqueued: u64,
    dequeued: u64,
    /// Senders held back while the queue is over its memory limit.
    parked: VecDeque<(Arc<Message>, oneshot::Sender<()>)>,
}

impl Queue {
    /// Puts messages that were delivered but not acknowledged back at the
    /// front, in their order, marked redelivered.
    fn give_back(&mut self, messages: impl IntoIterator<Item = Arc<Message>>) {
        let messages: Vec<Arc<Message>> = messages.into_iter().collect();
        for message in messages.into_iter().rev() {
            self.bytes += message.size();
            self.messages.push_front(Pending {
                message,
                redelivered: true,
            });
        }
    }
}

#[derive(Default)]
struct Topic {
    subscribers: Vec<u64>,
    enqueued: u64,
    dequeued: u64,
}

struct Conn {
    outbox: Outbox,
    info: ConnectionInfo,
    subs: Vec<u64>,
}

struct Subscription {
    conn: ConnId,
    id: String,
    destination: Destination,
    ack: AckMode,
    prefetch: usize,
    /// Delivered, not yet acknowledged (client modes), in delivery order.
    inflight: VecDeque<Arc<Message>>,
    /// Topic messages waiting for room in the connection's outbox.
    backlog: VecDeque<Arc<Message>>,
    backlog_bytes: usize,
    /// When the subscriber last took a message from its backlog, or had
    /// none waiting: how long it has been stuck.
    progress: Instant,
    /// Set for a bridge's subscription: demand of another broker.
    network: Option<NetworkLink>,
}

impl Subscription {
    /// A topic subscriber further behind than `max_messages` or `max_bytes`
    /// that took nothing for [`SLOW_CONSUMER_GRACE`] (or four times further
    /// behind, whatever it does).
    fn lagging(&self, max_messages: usize, max_bytes: usize) -> bool {
        let (count, bytes) = (self.backlog.len(), self.backlog_bytes);
        if count > 4 * max_messages || bytes > 4 * max_bytes {
            return true;
        }
        (count > max_messages || bytes > max_bytes)
            && self.progress.elapsed() >= SLOW_CONSUMER_GRACE
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

struct State {
    demand: watch::Sender<u64>,
    limits: RouterLimits,
    queues: HashMap<String, Queue>,
    topics: HashMap<String, Topic>,
    conns: HashMap<ConnId, Conn>,
    subs: HashMap<u64, Subscription>,
    next_sub: u64,
}

/// `ack` header values: `{subscription key}-{message seq}`.
fn ack_id(sub: u64, seq: u64) -> String {
    format!("{sub}-{seq}")
}

fn parse_ack(text: &str) -> Option<(u64, u64)> {
    let (sub, seq) = text.split_once('-')?;
    Some((sub.parse().ok()?, seq.parse().ok()?))
}

impl State {
    async fn run(mut self, mut rx: mpsc::Receiver<Op>) {
        while let Some(op) = rx.recv().await {
            self.handle(op);
        }
    }

    fn handle(&mut self, op: Op) {
        match op {
            Op::Register { conn, outbox, info } => {
                self.conns.insert(
                    conn,
                    Conn {
                        outbox,
                        info,
                        subs: Vec::new(),
                    },
                );
            }
            Op::Unregister { conn } => {
                self.unregister(conn);
                self.demand_changed();
            }
            Op::Subscribe {
                conn,
                id,
                destination,
                ack,
                prefetch,
                network,
                reply,
            } => {
                let _ = reply.send(self.subscribe(conn, id, destination, ack, prefetch, network));
                self.demand_changed();
            }
            Op::Demand {
                exclude_peer,
                reply,
            } => {
                let mut best: HashMap<Destination, u32> = HashMap::new();
                for sub in self.subs.values() {
                    let hops = match &sub.network {
                        None => 0,
                        Some(link) if link.peer == exclude_peer => continue,
                        Some(link) => link.hops,
                    };
                    let entry = best.entry(sub.destination.clone()).or_insert(hops);
                    *entry = (*entry).min(hops);
                }
                let mut demand: Vec<_> = best.into_iter().collect();
                demand.sort();
                let _ = reply.send(demand);
            }
            Op::Unsubscribe { conn, id, reply } => {
                let key = self.conns.get(&conn).and_then(|c| {
                    c.subs
                        .iter()
                        .copied()
                        .find(|k| self.subs.get(k).is_some_and(|s| s.id == id))
                });
                let result = match key {
                    Some(key) => {
                        self.remove_subscription(key);
                        self.demand_changed();
                        Ok(())
                    }
                    None => Err(format!("no subscription with id {id:?}")),
                };
                let _ = reply.send(result);
            }
            Op::Send { message, reply } => self.route(message, reply),
            Op::Ack { conn, ack, reply } => {
                let _ = reply.send(self.ack(conn, &ack));
            }
            Op::Nack { conn, ack, reply } => {
                let _ = reply.send(self.nack(conn, &ack));
            }
            Op::Resume { conn } => {
                if let Some(c) = self.conns.get(&conn) {
                    c.outbox.stalled.store(false, Ordering::Release);
                    let subs: Vec<(u64, Kind, String)> = c
                        .subs
                        .iter()
                        .filter_map(|k| {
                            self.subs
                                .get(k)
                                .map(|s| (*k, s.destination.kind, s.destination.name.clone()))
                        })
                        .collect();
                    for (key, kind, name) in subs {
                        match kind {
                            Kind::Queue => self.dispatch(&name),
                            Kind::Topic => self.drain_topic_subscription(key),
                        }
                    }
                }
            }
            Op::Restore { messages } => {
                let mut names = Vec::new();
                for message in messages {
                    let name = message.destination.name.clone();
                    let queue = self.queues.entry(name.clone()).or_default();
                    queue.bytes += message.size();
                    queue.messages.push_back(Pending {
                        message,
                        redelivered: true,
                    });
                    names.push(name);
                }
                names.dedup();
                for name in names {
                    self.dispatch(&name);
                }
            }
            Op::Stats { reply } => {
                let _ = reply.send(self.stats());
            }
            Op::Purge {
                name,
                delete,
                reply,
            } => {
                let _ = reply.send(self.purge(&name, delete));
            }
        }
    }

    fn demand_changed(&self) {
        self.demand.send_modify(|v| *v += 1);
    }

    fn subscribe(
        &mut self,
        conn: ConnId,
        id: String,
        destination: Destination,
        ack: AckMode,
        prefetch: usize,
        network: Option<NetworkLink>,
    ) -> Result<(), String> {
        let Some(c) = self.conns.get_mut(&conn) else {
            return Err("not connected".into());
        };
        if c.subs
            .iter()
            .any(|k| self.subs.get(k).is_some_and(|s| s.id == id))
        {
            return Err(format!(
                "subscription id {id:?} is already in use on this connection"
            ));
        }
        let key = self.next_sub;
        self.next_sub += 1;
        c.subs.push(key);
        c.info.subscriptions = c.subs.len();
        let name = destination.name.clone();
        let kind = destination.kind;
        self.subs.insert(
            key,
            Subscription {
                conn,
                id,
                destination,
                ack,
                prefetch: prefetch.max(1),
                inflight: VecDeque::new(),
                backlog: VecDeque::new(),
                backlog_bytes: 0,
                progress: Instant::now(),
                network,
            },
        );
        match kind {
            Kind::Queue => {
                self.queues
                    .entry(name.clone())
                    .or_default()
                    .consumers
                    .push(key);
                self.dispatch(&name);
            }
            Kind::Topic => self.topics.entry(name).or_default().subscribers.push(key),
        }
        Ok(())
    }

    fn unregister(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get(&conn) {
            for key in c.subs.clone() {
                self.remove_subscription(key);
            }
        }
        self.conns.remove(&conn);
    }

    /// Removes a subscription; its unacknowledged queue messages go back
    /// to the front of their queue, marked redelivered.
    fn remove_subscription(&mut self, key: u64) {
        let Some(sub) = self.subs.remove(&key) else {
            return;
        };
        if let Some(c) = self.conns.get_mut(&sub.conn) {
            c.subs.retain(|k| *k != key);
            c.info.subscriptions = c.subs.len();
        }
        let name = sub.destination.name.clone();
        match sub.destination.kind {
            Kind::Queue => {
                if let Some(q) = self.queues.get_mut(&name) {
                    q.consumers.retain(|k| *k != key);
                    q.give_back(sub.inflight);
                }
                self.dispatch(&name);
            }
            Kind::Topic => {
                if let Some(t) = self.topics.get_mut(&name) {
                    t.subscribers.retain(|k| *k != key);
                }
            }
        }
    }

    fn route(&mut self, message: Arc<Message>, reply: oneshot::Sender<()>) {
        let name = message.destination.name.clone();
        match message.destination.kind {
            Kind::Queue => {
                let limit = self.limits.queue_memory;
                let queue = self.queues.entry(name.clone()).or_default();
                if queue.bytes >= limit {
                    queue.parked.push_back((message, reply));
                    debug!(queue = %name, "queue over its memory limit: holding back a sender");
                    self.dispatch(&name);
                    return;
                }
                queue.enqueued += 1;
                queue.bytes += message.size();
                queue.messages.push_back(Pending {
                    message,
                    redelivered: false,
                });
                let _ = reply.send(());
                self.dispatch(&name);
            }
            Kind::Topic => {
                let _ = reply.send(());
                self.publish(&name, message);
            }
        }
    }

    fn publish(&mut self, name: &str, message: Arc<Message>) {
        let Some(topic) = self.topics.get_mut(name) else {
            return;
        };
        topic.enqueued += 1;
        let (max_messages, max_bytes) = self.limits.topic_backlog();
        let mut slow = Vec::new();
        for key in topic.subscribers.clone() {
            let Some(sub) = self.subs.get_mut(&key) else {
                continue;
            };
            if sub
                .network
                .as_ref()
                .is_some_and(|n| !n.may_forward(&message))
            {
                continue;
            }
            if sub.backlog.is_empty() {
                sub.progress = Instant::now();
            }
            sub.backlog_bytes += message.size();
            sub.backlog.push_back(message.clone());
            self.drain_topic_subscription(key);
            if let Some(sub) = self.subs.get(&key) {
                if sub.lagging(max_messages, max_bytes) {
                    slow.push(sub.conn);
                }
            }
        }
        for conn in slow {
            warn!(conn, topic = %name, "slow topic subscriber: disconnecting it");
            if let Some(c) = self.conns.get(&conn) {
                // The connection sees a closed outbox and ends with an ERROR.
                c.outbox.evicted.store(true, Ordering::Release);
            }
            self.unregister(conn);
        }
    }

    /// Moves a topic subscription's backlog into its connection's outbox,
    /// as far as the outbox and the prefetch window allow.
    fn drain_topic_subscription(&mut self, key: u64) {
        let Some(sub) = self.subs.get_mut(&key) else {
            return;
        };
        let Some(conn) = self.conns.get(&sub.conn) else {
            return;
        };
        let acks = sub.ack != AckMode::Auto;
        let mut delivered = 0;
        if sub.backlog.is_empty() {
            sub.progress = Instant::now();
        }
        while let Some(message) = sub.backlog.front() {
            if acks && sub.inflight.len() >= sub.prefetch {
                break;
            }
            let delivery = Delivery {
                subscription: sub.id.clone(),
                ack: acks.then(|| ack_id(key, message.seq)),
                message: message.clone(),
                redelivered: false,
                ack_mode: sub.ack,
            };
            match conn.outbox.offer(delivery) {
                Ok(()) => {
                    let message = sub.backlog.pop_front().expect("front exists");
                    sub.backlog_bytes = sub.backlog_bytes.saturating_sub(message.size());
                    if acks {
                        sub.inflight.push_back(message);
                    }
                    delivered += 1;
                    sub.progress = Instant::now();
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    conn.outbox.stalled.store(true, Ordering::Release);
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => break,
            }
        }
        let name = sub.destination.name.clone();
        if let Some(t) = self.topics.get_mut(&name) {
            t.dequeued += delivered;
        }
    }

    /// Gives a queue's messages to consumers with room, round robin,
    /// local consumers first; network consumers (bridges) get what no local
    /// consumer can take. Held-back senders come in as room frees up.
    fn dispatch(&mut self, name: &str) {
        loop {
            self.deliver(name, false);
            self.deliver(name, true);
            let Some(queue) = self.queues.get_mut(name) else {
                return;
            };
            let mut released = false;
            while queue.bytes < self.limits.queue_memory {
                let Some((message, reply)) = queue.parked.pop_front() else {
                    break;
                };
                queue.enqueued += 1;
                queue.bytes += message.size();
                queue.messages.push_back(Pending {
                    message,
                    redelivered: false,
                });
                let _ = reply.send(());
                released = true;
            }
            if !released {
                return;
            }
        }
    }

    /// One pass over a queue's local (or network) consumers.
    fn deliver(&mut self, name: &str, network: bool) {
        let Some(queue) = self.queues.get_mut(name) else {
            return;
        };
        let eligible: Vec<u64> = queue
            .consumers
            .iter()
            .copied()
            .filter(|k| {
                self.subs
                    .get(k)
                    .is_some_and(|s| s.network.is_some() == network)
            })
            .collect();
        if eligible.is_empty() {
            return;
        }
        let mut skipped = 0;
        while !queue.messages.is_empty() && skipped < eligible.len() {
            let key = eligible[queue.next % eligible.len()];
            queue.next = queue.next.wrapping_add(1);
            let Some(sub) = self.subs.get_mut(&key) else {
                skipped += 1;
                continue;
            };
            let Some(conn) = self.conns.get(&sub.conn) else {
                skipped += 1;
                continue;
            };
            let acks = sub.ack != AckMode::Auto;
            let full = acks && sub.inflight.len() >= sub.prefetch;
            let head_ok = queue.messages.front().is_some_and(|p| {
                sub.network
                    .as_ref()
                    .is_none_or(|n| n.may_forward(&p.message))
            });
            if full || !head_ok || conn.outbox.stalled.load(Ordering::Acquire) {
                skipped += 1;
                continue;
            }
            let Some(pending) = queue.messages.pop_front() else {
                break;
            };
            let delivery = Delivery {
                subscription: sub.id.clone(),
                ack: acks.then(|| ack_id(key, pending.message.seq)),
                message: pending.message.clone(),
                redelivered: pending.redelivered,
                ack_mode: sub.ack,
            };
            match conn.outbox.offer(delivery) {
                Ok(()) => {
                    skipped = 0;
                    queue.bytes = queue.bytes.saturating_sub(pending.message.size());
                    if acks {
                        sub.inflight.push_back(pending.message);
                    } else {
                        queue.dequeued += 1;
                    }
                }
                Err(e) => {
                    queue.messages.push_front(pending);
                    if matches!(e, mpsc::error::TrySendError::Full(_)) {
                        conn.outbox.stalled.store(true, Ordering::Release);
                    }
                    skipped += 1;
                }
            }
        }
    }

    fn find(&self, conn: ConnId, ack: &str) -> Result<(u64, u64), String> {
        let (key, seq) = parse_ack(ack)
            .or_else(|| {
                // STOMP 1.0/1.1 clients acknowledge by message-id.
                let seq = ack.rsplit('-').next()?.parse().ok()?;
                let c = self.conns.get(&conn)?;
                let key = c.subs.iter().copied().find(|k| {
                    self.subs
                        .get(k)
                        .is_some_and(|s| s.inflight.iter().any(|m| m.seq == seq))
                })?;
                Some((key, seq))
            })
            .ok_or_else(|| format!("no message to acknowledge with id {ack:?}"))?;
        match self.subs.get(&key) {
            Some(sub) if sub.conn == conn && sub.inflight.iter().any(|m| m.seq == seq) => {
                Ok((key, seq))
            }
            _ => Err(format!("no message to acknowledge with id {ack:?}")),
        }
    }

    fn ack(&mut self, conn: ConnId, ack: &str) -> Result<Vec<u64>, String> {
        let (key, seq) = self.find(conn, ack)?;
        let Some(sub) = self.subs.get_mut(&key) else {
            return Err("subscription gone".into());
        };
        let acked: Vec<Arc<Message>> = match sub.ack {
            AckMode::ClientIndividual => {
                let at = sub.inflight.iter().position(|m| m.seq == seq).unwrap_or(0);
                sub.inflight.remove(at).into_iter().collect()
            }
            // Cumulative: this message and every one delivered before it.
            _ => {
                let at = sub.inflight.iter().position(|m| m.seq == seq).unwrap_or(0);
                sub.inflight.drain(..=at).collect()
            }
        };
        let name = sub.destination.name.clone();
        let kind = sub.destination.kind;
        let count = acked.len() as u64;
        match kind {
            Kind::Queue => {
                if let Some(q) = self.queues.get_mut(&name) {
                    q.dequeued += count;
                }
                self.dispatch(&name);
            }
            Kind::Topic => self.drain_topic_subscription(key),
        }
        Ok(acked.iter().filter(|m| m.stored).map(|m| m.seq).collect())
    }

    /// Gives messages back: in `client` mode the one named and every one
    /// delivered before it (cumulative, as ACK), in `client-individual`
    /// mode that one only. Queue messages go back to the front of their
    /// queue in their order, marked redelivered; topic messages are dropped.
    fn nack(&mut self, conn: ConnId, ack: &str) -> Result<(), String> {
        let (key, seq) = self.find(conn, ack)?;
        let Some(sub) = self.subs.get_mut(&key) else {
            return Err("subscription gone".into());
        };
        let at = sub.inflight.iter().position(|m| m.seq == seq).unwrap_or(0);
        let returned: Vec<Arc<Message>> = match sub.ack {
            AckMode::ClientIndividual => sub.inflight.remove(at).into_iter().collect(),
            _ => sub.inflight.drain(..=at).collect(),
        };
        let name = sub.destination.name.clone();
        match sub.destination.kind {
            Kind::Queue => {
                if let Some(q) = self.queues.get_mut(&name) {
                    q.give_back(returned);
                }
                self.dispatch(&name);
            }
            Kind::Topic => {
                if let Some(t) = self.topics.get_mut(&name) {
                    t.dequeued += returned.len() as u64;
                }
                self.drain_topic_subscription(key);
            }
        }
        Ok(())
    }

    fn purge(&mut self, name: &str, delete: bool) -> Result<Purged, QueueActionError> {
        let queue = self
            .queues
            .get_mut(name)
            .ok_or_else(|| QueueActionError::NotFound(name.to_owned()))?;
        if delete && !queue.consumers.is_empty() {
            return Err(QueueActionError::HasConsumers {
                name: name.to_owned(),
                consumers: queue.consumers.len(),
            });
        }
        let mut purged = Purged::default();
        let mut take = |message: &Message| {
            purged.messages += 1;
            if message.stored {
                purged.stored.push(message.seq);
            }
        };
        for pending in queue.messages.drain(..) {
            queue.bytes -= pending.message.size();
            take(&pending.message);
        }
        for (message, sender) in queue.parked.drain(..) {
            queue.enqueued += 1;
            take(&message);
            let _ = sender.send(());
        }
        queue.dequeued += purged.messages as u64;
        if delete {
            self.queues.remove(name);
        }
        Ok(purged)
    }

    fn stats(&self) -> Stats {
        let mut queues: Vec<QueueStats> = self
            .queues
            .iter()
            .map(|(name, q)| QueueStats {
                name: name.clone(),
                pending: q.messages.len()
                    + q.parked.len()
                    + q.consumers
                        .iter()
                        .filter_map(|k| self.subs.get(k))
                        .map(|s| s.inflight.len())
                        .sum::<usize>(),
                consumers: q.consumers.len(),
                enqueued: q.enqueued,
                dequeued: q.dequeued,
            })
            .collect();
        queues.sort_by(|a, b| a.name.cmp(&b.name));
        let mut topics: Vec<TopicStats> = self
            .topics
            .iter()
            .map(|(name, t)| TopicStats {
                name: name.clone(),
                subscribers: t.subscribers.len(),
                enqueued: t.enqueued,
                dequeued: t.dequeued,
            })
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        let mut connections: Vec<ConnectionInfo> =
            self.conns.values().map(|c| c.info.clone()).collect();
        connections.sort_by_key(|c| c.id);
        Stats {
            queues,
            topics,
            connections,
        }
    }
}

/// RFC 3339 time for the console.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    time::OffsetDateTime::from(time)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
