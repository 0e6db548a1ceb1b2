//! Everything a session reads, built whole and published behind one ArcSwap.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ListenerConfig};
use crate::metrics::{ListenerMetrics, Metrics};
use crate::tls::{ServerTls, SessionState};
use crate::upstream::{Drains, TargetGroup};

/// One consistent view of the configuration and its running parts.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) config: Arc<Config>,
    pub(crate) listeners: HashMap<String, Arc<ListenerState>>,
    pub(crate) groups: HashMap<String, Arc<TargetGroup>>,
}

/// A listener's settings as sessions use them.
#[derive(Debug)]
pub(crate) struct ListenerState {
    pub(crate) config: ListenerConfig,
    /// The TLS configuration for `tls` listeners.
    pub(crate) tls: Option<ServerTls>,
    /// Kept across reloads so clients can resume their sessions.
    pub(crate) tls_session: Option<SessionState>,
    pub(crate) metrics: ListenerMetrics,
}

/// State shared by every task of a running server.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) snapshot: ArcSwap<Snapshot>,
    pub(crate) metrics: Arc<Metrics>,
    /// Targets taken out of service, finishing their connections.
    pub(crate) drains: Arc<Drains>,
    next_session: AtomicU64,
    /// Every downstream connection's task.
    pub(crate) sessions: TaskTracker,
    /// Cancelled when the shutdown grace period ends: open connections close.
    pub(crate) abort: CancellationToken,
    /// The last reload error, until a good configuration arrives.
    pub(crate) reload_error: Mutex<Option<String>>,
}

impl Shared {
    pub(crate) fn new(snapshot: Snapshot, metrics: Arc<Metrics>, drains: Arc<Drains>) -> Self {
        Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics,
            drains,
            next_session: AtomicU64::new(1),
            sessions: TaskTracker::new(),
            abort: CancellationToken::new(),
            reload_error: Mutex::new(None),
        }
    }

    pub(crate) fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }
}
