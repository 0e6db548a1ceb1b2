//! An MQTT 3.1.1 client connection on the broker's core, mapped the way
//! ActiveMQ maps MQTT: topic `a/b/c` is `topic://a.b.c` (`+` is `*`, `#`
//! is `>`), a QoS 1 or 2 PUBLISH is a persistent message, and a
//! subscription is a router subscription (QoS 0: acknowledged on delivery;
//! QoS 1: until the client's PUBACK). QoS 2 subscriptions are granted
//! QoS 1; a QoS 2 PUBLISH is taken exactly once (PUBREC once stored,
//! PUBCOMP for PUBREL).
//!
//! A persistent session (`clean_session = false`) keeps its subscriptions
//! as durable subscriptions of its client id, named `QOS:filter` as
//! ActiveMQ names them: what is published while the client is away waits
//! in the journal, across a restart or a failover of a pair. A clean
//! session drops them. A second connection with a client id takes over
//! from the first. The will is published when a connection ends without
//! DISCONNECT, including when it is silent past 1.5 × its keep-alive.
//! A PUBLISH with RETAIN is kept for its topic (see `crate::mqtt::Retained`)
//! and given, RETAIN set, to each new subscription it matches.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::pipeline::{run_pipeline, Pipeline, SubmitError, PIPELINE_BYTES};
use super::writer::{self, Encoder, Outgoing};
use crate::auth::{Operation, Principal};
use crate::durable;
use crate::intake::{Arriving, Source};
use crate::mqtt::{
    connack, decode, encode, swap_topic, valid_filter, valid_topic, Connect, MqttError, Packet,
    Publish, QoS, Will, SUBSCRIPTION_FAILED,
};
use crate::router::{
    AckId, AckMode, ConnCounters, ConnId, ConnectionInfo, Consumer, Delivery, Destination, Outbox,
};
use crate::shared::BrokerCore;

/// Deliveries a connection may have queued for writing.
const OUTBOX: usize = 256;
/// QoS 1 messages in flight to one subscription (unacknowledged).
const IN_FLIGHT: usize = 100;
/// QoS 2 messages one client may have between PUBREC and PUBREL.
const MAX_QOS2_PENDING: usize = 1000;
/// The header saying a message's MQTT QoS, as ActiveMQ names it.
const QOS_HEADER: &str = "ActiveMQ.MQTT.QoS";

/// The MQTT clients connected now, by client id.
#[derive(Debug, Default)]
pub(crate) struct MqttClients {
    clients: Mutex<HashMap<String, (ConnId, CancellationToken)>>,
}

impl MqttClients {
    /// Registers `conn` as `client_id`'s connection; a connection that had
    /// the id is told to stop.
    fn take_over(&self, client_id: &str, conn: ConnId, stop: CancellationToken) {
        let old = self
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(client_id.to_owned(), (conn, stop));
        if let Some((_, old)) = old {
            old.cancel();
        }
    }

    fn release(&self, client_id: &str, conn: ConnId) {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if clients.get(client_id).is_some_and(|(c, _)| *c == conn) {
            clients.remove(client_id);
        }
    }
}

fn bytes(packet: &Packet) -> Vec<u8> {
    let mut out = Vec::new();
    encode(packet, &mut out);
    out
}

/// Reads whole packets.
struct Packets {
    buf: Vec<u8>,
    max: usize,
}

enum End {
    Closed,
    Silent,
    Bad(MqttError),
    Io(std::io::Error),
}

impl Packets {
    async fn next<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        silence: Option<Duration>,
    ) -> Result<Packet, End> {
        loop {
            match decode(&self.buf, self.max) {
                Ok(Some((packet, used))) => {
                    self.buf.drain(..used);
                    return Ok(packet);
                }
                Ok(None) => {}
                Err(e) => return Err(End::Bad(e)),
            }
            if self.buf.capacity() - self.buf.len() < 16 * 1024 {
                self.buf.reserve(16 * 1024);
            }
            let read = reader.read_buf(&mut self.buf);
            let n = match silence {
                Some(limit) => tokio::time::timeout(limit, read)
                    .await
                    .map_err(|_| End::Silent)?,
                None => read.await,
            }
            .map_err(End::Io)?;
            if n == 0 {
                return Err(End::Closed);
            }
            if self.buf.is_empty() && self.buf.capacity() > 256 * 1024 {
                self.buf = Vec::with_capacity(16 * 1024);
            }
        }
    }
}

