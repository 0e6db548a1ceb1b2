//! Upstream: target groups, their discovery, health checks and selection,
//! and connecting to a chosen target (re-encrypting where configured).

pub(crate) mod discovery;
mod drain;
mod health;
mod keeper;
mod select;
pub(crate) mod target;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_resolver::TokioResolver;
use prometheus_client::metrics::gauge::Gauge;
use rustls::client::UnbufferedClientConnection;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::config::{TargetGroupConfig, TargetSpec};
use crate::metrics::Metrics;
use crate::tls::TlsStream;
pub(crate) use drain::Drains;
pub(crate) use health::ProbeError;
use keeper::Event;
pub(crate) use target::ConnectionGuard;
use target::{Health, Target};

/// Why connecting to one target failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    #[error("connect: {0}")]
    Connect(#[source] io::Error),
    #[error("sending the PROXY header: {0}")]
    ProxyHeader(#[source] io::Error),
    #[error("TLS handshake: {0}")]
    Tls(#[source] io::Error),
}

/// A connection to a target: plain, or re-encrypted.
#[derive(Debug)]
pub(crate) enum UpstreamStream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<UnbufferedClientConnection>>),
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

impl crate::relay::Stream for UpstreamStream {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Option<Poll<io::Result<&[u8]>>> {
        match self {
            Self::Tcp(_) => None,
            Self::Tls(s) => Some(s.poll_chunk(cx)),
        }
    }

    fn consume(&mut self, n: usize) {
        if let Self::Tls(s) = self {
            s.consume(n);
        }
    }

    fn gather_writes(&mut self) -> bool {
        match self {
            Self::Tcp(_) => false,
            Self::Tls(s) => crate::relay::Stream::gather_writes(s.as_mut()),
        }
    }
}

/// What `/targets` shows of one target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetView {
    pub group: String,
    pub target: String,
    pub address: String,
    pub state: &'static str,
    pub reason: String,
    pub active_connections: usize,
    pub last_check: Option<String>,
}

/// Something `/healthz` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Problem {
    /// Clients cannot be served (`true`), or are served with something
    /// to look at (`false`).
    #[serde(skip)]
    pub(crate) unavailable: bool,
    pub(crate) problem: String,
}

impl Problem {
    pub(crate) fn unavailable(problem: String) -> Self {
        Self {
            unavailable: true,
            problem,
        }
    }

    pub(crate) fn degraded(problem: String) -> Self {
        Self {
            unavailable: false,
            problem,
        }
    }
}

/// An active/standby pair and how many of its nodes were healthy last time.
#[derive(Debug)]
struct Pair {
    members: [TargetSpec; 2],
    label: String,
    active_nodes: Gauge,
    /// `u8::MAX` until both nodes have been checked.
    last: AtomicU8,
}

/// A running target group: its targets, their health, and how to reach them.
///
/// Anyone may read the targets; only the group's keeper task changes them
/// (see `keeper`). A reload builds a new group from the new configuration,
/// carrying over the targets that stay (with their health), and the old
/// group's checks stop before the new group's start, so a target has one
/// writer at a time.
#[derive(Debug)]
pub(crate) struct TargetGroup {
    pub(crate) config: TargetGroupConfig,
    upstream_tls: Option<Arc<ClientConfig>>,
    pub(crate) health_tls: Arc<ClientConfig>,
    targets: ArcSwap<Vec<Arc<Target>>>,
    /// What hostname targets last resolved to.
    resolved: Mutex<HashMap<TargetSpec, Vec<SocketAddr>>>,
    next: AtomicUsize,
    pairs: Vec<Pair>,
    metrics: Arc<Metrics>,
    drains: Arc<Drains>,
    tasks: TaskTracker,
    /// To the keeper, the one writer of the targets.
    events: mpsc::Sender<Event>,
    /// The group that replaced this one at a reload: late events go there.
    successor: OnceLock<Weak<Self>>,
    /// Stops the group's keeper, discovery and health checks.
    pub(crate) cancel: CancellationToken,
}

/// The group was stopped and nobody took it over.
#[derive(Debug)]
pub(crate) struct Stopped;

/// What a group needs from the server that runs it.
#[derive(Debug, Clone)]
pub(crate) struct GroupContext {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) resolver: Option<Arc<TokioResolver>>,
    pub(crate) drains: Arc<Drains>,
    pub(crate) tasks: TaskTracker,
}

