//! A client's STOMP session: CONNECT and heart-beats, then each frame it
//! sends — SEND through the intake, SUBSCRIBE and ACK to the router,
//! transactions held until COMMIT — and the ERROR that ends it.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::info;

use super::pipeline::{receipt_bytes, FlushError, Piped, Pipeline, SubmitError};
use super::transactions::Transactions;
use crate::auth::{Operation, Principal};
use crate::dedup::Key;
use crate::durable::{self, ClientId};
use crate::intake::Stamps;
use crate::intake::{self, Arriving, Source};
use crate::logins::Refusal;
use crate::router::{
    AckId, AckMode, ConnCounters, ConnId, Consumer, Destination, Kind, VIRTUAL_TOPIC_PREFIX,
};
use crate::selector::Selector;
use crate::shared::BrokerCore;
use crate::stomp::{
    parse_heart_beat, Command, Decoded, Frame, FrameBuffer, Limits as FrameLimits, Version,
};

/// Default queue prefetch, as ActiveMQ's.
pub(super) const DEFAULT_PREFETCH: usize = 1000;

/// Why a connection ends with an ERROR frame.
pub(super) struct Fatal {
    pub(super) message: String,
    pub(super) detail: String,
    pub(super) receipt: Option<String>,
}

impl Fatal {
    pub(super) fn new(message: impl std::fmt::Display, frame: Option<&Frame>) -> Self {
        Self {
            message: message.to_string(),
            detail: String::new(),
            receipt: frame.and_then(|f| f.get("receipt")).map(str::to_owned),
        }
    }

    pub(super) fn with_receipt(mut self, receipt: Option<String>) -> Self {
        self.receipt = receipt;
        self
    }

    pub(super) fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    pub(super) fn frame(&self) -> Frame {
        let mut frame = Frame::new(Command::Error)
            .header("message", self.message.clone())
            .header("content-type", "text/plain");
        if let Some(r) = &self.receipt {
            frame = frame.header("receipt-id", r.clone());
        }
        frame.body(if self.detail.is_empty() {
            self.message.clone()
        } else {
            self.detail.clone()
        })
    }
}

pub(super) struct Session {
    pub(super) core: Arc<BrokerCore>,
    pub(super) id: ConnId,
    pub(super) buf: FrameBuffer,
    pub(super) limits: FrameLimits,
    pub(super) control: mpsc::Sender<Vec<u8>>,
    pub(super) principal: Option<Principal>,
    /// The principal's user, shared by every message it sends.
    pub(super) sender: Option<Arc<str>>,
    pub(super) transactions: Transactions,
    pub(super) version: Version,
    /// SENDs on their way: journal, then router, then receipt, in order.
    pub(super) pipeline: Option<Pipeline>,
    /// The CONNECT of another broker opening a bridge.
    pub(super) bridge: Option<Frame>,
    /// Destinations this connection sent to that are known to exist.
    pub(super) known: HashSet<Destination>,
    /// The `client-id` of its CONNECT, held while it lives.
    pub(super) client_id: Option<ClientId>,
    /// Its active durable subscriptions: subscription id to name.
    pub(super) durable: HashMap<String, String>,
    /// What it sent and was delivered, for the console.
    pub(super) counters: Arc<ConnCounters>,
}

/// Destinations a connection remembers as existing (more are asked about).
pub(super) const KNOWN_DESTINATIONS: usize = 1024;

/// Destinations one composite SEND may name: each gets a copy of the body.
const MAX_COMPOSITE: usize = 64;

