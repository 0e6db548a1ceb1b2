//! Active/standby over shared storage: of the nodes that name one
//! `data_dir`, the one holding its lock is active; the others wait, with
//! no port open, until they can take it.
//!
//! Two mechanisms together:
//! - an OS lock (`flock`) on `DATA_DIR/lock`, which the kernel releases
//!   however the holder dies (SIGKILL included);
//! - a lease, `DATA_DIR/lease`, that the active node rewrites every
//!   `lease_renew`. A standby that gets the OS lock takes over once the
//!   lease has stopped changing for `takeover_after` (so storage without
//!   coherent locks cannot give two nodes the lock); a standby that cannot
//!   get the OS lock breaks it only after the lease has stopped changing for
//!   `lease_timeout` (a dead holder's lock lingering on shared storage).
//!
//! Staleness is judged by the waiting node's own clock (how long since it
//! last saw the lease change), so the nodes' clocks need not agree. An
//! active node that finds another node's name in the lease has been
//! replaced: it reports the lock lost and must stop.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Timings of the lock and lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HaSettings {
    pub lease_renew: Duration,
    pub takeover_after: Duration,
    pub lease_timeout: Duration,
    /// How often a standby looks.
    pub poll: Duration,
}

impl Default for HaSettings {
    fn default() -> Self {
        Self {
            lease_renew: Duration::from_millis(200),
            takeover_after: Duration::from_millis(500),
            lease_timeout: Duration::from_secs(5),
            poll: Duration::from_millis(50),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("stopped while waiting for the lock")]
    Cancelled,
}

/// The lock of an active node. Dropping it stops renewing the lease.
#[derive(Debug)]
pub struct ActiveLock {
    /// Cancelled if another node took the lease: this node must stop.
    pub lost: CancellationToken,
    stop: CancellationToken,
    renewer: Option<tokio::task::JoinHandle<()>>,
    _file: Option<File>,
}

impl ActiveLock {
    /// Hands the lock over at once: the lease is removed (a standby need
    /// not wait for it to go stale) and the OS lock released.
    pub async fn release(mut self) {
        self.stop.cancel();
        if let Some(renewer) = self.renewer.take() {
            let _ = renewer.await;
        }
    }
}

impl Drop for ActiveLock {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HaError + '_ {
    move |source| HaError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A name for this node in the lease: host, process and a random part.
fn node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    let random = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{host}-{}-{random:08x}", std::process::id())
}

struct Lease {
    path: PathBuf,
    tmp: PathBuf,
}

impl Lease {
    fn read(&self) -> Option<String> {
        std::fs::read_to_string(&self.path).ok()
    }

    fn holder(text: &str) -> Option<&str> {
        text.lines().find_map(|l| l.strip_prefix("holder "))
    }

    fn write(&self, holder: &str, counter: u64) -> std::io::Result<()> {
        let mut f = File::create(&self.tmp)?;
        write!(f, "holder {holder}\ncounter {counter}\n")?;
        f.sync_data()?;
        std::fs::rename(&self.tmp, &self.path)
    }
}

/// Waits until this node may be active in `data_dir`, then holds the lock
/// and renews the lease until the returned lock is dropped.
pub async fn acquire(
    data_dir: &Path,
    settings: HaSettings,
    cancel: &CancellationToken,
) -> Result<ActiveLock, HaError> {
    std::fs::create_dir_all(data_dir).map_err(io(data_dir))?;
    let lock_path = data_dir.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock_path)
        .map_err(io(&lock_path))?;
    let lease = Lease {
        path: data_dir.join("lease"),
        tmp: data_dir.join(format!("lease.{}.tmp", std::process::id())),
    };
    let me = node_id();
    let mut seen = lease.read();
    let mut changed_at = Instant::now();
    let mut announced = false;
    let mut have_flock = false;
    loop {
        let now = Instant::now();
        let current = lease.read();
        if current != seen {
            seen = current.clone();
            changed_at = now;
        }
        let still = now - changed_at;
        if !have_flock {
            have_flock = match file.try_lock() {
                Ok(()) => true,
                Err(TryLockError::WouldBlock) => false,
                Err(TryLockError::Error(e)) => {
                    warn!(path = %lock_path.display(), error = %e, "cannot lock; relying on the lease");
                    false
                }
            };
        }
        let foreign = current
            .as_deref()
            .and_then(Lease::holder)
            .is_some_and(|h| h != me);
        let take = if have_flock {
            !foreign || still >= settings.takeover_after
        } else if foreign && still >= settings.lease_timeout {
            warn!(
                data_dir = %data_dir.display(),
                "the lock is held but its lease has not been renewed for {:?}: breaking it",
                still
            );
            true
        } else {
            false
        };
        if take {
            lease.write(&me, 0).map_err(io(&lease.path))?;
            info!(data_dir = %data_dir.display(), node = %me, role = "active", "took the data_dir lock");
            let lost = CancellationToken::new();
            let stop = CancellationToken::new();
            let renewer = tokio::spawn(renew(lease, me, settings, lost.clone(), stop.clone()));
            return Ok(ActiveLock {
                lost,
                stop,
                renewer: Some(renewer),
                _file: have_flock.then_some(file),
            });
        }
        if !announced {
            info!(data_dir = %data_dir.display(), role = "standby", "another node holds the data_dir lock; waiting with no port open");
            announced = true;
        }
        tokio::select! {
            _ = cancel.cancelled() => return Err(HaError::Cancelled),
            _ = tokio::time::sleep(settings.poll) => {}
        }
    }
}

