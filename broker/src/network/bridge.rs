//! A connected bridge, either end: frames from the peer (its demand, what
//! it forwards, its ACKs), arrivals stored and routed in order, and
//! deliveries written back with the path they crossed.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{BridgeError, BridgeState, Link, Reader, Writer, HOPS_HEADER, ORIGIN_HEADER};
use crate::auth::Operation;
use crate::dedup::Key;
use crate::intake::{self, Accepted, Arriving, Source};
use crate::router::{
    AckId, ConnId, ConnectionInfo, Delivery, Destination, Kind, Message, NetworkLink, Outbox,
    PATH_HEADER,
};
use crate::shared::BrokerCore;
use crate::stomp::{Command, Decoded, Frame, FrameBuffer, Limits};
use crate::store::Durable;
use crate::transport::writer::{self, Encoder, Outgoing};

/// What a peer may send over a bridge: what a client of this broker may
/// send, plus room for the headers the network adds on the way (a
/// message that fits a client's frame fits a bridge's).
pub(super) fn bridge_limits(limits: &crate::config::Limits) -> Limits {
    const HEADROOM: usize = 64 * 1024;
    Limits {
        max_frame_size: limits.max_frame_size.saturating_add(HEADROOM),
        max_headers: limits.max_headers.saturating_add(16),
        max_header_length: limits.max_header_length.saturating_add(HEADROOM / 16),
    }
}

/// The next frame from the peer; an error if it breaks the bridge, or if
/// nothing (not even a heart-beat) came within `silence`.
pub(super) async fn read_frame(
    reader: &mut Reader,
    buf: &mut FrameBuffer,
    limits: &Limits,
    silence: Option<Duration>,
) -> Result<Frame, BridgeError> {
    loop {
        match buf.next(limits) {
            Ok(Some(Decoded::Frame(f))) => return Ok(f),
            Ok(Some(Decoded::HeartBeat)) => continue,
            Ok(None) => {}
            Err(e) => return Err(e.into()),
        }
        let read = reader.read_buf(buf.spare(64 * 1024));
        let n = match silence {
            Some(limit) => tokio::time::timeout(limit, read)
                .await
                .map_err(|_| BridgeError::Silent(limit))?,
            None => read.await,
        }?;
        if n == 0 {
            return Err(BridgeError::Closed);
        }
    }
}

