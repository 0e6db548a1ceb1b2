//! Durable topic subscriptions, as ActiveMQ's: a client that CONNECTs with
//! a `client-id` and SUBSCRIBEs to a topic with `activemq.subscriptionName`
//! keeps getting what is published there while it is away.
//!
//! Each subscription is a hidden queue (`$durable.<n>`) that takes a copy
//! of every message published to its topic (and selected by its selector)
//! through the intake, like any queue message: a persistent one is
//! journaled before the publisher's receipt, so it survives a SIGKILL and
//! a failover of a pair. The subscriber consumes the hidden queue, and its
//! MESSAGE frames name the topic. The subscriptions themselves are kept in
//! `durable-subscriptions.json` in the data directory (written before a
//! subscription takes its first copy, and removed from before its queue is
//! emptied), so a restart or a standby knows them.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::router::{Destination, Filter, Kind, Message};
use crate::selector::Selector;

/// Hidden queues of durable subscriptions are named `$durable.<n>`; no
/// client may name one.
pub(crate) const QUEUE_PREFIX: &str = "$durable.";
/// The topic a durable subscription's message was published to: its
/// MESSAGE frame names it as the destination.
pub(crate) const TOPIC_HEADER: &str = "portico-durable-topic";
/// The registry's file in the data directory.
const FILE: &str = "durable-subscriptions.json";

/// Whether `destination` is a durable subscription's hidden queue.
pub(crate) fn is_hidden(destination: &Destination) -> bool {
    destination.kind == Kind::Queue && destination.name.starts_with(QUEUE_PREFIX)
}

/// One durable subscription, as the registry keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Subscription {
    pub(crate) client_id: String,
    pub(crate) name: String,
    /// The topic subscribed to, `/topic/NAME` (wildcards allowed).
    pub(crate) topic: String,
    pub(crate) selector: Option<String>,
    /// Its hidden queue's name.
    pub(crate) queue: String,
}

/// A subscription with its topic and selector parsed, for routing.
#[derive(Debug)]
struct Entry {
    sub: Subscription,
    filter: Filter,
    selector: Option<Selector>,
    queue: Destination,
}

impl Entry {
    fn new(sub: Subscription) -> Result<Self, String> {
        let topic = Destination::parse(&sub.topic)?;
        let filter = Filter::parse(&format!("topic://{}", topic.name))?;
        let selector = match &sub.selector {
            Some(text) => Some(Selector::parse(text).map_err(|e| e.to_string())?),
            None => None,
        };
        let queue = Destination::parse(&format!("queue://{}", sub.queue))?;
        Ok(Self {
            sub,
            filter,
            selector,
            queue,
        })
    }
}

/// What the registry file holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    /// The number the next hidden queue gets (never reused).
    next: u64,
    subscriptions: Vec<Subscription>,
}

