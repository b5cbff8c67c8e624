//! Connect streams, every call kind: the client's envelopes become gRPC frames on their way
//! upstream ([`Inbound`]), and the upstream's frames become envelopes on their way back
//! ([`Outbound`]), each written as it arrives; its trailers (or the failure) become the
//! end-stream message. A stream that fails answers HTTP 200 with the error in that message.
//!
//! Bounds: each request message is refused past `--max-request-bytes` as soon as its prefix
//! arrives, each response message past `--max-response-bytes`; the call's deadline, and
//! `call_clock.rs`'s idle limit (and body limit for a single request message), end it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use prost_reflect::MessageDescriptor;
use tokio::time::Sleep;

use super::envelope::{self, EnvelopeError, RequestDecoder};
use super::{codec_of, coding, send, upstream_metadata, Codec, Target};
use crate::compression::Encoding;
use crate::error::{ErrorSource, GatewayError};
use crate::grpc::frame::{self, Decoder};
use crate::grpc::status::{self, Status};
use crate::grpc::{metadata, Code};
use crate::server::body::{drain, BoxError, ResponseBody};
use crate::server::call_clock::{CallClock, Counted, Timed};
use crate::server::deadline;
use crate::server::gateway::Gateway;
use crate::server::respond;
use crate::snapshot::Snapshot;
use crate::transcode::{self, JsonOptions};
use crate::upstream::call;

/// The first failure of the client's request stream, reported in place of the upstream's
/// reaction to it (the upstream only sees its stream reset).
type Failure = Arc<Mutex<Option<GatewayError>>>;

fn record(failure: &Failure, error: GatewayError) {
    if let Ok(mut slot) = failure.lock() {
        slot.get_or_insert(error);
    }
}

fn recorded(failure: &Failure) -> Option<GatewayError> {
    failure.lock().ok().and_then(|slot| slot.clone())
}

/// What both directions of a stream need to translate messages.
#[derive(Clone)]
struct Translation {
    codec: Codec,
    snapshot: Arc<Snapshot>,
    json: JsonOptions,
    /// Whether each message is checked against its rules (`--validate`).
    validate: bool,
    /// The coding of the client's compressed messages (`Connect-Content-Encoding`).
    request_coding: Encoding,
    /// The coding of the answer's (from `Connect-Accept-Encoding`), if any.
    response_coding: Option<Encoding>,
}

impl Gateway {
    /// A Connect stream. Before the stream starts, a content type the gateway cannot read is
    /// 415, a unary method 415 and a bidi stream over HTTP/1.1 505; every other failure is
    /// the end-stream message.
    pub(super) async fn connect_stream(
        self: &Arc<Self>,
        snapshot: &Arc<Snapshot>,
        request: Request<Incoming>,
        label: &mut Option<Arc<str>>,
    ) -> Response<ResponseBody> {
        let json = &self.settings.json;
        let (parts, body) = request.into_parts();
        let (limit, wait) = (self.settings.max_request_bytes, self.settings.body_timeout);
        let codec = match codec_of(&parts.headers, "application/connect+") {
            Ok(codec) => codec,
            Err(error) => {
                drain(parts.version, body, limit, wait).await;
                return respond::connect(&error, snapshot, json);
            }
        };
        let started = match self.stream_call(snapshot, &parts, codec, label) {
            Ok(call) => self.start_stream(call, body).await,
            Err(error) => {
                drain(parts.version, body, limit, wait).await;
                Err(error)
            }
        };
        match started {
            Ok(response) => response,
            Err(error) if is_about_http(&error) => respond::connect(&error, snapshot, json),
            Err(error) => {
                respond::connect_stream(&error, snapshot, json, codec.stream_content_type())
            }
        }
    }

    /// The call a stream request makes: its method, codings, deadline and metadata.
    fn stream_call(
        &self,
        snapshot: &Arc<Snapshot>,
        parts: &http::request::Parts,
        codec: Codec,
        label: &mut Option<Arc<str>>,
    ) -> Result<StreamCall, GatewayError> {
        let target = self.connect_target(snapshot, parts.uri.path())?;
        *label = Some(target.label.clone());
        check_streaming(&target, parts.version)?;
        let headers = &parts.headers;
        let request_coding = coding::request(headers, "connect-content-encoding")?;
        let deadline = deadline::connect_deadline(&self.settings, target.name(), headers)?;
        let offer = &self.settings.response_compression;
        let translation = Translation {
            codec,
            snapshot: snapshot.clone(),
            json: self.settings.json.clone(),
            validate: self.settings.validate,
            request_coding,
            response_coding: coding::response(headers, "connect-accept-encoding", offer),
        };
        Ok(StreamCall {
            target,
            translation,
            metadata: upstream_metadata(headers, deadline),
            deadline,
        })
    }

