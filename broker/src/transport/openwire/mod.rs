//! An OpenWire client connection (ActiveMQ's JMS client, its `producer`
//! and `consumer` commands): the wire format exchange, the login in
//! ConnectionInfo, then sessions, producers and consumers on the same core
//! as STOMP — a message goes through the intake and the pipeline, a
//! consumer is a router subscription whose deliveries go out as
//! MessageDispatch, and acknowledgements name the broker's sequence.
//!
//! The broker sends its WireFormatInfo first: loose encoding, no cache,
//! no stack traces, its maximum frame size and a 30 s inactivity
//! duration; the client uses the AND of both. A KeepAliveInfo goes out
//! when nothing else did for a third of the inactivity duration, and a
//! client silent for twice that is dropped.

mod convert;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::pipeline::{run_pipeline, Pipeline, SubmitError, PIPELINE_BYTES};
use super::writer::{self, Encoder, Outgoing};
use crate::auth::{Operation, Principal};
use crate::durable::{self, ClientId};
use crate::intake::{Arriving, Source, Stamps};
use crate::logins::Refusal;
use crate::openwire::command::{
    BrokerInfo, ConnectionError, ConsumerInfo, Failure, MessageAck, MessageDispatch, ProducerAck,
    Removed, WireFormatInfo,
};
use crate::openwire::types::{map_bytes, BrokerId, ConsumerId, ProducerId, Value};
use crate::openwire::{decode_frame, encode, Body, Command, WireError};
use crate::router::{
    AckId, AckMode, ConnCounters, ConnId, ConnectionInfo, Consumer, Delivery, Destination, Kind,
    Outbox,
};
use crate::selector::Selector;
use crate::shared::BrokerCore;

/// The OpenWire version offered (ActiveMQ 5.x clients speak 12).
const VERSION: i32 = 12;
/// How long a side may be silent, as offered (ActiveMQ's default).
const INACTIVITY: Duration = Duration::from_secs(30);
/// Deliveries a connection may have queued for writing.
const OUTBOX: usize = 256;
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

fn frame(command: &Command) -> Vec<u8> {
    let mut out = Vec::new();
    encode(command, &mut out);
    out
}

fn response(correlation: i32) -> Vec<u8> {
    frame(&Command::new(Body::Response { correlation }))
}

fn exception(correlation: i32, class: &str, message: impl Into<String>) -> Vec<u8> {
    frame(&Command::new(Body::ExceptionResponse {
        correlation,
        error: Some(Failure {
            class: Some(class.to_owned()),
            message: Some(message.into()),
        }),
    }))
}

/// The broker's side of the wire format exchange.
fn wire_format(max_frame: usize) -> Vec<u8> {
    let options = [
        ("TightEncodingEnabled", Value::Bool(false)),
        ("CacheEnabled", Value::Bool(false)),
        ("CacheSize", Value::Int(0)),
        ("SizePrefixDisabled", Value::Bool(false)),
        ("StackTraceEnabled", Value::Bool(false)),
        ("TcpNoDelayEnabled", Value::Bool(true)),
        (
            "MaxInactivityDuration",
            Value::Long(INACTIVITY.as_millis() as i64),
        ),
        ("MaxInactivityDurationInitalDelay", Value::Long(10_000)),
        (
            "MaxFrameSize",
            Value::Long(i64::try_from(max_frame).unwrap_or(i64::MAX)),
        ),
        ("ProviderName", Value::String("portico-broker".into())),
        (
            "ProviderVersion",
            Value::String(env!("CARGO_PKG_VERSION").into()),
        ),
    ];
    let options: Vec<(String, Value)> = options
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    frame(&Command::new(Body::WireFormatInfo(WireFormatInfo {
        version: VERSION,
        properties: Some(map_bytes(&options)),
    })))
}

/// Reads whole frames from a connection.
struct Frames {
    buf: Vec<u8>,
    max: usize,
}

