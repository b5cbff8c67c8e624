//! gRPC server reflection (v1 and v1alpha), served by the gateway itself for the services it
//! loaded, so grpcurl and similar tools can list, describe and call them through the gateway
//! without `.proto` files. Served from the snapshot's descriptors, not the upstreams': the
//! gateway only forwards what it loaded, so that is what it advertises. The answers come from
//! `crate::grpc::reflection`; this file streams them, one per request message, as they come.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use prost::Message;
use tonic_reflection::pb::v1::ServerReflectionRequest;

use super::body::{BoxError, ResponseBody};
use crate::error::GatewayError;
use crate::grpc::frame::{self, Decoder};
use crate::grpc::reflection::{ReflectionIndex, V1, V1ALPHA};
use crate::grpc::{status, Code};
use crate::snapshot::Snapshot;
use crate::upstream::UpstreamBody;

/// The reflection index of a snapshot, built on first use and then kept with it, so requests
/// never re-index descriptors and a reload brings a fresh one with the new snapshot.
#[derive(Debug, Default)]
pub(crate) struct ReflectionCache(OnceLock<Arc<ReflectionIndex>>);

/// Whether `service` is one of the reflection services the gateway answers itself.
pub(super) fn is_reflection(service: &str) -> bool {
    service == V1 || service == V1ALPHA
}

/// The metrics label of a reflection call: its path, when it is the one method of either
/// version (clients cannot grow the label set).
pub(super) fn label(path: &str) -> Option<Arc<str>> {
    static PATHS: OnceLock<[Arc<str>; 2]> = OnceLock::new();
    let paths = PATHS.get_or_init(|| {
        [V1, V1ALPHA].map(|service| Arc::from(format!("/{service}/ServerReflectionInfo")))
    });
    paths.iter().find(|p| ***p == *path).cloned()
}

/// Answers a reflection call (one whose service [`is_reflection`] accepts): each request
/// message, at most `limit` bytes, gets its answer as soon as it arrives.
pub(super) async fn serve(
    snapshot: &Snapshot,
    cache: &ReflectionCache,
    request: Request<UpstreamBody>,
    limit: usize,
) -> Response<ResponseBody> {
    let index = cache
        .0
        .get_or_init(|| {
            let services = snapshot.services.keys().map(String::as_str);
            Arc::new(ReflectionIndex::new(&snapshot.pool, services))
        })
        .clone();
    let call = Call {
        body: request.into_body(),
        decoder: Decoder::new(limit),
        index,
        ready: VecDeque::new(),
        ended: false,
    };
    let frames = stream::unfold(call, |mut call| async move {
        let frame = call.next().await?;
        Some((Ok::<_, BoxError>(frame), call))
    });
    let mut response = Response::new(StreamBody::new(frames).boxed_unsync());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

/// One reflection call: the client's messages in, answers and finally the status out.
struct Call {
    body: UpstreamBody,
    decoder: Decoder,
    index: Arc<ReflectionIndex>,
    /// Answers decoded but not yet sent.
    ready: VecDeque<Bytes>,
    ended: bool,
}

impl Call {
    /// The next frame of the response: an answer, or the trailers that end the call.
    async fn next(&mut self) -> Option<Frame<Bytes>> {
        loop {
            if let Some(answer) = self.ready.pop_front() {
                return Some(Frame::data(answer));
            }
            if self.ended {
                return None;
            }
            if let Err(error) = self.answer_buffered() {
                return Some(self.end(&error));
            }
            if !self.ready.is_empty() {
                continue;
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.decoder.push(&data);
                    }
                }
                Some(Err(e)) => {
                    let error = GatewayError::new(
                        Code::Cancelled,
                        format!("the client's request stream failed: {e}"),
                    );
                    return Some(self.end(&error));
                }
                None => {
                    let outcome = match self.decoder.finish() {
                        Ok(()) => GatewayError::new(Code::Ok, ""),
                        Err(e) => GatewayError::invalid_argument(e.to_string()),
                    };
                    return Some(self.end(&outcome));
                }
            }
        }
    }

    /// Answers every complete request message buffered so far.
    fn answer_buffered(&mut self) -> Result<(), GatewayError> {
        while let Some(message) = self
            .decoder
            .next_frame()
            .map_err(|e| GatewayError::invalid_argument(e.to_string()))?
        {
            if message.compressed {
                return Err(GatewayError::invalid_argument(
                    "compressed reflection requests are not supported",
                ));
            }
            let request = ServerReflectionRequest::decode(message.payload).map_err(|e| {
                GatewayError::invalid_argument(format!("invalid reflection request: {e}"))
            })?;
            self.ready
                .push_back(frame::encode(&self.index.answer(request)));
        }
        Ok(())
    }

    /// The trailers that end the call with `outcome`.
    fn end(&mut self, outcome: &GatewayError) -> Frame<Bytes> {
        self.ended = true;
        let mut trailers = HeaderMap::new();
        status::insert_status(&mut trailers, outcome.code, &outcome.message);
        Frame::trailers(trailers)
    }
}
