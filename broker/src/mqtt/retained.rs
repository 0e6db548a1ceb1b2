//! Retained messages: the last message published with RETAIN to each
//! topic, given to every new subscriber whose filter matches it. Each is a
//! file of its own under `DATA_DIR/retained/` (its name the topic in hex;
//! a QoS byte, then the payload), written and synced before the PUBLISH
//! is answered, so it holds across a restart or a failover of a pair. An
//! empty payload clears it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tracing::warn;

use super::QoS;
use crate::router::{Destination, Filter, Kind};

/// Topics with a retained message, at most.
pub const MAX_RETAINED: usize = 10_000;
/// Bytes of retained payloads, in all, at most.
pub const MAX_RETAINED_BYTES: usize = 64 * 1024 * 1024;

/// One retained message: its topic (ActiveMQ's name), QoS and payload.
#[derive(Debug)]
pub struct RetainedMessage {
    pub topic: String,
    pub qos: QoS,
    pub payload: Vec<u8>,
}

#[derive(Debug, Default)]
pub struct Retained {
    dir: Option<PathBuf>,
    messages: Mutex<BTreeMap<String, Arc<RetainedMessage>>>,
    /// Bytes of their payloads, in all.
    bytes: AtomicUsize,
    /// Changes one at a time, so the files end as the map does.
    writing: tokio::sync::Mutex<()>,
}

fn hex(name: &str) -> String {
    name.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(name: &str) -> Option<String> {
    if !name.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..name.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(name.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

impl Retained {
    /// What `dir` holds (nothing, for a broker without a data directory).
    /// A file that cannot be read is skipped, with a warning.
    pub fn load(dir: Option<&Path>) -> Self {
        let store = Self {
            dir: dir.map(Path::to_path_buf),
            ..Self::default()
        };
        let Some(dir) = dir else {
            return store;
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return store;
        };
        let mut messages = BTreeMap::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(topic) = unhex(&name) else {
                continue;
            };
            match std::fs::read(entry.path()) {
                Ok(bytes) if !bytes.is_empty() => {
                    let qos = if bytes[0] == 0 {
                        QoS::AtMostOnce
                    } else {
                        QoS::AtLeastOnce
                    };
                    messages.insert(
                        topic.clone(),
                        Arc::new(RetainedMessage {
                            topic,
                            qos,
                            payload: bytes[1..].to_vec(),
                        }),
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(file = %entry.path().display(), error = %e, "a retained message cannot be read")
                }
            }
        }
        let bytes = messages.values().map(|m| m.payload.len()).sum();
        store.bytes.store(bytes, Ordering::Relaxed);
        *store.messages.lock().unwrap_or_else(|p| p.into_inner()) = messages;
        store
    }

    /// Retains `payload` for `topic` (replacing what it had), or clears it
    /// when `payload` is empty; on disk before it returns.
    pub async fn set(&self, topic: &str, qos: QoS, payload: &[u8]) -> Result<(), String> {
        let _one_at_a_time = self.writing.lock().await;
        {
            let messages = self.messages.lock().unwrap_or_else(|p| p.into_inner());
            if !payload.is_empty() {
                let replaced = messages.get(topic).map_or(0, |m| m.payload.len());
                let held = self.bytes.load(Ordering::Relaxed) - replaced;
                if held + payload.len() > MAX_RETAINED_BYTES {
                    return Err(format!(
                        "retained messages would take over {MAX_RETAINED_BYTES} bytes"
                    ));
                }
                if !messages.contains_key(topic) && messages.len() >= MAX_RETAINED {
                    return Err(format!(
                        "{MAX_RETAINED} topics already have a retained message"
                    ));
                }
            }
        }
        if let Some(dir) = &self.dir {
            let (dir, name) = (dir.clone(), hex(topic));
            let mut bytes = Vec::with_capacity(payload.len() + 1);
            bytes.push(qos as u8);
            bytes.extend_from_slice(payload);
            let clear = payload.is_empty();
            tokio::task::spawn_blocking(move || write(&dir, &name, &bytes, clear))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("the retained message cannot be stored: {e}"))?;
        }
        let mut messages = self.messages.lock().unwrap_or_else(|p| p.into_inner());
        let old = if payload.is_empty() {
            messages.remove(topic)
        } else {
            self.bytes.fetch_add(payload.len(), Ordering::Relaxed);
            messages.insert(
                topic.to_owned(),
                Arc::new(RetainedMessage {
                    topic: topic.to_owned(),
                    qos,
                    payload: payload.to_vec(),
                }),
            )
        };
        if let Some(old) = old {
            self.bytes.fetch_sub(old.payload.len(), Ordering::Relaxed);
        }
        Ok(())
    }

    /// The retained messages of the topics `filter` matches.
    pub fn matching(&self, filter: &Filter) -> Vec<Arc<RetainedMessage>> {
        self.messages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|m| {
                filter.matches(&Destination {
                    kind: Kind::Topic,
                    name: m.topic.clone(),
                })
            })
            .cloned()
            .collect()
    }
}

/// Writes (or, `clear`, removes) one retained message's file, synced.
fn write(dir: &Path, name: &str, bytes: &[u8], clear: bool) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    if clear {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
    } else {
        let tmp = dir.join(format!("{name}.new"));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
    }
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn retained_messages_are_replaced_cleared_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Retained::load(Some(dir.path()));
        store
            .set("sensors.hall.temp", QoS::AtLeastOnce, b"21")
            .await
            .unwrap();
        store
            .set("sensors.hall.temp", QoS::AtLeastOnce, b"22")
            .await
            .unwrap();
        store
            .set("sensors.roof.temp", QoS::AtMostOnce, b"19")
            .await
            .unwrap();
        store.set("other", QoS::AtMostOnce, b"x").await.unwrap();
        store.set("other", QoS::AtMostOnce, b"").await.unwrap();
        let reloaded = Retained::load(Some(dir.path()));
        let filter = Filter::parse("topic://sensors.*.temp").unwrap();
        let got: Vec<(String, Vec<u8>)> = reloaded
            .matching(&filter)
            .iter()
            .map(|m| (m.topic.clone(), m.payload.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("sensors.hall.temp".to_owned(), b"22".to_vec()),
                ("sensors.roof.temp".to_owned(), b"19".to_vec())
            ]
        );
        assert!(reloaded
            .matching(&Filter::parse("topic://other").unwrap())
            .is_empty());
        assert_eq!(unhex(&hex("a.b/ü")), Some("a.b/ü".to_owned()));
        // 22 (replacing 21) and 19 are held; "other" was cleared.
        assert_eq!(reloaded.bytes.load(Ordering::Relaxed), 4);
        assert_eq!(store.bytes.load(Ordering::Relaxed), 4);
    }
}
