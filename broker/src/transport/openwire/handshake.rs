//! The start of an OpenWire connection: the broker's WireFormatInfo and
//! BrokerInfo, the client's WireFormatInfo, then its login in
//! ConnectionInfo; and the reader of whole frames.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::info;

use crate::auth::Principal;
use crate::durable::ClientId;
use crate::logins::Refusal;
use crate::openwire::command::{BrokerInfo, WireFormatInfo};
use crate::openwire::types::{map_bytes, Value};
use crate::openwire::{decode_frame, Body, Command, WireError};
use crate::shared::BrokerCore;

use super::{exception, frame, INACTIVITY, VERSION};

/// The broker's side of the wire format exchange.
pub(crate) fn wire_format(max_frame: usize) -> Vec<u8> {
    let options = [
        ("TightEncodingEnabled", Value::Bool(false)),
        ("CacheEnabled", Value::Bool(false)),
        ("CacheSize", Value::Int(0)),
        ("SizePrefixDisabled", Value::Bool(false)),
        ("StackTraceEnabled", Value::Bool(false)),
        ("TcpNoDelayEnabled", Value::Bool(true)),
        (
            "MaxInactivityDuration",
            Value::Long(INACTIVITY.as_millis() as i64),
        ),
        ("MaxInactivityDurationInitalDelay", Value::Long(10_000)),
        (
            "MaxFrameSize",
            Value::Long(i64::try_from(max_frame).unwrap_or(i64::MAX)),
        ),
        ("ProviderName", Value::String("portico-broker".into())),
        (
            "ProviderVersion",
            Value::String(env!("CARGO_PKG_VERSION").into()),
        ),
    ];
    let options: Vec<(String, Value)> = options
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    frame(&Command::new(Body::WireFormatInfo(WireFormatInfo {
        version: VERSION,
        properties: Some(map_bytes(&options)),
    })))
}

/// Reads whole frames from a connection.
pub(crate) struct Frames {
    pub(crate) buf: Vec<u8>,
    pub(crate) max: usize,
}

/// Why a connection ends.
pub(crate) enum End {
    /// The peer closed, or said goodbye (ShutdownInfo).
    Closed,
    /// Silent too long, or a read failed.
    Gone(String),
    /// It sent what is not OpenWire.
    Bad(WireError),
}

impl Frames {
    pub(crate) async fn next<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        timeout: Option<Duration>,
    ) -> Result<Command, End> {
        loop {
            match decode_frame(&self.buf, self.max) {
                Ok(Some((command, used))) => {
                    self.buf.drain(..used);
                    return Ok(command);
                }
                Ok(None) => {}
                Err(e) => return Err(End::Bad(e)),
            }
            if self.buf.capacity() - self.buf.len() < 16 * 1024 {
                self.buf.reserve(16 * 1024);
            }
            let read = reader.read_buf(&mut self.buf);
            let n = match timeout {
                Some(t) => tokio::time::timeout(t, read)
                    .await
                    .map_err(|_| End::Gone("nothing from the client in time".into()))?,
                None => read.await,
            }
            .map_err(|e| End::Gone(e.to_string()))?;
            if n == 0 {
                return Err(End::Closed);
            }
            // Give back what a large frame left behind once it is read.
            if self.buf.is_empty() && self.buf.capacity() > 256 * 1024 {
                self.buf = Vec::with_capacity(16 * 1024);
            }
        }
    }
}

/// A client that logged in.
pub(crate) struct Login {
    pub(super) principal: Principal,
    pub(super) client_id: Option<ClientId>,
    /// Its ConnectionInfo's connection id (consumer ids carry it).
    pub(super) connection: String,
    /// The ConnectionInfo's command id, answered once the connection runs.
    pub(super) correlation: i32,
    pub(super) version: i32,
    pub(super) inactivity: Duration,
    /// Another broker's network bridge: its BrokerInfo.
    pub(super) network: Option<Box<BrokerInfo>>,
}

/// Why a connection was refused before it ran, and what to tell it.
pub(super) struct Refused {
    pub(super) reason: String,
    pub(super) answer: Option<Vec<u8>>,
}

