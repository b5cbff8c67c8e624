//! Streaming methods over REST. Server streams (and bidi responses) go out as
//! newline-delimited JSON (`{"result": ...}` per message, grpc-gateway's format), as
//! Server-Sent Events when the client accepts `text/event-stream`, or as raw bytes for
//! `google.api.HttpBody`; each message is written as it arrives, and a failure after the
//! first message becomes a final error line. Client streams (and bidi requests) are read as
//! concatenated or newline-delimited JSON values, each sent upstream as it is complete, while
//! the response may already be streaming back. Content codings (`rest_compression.rs`): a
//! compressed client stream is decoded as it is read, and a response stream is compressed
//! and flushed message by message when the client's `Accept-Encoding` asks for it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use http::request::Parts;
use http::{HeaderMap, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::body::full;
use super::body::{BoxError, ResponseBody};
use super::call_clock::{CallClock, Counted};
use super::deadline;
use super::gateway::Gateway;
use super::respond;
use super::rest::{content_type, raw_content_type, CallSetup};
use super::rest_compression::{self, ResponseCoding, StreamReader};
use crate::error::GatewayError;
use crate::grpc::frame::{self, Decoder};
use crate::grpc::status::Status;
use crate::grpc::{metadata, Code};
use crate::route::RoutePlan;
use crate::snapshot::Snapshot;
use crate::transcode::stream::{JsonSplitter, StreamFormat};
use crate::transcode::{self, RenderedBody, RequestInput};
use crate::upstream::call;
use crate::upstream::{UpstreamBody, UpstreamResponseBody};

/// The first error of a request pump, reported in place of the upstream's reaction to it.
type PumpError = Arc<Mutex<Option<GatewayError>>>;

/// Request messages in flight between the client's body and the upstream's.
const PUMP_BUFFER: usize = 4;

/// Bytes of a client stream read (and decoded) at a time.
const READ_CHUNK: usize = 16 * 1024;

impl Gateway {
    /// Serves a streaming method over REST.
    pub(super) async fn stream(
        self: &Arc<Self>,
        snapshot: &Arc<Snapshot>,
        plan: Arc<RoutePlan>,
        vars: Vec<String>,
        parts: Parts,
        body: Incoming,
        setup: CallSetup,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let pump_error: PumpError = Arc::default();
        let answer = super::rest::Answer::of(&self.settings, &parts.headers);
        let coding = answer.coding;
        let encoding = rest_compression::request_encoding(&parts.headers)?;
        let clock = CallClock::new(None, self.settings.stream_idle_timeout);
        let request_body = match plan.method.is_client_streaming() {
            true => {
                let body = rest_compression::stream_reader(
                    body,
                    encoding,
                    self.settings.max_request_bytes,
                );
                let pumped = self.pump(snapshot, &plan, vars, &parts, body, pump_error.clone());
                call::CallBody::Streamed(Counted::new(pumped, clock.clone()).boxed_unsync())
            }
            false => {
                self.single_request(snapshot, &plan, &vars, &parts, body)
                    .await?
            }
        };
        if !plan.method.is_server_streaming() {
            let reply = tokio::select! {
                reply = self.call_unary(&plan, request_body, setup) => reply,
                expiry = clock.expired() => Err(expiry.error()),
            };
            let reply = reply.map_err(|f| pumped(&pump_error).map_or(f, GatewayError::from))?;
            return self.success_response(snapshot, &plan, reply, answer);
        }
        let format = stream_format(&parts.headers, &plan);
        let call = StreamCall {
            plan,
            request_body,
            setup,
            format,
            coding,
            pump_error,
            clock,
        };
        self.server_stream(snapshot, call).await
    }

    async fn single_request(
        &self,
        snapshot: &Snapshot,
        plan: &RoutePlan,
        vars: &[String],
        parts: &Parts,
        body: Incoming,
    ) -> Result<call::CallBody, GatewayError> {
        let body = self.read_request_body(&parts.headers, body).await?;
        let input = RequestInput {
            body: &body,
            content_type: content_type(&parts.headers),
            vars,
            query: parts.uri.query(),
            form: None,
        };
        let frame = transcode::build_request(plan, &snapshot.schemas, &self.settings.json, input)?;
        self.validate_frame(snapshot, &plan.input, &frame)?;
        Ok(call::single_frame(frame))
    }

    /// Starts the upstream call and answers with its messages as they arrive.
    async fn server_stream(
        &self,
        snapshot: &Arc<Snapshot>,
        call: StreamCall,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let StreamCall {
            plan,
            request_body,
            setup,
            format,
            coding,
            pump_error,
            clock,
        } = call;
        let upstream = self.upstream_of(&plan)?;
        let deadline = deadline::from_now(setup.deadline);
        let start = call::start(upstream, &plan, request_body, setup.headers, setup.deadline);
        let start = async {
            tokio::select! {
                started = start => started,
                expiry = clock.expired() => Err(expiry.error()),
            }
        };
        let response = deadline::within_at(deadline, start)
            .await
            .map_err(|e| pumped(&pump_error).unwrap_or(e))?;
        let (head, body) = response.into_parts();
        if call::trailers_only(&head.headers, &plan)? {
            return Ok(empty_stream(format, &head.headers));
        }
        call::check_grpc_response(head.status, &head.headers)?;
        let mut events = Events {
            body,
            decoder: Decoder::new(self.settings.max_response_bytes),
            limit: self.settings.max_response_bytes,
            headers: head.headers.clone(),
            deadline,
            pump_error,
            clock,
        };
        let first = events.next().await;
        let writer = Writer {
            plan,
            snapshot: snapshot.clone(),
            json: self.settings.json.clone(),
            format,
            coding,
        };
        writer.respond(first, events, &head.headers)
    }

    /// Feeds the client's body, split into JSON values, to the upstream as request frames.
    fn pump(
        &self,
        snapshot: &Arc<Snapshot>,
        plan: &Arc<RoutePlan>,
        vars: Vec<String>,
        parts: &Parts,
        body: StreamReader,
        error: PumpError,
    ) -> UpstreamBody {
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(PUMP_BUFFER);
        let pump = Pump {
            plan: plan.clone(),
            vars,
            query: parts.uri.query().map(str::to_owned),
            content_type: content_type(&parts.headers).map(str::to_owned),
            json: self.settings.json.clone(),
            limit: self.settings.max_request_bytes,
            rules: self.settings.validate.then(|| snapshot.clone()),
        };
        tokio::spawn(async move {
            if let Err(e) = pump.run(body, &tx).await {
                let message = e.to_string();
                if let Ok(mut slot) = error.lock() {
                    slot.get_or_insert(e);
                }
                let _ = tx.send(Err(message.into())).await;
            }
        });
        let frames = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
        StreamBody::new(frames).boxed_unsync()
    }
}

fn pumped(error: &PumpError) -> Option<GatewayError> {
    error.lock().ok().and_then(|slot| slot.clone())
}

/// NDJSON unless the client asks for SSE; `HttpBody` output is always raw.
fn stream_format(headers: &HeaderMap, plan: &RoutePlan) -> StreamFormat {
    let accept = headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if plan.http_body_response {
        StreamFormat::Raw
    } else if accept.contains("text/event-stream") {
        StreamFormat::Sse
    } else {
        StreamFormat::NdJson
    }
}

/// A stream that ended before its first message (a trailers-only OK).
fn empty_stream(format: StreamFormat, upstream: &HeaderMap) -> Response<ResponseBody> {
    let mut response = Response::new(full(Bytes::new()));
    let headers = response.headers_mut();
    metadata::response_metadata(upstream, "grpc-metadata-", headers);
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    response
}

/// What the upstream's response body yields next.
pub(super) enum Event {
    Message(Bytes),
    End(Result<(), GatewayError>),
}

/// A streaming call on its way to the upstream.
struct StreamCall {
    plan: Arc<RoutePlan>,
    request_body: call::CallBody,
    setup: CallSetup,
    format: StreamFormat,
    coding: ResponseCoding,
    pump_error: PumpError,
    clock: CallClock,
}

/// Reads response frames and the final status, within the deadline and the idle limit.
pub(super) struct Events {
    body: UpstreamResponseBody,
    decoder: Decoder,
    /// The largest message, decoded.
    limit: usize,
    headers: HeaderMap,
    deadline: Option<(Instant, Duration)>,
    pump_error: PumpError,
    clock: CallClock,
}

impl Events {
    pub(super) async fn next(&mut self) -> Event {
        loop {
            match self.decoder.next_frame() {
                Err(e) => return Event::End(Err(call::frame_error(e))),
                Ok(Some(f)) => {
                    self.clock.message();
                    return match call::decompress(f, &self.headers, self.limit) {
                        Ok(payload) => Event::Message(payload),
                        Err(e) => Event::End(Err(e)),
                    };
                }
                Ok(None) => {}
            }
            let next = async {
                tokio::select! {
                    frame = self.body.frame() => Ok(frame),
                    expiry = self.clock.expired() => Err(expiry.error()),
                }
            };
            let frame = match self.deadline {
                None => next.await,
                Some((at, d)) => tokio::time::timeout_at(at, next)
                    .await
                    .unwrap_or_else(|_| Err(deadline::exceeded(d))),
            };
            let frame = match frame {
                Ok(frame) => frame,
                Err(e) => return Event::End(Err(e)),
            };
            match frame {
                None => return self.ended_without_status(),
                Some(Err(e)) => return self.failed(call::stream_error(&e)),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.decoder.push(&data),
                    Err(frame) => return self.trailers(frame.into_trailers().unwrap_or_default()),
                },
            }
        }
    }

    fn trailers(&mut self, trailers: HeaderMap) -> Event {
        match Status::from_headers(&trailers) {
            Some(status) if status.code == Code::Ok => match self.decoder.finish() {
                Ok(()) => Event::End(Ok(())),
                Err(e) => Event::End(Err(call::frame_error(e))),
            },
            Some(status) => Event::End(Err(call::status_failure(
                status,
                self.headers.clone(),
                trailers,
            ))),
            None => self.ended_without_status(),
        }
    }

    fn ended_without_status(&self) -> Event {
        self.failed(GatewayError::upstream(
            Code::Internal,
            "upstream ended the stream without a grpc-status",
        ))
    }

    /// A failure, unless the request pump failed first: then that is the real cause.
    fn failed(&self, error: GatewayError) -> Event {
        Event::End(Err(pumped(&self.pump_error).unwrap_or(error)))
    }
}

