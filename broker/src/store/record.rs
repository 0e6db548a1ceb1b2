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
    Ack { id: u64 },
}

const ADD: u8 = 1;
const ACK: u8 = 2;
/// Length and checksum.
pub(crate) const HEADER: usize = 8;

impl Record {
    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; HEADER]);
        match self {
            Self::Add(m) => {
                out.push(ADD);
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
            Self::Ack { id } => {
                out.push(ACK);
                out.extend_from_slice(&id.to_le_bytes());
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
            ADD => {
                let id = r.u64()?;
                let destination = r.string()?;
                let count = r.u32()? as usize;
                let mut headers = Vec::with_capacity(count.min(1024));
                for _ in 0..count {
                    headers.push((r.string()?, r.string()?));
                }
                let body = r.bytes()?.to_vec();
                let sender = if r.0.is_empty() {
                    None
                } else {
                    Some(r.string()?)
                };
                Self::Add(StoredMessage {
                    id,
                    destination,
                    headers,
                    body,
                    sender,
                })
            }
            ACK => Self::Ack { id: r.u64()? },
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
