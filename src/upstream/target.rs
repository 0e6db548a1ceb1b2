//! One target address and its health.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

use super::ProbeError;
use crate::config::{HealthCheckConfig, TargetSpec};
use crate::metrics::TargetMetrics;

/// A target's health as its checks and connections found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Health {
    /// Not probed yet.
    Initial = 0,
    Healthy = 1,
    Unhealthy = 2,
}

impl Health {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Healthy,
            2 => Self::Unhealthy,
            _ => Self::Initial,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Initial => "initial",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
        }
    }
}

#[derive(Debug, Default)]
struct Detail {
    reason: String,
    /// Why the target last went down, kept while it recovers.
    cause: String,
    last_check: Option<SystemTime>,
    successes: u32,
    failures: u32,
}

/// A change of health, for the caller to log and act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Transition {
    pub(crate) from: Health,
    pub(crate) to: Health,
}

/// One address of a target group: a target written as `ip:port`, or one of
/// the addresses a hostname target resolved to.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) spec: TargetSpec,
    pub(crate) addr: SocketAddr,
    pub(crate) label: String,
    state: AtomicU8,
    draining: std::sync::atomic::AtomicBool,
    detail: Mutex<Detail>,
    active: AtomicUsize,
    pub(crate) metrics: TargetMetrics,
    /// Cancelled when a removed target's deregistration delay is over: its
    /// remaining connections close.
    pub(crate) deregistered: CancellationToken,
}

impl Target {
    pub(crate) fn new(spec: TargetSpec, addr: SocketAddr, metrics: TargetMetrics) -> Self {
        Self {
            label: spec.to_string(),
            spec,
            addr,
            state: AtomicU8::new(Health::Initial as u8),
            draining: Default::default(),
            detail: Mutex::new(Detail {
                reason: "not checked yet".into(),
                ..Detail::default()
            }),
            active: AtomicUsize::new(0),
            metrics,
            deregistered: CancellationToken::new(),
        }
    }

    pub(crate) fn health(&self) -> Health {
        Health::from_u8(self.state.load(Ordering::Acquire))
    }

    pub(crate) fn is_healthy(&self) -> bool {
        self.health() == Health::Healthy
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub(crate) fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub(crate) fn active_connections(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    pub(crate) fn reason(&self) -> String {
        self.detail().reason.clone()
    }

    pub(crate) fn last_check(&self) -> Option<SystemTime> {
        self.detail().last_check
    }

    fn detail(&self) -> std::sync::MutexGuard<'_, Detail> {
        // A poisoned lock only means a panic elsewhere; the data is plain.
        self.detail.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, to: Health) -> Option<Transition> {
        let from = Health::from_u8(self.state.swap(to as u8, Ordering::AcqRel));
        self.metrics.healthy.set(i64::from(to == Health::Healthy));
        (from != to).then_some(Transition { from, to })
    }

    /// Records an active health check. A target in `initial` is admitted on
    /// its first success; after a failure it needs the healthy threshold.
    pub(crate) fn record_check(
        &self,
        result: Result<(), ProbeError>,
        config: &HealthCheckConfig,
    ) -> Option<Transition> {
        let mut detail = self.detail();
        detail.last_check = Some(SystemTime::now());
        let current = self.health();
        match result {
            Ok(()) => {
                self.metrics.checks_ok.inc();
                detail.successes = detail.successes.saturating_add(1);
                detail.failures = 0;
                let admit = match current {
                    Health::Initial => true,
                    Health::Unhealthy => detail.successes >= config.healthy_threshold,
                    Health::Healthy => false,
                };
                if admit || current == Health::Healthy {
                    detail.reason = "health check passed".into();
                } else {
                    detail.reason = format!(
                        "{}; recovering: {} of {} checks passed",
                        detail.cause, detail.successes, config.healthy_threshold
                    );
                }
                admit.then(|| self.set(Health::Healthy)).flatten()
            }
            Err(why) => {
                self.metrics.checks_failed.inc();
                detail.failures = detail.failures.saturating_add(1);
                detail.successes = 0;
                let down = match current {
                    Health::Initial => true,
                    Health::Healthy => detail.failures >= config.unhealthy_threshold,
                    Health::Unhealthy => false,
                };
                detail.reason = format!("health check failed: {why}");
                detail.cause = detail.reason.clone();
                down.then(|| self.set(Health::Unhealthy)).flatten()
            }
        }
    }

    /// A passive check: connecting to the target failed, so it is taken out
    /// at once and needs the healthy threshold of checks to come back.
    pub(crate) fn mark_down(&self, why: &str) -> Option<Transition> {
        self.metrics.connect_failures.inc();
        let mut detail = self.detail();
        detail.successes = 0;
        detail.reason = format!("connection failed: {why}");
        detail.cause = detail.reason.clone();
        self.set(Health::Unhealthy)
    }

    /// Counts a connection to this target until the guard is dropped.
    pub(crate) fn track(self: &Arc<Self>) -> ConnectionGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.metrics.connections.inc();
        ConnectionGuard(self.clone())
    }
}

