//! A TLS session over a TCP socket that holds memory only while bytes are
//! in flight.
//!
//! rustls's buffered connections keep a 4 KiB receive buffer for the life of
//! every connection once it has read anything: with both legs terminated,
//! 8 KiB of each idle proxied connection. This stream drives rustls's
//! unbuffered state machine instead and owns the three buffers itself —
//! ciphertext read, ciphertext to send, plaintext decrypted but not yet
//! read — each allocated when bytes arrive and freed once they are gone.
//! It reads only once the socket is readable, so a connection waiting for
//! its peer holds no buffer at all.
//!
//! After a TLS 1.3 handshake the stream protects the records itself (see
//! [`Records`]): a record is decrypted in place in the read buffer and read
//! from there ([`TlsStream::poll_chunk`]), and written plaintext is
//! encrypted straight into the write buffer. TLS 1.2 stays with rustls.
//!
//! Reads take up to [`READ_SIZE`] from the socket at once (four full
//! records). Written records go to the socket at once, or, for a stream
//! asked to gather them (the relay, which flushes whenever its reader
//! waits), once [`WRITE_AT`] of them wait.

use std::future::poll_fn;
use std::io;
use std::ops::DerefMut;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::kernel::KernelConnection;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedConnectionCommon,
    UnbufferedStatus,
};
use rustls::{ClientConfig, ExtractedSecrets, HandshakeKind, ServerConfig};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::records::{self, Opened, Records, Tickets};

/// What one socket read takes at most: four full records.
const READ_SIZE: usize = 64 * 1024;

/// The largest handshake flight taken in before it is processed (rustls's
/// own limit on a handshake message).
const MAX_HANDSHAKE: usize = 64 * 1024 + 5;

/// rustls's unbuffered client and server connections, driven alike.
pub(crate) trait Unbuffered:
    DerefMut<Target = UnbufferedConnectionCommon<Self::Data>> + Send + Unpin
{
    type Data: Tickets + Send + Unpin;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
    fn into_kernel(self)
        -> Result<(ExtractedSecrets, KernelConnection<Self::Data>), rustls::Error>;
}

impl Unbuffered for UnbufferedServerConnection {
    type Data = ServerConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, ServerConnectionData> {
        self.deref_mut().process_tls_records(incoming)
    }
    fn into_kernel(
        self,
    ) -> Result<(ExtractedSecrets, KernelConnection<Self::Data>), rustls::Error> {
        self.dangerous_into_kernel_connection()
    }
}

impl Unbuffered for UnbufferedClientConnection {
    type Data = ClientConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, ClientConnectionData> {
        self.deref_mut().process_tls_records(incoming)
    }
    fn into_kernel(
        self,
    ) -> Result<(ExtractedSecrets, KernelConnection<Self::Data>), rustls::Error> {
        self.dangerous_into_kernel_connection()
    }
}

/// A buffer emptied of at least this much is kept for the next use: a
/// busy stream reuses its memory (no allocation, no zeroing per record); one
/// that last moved less, as a quiet connection's heartbeats do, gives it up.
const KEEP: usize = 16 * 1024;

/// Bytes waiting to be used, front first; no allocation while empty unless
/// the last use was a busy one (see [`KEEP`]).
#[derive(Debug, Default)]
pub(crate) struct Bytes {
    /// Initialized memory: the bytes are `buf[start..end]`, the rest is
    /// room already zeroed.
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Bytes {
    pub(crate) fn from_vec(buf: Vec<u8>) -> Self {
        let end = buf.len();
        Self { buf, start: 0, end }
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn len(&self) -> usize {
        self.end - self.start
    }

    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }

    /// Drops `n` bytes from the front; once all are used, the memory goes
    /// (or stays, after a busy use).
    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start >= self.end {
            if self.end < KEEP {
                self.buf = Vec::new();
            }
            self.start = 0;
            self.end = 0;
        }
    }

    /// Makes room for `n` more bytes at the end, moving what is left to
    /// the front first when that is what it takes.
    fn reserve(&mut self, n: usize) {
        if self.make_room(n) {
            self.buf.reserve(n);
        }
    }

