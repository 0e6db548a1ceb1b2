//! The journal's bookkeeping: which segment holds each unacknowledged
//! message, how many live messages (and bytes) each segment holds, and
//! which segments must outlive which. Replay and the writer keep it the
//! same way.

use std::collections::{BTreeMap, HashMap, HashSet};

#[derive(Debug, Default)]
pub(super) struct Book {
    /// Per segment: messages added there and not yet acknowledged, and
    /// the bytes of their records.
    pub(super) live: BTreeMap<u64, (usize, u64)>,
    /// Segment and record length of each unacknowledged message.
    location: HashMap<u64, (u64, u64)>,
    /// Per segment, the earlier segments whose messages its acks acknowledge:
    /// it must outlive them, or those messages would come back on replay.
    acks_into: HashMap<u64, HashSet<u64>>,
}

impl Book {
    pub(super) fn open(&mut self, segment: u64) {
        self.live.entry(segment).or_default();
    }

    /// Message `id` was acknowledged by a record in `segment`; false if it
    /// was not live.
    pub(super) fn acknowledge(&mut self, id: u64, segment: u64) -> bool {
        let Some((at, len)) = self.location.remove(&id) else {
            return false;
        };
        if let Some((n, bytes)) = self.live.get_mut(&at) {
            *n = n.saturating_sub(1);
            *bytes = bytes.saturating_sub(len);
        }
        if at != segment {
            self.acks_into.entry(segment).or_default().insert(at);
        }
        true
    }

    /// Message `id` was added by a record of `len` bytes in `segment`. A
    /// message added again (moved forward by compaction) lives only in its
    /// newest copy.
    pub(super) fn add(&mut self, id: u64, len: u64, segment: u64) {
        if let Some((at, old)) = self.location.remove(&id) {
            if let Some((n, bytes)) = self.live.get_mut(&at) {
                *n = n.saturating_sub(1);
                *bytes = bytes.saturating_sub(old);
            }
        }
        let (n, bytes) = self.live.entry(segment).or_default();
        *n += 1;
        *bytes += len;
        self.location.insert(id, (segment, len));
    }

    /// Whether message `id` lives in `segment`.
    pub(super) fn lives_in(&self, id: u64, segment: u64) -> bool {
        self.location.get(&id).is_some_and(|(at, _)| *at == segment)
    }

    /// A segment, other than `current`, whose messages are all acknowledged
    /// and whose acks refer only to segments already gone.
    pub(super) fn free(&self, current: u64) -> Option<u64> {
        self.live.iter().find_map(|(&seg, &(n, _))| {
            let free = n == 0
                && seg != current
                && self
                    .acks_into
                    .get(&seg)
                    .is_none_or(|targets| targets.iter().all(|t| !self.live.contains_key(t)));
            free.then_some(seg)
        })
    }

    pub(super) fn forget(&mut self, segment: u64) {
        self.live.remove(&segment);
        self.acks_into.remove(&segment);
    }
}