async fn renew(
    lease: Lease,
    me: String,
    settings: HaSettings,
    lost: CancellationToken,
    stop: CancellationToken,
) {
    let mut counter = 0u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                // Stepping down: a lease still ours is removed.
                if lease.read().as_deref().and_then(Lease::holder) == Some(me.as_str()) {
                    let _ = std::fs::remove_file(&lease.path);
                }
                return;
            }
            _ = tokio::time::sleep(settings.lease_renew) => {}
        }
        if let Some(text) = lease.read() {
            if Lease::holder(&text).is_some_and(|h| h != me) {
                error!(node = %me, "another node took over the data_dir lease: this node must stop");
                lost.cancel();
                return;
            }
        }
        counter += 1;
        if let Err(e) = lease.write(&me, counter) {
            warn!(error = %e, "cannot renew the data_dir lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> HaSettings {
        HaSettings {
            lease_renew: Duration::from_millis(50),
            takeover_after: Duration::from_millis(200),
            lease_timeout: Duration::from_millis(800),
            poll: Duration::from_millis(20),
        }
    }

    #[tokio::test]
    async fn a_second_node_waits_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let cancel = CancellationToken::new();
        let first = acquire(dir.path(), fast(), &cancel).await.unwrap();
        let path = dir.path().to_owned();
        let mut second =
            tokio::spawn(async move { acquire(&path, fast(), &CancellationToken::new()).await });
        let waited = tokio::time::timeout(Duration::from_millis(500), &mut second).await;
        assert!(
            waited.is_err(),
            "the standby took the lock from a live active node"
        );
        // Dropped: the lease renewal stops and the OS lock goes with the file.
        drop(first);
        let lock = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(!lock.lost.is_cancelled());
    }

    #[tokio::test]
    async fn a_released_lock_is_taken_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let first = acquire(dir.path(), fast(), &CancellationToken::new())
            .await
            .unwrap();
        let path = dir.path().to_owned();
        let mut second =
            tokio::spawn(async move { acquire(&path, fast(), &CancellationToken::new()).await });
        let waited = tokio::time::timeout(Duration::from_millis(100), &mut second).await;
        assert!(waited.is_err(), "the standby took a held lock");
        let released = Instant::now();
        first.release().await;
        let _lock = second.await.unwrap().unwrap();
        assert!(
            released.elapsed() < fast().takeover_after,
            "took {:?}",
            released.elapsed()
        );
    }

    #[tokio::test]
    async fn a_lingering_lock_is_broken_only_after_its_lease_expires() {
        let dir = tempfile::tempdir().unwrap();
        // A dead holder on shared storage: its lock lingers (held here by an
        // open file the test keeps locked) and its lease stops changing.
        let lingering = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.path().join("lock"))
            .unwrap();
        lingering.lock().unwrap();
        std::fs::write(dir.path().join("lease"), "holder dead-node\ncounter 7\n").unwrap();
        let started = Instant::now();
        let lock = acquire(dir.path(), fast(), &CancellationToken::new())
            .await
            .unwrap();
        assert!(
            started.elapsed() >= fast().lease_timeout,
            "broken after {:?}",
            started.elapsed()
        );
        let lease = std::fs::read_to_string(dir.path().join("lease")).unwrap();
        assert!(!lease.contains("dead-node"));
        drop(lock);
    }

    #[tokio::test]
    async fn an_active_node_whose_lease_was_taken_learns_it_lost() {
        let dir = tempfile::tempdir().unwrap();
        let lock = acquire(dir.path(), fast(), &CancellationToken::new())
            .await
            .unwrap();
        std::fs::write(dir.path().join("lease"), "holder usurper\ncounter 1\n").unwrap();
        tokio::time::timeout(Duration::from_secs(5), lock.lost.cancelled())
            .await
            .expect("the active node did not notice");
    }
}