impl TargetGroup {
    /// Starts the group. Targets of `previous` (the group of the same name
    /// before a reload) that stay are carried over with their health; new
    /// address targets are checked from now on, hostname targets as soon as
    /// they resolve.
    pub(crate) fn start(
        config: TargetGroupConfig,
        cx: &GroupContext,
        cancel: CancellationToken,
        previous: Option<&Self>,
    ) -> Arc<Self> {
        if let Some(previous) = previous {
            // Its checks and keeper stop before ours start.
            previous.cancel.cancel();
        }
        let pairs = config
            .pairs
            .iter()
            .map(|members| {
                let label = format!("{}|{}", members[0], members[1]);
                let last = previous
                    .and_then(|p| p.pairs.iter().find(|old| old.label == label))
                    .map_or(u8::MAX, |old| old.last.load(Ordering::Acquire));
                Pair {
                    active_nodes: cx.metrics.pair_active_nodes(&config.name, &label),
                    members: members.clone(),
                    label,
                    last: AtomicU8::new(last),
                }
            })
            .collect();
        let resolved: HashMap<_, _> = previous
            .map(|p| p.resolved().clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|(spec, _)| config.targets.contains(spec))
            .collect();
        let carried = previous.map(|p| p.targets.load_full()).unwrap_or_default();
        let (events, receiver) = mpsc::channel(keeper::QUEUE);
        let group = Arc::new(Self {
            upstream_tls: config.tls.as_ref().map(crate::tls::upstream_config),
            health_tls: crate::tls::health_check_config(),
            targets: ArcSwap::from_pointee(Vec::new()),
            resolved: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(0),
            pairs,
            metrics: cx.metrics.clone(),
            drains: cx.drains.clone(),
            tasks: cx.tasks.clone(),
            events,
            successor: OnceLock::new(),
            cancel,
            config,
        });
        if let Some(previous) = previous {
            let _ = previous.successor.set(Arc::downgrade(&group));
        }
        let list = group.assemble(&resolved, &carried);
        for target in &list {
            group
                .tasks
                .spawn(health::run(group.clone(), target.clone()));
        }
        group.targets.store(Arc::new(list));
        *group.resolved() = resolved;
        group.tasks.spawn(keeper::run(group.clone(), receiver));
        let has_hosts = group
            .config
            .targets
            .iter()
            .any(|t| matches!(t, TargetSpec::Host { .. }));
        if let (true, Some(resolver)) = (has_hosts, cx.resolver.clone()) {
            group.tasks.spawn(discovery::run(group.clone(), resolver));
        }
        group
    }

