//! Bridges with ActiveMQ brokers, over OpenWire: the part of ActiveMQ's
//! network connector protocol that forwards by demand, so an ActiveMQ 5.x
//! broker and this one form one network (an on-premises ActiveMQ joining
//! the cloud brokers, or the other way round).
//!
//! The same code runs whichever side connected — an ActiveMQ
//! `<networkConnector uri="static:(ssl://…)" duplex="true"/>` to this
//! broker's `openwire`/`openwire+ssl` transport, or this broker's
//! `[[network_connector]]` with `protocol = "openwire"`:
//! - this broker's demand: the peer subscribes to consumer advisories
//!   (`ActiveMQ.Advisory.Consumer.>`). Each destination with consumers here
//!   (or behind other bridges within `consumer_ttl`) is told as an
//!   advisory message whose data structure is a ConsumerInfo (its broker
//!   path as long as the hops to the consumer), and its end as a RemoveInfo.
//!   The peer then sends those destinations' messages, each naming the
//!   brokers it crossed (brokerPath); one needing a Response gets it once
//!   the message is stored (persistent queue messages) and routed here.
//! - the peer's demand (when this end forwards): this broker subscribes to
//!   the peer's consumer advisories; a consumer there that is not one of
//!   this broker's own subscriptions (its path holds this broker) and is
//!   within `consumer_ttl` becomes a network subscription here, one per
//!   destination. Its messages go across as sends that need a Response;
//!   only the Response acknowledges them here.
//! - loops: what came from the peer is not sent back to it (topics), a
//!   path longer than `message_ttl` stops, and ActiveMQ's own network
//!   filter keeps it from returning what came from here.
//!
//! This broker's BrokerId is its name.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::bridge::{attach, forward_statics, take_arrivals, Forwarded, FromPeer};
use super::demand::{advertise, Announce};
use super::{BridgeError, BridgeState, HeartBeats, Link, Reader, Writer};
use crate::auth::{Operation, Principal};
use crate::config::NetworkConnectorConfig;
use crate::openwire::command::{
    BrokerInfo, ConnectionInfo, ConsumerInfo, Message as JmsMessage, MessageAck, MessageDispatch,
    ProducerInfo, RemoveInfo, Removed, WireFormatInfo,
};
use crate::openwire::types::{
    kind, read_map, BrokerId, ConnectionId, ConsumerId, Destination as JmsDestination,
    DestinationKind, MessageId, ProducerId, SessionId, Value,
};
use crate::openwire::{encode, Body, Command};
use crate::router::{AckId, ConnId, Delivery, Destination, Filter, Kind, NetworkLink, PATH_HEADER};
use crate::shared::BrokerCore;
use crate::transport::openwire::convert;
use crate::transport::openwire::handshake::{wire_format, End, Frames};
use crate::transport::writer;

/// The OpenWire version a bridge needs (ActiveMQ 5.x speaks 12).
const VERSION: i32 = 12;
/// Consumer advisory topics: `ActiveMQ.Advisory.Consumer.Queue.<name>`
/// and `….Topic.<name>`.
const CONSUMER_ADVISORY: &str = "ActiveMQ.Advisory.Consumer.";
/// Consumers of the peer one bridge keeps track of.
const PEER_CONSUMERS: usize = 10_000;
/// The advisory acknowledgement type that acknowledges up to a message.
const STANDARD_ACK: u8 = 2;

fn command(id: i32, response_required: bool, body: Body) -> Vec<u8> {
    let mut out = Vec::new();
    encode(
        &Command {
            id,
            response_required,
            body,
        },
        &mut out,
    );
    out
}

fn consumer_text(id: &ConsumerId) -> String {
    format!("{}:{}:{}", id.connection, id.session, id.value)
}

/// This broker's BrokerInfo on a connection: `network` when it is the
/// broker's own bridge.
pub(crate) fn broker_info(
    core: &BrokerCore,
    conn: ConnId,
    network: bool,
    duplex: bool,
    properties: Option<String>,
) -> BrokerInfo {
    BrokerInfo {
        broker_id: Some(BrokerId(core.name.clone())),
        broker_url: None,
        peers: Some(Vec::new()),
        broker_name: Some(core.name.clone()),
        slave: false,
        master: false,
        fault_tolerant: false,
        duplex,
        network,
        connection_id: i64::try_from(conn.0).unwrap_or(0),
        upload_url: None,
        network_properties: properties,
    }
}

