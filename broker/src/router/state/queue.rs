//! Queues: each message to one consumer with room, round robin, local
//! consumers before bridges; held-back senders let in as room frees up.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{ack_id, Pending, State};
use crate::router::{Browsed, Delivery, Message, Purged, QueueActionError, SubKey};
use tokio::sync::mpsc;

/// Message groups a queue remembers the consumer of (ActiveMQ's default
/// cached group map holds as many).
const MAX_GROUPS: usize = 1024;

/// How far past the head a consumer with a selector looks for a message it
/// selects (ActiveMQ's default page size).
const LOOKAHEAD: usize = 200;

impl State {
    /// Gives a queue's messages to consumers with room, round robin,
    /// local consumers first; network consumers (bridges) get what no local
    /// consumer can take. Held-back senders come in as room frees up.
    pub(super) fn dispatch(&mut self, name: &str) {
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
    pub(super) fn deliver(&mut self, name: &str, network: bool) {
        if self.next_sweep.is_some() {
            self.drop_expired_head(name);
        }
        let Some(queue) = self.queues.get(name) else {
            return;
        };
        if queue.messages.is_empty() {
            return;
        }
        let eligible: Vec<SubKey> = queue
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
            // A message group's messages go to the consumer that has the
            // group, while it lives; else round robin (and it gets the group).
            let owner = queue
                .messages
                .front()
                .and_then(|p| p.message.group.as_ref())
                .and_then(|g| queue.groups.get(g))
                .copied()
                .filter(|k| eligible.contains(k));
            let key = match owner {
                Some(key) => key,
                None => {
                    let key = eligible[queue.next % eligible.len()];
                    queue.next = queue.next.wrapping_add(1);
                    key
                }
            };
            let Some(sub) = self.subs.get(&key) else {
                skipped += 1;
                continue;
            };
            // Which message: the next one, or for a consumer with a
            // selector the first it selects among the next `LOOKAHEAD`
            // (not one of a group another consumer has).
            let at = match &sub.selector {
                None => queue.messages.front_at(),
                Some(selector) => {
                    let groups = &queue.groups;
                    queue.messages.find(LOOKAHEAD, |p| {
                        selector.matches(&p.message)
                            && p.message.group.as_ref().is_none_or(|g| {
                                groups
                                    .get(g)
                                    .is_none_or(|o| *o == key || !eligible.contains(o))
                            })
                    })
                }
            };
            let Some((at, size)) =
                at.and_then(|at| Some((at, queue.messages.get(at)?.message.size())))
            else {
                skipped += 1;
                continue;
            };
            if !self.may_deliver(key, size) {
                skipped += 1;
                continue;
            }
            let Some(head) = self.queues.get(name).and_then(|q| q.messages.get(at)) else {
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
            let pending = queue.messages.remove_at(at).expect("found above");
            if let Some(group) = &pending.message.group {
                if queue.groups.get(group) != Some(&key) {
                    if queue.groups.len() >= MAX_GROUPS {
                        // As ActiveMQ's cached group map: the oldest goes.
                        if let Some(old) = queue.group_order.pop_front() {
                            queue.groups.remove(&old);
                        }
                    }
                    queue.group_order.push_back(group.clone());
                    queue.groups.insert(group.clone(), key);
                }
            }
            let next_expired = self.next_sweep.is_some();
            if acks {
                if let Some(sub) = self.subs.get_mut(&key) {
                    sub.inflight.push_back(pending.message);
                    sub.credit = sub.credit.saturating_sub(1);
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
            if next_expired {
                self.drop_expired_head(name);
            }
        }
    }

    pub(super) fn purge(&mut self, name: &str, delete: bool) -> Result<Purged, QueueActionError> {
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
        for pending in queue.messages.drain() {
            freed += pending.message.size();
            take(&pending.message);
        }
        for (_, message) in queue.delayed.drain(..) {
            freed += message.size();
            take(&message);
        }
        queue.failures.clear();
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

    /// The first `limit` messages waiting in queue `name`, in delivery
    /// order, and how many wait in all.
    pub(super) fn browse(&self, name: &str, limit: usize) -> Result<Browsed, QueueActionError> {
        let queue = self
            .queues
            .get(name)
            .ok_or_else(|| QueueActionError::NotFound(name.to_owned()))?;
        Ok(Browsed {
            waiting: queue.messages.len(),
            messages: queue
                .messages
                .iter()
                .take(limit)
                .map(|p| (p.message.clone(), p.redelivered))
                .collect(),
        })
    }

    /// Takes the waiting messages of queue `name` that `wanted` says, in
    /// delivery order (not those delivered and unacknowledged, nor those
    /// waiting out a redelivery delay).
    pub(super) fn take(
        &mut self,
        name: &str,
        wanted: &(dyn Fn(&Message) -> bool + Send),
    ) -> Result<Vec<Arc<Message>>, QueueActionError> {
        let queue = self
            .queues
            .get_mut(name)
            .ok_or_else(|| QueueActionError::NotFound(name.to_owned()))?;
        let mut taken: Vec<Arc<Message>> = queue
            .messages
            .take(|p| wanted(&p.message))
            .into_iter()
            .map(|p| p.message)
            .collect();
        taken.sort_by_key(|m| (std::cmp::Reverse(m.priority), m.seq));
        let freed: usize = taken.iter().map(|m| m.size()).sum();
        for m in &taken {
            queue.failures.remove(&m.seq);
        }
        queue.bytes = queue.bytes.saturating_sub(freed);
        queue.dequeued += taken.len() as u64;
        self.memory = self.memory.saturating_sub(freed);
        Ok(taken)
    }

    /// Puts recovered messages back in their queues (all of them, whatever
    /// the limits: nothing stored is dropped).
    pub(super) fn restore(&mut self, messages: Vec<Arc<Message>>) {
        let mut names = Vec::new();
        for message in messages {
            if message.deliver_at != 0 && self.schedule(message.clone()) {
                continue;
            }
            let name = message.destination.name.clone();
            let size = message.size();
            let queue = self.queues.entry(name.clone()).or_default();
            queue.bytes += size;
            if message.expires != 0 && self.next_sweep.is_none() {
                self.next_sweep = Some(tokio::time::Instant::now() + super::EXPIRY_SWEEP);
            }
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
}
