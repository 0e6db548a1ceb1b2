//! The running front door: binding listeners, building each snapshot, and
//! applying reloads. SIGHUP, the file watch and `Server::reload` all go
//! through one task that owns the listeners, so reloads never overlap.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::admission::Admission;
use crate::config::{Config, ConfigError, ConfigWatcher, ResolverConfig, TargetSpec};
use crate::metrics::Metrics;
use crate::snapshot::{ListenerState, Shared, Snapshot};
use crate::upstream::{Drains, GroupContext, TargetGroup, TargetView};
use crate::workers::Workers;
use crate::{admin, listener, tls, upstream};

/// Events closer together than this are one change.
const DEBOUNCE: Duration = Duration::from_millis(250);
/// A change is applied at most this long after its first event, however
/// long the burst goes on.
const MAX_DEBOUNCE: Duration = Duration::from_secs(1);

/// Why the server could not start, or a reload could not be applied.
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
    Resolver(#[from] upstream::discovery::ResolverError),
    #[error("cannot start the threads that serve connections: {0}")]
    Workers(#[source] std::io::Error),
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Apply(#[from] StartError),
    #[error("cannot watch the configuration: {0}")]
    Watch(#[from] notify::Error),
    #[error("the server is shutting down")]
    Stopped,
}

enum Request {
    /// Reload now and answer.
    Reload(oneshot::Sender<Result<(), ReloadError>>),
    /// A watched file changed: reload once changes stop.
    FilesChanged,
    /// Start watching the configuration's files.
    Watch(oneshot::Sender<Result<(), ReloadError>>),
}

/// Where the server listens now.
#[derive(Debug, Default)]
struct Addrs {
    listeners: HashMap<String, SocketAddr>,
    admin: Option<SocketAddr>,
}

/// A running front door.
#[derive(Debug)]
pub struct Server {
    shared: Arc<Shared>,
    addrs: Arc<Mutex<Addrs>>,
    requests: mpsc::Sender<Request>,
    /// Stops the accept loops, the admin server and reloads.
    stop_accepting: CancellationToken,
    /// Stops discovery, health checks and draining.
    stop_background: CancellationToken,
    background: TaskTracker,
    /// Where the accept loops and their connections run: they stop when the
    /// server is dropped, so after shutdown has waited for the connections.
    workers: Arc<Workers>,
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
        let drains = Drains::new(metrics.clone(), background.clone(), stop_background.clone());
        let empty = Snapshot {
            config: Arc::new(Config {
                path: config.path.clone(),
                admin: None,
                resolver: ResolverConfig::default(),
                listeners: Vec::new(),
                target_groups: Vec::new(),
                files: Vec::new(),
                fingerprint: 0,
            }),
            listeners: HashMap::new(),
            groups: HashMap::new(),
        };
        let shared = Arc::new(Shared::new(empty, metrics, drains));
        let addrs = Arc::new(Mutex::new(Addrs::default()));
        let (tx, rx) = mpsc::channel(64);
        let workers = Arc::new(Workers::start().map_err(StartError::Workers)?);
        let mut runtime = Runtime {
            workers: workers.clone(),
            shared: shared.clone(),
            addrs: addrs.clone(),
            listeners: HashMap::new(),
            admin: None,
            resolver: None,
            stop_accepting: stop_accepting.clone(),
            stop_background: stop_background.clone(),
            background: background.clone(),
            requests: tx.clone(),
            watcher: None,
            fingerprint: 0,
        };
        runtime.apply(config).await?;
        background.spawn(runtime.run(rx));
        Ok(Self {
            shared,
            addrs,
            requests: tx,
            stop_accepting,
            stop_background,
            background,
            workers,
        })
    }

    /// The address a listener is bound to.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        lock(&self.addrs).listeners.get(name).copied()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        lock(&self.addrs).admin
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Every target's state, as `GET /targets` shows it.
    pub fn targets(&self) -> Vec<TargetView> {
        admin::targets(&self.shared)
    }

    /// The configuration being served.
    pub fn config(&self) -> Arc<Config> {
        self.shared.snapshot.load().config.clone()
    }

    /// Re-reads the configuration file and applies it; on any error the
    /// running configuration stays and the error is returned (and reported
    /// in logs, metrics and `/healthz`). What SIGHUP does.
    pub async fn reload(&self) -> Result<(), ReloadError> {
        self.ask(Request::Reload).await
    }

    /// Reloads whenever the configuration file, or a certificate, key or CA
    /// file it names, changes (once a burst of changes settles).
    pub async fn watch_config(&self) -> Result<(), ReloadError> {
        self.ask(Request::Watch).await
    }

    async fn ask(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<(), ReloadError>>) -> Request,
    ) -> Result<(), ReloadError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(request(reply))
            .await
            .map_err(|_| ReloadError::Stopped)?;
        answer.await.map_err(|_| ReloadError::Stopped)?
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
        // Every connection is done: the workers may stop.
        drop(self.workers);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A listener's accept loop (or the admin server) and where it is bound.
struct Running {
    /// As configured (port 0 stays 0), to tell whether a reload moves it.
    bind: SocketAddr,
    stop: CancellationToken,
}

/// What the reload task owns.
struct Runtime {
    workers: Arc<Workers>,
    shared: Arc<Shared>,
    addrs: Arc<Mutex<Addrs>>,
    listeners: HashMap<String, Running>,
    admin: Option<Running>,
    resolver: Option<(ResolverConfig, Arc<TokioResolver>)>,
    stop_accepting: CancellationToken,
    stop_background: CancellationToken,
    background: TaskTracker,
    requests: mpsc::Sender<Request>,
    watcher: Option<ConfigWatcher>,
    /// Of the files behind the running configuration: a watch event that
    /// leaves them all unchanged is not a reload.
    fingerprint: u64,
}

impl Runtime {
    async fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        loop {
            let request = tokio::select! {
                _ = self.stop_accepting.cancelled() => return,
                r = requests.recv() => match r {
                    Some(r) => r,
                    None => return,
                },
            };
            match request {
                Request::Reload(reply) => {
                    let _ = reply.send(self.reload(true).await);
                }
                Request::Watch(reply) => {
                    let _ = reply.send(self.watch());
                }
                Request::FilesChanged => {
                    // Wait for the burst to end, but never longer than
                    // MAX_DEBOUNCE after its first event; a reload asked for
                    // meanwhile joins in.
                    let mut asked = None;
                    let latest = Instant::now() + MAX_DEBOUNCE;
                    let mut quiet = Instant::now() + DEBOUNCE;
                    loop {
                        tokio::select! {
                            _ = self.stop_accepting.cancelled() => return,
                            _ = tokio::time::sleep_until(quiet.min(latest)) => break,
                            r = requests.recv() => match r {
                                Some(Request::FilesChanged) => quiet = Instant::now() + DEBOUNCE,
                                Some(Request::Reload(reply)) => {
                                    asked = Some(reply);
                                    break;
                                }
                                Some(Request::Watch(reply)) => {
                                    let _ = reply.send(self.watch());
                                }
                                None => return,
                            },
                        }
                    }
                    let result = self.reload(asked.is_some()).await;
                    if let Some(reply) = asked {
                        let _ = reply.send(result);
                    }
                }
            }
        }
    }

    fn watch(&mut self) -> Result<(), ReloadError> {
        if self.watcher.is_none() {
            let requests = self.requests.clone();
            self.watcher = Some(ConfigWatcher::new(move || {
                // Full: a reload is already pending.
                let _ = requests.try_send(Request::FilesChanged);
            })?);
        }
        let config = self.shared.snapshot.load().config.clone();
        if let Some(watcher) = &mut self.watcher {
            watcher.follow(&config)?;
            info!(config = %config.path.display(), "watching the configuration for changes");
        }
        Ok(())
    }

    /// Reads the configuration file and applies it; `forced` reloads even
    /// when no file behind it changed.
    async fn reload(&mut self, forced: bool) -> Result<(), ReloadError> {
        let started = Instant::now();
        let path = self.shared.snapshot.load().config.path.clone();
        // Reading and parsing files (certificates, keys) blocks: not on a
        // thread that serves connections.
        let loading = path.clone();
        let loaded = tokio::task::spawn_blocking(move || Config::load(&loading))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        let result = match loaded {
            Ok(config) if !forced && config.fingerprint == self.fingerprint => {
                debug!(config = %path.display(), "configuration files touched but unchanged");
                return Ok(());
            }
            Ok(config) => self.apply(config).await.map_err(ReloadError::from),
            Err(e) => Err(ReloadError::from(e)),
        };
        match &result {
            Ok(()) => {
                self.shared.metrics.config_reload(true);
                *lock(&self.shared.reload_error) = None;
                info!(config = %path.display(), took = ?started.elapsed(), "configuration reloaded");
                if self.watcher.is_some() {
                    if let Err(e) = self.watch() {
                        warn!(error = %e, "cannot follow the new configuration's files");
                    }
                }
            }
            Err(e) => {
                self.shared.metrics.config_reload(false);
                let message = e.to_string();
                // Recorded before it is logged: whoever reads the line finds
                // /healthz already saying so.
                *lock(&self.shared.reload_error) = Some(message.clone());
                for line in message.lines() {
                    error!("reload failed, the running configuration stays: {line}");
                }
            }
        }
        result
    }

    /// Makes `config` the running configuration. Everything that can fail
    /// (binding, TLS, the resolver) happens before anything changes.
    async fn apply(&mut self, config: Config) -> Result<(), StartError> {
        let old = self.shared.snapshot.load_full();

        let resolver = self.resolver_for(&config)?;

        // New sockets for new listeners and for listeners that moved.
        let mut bound = Vec::new();
        for l in &config.listeners {
            if self
                .listeners
                .get(&l.name)
                .is_some_and(|r| r.bind == l.bind)
            {
                continue;
            }
            let (addr, sockets) = self
                .workers
                .bind(l.bind)
                .map_err(|source| StartError::Bind {
                    listener: l.name.clone(),
                    addr: l.bind,
                    source,
                })?;
            bound.push((l.name.clone(), l.bind, addr, sockets));
        }
        let admin_socket = match &config.admin {
            Some(a) if self.admin.as_ref().map(|r| r.bind) != Some(a.bind) => Some((
                a.bind,
                TcpListener::bind(a.bind)
                    .await
                    .map_err(|source| StartError::AdminBind {
                        addr: a.bind,
                        source,
                    })?,
            )),
            _ => None,
        };

        // Listener states; TLS listeners keep their session-ticket key and cache.
        let mut listeners = HashMap::new();
        for l in &config.listeners {
            let tls = match &l.tls {
                Some(t) => {
                    let err = |source| StartError::Tls {
                        listener: l.name.clone(),
                        source,
                    };
                    let previous = old
                        .listeners
                        .get(&l.name)
                        .and_then(|s| s.tls_session.as_ref());
                    let session = match previous {
                        Some(p) => p.reloaded(t).map_err(err)?,
                        None => tls::SessionState::new(t).map_err(err)?,
                    };
                    Some((tls::server_config(t, &session).map_err(err)?, session))
                }
                None => None,
            };
            let (tls, tls_session) = tls.unzip();
            listeners.insert(
                l.name.clone(),
                Arc::new(ListenerState {
                    config: l.clone(),
                    tls,
                    tls_session,
                    metrics: self.shared.metrics.listener(&l.name),
                }),
            );
        }

        // Nothing below can fail.
        let cx = GroupContext {
            metrics: self.shared.metrics.clone(),
            resolver,
            drains: self.shared.drains.clone(),
            tasks: self.background.clone(),
        };
        let groups: HashMap<String, Arc<TargetGroup>> = config
            .target_groups
            .iter()
            .map(|g| {
                let previous = old.groups.get(&g.name).map(Arc::as_ref);
                let group = TargetGroup::start(
                    g.clone(),
                    &cx,
                    self.stop_background.child_token(),
                    previous,
                );
                (g.name.clone(), group)
            })
            .collect();

        self.fingerprint = config.fingerprint;
        let config = Arc::new(config);
        self.shared.snapshot.store(Arc::new(Snapshot {
            config: config.clone(),
            listeners,
            groups: groups.clone(),
        }));

        // Accept loops: start the new ones, stop the removed and the moved.
        let mut addrs = lock(&self.addrs);
        for (name, bind, addr, sockets) in bound {
            info!(listener = %name, addr = %addr, "listening on {addr}");
            let stop = self.stop_accepting.child_token();
            // One admission (per-source counts and rates) for all the
            // listener's sockets.
            let admission = Arc::new(Admission::default());
            self.workers
                .spawn_each(&self.background, sockets, |socket| {
                    listener::run(
                        self.shared.clone(),
                        name.clone(),
                        socket,
                        admission.clone(),
                        stop.clone(),
                    )
                });
            if let Some(old) = self.listeners.insert(name.clone(), Running { bind, stop }) {
                old.stop.cancel();
            }
            addrs.listeners.insert(name, addr);
        }
        self.listeners.retain(|name, running| {
            let keep = config.listeners.iter().any(|l| &l.name == name);
            if !keep {
                info!(listener = %name, "listener removed: no longer accepting; its connections run on");
                running.stop.cancel();
                addrs.listeners.remove(name);
            }
            keep
        });
        if let Some((bind, socket)) = admin_socket {
            let addr = socket.local_addr().unwrap_or(bind);
            info!(addr = %addr, "admin listening on {addr}");
            if !addr.ip().is_loopback() {
                warn!(addr = %addr, "the admin endpoint (/metrics, /targets) needs no login and is reachable beyond this host");
            }
            let stop = self.stop_accepting.child_token();
            self.background
                .spawn(admin::run(self.shared.clone(), socket, stop.clone()));
            if let Some(old) = self.admin.replace(Running { bind, stop }) {
                old.stop.cancel();
            }
            addrs.admin = Some(addr);
        } else if config.admin.is_none() {
            if let Some(old) = self.admin.take() {
                old.stop.cancel();
                addrs.admin = None;
            }
        }
        drop(addrs);

        // The replaced groups stop; targets no group kept drain.
        for (name, group) in &old.groups {
            group.cancel.cancel();
            let kept = groups.get(name).map(|g| g.targets()).unwrap_or_default();
            for target in group.targets().iter() {
                if !kept.iter().any(|t| Arc::ptr_eq(t, target)) {
                    self.shared.drains.retire(
                        name,
                        target,
                        group.config.deregistration_delay,
                        "removed from the configuration",
                    );
                }
            }
        }
        Ok(())
    }

    /// The resolver for `config`'s hostname targets: kept while its name
    /// servers stay the same.
    fn resolver_for(&mut self, config: &Config) -> Result<Option<Arc<TokioResolver>>, StartError> {
        let needed = config
            .target_groups
            .iter()
            .flat_map(|g| &g.targets)
            .any(|t| matches!(t, TargetSpec::Host { .. }));
        if !needed {
            return Ok(None);
        }
        if let Some((servers, resolver)) = &self.resolver {
            if *servers == config.resolver {
                return Ok(Some(resolver.clone()));
            }
        }
        let resolver = Arc::new(upstream::discovery::resolver(&config.resolver)?);
        self.resolver = Some((config.resolver.clone(), resolver.clone()));
        Ok(Some(resolver))
    }
}
