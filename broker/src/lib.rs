//! `portico-broker`: the broker network that the portico front door fronts.
//!
//! `Broker::start` runs one node from a checked `BrokerConfig`:
//! its journal is replayed, then its transports and console open.

pub mod auth;
pub mod config;
pub mod logins;
pub mod router;
pub mod stomp;
pub mod store;

mod console;
mod dedup;
mod intake;
mod transport;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use auth::Auth;
use config::{BrokerConfig, Limits};
use router::{Destination, Message, Router, RouterLimits};
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
    DataDir {
        path: std::path::PathBuf,
        #[source]
        source: JournalError,
    },
}

/// What every connection of a broker shares.
#[derive(Debug)]
pub(crate) struct BrokerCore {
    pub(crate) name: String,
    pub(crate) router: Router,
    pub(crate) journal: Journal,
    pub(crate) auth: Arc<Auth>,
    pub(crate) logins: logins::Logins,
    pub(crate) limits: Limits,
    next_conn: AtomicU64,
    next_seq: AtomicU64,
    errors: AtomicU64,
    failed_logins: AtomicU64,
    /// Connections closed at accept: over their source's share.
    refused: AtomicU64,
    pub(crate) slots: Arc<transport::Slots>,
    /// Bytes of SENDs on their way to the router, from all connections
    /// together: while the router holds senders back, this fills and
    /// connections stop reading, so what waits is bounded broker-wide.
    pub(crate) intake: Arc<tokio::sync::Semaphore>,
    /// Recent `portico-dedup-id`s: a re-sent message already stored is dropped.
    recent: std::sync::Mutex<dedup::Dedup>,
    pub(crate) bridges: network::Bridges,
}

/// Bytes of SENDs all connections together may have on their way to the
/// router: 64 MiB, or two of the largest frames if that is more.
fn intake_bytes(limits: &Limits) -> usize {
    (64 * 1024 * 1024usize)
        .max(2 * limits.max_frame_size)
        .min(u32::MAX as usize)
}

impl BrokerCore {
    pub(crate) fn next_connection(&self) -> router::ConnId {
        router::ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    /// False if a message with this key was already accepted.
    pub(crate) fn first_time(&self, key: dedup::Key<'_>) -> bool {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key)
    }

    pub(crate) fn connection_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn login_failed(&self) {
        self.failed_logins.fetch_add(1, Ordering::Relaxed);
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn metrics_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn summary(&self, memory: router::MemoryStats) -> Summary {
        Summary {
            memory,
            name: self.name.clone(),
            role: "active",
            connections_total: self.next_conn.load(Ordering::Relaxed) - 1,
            protocol_errors: self.errors.load(Ordering::Relaxed),
            failed_logins: self.failed_logins.load(Ordering::Relaxed),
            refused_connections: self.refused.load(Ordering::Relaxed),
        }
    }
}

/// `GET /api/broker`: the node and its counters.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Summary {
    name: String,
    /// Messages held in memory, against `memory_limit`.
    memory: router::MemoryStats,
    role: &'static str,
    /// Client connections accepted since start.
    connections_total: u64,
    /// Connections closed with an ERROR: bad frames, limits, refused logins.
    protocol_errors: u64,
    /// CONNECTs refused: a wrong user or password, or a bridge opened by a
    /// user without the right to.
    failed_logins: u64,
    /// Connections closed at accept: over `max_connections_per_source`.
    refused_connections: u64,
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
        let router = Router::start(RouterLimits::from(&config.limits));
        let restored: Vec<Arc<Message>> = recovered
            .messages
            .into_iter()
            .filter_map(|m| {
                let destination = Destination::parse(&m.destination).ok()?;
                Some(Arc::new(Message {
                    seq: m.id,
                    message_id: format!("ID:{}-{}", config.name, m.id),
                    destination,
                    headers: m.headers,
                    body: m.body,
                    stored: true,
                    sender: m.sender.map(Arc::from),
                }))
            })
            .collect();
        if !restored.is_empty() {
            info!(messages = restored.len(), "restoring persistent messages");
        }
        let mut recent = dedup::Dedup::default();
        for m in &restored {
            let header = |name: &str| {
                m.headers
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
            };
            if let (Some(sender), Some(id)) = (&m.sender, header(client::DEDUP_HEADER)) {
                recent.insert(dedup::Key::Client { sender, id });
            }
            // A forwarded message stored before a restart is not taken twice.
            if let Some(origin) = header(network::ORIGIN_HEADER) {
                let path = header(router::PATH_HEADER).unwrap_or_default();
                recent.insert(dedup::Key::Forwarded {
                    origin,
                    path: Some(path),
                });
            }
        }
        router.restore(restored).await;
        let auth = Arc::new(Auth::new(
            config.users.clone(),
            config.authorization.clone(),
        ));
        let core = Arc::new(BrokerCore {
            name: config.name.clone(),
            router,
            journal,
            auth: auth.clone(),
            logins: logins::Logins::new(auth),
            limits: config.limits,
            next_conn: AtomicU64::new(1),
            next_seq: AtomicU64::new(recovered.next_id.max(1)),
            errors: AtomicU64::new(0),
            failed_logins: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            intake: Arc::new(tokio::sync::Semaphore::new(intake_bytes(&config.limits))),
            slots: transport::Slots::new(
                config.limits.max_connections,
                config.limits.max_connections_per_source,
            ),
            recent: std::sync::Mutex::new(recent),
            bridges: network::Bridges::default(),
        });
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
        .expect("the ring provider supports TLS 1.2 and 1.3")
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