/// Runs one end of a connected bridge until it breaks or the broker stops.
pub(super) async fn run(
    core: Arc<BrokerCore>,
    mut reader: Reader,
    writer: Writer,
    mut buf: FrameBuffer,
    link: Link,
    state: Arc<BridgeState>,
    stop: CancellationToken,
) -> BridgeError {
    let conn = core.next_connection();
    let encoder = BridgeEncoder {
        me: core.name.clone(),
    };
    let attached = attach(&core, conn, &link, &state, "1.2".into(), writer, encoder).await;
    let (frames_tx, ended) = (attached.control.clone(), attached.ended.clone());
    if link.forward {
        forward_statics(&core, conn, &link).await;
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
        tokio::spawn(super::demand::advertise(
            core.clone(),
            link.clone(),
            frames_tx.clone(),
            ended.clone(),
            super::demand::StompDemand,
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
            _ = stop.cancelled() => break BridgeError::Stopping,
            _ = ended.cancelled() => break BridgeError::WriterStopped,
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
    if let Some(a) = advertiser {
        a.abort();
    }
    drop(frames_tx);
    attached.detach(&core, conn).await;
    end
}

/// A bridge's connection in the router, and the writer of what goes to
/// the peer: deliveries (through the bridge's encoder) and `control`.
pub(super) struct Attached {
    pub(super) control: mpsc::Sender<Vec<u8>>,
    /// Cancelled when the writer stops, and to stop it.
    pub(super) ended: CancellationToken,
    writer: tokio::task::JoinHandle<()>,
}

/// Registers bridge connection `conn` with the router (its protocol
/// `version` for the console) and starts its writer.
pub(super) async fn attach<E: Encoder>(
    core: &Arc<BrokerCore>,
    conn: ConnId,
    link: &Link,
    state: &BridgeState,
    version: String,
    writer: Writer,
    encoder: E,
) -> Attached {
    let (outbox, outbox_rx) = Outbox::new(256);
    let (control, control_rx) = mpsc::channel::<Vec<u8>>(256);
    let (stalled, evicted) = (outbox.stalled.clone(), outbox.evicted.clone());
    core.router
        .register(
            conn,
            outbox,
            ConnectionInfo::new(
                conn,
                state.remote_address.clone(),
                format!("bridge:{}", link.peer),
                "bridge".into(),
                version,
            ),
        )
        .await;
    let ended = CancellationToken::new();
    let writer = tokio::spawn(writer::run(
        Outgoing {
            core: core.clone(),
            conn,
            control: control_rx,
            outbox: outbox_rx,
            stalled,
            evicted,
            beat: link.beats.send,
            done: ended.clone(),
            encoder,
        },
        writer,
    ));
    Attached {
        control,
        ended,
        writer,
    }
}

impl Attached {
    /// Stops the writer and leaves the router (what was in flight to the
    /// peer goes back to its queues).
    pub(super) async fn detach(self, core: &BrokerCore, conn: ConnId) {
        self.ended.cancel();
        core.router.unregister(conn).await;
        drop(self.control);
        let _ = self.writer.await;
    }
}

/// The destinations a connector forwards whether or not there is demand:
/// subscribed for the peer from the start.
pub(super) async fn forward_statics(core: &BrokerCore, conn: ConnId, link: &Link) {
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

/// What the reading end of a bridge works with.
pub(super) struct FromPeer<'a> {
    pub(super) core: &'a BrokerCore,
    pub(super) conn: ConnId,
    pub(super) link: &'a Link,
    pub(super) state: &'a BridgeState,
    pub(super) arrivals: &'a mpsc::Sender<Arrival>,
    /// Destinations known to exist here (more are asked about).
    pub(super) known: HashSet<Destination>,
}

/// Destinations a bridge remembers as existing.
pub(super) const KNOWN_DESTINATIONS: usize = 1024;

impl FromPeer<'_> {
    /// One frame from the peer.
    async fn handle(&mut self, frame: Frame) -> Result<(), BridgeError> {
        let (core, conn, link, state) = (self.core, self.conn, self.link, self.state);
        match frame.command {
            Command::Subscribe if link.forward => {
                let (Some(dest), Some(id)) = (frame.get("destination"), frame.get("id")) else {
                    return Err(BridgeError::IncompleteSubscribe);
                };
                let destination = Destination::parse(dest).map_err(BridgeError::Destination)?;
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
                    .map_err(BridgeError::from)
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
                let Some(id) = AckId::parse(id) else {
                    return Ok(());
                };
                if let Ok(stored) = core.router.ack(conn, id).await {
                    state.forwarded.fetch_add(1, Ordering::Relaxed);
                    if !stored.is_empty() {
                        core.journal.acknowledge(stored).await?;
                    }
                }
                Ok(())
            }
            Command::Error => Err(BridgeError::PeerError(
                frame.get("message").unwrap_or("").to_owned(),
            )),
            _ => Ok(()),
        }
    }

    /// A MESSAGE forwarded by the peer: store, route, then ACK.
    async fn receive(&mut self, mut frame: Frame) -> Result<(), BridgeError> {
        let body = std::mem::take(&mut frame.body);
        let ack = frame
            .get("ack")
            .map(|id| Frame::new(Command::Ack).header("id", id).to_bytes());
        let destination = Destination::parse(frame.get("destination").unwrap_or_default())
            .map_err(BridgeError::Destination)?;
        let origin = frame
            .get(ORIGIN_HEADER)
            .or_else(|| frame.get("message-id"))
            .unwrap_or_default()
            .to_owned();
        self.take(Forwarded {
            destination,
            headers: &frame.headers,
            body,
            persistent: frame.get("persistent") == Some("true"),
            origin,
            path: frame.get(PATH_HEADER).unwrap_or_default(),
            ack,
        })
        .await
    }

    /// A message forwarded by the peer, on any kind of bridge: stored,
    /// routed, then acknowledged (in arrival order).
    pub(super) async fn take(&mut self, f: Forwarded<'_>) -> Result<(), BridgeError> {
        let (core, link, arrivals) = (self.core, self.link, self.arrivals);
        let Forwarded {
            destination,
            headers,
            body,
            persistent,
            origin,
            path,
            ack,
        } = f;
        if destination.is_wildcard() {
            return Err(BridgeError::Wildcard(destination.to_string()));
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
            Accepted::Duplicate { durable: None }
        } else {
            let stamps = intake::Stamps::lenient(headers);
            let arriving = Arriving {
                // Forwarded once due where it was sent.
                deliver_at: 0,
                // A peer's is checked where it was sent.
                expires: stamps.expires,
                priority: stamps.priority,
                group: stamps.group.clone(),
                source: Source::Bridge,
                destination,
                headers,
                body,
                persistent,
                sender: None,
                dedup: Some(seen_key),
                message_id: Some(origin.clone()),
            };
            intake::accept(core, arriving).await?
        };
        let arrival = match accepted {
            Accepted::Duplicate { durable } => Arrival {
                durable,
                message: None,
                copies: Vec::new(),
                ack,
            },
            Accepted::Taken { message, durable } => Arrival {
                copies: intake::durable_copies(core, &message).await?,
                durable,
                message: Some(message),
                ack,
            },
        };
        arrivals
            .send(arrival)
            .await
            .map_err(|_| BridgeError::Closing)
    }
}

/// A message as another broker forwarded it.
pub(super) struct Forwarded<'a> {
    pub(super) destination: Destination,
    /// Its headers (the path among them).
    pub(super) headers: &'a [(String, String)],
    pub(super) body: Vec<u8>,
    pub(super) persistent: bool,
    /// Its id where it was first sent.
    pub(super) origin: String,
    /// The brokers it crossed, comma-separated.
    pub(super) path: &'a str,
    /// What tells the peer it is taken, once it is.
    pub(super) ack: Option<Vec<u8>>,
}

/// A forwarded message on its way in: stored (group-committed with
/// others), then routed, then acknowledged to the peer, in arrival order.
pub(super) struct Arrival {
    durable: Option<Durable>,
    message: Option<Arc<Message>>,
    /// Durable subscriptions' copies of a topic message.
    copies: Vec<intake::Copy>,
    ack: Option<Vec<u8>>,
}

pub(super) async fn take_arrivals(
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
            if let Some(durable) = arrival
                .copies
                .iter_mut()
                .rev()
                .find_map(|c| c.durable.take())
            {
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
            for copy in arrival.copies {
                core.router.send(copy.message).await;
            }
            if let Some(ack) = arrival.ack {
                acks.extend(ack);
            }
        }
        if !acks.is_empty() && frames.send(acks).await.is_err() {
            return;
        }
    }
}

/// A bridge's deliveries: MESSAGE frames carrying the path they crossed.
pub(super) struct BridgeEncoder {
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
pub(super) fn encode(me: &str, d: &Delivery, buf: &mut Vec<u8>) {
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
