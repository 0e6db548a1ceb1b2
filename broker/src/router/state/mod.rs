//! The router's state and the one task that owns it: queues, topics,
//! connections, subscriptions, and the bytes of messages they hold.
//!
//! Memory is counted where messages wait: a queue's bytes are its waiting
//! messages and those delivered but not yet acknowledged; a topic
//! subscriber's are its backlog and its unacknowledged deliveries. Their
//! sum is the broker's memory use. A queue over `queue_memory`, or the
//! broker over `memory_limit`, holds the next sender's message back (its
//! SEND is receipted once the message is taken) until acknowledgements
//! make room; a message is measured before it is taken, and always fits
//! an empty queue. A connection holds at most `max_inflight_bytes` of
//! unacknowledged deliveries and its prefetch window: beyond, its
//! subscriptions wait.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::debug;

mod acks;
mod lanes;
mod queue;
mod retire;
#[cfg(test)]
mod tests;
mod topic;

use super::{
    AckId, AckMode, ConnId, ConnectionInfo, Consumer, Destination, Kind, MemoryStats, Message,
    NetworkLink, Op, Outbox, Policies, QueueStats, Retired, RouterError, RouterLimits, Stats,
    SubKey, TopicStats, SLOW_CONSUMER_GRACE,
};

/// A sender waiting for room, with the reply that releases it.
type Held = (Arc<Message>, oneshot::Sender<()>);

struct Pending {
    message: Arc<Message>,
    redelivered: bool,
}

#[derive(Default)]
struct Queue {
    messages: lanes::Lanes,
    /// Waiting and delivered-but-unacknowledged messages, in bytes.
    bytes: usize,
    consumers: Vec<SubKey>,
    next: usize,
    enqueued: u64,
    dequeued: u64,
    expired: u64,
    dead_lettered: u64,
    /// Senders held back while the queue is over its memory limit.
    parked: VecDeque<Held>,
    /// How often each message that came back undelivered did (only those:
    /// empty while every delivery is acknowledged).
    failures: HashMap<u64, u32>,
    /// Refused messages waiting out their redelivery delay, with when
    /// they are due (their bytes still count as the queue's).
    delayed: Vec<(Instant, Arc<Message>)>,
    /// Message groups (`JMSXGroupID`) and the consumer that has each, in
    /// the order they were given out.
    groups: HashMap<Arc<str>, SubKey>,
    group_order: VecDeque<Arc<str>>,
}

impl Queue {
    /// Puts messages that were delivered but not acknowledged back at the
    /// front, in their order, marked redelivered (their bytes were never
    /// given back).
    fn give_back(&mut self, messages: impl IntoIterator<Item = Arc<Message>>) {
        let messages: Vec<Arc<Message>> = messages.into_iter().collect();
        for message in messages.into_iter().rev() {
            self.messages.push_front(Pending {
                message,
                redelivered: true,
            });
        }
    }

    /// Whether a message of `size` bytes may enter now: always into an
    /// empty queue, otherwise within `limit`.
    fn has_room(&self, size: usize, limit: usize) -> bool {
        self.bytes == 0 || self.bytes + size <= limit
    }
}

#[derive(Default)]
struct Topic {
    subscribers: Vec<SubKey>,
    enqueued: u64,
    dequeued: u64,
    expired: u64,
}

struct Conn {
    outbox: Outbox,
    info: ConnectionInfo,
    /// Subscription id → key.
    subs: HashMap<String, SubKey>,
    /// Destinations it sent to (at most the broker's destinations).
    produced: BTreeSet<Destination>,
    /// Bytes delivered in client ack modes and not yet acknowledged.
    inflight_bytes: usize,
    /// A delivery waited for `inflight_bytes` to go down: acknowledging
    /// must look at every subscription of the connection again.
    starved: bool,
}

struct Subscription {
    conn: ConnId,
    id: String,
    destination: Destination,
    ack: AckMode,
    prefetch: usize,
    /// Messages asked for beyond the prefetch window (a pulling consumer's
    /// MessagePull): used up as they are delivered.
    credit: usize,
    selector: Option<Arc<crate::selector::Selector>>,
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

    fn acks(&self) -> bool {
        self.ack != AckMode::Auto
    }
}

