//! The STOMP decoder on arbitrary bytes: it never panics, reading in pieces
//! gives the same frames as reading at once, and every frame it accepts
//! encodes back to bytes that decode to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portico_broker::stomp::{decode, Decoded, Frame, FrameBuffer, Limits, StompError};

const LIMITS: Limits = Limits {
    max_frame_size: 64 * 1024,
    max_headers: 16,
    max_header_length: 1024,
};

fuzz_target!(|data: &[u8]| {
    // The first byte sets the size of each read.
    let Some((&step, bytes)) = data.split_first() else {
        return;
    };
    let whole = all_at_once(bytes);
    assert_eq!(whole, in_pieces(bytes, usize::from(step) + 1));
    for decoded in &whole.0 {
        if let Decoded::Frame(frame) = decoded {
            round_trip(frame);
        }
    }
});

type Outcome = (Vec<Decoded>, Option<StompError>);

fn all_at_once(bytes: &[u8]) -> Outcome {
    let mut buf = bytes.to_vec();
    let mut out = Vec::new();
    loop {
        match decode(&mut buf, &LIMITS) {
            Ok(Some(decoded)) => out.push(decoded),
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e)),
        }
    }
}

fn in_pieces(bytes: &[u8], step: usize) -> Outcome {
    let mut buf = FrameBuffer::new();
    let mut out = Vec::new();
    for piece in bytes.chunks(step) {
        buf.spare(piece.len()).extend_from_slice(piece);
        loop {
            match buf.next(&LIMITS) {
                Ok(Some(decoded)) => out.push(decoded),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

/// Encoding writes the true content-length, so that header is compared apart.
fn round_trip(frame: &Frame) {
    let bytes = frame.to_bytes();
    let roomy = Limits {
        max_frame_size: 4 * bytes.len() + 1024,
        max_headers: 2 * frame.headers.len() + 2,
        max_header_length: 4 * LIMITS.max_header_length,
    };
    let mut buf = bytes.clone();
    let again = match decode(&mut buf, &roomy) {
        Ok(Some(Decoded::Frame(f))) => f,
        other => panic!("{frame:?} encoded as {bytes:?} decoded as {other:?}"),
    };
    assert!(buf.is_empty(), "{bytes:?} left {buf:?}");
    let without_length = |f: &Frame| -> Vec<(String, String)> {
        f.headers
            .iter()
            .filter(|(n, _)| n != "content-length")
            .cloned()
            .collect()
    };
    assert_eq!(frame.command, again.command);
    assert_eq!(without_length(frame), without_length(&again));
    assert_eq!(frame.body, again.body);
}
