//! STOMP 1.2 frames and their codec, without IO.

mod codec;
mod frame;

pub use codec::{decode, Decoded, FrameBuffer, Limits, StompError};
pub use frame::{encode_parts, encode_parts_as, parse_heart_beat, Command, Frame, Version};
