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
    BridgeState, HeartBeats, Link, Reader, Writer, BRIDGE_HEADER, CONSUMER_TTL_HEADER,
    DUPLEX_HEADER, MESSAGE_TTL_HEADER, MISSED_BEATS,
};
use crate::client::Endpoint;
use crate::config::NetworkConnectorConfig;
use crate::stomp::{Command, Frame, FrameBuffer};
use crate::BrokerCore;

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
                let end = super::bridge::run(
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

pub(super) async fn connect(
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
        super::bridge::read_frame(
            &mut reader,
            &mut buf,
            &super::bridge::bridge_limits(&core.limits),
            None,
        ),
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