impl Events {
    /// The events of a call whose response has begun, for protocols other than REST (the
    /// WebSocket session): no request pump to report, each message counted on `clock`.
    pub(super) fn of_call(
        body: UpstreamResponseBody,
        headers: HeaderMap,
        limit: usize,
        deadline: Option<(Instant, Duration)>,
        clock: CallClock,
    ) -> Events {
        Events {
            body,
            decoder: Decoder::new(limit),
            limit,
            headers,
            deadline,
            pump_error: PumpError::default(),
            clock,
        }
    }
}

/// Turns response events into the client's stream.
struct Writer {
    plan: Arc<RoutePlan>,
    snapshot: Arc<Snapshot>,
    json: transcode::JsonOptions,
    format: StreamFormat,
    coding: ResponseCoding,
}

impl Writer {
    /// Answers with the stream; an error before the first message is a plain error response.
    fn respond(
        self,
        first: Event,
        events: Events,
        upstream: &HeaderMap,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let first_chunk = match first {
            Event::End(Err(failure)) => return Err(failure),
            Event::End(Ok(())) => return Ok(empty_stream(self.format, upstream)),
            Event::Message(payload) => self.render(payload)?,
        };
        let content_type = first_chunk.1.clone();
        let coding = self.coding;
        let chunks = stream::unfold(
            (Some(first_chunk.0), events, self, false),
            |(pending, mut events, writer, done)| async move {
                if let Some(chunk) = pending {
                    return Some((Ok(Frame::data(chunk)), (None, events, writer, false)));
                }
                if done {
                    return None;
                }
                let (item, end) = writer.next_chunk(events.next().await);
                Some((item?, (None, events, writer, end)))
            },
        );
        let mut headers = HeaderMap::new();
        metadata::response_metadata(upstream, "grpc-metadata-", &mut headers);
        let body = StreamBody::new(chunks).boxed_unsync();
        let body = coding.stream(&content_type, body, &mut headers);
        headers.insert(CONTENT_TYPE, content_type);
        let mut response = Response::new(body);
        *response.headers_mut() = headers;
        Ok(response)
    }

