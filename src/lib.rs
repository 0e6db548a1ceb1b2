//! portico: a TLS-terminating layer-4 front door for private message
//! brokers. It terminates TLS for a public name, health-checks brokers to
//! find the active node of each active/standby pair, and re-encrypts to it.
//!
//! `Server::start` runs a checked `Config`; `portico serve` is that plus
//! signals.

pub mod certs;
pub mod config;
pub mod metrics;
pub mod proxy_protocol;
pub mod tls;

mod admin;
mod listener;
mod relay;
mod session;
mod snapshot;
mod upstream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use config::{Config, ConfigError};
use metrics::Metrics;
use snapshot::{ListenerState, Shared, Snapshot};
use upstream::TargetGroup;
pub use upstream::{TargetView, UpstreamError};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("listener {listener:?} cannot bind {addr}: {source}")]
    Bind {
        listener: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("admin server cannot bind {addr}: {source}")]
    AdminBind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("listener {listener:?}: {source}")]
    Tls {
        listener: String,
        #[source]
        source: tls::TlsError,
    },
    #[error("cannot set up the DNS resolver for hostname targets: {0}")]
    Resolver(String),
}

/// A running front door.
#[derive(Debug)]
pub struct Server {
    shared: Arc<Shared>,
    listeners: HashMap<String, SocketAddr>,
    admin: Option<SocketAddr>,
    /// Stops the accept loops and the admin server.
    stop_accepting: CancellationToken,
    /// Stops discovery and health checks.
    stop_background: CancellationToken,
    background: TaskTracker,
}

impl Server {
    /// Binds every listener and the admin server, starts health checks and
    /// begins serving. Addresses with port 0 get an ephemeral port: see
    /// `listener_addr` and `admin_addr`.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        let metrics = Arc::new(Metrics::new());
        let stop_accepting = CancellationToken::new();
        let stop_background = CancellationToken::new();
        let background = TaskTracker::new();

        let mut bound = Vec::new();
        for l in &config.listeners {
            let socket = TcpListener::bind(l.bind)
                .await
                .map_err(|source| StartError::Bind {
                    listener: l.name.clone(),
                    addr: l.bind,
                    source,
                })?;
            bound.push((l.name.clone(), socket));
        }
        let admin_socket = match &config.admin {
            Some(admin) => Some(TcpListener::bind(admin.bind).await.map_err(|source| {
                StartError::AdminBind {
                    addr: admin.bind,
                    source,
                }
            })?),
            None => None,
        };

        let needs_resolver = config
            .target_groups
            .iter()
            .flat_map(|g| &g.targets)
            .any(|t| matches!(t, config::TargetSpec::Host { .. }));
        let resolver = if needs_resolver {
            Some(Arc::new(
                upstream::discovery::resolver(&config.resolver).map_err(StartError::Resolver)?,
            ))
        } else {
            None
        };

        let mut listeners = HashMap::new();
        for l in &config.listeners {
            let tls = match &l.tls {
                Some(t) => {
                    let err = |source| StartError::Tls {
                        listener: l.name.clone(),
                        source,
                    };
                    let session = tls::SessionState::new(t).map_err(err)?;
                    Some(tls::server_config(t, &session).map_err(err)?)
                }
                None => None,
            };
            listeners.insert(
                l.name.clone(),
                Arc::new(ListenerState {
                    config: l.clone(),
                    tls,
                    metrics: metrics.listener(&l.name),
                }),
            );
        }
        let groups = config
            .target_groups
            .iter()
            .map(|g| {
                let group = TargetGroup::start(
                    g.clone(),
                    metrics.clone(),
                    resolver.clone(),
                    background.clone(),
                    stop_background.child_token(),
                );
                (g.name.clone(), group)
            })
            .collect();

        let snapshot = Snapshot {
            config: Arc::new(config),
            listeners,
            groups,
        };
        let shared = Arc::new(Shared::new(snapshot, metrics));

        let mut addrs = HashMap::new();
        for (name, socket) in bound {
            let addr = socket.local_addr().map_err(|source| StartError::Bind {
                listener: name.clone(),
                addr: socket
                    .local_addr()
                    .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
                source,
            })?;
            info!(listener = %name, addr = %addr, "listening on {addr}");
            addrs.insert(name.clone(), addr);
            background.spawn(listener::run(
                shared.clone(),
                name,
                socket,
                stop_accepting.clone(),
            ));
        }
        let admin = match admin_socket {
            Some(socket) => {
                let addr = socket.local_addr().ok();
                if let Some(addr) = addr {
                    info!(addr = %addr, "admin listening on {addr}");
                }
                background.spawn(admin::run(shared.clone(), socket, stop_accepting.clone()));
                addr
            }
            None => None,
        };
        Ok(Self {
            shared,
            listeners: addrs,
            admin,
            stop_accepting,
            stop_background,
            background,
        })
    }

    /// The address a listener is bound to.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners.get(name).copied()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Every target's state, as `GET /targets` shows it.
    pub fn targets(&self) -> Vec<TargetView> {
        admin::targets(&self.shared)
    }

    /// Stops accepting, lets open connections finish for up to `grace`,
    /// then closes the rest.
    pub async fn shutdown(self, grace: Duration) {
        self.stop_accepting.cancel();
        let sessions = &self.shared.sessions;
        sessions.close();
        let open = sessions.len();
        if open > 0 {
            info!(connections = open, grace = ?grace, "waiting for open connections to finish");
        }
        if tokio::time::timeout(grace, sessions.wait()).await.is_err() {
            warn!(
                connections = sessions.len(),
                "grace period over; closing the remaining connections"
            );
            self.shared.abort.cancel();
            sessions.wait().await;
        }
        self.stop_background.cancel();
        self.background.close();
        self.background.wait().await;
    }
}
