//! The bidirectional copy between a downstream and an upstream connection:
//! backpressure (a direction reads only once its last chunk is written),
//! half-close passed on, an idle timeout, byte counts as they go.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf as _, BytesMut};
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The most one read takes in (a TLS record's worth of plaintext).
///
/// A direction holds its buffer only while bytes are in flight: an idle
/// connection keeps none, so thousands of idle clients cost little memory.
const BUFFER_SIZE: usize = 16 * 1024;

/// What a direction gathers before it writes, when more is ready at once:
/// four records' worth go out in one vectored write instead of four.
const BATCH: usize = 4 * BUFFER_SIZE;

/// A connection the relay copies between.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin {
    /// Bytes read and decrypted into the stream's own buffer, to be written
    /// on from where they lie (Ready(empty) at the end of the stream); None
    /// for a stream that keeps no such buffer, which the relay reads into
    /// its own.
    fn poll_chunk(&mut self, _cx: &mut Context<'_>) -> Option<Poll<io::Result<&[u8]>>> {
        None
    }

    /// `n` bytes of the last chunk were written on.
    fn consume(&mut self, _n: usize) {}

    /// Asks the stream to gather written bytes until it is flushed (a TLS
    /// stream's records), so that writing chunk by chunk costs no system
    /// call each: true if it does from now on.
    fn gather_writes(&mut self) -> bool {
        false
    }
}

impl Stream for tokio::net::TcpStream {}

/// Which end of a proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Downstream,
    Upstream,
}

impl Side {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Downstream => "downstream",
            Self::Upstream => "upstream",
        }
    }
}

/// How a relay ended.
#[derive(Debug)]
pub(crate) enum RelayEnd {
    /// Both sides closed their sending half; `first` closed first.
    Closed { first: Side },
    /// Nothing moved either way for the idle timeout.
    Idle,
    /// A read or write failed on `side`.
    Error { side: Side, error: io::Error },
    /// The server's shutdown grace period ran out.
    Aborted,
    /// The target was removed and its deregistration delay ran out.
    Deregistered,
}

#[derive(Debug)]
pub(crate) struct RelayOutcome {
    /// Bytes from the client to the target.
    pub(crate) to_upstream: u64,
    /// Bytes from the target to the client.
    pub(crate) to_downstream: u64,
    pub(crate) end: RelayEnd,
}

/// Counters the relay adds to as bytes move.
pub(crate) struct RelayCounters<'a> {
    pub(crate) to_upstream: &'a Counter,
    pub(crate) to_downstream: &'a Counter,
}

/// When a relay must stop early.
pub(crate) struct Stops<'a> {
    /// The server's shutdown grace period is over.
    pub(crate) abort: &'a CancellationToken,
    /// The target's deregistration delay is over.
    pub(crate) deregistered: &'a CancellationToken,
}

/// Copies both ways until both sides have closed, one fails, nothing moves
/// for `idle`, or one of `stops` is cancelled.
pub(crate) async fn relay<D, U>(
    down: &mut D,
    up: &mut U,
    idle: Duration,
    stops: Stops<'_>,
    counters: RelayCounters<'_>,
) -> RelayOutcome
where
    D: Stream,
    U: Stream,
{
    let mut to_upstream = Pipe::new(Side::Downstream, Side::Upstream, up.gather_writes());
    let mut to_downstream = Pipe::new(Side::Upstream, Side::Downstream, down.gather_writes());
    let mut first_closed = None;
    let mut last_activity = Instant::now();
    let idle_timer = tokio::time::sleep(idle);
    let aborted = stops.abort.cancelled();
    let deregistered = stops.deregistered.cancelled();
    tokio::pin!(idle_timer, aborted, deregistered);

    let end = std::future::poll_fn(|cx| {
        if aborted.as_mut().poll(cx).is_ready() {
            return Poll::Ready(RelayEnd::Aborted);
        }
        if deregistered.as_mut().poll(cx).is_ready() {
            return Poll::Ready(RelayEnd::Deregistered);
        }
        let mut progress = false;
        for (pipe, counter) in [
            (&mut to_upstream, counters.to_upstream),
            (&mut to_downstream, counters.to_downstream),
        ] {
            if pipe.done {
                continue;
            }
            let polled = if pipe.from == Side::Downstream {
                pipe.poll_copy(
                    cx,
                    Pin::new(&mut *down),
                    Pin::new(&mut *up),
                    &mut progress,
                    counter,
                )
            } else {
                pipe.poll_copy(
                    cx,
                    Pin::new(&mut *up),
                    Pin::new(&mut *down),
                    &mut progress,
                    counter,
                )
            };
            match polled {
                Poll::Ready(Ok(())) => {
                    pipe.done = true;
                    first_closed.get_or_insert(pipe.from);
                }
                Poll::Ready(Err((side, error))) => {
                    return Poll::Ready(RelayEnd::Error { side, error });
                }
                Poll::Pending => {}
            }
        }
        if to_upstream.done && to_downstream.done {
            return Poll::Ready(RelayEnd::Closed {
                first: first_closed.unwrap_or(Side::Downstream),
            });
        }
        if progress {
            last_activity = Instant::now();
        }
        // The timer is re-armed only when it fires, not on every chunk.
        while idle_timer.as_mut().poll(cx).is_ready() {
            let deadline = last_activity + idle;
            if deadline <= Instant::now() {
                return Poll::Ready(RelayEnd::Idle);
            }
            idle_timer.as_mut().reset(deadline);
        }
        Poll::Pending
    })
    .await;

    RelayOutcome {
        to_upstream: to_upstream.total,
        to_downstream: to_downstream.total,
        end,
    }
}