/// A subscription's router id: its QoS, then its filter.
fn subscription_id(qos: QoS, filter: &str) -> String {
    format!("{}\n{filter}", qos as u8)
}

fn subscription_qos(id: &str) -> QoS {
    if id.starts_with('1') {
        QoS::AtLeastOnce
    } else {
        QoS::AtMostOnce
    }
}

/// A persistent session's durable subscription name, as ActiveMQ's.
fn durable_name(qos: QoS, filter: &str) -> String {
    let level = match qos {
        QoS::AtMostOnce => "AT_MOST_ONCE",
        QoS::AtLeastOnce => "AT_LEAST_ONCE",
        QoS::ExactlyOnce => "EXACTLY_ONCE",
    };
    format!("{level}:{filter}")
}

fn from_durable_name(name: &str) -> Option<(QoS, &str)> {
    let (level, filter) = name.split_once(':')?;
    let qos = match level {
        "AT_MOST_ONCE" => QoS::AtMostOnce,
        "AT_LEAST_ONCE" | "EXACTLY_ONCE" => QoS::AtLeastOnce,
        _ => return None,
    };
    Some((qos, filter))
}

/// QoS 1 deliveries waiting for their PUBACK: packet id → ack id (empty
/// for a retained message, which settles nothing in the router).
#[derive(Default)]
struct Outstanding {
    next: u16,
    acks: HashMap<u16, String>,
}

impl Outstanding {
    /// A packet id not in use, now standing for `ack`.
    fn allocate(&mut self, ack: String) -> u16 {
        loop {
            self.next = self.next.wrapping_add(1).max(1);
            if !self.acks.contains_key(&self.next) {
                break;
            }
        }
        self.acks.insert(self.next, ack);
        self.next
    }
}

/// An MQTT connection's deliveries: PUBLISH packets.
struct MqttEncoder {
    outstanding: Arc<Mutex<Outstanding>>,
    counters: Arc<ConnCounters>,
}

impl Encoder for MqttEncoder {
    fn encode(&self, d: &Delivery, out: &mut Vec<u8>, _acks: &mut Vec<u64>) {
        let qos = subscription_qos(&d.subscription);
        // A persistent session's message names its topic.
        let topic = if durable::is_hidden(&d.message.destination) {
            d.message
                .headers
                .iter()
                .find(|(n, _)| n == durable::TOPIC_HEADER)
                .and_then(|(_, v)| Destination::parse(v).ok())
                .map_or_else(|| d.message.destination.name.clone(), |t| t.name)
        } else {
            d.message.destination.name.clone()
        };
        let id = match (&d.ack, qos) {
            (Some(ack), QoS::AtLeastOnce) => Some(
                self.outstanding
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .allocate(ack.clone()),
            ),
            _ => None,
        };
        encode(
            &Packet::Publish(Publish {
                dup: d.redelivered && id.is_some(),
                qos: if id.is_some() {
                    QoS::AtLeastOnce
                } else {
                    QoS::AtMostOnce
                },
                retain: false,
                topic: swap_topic(&topic),
                id,
                payload: d.message.body.clone(),
            }),
            out,
        );
        self.counters.delivered.fetch_add(1, Ordering::Relaxed);
    }

    fn slow_consumer(&self) -> Option<Vec<u8>> {
        None
    }

    fn heartbeat(&self, _out: &mut Vec<u8>) {}
}