#[derive(Debug, thiserror::Error)]
pub enum DurableError {
    #[error("a durable subscription needs a client-id header on CONNECT")]
    NoClientId,
    #[error("durable subscription {0:?} is already active on this connection")]
    Active(String),
    #[error("no durable subscription {name:?} for client-id {client_id:?}")]
    NotFound { client_id: String, name: String },
    #[error("the durable subscriptions could not be saved: {0}")]
    Io(#[from] std::io::Error),
    #[error("durable subscriptions file {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// The broker's durable subscriptions and the client ids connected now.
#[derive(Debug)]
pub(crate) struct Durables {
    /// The registry's file; `None` keeps them in memory only (tests).
    path: Option<PathBuf>,
    /// Read by every topic SEND without a lock.
    entries: ArcSwap<Vec<Arc<Entry>>>,
    /// Serialises changes and the file's writes.
    saved: tokio::sync::Mutex<Saved>,
    /// Client ids of connections open now: one connection each.
    clients: Mutex<HashSet<String>>,
}

/// What subscribing did.
#[derive(Debug)]
pub(crate) struct Subscribed {
    /// The hidden queue to consume.
    pub(crate) queue: Destination,
    /// The subscription existed with another topic or selector: its queue
    /// holds what it took before, to be purged (JMS: a new subscription).
    pub(crate) changed: bool,
}

impl Durables {
    /// Reads the registry from `data_dir` (empty if there is none yet).
    pub(crate) fn load(data_dir: Option<&Path>) -> Result<Self, DurableError> {
        let path = data_dir.map(|d| d.join(FILE));
        let saved: Saved = match &path {
            Some(path) => match std::fs::read(path) {
                Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| DurableError::Corrupt {
                    path: path.clone(),
                    reason: e.to_string(),
                })?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Saved::default(),
                Err(e) => return Err(e.into()),
            },
            None => Saved::default(),
        };
        let mut entries = Vec::new();
        for sub in &saved.subscriptions {
            let entry = Entry::new(sub.clone()).map_err(|reason| DurableError::Corrupt {
                path: path.clone().unwrap_or_default(),
                reason,
            })?;
            entries.push(Arc::new(entry));
        }
        Ok(Self {
            path,
            entries: ArcSwap::from_pointee(entries),
            saved: tokio::sync::Mutex::new(saved),
            clients: Mutex::new(HashSet::new()),
        })
    }

    /// The hidden queues that take a copy of `message`, published to a
    /// topic: those whose topic matches and whose selector selects it.
    pub(crate) fn copies(&self, message: &Message) -> Vec<Destination> {
        let entries = self.entries.load();
        if entries.is_empty() || message.destination.kind != Kind::Topic {
            return Vec::new();
        }
        entries
            .iter()
            .filter(|e| e.filter.matches(&message.destination))
            .filter(|e| e.selector.as_ref().is_none_or(|s| s.matches(message)))
            .map(|e| e.queue.clone())
            .collect()
    }

    /// Every subscription, in the order they were made.
    pub(crate) fn list(&self) -> Vec<Subscription> {
        self.entries.load().iter().map(|e| e.sub.clone()).collect()
    }

    /// The topics durable subscriptions listen to (for network demand).
    pub(crate) fn topics(&self) -> Vec<Destination> {
        self.entries
            .load()
            .iter()
            .filter_map(|e| Destination::parse(&e.sub.topic).ok())
            .collect()
    }

    /// Makes (or finds) the subscription `name` of `client_id` to `topic`
    /// with `selector`. Saved before it takes its first copy.
    pub(crate) async fn subscribe(
        &self,
        client_id: &str,
        name: &str,
        topic: &Destination,
        selector: Option<&str>,
    ) -> Result<Subscribed, DurableError> {
        let mut saved = self.saved.lock().await;
        let wanted = |queue: String| Subscription {
            client_id: client_id.to_owned(),
            name: name.to_owned(),
            topic: topic.stomp(),
            selector: selector.map(str::to_owned),
            queue,
        };
        let at = saved
            .subscriptions
            .iter()
            .position(|s| s.client_id == client_id && s.name == name);
        let (changed, queue) = match at {
            Some(i) => {
                let sub = &saved.subscriptions[i];
                let fresh = wanted(sub.queue.clone());
                if *sub == fresh {
                    return Ok(Subscribed {
                        queue: queue_of(&fresh.queue),
                        changed: false,
                    });
                }
                saved.subscriptions[i] = fresh.clone();
                (true, fresh.queue)
            }
            None => {
                let queue = format!("{QUEUE_PREFIX}{}", saved.next);
                saved.next += 1;
                saved.subscriptions.push(wanted(queue.clone()));
                (false, queue)
            }
        };
        self.save(&saved).await?;
        self.publish(&saved);
        Ok(Subscribed {
            queue: queue_of(&queue),
            changed,
        })
    }

    /// Removes subscription `name` of `client_id`; returns its hidden queue
    /// (to be emptied and deleted by the caller).
    pub(crate) async fn remove(
        &self,
        client_id: &str,
        name: &str,
    ) -> Result<Destination, DurableError> {
        let mut saved = self.saved.lock().await;
        let at = saved
            .subscriptions
            .iter()
            .position(|s| s.client_id == client_id && s.name == name)
            .ok_or_else(|| DurableError::NotFound {
                client_id: client_id.to_owned(),
                name: name.to_owned(),
            })?;
        let sub = saved.subscriptions.remove(at);
        self.save(&saved).await?;
        self.publish(&saved);
        Ok(queue_of(&sub.queue))
    }

    /// Claims `client_id` for a connection: `None` if another has it.
    pub(crate) fn claim(self: &Arc<Self>, client_id: &str) -> Option<ClientId> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients.insert(client_id.to_owned()).then(|| ClientId {
            id: client_id.to_owned(),
            durables: self.clone(),
        })
    }