    /// One event as a body frame (`None`: the body ends now) and whether it is the last.
    fn next_chunk(&self, event: Event) -> (Option<Result<Frame<Bytes>, BoxError>>, bool) {
        match event {
            Event::Message(payload) => match self.render(payload) {
                Ok((chunk, _)) => (Some(Ok(Frame::data(chunk))), false),
                Err(failure) => (Some(self.error_chunk(&failure)), true),
            },
            Event::End(Ok(())) => (None, true),
            Event::End(Err(failure)) => (Some(self.error_chunk(&failure)), true),
        }
    }

    fn render(&self, payload: Bytes) -> Result<(Bytes, HeaderValue), GatewayError> {
        let format = self.format;
        match transcode::render_response(&self.plan, &self.snapshot.schemas, &self.json, payload)? {
            RenderedBody::Json(json) => Ok((
                format.message(&json),
                HeaderValue::from_static(format.content_type()),
            )),
            RenderedBody::Raw { content_type, data } => Ok((data, raw_content_type(&content_type))),
        }
    }

    /// The final error line; formats without one abort the body instead.
    fn error_chunk(&self, failure: &GatewayError) -> Result<Frame<Bytes>, BoxError> {
        let error = respond::rendered(failure, &self.snapshot, &self.json);
        match self.format.error(&error.to_json()) {
            Some(chunk) => Ok(Frame::data(chunk)),
            None => Err(error.to_string().into()),
        }
    }
}