/// Serves one MQTT connection until it ends or the broker stops.
pub(crate) async fn serve<S>(
    core: Arc<BrokerCore>,
    stream: S,
    remote: SocketAddr,
    transport: String,
    deadline: Instant,
    stop: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let id = core.next_connection();
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut packets = Packets {
        buf: Vec::with_capacity(4 * 1024),
        max: core.limits.max_login_frame_size,
    };
    let first = tokio::select! {
        _ = stop.cancelled() => return,
        r = tokio::time::timeout_at(deadline, packets.next(&mut reader, None)) => r,
    };
    let connect = match first {
        Ok(Ok(Packet::Connect(c))) => c,
        Ok(Err(End::Bad(MqttError::BadProtocol { name, level }))) => {
            core.metrics_error();
            let refusal = bytes(&Packet::ConnAck {
                session_present: false,
                code: connack::BAD_PROTOCOL_VERSION,
            });
            let _ = writer.write_all(&refusal).await;
            debug!(conn = %id, client.addr = %remote, name, level, "MQTT: unsupported protocol version");
            return;
        }
        Ok(Ok(other)) => {
            core.metrics_error();
            debug!(conn = %id, client.addr = %remote, packet = other.name(), "MQTT: the first packet is not CONNECT");
            return;
        }
        Ok(Err(_)) | Err(_) => {
            core.metrics_error();
            debug!(conn = %id, client.addr = %remote, "MQTT: no CONNECT in time");
            return;
        }
    };
    let refuse = |code: u8| {
        bytes(&Packet::ConnAck {
            session_present: false,
            code,
        })
    };
    let password = connect
        .password
        .as_deref()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let principal = match core
        .logins
        .check(
            remote.ip(),
            connect.username.as_deref(),
            password.as_deref(),
        )
        .await
    {
        Ok(p) => p,
        Err(why) => {
            core.login_failed();
            info!(client.addr = %remote, transport, user = ?connect.username.as_deref().unwrap_or(""), "authentication failed: {why}");
            let _ = writer
                .write_all(&refuse(connack::BAD_USERNAME_OR_PASSWORD))
                .await;
            return;
        }
    };
    let client_id = if connect.client_id.is_empty() {
        if !connect.clean_session {
            let _ = writer
                .write_all(&refuse(connack::IDENTIFIER_REJECTED))
                .await;
            return;
        }
        format!("portico-{}-{}", core.name, id.0)
    } else {
        connect.client_id.clone()
    };
    let ended = CancellationToken::new();
    core.mqtt_clients.take_over(&client_id, id, ended.clone());
    let mut session = Session::new(core.clone(), id, principal, client_id.clone(), &connect);
    let session_present = match session.restore(connect.clean_session).await {
        Ok(present) => present,
        Err(e) => {
            warn!(conn = %id, client_id, error = %e, "MQTT: the session cannot be restored");
            let _ = writer.write_all(&refuse(connack::SERVER_UNAVAILABLE)).await;
            core.mqtt_clients.release(&client_id, id);
            return;
        }
    };
    packets.max = core.limits.max_frame_size;
    let (control_tx, control_rx) = mpsc::channel::<Vec<u8>>(64);
    let (outbox, outbox_rx) = Outbox::new(OUTBOX);
    let (stalled, evicted) = (outbox.stalled.clone(), outbox.evicted.clone());
    let info = ConnectionInfo::new(
        id,
        remote.to_string(),
        session.principal.user.clone(),
        transport.clone(),
        format!("mqtt/{}", if connect.level == 4 { "3.1.1" } else { "3.1" }),
    );
    session.counters = info.counters.clone();
    core.router.register(id, outbox, info).await;
    let (pipe_tx, pipe_rx) = mpsc::channel(256);
    let pipeline_task = tokio::spawn(run_pipeline(core.clone(), pipe_rx, control_tx.clone()));
    session.pipeline = Some(Pipeline {
        tx: pipe_tx,
        budget: Arc::new(Semaphore::new(PIPELINE_BYTES as usize)),
    });
    session.control = Some(control_tx.clone());
    let writer_done = CancellationToken::new();
    let writer_task = tokio::spawn(writer::run(
        Outgoing {
            core: core.clone(),
            conn: id,
            control: control_rx,
            outbox: outbox_rx,
            stalled,
            evicted,
            beat: None,
            done: writer_done.clone(),
            encoder: MqttEncoder {
                outstanding: session.outstanding.clone(),
                counters: session.counters.clone(),
            },
        },
        writer,
    ));
    let _ = control_tx
        .send(bytes(&Packet::ConnAck {
            session_present,
            code: connack::ACCEPTED,
        }))
        .await;
    // Its persistent subscriptions resume once the client has its CONNACK.
    if let Err(e) = session.resubscribe().await {
        warn!(conn = %id, client_id, error = %e, "MQTT: a persistent subscription did not resume");
    }
    info!(conn = %id, client.addr = %remote, client_id, user = %session.principal.user, transport = %transport, clean_session = connect.clean_session, "MQTT client connected");
    // Silent for one and a half keep-alive periods: gone.
    let silence = (connect.keep_alive > 0)
        .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
    let outcome = tokio::select! {
        _ = stop.cancelled() => Outcome::Stopped,
        _ = ended.cancelled() => Outcome::TakenOver,
        _ = writer_done.cancelled() => Outcome::Lost("the connection could not be written".into()),
        r = session.run(&mut reader, &mut packets, silence) => r,
    };
    match &outcome {
        Outcome::Disconnected | Outcome::Stopped => {}
        Outcome::TakenOver => {
            info!(conn = %id, client_id, "MQTT: another connection took over the client id");
        }
        Outcome::Lost(why) => {
            debug!(conn = %id, client_id, reason = %why, "MQTT connection lost");
        }
        Outcome::Violation(why) => {
            core.metrics_error();
            info!(conn = %id, client.addr = %remote, reason = %why, "MQTT connection closed: protocol violation");
        }
    }
    // A connection that ended without DISCONNECT publishes its will.
    if !matches!(outcome, Outcome::Disconnected) {
        if let Some(will) = session.will.take() {
            session.publish_will(will).await;
        }
    }
    let pipeline = session.pipeline.take();
    if let Some(p) = &pipeline {
        let _ = p.flush().await;
    }
    drop(pipeline);
    let _ = pipeline_task.await;
    core.router.unregister(id).await;
    core.mqtt_clients.release(&client_id, id);
    drop(session);
    drop(control_tx);
    let _ = writer_task.await;
    info!(conn = %id, client.addr = %remote, "MQTT client disconnected");
}

