//! STOMP frames: commands, headers (with STOMP 1.2 escaping) and bodies.

use std::fmt;

/// A STOMP command, client or server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    Connect,
    Stomp,
    Connected,
    Send,
    Subscribe,
    Unsubscribe,
    Ack,
    Nack,
    Begin,
    Commit,
    Abort,
    Disconnect,
    Message,
    Receipt,
    Error,
}

impl Command {
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        Some(match bytes {
            b"CONNECT" => Self::Connect,
            b"STOMP" => Self::Stomp,
            b"CONNECTED" => Self::Connected,
            b"SEND" => Self::Send,
            b"SUBSCRIBE" => Self::Subscribe,
            b"UNSUBSCRIBE" => Self::Unsubscribe,
            b"ACK" => Self::Ack,
            b"NACK" => Self::Nack,
            b"BEGIN" => Self::Begin,
            b"COMMIT" => Self::Commit,
            b"ABORT" => Self::Abort,
            b"DISCONNECT" => Self::Disconnect,
            b"MESSAGE" => Self::Message,
            b"RECEIPT" => Self::Receipt,
            b"ERROR" => Self::Error,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "CONNECT",
            Self::Stomp => "STOMP",
            Self::Connected => "CONNECTED",
            Self::Send => "SEND",
            Self::Subscribe => "SUBSCRIBE",
            Self::Unsubscribe => "UNSUBSCRIBE",
            Self::Ack => "ACK",
            Self::Nack => "NACK",
            Self::Begin => "BEGIN",
            Self::Commit => "COMMIT",
            Self::Abort => "ABORT",
            Self::Disconnect => "DISCONNECT",
            Self::Message => "MESSAGE",
            Self::Receipt => "RECEIPT",
            Self::Error => "ERROR",
        }
    }

    /// CONNECT and CONNECTED frames carry their headers unescaped.
    pub(crate) fn escapes_headers(self) -> bool {
        !matches!(self, Self::Connect | Self::Stomp | Self::Connected)
    }
}

/// A STOMP protocol version, as CONNECT negotiated it: it decides how
/// header names and values are escaped on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Version {
    /// No escaping at all.
    V1_0,
    /// `\\`, `\n` and `\c`.
    V1_1,
    /// `\\`, `\n`, `\r` and `\c`.
    #[default]
    V1_2,
}

impl Version {
    /// Newest first: the order a server picks in.
    pub const ALL: [Self; 3] = [Self::V1_2, Self::V1_1, Self::V1_0];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1_0 => "1.0",
            Self::V1_1 => "1.1",
            Self::V1_2 => "1.2",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == text.trim())
    }

    /// Whether `command`'s headers are escaped in this version.
    pub(crate) fn escapes(self, command: Command) -> bool {
        self != Self::V1_0 && command.escapes_headers()
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One frame. Headers keep their order; when a name repeats, the first wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub command: Command,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Frame {
    pub fn new(command: Command) -> Self {
        Self {
            command,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The first value of header `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Serialises the frame for STOMP 1.2, with a `content-length` for any body.
    pub fn encode(&self, out: &mut Vec<u8>) {
        self.encode_as(Version::V1_2, out);
    }

    /// Serialises the frame for a session of `version`.
    pub fn encode_as(&self, version: Version, out: &mut Vec<u8>) {
        let headers = self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()));
        encode_parts_as(version, self.command, headers, &self.body, out);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_bytes_as(Version::V1_2)
    }

    pub fn to_bytes_as(&self, version: Version) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.body.len());
        self.encode_as(version, &mut out);
        out
    }
}

/// Serialises a STOMP 1.2 frame from borrowed parts (no [`Frame`] needed),
/// with a `content-length` for any body.
pub fn encode_parts<'a>(
    command: Command,
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    body: &[u8],
    out: &mut Vec<u8>,
) {
    encode_parts_as(Version::V1_2, command, headers, body, out);
}

/// [`encode_parts`] for a session of `version`: STOMP 1.0 has no header
/// escaping (what a line cannot carry is dropped, as for CONNECT), 1.1 no
/// `\r` escape (a CR is written as it is).
pub fn encode_parts_as<'a>(
    version: Version,
    command: Command,
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    body: &[u8],
    out: &mut Vec<u8>,
) {
    use std::io::Write as _;
    out.extend_from_slice(command.as_str().as_bytes());
    out.push(b'\n');
    let escape = version.escapes(command);
    let escape_cr = version >= Version::V1_2;
    let mut has_length = false;
    for (name, value) in headers {
        if name == "content-length" {
            has_length = true;
            // Always the true length, whatever a header said.
            let _ = writeln!(out, "content-length:{}", body.len());
            continue;
        }
        if escape {
            push_escaped(out, name, escape_cr);
            out.push(b':');
            push_escaped(out, value, escape_cr);
        } else {
            push_unescaped(out, name, b"\n:");
            out.push(b':');
            push_unescaped(out, value, b"\n");
            if value.ends_with('\r') {
                // End the line with CRLF, so the value keeps its own CR.
                out.push(b'\r');
            }
        }
        out.push(b'\n');
    }
    if !has_length && !body.is_empty() {
        let _ = writeln!(out, "content-length:{}", body.len());
    }
    out.push(b'\n');
    out.extend_from_slice(body);
    out.push(0);
}

fn push_escaped(out: &mut Vec<u8>, text: &str, escape_cr: bool) {
    // Most names and values have nothing to escape: copy them whole.
    let special = |b: u8| matches!(b, b'\\' | b'\n' | b':') || (escape_cr && b == b'\r');
    let Some(first) = text.bytes().position(special) else {
        out.extend_from_slice(text.as_bytes());
        return;
    };
    out.extend_from_slice(&text.as_bytes()[..first]);
    for b in text[first..].bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' if escape_cr => out.extend_from_slice(b"\\r"),
            b':' => out.extend_from_slice(b"\\c"),
            _ => out.push(b),
        }
    }
}

/// CONNECT and CONNECTED headers are not escaped: bytes that cannot be
/// written as they are (`unwritable`) are dropped. A colon is kept in a
/// value, where only the first colon of the line separates.
fn push_unescaped(out: &mut Vec<u8>, text: &str, unwritable: &[u8]) {
    out.extend(text.bytes().filter(|b| !unwritable.contains(b)));
}

/// A `heart-beat` header's two intervals in milliseconds (0: none); a
/// missing or malformed header means none either way.
pub fn parse_heart_beat(value: Option<&str>) -> (u64, u64) {
    let Some((x, y)) = value.and_then(|v| v.split_once(',')) else {
        return (0, 0);
    };
    (x.trim().parse().unwrap_or(0), y.trim().parse().unwrap_or(0))
}

/// Undoes STOMP 1.2 header escaping; `None` for an undefined escape.
pub(crate) fn unescape(raw: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter();
    while let Some(&b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next()? {
            b'\\' => out.push(b'\\'),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b'c' => out.push(b':'),
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}
