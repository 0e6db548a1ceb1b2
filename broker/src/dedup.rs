//! Messages accepted lately, so a re-sent one is dropped: a failover
//! client's SEND whose receipt it never saw, or a bridge's MESSAGE whose ACK
//! was lost on the way.
//!
//! A bounded window of 128-bit fingerprints (two keyed hashes, with keys
//! chosen when the broker starts): no string is kept per message, and a
//! peer cannot make two keys collide.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};

/// What identifies a message for dedup.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Key<'a> {
    /// A client's `portico-dedup-id`, scoped by the user who sent it, so
    /// nobody can suppress another user's messages by reusing their ids
    /// (a failover client reconnects as the same user, so its re-sends
    /// still collapse).
    Client { sender: &'a str, id: &'a str },
    /// A message forwarded over a bridge: its origin, and for a queue
    /// message the path it came by (it may come back when demand moves).
    Forwarded {
        origin: &'a str,
        path: Option<&'a str>,
    },
}

/// How many fingerprints are kept.
const WINDOW: usize = 200_000;

#[derive(Debug, Default)]
pub(crate) struct Dedup {
    keys: (
        std::collections::hash_map::RandomState,
        std::collections::hash_map::RandomState,
    ),
    seen: HashSet<u128>,
    order: VecDeque<u128>,
}

impl Dedup {
    fn fingerprint(&self, key: Key<'_>) -> u128 {
        let half = |state: &std::collections::hash_map::RandomState| {
            let mut h = state.build_hasher();
            match key {
                Key::Client { sender, id } => (0u8, sender, id).hash(&mut h),
                Key::Forwarded { origin, path } => (1u8, origin, path).hash(&mut h),
            }
            h.finish()
        };
        (u128::from(half(&self.keys.0)) << 64) | u128::from(half(&self.keys.1))
    }

    /// Records `key`; false if it was already there.
    pub(crate) fn insert(&mut self, key: Key<'_>) -> bool {
        let fingerprint = self.fingerprint(key);
        if !self.seen.insert(fingerprint) {
            return false;
        }
        if self.order.len() == WINDOW {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.order.push_back(fingerprint);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_scoped_and_the_window_is_bounded() {
        let mut d = Dedup::default();
        let client = |sender, id| Key::Client { sender, id };
        assert!(d.insert(client("a", "1")));
        assert!(!d.insert(client("a", "1")), "the same user's re-send");
        assert!(d.insert(client("b", "1")), "another user's id");
        // Parts do not run into each other.
        assert!(d.insert(client("a1", "")));
        assert!(d.insert(Key::Forwarded {
            origin: "a",
            path: Some("1")
        }));
        assert!(d.insert(Key::Forwarded {
            origin: "a",
            path: None
        }));
        for i in 0..WINDOW {
            let id = i.to_string();
            d.insert(Key::Client {
                sender: "c",
                id: &id,
            });
        }
        assert_eq!((d.seen.len(), d.order.len()), (WINDOW, WINDOW));
        assert!(d.insert(client("a", "1")), "long gone from the window");
    }
}
