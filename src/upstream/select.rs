//! Choosing a target for a new connection.

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::target::Target;
use crate::config::{Algorithm, WhenAllUnhealthy};

/// Picks a target among the healthy ones not yet `tried`; with none and
/// `fail_open`, among all not yet tried. Allocates nothing.
pub(crate) fn choose(
    targets: &[Arc<Target>],
    tried: &[Arc<Target>],
    algorithm: Algorithm,
    when_all_unhealthy: WhenAllUnhealthy,
    next: &AtomicUsize,
    client: SocketAddr,
) -> Option<Arc<Target>> {
    let untried = |t: &&Arc<Target>| !t.is_draining() && !tried.iter().any(|x| Arc::ptr_eq(x, t));
    let healthy = |t: &&Arc<Target>| untried(t) && t.is_healthy();
    let mut count = targets.iter().filter(healthy).count();
    let healthy_only = count > 0;
    if !healthy_only {
        if when_all_unhealthy == WhenAllUnhealthy::Refuse {
            return None;
        }
        count = targets.iter().filter(untried).count();
        if count == 0 {
            return None;
        }
    }
    let eligible = |t: &&Arc<Target>| if healthy_only { healthy(t) } else { untried(t) };
    let nth = |n: usize| targets.iter().filter(eligible).nth(n).cloned();
    match algorithm {
        Algorithm::RoundRobin => nth(next.fetch_add(1, Ordering::Relaxed) % count),
        Algorithm::FlowHash => {
            let mut hasher = std::hash::DefaultHasher::new();
            client.hash(&mut hasher);
            nth((hasher.finish() % count as u64) as usize)
        }
        Algorithm::LeastConnections => {
            // Ties go round robin, so equal targets share new connections.
            let start = next.fetch_add(1, Ordering::Relaxed) % count;
            targets
                .iter()
                .filter(eligible)
                .enumerate()
                .min_by_key(|(i, t)| (t.active_connections(), (i + count - start) % count))
                .map(|(_, t)| t.clone())
        }
    }
}
