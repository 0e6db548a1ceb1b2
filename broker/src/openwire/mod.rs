//! OpenWire, ActiveMQ's native protocol (what its JMS client and its
//! command-line `producer` and `consumer` speak): the codec, sans-IO.
//!
//! The broker answers a client's WireFormatInfo with its own, which turns
//! off tight encoding and the marshalling cache; a client uses the AND of
//! both sides' options (ActiveMQ's negotiation), so every connection uses
//! the loose encoding, which is what this codec reads and writes. Version
//! 12 (ActiveMQ 5.x) is the version offered.

pub mod command;
pub mod types;
pub mod wire;

pub use command::{decode, decode_frame, encode, Body, Command};
pub use wire::WireError;

#[cfg(test)]
mod tests;