/// Why a connection ends.
enum End {
    /// The peer closed, or said goodbye (ShutdownInfo).
    Closed,
    /// Silent too long, or a read failed.
    Gone(String),
    /// It sent what is not OpenWire.
    Bad(WireError),
}

impl Frames {
    async fn next<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        timeout: Option<Duration>,
    ) -> Result<Command, End> {
        loop {
            match decode_frame(&self.buf, self.max) {
                Ok(Some((command, used))) => {
                    self.buf.drain(..used);
                    return Ok(command);
                }
                Ok(None) => {}
                Err(e) => return Err(End::Bad(e)),
            }
            if self.buf.capacity() - self.buf.len() < 16 * 1024 {
                self.buf.reserve(16 * 1024);
            }
            let read = reader.read_buf(&mut self.buf);
            let n = match timeout {
                Some(t) => tokio::time::timeout(t, read)
                    .await
                    .map_err(|_| End::Gone("nothing from the client in time".into()))?,
                None => read.await,
            }
            .map_err(|e| End::Gone(e.to_string()))?;
            if n == 0 {
                return Err(End::Closed);
            }
            // Give back what a large frame left behind once it is read.
            if self.buf.is_empty() && self.buf.capacity() > 256 * 1024 {
                self.buf = Vec::with_capacity(16 * 1024);
            }
        }
    }
}

/// Serves one OpenWire connection until it ends or the broker stops.
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
    let mut frames = Frames {
        buf: Vec::with_capacity(16 * 1024),
        // Until the login succeeds, a frame is small.
        max: core.limits.max_login_frame_size,
    };
    let mut hello = wire_format(core.limits.max_frame_size);
    let broker_info = Command::new(Body::BrokerInfo(Box::new(BrokerInfo {
        broker_id: Some(BrokerId(format!("ID:{}", core.name))),
        broker_url: None,
        peers: Some(Vec::new()),
        broker_name: Some(core.name.clone()),
        slave: false,
        master: false,
        fault_tolerant: false,
        duplex: false,
        network: false,
        connection_id: i64::try_from(id.0).unwrap_or(0),
        upload_url: None,
        network_properties: None,
    })));
    encode(&broker_info, &mut hello);
    let login = tokio::select! {
        _ = stop.cancelled() => return,
        r = tokio::time::timeout_at(deadline, handshake(&core, &mut reader, &mut writer, &mut frames, &hello, remote, &transport)) => r,
    };
    let login = match login {
        Ok(Ok(login)) => login,
        Ok(Err(refusal)) => {
            core.metrics_error();
            if let Some(bytes) = refusal.answer {
                let _ = writer.write_all(&bytes).await;
            }
            let _ = writer.shutdown().await;
            debug!(conn = %id, client.addr = %remote, error = %refusal.reason, "OpenWire connection refused");
            return;
        }
        Err(_) => {
            core.metrics_error();
            debug!(conn = %id, client.addr = %remote, "OpenWire: no login in time");
            return;
        }
    };
    frames.max = core.limits.max_frame_size;
    let (control_tx, control_rx) = mpsc::channel::<Vec<u8>>(64);
    let (outbox, outbox_rx) = Outbox::new(OUTBOX);
    let (stalled, evicted) = (outbox.stalled.clone(), outbox.evicted.clone());
    let info = ConnectionInfo::new(
        id,
        remote.to_string(),
        login.principal.user.clone(),
        transport.clone(),
        format!("openwire/{}", login.version),
    );
    let counters = info.counters.clone();
    core.router.register(id, outbox, info).await;
    let (pipe_tx, pipe_rx) = mpsc::channel(256);
    let pipeline_task = tokio::spawn(run_pipeline(core.clone(), pipe_rx, control_tx.clone()));
    info!(conn = %id, client.addr = %remote, user = %login.principal.user, transport = %transport, "OpenWire client connected");
    let writer_done = CancellationToken::new();
    let writer_task = tokio::spawn(writer::run(
        Outgoing {
            core: core.clone(),
            conn: id,
            control: control_rx,
            outbox: outbox_rx,
            stalled,
            evicted,
            beat: Some(login.inactivity / 3),
            done: writer_done.clone(),
            encoder: OpenWireEncoder {
                broker: core.name.clone(),
                connection: login.connection.clone(),
                counters: counters.clone(),
            },
        },
        writer,
    ));
    let _ = control_tx.send(response(login.correlation)).await;
    let mut session = Session {
        core: core.clone(),
        id,
        control: control_tx,
        sender: Arc::from(login.principal.user.as_str()),
        principal: login.principal,
        client_id: login.client_id,
        pipeline: Pipeline {
            tx: pipe_tx,
            budget: Arc::new(Semaphore::new(PIPELINE_BYTES as usize)),
        },
        producers: HashMap::new(),
        consumers: HashMap::new(),
        known: HashSet::new(),
        counters,
    };
    let expect = (!login.inactivity.is_zero()).then_some(login.inactivity * 2);
    let outcome = tokio::select! {
        _ = stop.cancelled() => Ok(()),
        _ = writer_done.cancelled() => Ok(()),
        r = session.run(&mut reader, &mut frames, expect) => r,
    };
    if let Err(why) = outcome {
        core.metrics_error();
        debug!(conn = %id, error = %why, "OpenWire connection closed with an error");
        let error = Command::new(Body::ConnectionError(ConnectionError {
            error: Some(Failure {
                class: Some("java.io.IOException".into()),
                message: Some(why),
            }),
            connection_id: None,
        }));
        let _ = session.control.send(frame(&error)).await;
    }
    // What was received is routed before the connection goes.
    let Session {
        pipeline, control, ..
    } = session;
    drop(pipeline);
    let _ = pipeline_task.await;
    core.router.unregister(id).await;
    drop(control);
    let _ = writer_task.await;
    info!(conn = %id, client.addr = %remote, "OpenWire client disconnected");
}

