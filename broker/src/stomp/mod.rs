//! STOMP 1.2 frames and their codec, without IO.

mod codec;
mod frame;

pub use codec::{decode, Decoded, Limits, StompError};
pub use frame::{Command, Frame};