/// One direction of the copy.
struct Pipe {
    from: Side,
    to: Side,
    /// Read and not yet written; no allocation while empty and waiting.
    buf: BytesMut,
    read_done: bool,
    need_flush: bool,
    /// The writer gathers what it is given until flushed: the reader's
    /// chunks are written from where they lie.
    in_place: bool,
    done: bool,
    total: u64,
}

impl Pipe {
    fn new(from: Side, to: Side, in_place: bool) -> Self {
        Self {
            from,
            to,
            buf: BytesMut::new(),
            read_done: false,
            need_flush: false,
            in_place,
            done: false,
            total: 0,
        }
    }

    /// Reads on while more is ready at once, up to [`BATCH`]: what a busy
    /// peer sent in several records is written in one go.
    fn gather<R>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        counter: &Counter,
    ) -> io::Result<()>
    where
        R: AsyncRead + ?Sized,
    {
        while self.buf.len() + BUFFER_SIZE <= BATCH {
            self.buf.reserve(BUFFER_SIZE);
            match tokio_util::io::poll_read_buf(reader.as_mut(), cx, &mut self.buf) {
                Poll::Ready(Ok(0)) => {
                    self.read_done = true;
                    break;
                }
                Poll::Ready(Ok(n)) => {
                    counter.inc_by(n as u64);
                }
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    self.read_done = true;
                    break;
                }
                Poll::Ready(Err(e)) => return Err(e),
                // Nothing more now: what was read goes out.
                Poll::Pending => break,
            }
        }
        Ok(())
    }

    /// Writes what the reader holds decrypted straight from its buffer to
    /// a writer that gathers its writes, chunk by chunk: no copy of ours.
    /// Ready(Ok) once the reader has ended, or has no buffer to lend (the
    /// copying path then goes on).
    fn poll_in_place<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        mut writer: Pin<&mut W>,
        progress: &mut bool,
        counter: &Counter,
    ) -> Poll<Result<(), (Side, io::Error)>>
    where
        R: Stream,
        W: Stream,
    {
        let (from, to) = (self.from, self.to);
        while !self.read_done {
            let chunk = match reader.poll_chunk(cx) {
                None => break,
                Some(Poll::Pending) => {
                    if self.need_flush {
                        ready!(writer.as_mut().poll_flush(cx)).map_err(|e| (to, e))?;
                        self.need_flush = false;
                    }
                    return Poll::Pending;
                }
                Some(Poll::Ready(Err(e))) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    self.read_done = true;
                    break;
                }
                Some(Poll::Ready(Err(e))) => return Poll::Ready(Err((from, e))),
                Some(Poll::Ready(Ok([]))) => {
                    self.read_done = true;
                    break;
                }
                Some(Poll::Ready(Ok(chunk))) => chunk,
            };
            let n = ready!(writer.as_mut().poll_write(cx, chunk)).map_err(|e| (to, e))?;
            if n == 0 {
                return Poll::Ready(Err((
                    to,
                    io::Error::new(io::ErrorKind::WriteZero, "peer accepts no more bytes"),
                )));
            }
            reader.consume(n);
            *progress = true;
            counter.inc_by(n as u64);
            self.total += n as u64;
            self.need_flush = true;
        }
        Poll::Ready(Ok(()))
    }

    /// Ready(Ok) once the reader has ended and the writer is shut down.
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
        progress: &mut bool,
        counter: &Counter,
    ) -> Poll<Result<(), (Side, io::Error)>>
    where
        R: Stream,
        W: Stream,
    {
        let (from, to) = (self.from, self.to);
        if self.buf.is_empty() && self.in_place {
            ready!(self.poll_in_place(cx, &mut *reader, writer.as_mut(), progress, counter))?;
        }
        loop {
            if self.buf.is_empty() && !self.read_done {
                self.buf.reserve(BUFFER_SIZE);
                match tokio_util::io::poll_read_buf(reader.as_mut(), cx, &mut self.buf) {
                    Poll::Pending => {
                        // Nothing in flight: give the memory back while we wait.
                        self.buf = BytesMut::new();
                        if self.need_flush {
                            ready!(writer.as_mut().poll_flush(cx)).map_err(|e| (to, e))?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                    // A peer that closes without TLS close_notify (common) has
                    // still closed: pass the close on.
                    Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        self.read_done = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err((from, e))),
                    Poll::Ready(Ok(0)) => self.read_done = true,
                    Poll::Ready(Ok(n)) => {
                        *progress = true;
                        counter.inc_by(n as u64);
                        self.gather(cx, reader.as_mut(), counter)
                            .map_err(|e| (from, e))?;
                    }
                }
            }
            while !self.buf.is_empty() {
                let n = ready!(writer.as_mut().poll_write(cx, &self.buf)).map_err(|e| (to, e))?;
                if n == 0 {
                    return Poll::Ready(Err((
                        to,
                        io::Error::new(io::ErrorKind::WriteZero, "peer accepts no more bytes"),
                    )));
                }
                self.buf.advance(n);
                self.total += n as u64;
                self.need_flush = true;
            }
            if self.read_done {
                // Pass the half-close on: flush, then end our sending half.
                ready!(writer.as_mut().poll_flush(cx)).map_err(|e| (to, e))?;
                ready!(writer.as_mut().poll_shutdown(cx)).map_err(|e| (to, e))?;
                return Poll::Ready(Ok(()));
            }
        }
    }
}
