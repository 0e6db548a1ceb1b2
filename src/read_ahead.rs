//! Large socket reads under a TLS session.
//!
//! rustls asks its transport for at most 4 KiB at a time, so a 16 KiB record
//! costs four or five `recv` calls, and on each the kernel may answer with a
//! window update. `ReadAhead` reads up to [`READ_AHEAD`] bytes per call and
//! hands them to rustls from memory. Like the relay's buffers, it holds that
//! memory only while bytes are waiting: an idle connection keeps none.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Two full TLS records.
const READ_AHEAD: usize = 32 * 1024;

/// A transport that reads ahead; writes go straight through.
#[derive(Debug)]
pub(crate) struct ReadAhead<S> {
    inner: S,
    buf: BytesMut,
}

impl<S> ReadAhead<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            buf: BytesMut::new(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.buf.is_empty() {
            if out.remaining() >= READ_AHEAD {
                // The caller's buffer is as large as ours: no copy needed.
                return Pin::new(&mut this.inner).poll_read(cx, out);
            }
            this.buf.reserve(READ_AHEAD);
            match tokio_util::io::poll_read_buf(Pin::new(&mut this.inner), cx, &mut this.buf) {
                Poll::Ready(Ok(1..)) => {}
                // Waiting, closed or failed: nothing buffered, nothing held.
                other => {
                    this.buf = BytesMut::new();
                    return other.map_ok(|_| ());
                }
            }
        }
        let n = this.buf.len().min(out.remaining());
        out.put_slice(&this.buf[..n]);
        this.buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn small_reads_are_served_from_one_large_read() {
        let (mut near, far) = tokio::io::duplex(256 * 1024);
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        near.write_all(&data).await.unwrap();
        drop(near);
        let mut reader = ReadAhead::new(far);
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = reader.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(got, data);
        assert_eq!(reader.buf.capacity(), 0, "no memory held once drained");
    }
}
