//! One client connection: CONNECT and heart-beat negotiation, then frames
//! in, deliveries and receipts out.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::transactions::Transactions;
use crate::auth::{Operation, Principal};
use crate::dedup::Key;
use crate::intake::{self, Accepted, Arriving, Source};
use crate::logins::Refusal;
use crate::router::{
    AckMode, ConnectionInfo, Delivery, Destination, Message, Outbox, OutboxReceiver,
};
use crate::stomp::{
    encode_parts_as, parse_heart_beat, Command, Decoded, Frame, FrameBuffer, Limits as FrameLimits,
    Version,
};
use crate::store::Durable;
use crate::BrokerCore;

/// Deliveries a connection may have queued for writing.
const OUTBOX: usize = 256;
/// Default queue prefetch, as ActiveMQ's.
const DEFAULT_PREFETCH: usize = 1000;

/// Why a connection ends with an ERROR frame.
struct Fatal {
    message: String,
    detail: String,
    receipt: Option<String>,
}

impl Fatal {
    fn new(message: impl Into<String>, frame: Option<&Frame>) -> Self {
        Self {
            message: message.into(),
            detail: String::new(),
            receipt: frame.and_then(|f| f.get("receipt")).map(str::to_owned),
        }
    }

    fn with_receipt(mut self, receipt: Option<String>) -> Self {
        self.receipt = receipt;
        self
    }

    fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    fn frame(&self) -> Frame {
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

/// Serves one connection until it ends or the broker stops.
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
    let (mut reader, writer) = tokio::io::split(stream);
    let (control_tx, mut control_rx) = mpsc::channel::<Vec<u8>>(64);
    let mut session = Session {
        core: core.clone(),
        id,
        buf: FrameBuffer::new(),
        // Until CONNECT succeeds, a frame is small: a login costs little.
        limits: FrameLimits {
            max_frame_size: core.limits.max_login_frame_size,
            max_headers: core.limits.max_headers,
            max_header_length: core.limits.max_header_length,
        },
        control: control_tx,
        principal: None,
        sender: None,
        transactions: Transactions::new(
            core.limits.max_transaction_frames,
            core.limits.max_transaction_bytes,
        ),
        version: Version::V1_2,
        pipeline: None,
        bridge: None,
        known: HashSet::new(),
    };
    let connected = tokio::select! {
        _ = stop.cancelled() => return,
        r = session.connect(&mut reader, remote, &transport, deadline) => r,
    };
    let (send_every, expect_every) = match connected {
        Ok(beats) => beats,
        Err(fatal) => {
            core.metrics_error();
            let mut writer = writer;
            let bytes = fatal.frame().to_bytes_as(session.version);
            let _ = writer.write_all(&bytes).await;
            let _ = writer.shutdown().await;
            debug!(conn = id, client.addr = %remote, error = %fatal.message, "connection refused");
            return;
        }
    };
    if let Some(connect) = session.bridge.take() {
        // Another broker opening a bridge: answer, then run the bridge.
        let mut writer = writer;
        while let Ok(bytes) = control_rx.try_recv() {
            if writer.write_all(&bytes).await.is_err() {
                return;
            }
        }
        if writer.flush().await.is_err() {
            return;
        }
        let buf = std::mem::take(&mut session.buf);
        let Some(principal) = session.principal.take() else {
            return;
        };
        drop(session);
        let accepted = crate::network::Inbound {
            connect,
            principal,
            send_every,
            expect_every,
            remote_address: remote.to_string(),
        };
        crate::network::inbound(
            core,
            Box::new(reader),
            Box::new(writer),
            buf,
            accepted,
            stop,
        )
        .await;
        return;
    }
    let (outbox, outbox_rx) = Outbox::new(OUTBOX);
    let (stalled, evicted) = (outbox.stalled.clone(), outbox.evicted.clone());
    let principal = session
        .principal
        .clone()
        .unwrap_or_else(|| Principal::anonymous(None));
    core.router
        .register(
            id,
            outbox,
            ConnectionInfo {
                id,
                remote: remote.to_string(),
                user: principal.user.clone(),
                transport: transport.clone(),
                version: session.version.as_str().to_owned(),
                connected_at: crate::router::rfc3339(SystemTime::now()),
                subscriptions: 0,
            },
        )
        .await;
    let (pipe_tx, pipe_rx) = mpsc::channel(256);
    let pipeline_task = tokio::spawn(run_pipeline(
        core.clone(),
        pipe_rx,
        session.control.clone(),
        session.version,
    ));
    session.pipeline = Some(Pipeline {
        tx: pipe_tx,
        budget: Arc::new(Semaphore::new(PIPELINE_BYTES as usize)),
    });
    info!(conn = id, client.addr = %remote, user = %principal.user, transport = %transport, "client connected");
    let writer_done = CancellationToken::new();
    let writer_task = tokio::spawn(write_loop(
        WriteLoop {
            core: core.clone(),
            conn: id,
            control: control_rx,
            outbox: outbox_rx,
            stalled,
            evicted,
            send_every,
            version: session.version,
            done: writer_done.clone(),
        },
        writer,
    ));
    let outcome = tokio::select! {
        _ = stop.cancelled() => Ok(()),
        _ = writer_done.cancelled() => Ok(()),
        // A missed beat is tolerated: drop after twice the interval.
        r = session.run(&mut reader, expect_every.map(|t| t * 2)) => r,
    };
    if let Err(fatal) = outcome {
        core.metrics_error();
        debug!(conn = id, error = %fatal.message, "closing with ERROR");
        let _ = session
            .control
            .send(fatal.frame().to_bytes_as(session.version))
            .await;
    }
    // What was received is routed before the connection goes.
    let _ = session.flush().await;
    session.pipeline = None;
    let _ = pipeline_task.await;
    core.router.unregister(id).await;
    drop(session);
    let _ = writer_task.await;
    info!(conn = id, client.addr = %remote, "client disconnected");
}

struct Session {
    core: Arc<BrokerCore>,
    id: u64,
    buf: FrameBuffer,
    limits: FrameLimits,
    control: mpsc::Sender<Vec<u8>>,
    principal: Option<Principal>,
    /// The principal's user, shared by every message it sends.
    sender: Option<Arc<str>>,
    transactions: Transactions,
    version: Version,
    /// SENDs on their way: journal, then router, then receipt, in order.
    pipeline: Option<Pipeline>,
    /// The CONNECT of another broker opening a bridge.
    bridge: Option<Frame>,
    /// Destinations this connection sent to that are known to exist.
    known: HashSet<Destination>,
}

/// Destinations a connection remembers as existing (more are asked about).
const KNOWN_DESTINATIONS: usize = 1024;

/// The SENDs of one connection in flight: each is journaled (fsynced in
/// groups), then routed, then receipted, in the order they arrived, while
/// the connection goes on reading. Bounded by bytes.
struct Pipeline {
    tx: mpsc::Sender<Piped>,
    budget: Arc<Semaphore>,
}

/// Bytes of SEND bodies a connection may have in its pipeline.
const PIPELINE_BYTES: u32 = 8 * 1024 * 1024;

enum Piped {
    Send {
        durable: Option<Durable>,
        message: Arc<Message>,
        receipt: Option<String>,
        /// The connection's and the broker's budgets, given back once routed.
        _permit: (OwnedSemaphorePermit, OwnedSemaphorePermit),
    },
    /// A receipt for a frame that needed no more work (a duplicate SEND).
    Receipt(Option<String>),
    /// Journal records (acknowledgements) to await before the receipt.
    Durable {
        durable: Durable,
        receipt: Option<String>,
    },
    /// Answers once everything before it is done.
    Flush(oneshot::Sender<Result<(), String>>),
}

async fn run_pipeline(
    core: Arc<BrokerCore>,
    mut rx: mpsc::Receiver<Piped>,
    control: mpsc::Sender<Vec<u8>>,
    version: Version,
) {
    let receipt = |id: String| receipt_bytes(version, id);
    let mut failed: Option<String> = None;
    while let Some(item) = rx.recv().await {
        match item {
            Piped::Flush(reply) => {
                let _ = reply.send(failed.clone().map_or(Ok(()), Err));
            }
            _ if failed.is_some() => {}
            Piped::Send {
                durable,
                message,
                receipt: id,
                _permit,
            } => {
                if let Some(durable) = durable {
                    if let Err(e) = durable.wait().await {
                        failed = Some(format!("a message could not be stored: {e}"));
                        continue;
                    }
                }
                core.router.send(message).await;
                if let Some(id) = id {
                    let _ = control.send(receipt(id)).await;
                }
            }
            Piped::Durable {
                durable,
                receipt: id,
            } => {
                if let Err(e) = durable.wait().await {
                    failed = Some(format!("an acknowledgement could not be stored: {e}"));
                    continue;
                }
                if let Some(id) = id {
                    let _ = control.send(receipt(id)).await;
                }
            }
            Piped::Receipt(id) => {
                if let Some(id) = id {
                    let _ = control.send(receipt(id)).await;
                }
            }
        }
    }
}

fn receipt_bytes(version: Version, id: impl Into<String>) -> Vec<u8> {
    Frame::new(Command::Receipt)
        .header("receipt-id", id)
        .to_bytes_as(version)
}

impl Session {
    async fn pipe(&self, item: Piped) -> Result<(), Fatal> {
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
    async fn flush(&self) -> Result<(), Fatal> {
        let Some(pipeline) = &self.pipeline else {
            return Ok(());
        };
        let (reply, answer) = oneshot::channel();
        if pipeline.tx.send(Piped::Flush(reply)).await.is_err() {
            return Err(Fatal::new("the connection is closing", None));
        }
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Fatal::new("the message could not be stored", None).detail(e)),
            Err(_) => Err(Fatal::new("the connection is closing", None)),
        }
    }

