//! One downstream connection, start to finish: TLS handshake (for `tls`
//! listeners), choosing and connecting a target, relaying, and the one log
//! event that describes it.
//!
//! A client is never accepted that cannot be served: its ClientHello is read,
//! the target is connected, and only then is the client's handshake finished.
//! With no usable target the connection is closed at once, so a failover
//! client moves on instead of believing it is connected.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::server::{Accepted, Acceptor, ClientHello, UnbufferedServerConnection};
use rustls::ServerConfig;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, Instrument};

use crate::admission::Admitted;
use crate::config::TlsVersion;
use crate::proxy_protocol::ProxyHeader;
use crate::relay::{relay, RelayCounters, RelayEnd, Stops};
use crate::snapshot::{ListenerState, Shared};
use crate::tls::{Bytes, ServerTls, TlsStream};
use crate::upstream::{ConnectionGuard, TargetGroup, UpstreamStream};

/// Why a session ended.
#[derive(Debug)]
enum Close {
    /// The downstream TLS handshake failed; the reason is a metric label.
    Handshake(&'static str),
    /// No target could take the connection.
    NoTarget,
    Relay(RelayEnd),
    /// Shutdown's grace period ended before the session got going.
    Shutdown,
}

impl fmt::Display for Close {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Handshake(reason) => write!(f, "handshake_failed: {reason}"),
            Self::NoTarget => f.write_str("no_target"),
            Self::Relay(RelayEnd::Closed { first }) => write!(f, "{}_closed", first.as_str()),
            Self::Relay(RelayEnd::Idle) => f.write_str("idle_timeout"),
            Self::Relay(RelayEnd::Error { side, error }) => {
                write!(f, "{}_error: {error}", side.as_str())
            }
            Self::Relay(RelayEnd::Aborted) | Self::Shutdown => f.write_str("shutdown"),
            Self::Relay(RelayEnd::Deregistered) => f.write_str("deregistered"),
        }
    }
}

/// A session ready to relay: the client's stream, the target's, and the
/// target's deregistration.
type Established<D> = (D, UpstreamStream, CancellationToken);

/// What the closing log event reports.
struct Report {
    sni: Option<String>,
    upstream: Option<ConnectionGuard>,
    to_upstream: u64,
    to_downstream: u64,
    close: Close,
}

impl Report {
    fn new() -> Self {
        Self {
            sni: None,
            upstream: None,
            to_upstream: 0,
            to_downstream: 0,
            close: Close::Shutdown,
        }
    }
}

/// Serves one accepted connection.
pub(crate) async fn run(
    shared: Arc<Shared>,
    listener: Arc<ListenerState>,
    group: Option<Arc<TargetGroup>>,
    tcp: TcpStream,
    client: SocketAddr,
    admitted: Admitted,
) {
    let id = shared.next_session_id();
    let span = tracing::info_span!(
        "session",
        session.id = id,
        client.addr = %client,
        listener = %listener.config.name,
    );
    serve(shared, listener, group, tcp, client, admitted)
        .instrument(span)
        .await;
}