/// `ack` header values: `{subscription key}-{message seq}`.
fn ack_id(sub: SubKey, seq: u64) -> String {
    AckId::header(sub, seq)
}

fn total_size(messages: &[Arc<Message>]) -> usize {
    messages.iter().map(|m| m.size()).sum()
}

pub(super) struct State {
    demand: watch::Sender<u64>,
    limits: RouterLimits,
    queues: HashMap<String, Queue>,
    topics: HashMap<String, Topic>,
    /// Topics subscribed to by a wildcard name (`prices.>`), with their
    /// filter: a message to a topic they match reaches their subscribers.
    wildcards: HashMap<String, crate::router::Filter>,
    conns: HashMap<ConnId, Conn>,
    subs: HashMap<SubKey, Subscription>,
    next_sub: u64,
    /// Bytes of messages held, in all.
    memory: usize,
    /// Senders held back while the broker is over its memory limit, in
    /// the order they came.
    held: VecDeque<Held>,
    policies: Arc<Policies>,
    /// Where messages given up on go (see `Retired`).
    retired: mpsc::UnboundedSender<Retired>,
    /// Queues with messages waiting out a redelivery delay, and the
    /// earliest time one is due.
    delayed: HashSet<String>,
    next_due: Option<Instant>,
    /// Set once a message with an expiry time arrived: queues are then
    /// swept for expired messages every `EXPIRY_SWEEP`.
    next_sweep: Option<Instant>,
    /// Scheduled messages by when they are due (then by sequence).
    scheduled: std::collections::BTreeMap<(Instant, u64), Arc<Message>>,
}

/// How often queues are swept for messages that expired while waiting.
const EXPIRY_SWEEP: Duration = Duration::from_secs(1);

