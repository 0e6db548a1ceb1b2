//! A STOMP client with ActiveMQ's failover transport.
//!
//! On a lost connection it reconnects (in order or at random, with
//! exponential back-off, as the URL says), re-subscribes, and re-sends every
//! SEND whose receipt had not arrived, so nothing is lost. Each SEND carries
//! a `portico-dedup-id`, so the broker drops a re-sent message it already
//! stored; a consumer may still see a message twice (one delivered but not
//! acknowledged before a failover) and can drop it by `message-id` or by the
//! producer's own ids.

pub mod url;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tracing::{info, warn};

use crate::stomp::{Command, Decoded, Frame, FrameBuffer, Limits};
pub use url::{BrokerUrl, Endpoint};

/// The header that lets a broker drop a re-sent message.
pub const DEDUP_HEADER: &str = "portico-dedup-id";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("the broker refused: {message}")]
    Broker { message: String },
    #[error("no connection within the failover timeout")]
    Timeout,
    #[error("the session did not end cleanly: {0}")]
    Closed(String),
}

/// What the client reads from a broker: frames up to 64 MiB (a broker's
/// `max_frame_size` is 4 MiB unless raised), so one frame bounds what a
/// broker can make the client hold.
const READ_LIMITS: Limits = Limits {
    max_frame_size: 64 * 1024 * 1024,
    max_headers: 1024,
    max_header_length: 64 * 1024,
};

/// Messages (and their bytes) the client holds for its caller.
const INBOX_MESSAGES: usize = 100_000;
const INBOX_BYTES: usize = 128 * 1024 * 1024;

/// Failed connection attempts are logged at most this often.
const RETRY_LOG_EVERY: Duration = Duration::from_secs(5);

/// How long closing waits for the broker's receipt of DISCONNECT.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Credentials and TLS settings.
#[derive(Clone, Default)]
pub struct ClientOptions {
    pub login: Option<String>,
    pub passcode: Option<String>,
    /// Verifies `ssl://` brokers; `None` uses an empty root store (every
    /// TLS connection then fails), so set it for TLS.
    pub tls: Option<Arc<ClientConfig>>,
    /// SENDs that may await their receipts at once.
    pub window: usize,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("login", &self.login)
            .field("passcode", &self.passcode.as_ref().map(|_| "****"))
            .field("window", &self.window)
            .finish()
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

struct Conn {
    stream: Box<dyn Io>,
    buf: FrameBuffer,
    /// Time allowed between frames (three broker heart-beats); `None`: none.
    read_timeout: Option<Duration>,
}

impl Conn {
    /// Writes and empties `out`.
    async fn write_out(&mut self, out: &mut Vec<u8>) -> Result<(), Broken> {
        if out.is_empty() {
            return Ok(());
        }
        // TLS keeps what the socket did not take yet: flush, or it waits
        // there while this client waits for the broker's answer.
        let written = async {
            self.stream.write_all(out).await?;
            self.stream.flush().await
        };
        let result = written.await.map_err(|e| Broken::Io(e.to_string()));
        out.clear();
        result
    }
}

/// Why the current connection ended.
enum Broken {
    Io(String),
    Refused(String),
}

/// Queued bytes that are written without waiting for the client to wait.
const COALESCE: usize = 32 * 1024;

/// A client of one broker URL.
pub struct Client {
    url: BrokerUrl,
    options: ClientOptions,
    conn: Option<Conn>,
    id: String,
    next: u64,
    /// SENDs not yet receipted, in order, as they were written.
    unreceipted: VecDeque<(String, Frame)>,
    /// SUBSCRIBE frames, replayed after every failover; their `id`s carry
    /// the connection's generation (`sub-N.G`), so a MESSAGE tells which
    /// connection delivered it.
    subscriptions: Vec<Frame>,
    /// Connections made so far (the current one's number).
    generation: u64,
    /// MESSAGEs received and not yet taken by [`Client::recv`]: bounded, so
    /// a broker that ignores the prefetch window cannot fill the client.
    inbox: VecDeque<Frame>,
    inbox_bytes: usize,
    /// Frames queued for the broker: written before the client next waits
    /// for it, or once [`COALESCE`] bytes gather, so a burst of SENDs or
    /// ACKs costs one write instead of one each.
    out: Vec<u8>,
    /// Failovers after the first connection.
    pub reconnects: u64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("reconnects", &self.reconnects)
            .finish()
    }
}

