//! A JMS transacted session's local transactions: the messages it sends
//! and the acknowledgements it makes are held until COMMIT (then each goes
//! through as if sent then) or dropped at ROLLBACK (the client redelivers
//! what it had consumed, from its own buffer). Bounded like STOMP's.

use std::collections::HashMap;

use crate::openwire::command::{Message, MessageAck};
use crate::openwire::types::TransactionId;

/// What one transaction holds.
#[derive(Default)]
pub(super) struct Held {
    pub(super) sends: Vec<Message>,
    pub(super) acks: Vec<MessageAck>,
}

/// A connection's open transactions.
pub(super) struct Transactions {
    open: HashMap<TransactionId, Held>,
    /// Messages and acknowledgements one transaction may hold.
    max_frames: usize,
    /// Bytes of message bodies all open transactions may hold.
    max_bytes: usize,
    bytes: usize,
}

impl Transactions {
    pub(super) fn new(max_frames: usize, max_bytes: usize) -> Self {
        Self {
            open: HashMap::new(),
            max_frames,
            max_bytes,
            bytes: 0,
        }
    }

    pub(super) fn begin(&mut self, id: TransactionId) -> Result<(), String> {
        if self.open.len() >= 1024 {
            return Err("a connection may have at most 1024 open transactions".into());
        }
        self.open.entry(id).or_default();
        Ok(())
    }

    fn held(&mut self, id: &TransactionId) -> Result<&mut Held, String> {
        let max = self.max_frames;
        let held = self
            .open
            .get_mut(id)
            .ok_or_else(|| "no such transaction: it was not begun, or has ended".to_owned())?;
        if held.sends.len() + held.acks.len() >= max {
            return Err(format!(
                "a transaction may hold at most {max} messages and acknowledgements"
            ));
        }
        Ok(held)
    }

    pub(super) fn send(&mut self, id: &TransactionId, message: Box<Message>) -> Result<(), String> {
        let size = message.content.as_ref().map_or(0, Vec::len);
        if self.bytes + size > self.max_bytes {
            return Err(format!(
                "open transactions may hold at most {} bytes",
                self.max_bytes
            ));
        }
        self.held(id)?.sends.push(*message);
        self.bytes += size;
        Ok(())
    }

    pub(super) fn ack(&mut self, id: &TransactionId, ack: MessageAck) -> Result<(), String> {
        self.held(id)?.acks.push(ack);
        Ok(())
    }

    /// Ends transaction `id` (COMMIT or ROLLBACK): what it held.
    pub(super) fn finish(&mut self, id: &TransactionId) -> Held {
        let held = self.open.remove(id).unwrap_or_default();
        let size: usize = held
            .sends
            .iter()
            .map(|m| m.content.as_ref().map_or(0, Vec::len))
            .sum();
        self.bytes = self.bytes.saturating_sub(size);
        held
    }
}
