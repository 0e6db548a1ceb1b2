//! What every connection of a broker shares: its router, journal, users
//! and counters, and the recent-message memory that drops re-sends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tracing::info;

use crate::auth::Auth;
use crate::config::{BrokerConfig, Limits};
use crate::durable::Durables;
use crate::router::{self, Destination, Message, Policies, Router, RouterLimits};
use crate::store::{Journal, Recovered};
use crate::{client, dedup, logins, network, transport};

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
    /// Makes this activation's message ids its own (see [`incarnation`]).
    incarnation: String,
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
    /// Held while a message with a dedup key is marked seen and journaled.
    pub(crate) dedup_order: tokio::sync::Mutex<()>,
    pub(crate) bridges: network::Bridges,
    /// When this node became active.
    started: std::time::Instant,
    started_at: std::time::SystemTime,
    /// Durable topic subscriptions and the client ids connected now.
    pub(crate) durables: Arc<Durables>,
    /// Temporary destinations that exist now (their connections are open).
    pub(crate) temporaries: std::sync::Mutex<std::collections::HashSet<Destination>>,
    /// MQTT clients connected now, by client id: a new connection with the
    /// same id takes over (the old one is stopped).
    pub(crate) mqtt_clients: transport::MqttClients,
    /// MQTT retained messages, by topic.
    pub(crate) retained: crate::mqtt::Retained,
    /// The STOMP-over-WebSocket transport a browser uses (TLS, bound
    /// address), set once the broker listens.
    pub(crate) websocket: std::sync::OnceLock<(bool, std::net::SocketAddr)>,
    /// `[console] websocket_url`, which the live page uses instead.
    pub(crate) live_url: Option<String>,
}

/// Bytes of SENDs all connections together may have on their way to the
/// router: 64 MiB, or two of the largest frames if that is more.
fn intake_bytes(limits: &Limits) -> usize {
    (64 * 1024 * 1024usize)
        .max(2 * limits.max_frame_size)
        .min(u32::MAX as usize)
}