/// One message of a SEND (see `Session::send`).
struct One {
    destination: Destination,
    body: Vec<u8>,
    receipt: Option<String>,
    scope: Option<String>,
    deliver_at: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Session {
    pub(super) async fn pipe(&self, item: Piped) -> Result<(), Fatal> {
        let Some(pipeline) = &self.pipeline else {
            return Err(Fatal::new("not connected", None));
        };
        pipeline
            .tx
            .send(item)
            .await
            .map_err(|_| Fatal::new("the connection is closing", None))
    }

    /// Waits until every SEND before now is routed.
    pub(super) async fn flush(&self) -> Result<(), Fatal> {
        let Some(pipeline) = &self.pipeline else {
            return Ok(());
        };
        match pipeline.flush().await {
            Ok(()) => Ok(()),
            Err(FlushError::Closing) => Err(Fatal::new("the connection is closing", None)),
            Err(FlushError::Store(e)) => {
                Err(Fatal::new("the message could not be stored", None).detail(e))
            }
        }
    }

    /// Reads the next frame, skipping heart-beats. `Ok(None)`: the peer closed.
    pub(super) async fn next_frame<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        timeout: Option<Duration>,
        late: &str,
    ) -> Result<Option<Frame>, Fatal> {
        loop {
            match self.buf.next(&self.limits) {
                Ok(Some(Decoded::Frame(frame))) => return Ok(Some(frame)),
                Ok(Some(Decoded::HeartBeat)) => continue,
                Ok(None) => {}
                Err(e) => return Err(Fatal::new("malformed frame", None).detail(e.to_string())),
            }
            let read = reader.read_buf(self.buf.spare(16 * 1024));
            let n = match timeout {
                Some(t) => tokio::time::timeout(t, read)
                    .await
                    .map_err(|_| Fatal::new(late, None))?,
                None => read.await,
            }
            .map_err(|e| Fatal::new("read failed", None).detail(e.to_string()))?;
            if n == 0 {
                return Ok(None);
            }
        }
    }

