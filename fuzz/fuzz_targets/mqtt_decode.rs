//! The MQTT decoder on arbitrary bytes: it never panics, a packet it
//! accepts encodes back to bytes that decode to the same packet, and
//! reading a stream in pieces finds the same packets as reading it at once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portico_broker::mqtt::{decode, encode, Packet};

const MAX: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let whole = packets(data);
    for packet in &whole.0 {
        let mut bytes = Vec::new();
        encode(packet, &mut bytes);
        let (again, used) = decode(&bytes, usize::MAX)
            .expect("what was decoded encodes to a valid packet")
            .expect("a whole packet");
        assert_eq!(used, bytes.len());
        assert_eq!(&again, packet);
    }
    for cut in [1, data.len() / 2] {
        if cut == 0 || cut >= data.len() {
            continue;
        }
        let first = packets(&data[..cut]);
        assert!(first.0.len() <= whole.0.len());
        assert_eq!(first.0, whole.0[..first.0.len()]);
    }
});

/// The packets at the start of `bytes`, and whether an error stopped them.
fn packets(bytes: &[u8]) -> (Vec<Packet>, bool) {
    let mut at = 0;
    let mut out = Vec::new();
    loop {
        match decode(&bytes[at..], MAX) {
            Ok(Some((packet, used))) => {
                out.push(packet);
                at += used;
            }
            Ok(None) => return (out, false),
            Err(_) => return (out, true),
        }
    }
}
