//! Client transports: `stomp` (plain TCP) and `stomp+ssl` listeners, and
//! the connection slots they share.

pub(crate) mod connection;
mod transactions;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::BrokerCore;

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

/// Accepts clients until `stop`; TLS handshakes run in each client's task,
/// under the same deadline as the CONNECT that must follow.
pub(crate) async fn accept_loop(
    core: Arc<BrokerCore>,
    listener: TcpListener,
    name: String,
    tls: Option<TlsAcceptor>,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => return,
            p = core.slots.total.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (tcp, remote) = tokio::select! {
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
        let Some(slot) = core.slots.admit(permit, remote.ip()) else {
            core.connection_refused();
            debug!(transport = %name, client.addr = %remote, "refused: too many connections from this source");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let deadline = Instant::now() + core.limits.connect_timeout;
        let (core, name, tls, stop) = (core.clone(), name.clone(), tls.clone(), stop.clone());
        tasks.spawn(async move {
            let _slot = slot;
            match tls {
                None => connection::serve(core, tcp, remote, name, deadline, stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            connection::serve(core, stream, remote, name, deadline, stop).await;
                        }
                        Ok(Err(e)) => {
                            debug!(client.addr = %remote, error = %e, "TLS handshake failed");
                        }
                        Err(_) => debug!(client.addr = %remote, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}
