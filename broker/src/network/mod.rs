//! Network connectors and bridges: brokers joined into one fabric, as
//! ActiveMQ's network of brokers.
//!
//! A bridge is one STOMP connection, opened by the broker that has the
//! `[[network_connector]]`, then run by the same code on both ends:
//! - demand: a side with consumers (here, or reachable through other
//!   bridges within `consumer_ttl`) SUBSCRIBEs on the other side, one
//!   subscription per destination (conduit), with a hop count;
//! - forwarding: the other side's router treats that as a consumer that
//!   local consumers take precedence over, and sends its messages across as
//!   MESSAGE frames carrying the path of brokers crossed;
//! - store and forward: the receiving side stores (persistent queue
//!   messages), routes, then ACKs; only then does the sender remove it.
//!   A broker drops a message already on its path or already seen.
//!
//! One-way bridges forward only from the connecting broker; duplex ones
//! both ways over the one connection.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::auth::{Operation, Principal};
use crate::client::Endpoint;
use crate::config::NetworkConnectorConfig;
use crate::dedup::Key;
use crate::intake::{self, Accepted, Arriving, Source};
use crate::router::{
    ConnectionInfo, Delivery, Destination, Filter, Kind, Message, NetworkLink, Outbox, PATH_HEADER,
};
use crate::stomp::{Command, Decoded, Frame, FrameBuffer, Limits};
use crate::store::Durable;
use crate::transport::writer::{self, Encoder, Outgoing};
use crate::BrokerCore;

/// CONNECT/CONNECTED header naming the broker on a bridge.
pub(crate) const BRIDGE_HEADER: &str = "portico-bridge";
const HOPS_HEADER: &str = "portico-hops";
pub(crate) const ORIGIN_HEADER: &str = "portico-origin";
const DUPLEX_HEADER: &str = "portico-duplex";
const MESSAGE_TTL_HEADER: &str = "portico-message-ttl";
const CONSUMER_TTL_HEADER: &str = "portico-consumer-ttl";

/// What the console shows of a bridge.
#[derive(Debug, Serialize)]
pub struct BridgeInfo {
    pub name: String,
    pub remote_broker: String,
    pub remote_address: String,
    pub direction: &'static str,
    pub duplex: bool,
    pub state: &'static str,
    pub messages_forwarded: u64,
    pub messages_received: u64,
}

#[derive(Debug)]
pub(crate) struct BridgeState {
    name: String,
    remote_address: String,
    outbound: bool,
    duplex: bool,
    remote_broker: Mutex<String>,
    connected: AtomicBool,
    forwarded: AtomicU64,
    received: AtomicU64,
}

impl BridgeState {
    fn info(&self) -> BridgeInfo {
        BridgeInfo {
            name: self.name.clone(),
            remote_broker: self
                .remote_broker
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            remote_address: self.remote_address.clone(),
            direction: if self.outbound { "outbound" } else { "inbound" },
            duplex: self.duplex,
            state: if self.connected.load(Ordering::Acquire) {
                "connected"
            } else {
                "connecting"
            },
            messages_forwarded: self.forwarded.load(Ordering::Relaxed),
            messages_received: self.received.load(Ordering::Relaxed),
        }
    }
}

/// Every bridge of this broker, for the console.
#[derive(Debug, Default)]
pub(crate) struct Bridges(Mutex<Vec<Arc<BridgeState>>>);

impl Bridges {
    fn add(&self, state: Arc<BridgeState>) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(state);
    }

    fn remove(&self, state: &Arc<BridgeState>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|s| !Arc::ptr_eq(s, state));
    }

    pub(crate) fn info(&self) -> Vec<BridgeInfo> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|s| s.info())
            .collect()
    }
}

