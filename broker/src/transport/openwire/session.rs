//! A running OpenWire connection: what its client sends — messages,
//! consumers and their acknowledgements, producers, removals — on the
//! broker's core.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncRead;
use tokio::sync::mpsc;

use crate::auth::{Operation, Principal};
use crate::dedup::Key;
use crate::durable::{self, ClientId};
use crate::intake::{Arriving, Source, Stamps};
use crate::openwire::command::{
    ConsumerInfo, DestinationInfo, Failure, MessageAck, MessageDispatch, MessagePull, ProducerAck,
    Removed, TransactionInfo,
};
use crate::openwire::types::{ConsumerId, ProducerId, TransactionId};
use crate::openwire::{Body, Command};
use crate::router::{AckId, AckMode, ConnCounters, ConnId, Consumer, Destination, Kind};
use crate::selector::Selector;
use crate::shared::BrokerCore;
use crate::transport::pipeline::{Pipeline, SubmitError};

use super::advisory;
use super::convert;
use super::handshake::{End, Frames};
use super::transactions::Transactions;
use super::{exception, frame, response};

/// Producers one connection may hold open.
const MAX_PRODUCERS: usize = 1000;

/// Ack types of a MessageAck.
mod ack {
    pub(super) const DELIVERED: u8 = 0;
    pub(super) const POISON: u8 = 1;
    pub(super) const STANDARD: u8 = 2;
    pub(super) const REDELIVERED: u8 = 3;
    pub(super) const INDIVIDUAL: u8 = 4;
    pub(super) const UNMATCHED: u8 = 5;
    pub(super) const EXPIRED: u8 = 6;
}

/// A consumer of this connection.
pub(super) struct Consuming {
    /// Its router subscriptions' ids (several for a composite of advisory
    /// topics).
    subscriptions: Vec<String>,
    /// Counts its MessagePulls: a pull's timer answers only its own pull.
    pulls: Arc<std::sync::atomic::AtomicU64>,
}

/// A producer of this connection, and whether it wants ProducerAcks.
pub(super) struct Producing {
    window: bool,
}

pub(super) struct Session {
    pub(super) core: Arc<BrokerCore>,
    pub(super) id: ConnId,
    pub(super) control: mpsc::Sender<Vec<u8>>,
    pub(super) principal: Principal,
    pub(super) sender: Arc<str>,
    pub(super) client_id: Option<ClientId>,
    pub(super) pipeline: Pipeline,
    pub(super) producers: HashMap<ProducerId, Producing>,
    pub(super) consumers: HashMap<ConsumerId, Consuming>,
    /// Destinations known to exist (sent to before).
    pub(super) known: HashSet<Destination>,
    pub(super) counters: Arc<ConnCounters>,
    pub(super) transactions: Transactions,
    /// The temporary destinations this connection made (deleted with it).
    pub(super) temporaries: HashSet<Destination>,
}

/// Temporary destinations one connection may hold.
const MAX_TEMPORARIES: usize = 1000;

/// The subscription id of a consumer: its session and value, then its
/// connection (which may hold anything but a newline).
fn subscription_id(c: &ConsumerId, part: usize) -> String {
    format!("{}\n{}\n{part}\n{}", c.session, c.value, c.connection)
}

pub(super) fn consumer_of(subscription: &str) -> Option<ConsumerId> {
    let mut parts = subscription.splitn(4, '\n');
    let session = parts.next()?.parse().ok()?;
    let value = parts.next()?.parse().ok()?;
    let _part = parts.next()?;
    Some(ConsumerId {
        session,
        value,
        connection: parts.next()?.to_owned(),
    })
}

impl Session {
    async fn send(&self, bytes: Vec<u8>) {
        let _ = self.control.send(bytes).await;
    }

    async fn answer(&self, command: &Command) {
        if command.response_required {
            self.send(response(command.id)).await;
        }
    }