    pub(crate) fn resolved(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<TargetSpec, Vec<SocketAddr>>> {
        self.resolved.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current targets, in configuration order.
    pub(crate) fn targets(&self) -> Arc<Vec<Arc<Target>>> {
        self.targets.load_full()
    }

    /// The target list for the configured targets and the addresses
    /// hostnames resolved to, reusing the `existing` targets that stay.
    fn assemble(
        &self,
        resolved: &HashMap<TargetSpec, Vec<SocketAddr>>,
        existing: &[Arc<Target>],
    ) -> Vec<Arc<Target>> {
        let mut list = Vec::new();
        for spec in &self.config.targets {
            let addrs: &[SocketAddr] = match spec {
                TargetSpec::Addr(addr) => std::slice::from_ref(addr),
                TargetSpec::Host { .. } => resolved.get(spec).map_or(&[], Vec::as_slice),
            };
            for &addr in addrs {
                let reused = existing
                    .iter()
                    .find(|t| t.spec == *spec && t.addr == addr && !t.is_draining());
                list.push(match reused {
                    Some(t) => t.clone(),
                    None => Arc::new(Target::new(
                        spec.clone(),
                        addr,
                        self.metrics.target(
                            &self.config.name,
                            &spec.to_string(),
                            &addr.to_string(),
                        ),
                    )),
                });
            }
        }
        list
    }

    /// Hands the result of this group's own checks or discovery to its
    /// keeper, waiting for room; once the group is replaced or stopped they
    /// are the successor's to make, and this fails.
    pub(crate) async fn report(&self, event: Event) -> Result<(), Stopped> {
        if self.cancel.is_cancelled() {
            return Err(Stopped);
        }
        self.events.send(event).await.map_err(|_| Stopped)
    }

    /// Hands what a client's connection found to the keeper if there is
    /// room, without waiting; a replaced group's go to its successor.
    fn report_now(&self, event: Event) {
        let Ok(keeper) = self.keeper() else {
            return;
        };
        if keeper.try_send(event).is_err() {
            debug!(group = %self.config.name, "health events queued to the limit; one dropped");
        }
    }

    /// The way to the keeper of this group while it runs, else of the
    /// group that replaced it.
    fn keeper(&self) -> Result<mpsc::Sender<Event>, Stopped> {
        if !self.cancel.is_cancelled() {
            return Ok(self.events.clone());
        }
        self.replacement()
            .map(|group| group.events.clone())
            .ok_or(Stopped)
    }

    /// The running group that replaced this one at a reload (through any
    /// number of reloads), if this one was replaced and not removed.
    pub(crate) fn replacement(&self) -> Option<Arc<Self>> {
        let mut next = self.successor.get().and_then(Weak::upgrade);
        while let Some(group) = next {
            if !group.cancel.is_cancelled() {
                return Some(group);
            }
            next = group.successor.get().and_then(Weak::upgrade);
        }
        None
    }

    /// Picks a healthy target not yet tried (see `select::choose`).
    pub(crate) fn choose(&self, client: SocketAddr, tried: &[Arc<Target>]) -> Option<Arc<Target>> {
        select::choose(
            &self.targets.load(),
            tried,
            self.config.algorithm,
            self.config.when_all_unhealthy,
            &self.next,
            client,
        )
    }

    /// The name a target's certificate must carry, also sent as SNI.
    pub(crate) fn server_name(&self, target: &Target) -> ServerName<'static> {
        if let Some(name) = self.config.tls.as_ref().and_then(|t| t.server_name.clone()) {
            return name;
        }
        match &target.spec {
            TargetSpec::Host { host, .. } => ServerName::try_from(host.clone())
                .unwrap_or_else(|_| ServerName::IpAddress(target.addr.ip().into())),
            TargetSpec::Addr(addr) => ServerName::IpAddress(addr.ip().into()),
        }
    }

    /// Connects to one target within the connect timeout: TCP, the PROXY
    /// header if any, then TLS if the group re-encrypts.
    pub(crate) async fn connect(
        &self,
        target: &Target,
        proxy_header: Option<&[u8]>,
    ) -> Result<UpstreamStream, UpstreamError> {
        let timeout = self.config.connect_timeout;
        let attempt = async {
            let mut tcp = TcpStream::connect(target.addr)
                .await
                .map_err(UpstreamError::Connect)?;
            let _ = tcp.set_nodelay(true);
            if let Some(header) = proxy_header {
                tcp.write_all(header)
                    .await
                    .map_err(UpstreamError::ProxyHeader)?;
            }
            match &self.upstream_tls {
                None => Ok(UpstreamStream::Tcp(tcp)),
                Some(tls) => {
                    let stream = TlsStream::connect(tls.clone(), self.server_name(target), tcp)
                        .await
                        .map_err(UpstreamError::Tls)?;
                    let kind = stream.handshake_kind();
                    if kind == Some(rustls::HandshakeKind::Resumed) {
                        target.metrics.resumed_handshakes.inc();
                    } else {
                        target.metrics.full_handshakes.inc();
                    }
                    Ok(UpstreamStream::Tls(Box::new(stream)))
                }
            }
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .unwrap_or(Err(UpstreamError::Timeout(timeout)))
    }

    /// Connects to a target for `client`: a failed target is marked down
    /// at once (a passive check) and the next one is tried, so a client
    /// gets a refusal only when no target at all can take it.
    pub(crate) async fn connect_any(
        &self,
        client: SocketAddr,
        proxy_header: Option<&[u8]>,
    ) -> Option<(ConnectionGuard, UpstreamStream)> {
        let mut tried: Vec<Arc<Target>> = Vec::new();
        while let Some(target) = self.choose(client, &tried) {
            match self.connect(&target, proxy_header).await {
                Ok(stream) => return Some((target.track(), stream)),
                Err(e) => {
                    let why = e.to_string();
                    warn!(
                        group = %self.config.name,
                        target = %target.label,
                        upstream.addr = %target.addr,
                        error = %why,
                        "upstream connect failed; trying the next target"
                    );
                    self.report_now(Event::ConnectFailed {
                        target: target.clone(),
                        error: why,
                    });
                    tried.push(target);
                }
            }
        }
        None
    }

    /// What keeps this group from serving as configured: no healthy target
    /// (clients are refused, or tried against targets that failed), a pair
    /// with no active node (an outage) or with two (a split brain).
    pub(crate) fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let name = &self.config.name;
        let targets = self.targets.load();
        if !targets.iter().any(|t| t.is_healthy()) {
            problems.push(Problem::unavailable(format!(
                "target group {name:?} has no healthy target"
            )));
        }
        for pair in &self.pairs {
            match pair.last.load(Ordering::Acquire) {
                0 => problems.push(Problem::unavailable(format!(
                    "pair {} of target group {name:?} has no active node",
                    pair.label
                ))),
                2 => problems.push(Problem::degraded(format!(
                    "pair {} of target group {name:?} has two active nodes",
                    pair.label
                ))),
                _ => {}
            }
        }
        problems
    }

    /// The state of every target, as `/targets` shows it.
    pub(crate) fn view(&self) -> Vec<TargetView> {
        let targets = self.targets.load();
        targets
            .iter()
            .map(|t| TargetView {
                group: self.config.name.clone(),
                target: t.label.clone(),
                address: t.addr.to_string(),
                state: self.state_name(&targets, t),
                reason: t.reason(),
                active_connections: t.active_connections(),
                last_check: t.last_check().map(rfc3339),
            })
            .collect()
    }

    fn state_name(&self, targets: &[Arc<Target>], t: &Target) -> &'static str {
        self.shown_state(targets, t, t.health())
    }

