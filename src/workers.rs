//! The threads that serve connections: one per core, each running a
//! single-threaded runtime with its own accepting socket for every listener
//! (`SO_REUSEPORT`: the kernel spreads new connections across them). A
//! connection is accepted, handshaken, connected and relayed on one thread,
//! so no wake-up crosses threads and no task moves between cores on its
//! way; a shared runtime's work stealing cost about an eighth of the CPU
//! per new connection. Reloads, health checks, discovery and the admin
//! endpoint stay on the main runtime.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use tokio::net::TcpSocket;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Pending connections a listening socket holds (what `TcpListener::bind`
/// asks for).
const BACKLOG: u32 = 1024;

/// The connection-serving threads. Dropping this stops them (and drops
/// whatever still runs on them).
#[derive(Debug)]
pub(crate) struct Workers {
    handles: Vec<Handle>,
    stop: CancellationToken,
}

impl Workers {
    /// Starts one worker per core the process may use.
    pub(crate) fn start() -> io::Result<Self> {
        let count = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::with_count(count)
    }

    pub(crate) fn with_count(count: usize) -> io::Result<Self> {
        let stop = CancellationToken::new();
        let mut handles = Vec::with_capacity(count);
        for i in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let stopped = stop.clone();
            let started = std::thread::Builder::new()
                .name(format!("portico-worker-{i}"))
                .spawn(move || runtime.block_on(stopped.cancelled()));
            if let Err(e) = started {
                stop.cancel();
                return Err(e);
            }
        }
        Ok(Self { handles, stop })
    }

    pub(crate) fn count(&self) -> usize {
        self.handles.len()
    }

    /// Runs `task(item)` on each worker, one item each (what [`bind`]
    /// returned), tracked by `tracker`.
    ///
    /// [`bind`]: Workers::bind
    pub(crate) fn spawn_each<T, F, Fut>(&self, tracker: &TaskTracker, items: Vec<T>, mut task: F)
    where
        F: FnMut(T) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        debug_assert_eq!(items.len(), self.count());
        for (item, handle) in items.into_iter().zip(&self.handles) {
            tracker.spawn_on(task(item), handle);
        }
    }

    /// Binds `addr` once per worker (port 0: one ephemeral port for all).
    /// Fails as a plain bind would if any other socket holds the address,
    /// even one that shares ports: two front doors never split a port
    /// between them by accident. (A port-0 bind never joins sockets that
    /// share a port: the kernel picks a port nobody holds.)
    pub(crate) fn bind(
        &self,
        addr: SocketAddr,
    ) -> io::Result<(SocketAddr, Vec<std::net::TcpListener>)> {
        if addr.port() != 0 {
            new_socket(addr)?.bind(addr)?;
        }
        let mut bound = addr;
        let mut sockets = Vec::with_capacity(self.count());
        for _ in 0..self.count() {
            let socket = new_socket(bound)?;
            socket.set_reuseport(true)?;
            socket.bind(bound)?;
            bound = socket.local_addr()?;
            // Registered with this runtime by `listen`, handed over as a
            // plain socket for its worker to register with its own.
            sockets.push(socket.listen(BACKLOG)?.into_std()?);
        }
        Ok((bound, sockets))
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn new_socket(addr: SocketAddr) -> io::Result<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn every_worker_accepts_on_one_port_that_nobody_else_can_take() {
        let workers = Workers::with_count(2).unwrap();
        let (addr, sockets) = workers.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(addr.port(), 0);
        assert_eq!(sockets.len(), 2);
        // A second bind of the same address fails, as without sharing.
        let again = workers.bind(addr).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::AddrInUse);

        let threads = Arc::new(Mutex::new(HashSet::new()));
        let tracker = TaskTracker::new();
        workers.spawn_each(&tracker, sockets, |socket| {
            let threads = threads.clone();
            async move {
                let listener = tokio::net::TcpListener::from_std(socket).unwrap();
                loop {
                    let (_conn, _) = listener.accept().await.unwrap();
                    let name = std::thread::current().name().unwrap_or("").to_owned();
                    threads.lock().unwrap().insert(name);
                }
            }
        });
        // Connections from many source ports reach both workers.
        let mut held = Vec::new();
        for _ in 0..64 {
            held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let seen = portico_test_support::holds_within(std::time::Duration::from_secs(5), || {
            threads.lock().unwrap().len() == 2
        });
        let names = threads.lock().unwrap().clone();
        assert!(seen, "accepted only on {names:?}");
        assert!(
            names.iter().all(|n| n.starts_with("portico-worker-")),
            "{names:?}"
        );
    }
}
