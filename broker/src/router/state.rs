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

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::{
    AckMode, ConnId, ConnectionInfo, Delivery, Destination, Kind, MemoryStats, Message,
    NetworkLink, Op, Outbox, Purged, QueueActionError, QueueStats, RouterLimits, Stats, TopicStats,
    SLOW_CONSUMER_GRACE,
};

/// A sender waiting for room, with the reply that releases it.
type Held = (Arc<Message>, oneshot::Sender<()>);

struct Pending {
    message: Arc<Message>,
    redelivered: bool,
}

#[derive(Default)]
struct Queue {
    messages: VecDeque<Pending>,
    /// Waiting and delivered-but-unacknowledged messages, in bytes.
    bytes: usize,
    consumers: Vec<u64>,
    next: usize,
    enqueued: u64,
    dequeued: u64,
    /// Senders held back while the queue is over its memory limit.
    parked: VecDeque<Held>,
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
    subscribers: Vec<u64>,
    enqueued: u64,
    dequeued: u64,
}

struct Conn {
    outbox: Outbox,
    info: ConnectionInfo,
    /// Subscription id → key.
    subs: HashMap<String, u64>,
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
fn ack_id(sub: u64, seq: u64) -> String {
    format!("{sub}-{seq}")
}

fn parse_ack(text: &str) -> Option<(u64, u64)> {
    let (sub, seq) = text.split_once('-')?;
    Some((sub.parse().ok()?, seq.parse().ok()?))
}

fn total_size(messages: &[Arc<Message>]) -> usize {
    messages.iter().map(|m| m.size()).sum()
}

pub(super) struct State {
    demand: watch::Sender<u64>,
    limits: RouterLimits,
    queues: HashMap<String, Queue>,
    topics: HashMap<String, Topic>,
    conns: HashMap<ConnId, Conn>,
    subs: HashMap<u64, Subscription>,
    next_sub: u64,
    /// Bytes of messages held, in all.
    memory: usize,
    /// Senders held back while the broker is over its memory limit, in
    /// the order they came.
    held: VecDeque<Held>,
}

impl State {
    pub(super) fn new(limits: RouterLimits, demand: watch::Sender<u64>) -> Self {
        Self {
            demand,
            limits,
            queues: HashMap::new(),
            topics: HashMap::new(),
            conns: HashMap::new(),
            subs: HashMap::new(),
            next_sub: 1,
            memory: 0,
            held: VecDeque::new(),
        }
    }

    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Op>) {
        while let Some(op) = rx.recv().await {
            self.handle(op);
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
                    None => Err(format!("no subscription with id {id:?}")),
                };
                let _ = reply.send(result);
            }
            Op::Ensure { destination, reply } => {
                let _ = reply.send(self.ensure(&destination));
            }
            Op::Send { message, reply } => self.route(message, reply),
            Op::Ack { conn, ack, reply } => {
                let _ = reply.send(self.ack(conn, &ack));
            }
            Op::Nack { conn, ack, reply } => {
                let _ = reply.send(self.nack(conn, &ack));
            }
            Op::CheckAck { conn, ack, reply } => {
                let _ = reply.send(self.find(conn, &ack).map(|_| ()));
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
    fn ensure(&mut self, destination: &Destination) -> Result<(), String> {
        let exists = match destination.kind {
            Kind::Queue => self.queues.contains_key(&destination.name),
            Kind::Topic => self.topics.contains_key(&destination.name),
        };
        if exists {
            return Ok(());
        }
        let count = self.queues.len() + self.topics.len();
        if count >= self.limits.max_destinations {
            return Err(format!(
                "cannot create {destination}: the broker has its maximum of {} destinations",
                self.limits.max_destinations
            ));
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
        ack: AckMode,
        prefetch: usize,
        network: Option<NetworkLink>,
    ) -> Result<(), String> {
        let Some(c) = self.conns.get(&conn) else {
            return Err("not connected".into());
        };
        if c.subs.contains_key(&id) {
            return Err(format!(
                "subscription id {id:?} is already in use on this connection"
            ));
        }
        // A bridge's demand is one subscription per destination: not capped.
        let max = self.limits.max_subscriptions_per_connection;
        if network.is_none() && c.subs.len() >= max {
            return Err(format!("a connection may hold at most {max} subscriptions"));
        }
        self.ensure(&destination)?;
        let key = self.next_sub;
        self.next_sub += 1;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.subs.insert(id.clone(), key);
            c.info.subscriptions = c.subs.len();
        }
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
            let keys = c.subs.values().copied().collect();
            self.remove_subscriptions(keys);
        }
        self.conns.remove(&conn);
    }

