//! A connection's open transactions: the SENDs and ACKs each holds until
//! COMMIT, bounded in how many are open and in the frames and bytes they
//! hold together.

use std::collections::HashMap;

use crate::stomp::Frame;

/// Transactions one connection may have open at once.
const MAX_OPEN: usize = 64;

#[derive(Debug)]
pub(super) struct Transactions {
    open: HashMap<String, Vec<Frame>>,
    /// What every open transaction holds, in bytes.
    bytes: usize,
    max_frames: usize,
    max_bytes: usize,
}

/// What a frame costs while held.
fn cost(frame: &Frame) -> usize {
    frame.body.len()
        + frame
            .headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 48)
            .sum::<usize>()
        + 64
}

impl Transactions {
    pub(super) fn new(max_frames: usize, max_bytes: usize) -> Self {
        Self {
            open: HashMap::new(),
            bytes: 0,
            max_frames,
            max_bytes,
        }
    }

    pub(super) fn begin(&mut self, id: &str) -> Result<(), String> {
        if self.open.contains_key(id) {
            return Err(format!("transaction {id:?} is already open"));
        }
        if self.open.len() >= MAX_OPEN {
            return Err(format!(
                "cannot begin transaction {id:?}: {MAX_OPEN} are open already"
            ));
        }
        self.open.insert(id.to_owned(), Vec::new());
        Ok(())
    }

    /// Holds `frame` in transaction `id` until it ends.
    pub(super) fn hold(&mut self, id: &str, frame: Frame) -> Result<(), String> {
        let Some(frames) = self.open.get_mut(id) else {
            return Err(format!("no transaction {id:?}"));
        };
        if frames.len() >= self.max_frames {
            return Err(format!(
                "transaction {id:?} holds more than {} frames",
                self.max_frames
            ));
        }
        let cost = cost(&frame);
        if self.bytes + cost > self.max_bytes {
            return Err(format!(
                "open transactions hold more than {} bytes",
                self.max_bytes
            ));
        }
        self.bytes += cost;
        frames.push(frame);
        Ok(())
    }

    /// Ends transaction `id` (COMMIT or ABORT): what it held.
    pub(super) fn finish(&mut self, id: &str) -> Result<Vec<Frame>, String> {
        let frames = self
            .open
            .remove(id)
            .ok_or_else(|| format!("no transaction {id:?}"))?;
        self.bytes -= frames.iter().map(cost).sum::<usize>();
        Ok(frames)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stomp::Command;

    fn send(bytes: usize) -> Frame {
        Frame::new(Command::Send)
            .header("destination", "/queue/a")
            .body(vec![b'x'; bytes])
    }

    #[test]
    fn frames_and_bytes_are_bounded_and_given_back() {
        let mut tx = Transactions::new(3, 10_000);
        tx.begin("t").unwrap();
        assert!(tx.begin("t").is_err(), "open twice");
        tx.hold("t", send(4000)).unwrap();
        tx.hold("t", send(4000)).unwrap();
        let over = tx.hold("t", send(4000)).unwrap_err();
        assert!(over.contains("bytes"), "{over}");
        tx.hold("t", send(10)).unwrap();
        assert!(tx.hold("t", send(10)).unwrap_err().contains("frames"));
        assert_eq!(tx.finish("t").unwrap().len(), 3);
        assert_eq!(tx.bytes, 0);
        assert!(tx.hold("t", send(1)).is_err(), "finished");
        for i in 0..MAX_OPEN {
            tx.begin(&i.to_string()).unwrap();
        }
        assert!(tx.begin("one more").is_err());
    }
}