async fn serve(
    shared: Arc<Shared>,
    listener: Arc<ListenerState>,
    group: Option<Arc<TargetGroup>>,
    tcp: TcpStream,
    client: SocketAddr,
    mut admitted: Admitted,
) {
    let started = Instant::now();
    let metrics = &listener.metrics;
    metrics.connections.inc();
    metrics.active.inc();
    let _ = tcp.set_nodelay(true);
    let mut report = Report::new();
    if let Some(group) = group {
        let header = listener.config.proxy_protocol.then(|| {
            ProxyHeader {
                source: client,
                destination: tcp.local_addr().unwrap_or(client),
            }
            .encode()
        });
        let cx = Cx {
            shared: &shared,
            listener: &listener,
            group: &group,
            client,
            proxy_header: header.as_ref().map(AsRef::as_ref),
        };
        // Setting up (both TLS state machines, the target's connect) takes
        // futures several times the size of what the relay keeps: boxed,
        // they are freed once done, so an established connection's task
        // holds only its streams and the relay.
        match &listener.tls {
            Some(tls) => {
                let established = Box::pin(cx.tls(tcp, tls, &mut admitted, &mut report)).await;
                if let Some((mut downstream, mut upstream, deregistered)) = established {
                    cx.relay(&mut downstream, &mut upstream, &deregistered, &mut report)
                        .await;
                }
            }
            None => {
                if let Some((mut tcp, mut upstream, deregistered)) =
                    Box::pin(cx.plain(tcp, &mut report)).await
                {
                    cx.relay(&mut tcp, &mut upstream, &deregistered, &mut report)
                        .await;
                }
            }
        }
    } else {
        report.close = Close::NoTarget;
    }
    if matches!(report.close, Close::NoTarget) {
        metrics.no_target.inc();
    }
    if let Close::Handshake(reason) = report.close {
        shared
            .metrics
            .handshake_failure(&listener.config.name, reason);
    }
    metrics.active.dec();
    let target = report.upstream.as_ref().map(ConnectionGuard::target);
    info!(
        sni = report.sni.as_deref().unwrap_or(""),
        target = target.map_or("", |t| t.label.as_str()),
        upstream.addr = %target.map_or_else(String::new, |t| t.addr.to_string()),
        bytes.to_upstream = report.to_upstream,
        bytes.to_downstream = report.to_downstream,
        duration_ms = started.elapsed().as_millis() as u64,
        close_reason = %report.close,
        "connection closed"
    );
}

/// What a session's phases share.
struct Cx<'a> {
    shared: &'a Shared,
    listener: &'a ListenerState,
    group: &'a Arc<TargetGroup>,
    client: SocketAddr,
    proxy_header: Option<&'a [u8]>,
}