/// The ids of this end's connection, session, producer and advisory
/// subscription on the peer.
struct Ids {
    connection: ConnectionId,
    session: SessionId,
    producer: ProducerId,
    demand: ConsumerId,
}

impl Ids {
    fn new(me: &str, conn: ConnId) -> Self {
        let connection = format!("ID:{me}-bridge-{}", conn.0);
        Self {
            connection: ConnectionId(connection.clone()),
            session: SessionId {
                connection: connection.clone(),
                value: 1,
            },
            producer: ProducerId {
                connection: connection.clone(),
                session: 1,
                value: 1,
            },
            demand: ConsumerId {
                connection,
                session: 1,
                value: 1,
            },
        }
    }
}

/// Command ids, and the forwarded messages waiting for the peer's Response.
struct Pending {
    next: AtomicI32,
    /// Command id → the delivery's ack id.
    acks: Mutex<HashMap<i32, String>>,
}

impl Pending {
    fn id(&self) -> i32 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }
}

/// An open OpenWire connection to a peer broker, ready to bridge.
pub(crate) struct Opened {
    pub(crate) conn: ConnId,
    pub(crate) reader: Reader,
    pub(crate) writer: Writer,
    pub(crate) frames: Frames,
    /// Commands read while connecting, not yet handled.
    pub(crate) early: Vec<Command>,
    /// The ConnectionInfo this end still has to send (the accepting end
    /// answers the peer's bridge with a connection of its own).
    pub(crate) login: Option<(Option<String>, Option<String>)>,
}

/// A bridge an ActiveMQ broker opened to this one: its BrokerInfo, who it
/// logged in as, and the inactivity duration agreed.
pub(crate) struct OpenWireInbound {
    pub(crate) broker: BrokerInfo,
    pub(crate) principal: Principal,
    pub(crate) remote_address: String,
    pub(crate) inactivity: Duration,
}

/// Java properties (`key=value` lines, as ActiveMQ's networkProperties
/// carry its connector's settings).
fn properties(text: &str) -> HashMap<String, String> {
    fn unescape(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some('u') => {
                    let hex: String = chars.by_ref().take(4).collect();
                    if let Some(c) = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                        out.push(c);
                    }
                }
                Some(other) => out.push(other),
                None => {}
            }
        }
        out
    }
    text.lines()
        .map(str::trim_start)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('!'))
        .filter_map(|line| {
            // The first unescaped `=` or `:` ends the key.
            let bytes = line.as_bytes();
            let mut at = None;
            let mut i = 0;
            while i < bytes.len() {
                match bytes[i] {
                    b'\\' => i += 1,
                    b'=' | b':' => {
                        at = Some(i);
                        break;
                    }
                    _ => {}
                }
                i += 1;
            }
            let at = at?;
            Some((unescape(&line[..at]), unescape(&line[at + 1..])))
        })
        .collect()
}

/// Serves a bridge an ActiveMQ broker opened to this broker's OpenWire
/// transport, until it ends.
pub(crate) async fn inbound(
    core: Arc<BrokerCore>,
    opened: Opened,
    accepted: OpenWireInbound,
    stop: CancellationToken,
) {
    let OpenWireInbound {
        broker,
        principal,
        remote_address,
        inactivity,
    } = accepted;
    let name = broker.broker_name.clone().unwrap_or_default();
    let id = broker
        .broker_id
        .as_ref()
        .map(|b| b.0.clone())
        .unwrap_or_else(|| name.clone());
    let props = properties(broker.network_properties.as_deref().unwrap_or(""));
    let ttl = |key: &str| {
        props
            .get(key)
            .and_then(|v| v.trim().parse::<i64>().ok())
            .map_or(1, |n| u32::try_from(n.clamp(1, 64)).unwrap_or(1))
    };
    let state = Arc::new(BridgeState {
        name: format!("from {name}"),
        remote_address,
        outbound: false,
        duplex: broker.duplex,
        remote_broker: Mutex::new(name.clone()),
        connected: AtomicBool::new(true),
        forwarded: AtomicU64::new(0),
        received: AtomicU64::new(0),
    });
    core.bridges.add(state.clone());
    info!(remote = ?name, user = ?principal.user, duplex = broker.duplex, "OpenWire bridge accepted");
    let link = Link {
        peer: id,
        forward: broker.duplex,
        advertise: true,
        message_ttl: ttl("messageTTL"),
        consumer_ttl: ttl("consumerTTL"),
        include: vec![Filter::parse(">").expect("'>' is a filter")],
        exclude: Vec::new(),
        statics: Vec::new(),
        principal: Some(principal),
        beats: beats(inactivity),
    };
    // A duplex peer's bridge expects this end's own connection, made with
    // the credentials its settings carry.
    let opened = Opened {
        login: broker.duplex.then(|| {
            (
                props.get("userName").cloned(),
                props.get("password").cloned(),
            )
        }),
        ..opened
    };
    let end = run(core.clone(), opened, link, state.clone(), stop).await;
    info!(remote = ?name, reason = %end, "OpenWire bridge closed");
    core.bridges.remove(&state);
}

