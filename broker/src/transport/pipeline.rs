//! A session's SENDs and ACKs on their way: each is journaled (fsynced in
//! groups), then routed, then receipted, in the order they arrived, while
//! the session goes on reading.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::intake::Copy;
use crate::router::Message;
use crate::shared::BrokerCore;
use crate::stomp::{Command, Frame, Version};
use crate::store::Durable;

/// The SENDs of one connection in flight: each is journaled (fsynced in
/// groups), then routed, then receipted, in the order they arrived, while
/// the connection goes on reading. Bounded by bytes.
pub(super) struct Pipeline {
    pub(super) tx: mpsc::Sender<Piped>,
    pub(super) budget: Arc<Semaphore>,
}

/// Bytes of SEND bodies a connection may have in its pipeline.
pub(super) const PIPELINE_BYTES: u32 = 8 * 1024 * 1024;

pub(super) enum Piped {
    Send {
        durable: Option<Durable>,
        message: Arc<Message>,
        /// Durable subscriptions' copies of a topic message.
        copies: Vec<Copy>,
        receipt: Option<String>,
        /// The connection's and the broker's budgets, given back once routed.
        _permit: (OwnedSemaphorePermit, OwnedSemaphorePermit),
    },
    /// A receipt for a frame that needed no more work (a duplicate SEND).
    Receipt(Option<String>),
    /// Journal records (acknowledgements) to await before the receipt.
    Durable {
        durable: Durable,
        receipt: Option<String>,
    },
    /// Answers once everything before it is done.
    Flush(oneshot::Sender<Result<(), String>>),
}

pub(super) async fn run_pipeline(
    core: Arc<BrokerCore>,
    mut rx: mpsc::Receiver<Piped>,
    control: mpsc::Sender<Vec<u8>>,
    version: Version,
) {
    let receipt = |id: String| receipt_bytes(version, id);
    let mut failed: Option<String> = None;
    while let Some(item) = rx.recv().await {
        match item {
            Piped::Flush(reply) => {
                let _ = reply.send(failed.clone().map_or(Ok(()), Err));
            }
            _ if failed.is_some() => {}
            Piped::Send {
                durable,
                message,
                mut copies,
                receipt: id,
                _permit,
            } => {
                // The journal completes in order: the last record on disk
                // means all are.
                let last = copies
                    .iter_mut()
                    .rev()
                    .find_map(|c| c.durable.take())
                    .or(durable);
                if let Some(durable) = last {
                    if let Err(e) = durable.wait().await {
                        failed = Some(format!("a message could not be stored: {e}"));
                        continue;
                    }
                }
                core.router.send(message).await;
                for copy in copies {
                    core.router.send(copy.message).await;
                }
                if let Some(id) = id {
                    let _ = control.send(receipt(id)).await;
                }
            }
            Piped::Durable {
                durable,
                receipt: id,
            } => {
                if let Err(e) = durable.wait().await {
                    failed = Some(format!("an acknowledgement could not be stored: {e}"));
                    continue;
                }
                if let Some(id) = id {
                    let _ = control.send(receipt(id)).await;
                }
            }
            Piped::Receipt(id) => {
                if let Some(id) = id {
                    let _ = control.send(receipt(id)).await;
                }
            }
        }
    }
}

pub(super) fn receipt_bytes(version: Version, id: impl Into<String>) -> Vec<u8> {
    Frame::new(Command::Receipt)
        .header("receipt-id", id)
        .to_bytes_as(version)
}
