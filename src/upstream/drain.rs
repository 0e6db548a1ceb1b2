//! Draining: a target taken out of service (by a reload or by DNS) gets no
//! new connections; its open ones run on for the group's deregistration
//! delay and are then closed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use super::target::Target;
use super::TargetView;
use crate::metrics::Metrics;

/// How often a draining target's connections are counted.
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct Entry {
    group: String,
    target: Arc<Target>,
    why: String,
    until: SystemTime,
}

/// The targets being drained, shown in `/targets` until they are done.
#[derive(Debug)]
pub(crate) struct Drains {
    entries: Mutex<Vec<Entry>>,
    metrics: Arc<Metrics>,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Drains {
    pub(crate) fn new(
        metrics: Arc<Metrics>,
        tasks: TaskTracker,
        stop: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            entries: Mutex::new(Vec::new()),
            metrics,
            tasks,
            stop,
        })
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `target` out of service: it drains for `delay`.
    pub(crate) fn retire(
        self: &Arc<Self>,
        group: &str,
        target: &Arc<Target>,
        delay: Duration,
        why: &str,
    ) {
        if target.is_draining() {
            return;
        }
        target.set_draining();
        info!(
            group = %group,
            target = %target.label,
            address = %target.addr,
            connections = target.active_connections(),
            delay = ?delay,
            "target draining: {why}"
        );
        self.metrics
            .remove_target(group, &target.label, &target.addr.to_string());
        self.entries().push(Entry {
            group: group.to_owned(),
            target: target.clone(),
            why: why.to_owned(),
            until: SystemTime::now() + delay,
        });
        let (drains, group, target) = (self.clone(), group.to_owned(), target.clone());
        self.tasks.spawn(async move {
            let deadline = Instant::now() + delay;
            while target.active_connections() > 0 {
                if Instant::now() >= deadline && !target.deregistered.is_cancelled() {
                    info!(
                        group = %group,
                        target = %target.label,
                        address = %target.addr,
                        connections = target.active_connections(),
                        "deregistration delay over; closing the target's connections"
                    );
                    target.deregistered.cancel();
                }
                tokio::select! {
                    _ = drains.stop.cancelled() => break,
                    _ = tokio::time::sleep(POLL) => {}
                }
            }
            drains
                .entries()
                .retain(|e| !Arc::ptr_eq(&e.target, &target));
        });
    }

    /// The draining targets, as `/targets` shows them.
    pub(crate) fn view(&self) -> Vec<TargetView> {
        self.entries()
            .iter()
            .map(|e| TargetView {
                group: e.group.clone(),
                target: e.target.label.clone(),
                address: e.target.addr.to_string(),
                state: "draining",
                reason: format!(
                    "{}; open connections close at {}",
                    e.why,
                    super::rfc3339(e.until)
                ),
                active_connections: e.target.active_connections(),
                last_check: e.target.last_check().map(super::rfc3339),
            })
            .collect()
    }
}
