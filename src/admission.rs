//! Who a listener lets in: open connections per listener and per source
//! address, new connections per second per source, and TLS handshakes in
//! progress. Checked at accept, before any TLS work, so a client over a limit
//! costs one accept and one close.
//!
//! One `Admission` lives as long as its listener's accept loop, across
//! reloads, so connections admitted under an earlier configuration still
//! count; the limits themselves are read from the current configuration on
//! every accept.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::config::ListenerLimits;

/// Why a connection was closed at accept; a metric label and a log reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The listener has `max_connections` open.
    ListenerLimit,
    /// The source has `max_connections_per_source` open.
    SourceLimit,
    /// The source opened more than `new_connections_per_source` in a second.
    SourceRate,
    /// `max_handshakes` TLS handshakes are in progress.
    Handshakes,
    /// The source has `max_handshakes_per_source` TLS handshakes in progress.
    SourceHandshakes,
}

impl Refusal {
    /// Every reason, in the order of their metric slots.
    pub(crate) const ALL: [Self; 5] = [
        Self::ListenerLimit,
        Self::SourceLimit,
        Self::SourceRate,
        Self::Handshakes,
        Self::SourceHandshakes,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::ListenerLimit => "listener_limit",
            Self::SourceLimit => "source_limit",
            Self::SourceRate => "source_rate",
            Self::Handshakes => "handshakes",
            Self::SourceHandshakes => "source_handshakes",
        }
    }

    /// Its slot in [`crate::metrics::ListenerMetrics::over_limit`].
    pub(crate) fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// Sources tracked at most; past this, sources with nothing open and a full
/// rate bucket are forgotten first.
const MAX_SOURCES: usize = 65_536;

/// One listener's counts.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    open: u32,
    handshakes: u32,
    sources: HashMap<IpAddr, Source>,
}

/// A source's open connections and its token bucket of new connections.
#[derive(Debug)]
struct Source {
    open: u32,
    /// Of those, still in their TLS handshake.
    handshakes: u32,
    /// The rate its bucket was last filled at (0: none).
    rate: u32,
    tokens: f64,
    refilled: Instant,
}

impl Source {
    fn refill(&mut self, rate: u32, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(f64::from(rate));
        self.refilled = now;
    }

    /// Nothing open and nothing to remember about its rate.
    fn idle(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        let rate = f64::from(self.rate);
        self.open == 0 && (self.rate == 0 || self.tokens + elapsed * rate >= rate)
    }
}

impl Admission {
    /// Lets a connection from `source` in, or says why not. `tls`: the
    /// connection will make a handshake, which counts until
    /// [`Admitted::handshake_done`].
    pub(crate) fn admit(
        self: &Arc<Self>,
        source: IpAddr,
        limits: &ListenerLimits,
        tls: bool,
        now: Instant,
    ) -> Result<Admitted, Refusal> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.open >= limits.max_connections {
            return Err(Refusal::ListenerLimit);
        }
        if tls && state.handshakes >= limits.max_handshakes {
            return Err(Refusal::Handshakes);
        }
        let rate = limits.new_connections_per_source;
        if state.sources.len() >= MAX_SOURCES && !state.sources.contains_key(&source) {
            state.sources.retain(|_, s| !s.idle(now));
        }
        let entry = state.sources.entry(source).or_insert(Source {
            open: 0,
            handshakes: 0,
            rate,
            tokens: f64::from(rate),
            refilled: now,
        });
        entry.rate = rate;
        let per_source = limits.max_connections_per_source;
        if per_source > 0 && entry.open >= per_source {
            return Err(Refusal::SourceLimit);
        }
        let handshakes_per_source = limits.max_handshakes_per_source;
        if tls && handshakes_per_source > 0 && entry.handshakes >= handshakes_per_source {
            return Err(Refusal::SourceHandshakes);
        }
        if rate > 0 {
            entry.refill(rate, now);
            if entry.tokens < 1.0 {
                return Err(Refusal::SourceRate);
            }
            entry.tokens -= 1.0;
        }
        entry.open += 1;
        if tls {
            entry.handshakes += 1;
        }
        state.open += 1;
        if tls {
            state.handshakes += 1;
        }
        Ok(Admitted {
            admission: self.clone(),
            source,
            handshaking: tls,
        })
    }

    fn release(&self, source: IpAddr, handshaking: bool) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.open = state.open.saturating_sub(1);
        if handshaking {
            state.handshakes = state.handshakes.saturating_sub(1);
        }
        if let Some(entry) = state.sources.get_mut(&source) {
            entry.open = entry.open.saturating_sub(1);
            if handshaking {
                entry.handshakes = entry.handshakes.saturating_sub(1);
            }
            // A source with nothing open and no rate to remember is dropped
            // at once; a rate-limited one once its bucket is full again.
            if entry.idle(Instant::now()) {
                state.sources.remove(&source);
            }
        }
    }

    fn handshake_done(&self, source: IpAddr) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.handshakes = state.handshakes.saturating_sub(1);
        if let Some(entry) = state.sources.get_mut(&source) {
            entry.handshakes = entry.handshakes.saturating_sub(1);
        }
    }
}

