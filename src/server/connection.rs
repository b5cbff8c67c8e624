//! What the gateway keeps per client connection: the requests it may have in progress, and
//! whether the client is taking the response data it is owed.
//!
//! A connection may hold at most `--max-concurrent-streams` requests at once (HTTP/2 says so
//! in its SETTINGS too), so one client cannot take the whole `--max-concurrent-requests`
//! budget. Every response body is an [`Outgoing`] that cuts data into [`CHUNK`]-sized pieces
//! and records whether the client owes the gateway a read: a body whose last poll gave data
//! is owed until it is polled again (hyper polls it only when the client has taken what came
//! before, or granted HTTP/2 flow-control window); one that is waiting for its upstream is
//! not. [`Connection::stalled`] completes when the connection has owed data, or a blocked
//! socket write, and nothing has moved for `--write-timeout`: the caller then drops the
//! connection, which closes it and frees what its responses held. Complete response bodies
//! waiting for the client count against a per-connection bound of unsent bytes (twice
//! `--max-rendered-bytes`): a client that asks for many large responses and reads none gets
//! `RESOURCE_EXHAUSTED` for those beyond it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::body::{BoxError, ResponseBody};

/// The largest piece of response data handed to hyper at once: what one stalled stream can
/// leave buffered below the gateway (hyper keeps one piece, h2 sends or queues one).
pub(crate) const CHUNK: usize = 16 << 10;

/// One client connection.
#[derive(Debug)]
pub(crate) struct Connection {
    pub(crate) peer: SocketAddr,
    /// Permits for the requests this connection may have in progress.
    requests: Arc<Semaphore>,
    /// Response bodies whose data the client has not taken yet.
    owed: AtomicUsize,
    /// A socket write is waiting for the client to read.
    blocked: AtomicBool,
    /// Bumped whenever response data moves (a piece taken, bytes written) or a body starts.
    progress: AtomicU64,
    /// Bytes of complete response bodies not yet taken by the client, and their bound.
    unsent: AtomicUsize,
    max_unsent: usize,
}

impl Connection {
    /// A new connection from `peer` that may have `max_requests` requests in progress, and
    /// `max_unsent` bytes of complete responses waiting for the client.
    pub(crate) fn new(peer: SocketAddr, max_requests: u32, max_unsent: usize) -> Arc<Connection> {
        Arc::new(Connection {
            peer,
            requests: Arc::new(Semaphore::new(max_requests.max(1) as usize)),
            owed: AtomicUsize::new(0),
            blocked: AtomicBool::new(false),
            progress: AtomicU64::new(0),
            unsent: AtomicUsize::new(0),
            max_unsent,
        })
    }

    /// Counts `bytes` of a complete response as waiting for the client, unless that would
    /// pass the connection's bound.
    pub(crate) fn reserve_unsent(&self, bytes: usize) -> bool {
        self.unsent
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |unsent| {
                unsent
                    .checked_add(bytes)
                    .filter(|total| *total <= self.max_unsent || unsent == 0)
            })
            .is_ok()
    }

    fn release_unsent(&self, bytes: usize) {
        self.unsent.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// A permit for one more request, unless the connection has its maximum in progress.
    pub(crate) fn admit(&self) -> Option<OwnedSemaphorePermit> {
        self.requests.clone().try_acquire_owned().ok()
    }

    /// Records that a socket write is blocked (`true`) or went through (`false`).
    pub(crate) fn socket_blocked(&self, blocked: bool) {
        if !blocked {
            self.progress.fetch_add(1, Ordering::Relaxed);
        }
        self.blocked.store(blocked, Ordering::Relaxed);
    }

    /// Completes once the client has been owed data, with none of it moving, for a whole
    /// `limit` (so between one and two `limit`s after it stopped reading); never for a zero
    /// `limit`, which turns the watch off.
    pub(crate) async fn stalled(&self, limit: Duration) {
        if limit.is_zero() {
            return std::future::pending().await;
        }
        let mut seen = self.progress.load(Ordering::Relaxed);
        let mut owing = false;
        loop {
            tokio::time::sleep(limit).await;
            let now = self.progress.load(Ordering::Relaxed);
            let owes =
                self.owed.load(Ordering::Relaxed) > 0 || self.blocked.load(Ordering::Relaxed);
            if owing && owes && now == seen {
                return;
            }
            owing = owes;
            seen = now;
        }
    }
}

/// A response body on its way to the client: cut into pieces of at most [`CHUNK`] bytes,
/// counted, and watched for a client that stops taking it. It holds the request's admission
/// permits until it is done.
pub(crate) struct Outgoing<P> {
    inner: ResponseBody,
    /// The rest of a data frame larger than [`CHUNK`].
    rest: Bytes,
    connection: Arc<Connection>,
    owed: bool,
    /// Bytes still counted in the connection's unsent bound.
    reserved: usize,
    on_data: fn(&P, usize),
    held: P,
}

impl<P> std::fmt::Debug for Outgoing<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("owed", &self.owed)
            .finish_non_exhaustive()
    }
}