    /// The CONNECT exchange; returns the heart-beat intervals (send, expect).
    pub(super) async fn connect<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        remote: SocketAddr,
        transport: &str,
        deadline: Instant,
    ) -> Result<(Option<Duration>, Option<Duration>), Fatal> {
        // One deadline for the TLS handshake (already done) and CONNECT,
        // however the bytes trickle in.
        let Some(frame) = tokio::time::timeout_at(deadline, self.next_frame(reader, None, ""))
            .await
            .map_err(|_| Fatal::new("no CONNECT frame in time", None))??
        else {
            return Err(Fatal::new("closed before CONNECT", None));
        };
        if !matches!(frame.command, Command::Connect | Command::Stomp) {
            return Err(Fatal::new(
                format!("expected CONNECT, got {}", frame.command),
                Some(&frame),
            ));
        }
        let accepted = frame.get("accept-version").unwrap_or("1.0");
        self.version = Version::ALL
            .into_iter()
            .find(|v| accepted.split(',').any(|a| Version::parse(a) == Some(*v)))
            .ok_or_else(|| {
                Fatal::new("unsupported protocol version", Some(&frame))
                    .detail("Supported protocol versions are 1.0,1.1,1.2")
            })?;
        // From here on the client's frames are read as its version writes them.
        self.buf.set_version(self.version);
        let login = frame.get("login");
        let refused = |why: &str| {
            self.core.login_failed();
            // Untrusted text is logged escaped (Debug), never raw.
            info!(client.addr = %remote, transport, user = ?login.unwrap_or(""), "authentication failed: {why}");
        };
        let principal = match self
            .core
            .logins
            .check(remote.ip(), login, frame.get("passcode"))
            .await
        {
            Ok(principal) => principal,
            Err(why) => {
                refused(&why.to_string());
                let fatal = Fatal::new("authentication failed", Some(&frame));
                return Err(match why {
                    Refusal::Backoff { .. } => fatal.detail(why.to_string()),
                    _ => fatal,
                });
            }
        };
        let bridge = frame.get(crate::network::BRIDGE_HEADER).is_some();
        if bridge && !principal.bridge {
            refused("the user may not open a network bridge");
            return Err(Fatal::new(
                format!("user {:?} may not open a network bridge", principal.user),
                Some(&frame),
            ));
        }
        if let (Some(client_id), false) = (frame.get("client-id"), bridge) {
            // One connection per client id, as in ActiveMQ (a durable
            // subscription is consumed by one subscriber).
            self.client_id = Some(self.core.durables.claim(client_id).ok_or_else(|| {
                Fatal::new(
                    format!("client-id {client_id:?} is already connected"),
                    Some(&frame),
                )
            })?);
        }
        self.sender = Some(Arc::from(principal.user.as_str()));
        self.principal = Some(principal);
        // Logged in: frames may be as large as the broker allows.
        self.limits.max_frame_size = self.core.limits.max_frame_size;
        let (cx, cy) = parse_heart_beat(frame.get("heart-beat"));
        let ours = self.core.limits.heart_beat.as_millis() as u64;
        // We send every max(ours, what the client wants to receive), and
        // expect from it every max(ours, what it offers to send).
        let send = (cy > 0 && ours > 0).then(|| cy.max(ours));
        let expect = (cx > 0 && ours > 0).then(|| cx.max(ours));
        let mut connected = Frame::new(Command::Connected);
        if bridge {
            connected = connected.header(crate::network::BRIDGE_HEADER, self.core.name.clone());
            self.bridge = Some(frame.clone());
        }
        let connected = connected
            .header("version", self.version.as_str())
            .header(
                "server",
                format!("portico-broker/{}", env!("CARGO_PKG_VERSION")),
            )
            .header("session", format!("{}-{}", self.core.name, self.id))
            .header(
                "heart-beat",
                format!("{},{}", send.unwrap_or(0), expect.unwrap_or(0)),
            );
        let _ = self.control.send(connected.to_bytes_as(self.version)).await;
        Ok((
            send.map(Duration::from_millis),
            expect.map(Duration::from_millis),
        ))
    }

    pub(super) async fn run<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        expect_every: Option<Duration>,
    ) -> Result<(), Fatal> {
        while let Some(frame) = self
            .next_frame(
                reader,
                expect_every,
                "no heart-beat or frame from the client in time",
            )
            .await?
        {
            let mut frame = frame;
            if frame.command != Command::Send {
                // Only SEND carries a body from a client: whatever came
                // with another frame is not kept (a transaction holds
                // ACKs, and must not hold what came with them).
                frame.body = Vec::new();
            }
            let pipelined = matches!(frame.command, Command::Send | Command::Ack | Command::Nack)
                && frame.get("transaction").is_none();
            if !pipelined {
                self.flush().await?;
            }
            if frame.command == Command::Disconnect {
                self.receipt(&frame).await;
                return Ok(());
            }
            self.handle(frame).await?;
        }
        Ok(())
    }

    pub(super) async fn receipt(&self, frame: &Frame) {
        if let Some(r) = frame.get("receipt") {
            let _ = self.control.send(receipt_bytes(self.version, r)).await;
        }
    }

    pub(super) async fn handle(&mut self, frame: Frame) -> Result<(), Fatal> {
        match frame.command {
            Command::Send | Command::Ack | Command::Nack if frame.get("transaction").is_some() => {
                let tx = frame.get("transaction").unwrap_or_default().to_owned();
                // Checked now, so a bad frame fails at once, not at COMMIT.
                if frame.command == Command::Send {
                    self.destination(&frame, Operation::Write)?;
                } else {
                    let id = ack_id(&frame)?;
                    self.core
                        .router
                        .check_ack(self.id, id)
                        .await
                        .map_err(|e| Fatal::new(e, Some(&frame)))?;
                }
                let receipt = frame.get("receipt").map(str::to_owned);
                if let Err(e) = self.transactions.hold(&tx, frame) {
                    return Err(Fatal::new(e, None).with_receipt(receipt));
                }
                if let Some(r) = receipt {
                    let _ = self.control.send(receipt_bytes(self.version, r)).await;
                }
                Ok(())
            }
            Command::Send => {
                let receipt = frame.get("receipt").map(str::to_owned);
                self.send(frame, receipt).await
            }
            Command::Subscribe => {
                let destination = self.destination(&frame, Operation::Read)?;
                let id = match frame.get("id") {
                    Some(id) => id.to_owned(),
                    None if self.version == Version::V1_0 => destination.stomp(),
                    None => return Err(Fatal::new("SUBSCRIBE needs an id header", Some(&frame))),
                };
                let ack = match frame.get("ack").unwrap_or("auto") {
                    "auto" => AckMode::Auto,
                    "client" => AckMode::Client,
                    "client-individual" => AckMode::ClientIndividual,
                    other => {
                        return Err(Fatal::new(
                            format!("invalid ack mode {other:?}"),
                            Some(&frame),
                        ))
                    }
                };
                let prefetch = frame
                    .get("activemq.prefetchSize")
                    .and_then(|p| p.parse::<usize>().ok())
                    .unwrap_or(DEFAULT_PREFETCH)
                    .clamp(1, self.core.limits.max_prefetch.max(1));
                let selector = match frame.get("selector") {
                    Some(text) if !text.trim().is_empty() => Some(Arc::new(
                        Selector::parse(text)
                            .map_err(|e| Fatal::new(e.to_string(), Some(&frame)))?,
                    )),
                    _ => None,
                };
                let mut consumer = Consumer {
                    ack,
                    prefetch,
                    selector,
                };
                let mut destination = destination;
                if let (Some(name), Kind::Topic) = (durable_name(&frame), destination.kind) {
                    destination = self.durable_subscribe(&frame, &id, name).await?;
                    // Its selector chose what the subscription keeps.
                    consumer.selector = None;
                }
                let subscribed = self
                    .core
                    .router
                    .subscribe(self.id, id.clone(), destination, consumer)
                    .await
                    .map_err(|e| Fatal::new(e, Some(&frame)));
                if subscribed.is_err() {
                    self.durable.remove(&id);
                }
                subscribed?;
                self.receipt(&frame).await;
                Ok(())
            }
            Command::Unsubscribe => {
                let id = frame
                    .get("id")
                    .or_else(|| frame.get("destination"))
                    .ok_or_else(|| Fatal::new("UNSUBSCRIBE needs an id header", Some(&frame)))?
                    .to_owned();
                let name = durable_name(&frame).map(str::to_owned);
                let active = self.durable.remove(&id);
                if active.is_some() || name.is_none() {
                    self.core
                        .router
                        .unsubscribe(self.id, id)
                        .await
                        .map_err(|e| Fatal::new(e, Some(&frame)))?;
                }
                if let Some(name) = name {
                    self.durable_unsubscribe(&frame, &name).await?;
                }
                self.receipt(&frame).await;
                Ok(())
            }
            Command::Ack | Command::Nack => {
                self.ack(&frame, frame.get("receipt").map(str::to_owned))
                    .await
            }
            Command::Begin => {
                let tx = frame
                    .get("transaction")
                    .ok_or_else(|| Fatal::new("BEGIN needs a transaction header", Some(&frame)))?;
                self.transactions
                    .begin(tx)
                    .map_err(|e| Fatal::new(e, Some(&frame)))?;
                self.receipt(&frame).await;
                Ok(())
            }
            Command::Commit | Command::Abort => {
                let tx = frame.get("transaction").ok_or_else(|| {
                    Fatal::new("COMMIT and ABORT need a transaction header", Some(&frame))
                })?;
                let frames = self
                    .transactions
                    .finish(tx)
                    .map_err(|e| Fatal::new(e, Some(&frame)))?;
                if frame.command == Command::Commit {
                    for f in frames {
                        match f.command {
                            Command::Send => self.send(f, None).await?,
                            _ => self.ack(&f, None).await?,
                        }
                    }
                    self.flush().await?;
                }
                self.receipt(&frame).await;
                Ok(())
            }
            other => Err(Fatal::new(
                format!("unexpected frame {other}"),
                Some(&frame),
            )),
        }
    }

    pub(super) fn destination(&self, frame: &Frame, op: Operation) -> Result<Destination, Fatal> {
        let text = frame.get("destination").ok_or_else(|| {
            Fatal::new(
                format!("{} needs a destination header", frame.command),
                Some(frame),
            )
        })?;
        self.authorized(frame, text, op)
    }

    /// Where a SEND goes: one destination, or several separated by commas
    /// (a composite destination, as in ActiveMQ: one message to each).
    fn send_destinations(&self, frame: &Frame) -> Result<Vec<Destination>, Fatal> {
        let text = frame
            .get("destination")
            .ok_or_else(|| Fatal::new("SEND needs a destination header", Some(frame)))?;
        let parts: Vec<&str> = text.split(',').map(str::trim).collect();
        if parts.len() > MAX_COMPOSITE {
            return Err(Fatal::new(
                format!(
                    "a composite destination names at most {MAX_COMPOSITE} destinations, not {}",
                    parts.len()
                ),
                Some(frame),
            ));
        }
        parts
            .into_iter()
            .map(|part| self.authorized(frame, part, Operation::Write))
            .collect()
    }

    /// Parses `text` and checks that this session's user may `op` it.
    fn authorized(&self, frame: &Frame, text: &str, op: Operation) -> Result<Destination, Fatal> {
        let destination = Destination::parse(text).map_err(|e| Fatal::new(e, Some(frame)))?;
        if durable::is_hidden(&destination) {
            return Err(Fatal::new(
                format!("{destination} belongs to a durable subscription: subscribe to its topic with activemq.subscriptionName"),
                Some(frame),
            ));
        }
        if destination.is_temporary() {
            // Made by an OpenWire (JMS) connection for its replies: anyone
            // may send to it while it exists; only its connection reads it.
            return match op {
                Operation::Write if self.core.temporary_exists(&destination) => Ok(destination),
                Operation::Write => Err(Fatal::new(
                    format!("{destination} does not exist (its connection is gone)"),
                    Some(frame),
                )),
                _ => Err(Fatal::new(
                    format!("{destination} is read only by the connection that made it"),
                    Some(frame),
                )),
            };
        }
        if destination.is_wildcard() && op == Operation::Write {
            return Err(Fatal::new(
                "cannot send to a wildcard destination",
                Some(frame),
            ));
        }
        let principal = self.principal.as_ref();
        if !principal.is_some_and(|p| self.core.auth.allows(p, op, &destination)) {
            let verb = if op == Operation::Write {
                "write to"
            } else {
                "read from"
            };
            return Err(Fatal::new(
                format!(
                    "user {} is not authorized to {verb} {destination}",
                    principal.map_or("anonymous", |p| p.user.as_str())
                ),
                Some(frame),
            ));
        }
        Ok(destination)
    }

    /// Journals (if stored) and routes a SEND through the pipeline, one
    /// message per destination; the receipt goes out once all are routed.
    /// The frame's body becomes the (last) message's (moved, not copied).
    pub(super) async fn send(
        &mut self,
        mut frame: Frame,
        mut receipt: Option<String>,
    ) -> Result<(), Fatal> {
        let mut destinations = self.send_destinations(&frame)?;
        // A virtual topic's message is copied to its consumer queues (the
        // right to write the topic is the right to fill them).
        let virtual_topic =
            |d: &Destination| d.kind == Kind::Topic && d.name.starts_with(VIRTUAL_TOPIC_PREFIX);
        if destinations.iter().any(virtual_topic) {
            let topics: Vec<String> = destinations
                .iter()
                .filter(|d| virtual_topic(d))
                .map(|d| d.name.clone())
                .collect();
            for topic in topics {
                destinations.extend(self.core.router.virtual_topic_queues(&topic).await);
            }
        }
        // A scheduled SEND is one message per delivery, each held until
        // its time (and stored up front when persistent).
        let stamps = Stamps::read(&frame.headers).map_err(|e| Fatal::new(e, Some(&frame)))?;
        let deliveries = stamps.schedule.deliveries();
        let parts = destinations.len() as u64 * deliveries;
        if parts > intake::MAX_OCCURRENCES {
            return Err(Fatal::new(
                format!(
                    "one SEND may make at most {} messages (destinations times scheduled deliveries), not {parts}",
                    intake::MAX_OCCURRENCES
                ),
                Some(&frame),
            ));
        }
        let mut body = std::mem::take(&mut frame.body);
        let several = parts > 1;
        let last = (destinations.len() - 1, deliveries - 1);
        let now = now_ms();
        for (i, destination) in destinations.into_iter().enumerate() {
            let mut destination = Some(destination);
            for n in 0..deliveries {
                let deliver_at = stamps.schedule.due(now, n);
                let (part, receipt) = if (i, n) == last {
                    (std::mem::take(&mut body), receipt.take())
                } else {
                    (body.clone(), None)
                };
                let scope = several.then(|| {
                    let d = destination.as_ref().map(ToString::to_string);
                    format!("{}\n{n}", d.unwrap_or_default())
                });
                // Moved into its last message, cloned for the others.
                let destination = if n == last.1 {
                    destination.take()
                } else {
                    destination.clone()
                };
                let Some(destination) = destination else {
                    break;
                };
                let one = One {
                    destination,
                    body: part,
                    receipt,
                    scope,
                    deliver_at,
                };
                self.send_to(&frame, &stamps, one).await?;
            }
        }
        Ok(())
    }

    /// One message of a SEND. Each of several (a composite destination, a
    /// repeated schedule) scopes a failover client's dedup id by `scope`.
    async fn send_to(&mut self, frame: &Frame, stamps: &Stamps, one: One) -> Result<(), Fatal> {
        let One {
            destination,
            body,
            receipt,
            scope,
            deliver_at,
        } = one;
        // Errors name the frame's own receipt, whatever the pipeline's
        // (looked up only when there is an error).
        let headers_of_frame = &frame.headers;
        let fail = |message: &str| {
            let receipt = headers_of_frame
                .iter()
                .find(|(n, _)| n == "receipt")
                .map(|(_, v)| v.clone());
            Fatal::new(message, None).with_receipt(receipt)
        };
        if !self.known.contains(&destination) {
            // New to this connection: the broker may be at its maximum of
            // destinations (checked before anything is stored).
            let ensured = self
                .core
                .router
                .ensure_for(self.id, destination.clone())
                .await;
            if let Err(e) = ensured {
                return Err(fail(&e.to_string()));
            }
            if self.known.len() < KNOWN_DESTINATIONS {
                self.known.insert(destination.clone());
            }
        }
        let Some(pipeline) = &self.pipeline else {
            return Err(fail("not connected"));
        };
        let sender = self.sender.clone();
        let scoped;
        let dedup_id = match (frame.get(crate::client::DEDUP_HEADER), &scope) {
            (Some(id), Some(scope)) => {
                scoped = format!("{id}\n{scope}");
                Some(scoped.as_str())
            }
            (id, _) => id,
        };
        let dedup = match (&sender, dedup_id) {
            (Some(sender), Some(id)) => Some(Key::Client { sender, id }),
            _ => None,
        };
        let arriving = Arriving {
            expires: stamps.expires,
            priority: stamps.priority,
            group: stamps.group.clone(),
            deliver_at,
            source: Source::Client,
            destination,
            headers: &frame.headers,
            body,
            persistent: frame.get("persistent") == Some("true"),
            sender: sender.clone(),
            dedup,
            message_id: None,
        };
        self.counters.sent.fetch_add(1, Ordering::Relaxed);
        let reply = receipt.map(|r| receipt_bytes(self.version, r));
        // About to wait for room: what the read buffer holds beyond its
        // unread bytes goes back first.
        let buf = &mut self.buf;
        match pipeline
            .submit(&self.core, arriving, reply, || buf.trim())
            .await
        {
            Ok(()) => Ok(()),
            Err(SubmitError::Closing) => Err(fail("the connection is closing")),
            Err(SubmitError::Store(e)) => Err(fail("the message could not be stored").detail(e)),
        }
    }

    /// Acknowledges through the pipeline: the journal records of stored
    /// messages are written in the same group commits as SENDs, and the
    /// receipt (if any) goes out once they are on disk.
    pub(super) async fn ack(&self, frame: &Frame, receipt: Option<String>) -> Result<(), Fatal> {
        let id = ack_id(frame)?;
        if frame.command == Command::Nack {
            self.core
                .router
                .nack(self.id, id)
                .await
                .map_err(|e| Fatal::new(e, Some(frame)))?;
            return self.pipe(Piped::Reply(self.reply(receipt))).await;
        }
        let stored = self
            .core
            .router
            .ack(self.id, id)
            .await
            .map_err(|e| Fatal::new(e, Some(frame)))?;
        let Some(pipeline) = &self.pipeline else {
            return Err(Fatal::new("not connected", None));
        };
        let reply = self.reply(receipt);
        match pipeline.acknowledged(&self.core, stored, reply).await {
            Ok(()) => Ok(()),
            Err(SubmitError::Closing) => Err(Fatal::new("the connection is closing", None)),
            Err(SubmitError::Store(e)) => {
                Err(Fatal::new("the acknowledgement could not be stored", Some(frame)).detail(e))
            }
        }
    }

    /// A RECEIPT for `receipt`, if there is one.
    fn reply(&self, receipt: Option<String>) -> Option<Vec<u8>> {
        receipt.map(|r| receipt_bytes(self.version, r))
    }
}

