//! Topics: each message to every subscriber's backlog, drained into its
//! connection as far as its window allows; a subscriber that stopped
//! reading is dropped.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{ack_id, State};
use crate::router::{Delivery, Message, SubKey};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::warn;

impl State {
    pub(super) fn publish(&mut self, name: &str, message: Arc<Message>) {
        let mut subscribers = match self.topics.get_mut(name) {
            Some(topic) => {
                topic.enqueued += 1;
                topic.subscribers.clone()
            }
            None => Vec::new(),
        };
        // Subscribers of wildcard names that match this topic.
        for (wildcard, filter) in &self.wildcards {
            if wildcard != name && filter.matches(&message.destination) {
                if let Some(t) = self.topics.get(wildcard) {
                    subscribers.extend(t.subscribers.iter().copied());
                }
            }
        }
        let (max_messages, max_bytes) = self.limits.topic_backlog();
        let mut slow = Vec::new();
        let size = message.size();
        for key in subscribers {
            let Some(sub) = self.subs.get_mut(&key) else {
                continue;
            };
            if sub
                .network
                .as_ref()
                .is_some_and(|n| !n.may_forward(&message))
                || sub.selector.as_ref().is_some_and(|s| !s.matches(&message))
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
            warn!(conn = %conn, topic = %name, "slow topic subscriber: disconnecting it");
            if let Some(c) = self.conns.get(&conn) {
                // The connection sees a closed outbox and ends with an ERROR.
                c.outbox.evicted.store(true, Ordering::Release);
            }
            self.unregister(conn);
        }
    }

    /// Moves a topic subscription's backlog into its connection's outbox,
    /// as far as the outbox, the prefetch window and the connection's
    /// unacknowledged bytes allow.
    pub(super) fn drain_topic_subscription(&mut self, key: SubKey) {
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
            if message.expires != 0 && message.expired(super::now_ms()) {
                // Never delivered: counted, and its bytes freed.
                let sub = self.subs.get_mut(&key).expect("looked up above");
                sub.backlog.pop_front();
                sub.backlog_bytes = sub.backlog_bytes.saturating_sub(size);
                freed += size;
                let name = sub.destination.name.clone();
                if let Some(t) = self.topics.get_mut(&name) {
                    t.expired += 1;
                }
                continue;
            }
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
}
