//! Messages that leave without being consumed, and messages that wait:
//! the redelivery policy (a delay before a refused message comes back, a
//! dead letter after too many deliveries) and expiry.

use std::sync::Arc;

use tokio::time::Instant;
use tracing::debug;

use super::{now_ms, State, EXPIRY_SWEEP};
use crate::router::policy::{is_dead_letter_queue, Cause};
use crate::router::{Destination, Kind, Message, Retired};

impl State {
    /// Messages of queue `name` delivered and not acknowledged: `refused`
    /// (NACKed) or left by a consumer that went. Each counts as a failed
    /// delivery; past the policy's `max_redeliveries` it is a dead letter.
    /// A refused one waits out the redelivery delay; one whose consumer
    /// went comes back at once (another consumer may take it now).
    pub(super) fn returned(
        &mut self,
        name: &str,
        messages: Vec<Arc<Message>>,
        refused: bool,
        now: Instant,
    ) {
        if messages.is_empty() {
            return;
        }
        let destination = Destination {
            kind: Kind::Queue,
            name: name.to_owned(),
        };
        let policies = self.policies.clone();
        let policy = policies.of(&destination);
        // A dead-letter queue's messages would only loop: they stay.
        let may_die = !is_dead_letter_queue(&destination);
        let Some(queue) = self.queues.get_mut(name) else {
            return;
        };
        let mut back = Vec::new();
        let mut dead = Vec::new();
        for message in messages {
            let failures = queue.failures.entry(message.seq).or_insert(0);
            *failures = failures.saturating_add(1);
            let failures = *failures;
            if may_die && failures > policy.max_redeliveries {
                queue.failures.remove(&message.seq);
                dead.push((message, failures));
                continue;
            }
            let delay = if refused {
                policy.delay(failures)
            } else {
                std::time::Duration::ZERO
            };
            if delay.is_zero() {
                back.push(message);
            } else {
                let due = now + delay;
                queue.delayed.push((due, message));
                self.next_due = Some(self.next_due.map_or(due, |d| d.min(due)));
                self.delayed.insert(name.to_owned());
            }
        }
        queue.give_back(back);
        for (message, deliveries) in dead {
            let cause = Cause::Redeliveries {
                deliveries,
                max_redeliveries: policy.max_redeliveries,
            };
            let to = policy.dead_letter_queue(&destination);
            self.retire(name, message, cause, Some(to));
        }
    }

    /// Messages of queue `name` a consumer refused for good (`why`): dead
    /// letters at once, whatever the redelivery policy (in a dead-letter
    /// queue they stay, as there).
    pub(super) fn poisoned(&mut self, name: &str, messages: Vec<Arc<Message>>, why: &str) {
        let destination = Destination {
            kind: Kind::Queue,
            name: name.to_owned(),
        };
        if is_dead_letter_queue(&destination) {
            self.returned(name, messages, true, Instant::now());
            return;
        }
        let to = self
            .policies
            .of(&destination)
            .dead_letter_queue(&destination);
        for message in messages {
            if let Some(queue) = self.queues.get_mut(name) {
                queue.failures.remove(&message.seq);
            }
            self.retire(
                name,
                message,
                Cause::Poisoned(why.to_owned()),
                Some(to.clone()),
            );
        }
    }

    /// Takes a message that was held by queue `name` (waiting, delayed or
    /// in flight) out of it for good, and hands it on as `Retired`.
    fn retire(&mut self, name: &str, message: Arc<Message>, cause: Cause, to: Option<Destination>) {
        let size = message.size();
        if let Some(queue) = self.queues.get_mut(name) {
            queue.bytes = queue.bytes.saturating_sub(size);
            match cause {
                Cause::Expired => queue.expired += 1,
                Cause::Redeliveries { .. } | Cause::Poisoned(_) => queue.dead_lettered += 1,
            }
        }
        self.memory = self.memory.saturating_sub(size);
        debug!(queue = %name, seq = message.seq, %cause, to = ?to.as_ref().map(ToString::to_string), "message retired");
        let _ = self.retired.send(Retired { message, cause, to });
    }