impl<P> Outgoing<P> {
    /// Wraps `inner`, whose `reserved` bytes the connection counts as unsent; `on_data` is
    /// told the size of every piece sent, and `held` (permits, say) is dropped with the body.
    pub(crate) fn new(
        inner: ResponseBody,
        connection: Arc<Connection>,
        reserved: usize,
        on_data: fn(&P, usize),
        held: P,
    ) -> Self {
        let mut body = Outgoing {
            inner,
            rest: Bytes::new(),
            connection,
            owed: false,
            reserved,
            on_data,
            held,
        };
        body.set_owed(true);
        body
    }

    fn release(&mut self, bytes: usize) {
        let bytes = bytes.min(self.reserved);
        self.reserved -= bytes;
        self.connection.release_unsent(bytes);
    }

    fn set_owed(&mut self, owed: bool) {
        if owed == self.owed {
            return;
        }
        self.owed = owed;
        let connection = &self.connection;
        if owed {
            connection.owed.fetch_add(1, Ordering::Relaxed);
            connection.progress.fetch_add(1, Ordering::Relaxed);
        } else {
            connection.owed.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The next piece of `data` (kept in `rest` beyond [`CHUNK`]).
    fn piece(&mut self, mut data: Bytes) -> Bytes {
        if data.len() > CHUNK {
            self.rest = data.split_off(CHUNK);
        }
        self.connection.progress.fetch_add(1, Ordering::Relaxed);
        self.release(data.len());
        (self.on_data)(&self.held, data.len());
        self.set_owed(true);
        data
    }
}

impl<P> Drop for Outgoing<P> {
    fn drop(&mut self) {
        self.set_owed(false);
        self.release(self.reserved);
    }
}

impl<P: Unpin> Body for Outgoing<P> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.rest.has_remaining() {
            let rest = std::mem::take(&mut this.rest);
            return Poll::Ready(Some(Ok(Frame::data(this.piece(rest)))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => Poll::Ready(Some(Ok(Frame::data(this.piece(data))))),
                Err(frame) => {
                    this.set_owed(false);
                    Poll::Ready(Some(Ok(frame)))
                }
            },
            other => {
                this.set_owed(false);
                other
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        !self.rest.has_remaining() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        hint.set_lower(hint.lower() + rest);
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + rest);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    fn connection() -> Arc<Connection> {
        Connection::new(SocketAddr::from(([127, 0, 0, 1], 1)), 2, 100)
    }

    fn outgoing(connection: &Arc<Connection>, data: Vec<u8>) -> Outgoing<()> {
        let len = data.len();
        assert!(connection.reserve_unsent(len));
        let inner = Full::new(Bytes::from(data))
            .map_err(|never| match never {})
            .boxed_unsync();
        Outgoing::new(inner, connection.clone(), len, |_, _| {}, ())
    }

    #[tokio::test]
    async fn large_frames_go_out_in_pieces_and_the_body_is_owed_until_done() {
        let c = connection();
        let mut body = outgoing(&c, vec![7; CHUNK * 2 + 1]);
        assert_eq!(c.owed.load(Ordering::Relaxed), 1, "owed from the start");
        let mut sizes = Vec::new();
        while let Some(frame) = body.frame().await {
            sizes.push(frame.unwrap().into_data().unwrap().len());
            assert_eq!(c.owed.load(Ordering::Relaxed), 1);
        }
        assert_eq!(sizes, [CHUNK, CHUNK, 1]);
        assert_eq!(c.owed.load(Ordering::Relaxed), 0, "done: owes nothing");
    }

    #[tokio::test]
    async fn a_dropped_body_owes_nothing() {
        let c = connection();
        let body = outgoing(&c, vec![1; 10]);
        assert_eq!(c.owed.load(Ordering::Relaxed), 1);
        drop(body);
        assert_eq!(c.owed.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn unsent_bytes_are_bounded_and_released_as_they_go() {
        let c = connection();
        let mut body = outgoing(&c, vec![1; 60]);
        assert!(!c.reserve_unsent(50), "60 + 50 is over the bound of 100");
        assert!(c.reserve_unsent(40));
        c.release_unsent(40);
        body.frame().await.unwrap().unwrap();
        assert_eq!(c.unsent.load(Ordering::Relaxed), 0);
        drop(body);
        // A single response larger than the bound still goes out, alone.
        let big = outgoing(&c, vec![1; 500]);
        assert!(!c.reserve_unsent(1));
        drop(big);
        assert_eq!(c.unsent.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_connection_admits_its_maximum() {
        let c = connection();
        let first = c.admit().unwrap();
        let _second = c.admit().unwrap();
        assert!(c.admit().is_none());
        drop(first);
        assert!(c.admit().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn stalled_only_when_owed_data_does_not_move() {
        let c = connection();
        let limit = Duration::from_secs(30);
        // Nothing owed: never stalled.
        let idle = tokio::time::timeout(limit * 10, c.stalled(limit)).await;
        assert!(idle.is_err());
        // Owed and not moving: a zero limit watches nothing (and does not spin)...
        let _body = outgoing(&c, vec![1; 10]);
        let off = tokio::time::timeout(limit * 10, c.stalled(Duration::ZERO)).await;
        assert!(off.is_err());
        // ...and any other is reached within two limits.
        let started = tokio::time::Instant::now();
        c.stalled(limit).await;
        assert!(started.elapsed() <= limit * 2);
    }
}
