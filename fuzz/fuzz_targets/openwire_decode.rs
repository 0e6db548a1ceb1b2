//! The OpenWire decoder on arbitrary bytes: it never panics, a frame it
//! accepts encodes back to bytes that decode to the same command, and
//! reading a stream in pieces finds the same frames as reading it at once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portico_broker::openwire::{decode, decode_frame, encode};

const MAX: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    // As one command's bytes (after the size prefix).
    if let Ok(command) = decode(data) {
        let mut bytes = Vec::new();
        encode(&command, &mut bytes);
        let (again, used) = decode_frame(&bytes, usize::MAX >> 1)
            .expect("what was decoded encodes to a valid frame")
            .expect("a whole frame");
        assert_eq!(used, bytes.len());
        assert_eq!(again, command);
    }
    // As a stream of frames, whole and cut in two.
    let whole = frames(data);
    for cut in [1, data.len() / 2] {
        if cut == 0 || cut >= data.len() {
            continue;
        }
        let first = frames(&data[..cut]);
        assert!(first.0.len() <= whole.0.len());
        assert_eq!(first.0, whole.0[..first.0.len()]);
    }
});

/// The frames at the start of `bytes`, and whether an error stopped them.
fn frames(bytes: &[u8]) -> (Vec<portico_broker::openwire::Command>, bool) {
    let mut at = 0;
    let mut out = Vec::new();
    loop {
        match decode_frame(&bytes[at..], MAX) {
            Ok(Some((command, used))) => {
                out.push(command);
                at += used;
            }
            Ok(None) => return (out, false),
            Err(_) => return (out, true),
        }
    }
}