    /// Moves what is left to the front if the room at the end is short of
    /// `n`: true if the buffer must grow as well.
    fn make_room(&mut self, n: usize) -> bool {
        if self.start > 0 && self.buf.capacity() - self.end < n {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end + n > self.buf.capacity() {
            self.buf.truncate(self.end);
            return true;
        }
        false
    }

    /// `n` initialized bytes at the end for rustls to fill: give back what
    /// it did not use with [`Bytes::unfill`].
    pub(super) fn extend_zeroed(&mut self, n: usize) -> &mut [u8] {
        self.reserve(n);
        let from = self.end;
        self.end += n;
        if self.buf.len() < self.end {
            self.buf.resize(self.end, 0);
        }
        &mut self.buf[from..self.end]
    }

    fn unfill(&mut self, n: usize) {
        self.end -= n;
        if self.is_empty() {
            self.consume(0);
        }
    }

    /// Appends what `write` puts in the room it is given: asked first with
    /// none, it tells through `required` how much it needs.
    fn append<E: std::fmt::Display>(
        &mut self,
        mut write: impl FnMut(&mut [u8]) -> Result<usize, E>,
        required: impl Fn(&E) -> Option<usize>,
    ) -> io::Result<()> {
        let needed = match write(&mut []) {
            Ok(_) => return Ok(()),
            Err(e) => required(&e).ok_or_else(|| io::Error::other(e.to_string()))?,
        };
        let room = self.extend_zeroed(needed);
        let used = write(room).map_err(|e| io::Error::other(e.to_string()))?;
        self.unfill(needed - used);
        Ok(())
    }

    fn extend(&mut self, bytes: &[u8]) {
        self.extend_zeroed(bytes.len()).copy_from_slice(bytes);
    }

    /// Reads what the socket has now into the room at the end (tokio's
    /// read, which knows a short read drained the socket: no extra read
    /// to learn it would block).
    fn poll_read_from(
        &mut self,
        io: &mut TcpStream,
        cx: &mut Context<'_>,
        n: usize,
    ) -> Poll<io::Result<usize>> {
        // Grown to what a read takes, not doubled: what a read leaves over
        // is at most part of a record, so the buffer settles a record
        // beyond `n` and holds no more.
        if self.make_room(n) {
            self.buf.reserve_exact(n);
        }
        self.buf.truncate(self.end);
        let read = tokio_util::io::poll_read_buf(Pin::new(io), cx, &mut self.buf);
        self.end = self.buf.len();
        if self.is_empty() {
            self.consume(0);
        }
        read
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

/// Where [`TlsStream::drive`] stopped.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    /// rustls needs more bytes from the peer.
    NeedInput,
    /// Application data may be sent (and was, if some was given).
    Writable,
    /// Both sides have sent close_notify.
    Closed,
}

/// What [`TlsStream::drive`] is asked to do once rustls may send.
enum Emit<'a> {
    Nothing,
    Data(&'a [u8]),
    CloseNotify,
}

/// Who protects the records: rustls through the handshake (and for the
/// whole of a TLS 1.2 connection), then, for TLS 1.3, the stream itself.
// The rustls connection (about 1 KiB) is the larger of the two.
#[allow(clippy::large_enum_variant)]
enum Protection<C: Unbuffered> {
    Rustls(C),
    Records(Records<C::Data>),
    /// Only while one becomes the other.
    Moving,
}

/// The application data of the record at the front of `incoming`,
/// decrypted where it lies.
#[derive(Debug, Clone, Copy)]
struct Open {
    /// Not yet read: `incoming.data()[from..to]`.
    from: usize,
    to: usize,
    /// The whole record, dropped once its data is read.
    record: usize,
}

/// Ciphertext gathered before it is written, unless flushed first: what a
/// relay writes record by record goes out in one socket write.
const WRITE_AT: usize = 64 * 1024;

/// A TLS connection (client or server side) over a TCP socket.
pub(crate) struct TlsStream<C: Unbuffered> {
    io: TcpStream,
    protection: Protection<C>,
    /// The config lets the stream take the traffic secrets (see
    /// [`Records`]).
    extract: bool,
    /// How the handshake went (full or resumed).
    kind: Option<HandshakeKind>,
    /// Ciphertext read from the socket, not yet processed.
    incoming: Bytes,
    open: Option<Open>,
    /// Ciphertext to write to the socket.
    outgoing: Bytes,
    /// Plaintext decrypted by rustls, not yet read.
    plaintext: Bytes,
    /// The peer sent close_notify (or closed the socket between records).
    read_closed: bool,
    close_notify_sent: bool,
    /// Written records wait for a flush (or [`WRITE_AT`] of them).
    gather: bool,
}

impl<C: Unbuffered> std::fmt::Debug for TlsStream<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("io", &self.io)
            .field("incoming", &self.incoming.len())
            .field("outgoing", &self.outgoing.len())
            .field("plaintext", &self.plaintext.len())
            .finish_non_exhaustive()
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl TlsStream<UnbufferedClientConnection> {
    /// Connects as a client over `io` and completes the handshake.
    pub(crate) async fn connect(
        config: std::sync::Arc<ClientConfig>,
        name: ServerName<'static>,
        io: TcpStream,
    ) -> io::Result<Self> {
        let extract = config.enable_secret_extraction;
        let conn = UnbufferedClientConnection::new(config, name).map_err(tls_error)?;
        let mut stream = Self::new(io, conn, extract, Bytes::default());
        stream.handshake().await?;
        Ok(stream)
    }
}

impl TlsStream<UnbufferedServerConnection> {
    /// Serves the handshake over `io`, whose first bytes (the ClientHello
    /// already read to choose `config`) are `read`.
    pub(crate) async fn accept(
        config: std::sync::Arc<ServerConfig>,
        io: TcpStream,
        read: Bytes,
    ) -> io::Result<Self> {
        let extract = config.enable_secret_extraction;
        let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
        let mut stream = Self::new(io, conn, extract, read);
        stream.handshake().await?;
        Ok(stream)
    }
}

impl<C: Unbuffered> TlsStream<C> {
    fn new(io: TcpStream, conn: C, extract: bool, incoming: Bytes) -> Self {
        Self {
            io,
            protection: Protection::Rustls(conn),
            extract,
            kind: None,
            incoming,
            open: None,
            outgoing: Bytes::default(),
            plaintext: Bytes::default(),
            read_closed: false,
            close_notify_sent: false,
            gather: false,
        }
    }

    /// Whether the handshake was a full or a resumed one.
    pub(crate) fn handshake_kind(&self) -> Option<HandshakeKind> {
        self.kind
    }

    /// Whether the stream protects the records itself (TLS 1.3).
    #[cfg(test)]
    fn in_place(&self) -> bool {
        matches!(self.protection, Protection::Records(_))
    }

    async fn handshake(&mut self) -> io::Result<()> {
        poll_fn(|cx| self.poll_handshake(cx)).await
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let stop = self.drive(None, Emit::Nothing)?;
            ready!(self.poll_write_out(cx))?;
            if stop == Stop::Closed {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            if let Protection::Rustls(conn) = &self.protection {
                if !conn.is_handshaking() {
                    self.kind = conn.handshake_kind();
                    self.protect_records()?;
                    return Poll::Ready(Ok(()));
                }
            }
            if ready!(self.poll_fill(cx, MAX_HANDSHAKE))? == 0 {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed the connection during the TLS handshake",
                )));
            }
        }
    }

    /// After a TLS 1.3 handshake, takes the record protection over from
    /// rustls (see [`Records`]). rustls has sent all it had to send, and
    /// what it read past the handshake is either decrypted already (in
    /// `plaintext`) or still in `incoming`, where the stream goes on from
    /// the sequence number rustls reached.
    fn protect_records(&mut self) -> io::Result<()> {
        let Protection::Rustls(conn) = &self.protection else {
            return Ok(());
        };
        let tls13 = conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3);
        if !self.extract
            || !tls13
            || !conn
                .negotiated_cipher_suite()
                .is_some_and(records::supported)
        {
            return Ok(());
        }
        let Protection::Rustls(conn) = std::mem::replace(&mut self.protection, Protection::Moving)
        else {
            unreachable!("checked above")
        };
        let (secrets, kernel) = conn.into_kernel().map_err(tls_error)?;
        self.protection = Protection::Records(Records::new(secrets, kernel).map_err(tls_error)?);
        Ok(())
    }

    /// Runs rustls on what has been read until it needs more input or may
    /// send: handshake records go to `outgoing`, application data to `out`
    /// while it fits, else to `plaintext`. `send` is done once rustls may
    /// send application data.
    fn drive(&mut self, mut out: Option<&mut ReadBuf<'_>>, send: Emit<'_>) -> io::Result<Stop> {
        let Self {
            io,
            protection,
            incoming,
            outgoing,
            plaintext,
            read_closed,
            close_notify_sent,
            ..
        } = self;
        let Protection::Rustls(conn) = protection else {
            return Err(io::Error::other("TLS records are no longer rustls's"));
        };
        loop {
            let status = conn.process(incoming.data_mut());
            let mut discard = status.discard;
            let state = match status.state {
                Ok(state) => state,
                Err(e) => {
                    incoming.consume(discard);
                    // rustls queued an alert for the peer: send what the
                    // socket takes now, as the connection ends here.
                    Self::take_alert(conn, incoming, outgoing);
                    if let Ok(n) = io.try_write(outgoing.data()) {
                        outgoing.consume(n);
                    }
                    return Err(tls_error(e));
                }
            };
            match state {
                ConnectionState::ReadTraffic(mut traffic) => {
                    // Records were decrypted (and any failure reported) by
                    // `process`: rustls hands them out here.
                    while let Some(record) = traffic.next_record() {
                        let record = record.map_err(tls_error)?;
                        discard += record.discard;
                        let payload = record.payload;
                        match out.as_deref_mut() {
                            Some(buf) if plaintext.is_empty() && buf.remaining() > 0 => {
                                let n = payload.len().min(buf.remaining());
                                buf.put_slice(&payload[..n]);
                                plaintext.extend(&payload[n..]);
                            }
                            _ => plaintext.extend(payload),
                        }
                    }
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    outgoing.append(
                        |room| encode.encode(room),
                        |e| match e {
                            EncodeError::InsufficientSize(InsufficientSizeError {
                                required_size,
                            }) => Some(*required_size),
                            _ => None,
                        },
                    )?;
                }
                // What was encoded is in `outgoing`, which goes out in order
                // before anything encrypted after it.
                ConnectionState::TransmitTlsData(transmit) => transmit.done(),
                ConnectionState::PeerClosed => *read_closed = true,
                ConnectionState::Closed => {
                    incoming.consume(discard);
                    return Ok(Stop::Closed);
                }
                ConnectionState::BlockedHandshake => {
                    incoming.consume(discard);
                    return Ok(Stop::NeedInput);
                }
                ConnectionState::WriteTraffic(mut traffic) => {
                    incoming.consume(discard);
                    match send {
                        Emit::Nothing => {}
                        Emit::Data(data) => {
                            outgoing.append(
                                |room| traffic.encrypt(data, room),
                                |e| match e {
                                    EncryptError::InsufficientSize(InsufficientSizeError {
                                        required_size,
                                    }) => Some(*required_size),
                                    _ => None,
                                },
                            )?;
                        }
                        Emit::CloseNotify => {
                            let room = outgoing.extend_zeroed(64);
                            let used = traffic
                                .queue_close_notify(room)
                                .map_err(|e| io::Error::other(e.to_string()))?;
                            outgoing.unfill(64 - used);
                            *close_notify_sent = true;
                        }
                    }
                    return Ok(Stop::Writable);
                }
                _ => {
                    incoming.consume(discard);
                    return Err(io::Error::other("unexpected TLS state (early data)"));
                }
            }
            incoming.consume(discard);
        }
    }

    /// Encodes the alert rustls queued after an error. rustls hands out what
    /// it queued before it reads again, and may still point into the
    /// records it was given, so it sees them once more; asked a second
    /// time, it would read the failing record again.
    fn take_alert(conn: &mut C, incoming: &mut Bytes, outgoing: &mut Bytes) {
        if let Ok(ConnectionState::EncodeTlsData(mut encode)) =
            conn.process(incoming.data_mut()).state
        {
            let room = outgoing.extend_zeroed(64);
            let used = encode.encode(room).unwrap_or(0);
            outgoing.unfill(64 - used);
        }
    }

    /// Opens the record at the front of `incoming` if it is whole: false
    /// when more must be read first.
    fn open_next(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        let Protection::Records(records) = &mut self.protection else {
            return Err(io::Error::other("TLS records are rustls's"));
        };
        let opened = match Records::<C::Data>::record_len(self.incoming.data()) {
            Ok(None) => return Ok(false),
            Ok(Some(len)) if self.incoming.len() < len => return Ok(false),
            Ok(Some(len)) => records
                .open(&mut self.incoming.data_mut()[..len], &mut self.outgoing)
                .map(|opened| (opened, len)),
            Err(e) => Err(e),
        };
        match opened {
            Ok((Opened::Data(data), record)) => {
                self.open = Some(Open {
                    from: data.start,
                    to: data.end,
                    record,
                });
            }
            Ok((Opened::Nothing, record)) => self.incoming.consume(record),
            Ok((Opened::Closed, record)) => {
                self.incoming.consume(record);
                self.read_closed = true;
            }
            Err(e) => {
                // The peer hears why, as far as the socket takes it now.
                if let Some(alert) = records::alert_for(&e) {
                    if records.seal_alert(alert, &mut self.outgoing).is_ok() {
                        self.close_notify_sent = true;
                        if let Ok(n) = self.io.try_write(self.outgoing.data()) {
                            self.outgoing.consume(n);
                        }
                    }
                }
                return Err(tls_error(e));
            }
        }
        // A key update the peer asked for goes out at once.
        self.write_out_now(cx);
        Ok(true)
    }

    /// Decrypted bytes ready to be read where they lie: Ready(empty) at the
    /// end of the stream. [`TlsStream::consume`] says how many were used.
    pub(crate) fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        loop {
            if !self.plaintext.is_empty() {
                return Poll::Ready(Ok(self.plaintext.data()));
            }
            if let Some(Open { from, to, .. }) = self.open {
                return Poll::Ready(Ok(&self.incoming.data()[from..to]));
            }
            if self.read_closed {
                return Poll::Ready(Ok(&[]));
            }
            let progress = match self.protection {
                Protection::Records(_) => self.open_next(cx)?,
                _ => {
                    let stop = self.drive(None, Emit::Nothing)?;
                    // Anything rustls answered (a key update) goes out as it can.
                    self.write_out_now(cx);
                    if stop == Stop::Closed {
                        self.read_closed = true;
                    }
                    !self.plaintext.is_empty() || self.read_closed
                }
            };
            if progress {
                continue;
            }
            ready!(self.poll_fill_records(cx))?;
        }
    }

    /// `n` bytes of the last chunk were used.
    pub(crate) fn consume(&mut self, n: usize) {
        if !self.plaintext.is_empty() {
            self.plaintext.consume(n);
        } else if let Some(open) = &mut self.open {
            open.from += n;
            if open.from >= open.to {
                self.incoming.consume(open.record);
                self.open = None;
            }
        }
    }

    /// Writes `outgoing` to the socket until it is empty.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.outgoing.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, self.outgoing.data()))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.outgoing.consume(n);
        }
        Poll::Ready(Ok(()))
    }

    /// Reads from the socket into `incoming` (at most `limit` held):
    /// Ready(0) at its end. The buffer is taken only once the socket is
    /// readable.
    fn poll_fill(&mut self, cx: &mut Context<'_>, limit: usize) -> Poll<io::Result<usize>> {
        if self.incoming.len() >= limit {
            return Poll::Ready(Err(tls_error(rustls::Error::General(
                "TLS message too large".into(),
            ))));
        }
        ready!(self.io.poll_read_ready(cx))?;
        self.incoming.poll_read_from(&mut self.io, cx, READ_SIZE)
    }

    /// Reads more records; at the socket's end between records, the
    /// stream has ended.
    fn poll_fill_records(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if ready!(self.poll_fill(cx, MAX_HANDSHAKE))? == 0 {
            if !self.incoming.is_empty() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed the connection within a TLS record",
                )));
            }
            // Closed without close_notify, as many peers do: the end of
            // the stream all the same.
            self.read_closed = true;
        }
        Poll::Ready(Ok(()))
    }

    /// Flushes queued ciphertext as far as the socket takes it now; a
    /// write error is left for the next write to report.
    fn write_out_now(&mut self, cx: &mut Context<'_>) {
        let _ = self.poll_write_out(cx);
    }
}

