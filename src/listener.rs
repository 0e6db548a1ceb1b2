//! The accept loop of one listener.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::admission::{Admission, LogLimiter};
use crate::session;
use crate::snapshot::Shared;

/// How long to back off when the process is out of file descriptors or memory.
const RESOURCE_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts connections on one worker's socket of a listener until `stop`
/// is cancelled: checks the source address against the allow list and the
/// listener's limits, then hands each connection to its own task on this
/// worker.
pub(crate) async fn run(
    shared: Arc<Shared>,
    name: String,
    socket: std::net::TcpListener,
    admission: Arc<Admission>,
    stop: CancellationToken,
) {
    let listener = match TcpListener::from_std(socket) {
        Ok(listener) => listener,
        Err(e) => {
            error!(listener = %name, error = %e, "cannot accept on a worker's socket");
            return;
        }
    };
    let mut refusals_logged = LogLimiter::new(Duration::from_secs(1));
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => r,
        };
        let (tcp, client) = match accepted {
            Ok(conn) => conn,
            Err(e) if is_resource_exhaustion(&e) => {
                warn!(listener = %name, error = %e, "accept failed: out of resources; backing off");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(RESOURCE_BACKOFF) => continue,
                }
            }
            Err(e) => {
                debug!(listener = %name, error = %e, "accept failed");
                continue;
            }
        };
        // One snapshot for the listener's state and its group: a session
        // serves the configuration it was accepted under.
        let snapshot = shared.snapshot.load();
        let Some(state) = snapshot.listeners.get(&name).cloned() else {
            return;
        };
        let group = snapshot.groups.get(&state.config.target_group).cloned();
        drop(snapshot);
        if !state.config.allow.allows(client.ip()) {
            state.metrics.not_allowed.inc();
            debug!(listener = %name, client.addr = %client, "connection refused: source not in the allow list");
            continue;
        }
        let now = Instant::now();
        let tls = state.tls.is_some();
        let admitted = match admission.admit(client.ip(), &state.config.limits, tls, now) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                // Closed here: the client sees the connection end before any TLS.
                state.metrics.over_limit[refusal.index()].inc();
                if let Some(count) = refusals_logged.allow(now) {
                    warn!(
                        listener = %name,
                        client.addr = %client,
                        reason = refusal.as_str(),
                        refused = count,
                        "connection refused: over a listener limit (one line per second at most)"
                    );
                }
                continue;
            }
        };
        shared.sessions.spawn(session::run(
            shared.clone(),
            state,
            group,
            tcp,
            client,
            admitted,
        ));
    }
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}