    /// Starts the upstream call with the client's stream as its body, and answers with the
    /// upstream's messages as they come.
    async fn start_stream(
        &self,
        call: StreamCall,
        body: Incoming,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let single = !call.target.method.is_client_streaming();
        let settings = &self.settings;
        let clock = CallClock::new(
            single.then_some(settings.body_timeout),
            settings.stream_idle_timeout,
        );
        let failure = Failure::default();
        let inbound = Inbound {
            body,
            decoder: RequestDecoder::new(settings.max_request_bytes),
            limit: settings.max_request_bytes,
            desc: call.target.method.input(),
            translation: call.translation.clone(),
            failure: failure.clone(),
            done: false,
        };
        let request_body = Counted::new(inbound.boxed_unsync(), clock.clone()).boxed_unsync();
        let ends = deadline::from_now(call.deadline);
        let started = async {
            let body = call::CallBody::Streamed(request_body);
            tokio::select! {
                started = send(&call.target, call.metadata.clone(), body) => started,
                expiry = clock.expired() => Err(expiry.error()),
            }
        };
        let started = deadline::within_at(ends, started).await;
        let response = started.map_err(|e| recorded(&failure).unwrap_or(e))?;
        let (head, upstream_body) = response.into_parts();
        if let Some(status) = Status::from_headers(&head.headers) {
            return Ok(trailers_only(
                status,
                head.headers,
                &call.translation,
                &failure,
            ));
        }
        call::check_grpc_response(head.status, &head.headers)?;
        let upstream_body = upstream_body.map_err(BoxError::from).boxed_unsync();
        let outbound = Outbound {
            inner: Some(Timed::new(upstream_body, clock, respond::status_trailers)),
            decoder: Decoder::new(settings.max_response_bytes),
            limit: settings.max_response_bytes,
            desc: call.target.method.output(),
            headers: head.headers,
            translation: call.translation,
            failure,
            deadline: ends.map(|(at, d)| (Box::pin(tokio::time::sleep_until(at)), d)),
        };
        Ok(outbound.into_response())
    }
}

/// Refusals about HTTP itself (415, 505) are answered as such, not as a failed stream.
fn is_about_http(error: &GatewayError) -> bool {
    matches!(error.http_status.map(|s| s.as_u16()), Some(415 | 505))
}

/// A stream call, ready to go upstream.
struct StreamCall {
    target: Target,
    translation: Translation,
    metadata: HeaderMap,
    deadline: Option<Duration>,
}

/// Streams are for streaming methods; bidi ones need HTTP/2 (HTTP/1.1 cannot carry both
/// directions at once), client streams and server streams do not.
fn check_streaming(target: &Target, version: Version) -> Result<(), GatewayError> {
    let method = &target.method;
    if !method.is_client_streaming() && !method.is_server_streaming() {
        return Err(super::unsupported_media(format!(
            "{} is a unary method; call it with application/proto or application/json",
            target.name()
        )));
    }
    let bidi = method.is_client_streaming() && method.is_server_streaming();
    if bidi && version < Version::HTTP_2 {
        let error = GatewayError::new(Code::Unimplemented, "bidirectional streams need HTTP/2")
            .with_status(StatusCode::HTTP_VERSION_NOT_SUPPORTED)
            .from_source(ErrorSource::Client);
        return Err(error);
    }
    Ok(())
}