/// An admitted connection; its counts are released when it is dropped.
#[derive(Debug)]
pub(crate) struct Admitted {
    admission: Arc<Admission>,
    source: IpAddr,
    handshaking: bool,
}

impl Admitted {
    /// The TLS handshake is over (either way): it no longer counts.
    pub(crate) fn handshake_done(&mut self) {
        if std::mem::take(&mut self.handshaking) {
            self.admission.handshake_done(self.source);
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.admission.release(self.source, self.handshaking);
    }
}

/// Logs at most one line per interval per listener, with how many events
/// it stood for, so a flood of refusals cannot flood the log.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(events this line stands for)` when a line may be written now.
    pub(crate) fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed) + 1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: u32, per_source: u32, rate: u32, handshakes: u32) -> ListenerLimits {
        ListenerLimits {
            max_connections: total,
            max_connections_per_source: per_source,
            new_connections_per_source: rate,
            max_handshakes: handshakes,
            max_handshakes_per_source: 0,
        }
    }

    #[test]
    fn each_limit_refuses_with_its_reason_and_frees_on_drop() {
        let a = Arc::new(Admission::default());
        let (x, y): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let now = Instant::now();
        let l = limits(3, 2, 0, 100);
        let first = a.admit(x, &l, false, now).unwrap();
        let _second = a.admit(x, &l, false, now).unwrap();
        assert_eq!(
            a.admit(x, &l, false, now).unwrap_err(),
            Refusal::SourceLimit
        );
        let _third = a.admit(y, &l, false, now).unwrap();
        assert_eq!(
            a.admit(y, &l, false, now).unwrap_err(),
            Refusal::ListenerLimit
        );
        drop(first);
        a.admit(x, &l, false, now).unwrap();
    }

    #[test]
    fn the_rate_refills_over_time() {
        let a = Arc::new(Admission::default());
        let x: IpAddr = "10.0.0.1".parse().unwrap();
        let start = Instant::now();
        let l = limits(100, 0, 5, 100);
        for _ in 0..5 {
            drop(a.admit(x, &l, false, start).unwrap());
        }
        assert_eq!(
            a.admit(x, &l, false, start).unwrap_err(),
            Refusal::SourceRate
        );
        // A fifth of a second later, one more.
        let later = start + Duration::from_millis(200);
        drop(a.admit(x, &l, false, later).unwrap());
        assert_eq!(
            a.admit(x, &l, false, later).unwrap_err(),
            Refusal::SourceRate
        );
    }

    #[test]
    fn handshakes_count_until_done() {
        let a = Arc::new(Admission::default());
        let x: IpAddr = "10.0.0.1".parse().unwrap();
        let now = Instant::now();
        let l = limits(100, 0, 0, 1);
        let mut first = a.admit(x, &l, true, now).unwrap();
        assert_eq!(a.admit(x, &l, true, now).unwrap_err(), Refusal::Handshakes);
        a.admit(x, &l, false, now).unwrap();
        first.handshake_done();
        let _second = a.admit(x, &l, true, now).unwrap();
        drop(first);
        assert_eq!(a.admit(x, &l, true, now).unwrap_err(), Refusal::Handshakes);
    }

    #[test]
    fn one_source_gets_its_share_of_handshakes() {
        let a = Arc::new(Admission::default());
        let (x, y): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let now = Instant::now();
        let l = ListenerLimits {
            max_handshakes_per_source: 2,
            ..limits(100, 0, 0, 100)
        };
        let mut first = a.admit(x, &l, true, now).unwrap();
        let _second = a.admit(x, &l, true, now).unwrap();
        assert_eq!(
            a.admit(x, &l, true, now).unwrap_err(),
            Refusal::SourceHandshakes
        );
        // Others handshake; the source may open plain connections.
        let _other = a.admit(y, &l, true, now).unwrap();
        a.admit(x, &l, false, now).unwrap();
        // A finished handshake frees its share.
        first.handshake_done();
        let _third = a.admit(x, &l, true, now).unwrap();
    }

    #[test]
    fn log_lines_are_limited_and_count_what_they_stand_for() {
        let mut limiter = LogLimiter::new(Duration::from_secs(1));
        let t = Instant::now();
        assert_eq!(limiter.allow(t), Some(1));
        for i in 1..=10 {
            assert_eq!(limiter.allow(t + Duration::from_millis(i * 50)), None);
        }
        assert_eq!(limiter.allow(t + Duration::from_secs(1)), Some(11));
    }
}