/// How a connection's reading ended.
enum Outcome {
    /// DISCONNECT: the will is dropped.
    Disconnected,
    Stopped,
    TakenOver,
    Lost(String),
    Violation(String),
}

struct Session {
    core: Arc<BrokerCore>,
    id: ConnId,
    principal: Principal,
    sender: Arc<str>,
    client_id: String,
    clean: bool,
    will: Option<Will>,
    pipeline: Option<Pipeline>,
    control: Option<mpsc::Sender<Vec<u8>>>,
    counters: Arc<ConnCounters>,
    outstanding: Arc<Mutex<Outstanding>>,
    /// Filters subscribed to (router ids).
    subscriptions: HashMap<String, String>,
    /// Persistent subscriptions found at CONNECT: (durable name, queue).
    resuming: Vec<(String, Destination)>,
    /// QoS 2 packet ids between PUBREC and PUBREL.
    qos2: HashSet<u16>,
    known: HashSet<Destination>,
}

impl Session {
    fn new(
        core: Arc<BrokerCore>,
        id: ConnId,
        principal: Principal,
        client_id: String,
        connect: &Connect,
    ) -> Self {
        Self {
            core,
            id,
            sender: Arc::from(principal.user.as_str()),
            principal,
            client_id,
            clean: connect.clean_session,
            will: connect.will.clone(),
            pipeline: None,
            control: None,
            counters: Arc::default(),
            outstanding: Arc::default(),
            subscriptions: HashMap::new(),
            resuming: Vec::new(),
            qos2: HashSet::new(),
            known: HashSet::new(),
        }
    }

    async fn send(&self, packet: &Packet) {
        if let Some(c) = &self.control {
            let _ = c.send(bytes(packet)).await;
        }
    }

    /// A clean session drops what an earlier one kept; a persistent one
    /// finds its subscriptions (whether there were any is
    /// `session_present`).
    async fn restore(&mut self, clean: bool) -> Result<bool, String> {
        let mine: Vec<durable::Subscription> = self
            .core
            .durables
            .list()
            .into_iter()
            .filter(|s| s.client_id == self.client_id)
            .collect();
        if clean {
            for s in mine {
                self.core
                    .durable_unsubscribe(&self.client_id, &s.name)
                    .await?;
            }
            return Ok(false);
        }
        let present = !mine.is_empty();
        for s in mine {
            if let Ok(queue) = Destination::parse(&format!("queue://{}", s.queue)) {
                self.resuming.push((s.name, queue));
            }
        }
        Ok(present)
    }

