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

mod bridge;
mod connector;
mod demand;
mod error;
mod openwire;
mod status;

pub use error::BridgeError;

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::auth::{Operation, Principal};
use crate::router::{Destination, Filter};
use crate::shared::BrokerCore;
use crate::stomp::{Frame, FrameBuffer};

pub(crate) use connector::start;
pub(crate) use openwire::{broker_info, inbound as openwire_inbound, OpenWireInbound, Opened};
pub use status::BridgeInfo;
pub(crate) use status::{BridgeState, Bridges};

/// CONNECT/CONNECTED header naming the broker on a bridge.
pub(crate) const BRIDGE_HEADER: &str = "portico-bridge";
pub(super) const HOPS_HEADER: &str = "portico-hops";
pub(crate) const ORIGIN_HEADER: &str = "portico-origin";
pub(super) const DUPLEX_HEADER: &str = "portico-duplex";
pub(super) const MESSAGE_TTL_HEADER: &str = "portico-message-ttl";
pub(super) const CONSUMER_TTL_HEADER: &str = "portico-consumer-ttl";

/// The largest frame a bridge takes: a client's, plus room for what the
/// network adds on the way.
pub(crate) fn bridge_frame_size(limits: &crate::config::Limits) -> usize {
    bridge::bridge_limits(limits).max_frame_size
}

/// How one end of a bridge behaves.
#[derive(Debug, Clone)]
pub(super) struct Link {
    pub(super) peer: String,
    /// This end sends its messages to the peer (accepts the peer's demand).
    pub(super) forward: bool,
    /// This end tells the peer about its demand.
    pub(super) advertise: bool,
    pub(super) message_ttl: u32,
    pub(super) consumer_ttl: u32,
    pub(super) include: Vec<Filter>,
    pub(super) exclude: Vec<Filter>,
    pub(super) statics: Vec<Destination>,
    /// The user the peer logged in as, on the accepting end: what it may
    /// read (demand it advertises) and write (what it forwards) is checked
    /// as for any client. `None` on the connecting end, which trusts the
    /// peer its own configuration names.
    pub(super) principal: Option<Principal>,
    pub(super) beats: HeartBeats,
}

impl Link {
    pub(super) fn admits(&self, d: &Destination) -> bool {
        self.include.iter().any(|f| f.matches(d)) && !self.exclude.iter().any(|f| f.matches(d))
    }

    /// Whether the peer's user may do `op` on `d` here.
    pub(super) fn allows(&self, core: &BrokerCore, op: Operation, d: &Destination) -> bool {
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
pub(super) const MISSED_BEATS: u32 = 3;

pub(super) type Reader = Box<dyn AsyncRead + Unpin + Send>;
pub(super) type Writer = Box<dyn AsyncWrite + Unpin + Send>;

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
    let end = bridge::run(core.clone(), reader, writer, buf, link, state.clone(), stop).await;
    info!(remote = ?peer, reason = %end, "bridge closed");
    core.bridges.remove(&state);
}
