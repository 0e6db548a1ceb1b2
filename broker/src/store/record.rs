//! Journal records and their binary form:
//! `[u32 length][u32 crc32 of payload][payload]`, little-endian.

/// A message as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub id: u64,
    pub destination: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The user who sent it, when a client did (it scopes the message's
    /// dedup id). Written after the body; records without it read as `None`.
    pub sender: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Record {
    Add(StoredMessage),
    Ack {
        id: u64,
    },
    /// Message `from` is replaced by `to` (a dead letter): one record, so
    /// a crash leaves either the one or the other, never both or neither.
    Move {
        from: u64,
        to: StoredMessage,
    },
}

const ADD: u8 = 1;
const ACK: u8 = 2;
const MOVE: u8 = 3;
/// Length and checksum.
pub(crate) const HEADER: usize = 8;

impl Record {
    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; HEADER]);
        match self {
            Self::Add(m) => {
                out.push(ADD);
                put_message(out, m);
            }
            Self::Ack { id } => {
                out.push(ACK);
                out.extend_from_slice(&id.to_le_bytes());
            }
            Self::Move { from, to } => {
                out.push(MOVE);
                out.extend_from_slice(&from.to_le_bytes());
                put_message(out, to);
            }
        }
        let payload_len = (out.len() - start - HEADER) as u32;
        let crc = crc32fast::hash(&out[start + HEADER..]);
        out[start..start + 4].copy_from_slice(&payload_len.to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }

    /// Reads the record at the front of `buf`: `Ok(None)` if `buf` ends
    /// before the record does (a torn tail), `Err` if it is corrupt.
    pub(super) fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, Corruption> {
        if buf.len() < HEADER {
            return Ok(None);
        }
        let len = u32::from_le_bytes(buf[0..4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(buf[4..8].try_into().unwrap_or_default());
        let Some(payload) = buf.get(HEADER..HEADER + len) else {
            return Ok(None);
        };
        if crc32fast::hash(payload) != crc {
            return Err(Corruption::Checksum);
        }
        let mut r = Reader(payload);
        let record = match r.u8()? {
            ADD => Self::Add(r.message()?),
            ACK => Self::Ack { id: r.u64()? },
            MOVE => Self::Move {
                from: r.u64()?,
                to: r.message()?,
            },
            other => return Err(Corruption::UnknownKind(other)),
        };
        Ok(Some((record, HEADER + len)))
    }
}

/// What is wrong with a record that is all there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    #[error("checksum mismatch")]
    Checksum,
    #[error("record shorter than its fields")]
    Short,
    #[error("invalid UTF-8 in a record")]
    Utf8,
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    #[error("truncated record before the last segment")]
    Truncated,
}

impl Record {
    /// What the record does: the message it acknowledges (takes out of
    /// the journal's live set), then the one it adds.
    pub(super) fn into_parts(self) -> (Option<u64>, Option<StoredMessage>) {
        match self {
            Self::Add(m) => (None, Some(m)),
            Self::Ack { id } => (Some(id), None),
            Self::Move { from, to } => (Some(from), Some(to)),
        }
    }
}

/// A message's fields; its sender last (records written before senders
/// were kept end after the body).
fn put_message(out: &mut Vec<u8>, m: &StoredMessage) {
    out.extend_from_slice(&m.id.to_le_bytes());
    put_bytes(out, m.destination.as_bytes());
    out.extend_from_slice(&(m.headers.len() as u32).to_le_bytes());
    for (name, value) in &m.headers {
        put_bytes(out, name.as_bytes());
        put_bytes(out, value.as_bytes());
    }
    put_bytes(out, &m.body);
    if let Some(sender) = &m.sender {
        put_bytes(out, sender.as_bytes());
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Corruption> {
        if self.0.len() < n {
            return Err(Corruption::Short);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Corruption> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, Corruption> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().unwrap_or_default(),
        ))
    }

    fn u64(&mut self) -> Result<u64, Corruption> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or_default(),
        ))
    }

    fn bytes(&mut self) -> Result<&'a [u8], Corruption> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn message(&mut self) -> Result<StoredMessage, Corruption> {
        let id = self.u64()?;
        let destination = self.string()?;
        let count = self.u32()? as usize;
        let mut headers = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            headers.push((self.string()?, self.string()?));
        }
        let body = self.bytes()?.to_vec();
        let sender = if self.0.is_empty() {
            None
        } else {
            Some(self.string()?)
        };
        Ok(StoredMessage {
            id,
            destination,
            headers,
            body,
            sender,
        })
    }

    fn string(&mut self) -> Result<String, Corruption> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| Corruption::Utf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(sender: Option<&str>) -> Record {
        Record::Add(StoredMessage {
            id: 7,
            destination: "/queue/a".into(),
            headers: vec![("k".into(), "v".into())],
            body: b"body".to_vec(),
            sender: sender.map(str::to_owned),
        })
    }

    #[test]
    fn adds_round_trip_with_and_without_a_sender() {
        for record in [add(Some("app")), add(None)] {
            let mut out = Vec::new();
            record.encode(&mut out);
            let (read, used) = Record::decode(&out).unwrap().unwrap();
            assert_eq!((read, used), (record, out.len()));
        }
    }
}
