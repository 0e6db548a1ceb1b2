//! The one writer of a connection, a client's or a bridge's: control
//! frames and deliveries go out in batches, a heart-beat when nothing else
//! did, then the journal hears of auto-acknowledged stored messages and the
//! router that the outbox has room again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::router::{ConnId, Delivery, OutboxReceiver};
use crate::shared::BrokerCore;

/// How a connection writes what the router delivers to it.
pub(crate) trait Encoder: Send + 'static {
    /// Appends `delivery` as a frame; the journal id of a stored message
    /// that writing it acknowledges goes into `acks`.
    fn encode(&self, delivery: &Delivery, out: &mut Vec<u8>, acks: &mut Vec<u64>);

    /// What to tell a peer the router dropped for reading too slowly
    /// (nothing: the connection just ends).
    fn slow_consumer(&self) -> Option<Vec<u8>>;

    /// What goes out when nothing else did for a while (STOMP: a newline).
    fn heartbeat(&self, out: &mut Vec<u8>) {
        out.push(b'\n');
    }
}

/// What a connection's writer owns.
pub(crate) struct Outgoing<E> {
    pub(crate) core: Arc<BrokerCore>,
    pub(crate) conn: ConnId,
    /// Frames other than deliveries (receipts, errors, a bridge's ACKs).
    pub(crate) control: mpsc::Receiver<Vec<u8>>,
    pub(crate) outbox: OutboxReceiver,
    pub(crate) stalled: Arc<AtomicBool>,
    pub(crate) evicted: Arc<AtomicBool>,
    /// A heart-beat goes out when nothing else did for this long.
    pub(crate) beat: Option<Duration>,
    /// Cancelled when the writer ends; ends it when cancelled by others.
    pub(crate) done: CancellationToken,
    pub(crate) encoder: E,
}

/// Bytes gathered into one write at most.
const BATCH: usize = 256 * 1024;

/// Writes until the control channel closes, the write fails or `done`.
pub(crate) async fn run<E: Encoder, W: AsyncWrite + Unpin>(mut w: Outgoing<E>, mut writer: W) {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut outbox_open = true;
    let beat = w.beat.unwrap_or(Duration::from_secs(3600));
    let mut next_beat = Instant::now() + beat;
    loop {
        buf.clear();
        let mut acks = Vec::new();
        tokio::select! {
            c = w.control.recv() => match c {
                Some(bytes) => buf.extend_from_slice(&bytes),
                None => break,
            },
            d = w.outbox.recv(), if outbox_open => match d {
                Some(d) => w.encoder.encode(&d, &mut buf, &mut acks),
                None if !w.evicted.load(Ordering::Acquire) => {
                    // Unregistered: the connection is ending; finish its frames.
                    outbox_open = false;
                    continue;
                }
                None => {
                    // The router dropped us: a slow topic subscriber.
                    if let Some(error) = w.encoder.slow_consumer() {
                        let _ = writer.write_all(&error).await;
                    }
                    break;
                }
            },
            _ = tokio::time::sleep_until(next_beat), if w.beat.is_some() => w.encoder.heartbeat(&mut buf),
            _ = w.done.cancelled() => break,
        }
        // Let the tasks that are ready (the router, the connection's
        // pipeline) run first: what they queue meanwhile goes in the same
        // write. Under load this turns a write per frame, each waking the
        // peer, into one write per batch; when idle it costs one turn of
        // the scheduler.
        tokio::task::yield_now().await;
        while buf.len() < BATCH {
            if let Ok(bytes) = w.control.try_recv() {
                buf.extend_from_slice(&bytes);
            } else if let Some(d) = w.outbox.try_recv() {
                w.encoder.encode(&d, &mut buf, &mut acks);
            } else {
                break;
            }
        }
        if writer.write_all(&buf).await.is_err() || writer.flush().await.is_err() {
            break;
        }
        next_beat = Instant::now() + beat;
        if !acks.is_empty() {
            // Auto-acknowledged stored messages are done once written.
            let written = match w.core.journal.acknowledge_lazily(acks).await {
                Ok(durable) => durable.wait().await,
                Err(e) => Err(e),
            };
            if written.is_err() {
                break;
            }
        }
        if w.outbox.is_empty() && w.stalled.swap(false, Ordering::AcqRel) {
            w.core.router.resume(w.conn).await;
        }
    }
    let _ = writer.shutdown().await;
    w.done.cancel();
}