/// Keep-alives at a third of the inactivity duration; the peer is gone
/// after twice it without a word.
fn beats(inactivity: Duration) -> HeartBeats {
    HeartBeats {
        send: (!inactivity.is_zero()).then(|| inactivity / 3),
        expect: (!inactivity.is_zero()).then(|| inactivity * 2),
    }
}

/// A bridge this broker opened to an ActiveMQ broker.
pub(crate) struct Connected {
    pub(crate) opened: Opened,
    /// The peer's BrokerId and name.
    pub(crate) remote_id: String,
    pub(crate) remote_name: String,
    pub(crate) beats: HeartBeats,
}

/// Opens a bridge to an ActiveMQ broker: the wire format, this broker's
/// BrokerInfo (a network connection, duplex as configured) and its login.
pub(crate) async fn connect(
    core: &BrokerCore,
    connector: &NetworkConnectorConfig,
    peer: &crate::client::Endpoint,
) -> Result<Connected, BridgeError> {
    let (mut reader, mut writer) = super::connector::open(connector, peer).await?;
    let conn = core.next_connection();
    let ids = Ids::new(&core.name, conn);
    let settings = format!(
        "name={}\nduplex={}\nmessageTTL={}\nconsumerTTL={}\nbridgeTempDestinations=false\n",
        connector.name, connector.duplex, connector.message_ttl, connector.consumer_ttl
    );
    let mut hello = wire_format(core.limits.max_frame_size);
    hello.extend(command(
        0,
        false,
        Body::BrokerInfo(Box::new(broker_info(
            core,
            conn,
            true,
            connector.duplex,
            Some(settings),
        ))),
    ));
    hello.extend(command(
        1,
        true,
        Body::ConnectionInfo(Box::new(ConnectionInfo {
            connection_id: Some(ids.connection.clone()),
            client_id: Some(format!("{}_{}_outbound", connector.name, core.name)),
            user: connector.user.clone(),
            password: connector.password.as_ref().map(|p| p.reveal().to_owned()),
            ..ConnectionInfo::default()
        })),
    ));
    writer.write_all(&hello).await?;
    writer.flush().await?;
    let mut frames = Frames {
        buf: Vec::with_capacity(16 * 1024),
        max: super::bridge::bridge_limits(&core.limits).max_frame_size,
    };
    let mut early = Vec::new();
    let mut inactivity = Duration::from_secs(30);
    let mut remote = None;
    let answered = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let command = frames.next(&mut reader, None).await.map_err(ended)?;
            match command.body {
                Body::WireFormatInfo(info) => {
                    if info.version < VERSION {
                        return Err(BridgeError::OldOpenWire(info.version));
                    }
                    if let Some(ms) = max_inactivity(&info) {
                        inactivity = inactivity.min(ms);
                    }
                }
                Body::BrokerInfo(b) => remote = Some(b),
                Body::Response { correlation: 1 } => return Ok(()),
                Body::ExceptionResponse { error, .. } => {
                    return Err(BridgeError::Refused(
                        error.and_then(|e| e.message).unwrap_or_default(),
                    ))
                }
                Body::ConnectionError(e) => {
                    return Err(BridgeError::Refused(
                        e.error.and_then(|e| e.message).unwrap_or_default(),
                    ))
                }
                Body::KeepAliveInfo => {}
                // A duplex peer answers with its own end of the bridge
                // (its connection first) rather than a Response.
                Body::ConnectionInfo(_) if connector.duplex && remote.is_some() => {
                    early.push(command);
                    return Ok(());
                }
                _ => {
                    if early.len() >= 64 {
                        return Err(BridgeError::BadCommand(
                            "too many commands before the login's answer".into(),
                        ));
                    }
                    early.push(command);
                }
            }
        }
    })
    .await
    .map_err(|_| BridgeError::NoConnected)?;
    answered?;
    let remote = remote.ok_or(BridgeError::NotABroker)?;
    let remote_name = remote.broker_name.clone().unwrap_or_default();
    let remote_id = remote
        .broker_id
        .map(|b| b.0)
        .unwrap_or_else(|| remote_name.clone());
    Ok(Connected {
        opened: Opened {
            conn,
            reader,
            writer,
            frames,
            early,
            login: None,
        },
        remote_id,
        remote_name,
        beats: beats(inactivity),
    })
}