    /// Where an expired message of `destination` goes, by its policy.
    fn expired_to(&self, destination: &Destination) -> Option<Destination> {
        let policy = self.policies.of(destination);
        (policy.expired_to_dead_letter
            && destination.kind == Kind::Queue
            && !is_dead_letter_queue(destination))
        .then(|| policy.dead_letter_queue(destination))
    }

    /// A message that arrived already expired: counted where it was sent,
    /// never delivered.
    pub(super) fn expired_on_arrival(&mut self, message: Arc<Message>) {
        let name = message.destination.name.clone();
        match message.destination.kind {
            Kind::Queue => {
                let to = self.expired_to(&message.destination);
                let queue = self.queues.entry(name.clone()).or_default();
                queue.enqueued += 1;
                // `retire` gives back bytes it never took: count them first.
                queue.bytes += message.size();
                self.memory += message.size();
                self.retire(&name, message, Cause::Expired, to);
            }
            Kind::Topic => {
                if let Some(topic) = self.topics.get_mut(&name) {
                    topic.enqueued += 1;
                    topic.expired += 1;
                }
            }
        }
    }

    /// Takes expired messages off the head of queue `name`: they are never
    /// delivered.
    pub(super) fn drop_expired_head(&mut self, name: &str) {
        let now = now_ms();
        loop {
            let expired = self
                .queues
                .get(name)
                .and_then(|q| q.messages.front())
                .is_some_and(|p| p.message.expired(now));
            if !expired {
                return;
            }
            let Some(pending) = self
                .queues
                .get_mut(name)
                .and_then(|q| q.messages.pop_front())
            else {
                return;
            };
            let to = self.expired_to(&pending.message.destination);
            self.retire(name, pending.message, Cause::Expired, to);
        }
    }

    /// Holds `message` until its `deliver_at` if that is still to come;
    /// false if it is due now. Its bytes count as the broker's meanwhile.
    pub(super) fn schedule(&mut self, message: Arc<Message>) -> bool {
        let wait = message.deliver_at.saturating_sub(now_ms());
        if wait == 0 {
            return false;
        }
        let due = Instant::now() + std::time::Duration::from_millis(wait);
        self.memory += message.size();
        self.scheduled.insert((due, message.seq), message);
        true
    }

    /// Scheduled messages whose time came are routed; delayed messages
    /// that are due go back to the front of their queue; every
    /// `EXPIRY_SWEEP`, expired messages leave the queues.
    pub(super) fn tick(&mut self, now: Instant) {
        while let Some(entry) = self.scheduled.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let message = entry.remove();
            self.memory = self.memory.saturating_sub(message.size());
            // Due: routed as if sent now (nobody waits for the reply).
            let (reply, _) = tokio::sync::oneshot::channel();
            let mut due = Arc::unwrap_or_clone(message);
            due.deliver_at = 0;
            self.route(Arc::new(due), reply);
        }
        if self.next_due.is_some_and(|due| due <= now) {
            self.next_due = None;
            let names: Vec<String> = self.delayed.drain().collect();
            for name in names {
                let Some(queue) = self.queues.get_mut(&name) else {
                    continue;
                };
                let (mut due, waiting): (Vec<_>, Vec<_>) =
                    queue.delayed.drain(..).partition(|(at, _)| *at <= now);
                queue.delayed = waiting;
                if let Some(next) = queue.delayed.iter().map(|(at, _)| *at).min() {
                    self.next_due = Some(self.next_due.map_or(next, |d| d.min(next)));
                    self.delayed.insert(name.clone());
                }
                due.sort_by_key(|(_, m)| m.seq);
                queue.give_back(due.into_iter().map(|(_, m)| m));
                self.dispatch(&name);
            }
        }
        if self.next_sweep.is_some_and(|at| at <= now) {
            self.next_sweep = Some(now + EXPIRY_SWEEP);
            self.sweep_expired();
        }
    }

    /// Takes every expired waiting message out of every queue.
    fn sweep_expired(&mut self) {
        let now = now_ms();
        let mut gone = Vec::new();
        for (name, queue) in &mut self.queues {
            let expired = queue.messages.take(|p| p.message.expired(now));
            gone.extend(expired.into_iter().map(|p| (name.clone(), p.message)));
        }
        for (name, message) in gone {
            let to = self.expired_to(&message.destination);
            self.retire(&name, message, Cause::Expired, to);
        }
    }
}
