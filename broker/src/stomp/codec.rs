//! Decoding STOMP frames from a byte buffer, sans IO, within limits.

use super::frame::{unescape, Command, Frame, Version};

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
    let decoded = decode_front(buf, limits, Version::V1_2, &mut Progress::default())?;
    Ok(decoded.map(|(decoded, used)| {
        buf.drain(..used);
        decoded
    }))
}

/// Bytes read from a connection, frames taken from the front.
///
/// Consumed bytes are dropped once per read, not once per frame, so a read
/// that brought many frames is not shifted down the buffer for each; and
/// what was learnt of an unfinished frame is kept, so each read costs what
/// it brought, not what the frame holds so far.
#[derive(Debug, Default)]
pub struct FrameBuffer {
    bytes: Vec<u8>,
    /// Where the next frame starts.
    start: usize,
    progress: Progress,
    /// How the peer escapes headers (1.2 until CONNECT says otherwise).
    version: Version,
}

impl FrameBuffer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Frames from now on are read as the peer's `version` writes them
    /// (STOMP 1.0: no header escaping).
    pub fn set_version(&mut self, version: Version) {
        self.version = version;
    }

    /// The next frame or heart-beat; `Ok(None)`: read more (into [`Self::spare`]).
    pub fn next(&mut self, limits: &Limits) -> Result<Option<Decoded>, StompError> {
        let decoded = decode_front(
            &self.bytes[self.start..],
            limits,
            self.version,
            &mut self.progress,
        )?;
        Ok(decoded.map(|(decoded, used)| {
            self.start += used;
            self.progress = Progress::default();
            decoded
        }))
    }

    /// Gives back room beyond what unread bytes need (and a little more):
    /// for a connection about to wait, so a large frame it read earlier
    /// does not stay allocated meanwhile. Not for every frame: a busy
    /// connection would allocate the room again and again.
    pub fn trim(&mut self) {
        if self.start > 0 {
            self.bytes.drain(..self.start);
            self.start = 0;
        }
        if self.bytes.capacity() > KEPT_CAPACITY.max(2 * self.bytes.len()) {
            self.bytes.shrink_to(KEPT_CAPACITY.max(self.bytes.len()));
        }
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

/// Room a [`FrameBuffer`] keeps once it is empty.
const KEPT_CAPACITY: usize = 256 * 1024;

/// What is known of an unfinished frame; offsets count from its start.
#[derive(Debug, Default)]
struct Progress {
    /// Bytes already searched for the end of the head (or, once the head
    /// is parsed, for the body's NUL) without finding it.
    scanned: usize,
    /// The command, once its line is whole.
    command: Option<Command>,
    /// Header lines checked so far, and where the next one starts.
    lines: usize,
    next_line: usize,
    head: Option<Head>,
}

/// A parsed head waiting for its body.
#[derive(Debug)]
struct Head {
    command: Command,
    headers: Vec<(String, String)>,
    body_start: usize,
    content_length: Option<usize>,
}

/// Decodes the next frame or heart-beat at the front of `buf`; returns it
/// with the number of bytes it took. `progress` carries what earlier calls
/// learnt of the same unfinished frame (default: nothing).
fn decode_front(
    buf: &[u8],
    limits: &Limits,
    version: Version,
    progress: &mut Progress,
) -> Result<Option<(Decoded, usize)>, StompError> {
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
    if progress.head.is_none() {
        // The head ends at the first blank line.
        let Some((head_len, body_start)) = find_head_end(buf, progress.scanned) else {
            check_partial_head(buf, limits, version, progress)?;
            progress.scanned = buf.len();
            return Ok(None);
        };
        progress.head = Some(parse_head(&buf[..head_len], body_start, limits, version)?);
        progress.scanned = body_start;
    }
    let head = progress.head.as_ref().expect("parsed above");
    let body_start = head.body_start;
    let body_len = match head.content_length {
        Some(len) => {
            // Checked: a content-length near usize::MAX must not wrap around.
            if body_start.saturating_add(len).saturating_add(1) > limits.max_frame_size {
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
        None => {
            let from = progress.scanned.max(body_start);
            match buf[from..].iter().position(|&b| b == 0) {
                Some(at) => from + at - body_start,
                None => {
                    if buf.len() >= limits.max_frame_size {
                        return Err(StompError::FrameTooLarge {
                            limit: limits.max_frame_size,
                        });
                    }
                    progress.scanned = buf.len();
                    return Ok(None);
                }
            }
        }
    };
    let head = progress.head.take().expect("parsed above");
    let frame = Frame {
        command: head.command,
        headers: head.headers,
        body: buf[body_start..body_start + body_len].to_vec(),
    };
    Ok(Some((Decoded::Frame(frame), body_start + body_len + 1)))
}

/// The command and headers of a whole head (`head` without its blank line).
fn parse_head(
    head: &[u8],
    body_start: usize,
    limits: &Limits,
    version: Version,
) -> Result<Head, StompError> {
    let mut lines = head.split(|&b| b == b'\n').map(strip_cr);
    let command = command(lines.next().unwrap_or_default())?;
    let headers = lines
        .enumerate()
        .map(|(index, line)| header(line, index, command, limits, version))
        .collect::<Result<Vec<_>, _>>()?;
    let content_length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| {
            v.trim()
                .parse::<usize>()
                .map_err(|_| StompError::BadContentLength(v.clone()))
        })
        .transpose()?;
    Ok(Head {
        command,
        headers,
        body_start,
        content_length,
    })
}

/// (end of the head's last line, before its LF; offset of the body),
/// searching from `from` (bytes before it were searched already).
fn find_head_end(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    // Back up over what could be the start of the blank line: LF, CR.
    let mut i = from.saturating_sub(2);
    while let Some(pos) = buf[i..].iter().position(|&b| b == b'\n') {
        let at = i + pos;
        let rest = &buf[at + 1..];
        // The head keeps its last line's CR: lines are stripped one by one.
        if rest.first() == Some(&b'\n') {
            return Some((at, at + 2));
        }
        if rest.starts_with(b"\r\n") {
            return Some((at, at + 3));
        }
        i = at + 1;
    }
    None
}

/// How much of an unknown command an error shows: more than the longest
/// command, so a first line this long that is not a command is rejected
/// before its end arrives.
const COMMAND_SHOWN: usize = 16;

fn command(line: &[u8]) -> Result<Command, StompError> {
    Command::parse(line)
        .ok_or_else(|| StompError::UnknownCommand(lossy(&line[..line.len().min(COMMAND_SHOWN)])))
}

/// The `index`th (0-based) header line of a `command` frame, checked
/// against the limits in the order a head is read.
fn header(
    line: &[u8],
    index: usize,
    command: Command,
    limits: &Limits,
    version: Version,
) -> Result<(String, String), StompError> {
    if line.len() > limits.max_header_length {
        return Err(StompError::HeaderTooLong {
            limit: limits.max_header_length,
        });
    }
    if index == limits.max_headers {
        return Err(StompError::TooManyHeaders {
            limit: limits.max_headers,
        });
    }
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| StompError::MalformedHeader(lossy(line)))?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    let part = |part: &[u8]| {
        if version.escapes(command) {
            unescape(part)
        } else {
            String::from_utf8(part.to_vec()).ok()
        }
    };
    match (part(name), part(value)) {
        (Some(name), Some(value)) => Ok((name, value)),
        _ => Err(StompError::MalformedHeader(lossy(line))),
    }
}

/// Checks an unfinished head as far as it goes, with the same checks in
/// the same order as a whole one, so an error does not depend on how the
/// bytes arrived; what it may hold stays within the limits. Lines checked
/// by earlier calls (`progress`) are not checked again.
fn check_partial_head(
    buf: &[u8],
    limits: &Limits,
    version: Version,
    progress: &mut Progress,
) -> Result<(), StompError> {
    if buf.len() > limits.max_frame_size {
        return Err(StompError::FrameTooLarge {
            limit: limits.max_frame_size,
        });
    }
    while let Some(end) = buf[progress.next_line..].iter().position(|&b| b == b'\n') {
        let line = strip_cr(&buf[progress.next_line..progress.next_line + end]);
        match progress.command {
            None => progress.command = Some(command(line)?),
            Some(command) => {
                header(line, progress.lines, command, limits, version)?;
                progress.lines += 1;
            }
        }
        progress.next_line += end + 1;
    }
    // The line still arriving.
    let unfinished = strip_cr(&buf[progress.next_line..]);
    if progress.command.is_none() {
        // Not yet a whole command line: long enough not to be one?
        if unfinished.len() > COMMAND_SHOWN {
            command(unfinished)?;
        }
    } else if unfinished.len() > limits.max_header_length {
        // Too long already, however it ends (its count is checked once whole).
        return Err(StompError::HeaderTooLong {
            limit: limits.max_header_length,
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

    /// The error that ends `input` read in pieces of `step` bytes.
    fn error_in_pieces(input: &[u8], step: usize) -> Option<StompError> {
        let mut buf = FrameBuffer::new();
        for piece in input.chunks(step) {
            buf.spare(piece.len()).extend_from_slice(piece);
            loop {
                match buf.next(&Limits::default()) {
                    Ok(Some(_)) => continue,
                    Ok(None) => break,
                    Err(e) => return Some(e),
                }
            }
        }
        None
    }

    /// Found by the `stomp_decode` fuzz target: an unknown command was
    /// reported with more or less of its line depending on how much had
    /// arrived, and an unfinished head counted its lines before checking
    /// them (too many headers, where the whole head had a malformed one).
    #[test]
    fn an_error_reads_the_same_however_the_bytes_arrive() {
        let long_command =
            b"C\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0ONNECT\nhost:/\n\n\0".to_vec();
        let mut malformed_then_many = b"SEND\nno colon here\n".to_vec();
        for i in 0..100 {
            malformed_then_many.extend_from_slice(format!("h{i}:v\n").as_bytes());
        }
        malformed_then_many.extend_from_slice(b"\n\0");
        for (input, expected) in [
            (
                long_command,
                StompError::UnknownCommand("C\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0".into()),
            ),
            (
                malformed_then_many,
                StompError::MalformedHeader("no colon here".into()),
            ),
        ] {
            assert_eq!(decode_all(&input).unwrap_err(), expected);
            for step in [1, 3, 8, 64] {
                assert_eq!(
                    error_in_pieces(&input, step),
                    Some(expected.clone()),
                    "{step}"
                );
            }
        }
    }

    /// Found by the `stomp_decode` fuzz target (longer run): a
    /// content-length near usize::MAX overflowed the frame-size check.
    #[test]
    fn a_huge_content_length_is_too_large_not_an_overflow() {
        let input = format!(
            "SEND\ndestination:/queue/a\ncontent-length:{}\n\nx\0",
            usize::MAX
        );
        assert_eq!(
            decode_all(input.as_bytes()).unwrap_err(),
            StompError::FrameTooLarge {
                limit: Limits::default().max_frame_size
            }
        );
    }

    /// A frame trickled in one byte per read is decoded as it would be at
    /// once; each read costs what it brought (earlier reads' scanning is
    /// kept), not the whole frame so far again.
    #[test]
    fn a_frame_trickled_byte_by_byte_decodes_whole() {
        let limits = Limits {
            max_frame_size: 1024 * 1024,
            ..Limits::default()
        };
        let mut bytes = b"SEND\ndestination:/queue/slow\n".to_vec();
        for i in 0..40 {
            bytes.extend_from_slice(format!("h{i}:{}\n", "v".repeat(1000)).as_bytes());
        }
        bytes.push(b'\n');
        bytes.extend(std::iter::repeat_n(b'b', 512 * 1024));
        bytes.push(0);
        let mut buf = FrameBuffer::new();
        let mut frames = Vec::new();
        for &byte in &bytes {
            buf.spare(1).push(byte);
            if let Some(decoded) = buf.next(&limits).unwrap() {
                frames.push(decoded);
            }
        }
        let Some(Decoded::Frame(frame)) = frames.pop() else {
            panic!("no frame")
        };
        assert!(frames.is_empty());
        assert_eq!((frame.headers.len(), frame.body.len()), (41, 512 * 1024));
    }

    /// Found by the `stomp_decode` fuzz target: the last header line lost
    /// a CR of its value besides the one of its EOL.
    #[test]
    fn only_the_eol_cr_is_taken_from_the_last_header() {
        let out = decode_all(b"SEND\ndestination:/queue/a\nk:v\r\r\n\nbody\0").unwrap();
        let Decoded::Frame(send) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(send.get("k"), Some("v\r"));
    }

    /// Found by the `stomp_decode` fuzz target: CONNECT headers (written
    /// unescaped) lost every colon and CR, so a passcode with a colon in it
    /// reached the broker without it.
    #[test]
    fn connect_headers_keep_what_their_lines_can_carry() {
        let connect = Frame::new(Command::Connect)
            .header("login", "app")
            .header("passcode", "pa:ss\rword")
            .header("na\rme", "v\r")
            .header("bad:name\n", "multi\nline");
        let out = decode_all(&connect.to_bytes()).unwrap();
        let Decoded::Frame(read) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(read.get("passcode"), Some("pa:ss\rword"));
        assert_eq!(read.get("na\rme"), Some("v\r"));
        assert_eq!(read.get("badname"), Some("multiline"));
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
    fn trim_gives_back_room_and_keeps_what_is_unread() {
        let mut buf = FrameBuffer::new();
        let big = Frame::new(Command::Send)
            .body(vec![b'x'; 1024 * 1024])
            .to_bytes();
        buf.spare(0).extend_from_slice(&big);
        buf.spare(0).extend_from_slice(b"SEND\n\nrest");
        assert!(matches!(
            buf.next(&Limits::default()),
            Ok(Some(Decoded::Frame(_)))
        ));
        let before = buf.bytes.capacity();
        buf.trim();
        assert!(
            buf.bytes.capacity() < before / 2,
            "{} of {before}",
            buf.bytes.capacity()
        );
        buf.spare(0).extend_from_slice(b"\0");
        let Ok(Some(Decoded::Frame(rest))) = buf.next(&Limits::default()) else {
            panic!("the unread frame survives a trim")
        };
        assert_eq!(rest.body, b"rest");
    }

    /// STOMP 1.0 has no header escaping: a 1.0 session reads and writes
    /// backslashes and colons in values as they are.
    #[test]
    fn a_stomp_1_0_session_neither_escapes_nor_unescapes() {
        let message = Frame::new(Command::Message)
            .header("message-id", "ID:d1-5")
            .header("path", "C:\\dir")
            .header("multi", "a\nb");
        let bytes = message.to_bytes_as(Version::V1_0);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("message-id:ID:d1-5\n"), "{text:?}");
        assert!(text.contains("path:C:\\dir\n"), "{text:?}");
        assert!(
            text.contains("multi:ab\n"),
            "a newline cannot be written: {text:?}"
        );
        let mut buf = FrameBuffer::new();
        buf.set_version(Version::V1_0);
        buf.spare(0)
            .extend_from_slice(b"SEND\ndestination:/queue/a\nid:x\\cy\n\n\0");
        let Ok(Some(Decoded::Frame(send))) = buf.next(&Limits::default()) else {
            panic!("a 1.0 SEND decodes")
        };
        assert_eq!(send.get("id"), Some("x\\cy"), "taken as it is");
        // The same bytes from a 1.2 session are unescaped.
        let mut buf = FrameBuffer::new();
        buf.spare(0).extend_from_slice(b"SEND\nid:x\\cy\n\n\0");
        let Ok(Some(Decoded::Frame(send))) = buf.next(&Limits::default()) else {
            panic!("a 1.2 SEND decodes")
        };
        assert_eq!(send.get("id"), Some("x:y"));
    }

    #[test]
    fn stomp_1_1_escapes_all_but_cr() {
        let frame = Frame::new(Command::Message).header("k", "a:b\rc\\");
        let text = String::from_utf8(frame.to_bytes_as(Version::V1_1)).unwrap();
        assert!(text.contains("k:a\\cb\rc\\\\\n"), "{text:?}");
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