    pub(super) async fn run<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        frames: &mut Frames,
        expect: Option<Duration>,
    ) -> Result<(), String> {
        loop {
            let command = match frames.next(reader, expect).await {
                Ok(c) => c,
                Err(End::Closed) => return Ok(()),
                Err(End::Gone(why)) => return Err(why),
                Err(End::Bad(e)) => return Err(e.to_string()),
            };
            if matches!(command.body, Body::ShutdownInfo) {
                return Ok(());
            }
            self.handle(command).await?;
        }
    }

    async fn handle(&mut self, command: Command) -> Result<(), String> {
        let id = command.id;
        match command.body {
            Body::Message(ref m) if m.transaction_id.is_some() => {
                let Body::Message(message) = command.body else {
                    return Ok(());
                };
                let tx = message
                    .transaction_id
                    .clone()
                    .unwrap_or(TransactionId::Local {
                        value: 0,
                        connection: None,
                    });
                match self.transactions.send(&tx, message) {
                    Ok(()) if command.response_required => self.send(response(id)).await,
                    Ok(()) => {}
                    Err(e) => {
                        self.send(exception(id, "javax.jms.TransactionRolledBackException", e))
                            .await;
                    }
                }
            }
            Body::Message(_) => {
                let Body::Message(message) = command.body else {
                    return Ok(());
                };
                self.publish(id, command.response_required, message).await?;
            }
            Body::MessageAck(ack) => self.acknowledge(&ack).await?,
            Body::ConsumerInfo(info) => {
                let reply = match self.subscribe(*info).await {
                    Ok(()) => response(id),
                    Err((class, message)) => exception(id, class, message),
                };
                self.send(reply).await;
            }
            Body::ProducerInfo(ref info) => {
                if self.producers.len() >= MAX_PRODUCERS {
                    self.send(exception(
                        id,
                        "javax.jms.ResourceAllocationException",
                        format!("a connection may hold at most {MAX_PRODUCERS} producers"),
                    ))
                    .await;
                    return Ok(());
                }
                if let Some(producer) = &info.producer_id {
                    self.producers.insert(
                        producer.clone(),
                        Producing {
                            window: info.window_size > 0,
                        },
                    );
                }
                self.answer(&command).await;
            }
            Body::RemoveInfo(ref remove) => {
                match &remove.object {
                    Some(Removed::Consumer(c)) => self.unsubscribe(c).await,
                    Some(Removed::Producer(p)) => {
                        self.producers.remove(p);
                    }
                    Some(Removed::Session(s)) => {
                        let gone: Vec<ConsumerId> = self
                            .consumers
                            .keys()
                            .filter(|c| c.session == s.value)
                            .cloned()
                            .collect();
                        for c in gone {
                            self.unsubscribe(&c).await;
                        }
                        self.producers.retain(|p, _| p.session != s.value);
                    }
                    _ => {}
                }
                self.answer(&command).await;
            }
            Body::RemoveSubscriptionInfo(ref info) => {
                let client_id = info
                    .client_id
                    .clone()
                    .or_else(|| self.client_id.as_ref().map(|c| c.id.clone()));
                let name = info.subscription_name.clone().unwrap_or_default();
                let removed = match client_id {
                    Some(client_id) => self.core.durable_unsubscribe(&client_id, &name).await,
                    None => Err(durable::DurableError::NoClientId.to_string()),
                };
                match removed {
                    Ok(()) => self.answer(&command).await,
                    Err(e) => {
                        self.send(exception(id, "javax.jms.InvalidDestinationException", e))
                            .await;
                    }
                }
            }
            Body::DestinationInfo(ref info) => {
                let reply = match self.temporary(info).await {
                    Ok(()) => response(id),
                    Err(e) => exception(id, "javax.jms.InvalidDestinationException", e),
                };
                if command.response_required {
                    self.send(reply).await;
                }
            }
            Body::MessagePull(ref pull) => self.pull(pull).await,
            Body::KeepAliveInfo => {
                if command.response_required {
                    self.send(frame(&Command::new(Body::KeepAliveInfo))).await;
                }
            }
            Body::TransactionInfo(ref info) => {
                let reply = match self.transaction(info).await {
                    Ok(()) => response(id),
                    Err(e) => exception(id, "javax.jms.TransactionRolledBackException", e),
                };
                self.send(reply).await;
            }
            // Sessions need nothing of their own; temporary destinations
            // are refused when used; the rest asks nothing of the broker.
            _ => self.answer(&command).await,
        }
        Ok(())
    }

    /// A message from a producer: through the intake and the pipeline;
    /// its Response (a synchronous send) or ProducerAck (a producer with a
    /// window) once it is routed.
    async fn publish(
        &mut self,
        id: i32,
        response_required: bool,
        mut message: Box<crate::openwire::command::Message>,
    ) -> Result<(), String> {
        let refuse = |class: &str, why: String| exception(id, class, why);
        let Some(jms_destination) = message.destination.clone() else {
            self.send(refuse(
                "javax.jms.InvalidDestinationException",
                "a message needs a destination".into(),
            ))
            .await;
            return Ok(());
        };
        let destination = match convert::destination(&jms_destination) {
            Ok(d) if !d.is_wildcard() && !durable::is_hidden(&d) => d,
            Ok(d) => {
                self.send(refuse(
                    "javax.jms.InvalidDestinationException",
                    format!("cannot send to {d}"),
                ))
                .await;
                return Ok(());
            }
            Err(e) => {
                self.send(refuse("javax.jms.InvalidDestinationException", e))
                    .await;
                return Ok(());
            }
        };
        if destination.is_temporary() {
            // Anyone may answer on a temporary destination while it exists.
            if !self.core.temporary_exists(&destination) {
                self.send(refuse(
                    "javax.jms.InvalidDestinationException",
                    format!("Cannot publish to a deleted Destination: {destination}"),
                ))
                .await;
                return Ok(());
            }
        } else if !self
            .core
            .auth
            .allows(&self.principal, Operation::Write, &destination)
        {
            self.send(refuse(
                "javax.jms.JMSSecurityException",
                format!(
                    "User {} is not authorized to write to: {}",
                    self.principal.user, destination
                ),
            ))
            .await;
            return Ok(());
        }
        if !self.known.contains(&destination) {
            if let Err(e) = self
                .core
                .router
                .ensure_for(self.id, destination.clone())
                .await
            {
                self.send(refuse(
                    "javax.jms.ResourceAllocationException",
                    e.to_string(),
                ))
                .await;
                return Ok(());
            }
            if self.known.len() < crate::transport::session::KNOWN_DESTINATIONS {
                self.known.insert(destination.clone());
            }
        }
        let arrived = match convert::from_jms(&mut message) {
            Ok(a) => a,
            Err(e) => {
                self.send(refuse("javax.jms.MessageFormatException", e))
                    .await;
                return Ok(());
            }
        };
        let stamps = Stamps::lenient(&arrived.headers);
        let producer = message.producer_id.clone();
        let window = producer
            .as_ref()
            .and_then(|p| self.producers.get(p))
            .is_some_and(|p| p.window);
        let size = i32::try_from(arrived.body.len()).unwrap_or(i32::MAX);
        let reply = if response_required {
            Some(response(id))
        } else if window {
            Some(frame(&Command::new(Body::ProducerAck(ProducerAck {
                producer_id: producer,
                size,
            }))))
        } else {
            None
        };
        // A failover client re-sends what it sent when the broker went: the
        // JMS message id (its producer's id and sequence) recognises it.
        let message_id = message.message_id.as_ref().map(|m| m.text());
        let sender = self.sender.clone();
        let dedup = message_id.as_deref().map(|id| Key::Client {
            sender: &sender,
            id,
        });
        let arriving = Arriving {
            expires: stamps.expires,
            priority: stamps.priority,
            group: stamps.group.clone(),
            deliver_at: 0,
            source: Source::OpenWire,
            destination,
            headers: &arrived.headers,
            body: arrived.body,
            persistent: message.persistent,
            sender: Some(self.sender.clone()),
            dedup,
            message_id: None,
        };
        self.counters.sent.fetch_add(1, Ordering::Relaxed);
        match self
            .pipeline
            .submit(&self.core, arriving, reply, || {})
            .await
        {
            Ok(()) => Ok(()),
            Err(SubmitError::Closing) => Err("the connection is closing".into()),
            Err(SubmitError::Store(e)) => {
                self.send(exception(
                    id,
                    "javax.jms.JMSException",
                    format!("the message could not be stored: {e}"),
                ))
                .await;
                Err(format!("the message could not be stored: {e}"))
            }
        }
    }

    async fn subscribe(&mut self, info: ConsumerInfo) -> Result<(), (&'static str, String)> {
        let invalid = |why: String| ("javax.jms.InvalidDestinationException", why);
        let consumer_id = info
            .consumer_id
            .clone()
            .ok_or_else(|| invalid("a consumer needs an id".into()))?;
        let jms_destination = info
            .destination
            .clone()
            .ok_or_else(|| invalid("a consumer needs a destination".into()))?;
        if jms_destination.kind.is_topic()
            && jms_destination.name.split(',').all(advisory::is_advisory)
        {
            return self
                .subscribe_advisories(consumer_id, &jms_destination.name)
                .await;
        }
        let mut destination = convert::destination(&jms_destination).map_err(invalid)?;
        if durable::is_hidden(&destination) {
            return Err(invalid(format!("cannot consume from {destination}")));
        }
        if destination.is_temporary() {
            if !self.temporaries.contains(&destination) {
                return Err(invalid(format!(
                    "{destination} belongs to another connection: only the connection that made a temporary destination consumes from it"
                )));
            }
        } else if !self
            .core
            .auth
            .allows(&self.principal, Operation::Read, &destination)
        {
            return Err((
                "javax.jms.JMSSecurityException",
                format!(
                    "User {} is not authorized to read from: {}",
                    self.principal.user, destination
                ),
            ));
        }
        let selector_text = info.selector.as_deref().filter(|s| !s.trim().is_empty());
        let mut selector = match selector_text {
            Some(text) => {
                Some(Arc::new(Selector::parse(text).map_err(|e| {
                    ("javax.jms.InvalidSelectorException", e.to_string())
                })?))
            }
            None => None,
        };
        if let (Some(name), Kind::Topic) = (
            info.subscription_name.as_deref().filter(|n| !n.is_empty()),
            destination.kind,
        ) {
            let client_id = self.client_id.as_ref().map(|c| c.id.clone()).ok_or((
                "javax.jms.JMSException",
                durable::DurableError::NoClientId.to_string(),
            ))?;
            destination = self
                .core
                .durable_subscribe(&client_id, name, &destination, selector_text)
                .await
                .map_err(|e| ("javax.jms.JMSException", e))?;
            selector = None;
        }
        // 0: the consumer pulls each message (MessagePull).
        let prefetch = usize::try_from(info.prefetch)
            .unwrap_or(0)
            .min(self.core.limits.max_prefetch);
        let subscription = subscription_id(&consumer_id, 0);
        self.core
            .router
            .subscribe(
                self.id,
                subscription.clone(),
                destination,
                Consumer {
                    ack: AckMode::Client,
                    prefetch,
                    selector,
                },
            )
            .await
            .map_err(|e| ("javax.jms.JMSException", e.to_string()))?;
        self.consumers.insert(
            consumer_id,
            Consuming {
                subscriptions: vec![subscription],
                pulls: Arc::default(),
            },
        );
        Ok(())
    }

    /// A JMS client's subscription to advisory topics (a composite of them,
    /// by default the temporary destinations' two): the temporary ones are
    /// router subscriptions, told first of what exists; others stay silent.
    async fn subscribe_advisories(
        &mut self,
        consumer: ConsumerId,
        names: &str,
    ) -> Result<(), (&'static str, String)> {
        let mut subscriptions = Vec::new();
        for (part, name) in names.split(',').enumerate() {
            if name != advisory::TEMP_QUEUE_TOPIC && name != advisory::TEMP_TOPIC_TOPIC {
                continue;
            }
            let topic = Destination {
                kind: Kind::Topic,
                name: name.to_owned(),
            };
            let existing = advisory::existing(&self.core, &consumer, &topic);
            if !existing.is_empty() {
                self.send(existing).await;
            }
            let subscription = subscription_id(&consumer, part);
            self.core
                .router
                .subscribe(
                    self.id,
                    subscription.clone(),
                    topic,
                    Consumer {
                        ack: AckMode::Auto,
                        prefetch: 1000,
                        selector: None,
                    },
                )
                .await
                .map_err(|e| ("javax.jms.JMSException", e.to_string()))?;
            subscriptions.push(subscription);
        }
        self.consumers.insert(
            consumer,
            Consuming {
                subscriptions,
                pulls: Arc::default(),
            },
        );
        Ok(())
    }

    async fn unsubscribe(&mut self, consumer: &ConsumerId) {
        if let Some(c) = self.consumers.remove(consumer) {
            for subscription in c.subscriptions {
                let _ = self.core.router.unsubscribe(self.id, subscription).await;
            }
        }
    }

    /// A MessagePull of a consumer with prefetch 0: one message, if there
    /// is one; else, once its timeout passes (at once for -1, never for 0),
    /// a dispatch without a message, which tells the consumer there was
    /// none.
    async fn pull(&mut self, pull: &MessagePull) {
        let Some(consumer) = pull.consumer_id.clone() else {
            return;
        };
        let Some(consuming) = self.consumers.get(&consumer) else {
            return;
        };
        let Some(subscription) = consuming.subscriptions.first().cloned() else {
            return;
        };
        let generation = consuming.pulls.fetch_add(1, Ordering::AcqRel) + 1;
        let pulls = consuming.pulls.clone();
        if self.core.router.pull(self.id, subscription.clone()).await || pull.timeout == 0 {
            return;
        }
        let none = frame(&Command::new(Body::MessageDispatch(Box::new(
            MessageDispatch {
                consumer_id: Some(consumer),
                destination: pull.destination.clone(),
                message: None,
                redelivery_counter: 0,
            },
        ))));
        let (core, control, conn) = (self.core.clone(), self.control.clone(), self.id);
        let wait = Duration::from_millis(u64::try_from(pull.timeout).unwrap_or(0));
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            // A later pull of the same consumer has its own timer.
            if pulls.load(Ordering::Acquire) == generation
                && core.router.unpull(conn, subscription).await
            {
                let _ = control.send(none).await;
            }
        });
    }

    /// A DestinationInfo: a temporary destination made (ADD) or deleted
    /// (REMOVE) by this connection. Others ask nothing of the broker.
    async fn temporary(&mut self, info: &DestinationInfo) -> Result<(), String> {
        const ADD: u8 = 0;
        let Some(jms) = &info.destination else {
            return Ok(());
        };
        let destination = convert::destination(jms)?;
        if !destination.is_temporary() {
            return Ok(());
        }
        if info.operation == ADD {
            if self.temporaries.len() >= MAX_TEMPORARIES && !self.temporaries.contains(&destination)
            {
                return Err(format!(
                    "a connection may hold at most {MAX_TEMPORARIES} temporary destinations"
                ));
            }
            self.core.create_temporary(&destination).await?;
            self.temporaries.insert(destination);
        } else if self.temporaries.remove(&destination) {
            self.core.delete_temporary(&destination).await;
        }
        Ok(())
    }

    /// BEGIN, COMMIT (one phase) or ROLLBACK of a local transaction; XA
    /// is refused.
    async fn transaction(&mut self, info: &TransactionInfo) -> Result<(), String> {
        const BEGIN: u8 = 0;
        const COMMIT_ONE_PHASE: u8 = 2;
        const ROLLBACK: u8 = 4;
        let tx = match &info.transaction_id {
            Some(tx @ TransactionId::Local { .. }) => tx.clone(),
            Some(TransactionId::Xa { .. }) => {
                return Err("XA transactions are not supported".into())
            }
            None => return Err("a TransactionInfo needs a transaction id".into()),
        };
        match info.kind {
            BEGIN => self.transactions.begin(tx),
            ROLLBACK => {
                // What it consumed stays delivered: the client redelivers
                // it from its own buffer, and acknowledges it again.
                self.transactions.finish(&tx);
                Ok(())
            }
            COMMIT_ONE_PHASE => {
                let held = self.transactions.finish(&tx);
                for message in held.sends {
                    self.publish(0, false, Box::new(message)).await?;
                }
                for mut ack in held.acks {
                    ack.transaction_id = None;
                    self.acknowledge(&ack).await?;
                }
                // Answered once everything it held is stored and routed.
                self.pipeline.flush().await.map_err(|e| e.to_string())
            }
            other => Err(format!(
                "transaction operation {other} is not supported (local transactions: begin, commit, rollback)"
            )),
        }
    }

    /// A MessageAck: a standard ack settles every message delivered to the
    /// consumer up to the last one it names; an individual ack that one; a
    /// poison ack makes them dead letters (the client redelivered them as
    /// often as its policy allows). Delivered and redelivered acks change
    /// nothing here.
    async fn acknowledge(&mut self, ack: &MessageAck) -> Result<(), String> {
        if let Some(tx) = &ack.transaction_id {
            // Held until COMMIT; a delivered ack says nothing the broker needs.
            if ack.ack_type != ack::DELIVERED && ack.ack_type != ack::REDELIVERED {
                self.transactions.ack(tx, ack.clone())?;
            }
            return Ok(());
        }
        let Some(last) = &ack.last_message_id else {
            return Ok(());
        };
        let seq = u64::try_from(last.broker_sequence).unwrap_or(0);
        let id = AckId::Message { seq };
        match ack.ack_type {
            ack::DELIVERED | ack::REDELIVERED => Ok(()),
            ack::POISON => {
                // A consumer that refuses a message past its own
                // redeliveries: a dead letter now, as ActiveMQ makes it,
                // with the client's reason.
                let why = match &ack.poison_cause {
                    Some(Failure {
                        class,
                        message: Some(message),
                    }) => format!(
                        "{}: {message}",
                        class.as_deref().unwrap_or("java.lang.Throwable")
                    ),
                    _ => "the consumer refused it (poison acknowledgement)".to_owned(),
                };
                let _ = self.core.router.poison(self.id, id, why).await;
                Ok(())
            }
            ack::STANDARD | ack::INDIVIDUAL | ack::UNMATCHED | ack::EXPIRED => {
                let only = ack.ack_type != ack::STANDARD;
                let acked = if only {
                    self.core.router.ack_one(self.id, id).await
                } else {
                    self.core.router.ack(self.id, id).await
                };
                // Already settled (a repeated ack): nothing to do.
                let Ok(stored) = acked else {
                    return Ok(());
                };
                match self.pipeline.acknowledged(&self.core, stored, None).await {
                    Ok(()) => Ok(()),
                    Err(SubmitError::Closing) => Err("the connection is closing".into()),
                    Err(SubmitError::Store(e)) => {
                        Err(format!("an acknowledgement could not be stored: {e}"))
                    }
                }
            }
            other => Err(format!("unknown ack type {other}")),
        }
    }
}
