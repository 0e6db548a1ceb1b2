//! A queue's waiting messages by priority: ten lanes, the highest
//! non-empty one first, first in first out within each (JMS priority,
//! 0–9, default 4).

use std::collections::VecDeque;

use super::Pending;
use crate::router::PRIORITIES;

#[derive(Default)]
pub(super) struct Lanes {
    lanes: [VecDeque<Pending>; PRIORITIES],
    len: usize,
}

impl Lanes {
    fn lane(&mut self, pending: &Pending) -> &mut VecDeque<Pending> {
        let at = usize::from(pending.message.priority).min(PRIORITIES - 1);
        &mut self.lanes[at]
    }

    pub(super) fn push_back(&mut self, pending: Pending) {
        self.len += 1;
        self.lane(&pending).push_back(pending);
    }

    /// Back at the front of its lane (a message given back).
    pub(super) fn push_front(&mut self, pending: Pending) {
        self.len += 1;
        self.lane(&pending).push_front(pending);
    }

    /// The next message to deliver.
    pub(super) fn front(&self) -> Option<&Pending> {
        self.lanes.iter().rev().find_map(VecDeque::front)
    }

    pub(super) fn pop_front(&mut self) -> Option<Pending> {
        let lane = self.lanes.iter_mut().rev().find(|l| !l.is_empty())?;
        self.len -= 1;
        lane.pop_front()
    }

    /// Where the next message to deliver is: (lane, index).
    pub(super) fn front_at(&self) -> Option<(usize, usize)> {
        (0..PRIORITIES)
            .rev()
            .find(|&lane| !self.lanes[lane].is_empty())
            .map(|lane| (lane, 0))
    }

    /// Where the first of the next `limit` messages (in delivery order)
    /// that `wanted` is.
    pub(super) fn find(
        &self,
        limit: usize,
        mut wanted: impl FnMut(&Pending) -> bool,
    ) -> Option<(usize, usize)> {
        (0..PRIORITIES)
            .rev()
            .flat_map(|lane| {
                self.lanes[lane]
                    .iter()
                    .enumerate()
                    .map(move |(i, p)| (lane, i, p))
            })
            .take(limit)
            .find(|(_, _, p)| wanted(p))
            .map(|(lane, i, _)| (lane, i))
    }

    pub(super) fn get(&self, (lane, i): (usize, usize)) -> Option<&Pending> {
        self.lanes.get(lane)?.get(i)
    }

    pub(super) fn remove_at(&mut self, (lane, i): (usize, usize)) -> Option<Pending> {
        let taken = self.lanes.get_mut(lane)?.remove(i)?;
        self.len -= 1;
        Some(taken)
    }

    /// The waiting messages in delivery order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Pending> {
        self.lanes.iter().rev().flat_map(VecDeque::iter)
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every waiting message, in no particular order, leaving none.
    pub(super) fn drain(&mut self) -> impl Iterator<Item = Pending> + '_ {
        self.len = 0;
        self.lanes.iter_mut().flat_map(|l| l.drain(..))
    }

    /// Takes out the messages `expired` says are, keeping the others'
    /// order.
    pub(super) fn take(&mut self, mut expired: impl FnMut(&Pending) -> bool) -> Vec<Pending> {
        let mut taken = Vec::new();
        for lane in &mut self.lanes {
            if !lane.iter().any(&mut expired) {
                continue;
            }
            let (out, kept): (Vec<_>, Vec<_>) = lane.drain(..).partition(&mut expired);
            *lane = kept.into();
            taken.extend(out);
        }
        self.len -= taken.len();
        taken
    }
}
