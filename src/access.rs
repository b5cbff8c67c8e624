//! What a request's access log line says beyond its request and response: the body bytes it
//! read and the upstream endpoint that answered it, and how fast. The code that knows these
//! (the body reader, the upstream balancer) runs in the request's task, far from the edge
//! that writes the line, so they note them in a task-local [`Note`] the edge opens around
//! each request instead of threading it through every handler. Outside such a scope noting
//! does nothing. A body read outside the scope (one forwarded upstream is polled by the
//! connection's task) notes through [`Reading`], which takes the note along.
//!
//! The same note carries the request's trace, when traces are exported, to the upstream
//! balancer that starts a client span per attempt: one scope per request, not two.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::trace::RequestTrace;

tokio::task_local! {
    static NOTE: Arc<Note>;
}

/// One request's notes.
#[derive(Debug, Default)]
pub(crate) struct Note {
    bytes_in: AtomicU64,
    upstream: Mutex<Option<(SocketAddr, Duration)>>,
    trace: Option<Arc<RequestTrace>>,
}

impl Note {
    /// The notes of a request with this trace (none when traces are not exported).
    pub(crate) fn traced(trace: Option<Arc<RequestTrace>>) -> Note {
        Note {
            trace,
            ..Note::default()
        }
    }

    /// Request body bytes read.
    pub(crate) fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }

    /// The endpoint of the last upstream attempt that answered, and the time to its headers.
    pub(crate) fn upstream(&self) -> Option<(SocketAddr, Duration)> {
        self.upstream.lock().ok().and_then(|held| *held)
    }
}

/// Runs `f` with `note` as the request's notes. A plain function, not an `async` one: that
/// would hold `f` twice (as its argument and inside the scope), doubling the request's future.
pub(crate) fn scope<F: std::future::Future>(
    note: Arc<Note>,
    f: F,
) -> impl std::future::Future<Output = F::Output> {
    NOTE.scope(note, f)
}

/// The trace of the request whose scope this is, when it is traced.
pub(crate) fn trace() -> Option<Arc<RequestTrace>> {
    NOTE.try_with(|note| note.trace.clone()).ok().flatten()
}

/// Notes `n` request body bytes read.
pub(crate) fn read(n: u64) {
    let _ = NOTE.try_with(|note| note.bytes_in.fetch_add(n, Ordering::Relaxed));
}

/// Notes that `endpoint` answered after `took`.
pub(crate) fn answered(endpoint: SocketAddr, took: Duration) {
    let _ = NOTE.try_with(|note| {
        if let Ok(mut held) = note.upstream.lock() {
            *held = Some((endpoint, took));
        }
    });
}

/// A request body whose data bytes are noted as read by the request it belongs to, wherever
/// it is polled (a body forwarded upstream is polled by the connection's task, outside the
/// request's scope).
#[derive(Debug)]
pub(crate) struct Reading<B> {
    inner: B,
    note: Option<Arc<Note>>,
}

impl<B> Reading<B> {
    /// Wraps `inner` for the request whose scope this is called in.
    pub(crate) fn new(inner: B) -> Self {
        Reading {
            inner,
            note: NOTE.try_with(Arc::clone).ok(),
        }
    }
}

impl<B> Body for Reading<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(note)) = (&polled, &self.note) {
            let n = frame.data_ref().map_or(0, |d| d.len() as u64);
            note.bytes_in.fetch_add(n, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn notes_reach_the_scope_and_nothing_else() {
        read(5);
        let note = Arc::new(Note::default());
        let addr: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        scope(note.clone(), async {
            read(3);
            read(4);
            answered(addr, Duration::from_millis(7));
        })
        .await;
        assert_eq!(note.bytes_in(), 7);
        assert_eq!(note.upstream(), Some((addr, Duration::from_millis(7))));
    }

    #[tokio::test]
    async fn a_body_notes_its_bytes_wherever_it_is_read() {
        use http_body_util::BodyExt;
        let note = Arc::new(Note::default());
        let body = scope(note.clone(), async {
            Reading::new(http_body_util::Full::new(Bytes::from_static(b"hello")))
        })
        .await;
        // Read outside the scope, as a connection task reads a forwarded body.
        let read = body.collect().await.unwrap().to_bytes();
        assert_eq!(read.len(), 5);
        assert_eq!(note.bytes_in(), 5);
    }
}
