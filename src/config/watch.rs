//! Watching the configuration for changes: the config file and every
//! certificate, key and CA file it names.
//!
//! Folders are watched, not files, because editors and Kubernetes replace
//! files (write-then-rename, a `..data` symlink swapped to a new folder)
//! rather than write them in place. But only events on the files the
//! configuration depends on count: a log written next to the config (or
//! anything else busy in its folder) must not keep a reload from settling.
//! A file counts by its own name and, when it is a symlink with a relative
//! target, by the first entry of that target in its folder (Kubernetes'
//! `portico.toml -> ..data/portico.toml`: the swap renames `..data`).

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};

use super::Config;

/// A file watch that calls back on every change to what the configuration
/// depends on.
pub struct ConfigWatcher {
    watcher: RecommendedWatcher,
    folders: BTreeSet<PathBuf>,
    /// Entries (folder joined with name) whose changes count, shared with
    /// the watcher's callback.
    relevant: Arc<Mutex<BTreeSet<PathBuf>>>,
}

impl std::fmt::Debug for ConfigWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigWatcher")
            .field("folders", &self.folders)
            .finish()
    }
}

impl ConfigWatcher {
    /// `changed` runs on the watcher's own thread: it must not block.
    pub fn new(changed: impl Fn() + Send + 'static) -> notify::Result<Self> {
        let relevant = Arc::new(Mutex::new(BTreeSet::new()));
        let watched = relevant.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
            // An error (such as a full event queue) may hide a change: reload.
            let counts = event.as_ref().map_or(true, |e| {
                is_change(e) && touches(e, &watched.lock().unwrap_or_else(|p| p.into_inner()))
            });
            if counts {
                changed();
            }
        })?;
        Ok(Self {
            watcher,
            folders: BTreeSet::new(),
            relevant,
        })
    }

    /// Watches exactly what `config` depends on.
    pub fn follow(&mut self, config: &Config) -> notify::Result<()> {
        let files: Vec<PathBuf> = std::iter::once(config.path.clone())
            .chain(config.files.iter().cloned())
            .map(|f| absolute(&f))
            .collect();
        let relevant: BTreeSet<PathBuf> = files.iter().flat_map(|f| entries_of(f)).collect();
        let wanted: BTreeSet<PathBuf> = files.iter().map(|f| folder_of(f)).collect();
        *self.relevant.lock().unwrap_or_else(|p| p.into_inner()) = relevant;
        for gone in self.folders.difference(&wanted) {
            let _ = self.watcher.unwatch(gone);
        }
        for new in wanted.difference(&self.folders) {
            self.watcher.watch(new, RecursiveMode::NonRecursive)?;
        }
        self.folders = wanted;
        Ok(())
    }
}

/// `path` made absolute against the working folder, symlinks left as they
/// are (the watcher reports paths under the folder as it was given).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

fn folder_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// The entries of `file`'s folder whose change can change what `file`
/// reads: the file itself and, for a symlink with a relative target, the
/// first entry that target passes through (`..data` of `..data/x.toml`).
fn entries_of(file: &Path) -> Vec<PathBuf> {
    let mut entries = vec![file.to_owned()];
    if let Ok(target) = std::fs::read_link(file) {
        if target.is_relative() {
            if let Some(Component::Normal(first)) = target.components().next() {
                entries.push(folder_of(file).join(first));
            }
        }
    }
    entries
}

/// Whether an event names one of the `relevant` entries (an event that
/// names no path at all may hide anything, so it counts).
fn touches(event: &Event, relevant: &BTreeSet<PathBuf>) -> bool {
    event.paths.is_empty() || event.paths.iter().any(|p| relevant.contains(p))
}

/// Reads (including our own) are not changes; everything else may be.
fn is_change(event: &Event) -> bool {
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kubernetes_symlink_counts_by_its_data_entry() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("..2026_12_01");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("portico.toml"), "").unwrap();
        std::os::unix::fs::symlink("..2026_12_01", dir.path().join("..data")).unwrap();
        let config = dir.path().join("portico.toml");
        std::os::unix::fs::symlink("..data/portico.toml", &config).unwrap();
        assert_eq!(
            entries_of(&config),
            [config.clone(), dir.path().join("..data")]
        );
        let event = |name: &str| Event::new(EventKind::Any).add_path(dir.path().join(name));
        let relevant: BTreeSet<PathBuf> = entries_of(&config).into_iter().collect();
        assert!(touches(&event("..data"), &relevant));
        assert!(touches(&event("portico.toml"), &relevant));
        assert!(!touches(&event("portico.log"), &relevant));
        assert!(!touches(&event("..data_tmp"), &relevant));
    }
}