/// A client that logged in.
struct Login {
    principal: Principal,
    client_id: Option<ClientId>,
    /// Its ConnectionInfo's connection id (consumer ids carry it).
    connection: String,
    /// The ConnectionInfo's command id, answered once the connection runs.
    correlation: i32,
    version: i32,
    inactivity: Duration,
}

/// Why a connection was refused before it ran, and what to tell it.
struct Refused {
    reason: String,
    answer: Option<Vec<u8>>,
}

/// The wire format exchange and the login in ConnectionInfo.
async fn handshake<R, W>(
    core: &BrokerCore,
    reader: &mut R,
    writer: &mut W,
    frames: &mut Frames,
    hello: &[u8],
    remote: SocketAddr,
    transport: &str,
) -> Result<Login, Refused>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let gone = |end: End| Refused {
        reason: match end {
            End::Closed => "closed before logging in".into(),
            End::Gone(why) => why,
            End::Bad(e) => e.to_string(),
        },
        answer: None,
    };
    writer.write_all(hello).await.map_err(|e| Refused {
        reason: e.to_string(),
        answer: None,
    })?;
    let mut version = None;
    let mut inactivity = INACTIVITY;
    loop {
        let command = frames.next(reader, None).await.map_err(gone)?;
        match command.body {
            Body::WireFormatInfo(info) => {
                if info.version < VERSION {
                    return Err(Refused {
                        reason: format!(
                            "OpenWire version {} is not supported (12 is)",
                            info.version
                        ),
                        answer: None,
                    });
                }
                let theirs = info
                    .properties
                    .as_deref()
                    .and_then(|p| crate::openwire::types::read_map(p).ok())
                    .and_then(|m| {
                        m.into_iter().find_map(|(k, v)| match (k.as_str(), v) {
                            ("MaxInactivityDuration", Value::Long(ms)) => Some(ms),
                            _ => None,
                        })
                    });
                if let Some(ms) = theirs {
                    let ms = u64::try_from(ms).unwrap_or(0);
                    inactivity = if ms == 0 {
                        Duration::ZERO
                    } else {
                        inactivity.min(Duration::from_millis(ms))
                    };
                }
                version = Some(VERSION.min(info.version));
            }
            Body::KeepAliveInfo => {}
            Body::ConnectionInfo(info) if version.is_some() => {
                let correlation = command.id;
                let user = info.user.as_deref().filter(|u| !u.is_empty());
                let refuse = |why: &str| {
                    core.login_failed();
                    info!(client.addr = %remote, transport, user = ?user.unwrap_or(""), "authentication failed: {why}");
                };
                let principal = match core
                    .logins
                    .check(remote.ip(), user, info.password.as_deref())
                    .await
                {
                    Ok(p) => p,
                    Err(why) => {
                        refuse(&why.to_string());
                        let message = match why {
                            Refusal::Backoff { .. } => why.to_string(),
                            _ => format!(
                                "User name [{}] or password is invalid.",
                                user.unwrap_or("")
                            ),
                        };
                        return Err(Refused {
                            reason: message.clone(),
                            answer: Some(exception(
                                correlation,
                                "java.lang.SecurityException",
                                message,
                            )),
                        });
                    }
                };
                let client_id = match info.client_id.as_deref().filter(|c| !c.is_empty()) {
                    None => None,
                    Some(cid) => Some(core.durables.claim(cid).ok_or_else(|| {
                        let message =
                            format!("Broker: {} - Client: {cid} already connected", core.name);
                        Refused {
                            reason: message.clone(),
                            answer: Some(exception(
                                correlation,
                                "javax.jms.InvalidClientIDException",
                                message,
                            )),
                        }
                    })?),
                };
                return Ok(Login {
                    principal,
                    client_id,
                    connection: info.connection_id.map(|c| c.0).unwrap_or_default(),
                    correlation,
                    version: version.unwrap_or(VERSION),
                    inactivity,
                });
            }
            _ => {
                return Err(Refused {
                    reason: "expected WireFormatInfo, then ConnectionInfo".into(),
                    answer: None,
                })
            }
        }
    }
}

