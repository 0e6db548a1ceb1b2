//! A session's SENDs and ACKs on their way: each is journaled (fsynced in
//! groups) and routed at once, then receipted once stored, in the order they
//! arrived, while the session goes on reading.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::intake::{self, Accepted, Arriving, Copy};
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
        /// The protocol's answer (a RECEIPT, a Response), sent once routed.
        reply: Option<Vec<u8>>,
        /// The connection's and the broker's budgets, given back once routed.
        _permit: (OwnedSemaphorePermit, OwnedSemaphorePermit),
    },
    /// An answer to a frame that needed no more work (a duplicate SEND).
    Reply(Option<Vec<u8>>),
    /// Journal records (acknowledgements, a duplicate's marker) to await
    /// before the answer.
    Durable {
        durable: Durable,
        what: &'static str,
        reply: Option<Vec<u8>>,
    },
    /// Answers once everything before it is done.
    Flush(oneshot::Sender<Result<(), String>>),
}

/// What waits for the journal before its answer goes out, in order.
struct Pending {
    /// The last of its journal records (the journal completes in order:
    /// the last record on disk means all are); `None`: nothing to wait for.
    durable: Option<Durable>,
    what: &'static str,
    answer: Answer,
    /// The connection's and the broker's budgets, held until stored.
    _permit: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
}

enum Answer {
    Reply(Option<Vec<u8>>),
    Flush(oneshot::Sender<Result<(), String>>),
}

/// Most answers a connection may have waiting for the journal.
const PENDING: usize = 4096;

/// Runs a connection's pipeline. A message is routed as soon as it is
/// taken — while its journal write is in flight, as ActiveMQ's concurrent
/// store and dispatch does — and its answer (the receipt) goes out only once
/// it is on disk, in order. A crash before the fsync may deliver a message
/// the producer never had a receipt for; it never loses a receipted one.
pub(super) async fn run_pipeline(
    core: Arc<BrokerCore>,
    mut rx: mpsc::Receiver<Piped>,
    control: mpsc::Sender<Vec<u8>>,
) {
    let mut failed: Option<String> = None;
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut open = true;
    while open || !pending.is_empty() {
        let room = open && pending.len() < PENDING;
        // The front's journal write, if it has one to wait for.
        let front = pending.front_mut().and_then(|p| p.durable.as_mut());
        let has_front = front.is_some();
        tokio::select! {
            biased;
            stored = async { front.expect("guarded").await }, if has_front => {
                let done = pending.pop_front().expect("a front");
                if let Err(e) = stored {
                    failed = Some(format!("{} could not be stored: {e}", done.what));
                    // No answer after a failure but the flushes' (an error).
                    for rest in pending.drain(..) {
                        answer(rest.answer, &failed, &control).await;
                    }
                    continue;
                }
                answer(done.answer, &failed, &control).await;
                answer_ready(&mut pending, &failed, &control).await;
            }
            item = rx.recv(), if room => {
                let Some(item) = item else {
                    open = false;
                    continue;
                };
                let next = match item {
                    Piped::Flush(reply) => Pending {
                        durable: None,
                        what: "",
                        answer: Answer::Flush(reply),
                        _permit: None,
                    },
                    _ if failed.is_some() => continue,
                    Piped::Send { durable, message, mut copies, reply, _permit } => {
                        let last = copies
                            .iter_mut()
                            .rev()
                            .find_map(|c| c.durable.take())
                            .or(durable);
                        core.router.send(message).await;
                        for copy in copies {
                            core.router.send(copy.message).await;
                        }
                        Pending {
                            durable: last,
                            what: "a message",
                            answer: Answer::Reply(reply),
                            _permit: Some(_permit),
                        }
                    }
                    Piped::Durable { durable, what, reply } => Pending {
                        durable: Some(durable),
                        what,
                        answer: Answer::Reply(reply),
                        _permit: None,
                    },
                    Piped::Reply(reply) => Pending {
                        durable: None,
                        what: "",
                        answer: Answer::Reply(reply),
                        _permit: None,
                    },
                };
                pending.push_back(next);
                answer_ready(&mut pending, &failed, &control).await;
            }
            else => break,
        }
    }
}

/// Answers the front entries that have nothing (left) to wait for.
async fn answer_ready(
    pending: &mut VecDeque<Pending>,
    failed: &Option<String>,
    control: &mpsc::Sender<Vec<u8>>,
) {
    while pending.front().is_some_and(|p| p.durable.is_none()) {
        if let Some(done) = pending.pop_front() {
            answer(done.answer, failed, control).await;
        }
    }
}