/// How one end of a bridge behaves.
#[derive(Debug, Clone)]
struct Link {
    peer: String,
    /// This end sends its messages to the peer (accepts the peer's demand).
    forward: bool,
    /// This end tells the peer about its demand.
    advertise: bool,
    message_ttl: u32,
    consumer_ttl: u32,
    include: Vec<Filter>,
    exclude: Vec<Filter>,
    statics: Vec<Destination>,
    /// The user the peer logged in as, on the accepting end: what it may
    /// read (demand it advertises) and write (what it forwards) is checked
    /// as for any client. `None` on the connecting end, which trusts the
    /// peer its own configuration names.
    principal: Option<Principal>,
    beats: HeartBeats,
}

impl Link {
    fn admits(&self, d: &Destination) -> bool {
        self.include.iter().any(|f| f.matches(d)) && !self.exclude.iter().any(|f| f.matches(d))
    }

    /// Whether the peer's user may do `op` on `d` here.
    fn allows(&self, core: &BrokerCore, op: Operation, d: &Destination) -> bool {
        self.principal
            .as_ref()
            .is_none_or(|p| core.auth.allows(p, op, d))
    }
}

/// A bridge's heart-beats, both ways, as negotiated by CONNECT.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HeartBeats {
    /// Send a beat when nothing else went out for this long.
    pub(crate) send: Option<Duration>,
    /// The peer is gone when nothing came from it for this long.
    pub(crate) expect: Option<Duration>,
}

/// A bridge is dropped (and reconnected) after this many missed beats.
const MISSED_BEATS: u32 = 3;

/// Starts one outbound bridge per peer of every connector.
pub(crate) fn start(
    core: &Arc<BrokerCore>,
    connectors: &[NetworkConnectorConfig],
    tasks: &TaskTracker,
    stop: &CancellationToken,
) {
    for connector in connectors {
        for peer in &connector.peers {
            let state = Arc::new(BridgeState {
                name: connector.name.clone(),
                remote_address: peer.to_string(),
                outbound: true,
                duplex: connector.duplex,
                remote_broker: Mutex::new(String::new()),
                connected: AtomicBool::new(false),
                forwarded: AtomicU64::new(0),
                received: AtomicU64::new(0),
            });
            core.bridges.add(state.clone());
            tasks.spawn(outbound(
                core.clone(),
                connector.clone(),
                peer.clone(),
                state,
                stop.clone(),
            ));
        }
    }
}

type Reader = Box<dyn AsyncRead + Unpin + Send>;
type Writer = Box<dyn AsyncWrite + Unpin + Send>;

