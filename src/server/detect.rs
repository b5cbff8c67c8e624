//! Watching a new connection until its first bytes show which protocol the client speaks.
//!
//! hyper's HTTP/1.1-or-HTTP/2 detection reads until the bytes either leave the HTTP/2
//! connection preface (HTTP/1.1) or complete it (HTTP/2), with no time limit: a client that
//! connects and sends nothing, or stops inside the preface, would hold its connection and task
//! forever. [`Detecting`] sees the same bytes as they are read and sets a flag once the
//! protocol is known; [`closes_if_undetected`] drops a connection whose flag is still unset
//! when its time is up. Once the protocol is known, hyper's own limits take over (the
//! HTTP/1.1 header read timeout, HTTP/2 keep-alive pings).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::connection::Connection;

/// The HTTP/2 connection preface (RFC 9113, section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// `io`, passing every byte through, with a flag set once the bytes read so far show the
/// protocol.
pub(super) struct Detecting<I> {
    io: I,
    matched: usize,
    known: Arc<AtomicBool>,
    /// Told whether each write went through or waits for the client to read.
    connection: Arc<Connection>,
}

impl<I> Detecting<I> {
    /// Wraps `io`; the flag returned is set once the protocol is known.
    pub(super) fn new(io: I, connection: Arc<Connection>) -> (Self, Arc<AtomicBool>) {
        let known = Arc::new(AtomicBool::new(false));
        let detecting = Detecting {
            io,
            matched: 0,
            known: known.clone(),
            connection,
        };
        (detecting, known)
    }

    /// Passes a write's outcome on to the connection's stall watch.
    fn written<T>(&self, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        self.connection.socket_blocked(polled.is_pending());
        polled
    }

    fn observe(&mut self, read: &[u8]) {
        for &byte in read {
            if byte != H2_PREFACE[self.matched] {
                return self.known.store(true, Ordering::Release);
            }
            self.matched += 1;
            if self.matched == H2_PREFACE.len() {
                return self.known.store(true, Ordering::Release);
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Detecting<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if !self.known.load(Ordering::Relaxed) {
            self.observe(&buf.filled()[before..]);
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Detecting<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.written(polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.written(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Runs `connection` to its end, unless `known` is still unset after `limit`: then it is
/// dropped, which closes it. `None` when it was closed that way.
pub(super) async fn closes_if_undetected<F: Future>(
    connection: F,
    known: Arc<AtomicBool>,
    limit: Duration,
) -> Option<F::Output> {
    tokio::pin!(connection);
    tokio::select! {
        output = &mut connection => return Some(output),
        () = tokio::time::sleep(limit) => {}
    }
    if !known.load(Ordering::Acquire) {
        return None;
    }
    Some(connection.await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known_after(chunks: &[&[u8]]) -> bool {
        let connection = Connection::new(std::net::SocketAddr::from(([127, 0, 0, 1], 1)), 1, 1);
        let (mut d, known) = Detecting::new((), connection);
        for chunk in chunks {
            d.observe(chunk);
        }
        known.load(Ordering::Acquire)
    }

    #[test]
    fn http1_is_known_at_the_first_byte_off_the_preface() {
        assert!(known_after(&[b"G"]));
        assert!(!known_after(&[b"P"]));
        assert!(known_after(&[b"PO"]));
        assert!(known_after(&[b"P", b"OST / HTTP/1.1\r\n"]));
    }

    #[test]
    fn http2_is_known_at_the_last_preface_byte_however_it_is_split() {
        assert!(!known_after(&[b""]));
        assert!(!known_after(&[&H2_PREFACE[..23]]));
        assert!(!known_after(&[&H2_PREFACE[..10], &H2_PREFACE[10..23]]));
        assert!(known_after(&[&H2_PREFACE[..10], &H2_PREFACE[10..]]));
        assert!(known_after(&[
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\x12\x04"
        ]));
    }
}