/// The request side of a client stream.
struct Pump {
    plan: Arc<RoutePlan>,
    vars: Vec<String>,
    query: Option<String>,
    content_type: Option<String>,
    json: transcode::JsonOptions,
    limit: usize,
    /// The snapshot whose rules each message is checked against (`--validate`), if any.
    rules: Option<Arc<Snapshot>>,
}

impl Pump {
    async fn run(
        &self,
        mut body: StreamReader,
        tx: &mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
    ) -> Result<(), GatewayError> {
        let mut splitter = JsonSplitter::new(self.limit);
        let mut chunk = vec![0u8; READ_CHUNK];
        loop {
            while let Some(value) = splitter.next_value().map_err(invalid)? {
                if tx.send(Ok(Frame::data(self.frame(&value)?))).await.is_err() {
                    return Ok(());
                }
            }
            match body.read(&mut chunk).await {
                Ok(0) => return splitter.finish().map_err(invalid),
                Ok(n) => splitter.push(&chunk[..n]),
                Err(e) => return Err(read_failure(&e)),
            }
        }
    }

    fn frame(&self, value: &Bytes) -> Result<Bytes, GatewayError> {
        let input = RequestInput {
            body: value,
            content_type: self.content_type.as_deref(),
            vars: &self.vars,
            query: self.query.as_deref(),
            form: None,
        };
        let message = transcode::request_message(&self.plan, &self.json, input)?;
        if let Some(snapshot) = &self.rules {
            snapshot.rules.check(&message)?;
        }
        Ok(frame::encode(&message))
    }
}

/// A client stream that failed: its connection (cancelled), or its coding (a bad request).
fn read_failure(error: &std::io::Error) -> GatewayError {
    let from_body = error
        .get_ref()
        .is_some_and(|inner| inner.is::<hyper::Error>());
    match from_body {
        true => GatewayError::new(
            Code::Cancelled,
            format!("the client's request stream failed: {error}"),
        ),
        false => GatewayError::invalid_argument(format!(
            "cannot decode the request stream: {}",
            crate::error::clipped(&error.to_string())
        )),
    }
}

fn invalid(error: crate::transcode::stream::SplitError) -> GatewayError {
    GatewayError::invalid_argument(error.to_string())
}
