//! Decoding STOMP frames from a byte buffer, sans IO, within limits.

use super::frame::{unescape, Command, Frame};

/// What a connection may send; anything over a limit is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Command, headers and body together.
    pub max_frame_size: usize,
    pub max_headers: usize,
    /// One header line, name and value.
    pub max_header_length: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_size: 4 * 1024 * 1024,
            max_headers: 64,
            max_header_length: 8 * 1024,
        }
    }
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StompError {
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    #[error("frame larger than {limit} bytes")]
    FrameTooLarge { limit: usize },
    #[error("more than {limit} headers")]
    TooManyHeaders { limit: usize },
    #[error("header line longer than {limit} bytes")]
    HeaderTooLong { limit: usize },
    #[error("malformed header line {0:?}")]
    MalformedHeader(String),
    #[error("invalid content-length {0:?}")]
    BadContentLength(String),
    #[error("the body is longer than its content-length: no NUL after {0} bytes")]
    BodyOverrun(usize),
}

/// The outcome of one decoding step.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Frame(Frame),
    /// A bare end-of-line: a heart-beat.
    HeartBeat,
}

/// Decodes the next frame or heart-beat from the front of `buf`, removing
/// what it consumed. `Ok(None)`: more bytes are needed.
pub fn decode(buf: &mut Vec<u8>, limits: &Limits) -> Result<Option<Decoded>, StompError> {
    let decoded = decode_front(buf, limits)?;
    Ok(decoded.map(|(decoded, used)| {
        buf.drain(..used);
        decoded
    }))
}

/// Bytes read from a connection, frames taken from the front.
///
/// Consumed bytes are dropped once per read, not once per frame, so a read
/// that brought many frames is not shifted down the buffer for each.
#[derive(Debug, Default)]
pub struct FrameBuffer {
    bytes: Vec<u8>,
    /// Where the next frame starts.
    start: usize,
}

impl FrameBuffer {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next frame or heart-beat; `Ok(None)`: read more (into [`Self::spare`]).
    pub fn next(&mut self, limits: &Limits) -> Result<Option<Decoded>, StompError> {
        let decoded = decode_front(&self.bytes[self.start..], limits)?;
        Ok(decoded.map(|(decoded, used)| {
            self.start += used;
            decoded
        }))
    }

    /// The buffer to append the next read to, with room for `at_least` bytes.
    pub fn spare(&mut self, at_least: usize) -> &mut Vec<u8> {
        if self.start > 0 {
            self.bytes.drain(..self.start);
            self.start = 0;
        }
        self.bytes.reserve(at_least);
        &mut self.bytes
    }
}

/// Decodes the next frame or heart-beat at the front of `buf`; returns it
/// with the number of bytes it took.
fn decode_front(buf: &[u8], limits: &Limits) -> Result<Option<(Decoded, usize)>, StompError> {
    // Heart-beats: EOLs between frames.
    match buf.first() {
        None => return Ok(None),
        Some(b'\n') => return Ok(Some((Decoded::HeartBeat, 1))),
        Some(b'\r') => {
            return match buf.get(1) {
                None => Ok(None),
                Some(b'\n') => Ok(Some((Decoded::HeartBeat, 2))),
                Some(_) => Err(StompError::UnknownCommand("\\r".into())),
            };
        }
        Some(_) => {}
    }
    // The head ends at the first blank line.
    let Some(head_end) = find_head_end(buf) else {
        check_partial_head(buf, limits)?;
        return Ok(None);
    };
    let (head_len, body_start) = head_end;
    let head = &buf[..head_len];
    let mut lines = head.split(|&b| b == b'\n').map(strip_cr);
    let command_line = lines.next().unwrap_or_default();
    let command = Command::parse(command_line).ok_or_else(|| {
        StompError::UnknownCommand(
            String::from_utf8_lossy(&command_line[..command_line.len().min(64)]).into_owned(),
        )
    })?;
    let escape = !matches!(
        command,
        Command::Connect | Command::Stomp | Command::Connected
    );
    let mut headers = Vec::new();
    for line in lines {
        if line.len() > limits.max_header_length {
            return Err(StompError::HeaderTooLong {
                limit: limits.max_header_length,
            });
        }
        if headers.len() == limits.max_headers {
            return Err(StompError::TooManyHeaders {
                limit: limits.max_headers,
            });
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| StompError::MalformedHeader(lossy(line)))?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let decode_part = |part: &[u8]| {
            if escape {
                unescape(part)
            } else {
                String::from_utf8(part.to_vec()).ok()
            }
        };
        let (Some(name), Some(value)) = (decode_part(name), decode_part(value)) else {
            return Err(StompError::MalformedHeader(lossy(line)));
        };
        headers.push((name, value));
    }
    let content_length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| {
            v.trim()
                .parse::<usize>()
                .map_err(|_| StompError::BadContentLength(v.clone()))
        })
        .transpose()?;
    let body_len = match content_length {
        Some(len) => {
            if body_start + len + 1 > limits.max_frame_size {
                return Err(StompError::FrameTooLarge {
                    limit: limits.max_frame_size,
                });
            }
            if buf.len() < body_start + len + 1 {
                return Ok(None);
            }
            if buf[body_start + len] != 0 {
                return Err(StompError::BodyOverrun(len));
            }
            len
        }
        None => match buf[body_start..].iter().position(|&b| b == 0) {
            Some(len) => len,
            None => {
                if buf.len() >= limits.max_frame_size {
                    return Err(StompError::FrameTooLarge {
                        limit: limits.max_frame_size,
                    });
                }
                return Ok(None);
            }
        },
    };
    let body = buf[body_start..body_start + body_len].to_vec();
    let frame = Frame {
        command,
        headers,
        body,
    };
    Ok(Some((Decoded::Frame(frame), body_start + body_len + 1)))
}

