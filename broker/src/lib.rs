//! `portico-broker`: the broker network that the portico front door fronts.

pub mod stomp;
pub mod store;
