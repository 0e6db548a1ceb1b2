//! `portico-broker`: the broker network that the portico front door fronts.
//!
//! `Broker::start` runs one node from a checked `BrokerConfig`:
//! its journal is replayed, then its transports and console open.

pub mod auth;
pub mod config;
pub mod logins;
pub mod mqtt;
pub mod openwire;
pub mod router;
pub mod selector;
pub mod stomp;
pub mod store;

mod console;
mod dedup;
mod durable;
mod intake;
mod shared;
mod transport;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use config::BrokerConfig;
use durable::Durables;
use shared::BrokerCore;
use store::{Journal, JournalError};

/// Why a broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("transport {name:?} cannot bind {addr}: {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("console cannot bind {addr}: {source}")]
    ConsoleBind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("data_dir {path}: {source}")]
    Lock {
        path: std::path::PathBuf,
        #[source]
        source: ha::HaError,
    },
    #[error("data_dir {path}: {source}")]
    Durables {
        path: std::path::PathBuf,
        #[source]
        source: durable::DurableError,
    },
    #[error("data_dir {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        #[source]
        source: JournalError,
    },
}

/// A running broker node.
#[derive(Debug)]
pub struct Broker {
    core: Arc<BrokerCore>,
    transports: Vec<(String, SocketAddr)>,
    console: Option<SocketAddr>,
    stop: CancellationToken,
    tasks: TaskTracker,
    lock: ha::ActiveLock,
}

impl Broker {
    /// Waits to be the active node of its `data_dir` (a standby opens no
    /// port), then replays the journal and binds every transport and the
    /// console. `cancel` gives up waiting.
    pub async fn start(config: BrokerConfig) -> Result<Self, StartError> {
        Self::start_with(config, &CancellationToken::new()).await
    }

    pub async fn start_with(
        config: BrokerConfig,
        cancel: &CancellationToken,
    ) -> Result<Self, StartError> {
        let lock = ha::acquire(&config.data_dir, config.ha, cancel)
            .await
            .map_err(|source| StartError::Lock {
                path: config.data_dir.clone(),
                source,
            })?;
        let journal_dir = config.data_dir.join("journal");
        let (journal, recovered) =
            Journal::open(&journal_dir).map_err(|source| StartError::DataDir {
                path: config.data_dir.clone(),
                source,
            })?;
        let durables =
            Durables::load(Some(&config.data_dir)).map_err(|source| StartError::Durables {
                path: config.data_dir.clone(),
                source,
            })?;
        let core = BrokerCore::restore(&config, journal, recovered, durables).await;
        core.drop_orphan_durables().await;
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let mut sockets = Vec::new();
        for t in &config.transports {
            let listener = TcpListener::bind(t.bind)
                .await
                .map_err(|source| StartError::Bind {
                    name: t.name.clone(),
                    addr: t.bind,
                    source,
                })?;
            sockets.push((t, listener));
        }
        let console_socket = match config.console {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::ConsoleBind { addr, source })?,
            ),
            None => None,
        };
        // The console's live page offers the first WebSocket transport
        // (TLS first).
        let mut websockets: Vec<(bool, std::net::SocketAddr)> = sockets
            .iter()
            .filter(|(t, _)| t.name.starts_with("stomp+ws"))
            .map(|(t, l)| (t.name == "stomp+wss", l.local_addr().unwrap_or(t.bind)))
            .collect();
        websockets.sort_by_key(|(tls, _)| !tls);
        if let Some(first) = websockets.first() {
            let _ = core.websocket.set(*first);
        }
        let mut transports = Vec::new();
        for (t, listener) in sockets {
            let addr = listener.local_addr().unwrap_or(t.bind);
            info!(transport = %t.name, addr = %addr, "listening on {addr}");
            let tls = t
                .tls
                .as_ref()
                .map(|ck| TlsAcceptor::from(tls_config(ck.clone())));
            if t.proxy_protocol {
                info!(transport = %t.name, "connections start with a PROXY v2 header: only the front door may reach this transport");
            }
            let transport = transport::Transport {
                name: t.name.clone(),
                protocol: transport::Protocol::of(&t.name),
                tls,
                proxy_protocol: t.proxy_protocol,
            };
            tasks.spawn(transport::accept_loop(
                core.clone(),
                listener,
                transport,
                tasks.clone(),
                stop.clone(),
            ));
            transports.push((t.name.clone(), addr));
        }
        let console = match console_socket {
            Some(listener) => {
                let addr = listener.local_addr().ok();
                if let Some(addr) = addr {
                    info!(addr = %addr, "console listening on {addr}");
                    if !addr.ip().is_loopback() {
                        warn!(addr = %addr, "the console's pages need no login and are reachable beyond this host");
                    }
                }
                tasks.spawn(console::run(core.clone(), listener, stop.clone()));
                addr
            }
            None => None,
        };
        network::start(&core, &config.network_connectors, &tasks, &stop);
        info!(broker = %config.name, "broker active");
        Ok(Self {
            core,
            transports,
            console,
            stop,
            tasks,
            lock,
        })
    }

    /// Where transport `name` listens (the first of that name).
    pub fn transport_addr(&self, name: &str) -> Option<SocketAddr> {
        self.transports
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    pub fn console_addr(&self) -> Option<SocketAddr> {
        self.console
    }

    pub fn name(&self) -> &str {
        &self.core.name
    }

    /// Cancelled if another node took this node's `data_dir`: stop at once.
    pub fn lock_lost(&self) -> CancellationToken {
        self.lock.lost.clone()
    }

    /// Stops accepting, closes every connection (waiting up to `grace`),
    /// then hands the data_dir lock to the standby.
    pub async fn shutdown(self, grace: Duration) {
        self.stop.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(grace, self.tasks.wait()).await;
        self.lock.release().await;
    }
}

/// Runs one node until `stop` resolves: a standby waits with no port open
/// until it is active. Returns the exit code: 0 when stopped, 3 when
/// another node took this node's data_dir.
pub async fn run_node(
    config: BrokerConfig,
    stop: impl std::future::Future<Output = ()>,
) -> Result<u8, StartError> {
    tokio::pin!(stop);
    let broker = tokio::select! {
        r = Broker::start(config) => r?,
        _ = &mut stop => {
            info!("stopped while standby");
            return Ok(0);
        }
    };
    portico_core::systemd::notify("READY=1");
    let lost = broker.lock_lost();
    let code = tokio::select! {
        _ = &mut stop => 0,
        _ = lost.cancelled() => {
            tracing::error!("another node took over this data_dir: stopping");
            3
        }
    };
    info!("stopping");
    portico_core::systemd::notify("STOPPING=1");
    broker.shutdown(Duration::from_secs(5)).await;
    info!("stopped");
    Ok(code)
}

fn tls_config(key: Arc<rustls::sign::CertifiedKey>) -> Arc<ServerConfig> {
    let resolver = Arc::new(portico_core::tls::CertResolver::new(vec![key]));
    let mut config = ServerConfig::builder_with_provider(portico_core::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("the crypto provider supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    // The server's order (AES-128-GCM first, forward-secret AEAD only), as
    // at the front door: a client cannot steer towards its own preference.
    config.ignore_client_order = true;
    Arc::new(config)
}
pub mod client;
pub mod ha;
pub mod network;
pub mod tools;