fn max_inactivity(info: &WireFormatInfo) -> Option<Duration> {
    let map = read_map(info.properties.as_deref()?).ok()?;
    map.into_iter().find_map(|(k, v)| match (k.as_str(), v) {
        ("MaxInactivityDuration", Value::Long(ms)) if ms > 0 => {
            Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
        }
        _ => None,
    })
}

fn ended(end: End) -> BridgeError {
    match end {
        End::Closed => BridgeError::Closed,
        End::Gone(why) => BridgeError::Io(io::Error::other(why)),
        End::Bad(e) => BridgeError::BadCommand(e.to_string()),
    }
}

/// Runs a connected OpenWire bridge until it breaks or the broker stops.
pub(crate) async fn run(
    core: Arc<BrokerCore>,
    opened: Opened,
    link: Link,
    state: Arc<BridgeState>,
    stop: CancellationToken,
) -> BridgeError {
    let Opened {
        conn,
        mut reader,
        writer,
        mut frames,
        early,
        login,
    } = opened;
    let ids = Ids::new(&core.name, conn);
    let pending = Arc::new(Pending {
        next: AtomicI32::new(2),
        acks: Mutex::new(HashMap::new()),
    });
    let encoder = Forwarder {
        me: core.name.clone(),
        producer: ids.producer.clone(),
        pending: pending.clone(),
    };
    let version = format!("openwire/{VERSION}");
    let attached = attach(&core, conn, &link, &state, version, writer, encoder).await;
    let (control, ended_token) = (attached.control.clone(), attached.ended.clone());
    // This end's side of the peer's protocol: a connection (when it still
    // needs one), a session, a producer for what it forwards and, when it
    // forwards, a subscription to the peer's consumer advisories.
    let mut hello = Vec::new();
    if let Some((user, password)) = login {
        hello.extend(command(
            pending.id(),
            false,
            Body::ConnectionInfo(Box::new(ConnectionInfo {
                connection_id: Some(ids.connection.clone()),
                client_id: Some(format!("{}_{}_duplex", core.name, conn.0)),
                user,
                password,
                ..ConnectionInfo::default()
            })),
        ));
    }
    hello.extend(command(
        pending.id(),
        false,
        Body::SessionInfo(ids.session.clone()),
    ));
    hello.extend(command(
        pending.id(),
        false,
        Body::ProducerInfo(Box::new(ProducerInfo {
            producer_id: Some(ids.producer.clone()),
            ..ProducerInfo::default()
        })),
    ));
    if link.forward {
        hello.extend(command(
            pending.id(),
            false,
            Body::ConsumerInfo(Box::new(ConsumerInfo {
                consumer_id: Some(ids.demand.clone()),
                destination: Some(JmsDestination {
                    kind: DestinationKind::Topic,
                    name: format!("{CONSUMER_ADVISORY}Queue.>,{CONSUMER_ADVISORY}Topic.>"),
                }),
                prefetch: 1000,
                dispatch_async: true,
                ..ConsumerInfo::default()
            })),
        ));
        forward_statics(&core, conn, &link).await;
    }
    let _ = control.send(hello).await;
    let (arrivals_tx, arrivals_rx) = mpsc::channel(256);
    let arrivals_task = tokio::spawn(take_arrivals(
        core.clone(),
        arrivals_rx,
        control.clone(),
        state.clone(),
        ended_token.clone(),
    ));
    let mut peer = FromActiveMq {
        from: FromPeer {
            core: &core,
            conn,
            link: &link,
            state: &state,
            arrivals: &arrivals_tx,
            known: Default::default(),
        },
        core: core.clone(),
        ids: &ids,
        pending: &pending,
        control: &control,
        ended: &ended_token,
        consumers: HashMap::new(),
        counts: HashMap::new(),
        advertiser: None,
    };
    let mut end = None;
    for command in early {
        if let Err(e) = peer.handle(command).await {
            end = Some(e);
            break;
        }
    }
    let end = match end {
        Some(e) => e,
        None => loop {
            let command = tokio::select! {
                _ = stop.cancelled() => break BridgeError::Stopping,
                _ = ended_token.cancelled() => break BridgeError::WriterStopped,
                c = frames.next(&mut reader, link.beats.expect) => match c {
                    Ok(c) => c,
                    Err(e) => break ended(e),
                },
            };
            if let Err(e) = peer.handle(command).await {
                break e;
            }
        },
    };
    if let Some(a) = peer.advertiser.take() {
        a.abort();
    }
    drop(peer);
    // What arrived is stored and routed before the bridge goes.
    drop(arrivals_tx);
    let _ = arrivals_task.await;
    if matches!(end, BridgeError::Stopping) {
        let _ = control.send(command(0, false, Body::ShutdownInfo)).await;
    }
    drop(control);
    attached.detach(&core, conn).await;
    end
}