impl Cx<'_> {
    /// Connects to a target of the listener's group. A reload may replace
    /// the group while this session picks from it (its removed targets then
    /// drain and refuse new connections): the session moves on to the
    /// group that replaced it.
    async fn connect(&self) -> Option<(ConnectionGuard, UpstreamStream)> {
        let mut group = self.group.clone();
        for _ in 0..3 {
            if let Some(connected) = group.connect_any(self.client, self.proxy_header).await {
                return Some(connected);
            }
            group = group.replacement()?;
        }
        None
    }

    /// A plain connection's target, connected: what the relay needs.
    async fn plain(&self, tcp: TcpStream, report: &mut Report) -> Option<Established<TcpStream>> {
        let connected = tokio::select! {
            _ = self.shared.abort.cancelled() => return None,
            c = self.connect() => c,
        };
        let Some((guard, upstream)) = connected else {
            report.close = Close::NoTarget;
            return None;
        };
        let deregistered = guard.target().deregistered.clone();
        report.upstream = Some(guard);
        Some((tcp, upstream, deregistered))
    }

    /// The client's handshake and the target's connect, in the order
    /// described at the top: what the relay needs, or `None` (the reason
    /// in `report`).
    async fn tls(
        &self,
        tcp: TcpStream,
        configs: &ServerTls,
        admitted: &mut Admitted,
        report: &mut Report,
    ) -> Option<Established<TlsStream<UnbufferedServerConnection>>> {
        // One deadline for the whole handshake, however it is split up.
        let deadline = Instant::now() + self.listener.config.handshake_timeout;
        let mut tcp = tcp;
        let hello = tokio::select! {
            _ = self.shared.abort.cancelled() => return None,
            r = tokio::time::timeout_at(deadline, read_client_hello(&mut tcp)) => r,
        };
        let (accepted, read) = match hello {
            Err(_) => {
                report.close = Close::Handshake("timeout");
                return None;
            }
            Ok(Err(close)) => {
                report.close = close;
                return None;
            }
            Ok(Ok(start)) => start,
        };
        report.sni = accepted.client_hello().server_name().map(str::to_owned);
        let config = configs.for_hello(&accepted.client_hello()).clone();
        let listener_tls = self.listener.config.tls.as_ref();
        let min_version = listener_tls.map(|t| t.min_version);
        if let Err(reason) = compatible(&accepted.client_hello(), &config, min_version) {
            // The client hears why; no target is touched.
            let alert = match accepted.into_connection(config) {
                Err((_, mut alert)) => {
                    let mut bytes = Vec::new();
                    let _ = alert.write_all(&mut bytes);
                    bytes
                }
                // rustls would go on (a client that offers no ALPN
                // protocol): refuse it with the alert its reason names.
                Ok(_) => fatal_alert(if reason.starts_with("no_alpn") {
                    120
                } else {
                    40
                })
                .to_vec(),
            };
            let _ = tokio::time::timeout_at(deadline, tcp.write_all(&alert)).await;
            report.close = Close::Handshake(reason);
            return None;
        }
        drop(accepted);
        let finish = async {
            let finished = tokio::time::timeout_at(
                deadline,
                TlsStream::accept(config, tcp, Bytes::from_vec(read)),
            )
            .await;
            admitted.handshake_done();
            match finished {
                Err(_) => Err(Close::Handshake("timeout")),
                Ok(Err(e)) => Err(Close::Handshake(handshake_reason(&e))),
                Ok(Ok(stream)) => Ok(stream),
            }
        };
        // A client that must present a certificate is authenticated before
        // any target hears of it; any other is connected to a target first,
        // so with none usable its handshake fails at once and its failover
        // transport moves on.
        let client_auth = listener_tls.is_some_and(|t| t.client_ca.is_some());
        let (downstream, connected) = if client_auth {
            let downstream = tokio::select! {
                _ = self.shared.abort.cancelled() => return None,
                d = finish => d,
            };
            let downstream = match downstream {
                Ok(d) => d,
                Err(close) => {
                    report.close = close;
                    return None;
                }
            };
            let connected = tokio::select! {
                _ = self.shared.abort.cancelled() => return None,
                c = self.connect() => c,
            };
            (Ok(downstream), connected)
        } else {
            let connected = tokio::select! {
                _ = self.shared.abort.cancelled() => return None,
                c = self.connect() => c,
            };
            if connected.is_none() {
                report.close = Close::NoTarget;
                return None;
            }
            let downstream = tokio::select! {
                _ = self.shared.abort.cancelled() => return None,
                d = finish => d,
            };
            (downstream, connected)
        };
        let Some((guard, upstream)) = connected else {
            report.close = Close::NoTarget;
            return None;
        };
        let deregistered = guard.target().deregistered.clone();
        report.upstream = Some(guard);
        match downstream {
            Ok(downstream) => Some((downstream, upstream, deregistered)),
            Err(close) => {
                report.close = close;
                None
            }
        }
    }

    async fn relay<D>(
        &self,
        downstream: &mut D,
        upstream: &mut UpstreamStream,
        deregistered: &CancellationToken,
        report: &mut Report,
    ) where
        D: crate::relay::Stream,
    {
        let metrics = &self.listener.metrics;
        let outcome = relay(
            downstream,
            upstream,
            self.listener.config.idle_timeout,
            Stops {
                abort: &self.shared.abort,
                deregistered,
            },
            RelayCounters {
                to_upstream: &metrics.bytes_upstream,
                to_downstream: &metrics.bytes_downstream,
            },
        )
        .await;
        report.to_upstream = outcome.to_upstream;
        report.to_downstream = outcome.to_downstream;
        report.close = Close::Relay(outcome.end);
    }
}

