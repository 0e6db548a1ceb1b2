//! Destination policies (`[[policy]]`): how often a message may come back
//! before it is a dead letter, how long it waits between deliveries, and
//! where dead and expired messages go. ActiveMQ's names and defaults.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::{Destination, Filter, Kind, Message};

/// ActiveMQ's shared dead-letter queue.
pub const SHARED_DEAD_LETTER_QUEUE: &str = "ActiveMQ.DLQ";

/// Where a destination's dead letters go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetter {
    /// One queue for all (`queue://ActiveMQ.DLQ` unless named).
    Shared(Destination),
    /// `queue://ActiveMQ.DLQ.Queue.<name>` or `…DLQ.Topic.<name>`.
    Individual,
}

/// The policy of the destinations a filter matches.
#[derive(Debug, Clone)]
pub struct Policy {
    pub destination: Filter,
    /// Redeliveries after the first delivery; one more failure and the
    /// message is a dead letter.
    pub max_redeliveries: u32,
    /// Before the first redelivery of a refused (NACKed) message.
    pub redelivery_delay: Duration,
    /// Each further redelivery waits this many times longer (1 = no
    /// back-off).
    pub redelivery_backoff: f64,
    pub max_redelivery_delay: Option<Duration>,
    pub dead_letter: DeadLetter,
    /// Expired messages go to the dead-letter queue (else they are dropped).
    pub expired_to_dead_letter: bool,
}

impl Policy {
    /// ActiveMQ's defaults, for every destination.
    pub fn defaults() -> Self {
        Self {
            destination: Filter::parse(">").expect("'>' is a filter"),
            max_redeliveries: 6,
            redelivery_delay: Duration::from_secs(1),
            redelivery_backoff: 1.0,
            max_redelivery_delay: None,
            dead_letter: DeadLetter::Shared(shared_dead_letter_queue()),
            expired_to_dead_letter: true,
        }
    }

    /// How long a message refused for the `failures`-th time waits before
    /// it is delivered again.
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = self
            .redelivery_backoff
            .powi(i32::try_from(failures.saturating_sub(1)).unwrap_or(i32::MAX));
        let secs = self.redelivery_delay.as_secs_f64() * factor;
        let max = self
            .max_redelivery_delay
            .unwrap_or(Duration::from_secs(24 * 3600));
        if secs.is_finite() && secs < max.as_secs_f64() {
            Duration::from_secs_f64(secs)
        } else {
            max
        }
    }

    /// The dead-letter queue for messages of `from`.
    pub fn dead_letter_queue(&self, from: &Destination) -> Destination {
        match &self.dead_letter {
            DeadLetter::Shared(d) => d.clone(),
            DeadLetter::Individual => {
                let kind = match from.kind {
                    Kind::Queue => "Queue",
                    Kind::Topic => "Topic",
                };
                Destination {
                    kind: Kind::Queue,
                    name: format!("{SHARED_DEAD_LETTER_QUEUE}.{kind}.{}", from.name),
                }
            }
        }
    }
}

pub fn shared_dead_letter_queue() -> Destination {
    Destination {
        kind: Kind::Queue,
        name: SHARED_DEAD_LETTER_QUEUE.to_owned(),
    }
}

/// The configured policies, first match wins, then the defaults.
#[derive(Debug, Clone)]
pub struct Policies {
    list: Vec<Policy>,
    defaults: Policy,
}

impl Default for Policies {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl Policies {
    pub fn new(list: Vec<Policy>) -> Self {
        Self {
            list,
            defaults: Policy::defaults(),
        }
    }

    pub fn of(&self, destination: &Destination) -> &Policy {
        self.list
            .iter()
            .find(|p| p.destination.matches(destination))
            .unwrap_or(&self.defaults)
    }
}

/// Whether `destination` is a dead-letter queue: its messages are never
/// dead letters again (they would only loop), they wait to be redelivered.
pub fn is_dead_letter_queue(destination: &Destination) -> bool {
    destination.kind == Kind::Queue
        && (destination.name == SHARED_DEAD_LETTER_QUEUE
            || destination
                .name
                .starts_with(&format!("{SHARED_DEAD_LETTER_QUEUE}.")))
}

/// Why a message left its destination without being consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// Delivered `deliveries` times, each refused or left unacknowledged.
    Redeliveries {
        deliveries: u32,
        max_redeliveries: u32,
    },
    /// Its `expires` time passed before anyone took it.
    Expired,
    /// A consumer refused it for good (a JMS client's poison
    /// acknowledgement, past its own redeliveries), saying why.
    Poisoned(String),
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Redeliveries {
                deliveries,
                max_redeliveries,
            } => write!(
                f,
                "Delivery[{deliveries}] exceeds redelivery policy limit: max_redeliveries = {max_redeliveries}"
            ),
            Self::Expired => f.write_str("Message expired"),
            Self::Poisoned(why) => f.write_str(why),
        }
    }
}

/// A message the router gave up on: it is stored in `to` (a dead-letter
/// queue) or, with `to` empty, dropped. Whoever takes it makes the
/// journal agree (see `crate::intake::retire`).
#[derive(Debug)]
pub struct Retired {
    pub message: Arc<Message>,
    pub cause: Cause,
    pub to: Option<Destination>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_back_off_up_to_the_maximum() {
        let policy = Policy {
            redelivery_delay: Duration::from_millis(100),
            redelivery_backoff: 2.0,
            max_redelivery_delay: Some(Duration::from_millis(500)),
            ..Policy::defaults()
        };
        let delays: Vec<u128> = (1..=5).map(|n| policy.delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
        assert_eq!(Policy::defaults().delay(3), Duration::from_secs(1));
    }

    #[test]
    fn individual_dead_letter_queues_are_named_as_in_activemq() {
        let policy = Policy {
            dead_letter: DeadLetter::Individual,
            ..Policy::defaults()
        };
        let q = Destination::parse("/queue/orders").unwrap();
        let t = Destination::parse("/topic/prices").unwrap();
        assert_eq!(
            policy.dead_letter_queue(&q).to_string(),
            "/queue/ActiveMQ.DLQ.Queue.orders"
        );
        assert_eq!(
            policy.dead_letter_queue(&t).to_string(),
            "/queue/ActiveMQ.DLQ.Topic.prices"
        );
        assert!(is_dead_letter_queue(&policy.dead_letter_queue(&q)));
        assert!(!is_dead_letter_queue(&q));
    }

    #[test]
    fn the_first_matching_policy_wins() {
        let with = |filter: &str, max: u32| Policy {
            destination: Filter::parse(filter).unwrap(),
            max_redeliveries: max,
            ..Policy::defaults()
        };
        let policies = Policies::new(vec![with("queue://a.>", 1), with("queue://>", 2)]);
        let of = |d: &str| {
            policies
                .of(&Destination::parse(d).unwrap())
                .max_redeliveries
        };
        assert_eq!(
            (of("/queue/a.b"), of("/queue/b"), of("/topic/a")),
            (1, 2, 6)
        );
    }
}
