//! Delivered and not yet acknowledged: the window a subscription and its
//! connection may have open, and what ACK and NACK do to it.

use super::{total_size, State};
use crate::router::{AckId, AckMode, ConnId, Kind, Message, RouterError, SubKey};
use std::sync::Arc;

impl State {
    /// Whether a client-ack subscriber may be given `size` more bytes now:
    /// within its prefetch window and its connection's bound on
    /// unacknowledged bytes (one message always fits). A connection held
    /// back by that bound is marked, so an acknowledgement resumes it.
    pub(super) fn may_deliver(&mut self, key: SubKey, size: usize) -> bool {
        let Some(sub) = self.subs.get(&key) else {
            return false;
        };
        if !sub.acks() {
            return true;
        }
        if sub.inflight.len() >= sub.prefetch + sub.credit {
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

    /// The subscription and message an ACK names, if it names one
    /// delivered to `conn` and not yet acknowledged.
    pub(super) fn find(&self, conn: ConnId, ack: AckId) -> Result<(SubKey, u64), RouterError> {
        let unknown = || RouterError::NoSuchMessage(ack.to_string());
        let in_flight = |key: &SubKey, seq: u64| {
            self.subs
                .get(key)
                .is_some_and(|s| s.conn == conn && s.inflight.iter().any(|m| m.seq == seq))
        };
        match ack {
            AckId::Delivery { sub, seq } if in_flight(&sub, seq) => Ok((sub, seq)),
            AckId::Delivery { .. } => Err(unknown()),
            // STOMP 1.0/1.1 clients acknowledge by message-id.
            AckId::Message { seq } => self
                .conns
                .get(&conn)
                .and_then(|c| c.subs.values().copied().find(|k| in_flight(k, seq)))
                .map(|key| (key, seq))
                .ok_or_else(unknown),
            AckId::Named { fingerprint, hint } => {
                let c = self.conns.get(&conn).ok_or_else(unknown)?;
                let named = |m: &Message| AckId::fingerprint(&m.message_id) == fingerprint;
                let find = |pick: &dyn Fn(&Message) -> bool| {
                    c.subs.values().find_map(|key| {
                        let sub = self.subs.get(key).filter(|s| s.conn == conn)?;
                        let m = sub.inflight.iter().find(|m| pick(m))?;
                        Some((*key, m.seq))
                    })
                };
                // Most ids are this broker's and end with its number.
                hint.and_then(|seq| find(&|m: &Message| m.seq == seq && named(m)))
                    .or_else(|| find(&named))
                    .ok_or_else(unknown)
            }
        }
    }

    /// Takes acknowledged (or refused) messages out of a subscription's
    /// window: in `client` mode the one named and every one delivered
    /// before it (cumulative), in `client-individual` mode that one only.
    /// The connection's unacknowledged bytes go down by theirs.
    pub(super) fn settle(
        &mut self,
        conn: ConnId,
        ack: AckId,
        only: bool,
    ) -> Result<(SubKey, Vec<Arc<Message>>), RouterError> {
        let (key, seq) = self.find(conn, ack)?;
        let Some(sub) = self.subs.get_mut(&key) else {
            return Err(RouterError::SubscriptionGone(key));
        };
        let at = sub.inflight.iter().position(|m| m.seq == seq).unwrap_or(0);
        let settled: Vec<Arc<Message>> = match sub.ack {
            _ if only => sub.inflight.remove(at).into_iter().collect(),
            AckMode::ClientIndividual => sub.inflight.remove(at).into_iter().collect(),
            _ => sub.inflight.drain(..=at).collect(),
        };
        if let Some(c) = self.conns.get_mut(&conn) {
            c.inflight_bytes = c.inflight_bytes.saturating_sub(total_size(&settled));
        }
        Ok((key, settled))
    }

    /// A pulling consumer asks for one message: true if it was delivered
    /// at once. Otherwise the ask stands until one comes or [`Self::unpull`].
    pub(super) fn pull(&mut self, conn: ConnId, id: &str) -> bool {
        let Some(key) = self.conns.get(&conn).and_then(|c| c.subs.get(id)).copied() else {
            return false;
        };
        let Some(sub) = self.subs.get_mut(&key) else {
            return false;
        };
        sub.credit = 1;
        let name = sub.destination.name.clone();
        if sub.destination.kind == Kind::Queue {
            self.dispatch(&name);
        }
        self.subs.get(&key).is_some_and(|s| s.credit == 0)
    }

    /// Withdraws a pulling consumer's standing ask: true if nothing was
    /// delivered for it (the consumer is told so).
    pub(super) fn unpull(&mut self, conn: ConnId, id: &str) -> bool {
        let key = self.conns.get(&conn).and_then(|c| c.subs.get(id)).copied();
        key.and_then(|k| self.subs.get_mut(&k))
            .is_some_and(|s| std::mem::take(&mut s.credit) > 0)
    }

    /// After an acknowledgement: a connection that was held back by its
    /// bound on unacknowledged bytes gets its other subscriptions served.
    pub(super) fn unstarve(&mut self, conn: ConnId) {
        let starved = self
            .conns
            .get_mut(&conn)
            .is_some_and(|c| std::mem::take(&mut c.starved));
        if starved {
            self.resume(conn);
        }
    }

    /// Acknowledges (with `only`, the one message named, whatever the
    /// mode); returns the journal ids of stored messages acknowledged.
    pub(super) fn ack(
        &mut self,
        conn: ConnId,
        ack: AckId,
        only: bool,
    ) -> Result<Vec<u64>, RouterError> {
        let (key, acked) = self.settle(conn, ack, only)?;
        let size = total_size(&acked);
        self.memory = self.memory.saturating_sub(size);
        let Some(sub) = self.subs.get(&key) else {
            return Err(RouterError::SubscriptionGone(key));
        };
        let name = sub.destination.name.clone();
        let count = acked.len() as u64;
        match sub.destination.kind {
            Kind::Queue => {
                if let Some(q) = self.queues.get_mut(&name) {
                    q.dequeued += count;
                    q.bytes = q.bytes.saturating_sub(size);
                    if !q.failures.is_empty() {
                        for m in &acked {
                            q.failures.remove(&m.seq);
                        }
                    }
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
    /// redelivered, after their policy's redelivery delay, or to the
    /// dead-letter queue once delivered too often (see `retire`); topic
    /// messages are dropped.
    /// With `poison`, a queue's messages go to the dead-letter queue at once.
    pub(super) fn nack(
        &mut self,
        conn: ConnId,
        ack: AckId,
        poison: Option<&str>,
    ) -> Result<(), RouterError> {
        let (key, returned) = self.settle(conn, ack, false)?;
        let Some(sub) = self.subs.get(&key) else {
            return Err(RouterError::SubscriptionGone(key));
        };
        let name = sub.destination.name.clone();
        match sub.destination.kind {
            Kind::Queue => {
                match poison {
                    Some(why) => self.poisoned(&name, returned, why),
                    None => self.returned(&name, returned, true, tokio::time::Instant::now()),
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
}
