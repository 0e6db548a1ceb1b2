//! Why the router refused an operation: the caller decides what to tell
//! (an ERROR frame for a client, a log line for a bridge).

use super::{Destination, SubKey};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouterError {
    #[error("not connected")]
    NotConnected,
    #[error("subscription id {0:?} is already in use on this connection")]
    SubscriptionInUse(String),
    #[error("a connection may hold at most {max} subscriptions")]
    TooManySubscriptions { max: usize },
    #[error("cannot create {destination}: the broker has its maximum of {max} destinations")]
    TooManyDestinations {
        destination: Destination,
        max: usize,
    },
    #[error("no subscription with id {0:?}")]
    NoSubscription(String),
    #[error("no message to acknowledge with id {0:?}")]
    NoSuchMessage(String),
    #[error("subscription {0:?} is gone")]
    SubscriptionGone(SubKey),
    #[error("the broker is stopping")]
    Stopping,
}