/// Milliseconds since the epoch, as `expires` headers count.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl State {
    pub(super) fn new(
        limits: RouterLimits,
        policies: Arc<Policies>,
        demand: watch::Sender<u64>,
        retired: mpsc::UnboundedSender<Retired>,
    ) -> Self {
        Self {
            demand,
            limits,
            queues: HashMap::new(),
            topics: HashMap::new(),
            wildcards: HashMap::new(),
            conns: HashMap::new(),
            subs: HashMap::new(),
            next_sub: 1,
            memory: 0,
            held: VecDeque::new(),
            policies,
            retired,
            delayed: HashSet::new(),
            next_due: None,
            next_sweep: None,
            scheduled: std::collections::BTreeMap::new(),
        }
    }

    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Op>) {
        // One timer for the next redelivery, sweep or scheduled message,
        // moved only when that time changes (not made again for every op).
        let timer = tokio::time::sleep_until(Instant::now());
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        loop {
            let scheduled = self.scheduled.keys().next().map(|(at, _)| *at);
            let wake = [self.next_due, self.next_sweep, scheduled]
                .into_iter()
                .flatten()
                .min();
            if wake != armed {
                if let Some(at) = wake {
                    timer.as_mut().reset(at);
                }
                armed = wake;
            }
            tokio::select! {
                op = rx.recv() => match op {
                    Some(op) => self.handle(op),
                    None => return,
                },
                () = &mut timer, if armed.is_some() => {
                    armed = None;
                    self.tick(Instant::now());
                }
            }
        }
    }

    pub(super) fn handle(&mut self, op: Op) {
        match op {
            Op::Register { conn, outbox, info } => {
                self.conns.insert(
                    conn,
                    Conn {
                        outbox,
                        info,
                        subs: HashMap::new(),
                        produced: BTreeSet::new(),
                        inflight_bytes: 0,
                        starved: false,
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
                consumer,
                network,
                reply,
            } => {
                let _ = reply.send(self.subscribe(conn, id, destination, consumer, network));
                self.demand_changed();
            }
            Op::Demand {
                exclude_peer,
                reply,
            } => {
                let _ = reply.send(self.demand(&exclude_peer));
            }
            Op::Unsubscribe { conn, id, reply } => {
                let key = self.conns.get(&conn).and_then(|c| c.subs.get(&id).copied());
                let result = match key {
                    Some(key) => {
                        self.remove_subscriptions(vec![key]);
                        self.demand_changed();
                        Ok(())
                    }
                    None => Err(RouterError::NoSubscription(id)),
                };
                let _ = reply.send(result);
            }
            Op::VirtualTopicQueues { topic, reply } => {
                let mut queues: Vec<Destination> = self
                    .queues
                    .keys()
                    .filter(|q| super::virtual_topic_queue(q, &topic))
                    .map(|q| Destination {
                        kind: Kind::Queue,
                        name: q.clone(),
                    })
                    .collect();
                queues.sort();
                let _ = reply.send(queues);
            }
            Op::Ensure {
                destination,
                producer,
                reply,
            } => {
                let ensured = self.ensure(&destination);
                if let (Ok(()), Some(conn)) = (&ensured, producer) {
                    if let Some(conn) = self.conns.get_mut(&conn) {
                        conn.produced.insert(destination);
                    }
                }
                let _ = reply.send(ensured);
            }
            Op::Send { message, reply } => self.route(message, reply),
            Op::Ack {
                conn,
                ack,
                only,
                reply,
            } => {
                let _ = reply.send(self.ack(conn, ack, only));
            }
            Op::Nack {
                conn,
                ack,
                poison,
                reply,
            } => {
                let _ = reply.send(self.nack(conn, ack, poison.as_deref()));
            }
            Op::CheckAck { conn, ack, reply } => {
                let _ = reply.send(self.find(conn, ack).map(|_| ()));
            }
            Op::Resume { conn } => self.resume(conn),
            Op::Restore { messages } => self.restore(messages),
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
            Op::Pull { conn, id, reply } => {
                let _ = reply.send(self.pull(conn, &id));
            }
            Op::Unpull { conn, id, reply } => {
                let _ = reply.send(self.unpull(conn, &id));
            }
            Op::DropTopic { name } => {
                if self
                    .topics
                    .get(&name)
                    .is_some_and(|t| t.subscribers.is_empty())
                {
                    self.topics.remove(&name);
                }
            }
            Op::Browse { name, limit, reply } => {
                let _ = reply.send(self.browse(&name, limit));
            }
            Op::Take {
                name,
                wanted,
                reply,
            } => {
                let _ = reply.send(self.take(&name, wanted.as_ref()));
            }
        }
        if !self.held.is_empty() {
            self.release_held();
        }
    }

    fn demand_changed(&self) {
        self.demand.send_modify(|v| *v += 1);
    }

    /// Where this broker has demand, leaving out what `exclude_peer` itself
    /// asked for: each destination with the fewest hops to a consumer.
    fn demand(&self, exclude_peer: &str) -> Vec<(Destination, u32)> {
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
        demand
    }

    /// Whether a message of `size` bytes fits the broker's memory now (one
    /// always fits an empty broker).
    fn has_room(&self, size: usize) -> bool {
        self.memory == 0 || self.memory + size <= self.limits.memory_limit
    }

    /// Makes sure `destination` exists, creating it if the broker has room
    /// for one more.
    fn ensure(&mut self, destination: &Destination) -> Result<(), RouterError> {
        let exists = match destination.kind {
            Kind::Queue => self.queues.contains_key(&destination.name),
            Kind::Topic => self.topics.contains_key(&destination.name),
        };
        if exists {
            return Ok(());
        }
        let count = self.queues.len() + self.topics.len();
        if count >= self.limits.max_destinations {
            return Err(RouterError::TooManyDestinations {
                destination: destination.clone(),
                max: self.limits.max_destinations,
            });
        }
        match destination.kind {
            Kind::Queue => self.queues.entry(destination.name.clone()).or_default(),
            Kind::Topic => {
                self.topics.entry(destination.name.clone()).or_default();
                return Ok(());
            }
        };
        Ok(())
    }

    fn subscribe(
        &mut self,
        conn: ConnId,
        id: String,
        destination: Destination,
        consumer: Consumer,
        network: Option<NetworkLink>,
    ) -> Result<(), RouterError> {
        let Consumer {
            ack,
            prefetch,
            selector,
        } = consumer;
        let Some(c) = self.conns.get(&conn) else {
            return Err(RouterError::NotConnected);
        };
        if c.subs.contains_key(&id) {
            return Err(RouterError::SubscriptionInUse(id));
        }
        // A bridge's demand is one subscription per destination: not capped.
        let max = self.limits.max_subscriptions_per_connection;
        if network.is_none() && c.subs.len() >= max {
            return Err(RouterError::TooManySubscriptions { max });
        }
        self.ensure(&destination)?;
        let key = SubKey(self.next_sub);
        self.next_sub += 1;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.subs.insert(id.clone(), key);
            c.info.subscriptions = c.subs.len();
        }
        let name = destination.name.clone();
        let kind = destination.kind;
        let is_wildcard = destination.is_wildcard();
        self.subs.insert(
            key,
            Subscription {
                conn,
                id,
                destination,
                ack,
                // 0: a JMS consumer that pulls (prefetch 0), on a queue; a
                // topic subscriber always has room for one.
                prefetch: if kind == Kind::Queue && ack != AckMode::Auto {
                    prefetch
                } else {
                    prefetch.max(1)
                },
                credit: 0,
                selector,
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
            Kind::Topic => {
                if is_wildcard && !self.wildcards.contains_key(&name) {
                    if let Ok(filter) = crate::router::Filter::parse(&format!("topic://{name}")) {
                        self.wildcards.insert(name.clone(), filter);
                    }
                }
                self.topics.entry(name).or_default().subscribers.push(key);
            }
        }
        Ok(())
    }

    fn unregister(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get(&conn) {
            let keys = c.subs.values().copied().collect();
            self.remove_subscriptions(keys);
        }
        self.conns.remove(&conn);
    }

    /// Removes subscriptions, all at once: their unacknowledged queue
    /// messages go back to the front of their queue, marked redelivered;
    /// a topic subscriber's backlog and deliveries are dropped. Each queue
    /// and topic is visited once, however many of its subscriptions go.
    fn remove_subscriptions(&mut self, keys: Vec<SubKey>) {
        let gone: HashSet<SubKey> = keys.iter().copied().collect();
        let mut queues: HashSet<String> = HashSet::new();
        let mut topics: HashSet<String> = HashSet::new();
        for key in keys {
            let Some(sub) = self.subs.remove(&key) else {
                continue;
            };
            let inflight: Vec<Arc<Message>> = sub.inflight.into_iter().collect();
            let inflight_bytes = total_size(&inflight);
            if let Some(c) = self.conns.get_mut(&sub.conn) {
                c.subs.remove(&sub.id);
                c.info.subscriptions = c.subs.len();
                c.inflight_bytes = c.inflight_bytes.saturating_sub(inflight_bytes);
            }
            let name = sub.destination.name;
            match sub.destination.kind {
                Kind::Queue => {
                    self.returned(&name, inflight, false, Instant::now());
                    queues.insert(name);
                }
                Kind::Topic => {
                    self.memory = self
                        .memory
                        .saturating_sub(sub.backlog_bytes + inflight_bytes);
                    topics.insert(name);
                }
            }
        }
        for name in &topics {
            if let Some(t) = self.topics.get_mut(name) {
                t.subscribers.retain(|k| !gone.contains(k));
                if t.subscribers.is_empty() {
                    self.wildcards.remove(name);
                }
            }
        }
        for name in &queues {
            if let Some(q) = self.queues.get_mut(name) {
                q.consumers.retain(|k| !gone.contains(k));
                if !q.groups.is_empty() {
                    // Their groups go to whoever takes their next message.
                    q.groups.retain(|_, k| !gone.contains(k));
                    let groups = &q.groups;
                    q.group_order.retain(|g| groups.contains_key(g));
                }
            }
        }
        for name in queues {
            self.dispatch(&name);
        }
    }

    fn route(&mut self, message: Arc<Message>, reply: oneshot::Sender<()>) {
        if message.deliver_at != 0 && self.schedule(message.clone()) {
            // Taken: it waits for its time (see `retire::tick`).
            let _ = reply.send(());
            return;
        }
        if message.expires != 0 && message.expired(now_ms()) {
            // Never delivered; taken, so its sender is not held back.
            let _ = reply.send(());
            self.expired_on_arrival(message);
            return;
        }
        let size = message.size();
        if !self.has_room(size) {
            debug!(destination = %message.destination, "the broker is over its memory limit: holding back a sender");
            self.held.push_back((message, reply));
            return;
        }
        let name = message.destination.name.clone();
        match message.destination.kind {
            Kind::Queue => {
                let limit = self.limits.queue_memory;
                let queue = self.queues.entry(name.clone()).or_default();
                if !queue.parked.is_empty() || !queue.has_room(size, limit) {
                    queue.parked.push_back((message, reply));
                    debug!(queue = %name, "queue over its memory limit: holding back a sender");
                    self.dispatch(&name);
                    return;
                }
                self.enqueue(&name, message);
                let _ = reply.send(());
                self.dispatch(&name);
            }
            Kind::Topic => {
                let _ = reply.send(());
                self.publish(&name, message);
            }
        }
    }

    /// Takes a message into queue `name` (which has room).
    fn enqueue(&mut self, name: &str, message: Arc<Message>) {
        if message.expires != 0 && self.next_sweep.is_none() {
            self.next_sweep = Some(Instant::now() + EXPIRY_SWEEP);
        }
        let size = message.size();
        let queue = self.queues.entry(name.to_owned()).or_default();
        queue.enqueued += 1;
        queue.bytes += size;
        queue.messages.push_back(Pending {
            message,
            redelivered: false,
        });
        self.memory += size;
    }

    /// Lets held-back senders in, in order, while the broker has room.
    fn release_held(&mut self) {
        while let Some((message, _)) = self.held.front() {
            if !self.has_room(message.size()) {
                return;
            }
            let Some((message, reply)) = self.held.pop_front() else {
                return;
            };
            self.route(message, reply);
        }
    }

    /// A connection's outbox has room (or its window opened): deliver to
    /// each of its subscriptions what waits for it.
    fn resume(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        c.outbox.stalled.store(false, Ordering::Release);
        let subs: Vec<(SubKey, Kind, String)> = c
            .subs
            .values()
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

    fn stats(&self) -> Stats {
        let mut producers: HashMap<&Destination, usize> = HashMap::new();
        for conn in self.conns.values() {
            for d in &conn.produced {
                *producers.entry(d).or_default() += 1;
            }
        }
        let producers_of = |kind, name: &str| {
            producers
                .get(&Destination {
                    kind,
                    name: name.to_owned(),
                })
                .copied()
                .unwrap_or(0)
        };
        let mut queues: Vec<QueueStats> = self
            .queues
            .iter()
            .map(|(name, q)| QueueStats {
                name: name.clone(),
                pending: q.messages.len()
                    + q.parked.len()
                    + q.delayed.len()
                    + q.consumers
                        .iter()
                        .filter_map(|k| self.subs.get(k))
                        .map(|s| s.inflight.len())
                        .sum::<usize>(),
                consumers: q.consumers.len(),
                producers: producers_of(Kind::Queue, name),
                enqueued: q.enqueued,
                dequeued: q.dequeued,
                expired: q.expired,
                dead_lettered: q.dead_lettered,
                bytes: q.bytes,
            })
            .collect();
        queues.sort_by(|a, b| a.name.cmp(&b.name));
        let mut topics: Vec<TopicStats> = self
            .topics
            .iter()
            .map(|(name, t)| TopicStats {
                name: name.clone(),
                subscribers: t.subscribers.len(),
                producers: producers_of(Kind::Topic, name),
                enqueued: t.enqueued,
                dequeued: t.dequeued,
                expired: t.expired,
            })
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        let mut connections: Vec<ConnectionInfo> = self
            .conns
            .values()
            .map(|c| {
                let mut info = c.info.clone();
                let mut destinations: BTreeSet<&Destination> = c
                    .subs
                    .values()
                    .filter_map(|k| self.subs.get(k))
                    .map(|s| &s.destination)
                    .collect();
                destinations.extend(&c.produced);
                info.destinations = destinations.into_iter().map(Destination::stomp).collect();
                info.messages_sent = info.counters.sent.load(Ordering::Relaxed);
                info.messages_delivered = info.counters.delivered.load(Ordering::Relaxed);
                info
            })
            .collect();
        connections.sort_by_key(|c| c.id);
        Stats {
            scheduled: self.scheduled.len(),
            queues,
            topics,
            connections,
            memory: MemoryStats {
                used: self.memory,
                limit: self.limits.memory_limit,
                held_senders: self.held.len()
                    + self.queues.values().map(|q| q.parked.len()).sum::<usize>(),
            },
        }
    }
}