/// Keeps one bridge up: connect, run, and reconnect with back-off.
async fn outbound(
    core: Arc<BrokerCore>,
    connector: NetworkConnectorConfig,
    peer: Endpoint,
    state: Arc<BridgeState>,
    stop: CancellationToken,
) {
    let mut attempt = 0u32;
    loop {
        match connect(&core, &connector, &peer).await {
            Ok((reader, writer, buf, remote, beats)) => {
                attempt = 0;
                info!(bridge = %connector.name, remote = %remote, address = %peer, duplex = connector.duplex, "bridge connected");
                *state
                    .remote_broker
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = remote.clone();
                state.connected.store(true, Ordering::Release);
                let link = Link {
                    peer: remote,
                    forward: true,
                    advertise: connector.duplex,
                    message_ttl: connector.message_ttl,
                    consumer_ttl: connector.consumer_ttl,
                    include: connector.dynamically_included.clone(),
                    exclude: connector.excluded.clone(),
                    statics: connector.statically_included.clone(),
                    principal: None,
                    beats,
                };
                let end = run(
                    core.clone(),
                    reader,
                    writer,
                    buf,
                    link,
                    state.clone(),
                    stop.clone(),
                )
                .await;
                state.connected.store(false, Ordering::Release);
                if stop.is_cancelled() {
                    return;
                }
                warn!(bridge = %connector.name, address = %peer, reason = %end, "bridge down; reconnecting");
            }
            Err(e) => {
                if attempt.is_multiple_of(20) {
                    warn!(bridge = %connector.name, address = %peer, error = %e, "bridge cannot connect; retrying");
                }
            }
        }
        // Exponential back-off with jitter, 100 ms to 10 s.
        let base = Duration::from_millis(100).saturating_mul(1 << attempt.min(7));
        let jitter = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_millis())
            % 100;
        let delay = base.min(Duration::from_secs(10)) + Duration::from_millis(u64::from(jitter));
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

async fn connect(
    core: &BrokerCore,
    connector: &NetworkConnectorConfig,
    peer: &Endpoint,
) -> Result<(Reader, Writer, FrameBuffer, String, HeartBeats), String> {
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect((peer.host.as_str(), peer.port)),
    )
    .await
    .map_err(|_| "connect timed out".to_owned())?
    .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let (mut reader, mut writer): (Reader, Writer) = if peer.tls {
        let roots = connector.ca.clone().ok_or("no CA for an ssl:// peer")?;
        let config = portico_core::tls::client_config(roots);
        let name = rustls::pki_types::ServerName::try_from(peer.host.clone())
            .map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let (r, w) = tokio::io::split(tls);
        (Box::new(r), Box::new(w))
    } else {
        let (r, w) = tcp.into_split();
        (Box::new(r), Box::new(w))
    };
    let connect = Frame::new(Command::Connect)
        .header("accept-version", "1.2")
        .header("host", peer.host.clone())
        .header(BRIDGE_HEADER, core.name.clone())
        .header(DUPLEX_HEADER, connector.duplex.to_string())
        .header(MESSAGE_TTL_HEADER, connector.message_ttl.to_string())
        .header(CONSUMER_TTL_HEADER, connector.consumer_ttl.to_string());
    // Both ways at the broker's own interval: a silent peer is noticed in a
    // few beats, not when TCP gives up.
    let ours = core.limits.heart_beat.as_millis();
    let connect = connect.header("heart-beat", format!("{ours},{ours}"));
    let mut connect = connect;
    if let Some(user) = &connector.user {
        connect = connect.header("login", user.clone());
    }
    if let Some(password) = &connector.password {
        connect = connect.header("passcode", password.reveal());
    }
    writer
        .write_all(&connect.to_bytes())
        .await
        .map_err(|e| e.to_string())?;
    writer.flush().await.map_err(|e| e.to_string())?;
    let mut buf = FrameBuffer::new();
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        read_frame(&mut reader, &mut buf, &bridge_limits(&core.limits), None),
    )
    .await
    .map_err(|_| "no CONNECTED in time".to_owned())??;
    match reply.command {
        Command::Connected => match reply.get(BRIDGE_HEADER) {
            Some(remote) => {
                // The peer sends every `sx` and wants ours every `sy`.
                let (sx, sy) = crate::stomp::parse_heart_beat(reply.get("heart-beat"));
                let beats = HeartBeats {
                    send: (sy > 0).then(|| Duration::from_millis(sy)),
                    expect: (sx > 0).then(|| Duration::from_millis(sx) * MISSED_BEATS),
                };
                Ok((reader, writer, buf, remote.to_owned(), beats))
            }
            None => Err("the peer is not a portico broker (no bridge header in CONNECTED)".into()),
        },
        Command::Error => Err(format!(
            "refused by the peer: {:?}",
            reply.get("message").unwrap_or("ERROR")
        )),
        other => Err(format!("expected CONNECTED, got {other}")),
    }
}

/// The accepting end of a bridge another broker opened to this one.
/// A bridge another broker opened: its CONNECT, who it logged in as, and
/// the heart-beats agreed.
pub(crate) struct Inbound {
    pub(crate) connect: Frame,
    pub(crate) principal: Principal,
    /// Intervals as negotiated; the tolerance for missed beats is the bridge's.
    pub(crate) send_every: Option<Duration>,
    pub(crate) expect_every: Option<Duration>,
    pub(crate) remote_address: String,
}