/// The durable subscription a SUBSCRIBE or UNSUBSCRIBE names: ActiveMQ's
/// `activemq.subscriptionName`, or `durable-subscription-name`.
fn durable_name(frame: &Frame) -> Option<&str> {
    frame
        .get("activemq.subscriptionName")
        .or_else(|| frame.get("durable-subscription-name"))
        .filter(|n| !n.is_empty())
}

impl Session {
    /// The client id of its CONNECT, which a durable subscription needs.
    fn client_id(&self, frame: &Frame) -> Result<String, Fatal> {
        self.client_id
            .as_ref()
            .map(|c| c.id.clone())
            .ok_or_else(|| Fatal::new(durable::DurableError::NoClientId, Some(frame)))
    }

    /// Makes (or finds) this client's durable subscription `name` to the
    /// frame's topic and returns the hidden queue to consume.
    async fn durable_subscribe(
        &mut self,
        frame: &Frame,
        id: &str,
        name: &str,
    ) -> Result<Destination, Fatal> {
        let fatal = |e: &dyn std::fmt::Display| Fatal::new(e, Some(frame));
        let client_id = self.client_id(frame)?;
        if self.durable.values().any(|n| n == name) {
            return Err(fatal(&durable::DurableError::Active(name.to_owned())));
        }
        let topic = self.destination(frame, Operation::Read)?;
        let selector = frame.get("selector").filter(|s| !s.trim().is_empty());
        let queue = self
            .core
            .durable_subscribe(&client_id, name, &topic, selector)
            .await
            .map_err(|e| fatal(&e))?;
        self.durable.insert(id.to_owned(), name.to_owned());
        Ok(queue)
    }

    /// Removes this client's durable subscription `name` and what it kept.
    async fn durable_unsubscribe(&mut self, frame: &Frame, name: &str) -> Result<(), Fatal> {
        let fatal = |e: &dyn std::fmt::Display| Fatal::new(e, Some(frame));
        let client_id = self.client_id(frame)?;
        if self.durable.values().any(|n| n == name) {
            return Err(fatal(&durable::DurableError::Active(name.to_owned())));
        }
        self.core
            .durable_unsubscribe(&client_id, name)
            .await
            .map_err(|e| fatal(&e))?;
        Ok(())
    }
}

/// The message an ACK or NACK names: `id` (STOMP 1.2) or `message-id`
/// (1.0 and 1.1), read once, here.
pub(super) fn ack_id(frame: &Frame) -> Result<AckId, Fatal> {
    let text = frame
        .get("id")
        .or_else(|| frame.get("message-id"))
        .ok_or_else(|| Fatal::new(format!("{} needs an id header", frame.command), Some(frame)))?;
    AckId::parse(text).ok_or_else(|| {
        Fatal::new(
            format!("no message to acknowledge with id {text:?}"),
            Some(frame),
        )
    })
}
