//! The time bounds of one call, whatever its protocol: a unary request's message must arrive
//! within `--body-timeout`, and a call with no message either way for `--stream-idle-timeout`
//! is cancelled.
//!
//! A [`CallClock`] is shared by the two directions of a call. Bodies that carry gRPC frames
//! are wrapped: [`Counted`] (the request on its way upstream) and [`Timed`] (the response on
//! its way back) tell the clock about every complete message, and [`Timed`] ends the response
//! with the clock's error, as gRPC trailers, once it expires. Before the response starts,
//! the handler races its upstream call against [`CallClock::expired`].
//!
//! Messages count, not bytes: a client trickling one byte a minute keeps no call alive.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::body::BoxError;
use crate::error::GatewayError;
use crate::grpc::Code;

/// Longer than any call: limits beyond it (a flag set to `1000000000h`, say) are taken as it,
/// so adding them to an instant cannot overflow.
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `start` plus `limit`, at most [`NEVER`] later.
fn after(start: Instant, limit: Duration) -> Instant {
    start + limit.min(NEVER)
}

/// Why a call's time ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// The unary request's message did not arrive within `--body-timeout`.
    Body(Duration),
    /// No message either way for `--stream-idle-timeout`.
    Idle(Duration),
}

impl Expiry {
    /// The error the client gets.
    pub(crate) fn error(self) -> GatewayError {
        match self {
            Expiry::Body(limit) => GatewayError::new(
                Code::DeadlineExceeded,
                format!("request message not received within {limit:?} (--body-timeout)"),
            ),
            Expiry::Idle(limit) => GatewayError::new(
                Code::DeadlineExceeded,
                format!("no message either way for {limit:?} (--stream-idle-timeout)"),
            ),
        }
    }
}

/// The clock of one call.
#[derive(Debug, Clone)]
pub(crate) struct CallClock(Arc<State>);

#[derive(Debug)]
struct State {
    started: Instant,
    /// Set for calls whose client sends exactly one message.
    body_limit: Option<Duration>,
    idle_limit: Duration,
    request_done: AtomicBool,
    /// When the last message passed, in milliseconds since `started`.
    last_message_ms: AtomicU64,
}

impl CallClock {
    /// A clock started now; `body_limit` for a unary request, `idle_limit` for every call
    /// (zero: no idle limit).
    pub(crate) fn new(body_limit: Option<Duration>, idle_limit: Duration) -> Self {
        CallClock(Arc::new(State {
            started: Instant::now(),
            body_limit,
            idle_limit,
            request_done: AtomicBool::new(false),
            last_message_ms: AtomicU64::new(0),
        }))
    }

    /// A message passed, either way.
    pub(crate) fn message(&self) {
        let ms = u64::try_from(self.0.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.last_message_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// The whole request has arrived.
    pub(crate) fn request_done(&self) {
        self.0.request_done.store(true, Ordering::Relaxed);
        self.message();
    }

    /// When the call expires if nothing passes before, and why.
    fn deadline(&self) -> (Instant, Expiry) {
        let state = &self.0;
        let last = Duration::from_millis(state.last_message_ms.load(Ordering::Relaxed));
        let idle_limit = match state.idle_limit {
            Duration::ZERO => NEVER,
            limit => limit,
        };
        let idle = (
            after(state.started, last.saturating_add(idle_limit)),
            Expiry::Idle(state.idle_limit),
        );
        match state.body_limit {
            Some(limit) if !state.request_done.load(Ordering::Relaxed) => {
                let body = (after(state.started, limit), Expiry::Body(limit));
                if body.0 <= idle.0 {
                    body
                } else {
                    idle
                }
            }
            _ => idle,
        }
    }

    /// Completes when the call has expired.
    pub(crate) async fn expired(&self) -> Expiry {
        loop {
            let (at, why) = self.deadline();
            if at <= Instant::now() {
                return why;
            }
            tokio::time::sleep_until(at).await;
        }
    }

    /// Polls `sleep` (armed for the current deadline) and says why the call expired, if it has.
    fn poll_expired(&self, sleep: &mut Pin<Box<Sleep>>, cx: &mut Context<'_>) -> Poll<Expiry> {
        loop {
            let (at, why) = self.deadline();
            if at <= Instant::now() {
                return Poll::Ready(why);
            }
            if sleep.deadline() != at {
                sleep.as_mut().reset(at);
            }
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

/// Finds the ends of gRPC messages (a flag byte, a 4-byte length, the payload) in a body's
/// bytes, however they are split.
#[derive(Debug, Default)]
struct MessageEnds {
    /// Prefix bytes seen of the current message (0 to 5).
    prefix: [u8; 5],
    prefix_len: usize,
    /// Payload bytes still to come of the current message.
    payload_left: usize,
}

impl MessageEnds {
    /// How many messages end in `data`.
    fn feed(&mut self, mut data: &[u8]) -> usize {
        let mut ended = 0;
        while !data.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(data.len());
                self.payload_left -= n;
                data = &data[n..];
                ended += usize::from(self.payload_left == 0);
                continue;
            }
            let n = (5 - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&data[..n]);
            self.prefix_len += n;
            data = &data[n..];
            if self.prefix_len == 5 {
                self.prefix_len = 0;
                let len = u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]);
                self.payload_left = len as usize;
                ended += usize::from(len == 0);
            }
        }
        ended
    }
}

/// One direction of a call as the clock sees it: the messages that end in its frames.
struct Direction {
    clock: CallClock,
    ends: MessageEnds,
}

impl Direction {
    fn new(clock: CallClock) -> Self {
        Direction {
            clock,
            ends: MessageEnds::default(),
        }
    }