impl<C: Unbuffered> AsyncRead for TlsStream<C> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Protection::Records(_) = this.protection {
            let chunk = ready!(this.poll_chunk(cx))?;
            let n = chunk.len().min(buf.remaining());
            buf.put_slice(&chunk[..n]);
            this.consume(n);
            return Poll::Ready(Ok(()));
        }
        // rustls decrypts into a vector of its own: copied straight into
        // `buf` from there when it fits.
        loop {
            if !this.plaintext.is_empty() {
                let n = this.plaintext.len().min(buf.remaining());
                buf.put_slice(&this.plaintext.data()[..n]);
                this.plaintext.consume(n);
                return Poll::Ready(Ok(()));
            }
            if this.read_closed {
                return Poll::Ready(Ok(()));
            }
            let before = buf.filled().len();
            let stop = this.drive(Some(buf), Emit::Nothing)?;
            // Anything rustls answered (a key update) goes out as it can.
            this.write_out_now(cx);
            if buf.filled().len() > before || !this.plaintext.is_empty() {
                return Poll::Ready(Ok(()));
            }
            if this.read_closed || stop == Stop::Closed {
                this.read_closed = true;
                continue;
            }
            ready!(this.poll_fill_records(cx))?;
        }
    }
}

impl<C: Unbuffered> AsyncWrite for TlsStream<C> {
    /// Encrypts `buf` (up to [`WRITE_AT`] of it) into the ciphertext to be
    /// written, which goes to the socket at once, or, once the stream
    /// gathers its writes, when it holds [`WRITE_AT`] or is flushed.
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // One write's ciphertext at a time (or what gathers): new plaintext
        // is taken only once the last has gone to the socket.
        let held = if this.gather { WRITE_AT } else { 1 };
        if this.outgoing.len() >= held {
            ready!(this.poll_write_out(cx))?;
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.close_notify_sent {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let n = buf.len().min(WRITE_AT);
        if let Protection::Records(records) = &mut this.protection {
            records
                .seal(&buf[..n], &mut this.outgoing)
                .map_err(tls_error)?;
        } else {
            match this.drive(None, Emit::Data(&buf[..n]))? {
                Stop::Writable => {}
                Stop::NeedInput => return Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
                Stop::Closed => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            }
        }
        if !this.gather || this.outgoing.len() >= WRITE_AT {
            this.write_out_now(cx);
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_notify_sent {
            ready!(this.poll_write_out(cx))?;
            if let Protection::Records(records) = &mut this.protection {
                records
                    .seal_alert(rustls::AlertDescription::CloseNotify, &mut this.outgoing)
                    .map_err(tls_error)?;
                this.close_notify_sent = true;
            }
            // A connection rustls counts as closed already needs no alert.
            else if this.drive(None, Emit::CloseNotify)? != Stop::Writable {
                this.close_notify_sent = true;
            }
        }
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

impl<C: Unbuffered> crate::relay::Stream for TlsStream<C> {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Option<Poll<io::Result<&[u8]>>> {
        Some(Self::poll_chunk(self, cx))
    }

    fn consume(&mut self, n: usize) {
        Self::consume(self, n);
    }

    fn gather_writes(&mut self) -> bool {
        self.gather = true;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        configs_with(provider, rustls::DEFAULT_VERSIONS)
    }

    /// A server and a client config trusting it, both taking `provider`'s
    /// suites in `versions`, both letting the stream take the secrets.
    fn configs_with(
        provider: rustls::crypto::CryptoProvider,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["stream.test".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let provider = Arc::new(provider);
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        server.enable_secret_extraction = true;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.enable_secret_extraction = true;
        (Arc::new(server), Arc::new(client))
    }

    async fn pair() -> (
        TlsStream<UnbufferedClientConnection>,
        TlsStream<UnbufferedServerConnection>,
    ) {
        let (server, client) = configs();
        pair_with(server, client).await
    }

    async fn pair_with(
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
    ) -> (
        TlsStream<UnbufferedClientConnection>,
        TlsStream<UnbufferedServerConnection>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepting = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            TlsStream::accept(server, tcp, Bytes::default())
                .await
                .unwrap()
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("stream.test").unwrap();
        let client = TlsStream::connect(client, name, tcp).await.unwrap();
        (client, accepting.await.unwrap())
    }

    /// Echoes what it reads until the peer's close_notify, replacing its
    /// own sending key every three records.
    async fn echo<C: Unbuffered>(mut ours: TlsStream<C>) -> TlsStream<C> {
        match &mut ours.protection {
            Protection::Records(records) => records.limit_records(3),
            _ => panic!("a TLS 1.3 stream protects its records itself"),
        }
        let mut buf = vec![0u8; 20_000];
        loop {
            let n = ours.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            ours.write_all(&buf[..n]).await.unwrap();
            ours.flush().await.unwrap();
        }
        ours.shutdown().await.unwrap();
        ours
    }

    /// Sends `len` bytes and reads them back, at once.
    async fn round<S: AsyncRead + AsyncWrite + Unpin>(tls: S, len: u32, seed: u32) -> S {
        let data: Vec<u8> = (0..len)
            .map(|i| (i.wrapping_mul(seed) % 251) as u8)
            .collect();
        let (mut r, mut w) = tokio::io::split(tls);
        let mut back = vec![0u8; data.len()];
        let (wrote, read) = tokio::join!(
            async {
                w.write_all(&data).await?;
                w.flush().await
            },
            r.read_exact(&mut back)
        );
        wrote.unwrap();
        read.unwrap();
        assert!(back == data, "{len} bytes came back as sent");
        r.unsplit(w)
    }

    /// A buffered rustls peer sends, asks for key updates, reads back and
    /// closes; `refresh` asks for one.
    async fn converse<S: AsyncRead + AsyncWrite + Unpin>(mut tls: S, refresh: impl Fn(&mut S)) {
        tls = round(tls, 200_000, 7).await;
        refresh(&mut tls);
        tls = round(tls, 100_000, 13).await;
        refresh(&mut tls);
        tls = round(tls, 10, 3).await;
        tls.shutdown().await.unwrap();
        let mut end = Vec::new();
        tls.read_to_end(&mut end).await.unwrap();
        assert!(end.is_empty());
    }

    fn only(suite: rustls::SupportedCipherSuite) -> rustls::crypto::CryptoProvider {
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        provider.cipher_suites = vec![suite];
        provider
    }

    #[tokio::test]
    async fn records_interoperate_with_rustls_in_every_tls13_suite_through_key_updates() {
        use rustls::crypto::aws_lc_rs::cipher_suite as suites;
        for suite in [
            suites::TLS13_AES_128_GCM_SHA256,
            suites::TLS13_AES_256_GCM_SHA384,
            suites::TLS13_CHACHA20_POLY1305_SHA256,
        ] {
            let (server, client) = configs_with(only(suite), &[&rustls::version::TLS13]);
            let name = ServerName::try_from("stream.test").unwrap();

            // Ours serves a rustls client.
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let serving = tokio::spawn({
                let server = server.clone();
                async move {
                    let (tcp, _) = listener.accept().await.unwrap();
                    echo(
                        TlsStream::accept(server, tcp, Bytes::default())
                            .await
                            .unwrap(),
                    )
                    .await
                }
            });
            let tcp = TcpStream::connect(addr).await.unwrap();
            // (No tickets kept: the next connections start afresh.)
            let mut forgetful = (*client).clone();
            forgetful.resumption = rustls::client::Resumption::disabled();
            let theirs = tokio_rustls::TlsConnector::from(Arc::new(forgetful))
                .connect(name.clone(), tcp)
                .await
                .unwrap();
            let negotiated = theirs.get_ref().1.negotiated_cipher_suite().unwrap();
            assert_eq!(negotiated.suite(), suite.suite());
            converse(theirs, |tls| {
                tls.get_mut().1.refresh_traffic_keys().unwrap()
            })
            .await;
            assert!(serving.await.unwrap().in_place());

            // Ours is a rustls server's client, and keeps its tickets.
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(server.clone());
            let serving = tokio::spawn(async move {
                for _ in 0..2 {
                    let (tcp, _) = listener.accept().await.unwrap();
                    let theirs = acceptor.accept(tcp).await.unwrap();
                    converse(theirs, |tls| {
                        tls.get_mut().1.refresh_traffic_keys().unwrap()
                    })
                    .await;
                }
            });
            for kind in [HandshakeKind::Full, HandshakeKind::Resumed] {
                let tcp = TcpStream::connect(addr).await.unwrap();
                let ours = TlsStream::connect(client.clone(), name.clone(), tcp)
                    .await
                    .unwrap();
                assert_eq!(ours.handshake_kind(), Some(kind), "{suite:?}");
                assert!(echo(ours).await.in_place());
            }
            serving.await.unwrap();
        }
    }

    #[tokio::test]
    async fn tls12_records_stay_with_rustls() {
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let (server, client) = configs_with(provider, &[&rustls::version::TLS12]);
        let (client, mut server) = pair_with(server, client).await;
        assert!(!client.in_place() && !server.in_place());
        let echoing = tokio::spawn(async move {
            let mut buf = vec![0u8; 20_000];
            loop {
                let n = server.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                server.write_all(&buf[..n]).await.unwrap();
            }
            server.shutdown().await.unwrap();
        });
        let mut client = round(client, 100_000, 5).await;
        client.shutdown().await.unwrap();
        let mut end = Vec::new();
        client.read_to_end(&mut end).await.unwrap();
        assert!(end.is_empty());
        echoing.await.unwrap();
    }

    #[tokio::test]
    async fn bytes_cross_both_ways_and_a_quiet_stream_holds_no_buffer() {
        let (mut client, mut server) = pair().await;
        assert!(client.in_place() && server.in_place());
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let echo = tokio::spawn(async move {
            let mut got = vec![0u8; sent.len()];
            server.read_exact(&mut got).await.unwrap();
            // Reading a megabyte of records, the buffer grew to a read and
            // the part of a record a read may leave over, no further.
            let bound = READ_SIZE + records::HEADER + records::MAX_CIPHERTEXT;
            let held = server.incoming.capacity();
            assert!(
                held <= bound,
                "{held} bytes held to read, more than {bound}"
            );
            server.write_all(&got).await.unwrap();
            server.flush().await.unwrap();
            let mut ping = [0u8; 4];
            server.read_exact(&mut ping).await.unwrap();
            server.write_all(b"pong").await.unwrap();
            // The client's close_notify ends the stream.
            let mut rest = Vec::new();
            server.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty());
            server.shutdown().await.unwrap();
            (got == sent, server)
        });
        // The server reads everything before it echoes: write, then read.
        client.write_all(&data).await.unwrap();
        client.flush().await.unwrap();
        let mut back = vec![0u8; data.len()];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(back, data);
        // After a small exchange, as a quiet connection's heartbeat, nothing
        // is held on either side.
        client.write_all(b"ping").await.unwrap();
        let mut pong = [0u8; 4];
        client.read_exact(&mut pong).await.unwrap();
        assert_eq!(&pong, b"pong");
        assert_eq!(client.incoming.capacity(), 0);
        assert_eq!(client.outgoing.capacity(), 0);
        assert_eq!(client.plaintext.capacity(), 0);
        client.shutdown().await.unwrap();
        let mut end = Vec::new();
        client.read_to_end(&mut end).await.unwrap();
        assert!(end.is_empty());
        let (same, server) = echo.await.unwrap();
        assert!(same, "the server read what the client sent");
        assert_eq!(server.incoming.capacity(), 0);
        assert_eq!(server.outgoing.capacity(), 0);
        assert_eq!(server.plaintext.capacity(), 0);
    }

    #[tokio::test]
    async fn a_wrong_certificate_fails_the_handshake_with_rustls_error() {
        let (server, _) = configs();
        let (_, other_client) = configs();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepting = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            TlsStream::accept(server, tcp, Bytes::default()).await
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("stream.test").unwrap();
        let err = TlsStream::connect(other_client, name, tcp)
            .await
            .unwrap_err();
        let inner = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>());
        assert!(
            matches!(inner, Some(rustls::Error::InvalidCertificate(_))),
            "{err}"
        );
        // The client told the server why.
        let server_err = accepting.await.unwrap().unwrap_err();
        let inner = server_err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>());
        assert!(
            matches!(inner, Some(rustls::Error::AlertReceived(_))),
            "{server_err}"
        );
    }

    #[tokio::test]
    async fn a_forged_record_is_answered_with_an_alert() {
        let (mut client, mut server) = pair().await;
        // An application-data record no key made.
        let mut forged = vec![0x17, 0x03, 0x03, 0x00, 0x20];
        forged.extend((0..0x20u8).map(|i| i.wrapping_mul(37)));
        client.io.write_all(&forged).await.unwrap();
        let mut buf = [0u8; 16];
        let err = server.read(&mut buf).await.unwrap_err();
        let inner = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>());
        assert!(matches!(inner, Some(rustls::Error::DecryptError)), "{err}");
        // The client hears why.
        let err = client.read(&mut buf).await.unwrap_err();
        let inner = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>());
        assert!(
            matches!(
                inner,
                Some(rustls::Error::AlertReceived(
                    rustls::AlertDescription::BadRecordMac
                ))
            ),
            "{err}"
        );
    }
}
