//! Client transports: `stomp` (plain TCP) and `stomp+ssl` listeners.

pub(crate) mod connection;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::BrokerCore;

/// Accepts clients until `stop`; TLS handshakes run in each client's task.
pub(crate) async fn accept_loop(
    core: Arc<BrokerCore>,
    listener: TcpListener,
    name: String,
    tls: Option<TlsAcceptor>,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    loop {
        let (tcp, remote) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    debug!(transport = %name, error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (core, name, tls, stop) = (core.clone(), name.clone(), tls.clone(), stop.clone());
        tasks.spawn(async move {
            match tls {
                None => connection::serve(core, tcp, remote, name, stop).await,
                Some(acceptor) => {
                    let timeout = core.limits.connect_timeout;
                    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => connection::serve(core, stream, remote, name, stop).await,
                        Ok(Err(e)) => {
                            debug!(client.addr = %remote, error = %e, "TLS handshake failed")
                        }
                        Err(_) => debug!(client.addr = %remote, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}