pub(crate) async fn inbound(
    core: Arc<BrokerCore>,
    reader: Reader,
    writer: Writer,
    buf: FrameBuffer,
    accepted: Inbound,
    stop: CancellationToken,
) {
    let Inbound {
        connect,
        principal,
        send_every,
        expect_every,
        remote_address,
    } = accepted;
    let peer = connect.get(BRIDGE_HEADER).unwrap_or_default().to_owned();
    let duplex = connect.get(DUPLEX_HEADER) == Some("true");
    let ttl = |name: &str| {
        connect
            .get(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(1u32)
    };
    let state = Arc::new(BridgeState {
        name: format!("from {peer}"),
        remote_address,
        outbound: false,
        duplex,
        remote_broker: Mutex::new(peer.clone()),
        connected: AtomicBool::new(true),
        forwarded: AtomicU64::new(0),
        received: AtomicU64::new(0),
    });
    core.bridges.add(state.clone());
    info!(remote = ?peer, user = ?principal.user, duplex, "bridge accepted");
    let link = Link {
        peer: peer.clone(),
        forward: duplex,
        advertise: true,
        message_ttl: ttl(MESSAGE_TTL_HEADER),
        consumer_ttl: ttl(CONSUMER_TTL_HEADER),
        include: vec![Filter::parse(">").expect("'>' is a filter")],
        exclude: Vec::new(),
        statics: Vec::new(),
        principal: Some(principal),
        beats: HeartBeats {
            send: send_every,
            expect: expect_every.map(|t| t * MISSED_BEATS),
        },
    };
    let end = run(core.clone(), reader, writer, buf, link, state.clone(), stop).await;
    info!(remote = ?peer, reason = %end, "bridge closed");
    core.bridges.remove(&state);
}

/// What a peer may send over a bridge: what a client of this broker may
/// send, plus room for the headers the network adds on the way (a
/// message that fits a client's frame fits a bridge's).
fn bridge_limits(limits: &crate::config::Limits) -> Limits {
    const HEADROOM: usize = 64 * 1024;
    Limits {
        max_frame_size: limits.max_frame_size.saturating_add(HEADROOM),
        max_headers: limits.max_headers.saturating_add(16),
        max_header_length: limits.max_header_length.saturating_add(HEADROOM / 16),
    }
}

/// The next frame from the peer; an error if it breaks the bridge, or if
/// nothing (not even a heart-beat) came within `silence`.
async fn read_frame(
    reader: &mut Reader,
    buf: &mut FrameBuffer,
    limits: &Limits,
    silence: Option<Duration>,
) -> Result<Frame, String> {
    loop {
        match buf.next(limits) {
            Ok(Some(Decoded::Frame(f))) => return Ok(f),
            Ok(Some(Decoded::HeartBeat)) => continue,
            Ok(None) => {}
            Err(e) => return Err(format!("bad frame from the peer: {e}")),
        }
        let read = reader.read_buf(buf.spare(64 * 1024));
        let n = match silence {
            Some(limit) => tokio::time::timeout(limit, read)
                .await
                .map_err(|_| format!("the peer went silent (no heart-beat for {limit:?})"))?,
            None => read.await,
        }
        .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the peer closed the bridge".into());
        }
    }
}