/// The answer to a call the upstream ended trailers-only: no messages, the end-stream message.
fn trailers_only(
    status: Status,
    headers: HeaderMap,
    translation: &Translation,
    failure: &Failure,
) -> Response<ResponseBody> {
    let mut headers = headers;
    status::sanitize_details(&mut headers);
    let error = match status.code {
        Code::Ok => recorded(failure),
        _ => Some(call::status_failure(
            status,
            HeaderMap::new(),
            headers.clone(),
        )),
    };
    let end = respond::connect_end_stream(
        error.as_ref(),
        Some(&headers),
        &translation.snapshot,
        &translation.json,
    );
    let mut response = Response::new(crate::server::body::full(end));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, translation.codec.stream_content_type());
    if let Some(error) = &error {
        response
            .extensions_mut()
            .insert(crate::server::tags::ErrorTag {
                code: error.code,
                source: error.source,
            });
    }
    response
}

/// The client's envelopes as gRPC frames: each message translated (JSON to binary) and
/// framed as it completes. A broken stream is recorded and fails the body, which resets the
/// upstream's stream.
struct Inbound {
    body: Incoming,
    decoder: RequestDecoder,
    /// The most bytes a message may decode to.
    limit: usize,
    desc: MessageDescriptor,
    translation: Translation,
    failure: Failure,
    done: bool,
}

impl Inbound {
    /// The gRPC frames of every message complete so far, if any.
    fn frames(&mut self) -> Result<Option<Bytes>, GatewayError> {
        let mut out = BytesMut::new();
        while let Some(envelope) = self.decoder.next_message()? {
            let coding = self.translation.request_coding;
            if envelope.compressed && coding.is_identity() {
                return Err(EnvelopeError::Compressed.into());
            }
            let message = match envelope.compressed {
                true => coding::decode(coding, envelope.payload, self.limit)?,
                false => envelope.payload,
            };
            let wire = match self.translation.codec {
                Codec::Proto => message,
                Codec::Json => {
                    let t = &self.translation;
                    transcode::json_to_wire(&t.snapshot.schemas, &self.desc, &message, &t.json)?
                }
            };
            if self.translation.validate {
                (self.translation.snapshot.rules).check_wire(&self.desc, &wire)?;
            }
            out.extend_from_slice(&frame::encode_raw(&wire));
        }
        Ok((!out.is_empty()).then(|| out.freeze()))
    }

    fn fail(&mut self, error: GatewayError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        record(&self.failure, error.clone());
        Poll::Ready(Some(Err(Box::new(error))))
    }
}

impl Body for Inbound {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match std::task::ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    this.decoder.push(&data);
                    match this.frames() {
                        Ok(Some(frames)) => return Poll::Ready(Some(Ok(Frame::data(frames)))),
                        Ok(None) => continue,
                        Err(error) => return this.fail(error),
                    }
                }
                Some(Err(e)) => {
                    let error = GatewayError::new(
                        Code::Cancelled,
                        format!("the request stream failed: {e}"),
                    );
                    return this.fail(error);
                }
                None => {
                    if let Err(error) = this.decoder.finish() {
                        return this.fail(error.into());
                    }
                    this.done = true;
                    return Poll::Ready(None);
                }
            }
        }
    }
}

/// The upstream's gRPC frames as envelopes, then the end-stream message: from its trailers,
/// or from what failed (the client's stream, the upstream, the deadline, the idle limit).
struct Outbound {
    /// `None` once the end-stream message is written (dropping the upstream's body).
    inner: Option<Timed<ResponseBody>>,
    decoder: Decoder,
    /// The most bytes a message may decode to.
    limit: usize,
    desc: MessageDescriptor,
    /// The upstream's response headers (its `grpc-encoding`).
    headers: HeaderMap,
    translation: Translation,
    failure: Failure,
    deadline: Option<(Pin<Box<Sleep>>, Duration)>,
}

type Polled = Poll<Option<Result<Frame<Bytes>, BoxError>>>;

impl Outbound {
    /// The response: the upstream's headers, the stream's content type and coding, and this
    /// body.
    fn into_response(self) -> Response<ResponseBody> {
        let mut headers = HeaderMap::new();
        metadata::response_metadata(&self.headers, "", &mut headers);
        let t = &self.translation;
        headers.insert(CONTENT_TYPE, t.codec.stream_content_type());
        if let Some(encoding) = t.response_coding {
            let value = http::HeaderValue::from_static(encoding.token());
            headers.insert("connect-content-encoding", value);
        }
        let mut response = Response::new(self.boxed_unsync());
        *response.headers_mut() = headers;
        response
    }

