//! The bodies of an upstream call. The request body of a whole frame, sent in its pieces.
//! The response body: hyper's body, plus the endpoint's load count, released when the body
//! ends so that the balancer sees streams as long as they last, and the attempt's client span
//! when the request is traced, ended with the call's status.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::UpstreamBody;
use crate::grpc::frame::Outgoing;
use crate::trace::ClientSpan;

/// A request body of one whole frame, each of its pieces sent as it is: a large binary
/// message goes out from the buffer it arrived in.
pub(crate) fn whole(frame: Outgoing) -> UpstreamBody {
    use http_body_util::BodyExt;
    OutgoingBody(frame)
        .map_err(|never| match never {})
        .boxed_unsync()
}

struct OutgoingBody(Outgoing);

impl Body for OutgoingBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.next_piece().map(|piece| Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.len() as u64)
    }
}

/// An upstream response body. Reads exactly like [`Incoming`] (same data and error types);
/// the request stops counting as in flight on its endpoint at the end of the body (the
/// trailers, the last frame, or an error) or when the body is dropped.
pub struct UpstreamResponseBody {
    body: Incoming,
    load: Option<Load>,
    span: Option<ClientSpan>,
}

impl UpstreamResponseBody {
    pub(super) fn new(body: Incoming, load: Load) -> Self {
        UpstreamResponseBody {
            body,
            load: Some(load),
            span: None,
        }
    }
}

/// `response` with the client span of its attempt (when traced), which notes its head now and
/// ends with its body.
pub(super) fn traced(
    response: Response<UpstreamResponseBody>,
    span: Option<ClientSpan>,
) -> Response<UpstreamResponseBody> {
    let Some(mut span) = span else {
        return response;
    };
    span.answered(response.status(), response.headers());
    response.map(|mut body| {
        body.span = Some(span);
        body
    })
}

impl std::fmt::Debug for UpstreamResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamResponseBody")
            .field("body", &self.body)
            .field("in_flight", &self.load.is_some())
            .finish()
    }
}

impl Body for UpstreamResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => true,
            Poll::Ready(Some(Ok(frame))) => frame.is_trailers(),
            Poll::Pending => false,
        };
        if ended {
            this.load = None;
            if let Some(span) = this.span.take() {
                end_span(span, &polled);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Ends a client span with how its body ended: its trailers, an error, or nothing more.
fn end_span(span: ClientSpan, polled: &Poll<Option<Result<Frame<Bytes>, hyper::Error>>>) {
    match polled {
        Poll::Ready(Some(Ok(frame))) => span.ended(frame.trailers_ref()),
        Poll::Ready(Some(Err(error))) => {
            span.failed(crate::error::code_from_reset(crate::error::h2_reset(error)));
        }
        _ => span.ended(None),
    }
}

/// One request in flight on an endpoint, counted (in the endpoint's counter) until dropped.
pub(super) struct Load(Arc<AtomicUsize>);

impl Load {
    pub(super) fn new(in_flight: &Arc<AtomicUsize>) -> Load {
        in_flight.fetch_add(1, Ordering::Relaxed);
        Load(in_flight.clone())
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