/// A consumer of this connection.
struct Consuming {
    /// The router subscription's id.
    subscription: String,
}

/// A producer of this connection, and whether it wants ProducerAcks.
struct Producing {
    window: bool,
}

struct Session {
    core: Arc<BrokerCore>,
    id: ConnId,
    control: mpsc::Sender<Vec<u8>>,
    principal: Principal,
    sender: Arc<str>,
    client_id: Option<ClientId>,
    pipeline: Pipeline,
    producers: HashMap<ProducerId, Producing>,
    consumers: HashMap<ConsumerId, Consuming>,
    /// Destinations known to exist (sent to before).
    known: HashSet<Destination>,
    counters: Arc<ConnCounters>,
}

/// The subscription id of a consumer: its session and value, then its
/// connection (which may hold anything but a newline).
fn subscription_id(c: &ConsumerId) -> String {
    format!("{}\n{}\n{}", c.session, c.value, c.connection)
}

fn consumer_of(subscription: &str) -> Option<ConsumerId> {
    let mut parts = subscription.splitn(3, '\n');
    Some(ConsumerId {
        session: parts.next()?.parse().ok()?,
        value: parts.next()?.parse().ok()?,
        connection: parts.next()?.to_owned(),
    })
}

/// Whether a destination is one of ActiveMQ's advisory topics, which a
/// JMS client subscribes to by default: accepted, and never sent to.
fn advisory(name: &str) -> bool {
    name.starts_with("ActiveMQ.Advisory.")
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

    async fn run<R: AsyncRead + Unpin>(
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
                self.send(exception(
                    id,
                    "javax.jms.TransactionRolledBackException",
                    "transacted sessions are not supported over OpenWire yet",
                ))
                .await;
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
            Body::KeepAliveInfo => {
                if command.response_required {
                    self.send(frame(&Command::new(Body::KeepAliveInfo))).await;
                }
            }
            Body::TransactionInfo(_) => {
                self.send(exception(
                    id,
                    "javax.jms.JMSException",
                    "transacted sessions are not supported over OpenWire yet",
                ))
                .await;
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
        if !self
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
            if self.known.len() < super::session::KNOWN_DESTINATIONS {
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
            dedup: None,
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
        if jms_destination.kind.is_topic() && jms_destination.name.split(',').all(advisory) {
            return Ok(());
        }
        let mut destination = convert::destination(&jms_destination).map_err(invalid)?;
        if durable::is_hidden(&destination) {
            return Err(invalid(format!("cannot consume from {destination}")));
        }
        if !self
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
        let prefetch = usize::try_from(info.prefetch)
            .unwrap_or(0)
            .clamp(1, self.core.limits.max_prefetch);
        let subscription = subscription_id(&consumer_id);
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
        self.consumers
            .insert(consumer_id, Consuming { subscription });
        Ok(())
    }

    async fn unsubscribe(&mut self, consumer: &ConsumerId) {
        if let Some(c) = self.consumers.remove(consumer) {
            let _ = self.core.router.unsubscribe(self.id, c.subscription).await;
        }
    }

    /// A MessageAck: a standard ack settles every message delivered to the
    /// consumer up to the last one it names; an individual ack that one; a
    /// poison ack refuses it (redelivery or the dead-letter queue, by the
    /// policy). Delivered and redelivered acks change nothing here.
    async fn acknowledge(&mut self, ack: &MessageAck) -> Result<(), String> {
        if ack.transaction_id.is_some() {
            return Err("transacted sessions are not supported over OpenWire yet".into());
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
                // redeliveries: the broker's policy takes it from here.
                let _ = self.core.router.nack(self.id, id).await;
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
                if !stored.is_empty() {
                    let durable = self
                        .core
                        .journal
                        .acknowledge(stored)
                        .await
                        .map_err(|e| e.to_string())?;
                    self.pipeline
                        .tx
                        .send(super::pipeline::Piped::Durable {
                            durable,
                            reply: None,
                        })
                        .await
                        .map_err(|_| "the connection is closing".to_owned())?;
                }
                Ok(())
            }
            other => Err(format!("unknown ack type {other}")),
        }
    }
}

/// An OpenWire connection's deliveries: MessageDispatch commands.
struct OpenWireEncoder {
    broker: String,
    /// The client's connection id (its consumers' ids carry it).
    connection: String,
    counters: Arc<ConnCounters>,
}

impl Encoder for OpenWireEncoder {
    fn encode(&self, d: &Delivery, out: &mut Vec<u8>, _acks: &mut Vec<u64>) {
        let consumer = consumer_of(&d.subscription).unwrap_or_else(|| ConsumerId {
            connection: self.connection.clone(),
            session: 0,
            value: 0,
        });
        // A durable subscription's message names its topic.
        let topic = durable::is_hidden(&d.message.destination)
            .then(|| {
                d.message
                    .headers
                    .iter()
                    .find(|(n, _)| n == durable::TOPIC_HEADER)
                    .and_then(|(_, v)| Destination::parse(v).ok())
            })
            .flatten();
        let message = convert::to_jms(&self.broker, &d.message, topic.as_ref());
        let dispatch = Command::new(Body::MessageDispatch(Box::new(MessageDispatch {
            consumer_id: Some(consumer),
            destination: message.destination.clone(),
            redelivery_counter: i32::from(d.redelivered),
            message: Some(Box::new(Command::new(Body::Message(Box::new(message))))),
        })));
        encode(&dispatch, out);
        self.counters.delivered.fetch_add(1, Ordering::Relaxed);
    }

    fn slow_consumer(&self) -> Option<Vec<u8>> {
        None
    }

    fn heartbeat(&self, out: &mut Vec<u8>) {
        encode(&Command::new(Body::KeepAliveInfo), out);
    }
}
