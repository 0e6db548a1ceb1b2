//! TLS 1.3 records after the handshake, opened and sealed in place.
//!
//! rustls's unbuffered API copies every record it decrypts into a vector of
//! its own, and every record it encrypts into another before the caller's
//! buffer: a relay moving bulk bytes pays two extra copies and two
//! allocations per record on each leg. Once a TLS 1.3 handshake is done, the
//! stream takes the traffic secrets from rustls
//! (`dangerous_into_kernel_connection`, the API made for kTLS) and protects
//! the records itself, in the buffers it holds anyway: a record is decrypted
//! where it was read, and plaintext is encrypted straight into the buffer
//! the socket is written from. rustls keeps what only it knows: the next
//! traffic secret at a key update, and what a server's session tickets mean.
//!
//! The rules are RFC 8446's (§5.2 the record, §5.3 the nonce, §5.5 the
//! limits on a key, §4.6.3 key updates), with rustls's limits on what a peer
//! may repeat: key update requests and empty records, 32 in a row each;
//! warning alerts, 4.

use std::ops::Range;

use aws_lc_rs::aead::{
    Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM, CHACHA20_POLY1305, NONCE_LEN,
};
use rustls::client::ClientConnectionData;
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::{
    AlertDescription, ConnectionTrafficSecrets, Error, HandshakeType, InvalidMessage,
    PeerMisbehaved, SupportedCipherSuite,
};

use super::stream::Bytes;

/// A record's header: content type, legacy version, length.
pub(crate) const HEADER: usize = 5;
const TAG: usize = 16;
/// The most plaintext one record carries (2^14 bytes).
pub(crate) const MAX_FRAGMENT: usize = 16 * 1024;
/// The largest protected record body a peer may send (2^14 + 256).
pub(crate) const MAX_CIPHERTEXT: usize = MAX_FRAGMENT + 256;
/// The largest post-handshake message taken in (rustls's own limit).
const MAX_HANDSHAKE_MESSAGE: usize = 64 * 1024;

const APPLICATION_DATA: u8 = 23;
const HANDSHAKE: u8 = 22;
const ALERT: u8 = 21;

const NEW_SESSION_TICKET: u8 = 4;
const KEY_UPDATE: u8 = 24;

const CLOSE_NOTIFY: u8 = 0;
const USER_CANCELED: u8 = 90;

/// Key update requests, and empty records, accepted in a row.
const IN_A_ROW: u8 = 32;
/// Warning alerts accepted over a connection's life.
const WARNINGS: u8 = 4;

/// Whether a cipher suite's records can be protected here: the three AEADs
/// of TLS 1.3 that rustls offers.
pub(crate) fn supported(suite: SupportedCipherSuite) -> bool {
    matches!(suite, SupportedCipherSuite::Tls13(_))
}

/// One direction's key, fixed IV and record sequence number.
struct Keys {
    key: LessSafeKey,
    iv: [u8; NONCE_LEN],
    seq: u64,
}

impl Keys {
    fn new((seq, secrets): (u64, ConnectionTrafficSecrets)) -> Result<Self, Error> {
        let (algorithm, key, iv) = match &secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (&CHACHA20_POLY1305, key, iv),
            _ => return Err(Error::General("unsupported record protection".into())),
        };
        let key = UnboundKey::new(algorithm, key.as_ref())
            .map_err(|_| Error::General("traffic key of the wrong size".into()))?;
        let iv = iv
            .as_ref()
            .try_into()
            .map_err(|_| Error::General("traffic IV of the wrong size".into()))?;
        Ok(Self {
            key: LessSafeKey::new(key),
            iv,
            seq,
        })
    }

    /// The next record's nonce: the IV with the sequence number XORed into
    /// its last eight bytes (RFC 8446 §5.3).
    fn next_nonce(&mut self) -> Result<Nonce, Error> {
        let mut nonce = self.iv;
        for (byte, seq) in nonce[NONCE_LEN - 8..]
            .iter_mut()
            .zip(self.seq.to_be_bytes())
        {
            *byte ^= seq;
        }
        self.seq = self.seq.checked_add(1).ok_or(Error::EncryptError)?;
        Ok(Nonce::assume_unique_for_key(nonce))
    }
}

/// How a connection side takes a post-handshake NewSessionTicket.
pub(crate) trait Tickets: Sized {
    fn new_session_ticket(conn: &mut KernelConnection<Self>, payload: &[u8]) -> Result<(), Error>;
}

impl Tickets for ClientConnectionData {
    fn new_session_ticket(conn: &mut KernelConnection<Self>, payload: &[u8]) -> Result<(), Error> {
        conn.handle_new_session_ticket(payload)
    }
}

impl Tickets for ServerConnectionData {
    /// A client has no tickets to give.
    fn new_session_ticket(_: &mut KernelConnection<Self>, _: &[u8]) -> Result<(), Error> {
        Err(unexpected(NEW_SESSION_TICKET))
    }
}