/// The wire format exchange and the login in ConnectionInfo.
pub(super) async fn handshake<R, W>(
    core: &BrokerCore,
    reader: &mut R,
    writer: &mut W,
    frames: &mut Frames,
    hello: &[u8],
    remote: SocketAddr,
    transport: &str,
) -> Result<Login, Refused>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let gone = |end: End| Refused {
        reason: match end {
            End::Closed => "closed before logging in".into(),
            End::Gone(why) => why,
            End::Bad(e) => e.to_string(),
        },
        answer: None,
    };
    writer.write_all(hello).await.map_err(|e| Refused {
        reason: e.to_string(),
        answer: None,
    })?;
    let mut version = None;
    let mut inactivity = INACTIVITY;
    let mut network = None;
    loop {
        let command = frames.next(reader, None).await.map_err(gone)?;
        match command.body {
            Body::WireFormatInfo(info) => {
                if info.version < VERSION {
                    return Err(Refused {
                        reason: format!(
                            "OpenWire version {} is not supported (12 is)",
                            info.version
                        ),
                        answer: None,
                    });
                }
                let theirs = info
                    .properties
                    .as_deref()
                    .and_then(|p| crate::openwire::types::read_map(p).ok())
                    .and_then(|m| {
                        m.into_iter().find_map(|(k, v)| match (k.as_str(), v) {
                            ("MaxInactivityDuration", Value::Long(ms)) => Some(ms),
                            _ => None,
                        })
                    });
                if let Some(ms) = theirs {
                    let ms = u64::try_from(ms).unwrap_or(0);
                    inactivity = if ms == 0 {
                        Duration::ZERO
                    } else {
                        inactivity.min(Duration::from_millis(ms))
                    };
                }
                version = Some(VERSION.min(info.version));
            }
            // A failover client says it is one (faultTolerant) before it
            // logs in again.
            Body::KeepAliveInfo | Body::ConnectionControl(_) => {}
            // A broker's network connector says what it is first.
            Body::BrokerInfo(info) if version.is_some() && info.network && network.is_none() => {
                network = Some(info);
            }
            Body::ConnectionInfo(info) if version.is_some() => {
                let correlation = command.id;
                let user = info.user.as_deref().filter(|u| !u.is_empty());
                let refuse = |why: &str| {
                    core.login_failed();
                    info!(client.addr = %remote, transport, user = ?user.unwrap_or(""), "authentication failed: {why}");
                };
                let principal = match core
                    .logins
                    .check(remote.ip(), user, info.password.as_deref())
                    .await
                {
                    Ok(p) => p,
                    Err(why) => {
                        refuse(&why.to_string());
                        let message = match why {
                            Refusal::Backoff { .. } => why.to_string(),
                            _ => format!(
                                "User name [{}] or password is invalid.",
                                user.unwrap_or("")
                            ),
                        };
                        return Err(Refused {
                            reason: message.clone(),
                            answer: Some(exception(
                                correlation,
                                "java.lang.SecurityException",
                                message,
                            )),
                        });
                    }
                };
                // A bridge's client id names it; it holds no subscriptions.
                let client_id = match info
                    .client_id
                    .as_deref()
                    .filter(|c| !c.is_empty() && network.is_none())
                {
                    None => None,
                    Some(cid) => Some(core.durables.claim(cid).ok_or_else(|| {
                        let message =
                            format!("Broker: {} - Client: {cid} already connected", core.name);
                        Refused {
                            reason: message.clone(),
                            answer: Some(exception(
                                correlation,
                                "javax.jms.InvalidClientIDException",
                                message,
                            )),
                        }
                    })?),
                };
                return Ok(Login {
                    principal,
                    client_id,
                    connection: info.connection_id.map(|c| c.0).unwrap_or_default(),
                    correlation,
                    version: version.unwrap_or(VERSION),
                    inactivity,
                    network,
                });
            }
            other => {
                return Err(Refused {
                    reason: format!(
                        "expected WireFormatInfo, then ConnectionInfo, not a command of type {}",
                        other.kind()
                    ),
                    answer: None,
                })
            }
        }
    }
}
