//! Password checks, as clients and the console need them: off the async
//! workers (argon2 is slow and large on purpose), a few at a time, and
//! slowed down for whoever keeps getting them wrong.
//!
//! - Checks run on a few threads of their own, one per core but one (each
//!   argon2 check holds about 19 MiB, and a core is left for everyone
//!   else); others wait their turn in a bounded queue without costing
//!   memory. Fixed threads, not a growing pool: the memory each check
//!   leaves with its thread's allocator is held by that many threads only.
//! - After [`FREE_FAILURES`] wrong passwords for one user from one
//!   address, that pair must wait before it may try again: 1 s, doubling
//!   to [`MAX_BACKOFF`]; a right password clears it. The table of failures
//!   is bounded.
//! - An unknown user costs the same check as a known one (see
//!   [`Auth::authenticate`]), so user names cannot be told by timing.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::auth::{Auth, Principal};

/// Wrong passwords a user may give from one address before waiting.
pub const FREE_FAILURES: u32 = 3;
/// The longest wait after repeated failures.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Addresses (with users) whose failures are remembered.
const TRACKED: usize = 10_000;
/// Failures older than this are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// Why a login was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("wrong user or password")]
    Wrong,
    #[error("too many failed logins for this user from this address: try again in {} s", .retry_after.as_secs().max(1))]
    Backoff { retry_after: Duration },
    #[error("the broker is stopping")]
    Stopping,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

impl Failures {
    /// Until when this pair must wait, if it must.
    fn wait_until(&self) -> Option<Instant> {
        let over = self.count.checked_sub(FREE_FAILURES)?;
        let wait = Duration::from_secs(1)
            .saturating_mul(1u32 << over.min(16))
            .min(MAX_BACKOFF);
        Some(self.last + wait)
    }
}

/// One password check for a checking thread.
struct Check {
    login: Option<String>,
    passcode: Option<String>,
    reply: oneshot::Sender<Option<Principal>>,
}

/// Checks waiting for a thread.
const QUEUED_CHECKS: usize = 1024;

/// The broker's password checks.
#[derive(Debug)]
pub struct Logins {
    auth: Arc<Auth>,
    checks: mpsc::Sender<Check>,
    failures: Mutex<HashMap<(IpAddr, u64), Failures>>,
}

impl Logins {
    pub fn new(auth: Arc<Auth>) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let (checks, queue) = mpsc::channel::<Check>(QUEUED_CHECKS);
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..cores.saturating_sub(1).max(1) {
            let (auth, queue) = (auth.clone(), queue.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("password-check-{i}"))
                .spawn(move || {
                    // argon2's working memory, this thread's for good.
                    let mut memory = Vec::new();
                    loop {
                        // One thread takes the next check; the others wait.
                        let next = queue
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .blocking_recv();
                        let Some(check) = next else {
                            return;
                        };
                        let principal = auth.authenticate_with(
                            check.login.as_deref(),
                            check.passcode.as_deref(),
                            &mut memory,
                        );
                        let _ = check.reply.send(principal);
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password-check thread");
            }
        }
        Self {
            auth,
            checks,
            failures: Mutex::new(HashMap::new()),
        }
    }

    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<(IpAddr, u64), Failures>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks `login`/`passcode` for a client at `source`.
    pub async fn check(
        &self,
        source: IpAddr,
        login: Option<&str>,
        passcode: Option<&str>,
    ) -> Result<Principal, Refusal> {
        let key = (source, user_key(login));
        if let Some(until) = self.failures().get(&key).and_then(Failures::wait_until) {
            let now = Instant::now();
            if until > now {
                return Err(Refusal::Backoff {
                    retry_after: until - now,
                });
            }
        }
        let checked = if self.auth.has_users() {
            let (reply, answer) = oneshot::channel();
            let check = Check {
                login: login.map(str::to_owned),
                passcode: passcode.map(str::to_owned),
                reply,
            };
            self.checks
                .send(check)
                .await
                .map_err(|_| Refusal::Stopping)?;
            answer.await.map_err(|_| Refusal::Stopping)?
        } else {
            self.auth.authenticate(login, passcode)
        };
        match checked {
            Some(principal) => {
                self.failures().remove(&key);
                Ok(principal)
            }
            None => {
                self.failed(key);
                Err(Refusal::Wrong)
            }
        }
    }

    fn failed(&self, key: (IpAddr, u64)) {
        let now = Instant::now();
        let mut failures = self.failures();
        if failures.len() >= TRACKED && !failures.contains_key(&key) {
            failures.retain(|_, f| now.duration_since(f.last) < FORGET_AFTER);
            if failures.len() >= TRACKED {
                // Still full: the stalest goes.
                if let Some(stalest) = failures.iter().min_by_key(|(_, f)| f.last).map(|(k, _)| *k)
                {
                    failures.remove(&stalest);
                }
            }
        }
        let entry = failures.entry(key).or_insert(Failures {
            count: 0,
            last: now,
        });
        if now.duration_since(entry.last) >= FORGET_AFTER {
            entry.count = 0;
        }
        entry.count += 1;
        entry.last = now;
    }
}

/// A user name as the failure table keys it (a hash: names a client makes
/// up cost the table nothing).
fn user_key(login: Option<&str>) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    login.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Secret;
    use crate::config::UserConfig;

    fn logins() -> Logins {
        let users = vec![UserConfig {
            name: "app".into(),
            secret: Secret::plain("right".into()),
            groups: Vec::new(),
            bridge: false,
        }];
        Logins::new(Arc::new(Auth::new(users, Vec::new())))
    }

    #[tokio::test(start_paused = true)]
    async fn repeated_failures_back_off_per_user_and_address() {
        let logins = logins();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..FREE_FAILURES {
            assert_eq!(
                logins.check(a, Some("app"), Some("wrong")).await.err(),
                Some(Refusal::Wrong)
            );
        }
        // Even the right password must wait now, from that address only.
        assert!(matches!(
            logins.check(a, Some("app"), Some("right")).await,
            Err(Refusal::Backoff { .. })
        ));
        assert!(logins.check(b, Some("app"), Some("right")).await.is_ok());
        tokio::time::advance(Duration::from_millis(1100)).await;
        assert!(logins.check(a, Some("app"), Some("right")).await.is_ok());
        // A success clears the slate.
        assert_eq!(
            logins.check(a, Some("app"), Some("wrong")).await.err(),
            Some(Refusal::Wrong)
        );
    }

    #[test]
    fn the_wait_doubles_up_to_its_maximum() {
        let at = Instant::now();
        let wait = |count| {
            Failures { count, last: at }
                .wait_until()
                .map(|t| t.duration_since(at))
        };
        assert_eq!(wait(FREE_FAILURES - 1), None);
        assert_eq!(wait(FREE_FAILURES), Some(Duration::from_secs(1)));
        assert_eq!(wait(FREE_FAILURES + 2), Some(Duration::from_secs(4)));
        assert_eq!(wait(FREE_FAILURES + 30), Some(MAX_BACKOFF));
    }
}