/// Runs one end of a connected bridge until it breaks or the broker stops.
async fn run(
    core: Arc<BrokerCore>,
    mut reader: Reader,
    writer: Writer,
    mut buf: FrameBuffer,
    link: Link,
    state: Arc<BridgeState>,
    stop: CancellationToken,
) -> String {
    let conn = core.next_connection();
    let (outbox, outbox_rx) = Outbox::new(256);
    let (frames_tx, frames_rx) = mpsc::channel::<Vec<u8>>(256);
    let (stalled, evicted) = (outbox.stalled.clone(), outbox.evicted.clone());
    core.router
        .register(
            conn,
            outbox,
            ConnectionInfo {
                id: conn,
                remote: state.remote_address.clone(),
                user: format!("bridge:{}", link.peer),
                transport: "bridge".into(),
                version: "1.2".into(),
                connected_at: crate::router::rfc3339(SystemTime::now()),
                subscriptions: 0,
            },
        )
        .await;
    let ended = CancellationToken::new();
    let writer_task = tokio::spawn(writer::run(
        Outgoing {
            core: core.clone(),
            conn,
            control: frames_rx,
            outbox: outbox_rx,
            stalled,
            evicted,
            beat: link.beats.send,
            done: ended.clone(),
            encoder: BridgeEncoder {
                me: core.name.clone(),
            },
        },
        writer,
    ));
    if link.forward {
        for (i, dest) in link.statics.iter().enumerate() {
            let network = NetworkLink {
                peer: link.peer.clone(),
                hops: 1,
                message_ttl: link.message_ttl,
            };
            if let Err(e) = core
                .router
                .subscribe_network(conn, format!("static-{i}"), dest.clone(), network)
                .await
            {
                warn!(destination = %dest, error = %e, "cannot forward statically");
            }
        }
    }
    let (arrivals_tx, arrivals_rx) = mpsc::channel(256);
    let arrivals_task = tokio::spawn(take_arrivals(
        core.clone(),
        arrivals_rx,
        frames_tx.clone(),
        state.clone(),
        ended.clone(),
    ));
    let advertiser = link.advertise.then(|| {
        tokio::spawn(advertise(
            core.clone(),
            link.clone(),
            frames_tx.clone(),
            ended.clone(),
        ))
    });
    let limits = bridge_limits(&core.limits);
    let mut peer = FromPeer {
        core: &core,
        conn,
        link: &link,
        state: &state,
        arrivals: &arrivals_tx,
        known: HashSet::new(),
    };
    let end = loop {
        let frame = tokio::select! {
            _ = stop.cancelled() => break "the broker is stopping".to_owned(),
            _ = ended.cancelled() => break "the bridge's writer stopped".to_owned(),
            f = read_frame(&mut reader, &mut buf, &limits, link.beats.expect) => match f {
                Ok(f) => f,
                Err(e) => break e,
            },
        };
        if let Err(e) = peer.handle(frame).await {
            break e;
        }
    };
    // What arrived is stored and routed before the bridge goes.
    drop(arrivals_tx);
    let _ = arrivals_task.await;
    ended.cancel();
    if let Some(a) = advertiser {
        a.abort();
    }
    core.router.unregister(conn).await;
    drop(frames_tx);
    let _ = writer_task.await;
    end
}

/// What the reading end of a bridge works with.
struct FromPeer<'a> {
    core: &'a BrokerCore,
    conn: u64,
    link: &'a Link,
    state: &'a BridgeState,
    arrivals: &'a mpsc::Sender<Arrival>,
    /// Destinations known to exist here (more are asked about).
    known: HashSet<Destination>,
}

/// Destinations a bridge remembers as existing.
const KNOWN_DESTINATIONS: usize = 1024;

