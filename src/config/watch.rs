//! Watching the configuration for changes: the folders of the config file
//! and of every certificate, key and CA file it names.
//!
//! Folders are watched, not files, because editors and Kubernetes replace
//! files (write-then-rename, a `..data` symlink swapped to a new folder)
//! rather than write them in place.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};

use super::Config;

/// A file watch that calls back on every change in the watched folders.
pub struct ConfigWatcher {
    watcher: RecommendedWatcher,
    folders: BTreeSet<PathBuf>,
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
        let watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
            // An error (such as a full event queue) may hide a change: reload.
            if event.as_ref().map_or(true, is_change) {
                changed();
            }
        })?;
        Ok(Self {
            watcher,
            folders: BTreeSet::new(),
        })
    }

    /// Watches exactly the folders `config` depends on.
    pub fn follow(&mut self, config: &Config) -> notify::Result<()> {
        let wanted: BTreeSet<PathBuf> = std::iter::once(config.path.as_path())
            .chain(config.files.iter().map(PathBuf::as_path))
            .map(folder_of)
            .collect();
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

fn folder_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Reads (including our own) are not changes; everything else may be.
fn is_change(event: &Event) -> bool {
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}
