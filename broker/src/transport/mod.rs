//! Client transports: `stomp` (plain TCP) and `stomp+ssl` listeners, and
//! the connection slots they share.

pub(crate) mod connection;
mod delivery;
mod mqtt;
pub(crate) mod openwire;
mod pipeline;
mod session;
mod transactions;
mod websocket;
pub(crate) mod writer;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use portico_core::proxy_protocol::ProxyHeader;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::shared::BrokerCore;

/// Connections the broker's transports may have open: in all, and from one
/// source address. A slot is taken before `accept`, so once every slot is
/// in use new connections wait in the kernel's backlog rather than cost
/// anything here; one over its source's share is closed at once.
#[derive(Debug)]
pub(crate) struct Slots {
    total: Arc<Semaphore>,
    /// 0: no limit per source.
    per_source: usize,
    sources: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection's slot, given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    source: Option<(Arc<Slots>, IpAddr)>,
}

impl Slots {
    pub(crate) fn new(total: usize, per_source: usize) -> Arc<Self> {
        Arc::new(Self {
            total: Arc::new(Semaphore::new(total)),
            per_source,
            sources: Mutex::new(HashMap::new()),
        })
    }

    fn sources(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.sources.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a connection from `source`, or `None` if that source
    /// already has its share.
    fn admit(self: &Arc<Self>, permit: OwnedSemaphorePermit, source: IpAddr) -> Option<Slot> {
        if self.per_source == 0 {
            return Some(Slot {
                _permit: permit,
                source: None,
            });
        }
        let mut sources = self.sources();
        let open = sources.entry(source).or_insert(0);
        if *open >= self.per_source {
            return None;
        }
        *open += 1;
        Some(Slot {
            _permit: permit,
            source: Some((self.clone(), source)),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((slots, source)) = &self.source {
            let mut sources = slots.sources();
            if let Some(open) = sources.get_mut(source) {
                *open -= 1;
                if *open == 0 {
                    sources.remove(source);
                }
            }
        }
    }
}

pub(crate) use mqtt::MqttClients;
pub(crate) use openwire::{announce_temporary, JMS_MESSAGE_ID_HEADER};

/// The protocol a transport speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Stomp,
    OpenWire,
    Mqtt,
    /// STOMP over WebSocket.
    StompWs,
}

impl Protocol {
    /// By transport name: `openwire` and `openwire+ssl`, `mqtt` and
    /// `mqtt+ssl`, `stomp+ws` and `stomp+wss`, else STOMP.
    pub(crate) fn of(name: &str) -> Self {
        if name.starts_with("stomp+ws") {
            Self::StompWs
        } else if name.starts_with("openwire") {
            Self::OpenWire
        } else if name.starts_with("mqtt") {
            Self::Mqtt
        } else {
            Self::Stomp
        }
    }
}

/// One listening transport: what each of its connections starts with.
#[derive(Clone)]
pub(crate) struct Transport {
    pub(crate) name: String,
    pub(crate) protocol: Protocol,
    pub(crate) tls: Option<TlsAcceptor>,
    /// Each connection starts with a PROXY v2 header naming the client.
    pub(crate) proxy_protocol: bool,
}

/// The longest PROXY v2 header read (the fixed 16 bytes, the addresses,
/// and room for a few TLVs).
const MAX_PROXY_HEADER: usize = 16 + 1024;

/// Reads the PROXY v2 header at the start of `tcp`: the client's address,
/// or `None` for a LOCAL header (a health check, say). Reads exactly the
/// header's bytes, nothing of what follows.
async fn read_proxy_header(tcp: &mut TcpStream) -> Result<Option<SocketAddr>, String> {
    let mut head = [0u8; 16];
    tcp.read_exact(&mut head)
        .await
        .map_err(|e| format!("PROXY header: {e}"))?;
    let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
    if 16 + len > MAX_PROXY_HEADER {
        return Err(format!("PROXY header of {} bytes is too long", 16 + len));
    }
    let mut header = head.to_vec();
    header.resize(16 + len, 0);
    tcp.read_exact(&mut header[16..])
        .await
        .map_err(|e| format!("PROXY header: {e}"))?;
    match ProxyHeader::decode(&header) {
        Ok(Some((parsed, _))) => Ok(parsed.map(|h| h.source)),
        Ok(None) => Err("PROXY header cut short".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Serves one connection in its transport's protocol.
async fn serve<S>(
    protocol: Protocol,
    core: Arc<BrokerCore>,
    stream: S,
    remote: SocketAddr,
    transport: String,
    deadline: Instant,
    stop: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match protocol {
        Protocol::Stomp => connection::serve(core, stream, remote, transport, deadline, stop).await,
        Protocol::OpenWire => {
            openwire::serve(core, stream, remote, transport, deadline, stop).await
        }
        Protocol::Mqtt => mqtt::serve(core, stream, remote, transport, deadline, stop).await,
        Protocol::StompWs => {
            websocket::serve(core, stream, remote, transport, deadline, stop).await
        }
    }
}

/// Accepts clients until `stop`. Each connection's task reads its PROXY
/// header (if the transport takes one), is admitted by its source's share,
/// and runs its TLS handshake, all under the deadline CONNECT must meet.
pub(crate) async fn accept_loop(
    core: Arc<BrokerCore>,
    listener: TcpListener,
    transport: Transport,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    let name = transport.name.clone();
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => return,
            p = core.slots.total.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors, say: back off, do not spin.
                    debug!(transport = %name, error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let deadline = Instant::now() + core.limits.connect_timeout;
        let (core, transport, stop) = (core.clone(), transport.clone(), stop.clone());
        tasks.spawn(async move {
            let mut tcp = tcp;
            let remote = if transport.proxy_protocol {
                match tokio::time::timeout_at(deadline, read_proxy_header(&mut tcp)).await {
                    Ok(Ok(client)) => client.unwrap_or(peer),
                    Ok(Err(e)) => {
                        core.metrics_error();
                        debug!(transport = %transport.name, client.addr = %peer, error = %e, "closed: no valid PROXY header");
                        return;
                    }
                    Err(_) => {
                        debug!(transport = %transport.name, client.addr = %peer, "closed: no PROXY header in time");
                        return;
                    }
                }
            } else {
                peer
            };
            let Some(_slot) = core.slots.admit(permit, remote.ip()) else {
                core.connection_refused();
                debug!(transport = %transport.name, client.addr = %remote, "refused: too many connections from this source");
                return;
            };
            let name = transport.name;
            let protocol = transport.protocol;
            match transport.tls {
                None => serve(protocol, core, tcp, remote, name, deadline, stop).await,
                Some(acceptor) => match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        serve(protocol, core, stream, remote, name, deadline, stop).await;
                    }
                    Ok(Err(e)) => {
                        debug!(client.addr = %remote, error = %e, "TLS handshake failed");
                    }
                    Err(_) => debug!(client.addr = %remote, "TLS handshake timed out"),
                },
            }
        });
    }
}