    /// Tells the clock when `frame` ends a message.
    fn saw(&mut self, frame: &Frame<Bytes>) {
        if let Some(data) = frame.data_ref() {
            if self.ends.feed(data.chunk()) > 0 {
                self.clock.message();
            }
        }
    }
}

/// A request body of gRPC frames on its way upstream, telling the clock about each message
/// and about its end.
pub(crate) struct Counted<B> {
    inner: B,
    direction: Direction,
}

impl<B> Counted<B> {
    pub(crate) fn new(inner: B, clock: CallClock) -> Self {
        Counted {
            inner,
            direction: Direction::new(clock),
        }
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                this.direction.saw(frame);
                if this.inner.is_end_stream() {
                    this.direction.clock.request_done();
                }
            }
            Poll::Ready(None) => this.direction.clock.request_done(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body of gRPC frames on its way back, telling the clock about each message and
/// ending with the clock's error (as gRPC trailers) once the call expires.
pub(crate) struct Timed<B> {
    inner: B,
    direction: Direction,
    sleep: Pin<Box<Sleep>>,
    done: bool,
    /// Turns the clock's error into the trailers that end the response.
    trailers: fn(&GatewayError) -> HeaderMap,
}

impl<B> Timed<B> {
    pub(crate) fn new(
        inner: B,
        clock: CallClock,
        trailers: fn(&GatewayError) -> HeaderMap,
    ) -> Self {
        Timed {
            inner,
            direction: Direction::new(clock),
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            done: false,
            trailers,
        }
    }
}

impl<B> Body for Timed<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.direction.saw(&frame);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => {
                this.done = true;
                Poll::Ready(other)
            }
            Poll::Pending => match this.direction.clock.poll_expired(&mut this.sleep, cx) {
                Poll::Ready(expiry) => {
                    this.done = true;
                    let trailers = (this.trailers)(&expiry.error());
                    Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ends_are_found_however_the_bytes_are_split() {
        let mut frames = Vec::new();
        for payload in [&b"abc"[..], b"", b"0123456789"] {
            frames.push(0u8);
            frames.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            frames.extend_from_slice(payload);
        }
        for split in 0..frames.len() {
            let mut ends = MessageEnds::default();
            let (a, b) = frames.split_at(split);
            assert_eq!(ends.feed(a) + ends.feed(b), 3, "split at {split}");
        }
        let mut ends = MessageEnds::default();
        let by_byte: usize = frames
            .iter()
            .map(|b| ends.feed(std::slice::from_ref(b)))
            .sum();
        assert_eq!(by_byte, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_unary_request_gets_the_body_limit_then_the_idle_limit() {
        let clock = CallClock::new(Some(Duration::from_secs(30)), Duration::from_secs(300));
        let started = Instant::now();
        assert_eq!(clock.expired().await, Expiry::Body(Duration::from_secs(30)));
        assert_eq!(started.elapsed(), Duration::from_secs(30));

        let clock = CallClock::new(Some(Duration::from_secs(30)), Duration::from_secs(300));
        tokio::time::sleep(Duration::from_secs(10)).await;
        clock.request_done();
        let started = Instant::now();
        assert_eq!(
            clock.expired().await,
            Expiry::Idle(Duration::from_secs(300))
        );
        assert_eq!(started.elapsed(), Duration::from_secs(300));
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_idle_limit_is_none_and_huge_limits_do_not_overflow() {
        let off = CallClock::new(None, Duration::ZERO);
        assert!(
            tokio::time::timeout(Duration::from_secs(86_400), off.expired())
                .await
                .is_err()
        );
        let huge = CallClock::new(Some(Duration::MAX), Duration::MAX);
        assert!(
            tokio::time::timeout(Duration::from_secs(86_400), huge.expired())
                .await
                .is_err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn each_message_restarts_the_idle_limit() {
        let clock = CallClock::new(None, Duration::from_secs(60));
        let started = Instant::now();
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(50)).await;
            clock.message();
        }
        clock.expired().await;
        assert_eq!(started.elapsed(), Duration::from_secs(150 + 60));
    }
}