fn unexpected(typ: u8) -> Error {
    Error::InappropriateHandshakeMessage {
        expect_types: vec![HandshakeType::NewSessionTicket, HandshakeType::KeyUpdate],
        got_type: HandshakeType::from(typ),
    }
}

/// What one record held, for the reader.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Opened {
    /// Application data: this range of the record, decrypted in place.
    Data(Range<usize>),
    /// Nothing to read (a handshake message, a warning, an empty record).
    Nothing,
    /// The peer's close_notify.
    Closed,
}

/// The record protection of one established TLS 1.3 connection.
pub(crate) struct Records<D> {
    conn: KernelConnection<D>,
    tx: Keys,
    rx: Keys,
    /// Records sealed with one key before it is replaced (the suite's
    /// confidentiality limit).
    tx_limit: u64,
    /// A post-handshake message whose records have not all arrived.
    handshake: Vec<u8>,
    key_update_requests: u8,
    empty_records: u8,
    warnings: u8,
}

impl<D> std::fmt::Debug for Records<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records")
            .field("tx_seq", &self.tx.seq)
            .field("rx_seq", &self.rx.seq)
            .finish_non_exhaustive()
    }
}

impl<D: Tickets> Records<D> {
    pub(crate) fn new(
        secrets: rustls::ExtractedSecrets,
        conn: KernelConnection<D>,
    ) -> Result<Self, Error> {
        let tx_limit = match conn.negotiated_cipher_suite() {
            SupportedCipherSuite::Tls13(suite) => suite.common.confidentiality_limit,
            _ => {
                return Err(Error::General(
                    "records are protected here for TLS 1.3".into(),
                ))
            }
        };
        Ok(Self {
            tx: Keys::new(secrets.tx)?,
            rx: Keys::new(secrets.rx)?,
            conn,
            tx_limit,
            handshake: Vec::new(),
            key_update_requests: 0,
            empty_records: 0,
            warnings: 0,
        })
    }

    /// Replaces the sending key after `records` records, not the suite's
    /// limit: a key update without sealing millions of records.
    #[cfg(test)]
    pub(crate) fn limit_records(&mut self, records: u64) {
        self.tx_limit = self.tx.seq + records;
    }

    /// The length of the whole record at the front of `data`, once its
    /// header is there; an error for a record no peer may send now.
    pub(crate) fn record_len(data: &[u8]) -> Result<Option<usize>, Error> {
        let Some(header) = data.get(..HEADER) else {
            return Ok(None);
        };
        // After the handshake every record is protected and says it is
        // application data (RFC 8446 §5.2).
        if header[0] != APPLICATION_DATA {
            return Err(InvalidMessage::InvalidContentType.into());
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len > MAX_CIPHERTEXT {
            return Err(Error::PeerSentOversizedRecord);
        }
        if len <= TAG {
            return Err(Error::DecryptError);
        }
        Ok(Some(HEADER + len))
    }

    /// Decrypts the whole record `record` in place. What the peer's
    /// messages call for (a key update answered) is sealed into `out`.
    pub(crate) fn open(&mut self, record: &mut [u8], out: &mut Bytes) -> Result<Opened, Error> {
        let (header, body) = record.split_at_mut(HEADER);
        let nonce = self.rx.next_nonce()?;
        let plain = self
            .rx
            .key
            .open_in_place(nonce, Aad::from(&*header), body)
            .map_err(|_| Error::DecryptError)?;
        // The content type is the last byte that is not padding.
        let Some(end) = plain.iter().rposition(|&b| b != 0) else {
            return Err(PeerMisbehaved::IllegalTlsInnerPlaintext.into());
        };
        if end > MAX_FRAGMENT {
            return Err(Error::PeerSentOversizedRecord);
        }
        let typ = plain[end];
        if typ != HANDSHAKE && !self.handshake.is_empty() {
            return Err(PeerMisbehaved::MessageInterleavedWithHandshakeMessage.into());
        }
        match typ {
            APPLICATION_DATA if end == 0 => {
                if self.empty_records == IN_A_ROW {
                    return Err(PeerMisbehaved::TooManyEmptyFragments.into());
                }
                self.empty_records += 1;
                Ok(Opened::Nothing)
            }
            APPLICATION_DATA => {
                self.empty_records = 0;
                self.key_update_requests = 0;
                Ok(Opened::Data(HEADER..HEADER + end))
            }
            HANDSHAKE if end > 0 => {
                self.empty_records = 0;
                self.handshake_messages(&plain[..end], out)?;
                Ok(Opened::Nothing)
            }
            ALERT => match plain[..end] {
                [_, CLOSE_NOTIFY] => Ok(Opened::Closed),
                [_, USER_CANCELED] if self.warnings < WARNINGS => {
                    self.warnings += 1;
                    Ok(Opened::Nothing)
                }
                [_, USER_CANCELED] => Err(PeerMisbehaved::TooManyWarningAlertsReceived.into()),
                [_, description] => Err(Error::AlertReceived(AlertDescription::from(description))),
                _ => Err(InvalidMessage::MessageTooShort.into()),
            },
            _ => Err(InvalidMessage::InvalidContentType.into()),
        }
    }

    /// Takes in the post-handshake messages of one record: session tickets
    /// (for rustls's store) and key updates.
    fn handshake_messages(&mut self, data: &[u8], out: &mut Bytes) -> Result<(), Error> {
        self.handshake.extend_from_slice(data);
        let mut at = 0;
        while let [typ, a, b, c, ..] = self.handshake[at..] {
            let len = u32::from_be_bytes([0, a, b, c]) as usize;
            if len > MAX_HANDSHAKE_MESSAGE {
                return Err(InvalidMessage::HandshakePayloadTooLarge.into());
            }
            let Some(payload) = self.handshake.get(at + 4..at + 4 + len) else {
                break;
            };
            let next = at + 4 + len;
            match typ {
                NEW_SESSION_TICKET => D::new_session_ticket(&mut self.conn, payload)?,
                KEY_UPDATE => {
                    let request = match payload {
                        [0] => false,
                        [1] => true,
                        _ => return Err(InvalidMessage::InvalidKeyUpdate.into()),
                    };
                    // The peer's next record is under the new key: nothing
                    // of this record may follow the message.
                    if next != self.handshake.len() {
                        return Err(PeerMisbehaved::KeyEpochWithPendingFragment.into());
                    }
                    self.rx = Keys::new(self.conn.update_rx_secret()?)?;
                    if request {
                        if self.key_update_requests == IN_A_ROW {
                            return Err(PeerMisbehaved::TooManyKeyUpdateRequests.into());
                        }
                        self.key_update_requests += 1;
                        self.update_tx(out)?;
                    }
                }
                other => return Err(unexpected(other)),
            }
            at = next;
        }
        if at == self.handshake.len() {
            self.handshake = Vec::new();
        } else {
            self.handshake.drain(..at);
            if self.handshake.len() > MAX_HANDSHAKE_MESSAGE + 4 {
                return Err(InvalidMessage::HandshakePayloadTooLarge.into());
            }
        }
        Ok(())
    }

    /// Tells the peer our next records are under a new key (not asking it
    /// to update its own), then moves to that key.
    fn update_tx(&mut self, out: &mut Bytes) -> Result<(), Error> {
        self.seal_record(HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 0], out)?;
        self.tx = Keys::new(self.conn.update_tx_secret()?)?;
        Ok(())
    }