impl BrokerCore {
    /// The core of a node whose journal was just opened: what it
    /// recovered goes back to its destinations, and the re-send memory
    /// learns what is already stored.
    pub(crate) async fn restore(
        config: &BrokerConfig,
        journal: Journal,
        recovered: Recovered,
        durables: Durables,
    ) -> Arc<Self> {
        let (router, retirements) = Router::start(
            RouterLimits::from(&config.limits),
            Policies::new(config.policies.clone()),
        );
        let restored: Vec<Arc<Message>> = recovered
            .messages
            .into_iter()
            .filter_map(|mut m| {
                let destination = Destination::parse(&m.destination).ok()?;
                // Its id as it was first given (journals before ids were
                // kept have none: the old form).
                let message_id = crate::intake::take_stored_id(&mut m.headers)
                    .unwrap_or_else(|| format!("ID:{}-{}", config.name, m.id));
                let stamps = crate::intake::Stamps::lenient(&m.headers);
                Some(Arc::new(Message {
                    deliver_at: stamps.deliver_at,
                    expires: stamps.expires,
                    priority: stamps.priority,
                    group: stamps.group,
                    seq: m.id,
                    message_id,
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
            // A failover client's re-send (STOMP's dedup id, a JMS message
            // id) of what is stored is not taken twice.
            for name in [
                client::DEDUP_HEADER,
                crate::transport::JMS_MESSAGE_ID_HEADER,
            ] {
                if let (Some(sender), Some(id)) = (&m.sender, header(name)) {
                    recent.insert(dedup::Key::Client { sender, id });
                }
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
        let core = Arc::new(Self {
            name: config.name.clone(),
            router,
            journal,
            auth: auth.clone(),
            logins: logins::Logins::new(auth),
            limits: config.limits,
            next_conn: AtomicU64::new(1),
            next_seq: AtomicU64::new(recovered.next_id.max(1)),
            incarnation: incarnation(),
            errors: AtomicU64::new(0),
            failed_logins: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            intake: Arc::new(tokio::sync::Semaphore::new(intake_bytes(&config.limits))),
            slots: transport::Slots::new(
                config.limits.max_connections,
                config.limits.max_connections_per_source,
            ),
            recent: std::sync::Mutex::new(recent),
            dedup_order: tokio::sync::Mutex::new(()),
            bridges: network::Bridges::default(),
            started: std::time::Instant::now(),
            started_at: std::time::SystemTime::now(),
            durables: Arc::new(durables),
            temporaries: std::sync::Mutex::new(std::collections::HashSet::new()),
            mqtt_clients: transport::MqttClients::default(),
            retained: crate::mqtt::Retained::load(Some(&config.data_dir.join("retained"))),
            websocket: std::sync::OnceLock::new(),
            live_url: config.console_websocket_url.clone(),
        });
        tokio::spawn(crate::intake::retire(Arc::downgrade(&core), retirements));
        core
    }

    pub(crate) fn next_connection(&self) -> router::ConnId {
        router::ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    /// The id of the message this node numbered `seq`: unique across
    /// restarts and failovers, since a sequence number is not (a message
    /// routed before its journal write and lost in a crash gives its number
    /// back). A bridged peer recognises a re-forwarded message by it, so a
    /// reused id would have it drop a new message as seen.
    pub(crate) fn message_id(&self, seq: u64) -> String {
        format!("ID:{}-{}-{seq}", self.name, self.incarnation)
    }

    /// False if a message with this key was already accepted.
    pub(crate) fn first_time(&self, key: dedup::Key<'_>) -> bool {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key)
    }

    /// Takes every message waiting in queue `name` (with `delete`, the
    /// queue too, if it has no consumers), and the journal agrees before
    /// this returns: how many messages went.
    pub(crate) async fn purge(&self, name: &str, delete: bool) -> Result<usize, ActionError> {
        let purged = self.router.purge(name.to_owned(), delete).await?;
        if !purged.stored.is_empty() {
            self.journal
                .acknowledge(purged.stored)
                .await?
                .wait()
                .await?;
        }
        Ok(purged.messages)
    }

    /// Makes (or finds) durable subscription `name` of `client_id` to
    /// `topic` and returns its hidden queue to consume (see `durable`):
    /// counted among the broker's destinations, and emptied if it existed
    /// with another topic or selector (a new subscription, as JMS says).
    pub(crate) async fn durable_subscribe(
        &self,
        client_id: &str,
        name: &str,
        topic: &Destination,
        selector: Option<&str>,
    ) -> Result<Destination, String> {
        let subscribed = self
            .durables
            .subscribe(client_id, name, topic, selector)
            .await
            .map_err(|e| e.to_string())?;
        if let Err(e) = self.router.ensure(subscribed.queue.clone()).await {
            // Too many destinations: the subscription goes again.
            let _ = self.durables.remove(client_id, name).await;
            return Err(e.to_string());
        }
        if subscribed.changed {
            self.purge(&subscribed.queue.name, false)
                .await
                .map_err(|e| e.to_string())?;
        }
        info!(client_id = ?client_id, subscription = ?name, topic = %topic, "durable subscriber");
        Ok(subscribed.queue)
    }

    /// Removes durable subscription `name` of `client_id` and what it kept.
    pub(crate) async fn durable_unsubscribe(
        &self,
        client_id: &str,
        name: &str,
    ) -> Result<(), String> {
        let queue = self
            .durables
            .remove(client_id, name)
            .await
            .map_err(|e| e.to_string())?;
        self.purge(&queue.name, true)
            .await
            .map_err(|e| e.to_string())?;
        info!(client_id = ?client_id, subscription = ?name, "durable subscription removed");
        Ok(())
    }

    /// Empties and deletes hidden queues of durable subscriptions that
    /// are no longer registered (removed just before a crash, before their
    /// queue was emptied).
    pub(crate) async fn drop_orphan_durables(&self) {
        let known: std::collections::HashSet<String> =
            self.durables.list().into_iter().map(|s| s.queue).collect();
        for queue in self.router.stats().await.queues {
            if queue.name.starts_with(crate::durable::QUEUE_PREFIX) && !known.contains(&queue.name)
            {
                if let Err(e) = self.purge(&queue.name, true).await {
                    tracing::warn!(queue = %queue.name, error = %e, "cannot remove what a removed durable subscription kept");
                }
            }
        }
    }

    /// Whether temporary destination `d` exists (its connection is open).
    pub(crate) fn temporary_exists(&self, d: &Destination) -> bool {
        self.temporaries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(d)
    }

    /// Creates temporary destination `d` (counted among the broker's
    /// destinations).
    pub(crate) async fn create_temporary(&self, d: &Destination) -> Result<(), String> {
        self.router
            .ensure(d.clone())
            .await
            .map_err(|e| e.to_string())?;
        self.temporaries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(d.clone());
        crate::transport::announce_temporary(self, d, true).await;
        Ok(())
    }

    /// Deletes temporary destination `d` and what waits in it.
    pub(crate) async fn delete_temporary(&self, d: &Destination) {
        self.temporaries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(d);
        match d.kind {
            router::Kind::Queue => {
                let _ = self.purge(&d.name, true).await;
            }
            router::Kind::Topic => self.router.drop_topic(d.name.clone()).await,
        }
        crate::transport::announce_temporary(self, d, false).await;
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
            version: env!("CARGO_PKG_VERSION"),
            started_at: router::rfc3339(self.started_at),
            uptime_seconds: self.started.elapsed().as_secs(),
            journal_bytes: self.journal.disk_bytes(),
            connections_total: self.next_conn.load(Ordering::Relaxed) - 1,
            protocol_errors: self.errors.load(Ordering::Relaxed),
            failed_logins: self.failed_logins.load(Ordering::Relaxed),
            refused_connections: self.refused.load(Ordering::Relaxed),
        }
    }
}

/// Why a console action on a queue (purge, delete, retry) did not happen,
/// or did not reach the journal.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ActionError {
    #[error(transparent)]
    Refused(#[from] router::QueueActionError),
    #[error("the change could not be stored: {0}")]
    Journal(#[from] crate::store::JournalError),
}

/// `GET /api/broker`: the node and its counters.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Summary {
    pub(crate) name: String,
    /// Messages held in memory, against `memory_limit`.
    pub(crate) memory: router::MemoryStats,
    /// Always `active`: a standby serves no console.
    pub(crate) role: &'static str,
    pub(crate) version: &'static str,
    /// When this node became active (RFC 3339).
    pub(crate) started_at: String,
    pub(crate) uptime_seconds: u64,
    /// Bytes of the journal's segments on disk.
    pub(crate) journal_bytes: u64,
    /// Client connections accepted since start.
    pub(crate) connections_total: u64,
    /// Connections closed with an ERROR: bad frames, limits, refused logins.
    pub(crate) protocol_errors: u64,
    /// CONNECTs refused: a wrong user or password, or a bridge opened by a
    /// user without the right to.
    pub(crate) failed_logins: u64,
    /// Connections closed at accept: over `max_connections_per_source`.
    pub(crate) refused_connections: u64,
}

/// A token of this activation (twelve hex digits): from the process's
/// randomly keyed hasher, the clock and the process id.
fn incarnation() -> String {
    use std::hash::BuildHasher;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let token = std::hash::RandomState::new().hash_one((now, std::process::id()));
    format!("{:012x}", token >> 16)
}