    async fn resubscribe(&mut self) -> Result<(), String> {
        for (name, queue) in std::mem::take(&mut self.resuming) {
            let Some((qos, filter)) = from_durable_name(&name) else {
                continue;
            };
            let id = subscription_id(qos, filter);
            self.core
                .router
                .subscribe(self.id, id.clone(), queue, consumer(qos, &self.core))
                .await
                .map_err(|e| e.to_string())?;
            self.subscriptions.insert(filter.to_owned(), id);
        }
        Ok(())
    }

    async fn run<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        packets: &mut Packets,
        silence: Option<Duration>,
    ) -> Outcome {
        loop {
            let packet = match packets.next(reader, silence).await {
                Ok(p) => p,
                Err(End::Closed) => return Outcome::Lost("closed without DISCONNECT".into()),
                Err(End::Silent) => return Outcome::Lost("silent past its keep-alive".into()),
                Err(End::Io(e)) => return Outcome::Lost(e.to_string()),
                Err(End::Bad(e)) => return Outcome::Violation(e.to_string()),
            };
            let result = match packet {
                Packet::Publish(p) => self.publish(p).await,
                Packet::PubAck(packet_id) => self.acknowledged(packet_id).await,
                Packet::PubRel(packet_id) => {
                    self.qos2.remove(&packet_id);
                    self.send(&Packet::PubComp(packet_id)).await;
                    Ok(())
                }
                // This broker sends QoS 1 at most.
                Packet::PubRec(_) | Packet::PubComp(_) => Ok(()),
                Packet::Subscribe { id, filters } => self.subscribe(id, filters).await,
                Packet::Unsubscribe { id, filters } => {
                    for filter in filters {
                        self.unsubscribe(&filter).await;
                    }
                    self.send(&Packet::UnsubAck(id)).await;
                    Ok(())
                }
                Packet::PingReq => {
                    self.send(&Packet::PingResp).await;
                    Ok(())
                }
                Packet::Disconnect => return Outcome::Disconnected,
                other => Err(format!("a client does not send {}", other.name())),
            };
            if let Err(why) = result {
                return Outcome::Violation(why);
            }
        }
    }

    /// A PUBLISH: stored (QoS 1 and 2) and routed, then answered.
    async fn publish(&mut self, p: Publish) -> Result<(), String> {
        if !valid_topic(&p.topic) {
            return Err(format!(
                "PUBLISH to {:?}: a topic name has no wildcards",
                p.topic
            ));
        }
        let destination = Destination::parse(&format!("topic://{}", swap_topic(&p.topic)))
            .map_err(|e| format!("PUBLISH to {:?}: {e}", p.topic))?;
        if !self
            .core
            .auth
            .allows(&self.principal, Operation::Write, &destination)
        {
            return Err(format!(
                "user {} may not publish to {:?}",
                self.principal.user, p.topic
            ));
        }
        if p.retain {
            // Kept (or, empty, cleared) before the PUBLISH is answered; a
            // store over its bounds still delivers the message.
            if let Err(why) = self
                .core
                .retained
                .set(&destination.name, p.qos, &p.payload)
                .await
            {
                warn!(conn = %self.id, topic = %p.topic, reason = %why, "MQTT: a retained message is not kept");
            }
        }
        let reply = match (p.qos, p.id) {
            (QoS::AtLeastOnce, Some(id)) => Some(bytes(&Packet::PubAck(id))),
            (QoS::ExactlyOnce, Some(id)) => {
                // A re-sent QoS 2 PUBLISH before its PUBREL: taken once.
                if self.qos2.contains(&id) {
                    self.send(&Packet::PubRec(id)).await;
                    return Ok(());
                }
                if self.qos2.len() >= MAX_QOS2_PENDING {
                    return Err("too many QoS 2 messages waiting for PUBREL".into());
                }
                self.qos2.insert(id);
                Some(bytes(&Packet::PubRec(id)))
            }
            _ => None,
        };
        self.submit(destination, p.payload, p.qos, reply).await
    }

    async fn submit(
        &mut self,
        destination: Destination,
        payload: Vec<u8>,
        qos: QoS,
        reply: Option<Vec<u8>>,
    ) -> Result<(), String> {
        if !self.known.contains(&destination) {
            self.core
                .router
                .ensure_for(self.id, destination.clone())
                .await
                .map_err(|e| e.to_string())?;
            if self.known.len() < crate::transport::session::KNOWN_DESTINATIONS {
                self.known.insert(destination.clone());
            }
        }
        let persistent = qos != QoS::AtMostOnce;
        let mut headers = vec![
            (QOS_HEADER.to_owned(), (qos as u8).to_string()),
            ("portico-jms-kind".to_owned(), "bytes".to_owned()),
        ];
        if persistent {
            headers.push(("persistent".to_owned(), "true".to_owned()));
        }
        let arriving = Arriving {
            expires: 0,
            priority: crate::router::DEFAULT_PRIORITY,
            group: None,
            deliver_at: 0,
            source: Source::Mqtt,
            destination,
            headers: &headers,
            body: payload,
            persistent,
            sender: Some(self.sender.clone()),
            dedup: None,
            message_id: None,
        };
        self.counters.sent.fetch_add(1, Ordering::Relaxed);
        let Some(pipeline) = &self.pipeline else {
            return Err("the connection is closing".into());
        };
        match pipeline.submit(&self.core, arriving, reply, || {}).await {
            Ok(()) => Ok(()),
            Err(SubmitError::Closing) => Err("the connection is closing".into()),
            Err(SubmitError::Store(e)) => Err(format!("a message could not be stored: {e}")),
        }
    }

    async fn publish_will(&mut self, will: Will) {
        let Ok(destination) = Destination::parse(&format!("topic://{}", swap_topic(&will.topic)))
        else {
            return;
        };
        if !valid_topic(&will.topic)
            || !self
                .core
                .auth
                .allows(&self.principal, Operation::Write, &destination)
        {
            return;
        }
        info!(conn = %self.id, client_id = %self.client_id, topic = %will.topic, "MQTT: publishing the will");
        let _ = self.submit(destination, will.payload, will.qos, None).await;
    }

    /// A PUBACK: the delivery it names is acknowledged.
    async fn acknowledged(&mut self, packet_id: u16) -> Result<(), String> {
        let ack = self
            .outstanding
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .acks
            .remove(&packet_id);
        let Some(ack) = ack.as_deref().and_then(AckId::parse) else {
            return Ok(());
        };
        let Ok(stored) = self.core.router.ack_one(self.id, ack).await else {
            return Ok(());
        };
        let Some(pipeline) = &self.pipeline else {
            return Ok(());
        };
        match pipeline.acknowledged(&self.core, stored, None).await {
            Ok(()) => Ok(()),
            Err(SubmitError::Closing) => Err("the connection is closing".into()),
            Err(SubmitError::Store(e)) => {
                Err(format!("an acknowledgement could not be stored: {e}"))
            }
        }
    }

    async fn subscribe(&mut self, id: u16, filters: Vec<(String, QoS)>) -> Result<(), String> {
        let mut codes = Vec::with_capacity(filters.len());
        let mut granted_filters = Vec::new();
        for (filter, requested) in filters {
            let granted = requested.min(QoS::AtLeastOnce);
            let code = match self.subscribe_one(&filter, granted).await {
                Ok(()) => {
                    granted_filters.push((filter, granted));
                    granted as u8
                }
                Err(why) => {
                    info!(conn = %self.id, client_id = %self.client_id, filter, reason = %why, "MQTT subscription refused");
                    SUBSCRIPTION_FAILED
                }
            };
            codes.push(code);
        }
        self.send(&Packet::SubAck { id, codes }).await;
        // Then what is retained for the topics each new subscription matches.
        for (filter, granted) in granted_filters {
            self.send_retained(&filter, granted).await;
        }
        Ok(())
    }

    /// The retained messages `filter` matches, RETAIN set, at most at QoS
    /// `granted` (their PUBACKs settle nothing in the router).
    async fn send_retained(&mut self, filter: &str, granted: QoS) {
        let Ok(matcher) = crate::router::Filter::parse(&format!("topic://{}", swap_topic(filter)))
        else {
            return;
        };
        for m in self.core.retained.matching(&matcher) {
            let topic = Destination {
                kind: crate::router::Kind::Topic,
                name: m.topic.clone(),
            };
            if !self
                .core
                .auth
                .allows(&self.principal, Operation::Read, &topic)
            {
                continue;
            }
            let qos = m.qos.min(granted);
            let id = (qos != QoS::AtMostOnce).then(|| {
                let mut o = self.outstanding.lock().unwrap_or_else(|p| p.into_inner());
                o.allocate(String::new())
            });
            self.send(&Packet::Publish(Publish {
                dup: false,
                qos,
                retain: true,
                topic: swap_topic(&m.topic),
                id,
                payload: m.payload.clone(),
            }))
            .await;
        }
    }

    async fn subscribe_one(&mut self, filter: &str, qos: QoS) -> Result<(), String> {
        if !valid_filter(filter) {
            return Err("not a topic filter".into());
        }
        let topic = Destination::parse(&format!("topic://{}", swap_topic(filter)))
            .map_err(|e| e.to_string())?;
        if !self
            .core
            .auth
            .allows(&self.principal, Operation::Read, &topic)
        {
            return Err(format!("user {} may not read it", self.principal.user));
        }
        if !self.subscriptions.contains_key(filter)
            && self.subscriptions.len() >= self.core.limits.max_subscriptions_per_connection
        {
            return Err("too many subscriptions on one connection".into());
        }
        // A new subscription to a filter replaces the old one.
        self.unsubscribe_router(filter).await;
        let destination = if self.clean {
            topic
        } else {
            // Another QoS for the same filter replaces the durable one.
            for other in [QoS::AtMostOnce, QoS::AtLeastOnce] {
                if other != qos {
                    let _ = self
                        .core
                        .durable_unsubscribe(&self.client_id, &durable_name(other, filter))
                        .await;
                }
            }
            self.core
                .durable_subscribe(&self.client_id, &durable_name(qos, filter), &topic, None)
                .await?
        };
        let id = subscription_id(qos, filter);
        self.core
            .router
            .subscribe(self.id, id.clone(), destination, consumer(qos, &self.core))
            .await
            .map_err(|e| e.to_string())?;
        self.subscriptions.insert(filter.to_owned(), id);
        Ok(())
    }

    async fn unsubscribe_router(&mut self, filter: &str) {
        if let Some(id) = self.subscriptions.remove(filter) {
            let _ = self.core.router.unsubscribe(self.id, id).await;
        }
    }

    async fn unsubscribe(&mut self, filter: &str) {
        self.unsubscribe_router(filter).await;
        if !self.clean {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
                let _ = self
                    .core
                    .durable_unsubscribe(&self.client_id, &durable_name(qos, filter))
                    .await;
            }
        }
    }
}