    /// Seals `data` as application data into `out`, in records of at most
    /// [`MAX_FRAGMENT`] bytes.
    pub(crate) fn seal(&mut self, data: &[u8], out: &mut Bytes) -> Result<(), Error> {
        for fragment in data.chunks(MAX_FRAGMENT) {
            self.seal_record(APPLICATION_DATA, fragment, out)?;
        }
        Ok(())
    }

    /// Seals an alert: close_notify, or the fatal one an error calls for.
    pub(crate) fn seal_alert(
        &mut self,
        description: AlertDescription,
        out: &mut Bytes,
    ) -> Result<(), Error> {
        let level = if description == AlertDescription::CloseNotify {
            1
        } else {
            2
        };
        self.seal_record(ALERT, &[level, description.into()], out)
    }

    fn seal_record(&mut self, typ: u8, data: &[u8], out: &mut Bytes) -> Result<(), Error> {
        if self.tx.seq >= self.tx_limit && typ != HANDSHAKE {
            self.update_tx(out)?;
        }
        let len = data.len() + 1 + TAG;
        let room = out.extend_zeroed(HEADER + len);
        let (header, body) = room.split_at_mut(HEADER);
        header[0] = APPLICATION_DATA;
        header[1..3].copy_from_slice(&[3, 3]);
        header[3..].copy_from_slice(&(len as u16).to_be_bytes());
        // The plaintext is encrypted from where it lies into the record:
        // the data, then the content type, then the tag.
        let (cipher, typ_and_tag) = body.split_at_mut(data.len());
        let nonce = self.tx.next_nonce()?;
        self.tx
            .key
            .seal_out_of_place_scatter(
                nonce,
                Aad::from(&*header),
                data,
                cipher,
                &[typ],
                typ_and_tag,
            )
            .map_err(|_| Error::EncryptError)
    }
}

/// The alert an error is reported to the peer with, if any.
pub(crate) fn alert_for(error: &Error) -> Option<AlertDescription> {
    Some(match error {
        Error::AlertReceived(_) => return None,
        Error::DecryptError => AlertDescription::BadRecordMac,
        Error::PeerSentOversizedRecord => AlertDescription::RecordOverflow,
        Error::InvalidMessage(_) => AlertDescription::DecodeError,
        _ => AlertDescription::UnexpectedMessage,
    })
}