impl Client {
    /// Connects (retrying as `startupMaxReconnectAttempts` allows).
    pub async fn connect(url: BrokerUrl, options: ClientOptions) -> Result<Self, ClientError> {
        let random = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut client = Self {
            url,
            options: ClientOptions {
                window: options.window.max(1),
                ..options
            },
            conn: None,
            id: format!("{:x}-{:x}", std::process::id(), random & 0xffff_ffff_ffff),
            next: 0,
            unreceipted: VecDeque::new(),
            subscriptions: Vec::new(),
            generation: 0,
            inbox: VecDeque::new(),
            inbox_bytes: 0,
            out: Vec::new(),
            reconnects: 0,
        };
        let attempts = client
            .url
            .startup_max_reconnect_attempts
            .or(client.url.max_reconnect_attempts);
        client.establish(attempts).await?;
        Ok(client)
    }

    /// This client's id, the prefix of its dedup ids.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn next_id(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// Sends a SEND frame; returns once it is queued (see [`Client::flush`]),
    /// or, when the window of unreceipted SENDs is full, once room is made.
    pub async fn send(&mut self, mut frame: Frame) -> Result<(), ClientError> {
        let n = self.next_id();
        let receipt = format!("{}-{n}", self.id);
        frame
            .headers
            .retain(|(k, _)| k != "receipt" && k != DEDUP_HEADER);
        frame.headers.push(("receipt".into(), receipt.clone()));
        frame.headers.push((DEDUP_HEADER.into(), receipt.clone()));
        let bytes = frame.to_bytes();
        self.unreceipted.push_back((receipt, frame));
        if let Err(broken) = self.write(&bytes).await {
            self.recover(broken).await?;
        }
        while self.unreceipted.len() >= self.options.window {
            self.pump().await?;
        }
        Ok(())
    }