/// The reading end of an OpenWire bridge.
struct FromActiveMq<'a> {
    from: FromPeer<'a>,
    core: Arc<BrokerCore>,
    ids: &'a Ids,
    pending: &'a Pending,
    control: &'a mpsc::Sender<Vec<u8>>,
    ended: &'a CancellationToken,
    /// The peer's consumers this end forwards to: consumer id → destination.
    consumers: HashMap<String, Destination>,
    /// How many of them each destination has (one subscription each).
    counts: HashMap<Destination, usize>,
    /// Tells the peer this broker's demand, once it subscribed to it.
    advertiser: Option<JoinHandle<()>>,
}

impl FromActiveMq<'_> {
    async fn send(&self, bytes: Vec<u8>) -> Result<(), BridgeError> {
        self.control
            .send(bytes)
            .await
            .map_err(|_| BridgeError::Closing)
    }

    async fn handle(&mut self, incoming: Command) -> Result<(), BridgeError> {
        let (id, response_required) = (incoming.id, incoming.response_required);
        match incoming.body {
            Body::Message(m) => return self.message(id, response_required, *m).await,
            Body::MessageDispatch(md) => {
                let MessageDispatch {
                    consumer_id,
                    message,
                    ..
                } = *md;
                if let (Some(consumer), Some(message)) = (consumer_id, message) {
                    if let Body::Message(m) = message.body {
                        if is_consumer_advisory(m.destination.as_ref()) {
                            self.advisory(&m).await?;
                            self.send(advisory_ack(consumer, &m)).await?;
                        }
                    }
                }
            }
            Body::ConsumerInfo(info) => {
                if subscribes_to_demand(info.destination.as_ref()) {
                    self.start_advertising(info.consumer_id.clone());
                } else {
                    // A peer may also say its demand as a consumer of its own.
                    self.peer_consumer(&info).await?;
                }
            }
            Body::RemoveInfo(RemoveInfo {
                object: Some(Removed::Consumer(consumer)),
                ..
            }) => {
                if let Some(a) = self.advertiser.take() {
                    a.abort();
                }
                self.peer_consumer_gone(&consumer).await;
            }
            Body::Response { correlation } => self.taken(correlation).await?,
            Body::ExceptionResponse { correlation, error } => {
                let why = error.and_then(|e| e.message).unwrap_or_default();
                let forwarded = self
                    .pending
                    .acks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains_key(&correlation);
                return Err(if forwarded {
                    BridgeError::NotTaken(why)
                } else {
                    BridgeError::Refused(why)
                });
            }
            Body::KeepAliveInfo => {
                if response_required {
                    self.send(command_bytes(Body::KeepAliveInfo)).await?;
                }
                return Ok(());
            }
            Body::ShutdownInfo => return Err(BridgeError::ShutDown),
            Body::ConnectionError(e) => {
                return Err(BridgeError::PeerError(
                    e.error.and_then(|e| e.message).unwrap_or_default(),
                ))
            }
            _ => {}
        }
        if response_required {
            self.send(command(0, false, Body::Response { correlation: id }))
                .await?;
        }
        Ok(())
    }

    fn start_advertising(&mut self, consumer: Option<ConsumerId>) {
        let link = self.from.link;
        if !link.advertise || self.advertiser.is_some() {
            return;
        }
        let Some(consumer) = consumer else { return };
        let announce = AdvisoryDemand {
            me: self.from.core.name.clone(),
            consumer,
            producer: ProducerId {
                connection: self.ids.connection.0.clone(),
                session: 0,
                value: 0,
            },
            ours: HashMap::new(),
            next: 0,
        };
        self.advertiser = Some(tokio::spawn(advertise(
            self.core.clone(),
            link.clone(),
            self.control.clone(),
            self.ended.clone(),
            announce,
        )));
    }

    /// A message the peer forwarded, or one of its consumer advisories.
    async fn message(
        &mut self,
        id: i32,
        response_required: bool,
        mut m: JmsMessage,
    ) -> Result<(), BridgeError> {
        let answer = || command(0, false, Body::Response { correlation: id });
        let Some(jms_destination) = m.destination.clone() else {
            return Err(BridgeError::BadCommand(
                "a message without a destination".into(),
            ));
        };
        if is_consumer_advisory(Some(&jms_destination)) {
            self.advisory(&m).await?;
            let mut out = advisory_ack(self.ids.demand.clone(), &m);
            if response_required {
                out.extend(answer());
            }
            return self.send(out).await;
        }
        let temporary = matches!(
            jms_destination.kind,
            DestinationKind::TempQueue | DestinationKind::TempTopic
        );
        if temporary || jms_destination.name.starts_with("ActiveMQ.Advisory.") {
            // Not demanded by this broker: taken and dropped.
            if response_required {
                self.send(answer()).await?;
            }
            return Ok(());
        }
        let destination =
            convert::destination(&jms_destination).map_err(BridgeError::Destination)?;
        let origin = m
            .message_id
            .as_ref()
            .map(MessageId::text)
            .unwrap_or_default();
        let path = m
            .broker_path
            .take()
            .unwrap_or_default()
            .into_iter()
            .map(|b| b.0.replace(',', "_"))
            .collect::<Vec<_>>()
            .join(",");
        let persistent = m.persistent;
        let convert::Arrived { mut headers, body } =
            convert::from_jms(&mut m).map_err(BridgeError::BadCommand)?;
        headers.push((PATH_HEADER.to_owned(), path.clone()));
        self.from
            .take(Forwarded {
                destination,
                headers: &headers,
                body,
                persistent,
                origin,
                path: &path,
                ack: response_required.then(answer),
            })
            .await
    }

    /// A consumer advisory of the peer: a consumer there came or went.
    async fn advisory(&mut self, m: &JmsMessage) -> Result<(), BridgeError> {
        match m.data_structure.as_deref().map(|c| &c.body) {
            Some(Body::ConsumerInfo(info)) => self.peer_consumer(info).await,
            Some(Body::RemoveInfo(RemoveInfo {
                object: Some(Removed::Consumer(consumer)),
                ..
            })) => {
                self.peer_consumer_gone(consumer).await;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// A consumer on the peer: demand this end forwards to.
    async fn peer_consumer(&mut self, info: &ConsumerInfo) -> Result<(), BridgeError> {
        let (core, link) = (self.from.core, self.from.link);
        if !link.forward || info.browser {
            return Ok(());
        }
        let path = info.broker_path.as_deref().unwrap_or_default();
        // One of this broker's own subscriptions (the peer's demand for
        // this broker's consumers), or too far.
        if path.iter().any(|b| b.0 == core.name) {
            return Ok(());
        }
        let hops = u32::try_from(path.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        if hops > link.consumer_ttl {
            return Ok(());
        }
        let (Some(consumer), Some(jms)) = (&info.consumer_id, &info.destination) else {
            return Ok(());
        };
        if matches!(
            jms.kind,
            DestinationKind::TempQueue | DestinationKind::TempTopic
        ) || jms.name.starts_with("ActiveMQ.")
        {
            return Ok(());
        }
        let destination = match convert::destination(jms) {
            Ok(d) => d,
            Err(e) => {
                warn!(remote = ?link.peer, error = %e, "a consumer of the peer is not bridged");
                return Ok(());
            }
        };
        if !link.admits(&destination) {
            return Ok(());
        }
        if !link.allows(core, Operation::Read, &destination) {
            warn!(remote = ?link.peer, destination = %destination, "the bridge's user may not read this destination: its demand is ignored");
            return Ok(());
        }
        let key = consumer_text(consumer);
        if self.consumers.contains_key(&key) {
            return Ok(());
        }
        if self.consumers.len() >= PEER_CONSUMERS {
            warn!(remote = ?link.peer, "the peer has too many consumers to bridge: one is ignored");
            return Ok(());
        }
        self.consumers.insert(key, destination.clone());
        let count = self.counts.entry(destination.clone()).or_insert(0);
        *count += 1;
        if *count == 1 {
            let network = NetworkLink {
                peer: link.peer.clone(),
                hops,
                message_ttl: link.message_ttl,
            };
            core.router
                .subscribe_network(self.from.conn, destination.stomp(), destination, network)
                .await?;
        }
        Ok(())
    }

    async fn peer_consumer_gone(&mut self, consumer: &ConsumerId) {
        let Some(destination) = self.consumers.remove(&consumer_text(consumer)) else {
            return;
        };
        let Some(count) = self.counts.get_mut(&destination) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            self.counts.remove(&destination);
            let _ = self
                .from
                .core
                .router
                .unsubscribe(self.from.conn, destination.stomp())
                .await;
        }
    }

    /// The peer took a forwarded message: it is acknowledged here.
    async fn taken(&mut self, correlation: i32) -> Result<(), BridgeError> {
        let ack = self
            .pending
            .acks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&correlation);
        let Some(id) = ack.as_deref().and_then(AckId::parse) else {
            return Ok(());
        };
        let core = self.from.core;
        if let Ok(stored) = core.router.ack(self.from.conn, id).await {
            self.from.state.forwarded.fetch_add(1, Ordering::Relaxed);
            if !stored.is_empty() {
                core.journal.acknowledge(stored).await?;
            }
        }
        Ok(())
    }
}

fn command_bytes(body: Body) -> Vec<u8> {
    command(0, false, body)
}

/// Whether `d` is one of ActiveMQ's consumer advisory topics.
fn is_consumer_advisory(d: Option<&JmsDestination>) -> bool {
    d.is_some_and(|d| d.kind == DestinationKind::Topic && d.name.starts_with(CONSUMER_ADVISORY))
}

/// Whether a subscription to `d` is a peer asking for this broker's demand
/// (a composite of advisory topics, consumer advisories among them).
fn subscribes_to_demand(d: Option<&JmsDestination>) -> bool {
    d.is_some_and(|d| {
        d.kind == DestinationKind::Topic
            && d.name
                .split(',')
                .all(|n| n.starts_with("ActiveMQ.Advisory."))
            && d.name.split(',').any(|n| n.starts_with(CONSUMER_ADVISORY))
    })
}

/// Acknowledges one advisory message to the peer.
fn advisory_ack(consumer: ConsumerId, m: &JmsMessage) -> Vec<u8> {
    command_bytes(Body::MessageAck(Box::new(MessageAck {
        destination: m.destination.clone(),
        transaction_id: None,
        consumer_id: Some(consumer),
        ack_type: STANDARD_ACK,
        first_message_id: m.message_id.clone(),
        last_message_id: m.message_id.clone(),
        message_count: 1,
        poison_cause: None,
    })))
}

/// This broker's demand as consumer advisories, dispatched to the peer's
/// advisory subscription.
struct AdvisoryDemand {
    me: String,
    /// The peer's subscription to this broker's consumer advisories.
    consumer: ConsumerId,
    producer: ProducerId,
    /// The consumer each destination is announced as.
    ours: HashMap<Destination, ConsumerId>,
    next: i64,
}

impl AdvisoryDemand {
    fn dispatch(&mut self, destination: &Destination, data: Body) -> Vec<u8> {
        let topic = JmsDestination {
            kind: DestinationKind::Topic,
            name: format!(
                "{CONSUMER_ADVISORY}{}.{}",
                match destination.kind {
                    Kind::Queue => "Queue",
                    Kind::Topic => "Topic",
                },
                destination.name
            ),
        };
        self.next += 1;
        let message = JmsMessage {
            kind: kind::MESSAGE,
            producer_id: Some(self.producer.clone()),
            destination: Some(topic.clone()),
            message_id: Some(MessageId {
                text_view: None,
                producer: Some(self.producer.clone()),
                producer_sequence: self.next,
                broker_sequence: self.next,
            }),
            priority: 4,
            data_structure: Some(Box::new(Command::new(data))),
            ..JmsMessage::default()
        };
        command_bytes(Body::MessageDispatch(Box::new(MessageDispatch {
            consumer_id: Some(self.consumer.clone()),
            destination: Some(topic),
            message: Some(Box::new(Command::new(Body::Message(Box::new(message))))),
            redelivery_counter: 0,
        })))
    }
}

impl Announce for AdvisoryDemand {
    fn add(&mut self, destination: &Destination, hops: u32, replacing: bool) -> Vec<u8> {
        let mut out = if replacing {
            self.remove(destination)
        } else {
            Vec::new()
        };
        if destination.is_temporary() {
            return out;
        }
        self.next += 1;
        let consumer = ConsumerId {
            connection: self.producer.connection.clone(),
            session: 0,
            value: self.next,
        };
        self.ours.insert(destination.clone(), consumer.clone());
        // As long as the hops to the consumer: the peer counts them
        // against its TTL.
        let path: Vec<BrokerId> = (1..hops)
            .map(|i| BrokerId(format!("{}+{i}", self.me)))
            .collect();
        let info = ConsumerInfo {
            consumer_id: Some(consumer),
            destination: Some(convert::jms_destination(destination)),
            prefetch: 1000,
            network_subscription: hops > 1,
            broker_path: (!path.is_empty()).then_some(path),
            ..ConsumerInfo::default()
        };
        out.extend(self.dispatch(destination, Body::ConsumerInfo(Box::new(info))));
        out
    }

    fn remove(&mut self, destination: &Destination) -> Vec<u8> {
        let Some(consumer) = self.ours.remove(destination) else {
            return Vec::new();
        };
        self.dispatch(
            destination,
            Body::RemoveInfo(RemoveInfo {
                object: Some(Removed::Consumer(consumer)),
                last_delivered_sequence: 0,
            }),
        )
    }
}

/// A bridge's deliveries: sends needing a Response, naming the brokers
/// crossed, this one last.
struct Forwarder {
    me: String,
    producer: ProducerId,
    pending: Arc<Pending>,
}

impl writer::Encoder for Forwarder {
    fn encode(&self, d: &Delivery, out: &mut Vec<u8>, _acks: &mut Vec<u64>) {
        let m = &d.message;
        let mut jms = convert::to_jms(&self.me, m, None);
        let mut path: Vec<BrokerId> = m
            .path()
            .into_iter()
            .map(|b| BrokerId(b.to_owned()))
            .collect();
        path.push(BrokerId(self.me.clone()));
        jms.broker_path = Some(path);
        jms.producer_id = Some(self.producer.clone());
        let id = self.pending.id();
        if let Some(ack) = &d.ack {
            self.pending
                .acks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, ack.clone());
        }
        encode(
            &Command {
                id,
                response_required: true,
                body: Body::Message(Box::new(jms)),
            },
            out,
        );
    }

    fn slow_consumer(&self) -> Option<Vec<u8>> {
        None
    }

    fn heartbeat(&self, out: &mut Vec<u8>) {
        encode(&Command::new(Body::KeepAliveInfo), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activemq_network_properties_are_read() {
        let text = "#Tue Dec 01 10:00:00 UTC 2026\nuserName=bridge\npassword=s\\=cret\\:1\nmessageTTL=3\nname=NC\n";
        let p = properties(text);
        assert_eq!(p.get("userName").map(String::as_str), Some("bridge"));
        assert_eq!(p.get("password").map(String::as_str), Some("s=cret:1"));
        assert_eq!(p.get("messageTTL").map(String::as_str), Some("3"));
        assert_eq!(p.len(), 4);
    }

    #[test]
    fn a_demand_subscription_is_told_from_a_consumer() {
        let topic = |name: &str| JmsDestination {
            kind: DestinationKind::Topic,
            name: name.into(),
        };
        assert!(subscribes_to_demand(Some(&topic(
            "ActiveMQ.Advisory.Consumer.>,ActiveMQ.Advisory.TempQueue,ActiveMQ.Advisory.TempTopic"
        ))));
        assert!(!subscribes_to_demand(Some(&topic(
            "ActiveMQ.Advisory.TempQueue"
        ))));
        assert!(!subscribes_to_demand(Some(&topic("prices"))));
        assert!(is_consumer_advisory(Some(&topic(
            "ActiveMQ.Advisory.Consumer.Queue.orders"
        ))));
    }
}