    /// Removes subscriptions, all at once: their unacknowledged queue
    /// messages go back to the front of their queue, marked redelivered;
    /// a topic subscriber's backlog and deliveries are dropped. Each queue
    /// and topic is visited once, however many of its subscriptions go.
    fn remove_subscriptions(&mut self, keys: Vec<u64>) {
        let gone: HashSet<u64> = keys.iter().copied().collect();
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
                    if let Some(q) = self.queues.get_mut(&name) {
                        q.give_back(inflight);
                    }
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
            }
        }
        for name in &queues {
            if let Some(q) = self.queues.get_mut(name) {
                q.consumers.retain(|k| !gone.contains(k));
            }
        }
        for name in queues {
            self.dispatch(&name);
        }
    }

    fn route(&mut self, message: Arc<Message>, reply: oneshot::Sender<()>) {
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

    fn publish(&mut self, name: &str, message: Arc<Message>) {
        let Some(topic) = self.topics.get_mut(name) else {
            return;
        };
        topic.enqueued += 1;
        let (max_messages, max_bytes) = self.limits.topic_backlog();
        let mut slow = Vec::new();
        let size = message.size();
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
            sub.backlog_bytes += size;
            sub.backlog.push_back(message.clone());
            self.memory += size;
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

    /// Whether a client-ack subscriber may be given `size` more bytes now:
    /// within its prefetch window and its connection's bound on
    /// unacknowledged bytes (one message always fits). A connection held
    /// back by that bound is marked, so an acknowledgement resumes it.
    fn may_deliver(&mut self, key: u64, size: usize) -> bool {
        let Some(sub) = self.subs.get(&key) else {
            return false;
        };
        if !sub.acks() {
            return true;
        }
        if sub.inflight.len() >= sub.prefetch {
            return false;
        }
        let max = self.limits.max_inflight_bytes;
        let Some(c) = self.conns.get_mut(&sub.conn) else {
            return false;
        };
        let fits = c.inflight_bytes == 0 || c.inflight_bytes + size <= max;
        c.starved |= !fits;
        fits
    }

    /// Moves a topic subscription's backlog into its connection's outbox,
    /// as far as the outbox, the prefetch window and the connection's
    /// unacknowledged bytes allow.
    fn drain_topic_subscription(&mut self, key: u64) {
        let mut delivered = 0;
        let mut freed = 0;
        while let Some(size) = self
            .subs
            .get(&key)
            .and_then(|s| s.backlog.front())
            .map(|m| m.size())
        {
            if !self.may_deliver(key, size) {
                break;
            }
            let Some(sub) = self.subs.get(&key) else {
                return;
            };
            let Some(message) = sub.backlog.front() else {
                break;
            };
            let Some(conn) = self.conns.get(&sub.conn) else {
                return;
            };
            let acks = sub.acks();
            let delivery = Delivery {
                subscription: sub.id.clone(),
                ack: acks.then(|| ack_id(key, message.seq)),
                message: message.clone(),
                redelivered: false,
                ack_mode: sub.ack,
            };
            match conn.outbox.offer(delivery) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    conn.outbox.stalled.store(true, Ordering::Release);
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => break,
            }
            let conn_id = sub.conn;
            let sub = self.subs.get_mut(&key).expect("looked up above");
            let message = sub.backlog.pop_front().expect("front exists");
            sub.backlog_bytes = sub.backlog_bytes.saturating_sub(size);
            sub.progress = Instant::now();
            delivered += 1;
            if acks {
                sub.inflight.push_back(message);
                if let Some(c) = self.conns.get_mut(&conn_id) {
                    c.inflight_bytes += size;
                }
            } else {
                freed += size;
            }
        }
        self.memory = self.memory.saturating_sub(freed);
        if let Some(sub) = self.subs.get_mut(&key) {
            if sub.backlog.is_empty() {
                sub.progress = Instant::now();
            }
            let name = sub.destination.name.clone();
            if let Some(t) = self.topics.get_mut(&name) {
                t.dequeued += delivered;
            }
        }
    }

    /// Gives a queue's messages to consumers with room, round robin,
    /// local consumers first; network consumers (bridges) get what no local
    /// consumer can take. Held-back senders come in as room frees up.
    fn dispatch(&mut self, name: &str) {
        loop {
            self.deliver(name, false);
            self.deliver(name, true);
            let mut released = false;
            loop {
                let Some(queue) = self.queues.get(name) else {
                    return;
                };
                let Some((message, _)) = queue.parked.front() else {
                    break;
                };
                let size = message.size();
                if !queue.has_room(size, self.limits.queue_memory) || !self.has_room(size) {
                    break;
                }
                let Some((message, reply)) =
                    self.queues.get_mut(name).and_then(|q| q.parked.pop_front())
                else {
                    break;
                };
                self.enqueue(name, message);
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
        let Some(queue) = self.queues.get(name) else {
            return;
        };
        if queue.messages.is_empty() {
            return;
        }
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
        loop {
            let Some(queue) = self.queues.get_mut(name) else {
                return;
            };
            if queue.messages.is_empty() || skipped >= eligible.len() {
                return;
            }
            let key = eligible[queue.next % eligible.len()];
            queue.next = queue.next.wrapping_add(1);
            let Some(size) = queue.messages.front().map(|p| p.message.size()) else {
                return;
            };
            if !self.may_deliver(key, size) {
                skipped += 1;
                continue;
            }
            let Some(head) = self.queues.get(name).and_then(|q| q.messages.front()) else {
                return;
            };
            let Some(sub) = self.subs.get(&key) else {
                skipped += 1;
                continue;
            };
            let Some(conn) = self.conns.get(&sub.conn) else {
                skipped += 1;
                continue;
            };
            let head_ok = sub
                .network
                .as_ref()
                .is_none_or(|n| n.may_forward(&head.message));
            if !head_ok || conn.outbox.stalled.load(Ordering::Acquire) {
                skipped += 1;
                continue;
            }
            let acks = sub.acks();
            let delivery = Delivery {
                subscription: sub.id.clone(),
                ack: acks.then(|| ack_id(key, head.message.seq)),
                message: head.message.clone(),
                redelivered: head.redelivered,
                ack_mode: sub.ack,
            };
            match conn.outbox.offer(delivery) {
                Ok(()) => {}
                Err(e) => {
                    if matches!(e, mpsc::error::TrySendError::Full(_)) {
                        conn.outbox.stalled.store(true, Ordering::Release);
                    }
                    skipped += 1;
                    continue;
                }
            }
            skipped = 0;
            let conn_id = sub.conn;
            let queue = self.queues.get_mut(name).expect("looked up above");
            let pending = queue.messages.pop_front().expect("head exists");
            if acks {
                if let Some(sub) = self.subs.get_mut(&key) {
                    sub.inflight.push_back(pending.message);
                }
                if let Some(c) = self.conns.get_mut(&conn_id) {
                    c.inflight_bytes += size;
                }
            } else {
                // Auto-acknowledged: done once handed to the connection.
                queue.bytes = queue.bytes.saturating_sub(size);
                queue.dequeued += 1;
                self.memory = self.memory.saturating_sub(size);
            }
        }
    }

    pub(super) fn find(&self, conn: ConnId, ack: &str) -> Result<(u64, u64), String> {
        let (key, seq) = parse_ack(ack)
            .or_else(|| {
                // STOMP 1.0/1.1 clients acknowledge by message-id.
                let seq = ack.rsplit('-').next()?.parse().ok()?;
                let c = self.conns.get(&conn)?;
                let key = c.subs.values().copied().find(|k| {
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

    /// Takes acknowledged (or refused) messages out of a subscription's
    /// window: in `client` mode the one named and every one delivered
    /// before it (cumulative), in `client-individual` mode that one only.
    /// The connection's unacknowledged bytes go down by theirs.
    fn settle(&mut self, conn: ConnId, ack: &str) -> Result<(u64, Vec<Arc<Message>>), String> {
        let (key, seq) = self.find(conn, ack)?;
        let Some(sub) = self.subs.get_mut(&key) else {
            return Err("subscription gone".into());
        };
        let at = sub.inflight.iter().position(|m| m.seq == seq).unwrap_or(0);
        let settled: Vec<Arc<Message>> = match sub.ack {
            AckMode::ClientIndividual => sub.inflight.remove(at).into_iter().collect(),
            _ => sub.inflight.drain(..=at).collect(),
        };
        if let Some(c) = self.conns.get_mut(&conn) {
            c.inflight_bytes = c.inflight_bytes.saturating_sub(total_size(&settled));
        }
        Ok((key, settled))
    }

    /// After an acknowledgement: a connection that was held back by its
    /// bound on unacknowledged bytes gets its other subscriptions served.
    fn unstarve(&mut self, conn: ConnId) {
        let starved = self
            .conns
            .get_mut(&conn)
            .is_some_and(|c| std::mem::take(&mut c.starved));
        if starved {
            self.resume(conn);
        }
    }

    /// Acknowledges; returns the journal ids of stored messages acknowledged.
    fn ack(&mut self, conn: ConnId, ack: &str) -> Result<Vec<u64>, String> {
        let (key, acked) = self.settle(conn, ack)?;
        let size = total_size(&acked);
        self.memory = self.memory.saturating_sub(size);
        let Some(sub) = self.subs.get(&key) else {
            return Err("subscription gone".into());
        };
        let name = sub.destination.name.clone();
        let count = acked.len() as u64;
        match sub.destination.kind {
            Kind::Queue => {
                if let Some(q) = self.queues.get_mut(&name) {
                    q.dequeued += count;
                    q.bytes = q.bytes.saturating_sub(size);
                }
                self.dispatch(&name);
            }
            Kind::Topic => self.drain_topic_subscription(key),
        }
        self.unstarve(conn);
        Ok(acked.iter().filter(|m| m.stored).map(|m| m.seq).collect())
    }

    /// Gives messages back (see [`Self::settle`] for which): queue messages
    /// go back to the front of their queue in their order, marked
    /// redelivered; topic messages are dropped.
    fn nack(&mut self, conn: ConnId, ack: &str) -> Result<(), String> {
        let (key, returned) = self.settle(conn, ack)?;
        let Some(sub) = self.subs.get(&key) else {
            return Err("subscription gone".into());
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
                self.memory = self.memory.saturating_sub(total_size(&returned));
                if let Some(t) = self.topics.get_mut(&name) {
                    t.dequeued += returned.len() as u64;
                }
                self.drain_topic_subscription(key);
            }
        }
        self.unstarve(conn);
        Ok(())
    }

    /// A connection's outbox has room (or its window opened): deliver to
    /// each of its subscriptions what waits for it.
    fn resume(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        c.outbox.stalled.store(false, Ordering::Release);
        let subs: Vec<(u64, Kind, String)> = c
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

    /// Puts recovered messages back in their queues (all of them, whatever
    /// the limits: nothing stored is dropped).
    fn restore(&mut self, messages: Vec<Arc<Message>>) {
        let mut names = Vec::new();
        for message in messages {
            let name = message.destination.name.clone();
            let size = message.size();
            let queue = self.queues.entry(name.clone()).or_default();
            queue.bytes += size;
            queue.messages.push_back(Pending {
                message,
                redelivered: true,
            });
            self.memory += size;
            names.push(name);
        }
        names.dedup();
        for name in names {
            self.dispatch(&name);
        }
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
        let mut freed = 0;
        for pending in queue.messages.drain(..) {
            freed += pending.message.size();
            take(&pending.message);
        }
        queue.bytes = queue.bytes.saturating_sub(freed);
        for (message, sender) in queue.parked.drain(..) {
            queue.enqueued += 1;
            take(&message);
            let _ = sender.send(());
        }
        queue.dequeued += purged.messages as u64;
        self.memory = self.memory.saturating_sub(freed);
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
            memory: MemoryStats {
                used: self.memory,
                limit: self.limits.memory_limit,
                held_senders: self.held.len()
                    + self.queues.values().map(|q| q.parked.len()).sum::<usize>(),
            },
        }
    }
}