    /// How `/targets` shows `t` when its health is `health`.
    fn shown_state(&self, targets: &[Arc<Target>], t: &Target, health: Health) -> &'static str {
        if t.is_draining() {
            return "draining";
        }
        if health != Health::Unhealthy {
            return health.as_str();
        }
        let partner_healthy = self.pairs.iter().any(|pair| {
            let Some(i) = pair.members.iter().position(|m| *m == t.spec) else {
                return false;
            };
            let partner = &pair.members[1 - i];
            targets.iter().any(|o| o.spec == *partner && o.is_healthy())
        });
        if partner_healthy {
            "standby"
        } else {
            "unhealthy"
        }
    }
}

pub(crate) fn rfc3339(time: std::time::SystemTime) -> String {
    time::OffsetDateTime::from(time)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Algorithm, HealthCheckConfig, WhenAllUnhealthy};

    fn config(targets: &[&str]) -> TargetGroupConfig {
        TargetGroupConfig {
            name: "g".into(),
            tls: None,
            algorithm: Algorithm::RoundRobin,
            connect_timeout: Duration::from_secs(1),
            deregistration_delay: Duration::from_secs(30),
            when_all_unhealthy: WhenAllUnhealthy::FailOpen,
            targets: targets
                .iter()
                .map(|t| TargetSpec::Addr(t.parse().unwrap()))
                .collect(),
            pairs: Vec::new(),
            health_check: HealthCheckConfig::default(),
        }
    }

    #[tokio::test]
    async fn a_reload_carries_over_the_targets_that_stay_with_their_health() {
        let metrics = Arc::new(Metrics::new());
        let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
        let cx = GroupContext {
            metrics: metrics.clone(),
            resolver: None,
            drains: Drains::new(metrics, tasks.clone(), stop.clone()),
            tasks: tasks.clone(),
        };
        // A live port for the target that stays, so its checks pass.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live = listener.local_addr().unwrap().to_string();
        let first = TargetGroup::start(
            config(&["127.0.0.1:1", &live]),
            &cx,
            stop.child_token(),
            None,
        );
        let kept = first.targets()[1].clone();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !kept.is_healthy() {
            assert!(tokio::time::Instant::now() < deadline, "never healthy");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let second = TargetGroup::start(
            config(&[&live, "127.0.0.1:3"]),
            &cx,
            stop.child_token(),
            Some(&first),
        );
        let targets = second.targets();
        assert!(
            Arc::ptr_eq(&targets[0], &kept),
            "the staying target is the same one"
        );
        assert!(targets[0].is_healthy(), "and keeps its health");
        assert_eq!(targets[1].health(), Health::Initial);
        assert!(!targets.iter().any(|t| Arc::ptr_eq(t, &first.targets()[0])));
        stop.cancel();
        tasks.close();
        tasks.wait().await;
    }
}