/// Reads the client's first flight until its ClientHello is whole: the
/// hello, and every byte read (which the handshake then starts from).
/// A malformed hello is answered with rustls's alert.
async fn read_client_hello(tcp: &mut TcpStream) -> Result<(Accepted, Vec<u8>), Close> {
    let mut acceptor = Acceptor::default();
    let mut read = Vec::new();
    loop {
        let before = read.len();
        if before >= MAX_CLIENT_HELLO {
            return Err(Close::Handshake("not_tls"));
        }
        // Room only once the socket is readable: a connection that sends
        // nothing holds no buffer.
        tcp.readable()
            .await
            .map_err(|e| Close::Handshake(handshake_reason(&e)))?;
        read.reserve(HELLO_READ);
        match tcp.read_buf(&mut read).await {
            Ok(0) => return Err(Close::Handshake("closed")),
            Ok(_) => {}
            Err(e) => return Err(Close::Handshake(handshake_reason(&e))),
        }
        let mut fresh = &read[before..];
        while !fresh.is_empty() {
            let n = acceptor
                .read_tls(&mut fresh)
                .map_err(|e| Close::Handshake(handshake_reason(&e)))?;
            if n == 0 {
                return Err(Close::Handshake("not_tls"));
            }
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => return Ok((accepted, read)),
            Ok(None) => {}
            Err((e, mut alert)) => {
                let mut bytes = Vec::new();
                let _ = alert.write_all(&mut bytes);
                let _ = tcp.write_all(&bytes).await;
                let e = io::Error::new(io::ErrorKind::InvalidData, e);
                return Err(Close::Handshake(handshake_reason(&e)));
            }
        }
    }
}

/// What one read of a ClientHello takes at most.
const HELLO_READ: usize = 4096;

/// The largest first flight read before a ClientHello is whole: rustls's
/// limit on a handshake message, and a record header.
const MAX_CLIENT_HELLO: usize = 64 * 1024 + 5;

/// A plaintext fatal alert record (sent before any ServerHello).
fn fatal_alert(description: u8) -> [u8; 7] {
    [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, description]
}

/// Refuses, before any target is connected, a ClientHello this listener
/// cannot complete: no cipher suite in common (such as a TLS 1.0-only
/// client), or ALPN protocols that do not overlap.
fn compatible(
    hello: &ClientHello<'_>,
    config: &ServerConfig,
    min_version: Option<TlsVersion>,
) -> Result<(), &'static str> {
    let offered = hello.cipher_suites();
    let common = config.crypto_provider().cipher_suites.iter().any(|suite| {
        let version_ok = suite.version().version == rustls::ProtocolVersion::TLSv1_3
            || min_version == Some(TlsVersion::V12);
        version_ok && offered.contains(&suite.suite())
    });
    if !common {
        return Err("incompatible");
    }
    if !config.alpn_protocols.is_empty() {
        // A listener with `alpn` serves only clients that speak one of
        // them: one that offers none is refused, like one that offers others.
        let Some(mut protocols) = hello.alpn() else {
            return Err("no_alpn");
        };
        if !protocols.any(|p| {
            config
                .alpn_protocols
                .iter()
                .any(|ours| ours.as_slice() == p)
        }) {
            return Err("no_alpn_match");
        }
    }
    Ok(())
}

/// Every reason [`handshake_reason`] (or a handshake deadline) gives: the
/// metric's series exist from the start, at zero.
pub(crate) const HANDSHAKE_REASONS: [&str; 11] = [
    "timeout",
    "not_tls",
    "incompatible",
    "no_client_certificate",
    "bad_client_certificate",
    "no_alpn",
    "no_alpn_match",
    "alert_received",
    "tls_error",
    "closed",
    "io_error",
];

/// A metric label for a failed downstream handshake.
fn handshake_reason(e: &io::Error) -> &'static str {
    if let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return match tls {
            rustls::Error::InvalidMessage(_)
            | rustls::Error::InappropriateMessage { .. }
            | rustls::Error::InappropriateHandshakeMessage { .. } => "not_tls",
            rustls::Error::PeerIncompatible(_) => "incompatible",
            rustls::Error::NoCertificatesPresented => "no_client_certificate",
            rustls::Error::InvalidCertificate(_) => "bad_client_certificate",
            rustls::Error::NoApplicationProtocol => "no_alpn_match",
            rustls::Error::AlertReceived(_) => "alert_received",
            _ => "tls_error",
        };
    }
    match e.kind() {
        io::ErrorKind::InvalidData => "not_tls",
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => "closed",
        _ => "io_error",
    }
}