/// An open connection to a target.
#[derive(Debug)]
pub(crate) struct ConnectionGuard(Arc<Target>);

impl ConnectionGuard {
    pub(crate) fn target(&self) -> &Arc<Target> {
        &self.0
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
        self.0.metrics.connections.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn target() -> Target {
        let addr: SocketAddr = "127.0.0.1:61618".parse().unwrap();
        let metrics = Metrics::new().target("g", "t", "a");
        Target::new(TargetSpec::Addr(addr), addr, metrics)
    }

    fn config(healthy: u32, unhealthy: u32) -> HealthCheckConfig {
        HealthCheckConfig {
            healthy_threshold: healthy,
            unhealthy_threshold: unhealthy,
            ..HealthCheckConfig::default()
        }
    }

    fn refused() -> Result<(), ProbeError> {
        Err(ProbeError::Status {
            status: 503,
            path: "/refused".into(),
        })
    }

    #[test]
    fn initial_target_is_admitted_on_its_first_success() {
        let t = target();
        let change = t.record_check(Ok(()), &config(3, 3));
        assert_eq!(change.map(|c| c.to), Some(Health::Healthy));
    }

    #[test]
    fn after_a_failure_the_healthy_threshold_applies() {
        let t = target();
        let cfg = config(3, 2);
        assert_eq!(
            t.record_check(refused(), &cfg).map(|c| c.to),
            Some(Health::Unhealthy)
        );
        assert_eq!(t.record_check(Ok(()), &cfg), None);
        assert_eq!(t.record_check(Ok(()), &cfg), None);
        assert!(
            t.reason().contains("refused") && t.reason().contains("2 of 3"),
            "{}",
            t.reason()
        );
        assert_eq!(
            t.record_check(Ok(()), &cfg).map(|c| c.to),
            Some(Health::Healthy)
        );
    }

    #[test]
    fn a_healthy_target_goes_down_at_the_unhealthy_threshold() {
        let x = || Err(ProbeError::Timeout(std::time::Duration::from_secs(1)));
        let t = target();
        let cfg = config(2, 3);
        t.record_check(Ok(()), &cfg);
        assert_eq!(t.record_check(x(), &cfg), None);
        assert_eq!(t.record_check(x(), &cfg), None);
        assert!(t.is_healthy());
        assert_eq!(
            t.record_check(x(), &cfg).map(|c| c.to),
            Some(Health::Unhealthy)
        );
    }

    #[test]
    fn a_failed_connection_takes_the_target_out_at_once() {
        let t = target();
        let cfg = config(2, 2);
        t.record_check(Ok(()), &cfg);
        let change = t.mark_down("connection refused");
        assert_eq!(change.map(|c| c.to), Some(Health::Unhealthy));
        t.record_check(Ok(()), &cfg);
        assert!(
            t.reason()
                .starts_with("connection failed: connection refused"),
            "{}",
            t.reason()
        );
        assert_eq!(
            t.record_check(Ok(()), &cfg).map(|c| c.to),
            Some(Health::Healthy)
        );
    }
}