    fn publish(&self, saved: &Saved) {
        let entries = saved
            .subscriptions
            .iter()
            .filter_map(|s| Entry::new(s.clone()).ok().map(Arc::new))
            .collect();
        self.entries.store(Arc::new(entries));
    }

    /// Writes the registry: a new file, synced, renamed over the old one.
    async fn save(&self, saved: &Saved) -> Result<(), DurableError> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        let bytes = serde_json::to_vec_pretty(saved).map_err(std::io::Error::other)?;
        tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .map_err(std::io::Error::other)??;
        Ok(())
    }
}

fn queue_of(name: &str) -> Destination {
    Destination {
        kind: Kind::Queue,
        name: name.to_owned(),
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("json.new");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// A connection's claim on its client id, given back when it ends.
#[derive(Debug)]
pub(crate) struct ClientId {
    pub(crate) id: String,
    durables: Arc<Durables>,
}

impl Drop for ClientId {
    fn drop(&mut self) {
        let mut clients = self
            .durables
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        clients.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(topic: &str, headers: &[(&str, &str)]) -> Message {
        Message {
            seq: 1,
            message_id: "ID:t-1".into(),
            destination: Destination::parse(topic).unwrap(),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body: Vec::new(),
            stored: false,
            sender: None,
            expires: 0,
            priority: 4,
            group: None,
            deliver_at: 0,
        }
    }

    #[tokio::test]
    async fn subscriptions_select_by_topic_and_selector_and_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let durables = Durables::load(Some(dir.path())).unwrap();
        let prices = Destination::parse("/topic/PRICES.>").unwrap();
        let a = durables
            .subscribe("app", "all", &prices, None)
            .await
            .unwrap();
        let b = durables
            .subscribe("app", "ibm", &prices, Some("symbol = 'IBM'"))
            .await
            .unwrap();
        assert_ne!(a.queue, b.queue);
        let ibm = message("/topic/PRICES.NYSE", &[("symbol", "IBM")]);
        assert_eq!(
            durables.copies(&ibm),
            vec![a.queue.clone(), b.queue.clone()]
        );
        let other = message("/topic/PRICES.NYSE", &[("symbol", "HPQ")]);
        assert_eq!(durables.copies(&other), vec![a.queue.clone()]);
        assert!(durables.copies(&message("/topic/ORDERS", &[])).is_empty());

        // The same again is the same subscription; another selector changes it.
        let again = durables
            .subscribe("app", "all", &prices, None)
            .await
            .unwrap();
        assert_eq!(
            (again.queue.clone(), again.changed),
            (a.queue.clone(), false)
        );
        let changed = durables
            .subscribe("app", "all", &prices, Some("symbol = 'HPQ'"))
            .await
            .unwrap();
        assert_eq!((changed.queue, changed.changed), (a.queue.clone(), true));

        let reloaded = Durables::load(Some(dir.path())).unwrap();
        assert_eq!(reloaded.list(), durables.list());
        assert_eq!(reloaded.remove("app", "ibm").await.unwrap(), b.queue);
        assert!(reloaded.remove("app", "ibm").await.is_err());
        // A new subscription never reuses a queue.
        let c = reloaded
            .subscribe("app", "ibm", &prices, None)
            .await
            .unwrap();
        assert!(c.queue != a.queue && c.queue != b.queue);
        assert_eq!(Durables::load(Some(dir.path())).unwrap().list().len(), 2);
    }

    #[test]
    fn a_client_id_is_held_by_one_connection_at_a_time() {
        let durables = Arc::new(Durables::load(None).unwrap());
        let first = durables.claim("app").unwrap();
        assert!(durables.claim("app").is_none());
        drop(first);
        assert!(durables.claim("app").is_some());
    }
}