    /// Reads the next frame, skipping heart-beats. `Ok(None)`: the peer closed.
    async fn next_frame<R: AsyncRead + Unpin>(
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
    async fn connect<R: AsyncRead + Unpin>(
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

    async fn run<R: AsyncRead + Unpin>(
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

    async fn receipt(&self, frame: &Frame) {
        if let Some(r) = frame.get("receipt") {
            let _ = self.control.send(receipt_bytes(self.version, r)).await;
        }
    }

    async fn handle(&mut self, frame: Frame) -> Result<(), Fatal> {
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
                        .check_ack(self.id, id.to_owned())
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
                    .min(self.core.limits.max_prefetch);
                self.core
                    .router
                    .subscribe(self.id, id, destination, ack, prefetch)
                    .await
                    .map_err(|e| Fatal::new(e, Some(&frame)))?;
                self.receipt(&frame).await;
                Ok(())
            }
            Command::Unsubscribe => {
                let id = frame
                    .get("id")
                    .or_else(|| frame.get("destination"))
                    .ok_or_else(|| Fatal::new("UNSUBSCRIBE needs an id header", Some(&frame)))?
                    .to_owned();
                self.core
                    .router
                    .unsubscribe(self.id, id)
                    .await
                    .map_err(|e| Fatal::new(e, Some(&frame)))?;
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

    fn destination(&self, frame: &Frame, op: Operation) -> Result<Destination, Fatal> {
        let text = frame.get("destination").ok_or_else(|| {
            Fatal::new(
                format!("{} needs a destination header", frame.command),
                Some(frame),
            )
        })?;
        let destination = Destination::parse(text).map_err(|e| Fatal::new(e, Some(frame)))?;
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

    /// Journals (if stored) and routes a SEND through the pipeline; the
    /// receipt goes out once it is routed.
    /// Journals (if stored) and routes a SEND through the pipeline; the
    /// receipt goes out once it is routed. The frame's body becomes the
    /// message's (moved, not copied).
    async fn send(&mut self, mut frame: Frame, receipt: Option<String>) -> Result<(), Fatal> {
        let destination = self.destination(&frame, Operation::Write)?;
        let body = std::mem::take(&mut frame.body);
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
            if let Err(e) = self.core.router.ensure(destination.clone()).await {
                return Err(fail(&e));
            }
            if self.known.len() < KNOWN_DESTINATIONS {
                self.known.insert(destination.clone());
            }
        }
        let Some(pipeline) = &self.pipeline else {
            return Err(fail("not connected"));
        };
        // The connection's own budget first, then the broker's: a
        // connection held back waits on its own, not on everyone's.
        let cost = u32::try_from(body.len())
            .unwrap_or(u32::MAX)
            .clamp(1, PIPELINE_BYTES);
        let closing = || fail("the connection is closing");
        let budgets = (
            pipeline.budget.clone().try_acquire_many_owned(cost),
            self.core.intake.clone().try_acquire_many_owned(cost),
        );
        let (permit, intake) = match budgets {
            (Ok(permit), Ok(intake)) => (permit, intake),
            (permit, _) => {
                // About to wait: what the read buffer holds beyond its
                // unread bytes goes back first.
                self.buf.trim();
                let permit = match permit {
                    Ok(p) => p,
                    Err(_) => pipeline
                        .budget
                        .clone()
                        .acquire_many_owned(cost)
                        .await
                        .map_err(|_| closing())?,
                };
                let intake = self
                    .core
                    .intake
                    .clone()
                    .acquire_many_owned(cost)
                    .await
                    .map_err(|_| closing())?;
                (permit, intake)
            }
        };
        let sender = self.sender.clone();
        let dedup = match (&sender, frame.get(crate::client::DEDUP_HEADER)) {
            (Some(sender), Some(id)) => Some(Key::Client { sender, id }),
            _ => None,
        };
        let arriving = Arriving {
            source: Source::Client,
            destination,
            headers: &frame.headers,
            body,
            persistent: frame.get("persistent") == Some("true"),
            sender: sender.clone(),
            dedup,
            message_id: None,
        };
        let accepted = intake::accept(&self.core, arriving)
            .await
            .map_err(|e| fail("the message could not be stored").detail(e.to_string()))?;
        let item = match accepted {
            Accepted::Duplicate => {
                // A failover client re-sent what was already accepted.
                debug!(conn = self.id, "dropping a duplicate SEND");
                Piped::Receipt(receipt)
            }
            Accepted::Taken { message, durable } => Piped::Send {
                durable,
                message,
                receipt,
                _permit: (permit, intake),
            },
        };
        pipeline.tx.send(item).await.map_err(|_| closing())
    }

    /// Acknowledges through the pipeline: the journal records of stored
    /// messages are written in the same group commits as SENDs, and the
    /// receipt (if any) goes out once they are on disk.
    async fn ack(&self, frame: &Frame, receipt: Option<String>) -> Result<(), Fatal> {
        let id = ack_id(frame)?.to_owned();
        if frame.command == Command::Nack {
            self.core
                .router
                .nack(self.id, id)
                .await
                .map_err(|e| Fatal::new(e, Some(frame)))?;
            return self.pipe(Piped::Receipt(receipt)).await;
        }
        let stored = self
            .core
            .router
            .ack(self.id, id)
            .await
            .map_err(|e| Fatal::new(e, Some(frame)))?;
        if stored.is_empty() {
            return self.pipe(Piped::Receipt(receipt)).await;
        }
        let durable = self.core.journal.acknowledge(stored).await.map_err(|e| {
            Fatal::new("the acknowledgement could not be stored", Some(frame)).detail(e.to_string())
        })?;
        self.pipe(Piped::Durable { durable, receipt }).await
    }
}

/// The message an ACK or NACK names: `id` (STOMP 1.2) or `message-id`
/// (1.0 and 1.1).
fn ack_id(frame: &Frame) -> Result<&str, Fatal> {
    frame
        .get("id")
        .or_else(|| frame.get("message-id"))
        .ok_or_else(|| Fatal::new(format!("{} needs an id header", frame.command), Some(frame)))
}

/// What a connection's writer owns: its channels, its flags and how it writes.
struct WriteLoop {
    core: Arc<BrokerCore>,
    conn: u64,
    control: mpsc::Receiver<Vec<u8>>,
    outbox: OutboxReceiver,
    stalled: Arc<AtomicBool>,
    evicted: Arc<AtomicBool>,
    send_every: Option<Duration>,
    version: Version,
    done: CancellationToken,
}

/// Writes control frames and deliveries; sends heart-beats when idle.
async fn write_loop<W: AsyncWrite + Unpin>(mut w: WriteLoop, mut writer: W) {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut outbox_open = true;
    let beat = w.send_every.unwrap_or(Duration::from_secs(3600));
    let mut next_beat = Instant::now() + beat;
    loop {
        buf.clear();
        let mut acks = Vec::new();
        tokio::select! {
            c = w.control.recv() => match c {
                Some(bytes) => buf.extend_from_slice(&bytes),
                None => break,
            },
            d = w.outbox.recv(), if outbox_open => match d {
                Some(d) => encode_delivery(w.version, &d, &mut buf, &mut acks),
                None if !w.evicted.load(Ordering::Acquire) => {
                    // Unregistered: the session is ending; finish its frames.
                    outbox_open = false;
                    continue;
                }
                None => {
                    // The router dropped us: a slow topic subscriber.
                    let error = Frame::new(Command::Error)
                        .header("message", "slow consumer: messages were not read in time");
                    buf.extend_from_slice(&error.to_bytes_as(w.version));
                    let _ = writer.write_all(&buf).await;
                    break;
                }
            },
            _ = tokio::time::sleep_until(next_beat), if w.send_every.is_some() => buf.push(b'\n'),
        }
        // Let the tasks that are ready (the router, this connection's
        // pipeline) run first: what they queue meanwhile goes in the same
        // write. Under load this turns a write per frame, each waking the
        // client, into one write per batch; when idle it costs one turn of
        // the scheduler.
        tokio::task::yield_now().await;
        // Whatever else is ready goes in the same write.
        while buf.len() < 256 * 1024 {
            if let Ok(bytes) = w.control.try_recv() {
                buf.extend_from_slice(&bytes);
            } else if let Some(d) = w.outbox.try_recv() {
                encode_delivery(w.version, &d, &mut buf, &mut acks);
            } else {
                break;
            }
        }
        if writer.write_all(&buf).await.is_err() || writer.flush().await.is_err() {
            break;
        }
        next_beat = Instant::now() + beat;
        if !acks.is_empty() {
            // Auto-acknowledged stored messages are done once written.
            let written = match w.core.journal.acknowledge(acks).await {
                Ok(durable) => durable.wait().await,
                Err(e) => Err(e),
            };
            if written.is_err() {
                break;
            }
        }
        if w.outbox.is_empty() && w.stalled.swap(false, Ordering::AcqRel) {
            w.core.router.resume(w.conn).await;
        }
    }
    let _ = writer.shutdown().await;
    w.done.cancel();
}

fn encode_delivery(version: Version, d: &Delivery, buf: &mut Vec<u8>, acks: &mut Vec<u64>) {
    let m = &d.message;
    let destination = m.destination.stomp();
    let fixed = [
        ("subscription", d.subscription.as_str()),
        ("message-id", m.message_id.as_str()),
        ("destination", destination.as_str()),
    ];
    let ack = d.ack.as_deref().map(|ack| ("ack", ack));
    let redelivered = d.redelivered.then_some(("redelivered", "true"));
    let carried = m.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()));
    let headers = fixed
        .into_iter()
        .chain(ack)
        .chain(redelivered)
        .chain(carried);
    encode_parts_as(version, Command::Message, headers, &m.body, buf);
    if d.ack_mode == AckMode::Auto && m.stored {
        acks.push(m.seq);
    }
}