/// (length of the head without its final EOLs, offset of the body).
fn find_head_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while let Some(pos) = buf[i..].iter().position(|&b| b == b'\n') {
        let at = i + pos;
        let rest = &buf[at + 1..];
        if rest.first() == Some(&b'\n') {
            return Some((strip_cr(&buf[..at]).len(), at + 2));
        }
        if rest.starts_with(b"\r\n") {
            return Some((strip_cr(&buf[..at]).len(), at + 3));
        }
        i = at + 1;
    }
    None
}

/// Bounds what an unfinished head may hold.
fn check_partial_head(buf: &[u8], limits: &Limits) -> Result<(), StompError> {
    if buf.len() > limits.max_frame_size {
        return Err(StompError::FrameTooLarge {
            limit: limits.max_frame_size,
        });
    }
    let mut lines = buf.split(|&b| b == b'\n');
    let first = lines.next().unwrap_or_default();
    if first.len() > 16 && Command::parse(strip_cr(first)).is_none() {
        return Err(StompError::UnknownCommand(lossy(&first[..16])));
    }
    let mut count = 0;
    for line in buf.split(|&b| b == b'\n').skip(1) {
        count += 1;
        if line.len() > limits.max_header_length {
            return Err(StompError::HeaderTooLong {
                limit: limits.max_header_length,
            });
        }
    }
    if count > limits.max_headers + 1 {
        return Err(StompError::TooManyHeaders {
            limit: limits.max_headers,
        });
    }
    Ok(())
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(128)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(bytes: &[u8]) -> Result<Vec<Decoded>, StompError> {
        let mut buf = bytes.to_vec();
        let mut out = Vec::new();
        while let Some(d) = decode(&mut buf, &Limits::default())? {
            out.push(d);
        }
        Ok(out)
    }

    #[test]
    fn decodes_frames_heartbeats_and_escapes() {
        let input = b"\nSEND\ndestination:/queue/a\nkey:a\\cb\\\\c\\nd\n\nhello\0\r\nCONNECT\nlogin:u:x\r\n\r\n\0";
        let out = decode_all(input).unwrap();
        assert_eq!(out[0], Decoded::HeartBeat);
        let Decoded::Frame(send) = &out[1] else {
            panic!()
        };
        assert_eq!(send.command, Command::Send);
        assert_eq!(send.get("key"), Some("a:b\\c\nd"));
        assert_eq!(send.body, b"hello");
        assert_eq!(out[2], Decoded::HeartBeat);
        let Decoded::Frame(connect) = &out[3] else {
            panic!()
        };
        assert_eq!(
            connect.get("login"),
            Some("u:x"),
            "CONNECT headers are not unescaped"
        );
    }

    #[test]
    fn content_length_bodies_may_hold_nul_bytes() {
        let frame = Frame::new(Command::Send)
            .header("destination", "/queue/bin")
            .body(vec![0u8, 1, 0, 2, 0]);
        let out = decode_all(&frame.to_bytes()).unwrap();
        assert_eq!(
            out,
            vec![Decoded::Frame(frame.header("content-length", "5"))]
        );
    }

    #[test]
    fn the_first_of_repeated_headers_wins() {
        let out = decode_all(b"MESSAGE\nfoo:1\nfoo:2\n\n\0").unwrap();
        let Decoded::Frame(f) = &out[0] else { panic!() };
        assert_eq!(f.get("foo"), Some("1"));
    }

    #[test]
    fn bad_input_is_an_error() {
        let cases: &[(&[u8], &str)] = &[
            (b"HELLO\n\n\0", "unknown command"),
            (b"SEND\nno-colon\n\n\0", "malformed header"),
            (b"SEND\nbad:esc\\t\n\n\0", "malformed header"),
            (b"SEND\ncontent-length:x\n\n\0", "content-length"),
            (
                b"SEND\ncontent-length:2\n\nabc\0",
                "longer than its content-length",
            ),
            (b"GET / HTTP/1.1 and more bytes", "unknown command"),
        ];
        for (input, want) in cases {
            let err = decode_all(input).unwrap_err().to_string();
            assert!(
                err.contains(want),
                "{:?}: {err}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn limits_bound_what_is_buffered() {
        let limits = Limits {
            max_frame_size: 1024,
            max_headers: 3,
            max_header_length: 32,
        };
        let mut huge = b"SEND\n\n".to_vec();
        huge.extend(std::iter::repeat_n(b'x', 2000));
        assert!(matches!(
            decode(&mut huge, &limits),
            Err(StompError::FrameTooLarge { .. })
        ));
        let mut long = b"SEND\nh:".to_vec();
        long.extend(std::iter::repeat_n(b'x', 100));
        assert!(matches!(
            decode(&mut long, &limits),
            Err(StompError::HeaderTooLong { .. })
        ));
        let mut many = b"SEND\na:1\nb:2\nc:3\nd:4\ne:5\n".to_vec();
        assert!(matches!(
            decode(&mut many, &limits),
            Err(StompError::TooManyHeaders { .. })
        ));
        let mut declared = b"SEND\ncontent-length:5000\n\n".to_vec();
        assert!(matches!(
            decode(&mut declared, &limits),
            Err(StompError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn split_input_decodes_the_same() {
        let frame = Frame::new(Command::Message)
            .header("destination", "/topic/t")
            .header("message-id", "ID:1")
            .body("payload");
        let bytes = frame.to_bytes();
        for cut in 0..bytes.len() {
            let mut buf = bytes[..cut].to_vec();
            assert_eq!(decode(&mut buf, &Limits::default()), Ok(None), "cut {cut}");
            buf.extend_from_slice(&bytes[cut..]);
            assert!(matches!(
                decode(&mut buf, &Limits::default()),
                Ok(Some(Decoded::Frame(_)))
            ));
            assert!(buf.is_empty());
        }
    }

    fn command() -> impl Strategy<Value = Command> {
        prop_oneof![
            Just(Command::Send),
            Just(Command::Message),
            Just(Command::Subscribe),
            Just(Command::Ack),
            Just(Command::Error),
            Just(Command::Receipt),
        ]
    }

    proptest! {
        #[test]
        fn any_frame_round_trips(
            command in command(),
            headers in proptest::collection::vec(("[a-z\\-:\\\\\n\r]{1,12}", ".{0,20}"), 0..8),
            body in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let headers: Vec<(String, String)> = headers
                .into_iter()
                .filter(|(n, _)| n != "content-length")
                .collect();
            let frame = Frame { command, headers, body };
            let mut buf = frame.to_bytes();
            let decoded = decode(&mut buf, &Limits::default()).unwrap();
            let Some(Decoded::Frame(mut got)) = decoded else { panic!("no frame") };
            got.headers.retain(|(n, _)| n != "content-length");
            let mut want = frame.clone();
            want.headers.retain(|(n, _)| n != "content-length");
            prop_assert_eq!(got, want);
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut buf = bytes;
            let limits = Limits { max_frame_size: 256, max_headers: 4, max_header_length: 64 };
            for _ in 0..600 {
                match decode(&mut buf, &limits) {
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}
