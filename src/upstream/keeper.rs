//! The one writer of a group's targets. Health results, failed connections
//! and new resolutions arrive as events and are applied here in order: the
//! target list, each target's health, the pairs and the log lines about
//! them change in one place, whoever noticed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::health::{self, ProbeError};
use super::target::{Health, Target, Transition};
use super::TargetGroup;
use crate::config::TargetSpec;

/// Room for events waiting on the keeper; checkers and discovery wait for
/// room, a failed client connection does not (its event is dropped, and the
/// next failure reports it again).
pub(super) const QUEUE: usize = 256;

/// Something the keeper applies.
#[derive(Debug)]
pub(crate) enum Event {
    /// An active health check finished.
    Checked {
        target: Arc<Target>,
        result: Result<(), ProbeError>,
    },
    /// Connecting a client to the target failed (a passive check).
    ConnectFailed { target: Arc<Target>, error: String },
    /// The hostname targets resolved to these addresses.
    Resolved(HashMap<TargetSpec, Vec<SocketAddr>>),
}

/// Applies the group's events until the group is replaced or stopped.
pub(super) async fn run(group: Arc<TargetGroup>, mut events: mpsc::Receiver<Event>) {
    loop {
        let event = tokio::select! {
            biased;
            _ = group.cancel.cancelled() => return,
            event = events.recv() => match event {
                Some(event) => event,
                None => return,
            },
        };
        group.apply(event);
    }
}

impl TargetGroup {
    fn apply(self: &Arc<Self>, event: Event) {
        match event {
            Event::Checked { target, result } => {
                if !self.owns(&target) {
                    return;
                }
                if let Some(change) = target.record_check(result, &self.config.health_check) {
                    self.health_changed(&target, change);
                }
            }
            Event::ConnectFailed { target, error } => {
                if !self.owns(&target) {
                    debug!(group = %self.config.name, target = %target.label, "failed connection to a target no longer served");
                    return;
                }
                if let Some(change) = target.mark_down(&error) {
                    self.health_changed(&target, change);
                }
            }
            Event::Resolved(resolved) => self.set_resolved(resolved),
        }
    }

    /// Whether `target` is one of this group's (and not draining).
    fn owns(&self, target: &Arc<Target>) -> bool {
        !target.is_draining() && self.targets().iter().any(|t| Arc::ptr_eq(t, target))
    }

    /// Applies a new resolution of the hostname targets: new addresses
    /// become targets (checked from now on), vanished ones drain.
    fn set_resolved(self: &Arc<Self>, resolved: HashMap<TargetSpec, Vec<SocketAddr>>) {
        let current = self.targets();
        let list = self.assemble(&resolved, &current);
        for target in &list {
            if !current.iter().any(|t| Arc::ptr_eq(t, target)) {
                self.tasks.spawn(health::run(self.clone(), target.clone()));
            }
        }
        for old in current.iter() {
            if !list.iter().any(|t| Arc::ptr_eq(t, old)) {
                self.drains.retire(
                    &self.config.name,
                    old,
                    self.config.deregistration_delay,
                    "its hostname no longer resolves to this address",
                );
            }
        }
        self.targets.store(Arc::new(list));
        *self.resolved() = resolved;
    }

    /// Logs a health transition (named as `/targets` names states: the
    /// down node of a pair whose partner serves is `standby`) and
    /// re-evaluates the pairs.
    fn health_changed(&self, target: &Target, change: Transition) {
        let reason = target.reason();
        let targets = self.targets();
        let from = self.shown_state(&targets, target, change.from);
        let to = self.shown_state(&targets, target, change.to);
        if from != to {
            info!(
                group = %self.config.name,
                target = %target.label,
                address = %target.addr,
                from,
                to,
                reason = %reason,
                "target health changed"
            );
        }
        self.evaluate_pairs();
    }

    fn evaluate_pairs(&self) {
        if self.pairs.is_empty() {
            return;
        }
        let targets = self.targets();
        for pair in &self.pairs {
            let members: Vec<Option<bool>> = pair
                .members
                .iter()
                .map(|spec| {
                    let of_spec: Vec<_> = targets.iter().filter(|t| t.spec == *spec).collect();
                    if of_spec.iter().any(|t| t.is_healthy()) {
                        Some(true)
                    } else if of_spec.is_empty()
                        || of_spec.iter().any(|t| t.health() == Health::Initial)
                    {
                        None
                    } else {
                        Some(false)
                    }
                })
                .collect();
            let active = members.iter().filter(|m| **m == Some(true)).count() as u8;
            let known = members.iter().all(Option::is_some);
            if !known && active < 2 {
                continue;
            }
            pair.active_nodes.set(i64::from(active));
            if pair.last.swap(active, Ordering::AcqRel) == active {
                continue;
            }
            match active {
                1 => {
                    let node = pair.members[usize::from(members[0] != Some(true))].to_string();
                    info!(group = %self.config.name, pair = %pair.label, active = %node, "pair has one active node");
                }
                0 => {
                    warn!(group = %self.config.name, pair = %pair.label, "pair has no active node")
                }
                _ => {
                    warn!(group = %self.config.name, pair = %pair.label, "pair has two active nodes")
                }
            }
        }
    }
}
