//! A connection's outbox: deliveries the router hands it, bounded in count
//! and in bytes, so a slow reader pins little beyond its prefetch window.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::Delivery;

/// Bytes of messages a connection's outbox holds before the router holds
/// the rest back (one message always fits), whatever their count: a slow
/// reader pins at most this much beyond its prefetch window.
pub const OUTBOX_BYTES: usize = 1024 * 1024;

/// A connection's way to receive deliveries: at most `capacity` of them
/// and [`OUTBOX_BYTES`] of messages.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Delivery>,
    bytes: Arc<AtomicUsize>,
    /// Set by the router when the outbox was full; the connection asks to
    /// resume once it has written what was queued.
    pub stalled: Arc<AtomicBool>,
    /// Set by the router when it drops a slow subscriber's connection.
    pub evicted: Arc<AtomicBool>,
}

/// The connection's end of its [`Outbox`].
#[derive(Debug)]
pub struct OutboxReceiver {
    rx: mpsc::Receiver<Delivery>,
    bytes: Arc<AtomicUsize>,
}

impl Outbox {
    pub fn new(capacity: usize) -> (Self, OutboxReceiver) {
        let (tx, rx) = mpsc::channel(capacity);
        let bytes = Arc::new(AtomicUsize::new(0));
        let outbox = Self {
            tx,
            bytes: bytes.clone(),
            stalled: Arc::new(AtomicBool::new(false)),
            evicted: Arc::new(AtomicBool::new(false)),
        };
        (outbox, OutboxReceiver { rx, bytes })
    }

    pub(super) fn offer(
        &self,
        delivery: Delivery,
    ) -> Result<(), mpsc::error::TrySendError<Delivery>> {
        let size = delivery.message.size();
        // Counted before it can be taken out, so the count never goes below zero.
        let before = self.bytes.fetch_add(size, Ordering::AcqRel);
        if before > 0 && before + size > OUTBOX_BYTES {
            self.bytes.fetch_sub(size, Ordering::AcqRel);
            return Err(mpsc::error::TrySendError::Full(delivery));
        }
        self.tx.try_send(delivery).inspect_err(|_| {
            self.bytes.fetch_sub(size, Ordering::AcqRel);
        })
    }
}

impl OutboxReceiver {
    pub async fn recv(&mut self) -> Option<Delivery> {
        let delivery = self.rx.recv().await?;
        self.taken(&delivery);
        Some(delivery)
    }

    pub fn try_recv(&mut self) -> Option<Delivery> {
        let delivery = self.rx.try_recv().ok()?;
        self.taken(&delivery);
        Some(delivery)
    }

    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    fn taken(&self, delivery: &Delivery) {
        self.bytes
            .fetch_sub(delivery.message.size(), Ordering::AcqRel);
    }
}