fn consumer(qos: QoS, core: &BrokerCore) -> Consumer {
    match qos {
        QoS::AtMostOnce => Consumer {
            ack: AckMode::Auto,
            prefetch: core.limits.max_prefetch,
            selector: None,
        },
        _ => Consumer {
            ack: AckMode::ClientIndividual,
            prefetch: IN_FLIGHT.min(core.limits.max_prefetch),
            selector: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::Kind;

    #[test]
    fn durable_names_are_activemqs() {
        assert_eq!(durable_name(QoS::AtLeastOnce, "a/+"), "AT_LEAST_ONCE:a/+");
        assert_eq!(
            from_durable_name("AT_LEAST_ONCE:a/+"),
            Some((QoS::AtLeastOnce, "a/+"))
        );
        assert_eq!(from_durable_name("orders"), None);
        assert_eq!(
            subscription_qos(&subscription_id(QoS::AtLeastOnce, "x")),
            QoS::AtLeastOnce
        );
        assert_eq!(
            subscription_qos(&subscription_id(QoS::AtMostOnce, "x")),
            QoS::AtMostOnce
        );
    }

    #[test]
    fn a_topic_is_a_topic() {
        let d =
            Destination::parse(&format!("topic://{}", swap_topic("sensors/hall/temp"))).unwrap();
        assert_eq!(
            (d.kind, d.name.as_str()),
            (Kind::Topic, "sensors.hall.temp")
        );
    }
}