    /// Writes whatever is queued and waits until every SEND so far has its
    /// receipt.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        if let Err(broken) = self.drain().await {
            self.recover(broken).await?;
        }
        while !self.unreceipted.is_empty() {
            self.pump().await?;
        }
        Ok(())
    }

    /// Writes what is queued now, without waiting for receipts.
    pub async fn push(&mut self) -> Result<(), ClientError> {
        if let Err(broken) = self.drain().await {
            self.recover(broken).await?;
        }
        Ok(())
    }

    /// Subscribes (and re-subscribes after every failover).
    pub async fn subscribe(
        &mut self,
        destination: &str,
        ack: &str,
        extra: &[(&str, &str)],
    ) -> Result<(), ClientError> {
        let id = subscription_id(self.subscriptions.len() + 1, self.generation);
        let mut frame = Frame::new(Command::Subscribe)
            .header("destination", destination)
            .header("id", id)
            .header("ack", ack);
        for (k, v) in extra {
            frame = frame.header(k, *v);
        }
        self.subscriptions.push(frame.clone());
        if let Err(broken) = self.write(&frame.to_bytes()).await {
            self.recover(broken).await?;
        }
        Ok(())
    }

    /// The next MESSAGE.
    pub async fn recv(&mut self) -> Result<Frame, ClientError> {
        loop {
            if let Some(m) = self.inbox.pop_front() {
                self.inbox_bytes -= m.body.len();
                return Ok(m);
            }
            self.pump().await?;
        }
    }

    /// Acknowledges a MESSAGE (for `client` and `client-individual`); the ACK
    /// is queued and goes out before the client next waits for the broker.
    /// A message delivered by a connection that has since failed over is
    /// not acknowledged: that broker's ack ids mean nothing to the new one,
    /// which delivers the message again.
    pub async fn ack(&mut self, message: &Frame) -> Result<(), ClientError> {
        let Some(ack) = message.get("ack") else {
            return Ok(());
        };
        if !message
            .get("subscription")
            .is_some_and(|s| s.ends_with(&format!(".{}", self.generation)))
        {
            return Ok(());
        }
        let frame = Frame::new(Command::Ack).header("id", ack);
        if let Err(broken) = self.write(&frame.to_bytes()).await {
            // The broker redelivers what was not acknowledged.
            self.recover(broken).await?;
        }
        Ok(())
    }

    /// Ends the session cleanly: writes what is queued (ACKs included),
    /// waits for every SEND's receipt, then sends DISCONNECT and waits for
    /// its receipt, which the broker sends only once everything before it
    /// is done, so no acknowledgement is lost to a reset connection.
    /// Messages that arrive meanwhile were never handed out: they are not
    /// acknowledged, and the broker gives them to other consumers.
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.flush().await?;
        let receipt = format!("{}-disconnect", self.id);
        let frame = Frame::new(Command::Disconnect).header("receipt", receipt.clone());
        self.out.extend_from_slice(&frame.to_bytes());
        self.drain()
            .await
            .map_err(|_| ClientError::Closed("the connection broke before DISCONNECT".into()))?;
        let answered = tokio::time::timeout(CLOSE_TIMEOUT, async {
            loop {
                match self.read_frame().await {
                    Ok(f) if f.command == Command::Receipt => {
                        if f.get("receipt-id") == Some(receipt.as_str()) {
                            return Ok(());
                        }
                    }
                    Ok(f) if f.command == Command::Error => {
                        let message = f.get("message").unwrap_or("ERROR").to_owned();
                        return Err(ClientError::Broker { message });
                    }
                    // Prefetched and never handed out: left unacknowledged.
                    Ok(_) => {}
                    Err(Broken::Io(e) | Broken::Refused(e)) => {
                        return Err(ClientError::Closed(e));
                    }
                }
            }
        })
        .await
        .map_err(|_| ClientError::Closed("no receipt for DISCONNECT in time".into()))?;
        answered?;
        if let Some(conn) = &mut self.conn {
            // Our half closes cleanly (TLS close_notify, then FIN).
            let _ = conn.stream.shutdown().await;
        }
        Ok(())
    }

    /// Queues a frame's bytes; writes once enough have gathered.
    async fn write(&mut self, bytes: &[u8]) -> Result<(), Broken> {
        self.out.extend_from_slice(bytes);
        if self.out.len() >= COALESCE {
            self.drain().await
        } else {
            Ok(())
        }
    }

    /// Writes everything queued.
    async fn drain(&mut self) -> Result<(), Broken> {
        match &mut self.conn {
            Some(conn) => conn.write_out(&mut self.out).await,
            None if self.out.is_empty() => Ok(()),
            None => Err(Broken::Io("not connected".into())),
        }
    }

    /// Reads one frame (writing what is queued before it waits) and files
    /// it: receipts, messages, errors.
    async fn pump(&mut self) -> Result<(), ClientError> {
        match self.read_frame().await {
            Ok(frame) => match frame.command {
                Command::Receipt => {
                    let id = frame.get("receipt-id").unwrap_or_default();
                    if let Some(at) = self.unreceipted.iter().position(|(r, _)| r == id) {
                        // Receipts come in order; everything before is done too.
                        self.unreceipted.drain(..=at);
                    }
                    Ok(())
                }
                // Nobody asked for it (a producer subscribes to nothing):
                // not kept.
                Command::Message if self.subscriptions.is_empty() => Ok(()),
                Command::Message => {
                    let size = frame.body.len();
                    if self.inbox.len() >= INBOX_MESSAGES || self.inbox_bytes + size > INBOX_BYTES {
                        return Err(ClientError::Broker {
                            message: format!(
                                "the broker sent more than {INBOX_MESSAGES} messages or {INBOX_BYTES} bytes the client has not taken"
                            ),
                        });
                    }
                    self.inbox_bytes += size;
                    self.inbox.push_back(frame);
                    Ok(())
                }
                Command::Error => {
                    let message = frame.get("message").unwrap_or("ERROR").to_owned();
                    Err(ClientError::Broker { message })
                }
                _ => Ok(()),
            },
            Err(Broken::Refused(message)) => Err(ClientError::Broker { message }),
            Err(broken) => self.recover(broken).await,
        }
    }

    async fn read_frame(&mut self) -> Result<Frame, Broken> {
        let Some(conn) = &mut self.conn else {
            return Err(Broken::Io("not connected".into()));
        };
        read_frame(conn, &mut self.out).await
    }

    /// After a broken connection: reconnect, re-subscribe, re-send.
    async fn recover(&mut self, broken: Broken) -> Result<(), ClientError> {
        let Broken::Io(why) = broken else {
            return Ok(());
        };
        self.conn = None;
        // SENDs and subscriptions are replayed from their own lists; ACKs
        // of the old connection are moot (the broker redelivers), and so
        // are prefetched messages not yet handed out that await an ACK:
        // the broker delivers them again. Auto-acknowledged ones stay.
        self.out.clear();
        self.inbox.retain(|m| m.get("ack").is_none());
        self.inbox_bytes = self.inbox.iter().map(|m| m.body.len()).sum();
        if !self.url.failover {
            return Err(ClientError::Unreachable {
                url: self.url.endpoints[0].to_string(),
                detail: why,
            });
        }
        warn!(error = %why, unreceipted = self.unreceipted.len(), "connection lost; failing over");
        let attempts = self.url.max_reconnect_attempts;
        let started = Instant::now();
        let established = match self.url.timeout {
            Some(limit) => tokio::time::timeout(limit, self.establish(attempts))
                .await
                .map_err(|_| ClientError::Timeout)?,
            None => self.establish(attempts).await,
        };
        established?;
        self.reconnects += 1;
        info!(after = ?started.elapsed(), resent = self.unreceipted.len(), "failed over");
        Ok(())
    }

    /// Connects to one of the endpoints, then replays subscriptions and
    /// unreceipted SENDs.
    async fn establish(&mut self, attempts: Option<u32>) -> Result<(), ClientError> {
        let mut attempt = 0u32;
        let mut last = String::new();
        let mut logged: Option<Instant> = None;
        loop {
            let mut order: Vec<usize> = (0..self.url.endpoints.len()).collect();
            if self.url.randomize && order.len() > 1 {
                let seed = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos() as usize);
                let by = seed % order.len();
                order.rotate_left(by);
            }
            for i in order {
                let endpoint = self.url.endpoints[i].clone();
                match self.open(&endpoint).await {
                    Ok(conn) => {
                        self.conn = Some(conn);
                        match self.replay().await {
                            Ok(()) => return Ok(()),
                            Err(Broken::Refused(message)) => {
                                return Err(ClientError::Broker { message })
                            }
                            Err(Broken::Io(e)) => {
                                self.conn = None;
                                last = e;
                            }
                        }
                    }
                    Err(Broken::Refused(message)) => return Err(ClientError::Broker { message }),
                    Err(Broken::Io(e)) => last = format!("{endpoint}: {e}"),
                }
            }
            if attempts.is_some_and(|max| attempt >= max) {
                return Err(ClientError::Unreachable {
                    url: self
                        .url
                        .endpoints
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                    detail: last,
                });
            }
            let delay = self.url.delay(attempt);
            // Every failed round is told, at most once per RETRY_LOG_EVERY:
            // a wrong address must not retry in silence.
            if logged.is_none_or(|at: Instant| at.elapsed() >= RETRY_LOG_EVERY) {
                logged = Some(Instant::now());
                warn!(attempt = attempt + 1, error = %last, retry_in = ?delay, "cannot reach the broker; retrying");
            }
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    async fn replay(&mut self) -> Result<(), Broken> {
        self.generation += 1;
        let mut bytes = Vec::new();
        for (i, s) in self.subscriptions.iter_mut().enumerate() {
            for (name, value) in &mut s.headers {
                if name == "id" {
                    *value = subscription_id(i + 1, self.generation);
                }
            }
            s.encode(&mut bytes);
        }
        for (_, f) in &self.unreceipted {
            f.encode(&mut bytes);
        }
        self.out = bytes;
        self.drain().await
    }

    async fn open(&self, endpoint: &Endpoint) -> Result<Conn, Broken> {
        let io = |e: std::io::Error| Broken::Io(e.to_string());
        let tcp = tokio::time::timeout(
            Duration::from_secs(10),
            TcpStream::connect((endpoint.host.as_str(), endpoint.port)),
        )
        .await
        .map_err(|_| Broken::Io("connect timed out".into()))?
        .map_err(io)?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Io> = if endpoint.tls {
            let config = self.options.tls.clone().unwrap_or_else(|| {
                portico_core::tls::client_config(rustls::RootCertStore::empty())
            });
            let name = ServerName::try_from(endpoint.host.clone())
                .map_err(|e| Broken::Io(e.to_string()))?;
            let tls = tokio::time::timeout(
                Duration::from_secs(10),
                TlsConnector::from(config).connect(name, tcp),
            )
            .await
            .map_err(|_| Broken::Io("TLS handshake timed out".into()))?
            .map_err(io)?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        let mut conn = Conn {
            stream,
            buf: FrameBuffer::new(),
            read_timeout: Some(Duration::from_secs(10)),
        };
        let mut connect = Frame::new(Command::Connect)
            .header("accept-version", "1.2")
            .header("host", endpoint.host.clone())
            .header("heart-beat", "0,1000");
        if let Some(login) = &self.options.login {
            connect = connect.header("login", login.clone());
        }
        if let Some(passcode) = &self.options.passcode {
            connect = connect.header("passcode", passcode.clone());
        }
        conn.stream
            .write_all(&connect.to_bytes())
            .await
            .map_err(io)?;
        conn.stream.flush().await.map_err(io)?;
        let reply = read_frame(&mut conn, &mut Vec::new()).await?;
        match reply.command {
            Command::Connected => {
                let beats = reply
                    .get("heart-beat")
                    .and_then(|h| h.split_once(','))
                    .and_then(|(x, _)| x.trim().parse::<u64>().ok());
                conn.read_timeout = beats
                    .filter(|ms| *ms > 0)
                    .map(|ms| Duration::from_millis(ms * 3));
                Ok(conn)
            }
            Command::Error => Err(Broken::Refused(
                reply.get("message").unwrap_or("ERROR").to_owned(),
            )),
            other => Err(Broken::Io(format!("expected CONNECTED, got {other}"))),
        }
    }
}

/// The `id` of the `n`th subscription on connection `generation`.
fn subscription_id(n: usize, generation: u64) -> String {
    format!("sub-{n}.{generation}")
}

async fn read_frame(conn: &mut Conn, out: &mut Vec<u8>) -> Result<Frame, Broken> {
    loop {
        match conn.buf.next(&READ_LIMITS) {
            Ok(Some(Decoded::Frame(f))) => return Ok(f),
            Ok(Some(Decoded::HeartBeat)) => continue,
            Ok(None) => {}
            Err(e) => return Err(Broken::Io(format!("bad frame from the broker: {e}"))),
        }
        // About to wait for the broker: what is queued for it goes first.
        conn.write_out(out).await?;
        let read = conn.stream.read_buf(conn.buf.spare(64 * 1024));
        let n = match conn.read_timeout {
            Some(t) => tokio::time::timeout(t, read)
                .await
                .map_err(|_| Broken::Io("the broker went silent".into()))?,
            None => read.await,
        }
        .map_err(|e| Broken::Io(e.to_string()))?;
        if n == 0 {
            return Err(Broken::Io("the broker closed the connection".into()));
        }
    }
}