    /// The envelopes of every upstream message complete so far, if any.
    fn envelopes(&mut self) -> Result<Option<Bytes>, GatewayError> {
        let mut out = BytesMut::new();
        while let Some(f) = self.decoder.next_frame().map_err(call::frame_error)? {
            out.extend_from_slice(&self.envelope(f)?);
        }
        Ok((!out.is_empty()).then(|| out.freeze()))
    }

    /// One upstream message as an envelope: passed on compressed when the client accepts the
    /// upstream's coding (binary codec), else decoded, rendered, and compressed for the client
    /// when that is worth it.
    fn envelope(&self, frame: frame::Frame) -> Result<Bytes, GatewayError> {
        let t = &self.translation;
        let upstream = coding::upstream(&self.headers);
        let same = upstream.is_some() && upstream == t.response_coding;
        if t.codec == Codec::Proto && frame.compressed && same {
            return Ok(envelope::encode(envelope::COMPRESSED, &frame.payload));
        }
        let message = call::decompress(frame, &self.headers, self.limit)?;
        let message = match t.codec {
            Codec::Proto => message,
            Codec::Json => {
                let json =
                    transcode::wire_to_json(&t.snapshot.schemas, &self.desc, message, &t.json)
                        .map_err(|e| e.from_source(ErrorSource::Upstream))?;
                Bytes::from(json)
            }
        };
        Ok(match coding::encode(t.response_coding, &message) {
            Some(compressed) => envelope::encode(envelope::COMPRESSED, &compressed),
            None => envelope::encode(0, &message),
        })
    }

    /// Writes the end-stream message: the client's failure if its stream broke, else `error`.
    fn end(&mut self, error: Option<GatewayError>, trailers: Option<&HeaderMap>) -> Polled {
        self.inner = None;
        let error = recorded(&self.failure).or(error);
        let t = &self.translation;
        let end = respond::connect_end_stream(error.as_ref(), trailers, &t.snapshot, &t.json);
        Poll::Ready(Some(Ok(Frame::data(end))))
    }

    /// The end after the upstream's trailers: its status, and its metadata.
    fn end_with(&mut self, mut trailers: HeaderMap) -> Polled {
        status::sanitize_details(&mut trailers);
        let error = match Status::from_headers(&trailers) {
            Some(status) if status.code == Code::Ok => None,
            Some(status) => Some(call::status_failure(
                status,
                HeaderMap::new(),
                trailers.clone(),
            )),
            None => Some(GatewayError::upstream(
                Code::Internal,
                "upstream ended the stream without a grpc-status",
            )),
        };
        self.end(error, Some(&trailers))
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> Option<GatewayError> {
        let (sleep, limit) = self.deadline.as_mut()?;
        sleep
            .as_mut()
            .poll(cx)
            .is_ready()
            .then(|| deadline::exceeded(*limit))
    }
}

impl Body for Outbound {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        let this = &mut *self;
        loop {
            let Some(inner) = this.inner.as_mut() else {
                return Poll::Ready(None);
            };
            let polled = match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(polled) => polled,
                Poll::Pending => {
                    return match this.expired(cx) {
                        Some(error) => this.end(Some(error), None),
                        None => Poll::Pending,
                    };
                }
            };
            match polled {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        this.decoder.push(&data);
                        match this.envelopes() {
                            Ok(Some(out)) => return Poll::Ready(Some(Ok(Frame::data(out)))),
                            Ok(None) => continue,
                            Err(error) => return this.end(Some(error), None),
                        }
                    }
                    Err(frame) => {
                        let trailers = frame.into_trailers().unwrap_or_default();
                        return this.end_with(trailers);
                    }
                },
                Some(Err(e)) => return this.end(Some(broken(&*e)), None),
                None => {
                    let error = GatewayError::upstream(
                        Code::Internal,
                        "upstream ended the stream without a grpc-status",
                    );
                    return this.end(Some(error), None);
                }
            }
        }
    }
}

/// The error of an upstream response body that failed mid-stream.
fn broken(error: &(dyn std::error::Error + 'static)) -> GatewayError {
    match error.downcast_ref::<hyper::Error>() {
        Some(e) => call::stream_error(e),
        None => GatewayError::upstream(Code::Unavailable, "upstream response failed"),
    }
}