async fn answer(answer: Answer, failed: &Option<String>, control: &mpsc::Sender<Vec<u8>>) {
    match answer {
        Answer::Flush(reply) => {
            let _ = reply.send(failed.clone().map_or(Ok(()), Err));
        }
        Answer::Reply(Some(reply)) if failed.is_none() => {
            let _ = control.send(reply).await;
        }
        Answer::Reply(_) => {}
    }
}

/// Why a message did not make it onto the pipeline.
#[derive(Debug)]
pub(super) enum SubmitError {
    /// The connection is closing.
    Closing,
    /// The journal did not take it.
    Store(String),
}

/// Why a flush did not confirm everything before it.
#[derive(Debug)]
pub(super) enum FlushError {
    Closing,
    /// Something before it could not be stored.
    Store(String),
}

impl std::fmt::Display for FlushError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Closing => f.write_str("the connection is closing"),
            Self::Store(e) => write!(f, "the message could not be stored: {e}"),
        }
    }
}

impl Pipeline {
    /// Waits until everything piped before now is stored and routed.
    pub(super) async fn flush(&self) -> Result<(), FlushError> {
        let (reply, answer) = oneshot::channel();
        if self.tx.send(Piped::Flush(reply)).await.is_err() {
            return Err(FlushError::Closing);
        }
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(FlushError::Store(e)),
            Err(_) => Err(FlushError::Closing),
        }
    }

    /// Journals the acknowledgement of stored messages `stored` in the same
    /// group commits as messages; `reply` goes out once it is on disk (at
    /// once, in order, when nothing was stored). Without a reply the
    /// acknowledgement is written without an fsync of its own.
    pub(super) async fn acknowledged(
        &self,
        core: &BrokerCore,
        stored: Vec<u64>,
        reply: Option<Vec<u8>>,
    ) -> Result<(), SubmitError> {
        let item = if stored.is_empty() {
            Piped::Reply(reply)
        } else {
            // Stored before its answer; without one, nobody waits for it.
            let durable = if reply.is_some() {
                core.journal.acknowledge(stored).await
            } else {
                core.journal.acknowledge_lazily(stored).await
            };
            let durable = durable.map_err(|e| SubmitError::Store(e.to_string()))?;
            Piped::Durable {
                durable,
                what: "an acknowledgement",
                reply,
            }
        };
        self.tx.send(item).await.map_err(|_| SubmitError::Closing)
    }

    /// One message through the intake and onto this pipeline, whatever
    /// protocol brought it: the connection's budget, then the broker's
    /// (`before_waiting` runs first if either must be waited for), the
    /// intake (dedup, id, journal), the durable subscriptions' copies of a
    /// topic message; `reply` goes out once it is routed.
    pub(super) async fn submit(
        &self,
        core: &BrokerCore,
        arriving: Arriving<'_>,
        reply: Option<Vec<u8>>,
        before_waiting: impl FnOnce(),
    ) -> Result<(), SubmitError> {
        // The connection's own budget first, then the broker's: a
        // connection held back waits on its own, not on everyone's.
        let cost = u32::try_from(arriving.body.len())
            .unwrap_or(u32::MAX)
            .clamp(1, PIPELINE_BYTES);
        let budgets = (
            self.budget.clone().try_acquire_many_owned(cost),
            core.intake.clone().try_acquire_many_owned(cost),
        );
        let (permit, intake) = match budgets {
            (Ok(permit), Ok(intake)) => (permit, intake),
            (permit, _) => {
                before_waiting();
                let permit = match permit {
                    Ok(p) => p,
                    Err(_) => self
                        .budget
                        .clone()
                        .acquire_many_owned(cost)
                        .await
                        .map_err(|_| SubmitError::Closing)?,
                };
                let intake = core
                    .intake
                    .clone()
                    .acquire_many_owned(cost)
                    .await
                    .map_err(|_| SubmitError::Closing)?;
                (permit, intake)
            }
        };
        let stored = |e: crate::store::JournalError| SubmitError::Store(e.to_string());
        let item = match intake::accept(core, arriving).await.map_err(stored)? {
            // A failover client re-sent what was already accepted.
            Accepted::Duplicate {
                durable: Some(durable),
            } => Piped::Durable {
                durable,
                what: "a re-sent message",
                reply,
            },
            Accepted::Duplicate { durable: None } => Piped::Reply(reply),
            Accepted::Taken { message, durable } => Piped::Send {
                copies: intake::durable_copies(core, &message)
                    .await
                    .map_err(stored)?,
                durable,
                message,
                reply,
                _permit: (permit, intake),
            },
        };
        self.tx.send(item).await.map_err(|_| SubmitError::Closing)
    }
}

pub(super) fn receipt_bytes(version: Version, id: impl Into<String>) -> Vec<u8> {
    Frame::new(Command::Receipt)
        .header("receipt-id", id)
        .to_bytes_as(version)
}