impl FromPeer<'_> {
    /// One frame from the peer.
    async fn handle(&mut self, frame: Frame) -> Result<(), String> {
        let (core, conn, link, state) = (self.core, self.conn, self.link, self.state);
        match frame.command {
            Command::Subscribe if link.forward => {
                let (Some(dest), Some(id)) = (frame.get("destination"), frame.get("id")) else {
                    return Err("bridge SUBSCRIBE without destination or id".into());
                };
                let destination = Destination::parse(dest)?;
                if !link.admits(&destination) {
                    return Ok(());
                }
                if !link.allows(core, Operation::Read, &destination) {
                    warn!(remote = ?link.peer, destination = %destination, "the bridge's user may not read this destination: its demand is ignored");
                    return Ok(());
                }
                let hops = frame
                    .get(HOPS_HEADER)
                    .and_then(|h| h.parse().ok())
                    .unwrap_or(1);
                let network = NetworkLink {
                    peer: link.peer.clone(),
                    hops,
                    message_ttl: link.message_ttl,
                };
                core.router
                    .subscribe_network(conn, id.to_owned(), destination, network)
                    .await
            }
            Command::Subscribe => Ok(()), // one-way: this end does not forward
            Command::Unsubscribe => {
                if let Some(id) = frame.get("id") {
                    let _ = core.router.unsubscribe(conn, id.to_owned()).await;
                }
                Ok(())
            }
            Command::Message => self.receive(frame).await,
            Command::Ack => {
                let Some(id) = frame.get("id") else {
                    return Ok(());
                };
                // The peer stored (or dropped as seen) what we forwarded. The
                // ack record is not waited for: if a crash loses it, the message
                // is forwarded again and the peer drops it as seen.
                if let Ok(stored) = core.router.ack(conn, id.to_owned()).await {
                    state.forwarded.fetch_add(1, Ordering::Relaxed);
                    if !stored.is_empty() {
                        core.journal
                            .acknowledge(stored)
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                }
                Ok(())
            }
            Command::Error => Err(format!(
                "the peer sent ERROR: {:?}",
                frame.get("message").unwrap_or("")
            )),
            _ => Ok(()),
        }
    }

    /// A message forwarded by the peer: store, route, then acknowledge.
    async fn receive(&mut self, mut frame: Frame) -> Result<(), String> {
        let (core, link, arrivals) = (self.core, self.link, self.arrivals);
        let body = std::mem::take(&mut frame.body);
        let ack = frame.get("ack").map(str::to_owned);
        let destination = Destination::parse(frame.get("destination").unwrap_or_default())?;
        if destination.is_wildcard() {
            return Err(format!("the peer forwarded to a wildcard {destination}"));
        }
        if !link.allows(core, Operation::Write, &destination) {
            // Neither stored nor acknowledged: it stays with the peer (nothing
            // is lost) until the bridge's user is granted the right.
            warn!(remote = ?link.peer, destination = %destination, "the bridge's user may not write this destination: a forwarded message is refused");
            return Ok(());
        }
        if !self.known.contains(&destination) {
            if let Err(e) = core.router.ensure(destination.clone()).await {
                // As above: it waits on the peer until this broker has room.
                warn!(remote = ?link.peer, error = %e, "a forwarded message is refused");
                return Ok(());
            }
            if self.known.len() < KNOWN_DESTINATIONS {
                self.known.insert(destination.clone());
            }
        }
        let origin = frame
            .get(ORIGIN_HEADER)
            .or_else(|| frame.get("message-id"))
            .unwrap_or_default()
            .to_owned();
        let path = frame.get(PATH_HEADER).unwrap_or_default();
        // A topic message back on a broker it crossed, or seen here already by
        // another route, is dropped. A queue message may come back when demand
        // moved; only the same hop twice (an ACK lost on the way) is a duplicate.
        let (looped, seen_key) = match destination.kind {
            Kind::Topic => (
                path.split(',').any(|b| b == core.name),
                Key::Forwarded {
                    origin: &origin,
                    path: None,
                },
            ),
            Kind::Queue => (
                false,
                Key::Forwarded {
                    origin: &origin,
                    path: Some(path),
                },
            ),
        };
        let accepted = if looped {
            Accepted::Duplicate
        } else {
            let arriving = Arriving {
                source: Source::Bridge,
                destination,
                headers: &frame.headers,
                body,
                persistent: frame.get("persistent") == Some("true"),
                sender: None,
                dedup: Some(seen_key),
                message_id: Some(origin.clone()),
            };
            intake::accept(core, arriving)
                .await
                .map_err(|e| e.to_string())?
        };
        let arrival = match accepted {
            Accepted::Duplicate => Arrival {
                durable: None,
                message: None,
                ack,
            },
            Accepted::Taken { message, durable } => Arrival {
                durable,
                message: Some(message),
                ack,
            },
        };
        arrivals
            .send(arrival)
            .await
            .map_err(|_| "the bridge is closing".into())
    }
}

/// A forwarded message on its way in: stored (group-committed with
/// others), then routed, then acknowledged to the peer, in arrival order.
struct Arrival {
    durable: Option<Durable>,
    message: Option<Arc<Message>>,
    ack: Option<String>,
}

