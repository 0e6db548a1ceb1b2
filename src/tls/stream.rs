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
//! Reads take up to [`READ_SIZE`] from the socket at once (two full
//! records), and one write encrypts what the relay gathered (up to four
//! records) into one socket write.

use std::future::poll_fn;
use std::io;
use std::ops::DerefMut;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedConnectionCommon,
    UnbufferedStatus,
};
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// What one socket read takes at most: two full records.
const READ_SIZE: usize = 32 * 1024;

/// The largest handshake flight taken in before it is processed (rustls's
/// own limit on a handshake message).
const MAX_HANDSHAKE: usize = 64 * 1024 + 5;

/// rustls's unbuffered client and server connections, driven alike.
pub(crate) trait Unbuffered:
    DerefMut<Target = UnbufferedConnectionCommon<Self::Data>> + Send + Unpin
{
    type Data;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
}

impl Unbuffered for UnbufferedServerConnection {
    type Data = ServerConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, ServerConnectionData> {
        self.deref_mut().process_tls_records(incoming)
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
        if self.start > 0 && self.buf.capacity() - self.end < n {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end + n > self.buf.capacity() {
            self.buf.truncate(self.end);
            self.buf.reserve(n);
        }
    }

    /// `n` initialized bytes at the end for rustls to fill: give back what
    /// it did not use with [`Bytes::unfill`].
    fn extend_zeroed(&mut self, n: usize) -> &mut [u8] {
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
        self.reserve(n);
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

/// A TLS connection (client or server side) over a TCP socket.
pub(crate) struct TlsStream<C> {
    io: TcpStream,
    conn: C,
    /// Ciphertext read from the socket, not yet processed.
    incoming: Bytes,
    /// Ciphertext to write to the socket.
    outgoing: Bytes,
    /// Plaintext decrypted, not yet read.
    plaintext: Bytes,
    /// The peer sent close_notify (or closed the socket between records).
    read_closed: bool,
    close_notify_sent: bool,
}

impl<C> std::fmt::Debug for TlsStream<C> {
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
        let conn = UnbufferedClientConnection::new(config, name).map_err(tls_error)?;
        let mut stream = Self::new(io, conn, Bytes::default());
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
        let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
        let mut stream = Self::new(io, conn, read);
        stream.handshake().await?;
        Ok(stream)
    }
}

impl<C: Unbuffered> TlsStream<C> {
    fn new(io: TcpStream, conn: C, incoming: Bytes) -> Self {
        Self {
            io,
            conn,
            incoming,
            outgoing: Bytes::default(),
            plaintext: Bytes::default(),
            read_closed: false,
            close_notify_sent: false,
        }
    }

    /// The session's state: the negotiated version, suite, resumption.
    pub(crate) fn session(&self) -> &rustls::CommonState {
        &self.conn
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
            if !self.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            if ready!(self.poll_fill(cx, MAX_HANDSHAKE))? == 0 {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed the connection during the TLS handshake",
                )));
            }
        }
    }

    /// Runs rustls on what has been read until it needs more input or may
    /// send: handshake records go to `outgoing`, application data to `out`
    /// while it fits, else to `plaintext`. `send` is done once rustls may
    /// send application data.
    fn drive(&mut self, mut out: Option<&mut ReadBuf<'_>>, send: Emit<'_>) -> io::Result<Stop> {
        let Self {
            io,
            conn,
            incoming,
            outgoing,
            plaintext,
            read_closed,
            close_notify_sent,
            ..
        } = self;
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
            if ready!(this.poll_fill(cx, MAX_HANDSHAKE))? == 0 {
                if !this.incoming.is_empty() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "peer closed the connection within a TLS record",
                    )));
                }
                // Closed without close_notify, as many peers do: the end of
                // the stream all the same.
                this.read_closed = true;
            }
        }
    }
}

impl<C: Unbuffered> AsyncWrite for TlsStream<C> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // One write's ciphertext at a time: new plaintext is taken only
        // once the last has gone to the socket.
        ready!(this.poll_write_out(cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.close_notify_sent {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        match this.drive(None, Emit::Data(buf))? {
            Stop::Writable => {}
            Stop::NeedInput => return Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
            Stop::Closed => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
        this.write_out_now(cx);
        Poll::Ready(Ok(buf.len()))
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
            // A connection rustls counts as closed already needs no alert.
            if this.drive(None, Emit::CloseNotify)? != Stop::Writable {
                this.close_notify_sent = true;
            }
        }
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["stream.test".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    async fn pair() -> (
        TlsStream<UnbufferedClientConnection>,
        TlsStream<UnbufferedServerConnection>,
    ) {
        let (server, client) = configs();
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

    #[tokio::test]
    async fn bytes_cross_both_ways_and_a_quiet_stream_holds_no_buffer() {
        let (mut client, mut server) = pair().await;
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let echo = tokio::spawn(async move {
            let mut got = vec![0u8; sent.len()];
            server.read_exact(&mut got).await.unwrap();
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
