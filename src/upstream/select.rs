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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HealthCheckConfig, TargetSpec};
    use crate::metrics::Metrics;

    fn targets(n: u16, healthy: &[bool]) -> Vec<Arc<Target>> {
        let metrics = Metrics::new();
        (0..n)
            .map(|i| {
                let addr: SocketAddr = format!("127.0.0.{}:61614", i + 1).parse().unwrap();
                let t = Target::new(
                    TargetSpec::Addr(addr),
                    addr,
                    metrics.target("g", &addr.to_string(), &addr.to_string()),
                );
                let result = if healthy[usize::from(i)] {
                    Ok(())
                } else {
                    Err(crate::upstream::ProbeError::Timeout(
                        std::time::Duration::from_secs(1),
                    ))
                };
                t.record_check(result, &HealthCheckConfig::default());
                Arc::new(t)
            })
            .collect()
    }

    fn pick(
        ts: &[Arc<Target>],
        tried: &[Arc<Target>],
        algorithm: Algorithm,
        when: WhenAllUnhealthy,
        next: &AtomicUsize,
        client: &str,
    ) -> Option<SocketAddr> {
        choose(ts, tried, algorithm, when, next, client.parse().unwrap()).map(|t| t.addr)
    }

    #[test]
    fn flow_hash_maps_one_client_to_one_target_and_spreads_clients() {
        let ts = targets(3, &[true, true, true]);
        let next = AtomicUsize::new(0);
        let mut used = std::collections::HashSet::new();
        for port in 40000..40064 {
            let client = format!("192.0.2.7:{port}");
            let first = pick(
                &ts,
                &[],
                Algorithm::FlowHash,
                WhenAllUnhealthy::FailOpen,
                &next,
                &client,
            );
            for _ in 0..3 {
                assert_eq!(
                    pick(
                        &ts,
                        &[],
                        Algorithm::FlowHash,
                        WhenAllUnhealthy::FailOpen,
                        &next,
                        &client
                    ),
                    first
                );
            }
            used.insert(first.unwrap());
        }
        assert_eq!(used.len(), 3, "64 clients should reach all three targets");
    }

    #[test]
    fn unhealthy_and_tried_targets_are_skipped() {
        let ts = targets(3, &[true, false, true]);
        let next = AtomicUsize::new(0);
        for _ in 0..10 {
            let got = pick(
                &ts,
                &[],
                Algorithm::RoundRobin,
                WhenAllUnhealthy::Refuse,
                &next,
                "192.0.2.1:1",
            )
            .unwrap();
            assert_ne!(got, ts[1].addr);
        }
        let tried = [ts[0].clone(), ts[2].clone()];
        // Healthy ones tried: with fail_open the unhealthy one is the last resort.
        assert_eq!(
            pick(
                &ts,
                &tried,
                Algorithm::RoundRobin,
                WhenAllUnhealthy::FailOpen,
                &next,
                "192.0.2.1:1"
            ),
            Some(ts[1].addr)
        );
        assert_eq!(
            pick(
                &ts,
                &tried,
                Algorithm::RoundRobin,
                WhenAllUnhealthy::Refuse,
                &next,
                "192.0.2.1:1"
            ),
            None
        );
        let all = [ts[0].clone(), ts[1].clone(), ts[2].clone()];
        assert_eq!(
            pick(
                &ts,
                &all,
                Algorithm::RoundRobin,
                WhenAllUnhealthy::FailOpen,
                &next,
                "192.0.2.1:1"
            ),
            None
        );
    }

    #[test]
    fn least_connections_picks_the_least_loaded() {
        let ts = targets(2, &[true, true]);
        let next = AtomicUsize::new(0);
        let _held = [ts[0].track(), ts[0].track()];
        for _ in 0..4 {
            assert_eq!(
                pick(
                    &ts,
                    &[],
                    Algorithm::LeastConnections,
                    WhenAllUnhealthy::FailOpen,
                    &next,
                    "192.0.2.1:1"
                ),
                Some(ts[1].addr)
            );
        }
    }
}
