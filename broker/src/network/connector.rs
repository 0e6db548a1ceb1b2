//! The connecting end: one bridge per peer of each `[[network_connector]]`,
//! kept up with reconnects and back-off.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::{
    BridgeError, BridgeState, HeartBeats, Link, Reader, Writer, BRIDGE_HEADER, CONSUMER_TTL_HEADER,
    DUPLEX_HEADER, MESSAGE_TTL_HEADER, MISSED_BEATS,
};
use crate::client::Endpoint;
use crate::config::{BridgeProtocol, NetworkConnectorConfig};
use crate::shared::BrokerCore;
use crate::stomp::{Command, Frame, FrameBuffer};

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

/// Keeps one bridge up: connect, run, and reconnect with back-off.
pub(super) async fn outbound(
    core: Arc<BrokerCore>,
    connector: NetworkConnectorConfig,
    peer: Endpoint,
    state: Arc<BridgeState>,
    stop: CancellationToken,
) {
    let mut attempt = 0u32;
    loop {
        let connected = match connector.protocol {
            BridgeProtocol::Stomp => connect(&core, &connector, &peer).await.map(Session::Stomp),
            BridgeProtocol::OpenWire => super::openwire::connect(&core, &connector, &peer)
                .await
                .map(Session::OpenWire),
        };
        match connected {
            Ok(session) => {
                attempt = 0;
                let remote = match &session {
                    Session::Stomp(c) => c.remote.clone(),
                    Session::OpenWire(c) => c.remote_name.clone(),
                };
                info!(bridge = %connector.name, remote = %remote, address = %peer, duplex = connector.duplex, "bridge connected");
                *state
                    .remote_broker
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = remote.clone();
                state.connected.store(true, Ordering::Release);
                let link = |peer: String, beats: HeartBeats| Link {
                    peer,
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
                let end = match session {
                    Session::Stomp(c) => {
                        super::bridge::run(
                            core.clone(),
                            c.reader,
                            c.writer,
                            c.buf,
                            link(remote, c.beats),
                            state.clone(),
                            stop.clone(),
                        )
                        .await
                    }
                    Session::OpenWire(c) => {
                        super::openwire::run(
                            core.clone(),
                            c.opened,
                            link(c.remote_id, c.beats),
                            state.clone(),
                            stop.clone(),
                        )
                        .await
                    }
                };
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

/// A bridge the peer accepted, in the protocol the connector speaks.
enum Session {
    Stomp(Connected),
    OpenWire(super::openwire::Connected),
}

/// A bridge the peer accepted.
pub(super) struct Connected {
    reader: Reader,
    writer: Writer,
    /// What was read past the CONNECTED frame.
    buf: FrameBuffer,
    /// The peer broker's name.
    remote: String,
    beats: HeartBeats,
}

/// A TCP (or TLS, for `ssl://`) connection to a peer.
pub(super) async fn open(
    connector: &NetworkConnectorConfig,
    peer: &Endpoint,
) -> Result<(Reader, Writer), BridgeError> {
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect((peer.host.as_str(), peer.port)),
    )
    .await
    .map_err(|_| BridgeError::ConnectTimeout)??;
    let _ = tcp.set_nodelay(true);
    let (reader, writer): (Reader, Writer) = if peer.tls {
        let roots = connector.ca.clone().ok_or(BridgeError::NoCa)?;
        let config = portico_core::tls::client_config(roots);
        let name = rustls::pki_types::ServerName::try_from(peer.host.clone())?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(BridgeError::Tls)?;
        let (r, w) = tokio::io::split(tls);
        (Box::new(r), Box::new(w))
    } else {
        let (r, w) = tcp.into_split();
        (Box::new(r), Box::new(w))
    };
    Ok((reader, writer))
}

pub(super) async fn connect(
    core: &BrokerCore,
    connector: &NetworkConnectorConfig,
    peer: &Endpoint,
) -> Result<Connected, BridgeError> {
    let (mut reader, mut writer) = open(connector, peer).await?;
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
    writer.write_all(&connect.to_bytes()).await?;
    writer.flush().await?;
    let mut buf = FrameBuffer::new();
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        super::bridge::read_frame(
            &mut reader,
            &mut buf,
            &super::bridge::bridge_limits(&core.limits),
            None,
        ),
    )
    .await
    .map_err(|_| BridgeError::NoConnected)??;
    match reply.command {
        Command::Connected => match reply.get(BRIDGE_HEADER) {
            Some(remote) => {
                // The peer sends every `sx` and wants ours every `sy`.
                let (sx, sy) = crate::stomp::parse_heart_beat(reply.get("heart-beat"));
                let beats = HeartBeats {
                    send: (sy > 0).then(|| Duration::from_millis(sy)),
                    expect: (sx > 0).then(|| Duration::from_millis(sx) * MISSED_BEATS),
                };
                Ok(Connected {
                    reader,
                    writer,
                    buf,
                    remote: remote.to_owned(),
                    beats,
                })
            }
            None => Err(BridgeError::NotABroker),
        },
        Command::Error => Err(BridgeError::Refused(
            reply.get("message").unwrap_or("ERROR").to_owned(),
        )),
        other => Err(BridgeError::Unexpected(other)),
    }
}