async fn take_arrivals(
    core: Arc<BrokerCore>,
    mut arrivals: mpsc::Receiver<Arrival>,
    frames: mpsc::Sender<Vec<u8>>,
    state: Arc<BridgeState>,
    ended: CancellationToken,
) {
    let mut batch = Vec::new();
    while arrivals.recv_many(&mut batch, 1024).await > 0 {
        // The journal completes in order: once the last is on disk, all are.
        let mut last = None;
        for arrival in &mut batch {
            if let Some(durable) = arrival.durable.take() {
                last = Some(durable);
            }
        }
        if let Some(durable) = last {
            if let Err(e) = durable.wait().await {
                warn!(error = %e, "cannot store a forwarded message; closing the bridge");
                ended.cancel();
                return;
            }
        }
        let mut acks = Vec::new();
        for arrival in batch.drain(..) {
            if let Some(message) = arrival.message {
                core.router.send(message).await;
                state.received.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(id) = arrival.ack {
                Frame::new(Command::Ack).header("id", id).encode(&mut acks);
            }
        }
        if !acks.is_empty() && frames.send(acks).await.is_err() {
            return;
        }
    }
}

/// Tells the peer where this broker has demand, and keeps it current.
async fn advertise(
    core: Arc<BrokerCore>,
    link: Link,
    frames: mpsc::Sender<Vec<u8>>,
    ended: CancellationToken,
) {
    let mut changes = core.router.demand_changes();
    let mut advertised: BTreeMap<Destination, u32> = BTreeMap::new();
    loop {
        let demand = core.router.demand(&link.peer).await;
        let wanted: BTreeMap<Destination, u32> = demand
            .into_iter()
            .map(|(d, hops)| (d, hops + 1))
            .filter(|(d, hops)| *hops <= link.consumer_ttl && !d.is_wildcard() && link.admits(d))
            // What the peer would forward for this demand, its user must
            // be allowed to write here.
            .filter(|(d, _)| link.allows(&core, Operation::Write, d))
            .collect();
        for (dest, hops) in &wanted {
            if advertised.get(dest) != Some(hops) {
                let frame = Frame::new(Command::Subscribe)
                    .header("destination", dest.stomp())
                    .header("id", dest.stomp())
                    .header(HOPS_HEADER, hops.to_string());
                if advertised.contains_key(dest) {
                    let un = Frame::new(Command::Unsubscribe).header("id", dest.stomp());
                    let _ = frames.send(un.to_bytes()).await;
                }
                let _ = frames.send(frame.to_bytes()).await;
            }
        }
        for dest in advertised.keys() {
            if !wanted.contains_key(dest) {
                let _ = frames
                    .send(
                        Frame::new(Command::Unsubscribe)
                            .header("id", dest.stomp())
                            .to_bytes(),
                    )
                    .await;
            }
        }
        advertised = wanted;
        tokio::select! {
            _ = ended.cancelled() => return,
            r = changes.changed() => if r.is_err() { return },
        }
    }
}

/// A bridge's deliveries: MESSAGE frames carrying the path they crossed.
struct BridgeEncoder {
    me: String,
}

impl Encoder for BridgeEncoder {
    fn encode(&self, delivery: &Delivery, out: &mut Vec<u8>, _acks: &mut Vec<u64>) {
        encode(&self.me, delivery, out);
    }

    fn slow_consumer(&self) -> Option<Vec<u8>> {
        None
    }
}

/// A MESSAGE to the peer: this broker joins the path.
fn encode(me: &str, d: &Delivery, buf: &mut Vec<u8>) {
    let m = &d.message;
    let mut path: Vec<&str> = m.path();
    path.push(me);
    let mut frame = Frame::new(Command::Message)
        .header("destination", m.destination.stomp())
        .header("message-id", m.message_id.clone())
        .header(ORIGIN_HEADER, m.message_id.clone())
        .header(PATH_HEADER, path.join(","));
    if let Some(ack) = &d.ack {
        frame = frame.header("ack", ack.clone());
    }
    for (name, value) in &m.headers {
        if name != PATH_HEADER && name != ORIGIN_HEADER {
            frame.headers.push((name.clone(), value.clone()));
        }
    }
    frame.body = m.body.clone();
    frame.encode(buf);
}
