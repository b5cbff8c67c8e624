//! gRPC exchanges with an upstream: the request out, and the response message(s), headers,
//! trailers and status back, with every protocol failure mapped to a status.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, TE, USER_AGENT};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;

use super::{body, ReplayBody, Upstream, UpstreamBody, UpstreamResponseBody};
use crate::compression::{self, DecodeError, Encoding};
use crate::error::{code_from_upstream_http, GatewayError};
use crate::grpc::frame::{Decoder, Frame, FrameError, Outgoing};
use crate::grpc::status::Status;
use crate::grpc::{timeout, Code};
use crate::route::RoutePlan;

const GRPC: HeaderValue = HeaderValue::from_static("application/grpc");
const TRAILERS: HeaderValue = HeaderValue::from_static("trailers");
const GRPC_ENCODING: &str = "grpc-encoding";
const GRPC_ACCEPT_ENCODING: HeaderName = HeaderName::from_static("grpc-accept-encoding");
/// The codings the gateway decodes in response messages, in its order of preference.
const ACCEPTED: [Encoding; 3] = [Encoding::Gzip, Encoding::Zstd, Encoding::Deflate];
pub(crate) const ACCEPT_ENCODING: HeaderValue = HeaderValue::from_static("gzip, zstd, deflate");
const AGENT: HeaderValue =
    HeaderValue::from_static(concat!("protogate/", env!("CARGO_PKG_VERSION")));

/// A successful unary reply.
#[derive(Debug)]
pub(crate) struct UnaryReply {
    pub message: Bytes,
    pub headers: HeaderMap,
    pub trailers: HeaderMap,
}

/// What a call sends: one whole frame (which can be sent again if the upstream refuses the
/// stream), or a stream of frames.
pub(crate) enum CallBody {
    Whole(Outgoing),
    Streamed(UpstreamBody),
}

/// One request frame.
pub(crate) fn single_frame(frame: Outgoing) -> CallBody {
    CallBody::Whole(frame)
}

/// Calls `plan`'s method on `upstream` and reads the single response message.
pub(crate) async fn unary(
    upstream: &Upstream,
    plan: &RoutePlan,
    body: CallBody,
    metadata: HeaderMap,
    deadline: Option<Duration>,
    limit: usize,
) -> Result<UnaryReply, GatewayError> {
    let response = start(upstream, plan, body, metadata, deadline).await?;
    read_reply(response, limit, plan).await
}

/// Sends the request and returns the upstream's response as soon as its headers arrive.
pub(crate) async fn start(
    upstream: &Upstream,
    plan: &RoutePlan,
    body: CallBody,
    metadata: HeaderMap,
    deadline: Option<Duration>,
) -> Result<Response<UpstreamResponseBody>, GatewayError> {
    let request = grpc_request(upstream, plan, body, metadata, deadline)?;
    upstream.send(request).await
}

fn grpc_request(
    upstream: &Upstream,
    plan: &RoutePlan,
    body: CallBody,
    mut metadata: HeaderMap,
    deadline: Option<Duration>,
) -> Result<Request<UpstreamBody>, GatewayError> {
    metadata.insert(USER_AGENT, AGENT);
    insert_grpc_headers(&mut metadata, deadline);
    request_to(upstream, &plan.grpc_path, body, metadata)
}

/// The gRPC request headers every call carries: its content type, `te: trailers`, the codings
/// the gateway decodes, and the deadline as `grpc-timeout`.
pub(crate) fn insert_grpc_headers(headers: &mut HeaderMap, deadline: Option<Duration>) {
    headers.insert(CONTENT_TYPE, GRPC);
    headers.insert(TE, TRAILERS);
    headers.insert(GRPC_ACCEPT_ENCODING, ACCEPT_ENCODING);
    if let Some(d) = deadline {
        if let Some(v) = timeout::header_value(d) {
            headers.insert(timeout::HEADER, v);
        }
    }
}

/// An HTTP/2 `POST` of `body` to `path` on `upstream`, with exactly `headers`. A whole single
/// frame is kept so that it can be sent again if the upstream refuses the stream.
pub(crate) fn request_to(
    upstream: &Upstream,
    path: &http::uri::PathAndQuery,
    body: CallBody,
    headers: HeaderMap,
) -> Result<Request<UpstreamBody>, GatewayError> {
    let (body, replay) = match body {
        CallBody::Whole(frame) => (body::whole(frame.clone()), Some(ReplayBody(frame))),
        CallBody::Streamed(body) => (body, None),
    };
    let mut request = Request::new(body);
    if let Some(replay) = replay {
        request.extensions_mut().insert(replay);
    }
    *request.method_mut() = Method::POST;
    *request.uri_mut() = upstream.uri(path)?;
    *request.version_mut() = Version::HTTP_2;
    *request.headers_mut() = headers;
    Ok(request)
}

async fn read_reply(
    response: Response<UpstreamResponseBody>,
    limit: usize,
    plan: &RoutePlan,
) -> Result<UnaryReply, GatewayError> {
    let (parts, body) = response.into_parts();
    if trailers_only(&parts.headers, plan)? {
        return Err(no_message(plan));
    }
    check_grpc_response(parts.status, &parts.headers)?;
    let (message, trailers) = read_single(body, limit, &parts.headers, plan).await?;
    let status = Status::from_headers(&trailers).ok_or_else(|| {
        GatewayError::upstream(
            Code::Internal,
            format!(
                "upstream ended {} without a grpc-status",
                plan.method_name()
            ),
        )
    })?;
    if status.code != Code::Ok {
        return Err(status_failure(status, parts.headers, trailers));
    }
    let message = message.ok_or_else(|| no_message(plan))?;
    Ok(UnaryReply {
        message,
        headers: parts.headers,
        trailers,
    })
}

/// Whether the response is trailers-only (its status in the headers): `Err` for an error
/// status, `Ok(true)` for OK (which carries no message).
pub(crate) fn trailers_only(headers: &HeaderMap, _plan: &RoutePlan) -> Result<bool, GatewayError> {
    match Status::from_headers(headers) {
        None => Ok(false),
        Some(status) if status.code == Code::Ok => Ok(true),
        Some(status) => Err(status_failure(status, headers.clone(), HeaderMap::new())),
    }
}

/// A reply that is not gRPC at all (an L7 proxy's error page, say) gets a status from its
/// HTTP code, per the gRPC spec.
pub(crate) fn check_grpc_response(
    status: StatusCode,
    headers: &HeaderMap,
) -> Result<(), GatewayError> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if status != StatusCode::OK {
        return Err(GatewayError::upstream(
            code_from_upstream_http(status),
            format!("upstream answered HTTP {status} ({content_type:?}), not gRPC"),
        ));
    }
    if !content_type.starts_with("application/grpc") {
        return Err(GatewayError::upstream(
            Code::Unknown,
            format!("upstream answered with content-type {content_type:?}, not gRPC"),
        ));
    }
    Ok(())
}

pub(crate) fn status_failure(
    status: Status,
    headers: HeaderMap,
    trailers: HeaderMap,
) -> GatewayError {
    GatewayError::upstream_status(
        status.code,
        status.message,
        status.details,
        headers,
        trailers,
    )
}

pub(crate) fn no_message(plan: &RoutePlan) -> GatewayError {
    GatewayError::upstream(
        Code::Internal,
        format!(
            "upstream sent no response message for unary method {}",
            plan.method_name()
        ),
    )
}

/// Reads a unary response: at most one message (a second one fails the call at once, so an
/// upstream that keeps sending cannot grow what is held), then the trailers.
async fn read_single(
    mut body: UpstreamResponseBody,
    limit: usize,
    headers: &HeaderMap,
    plan: &RoutePlan,
) -> Result<(Option<Bytes>, HeaderMap), GatewayError> {
    let mut decoder = Decoder::new(limit);
    let mut message = None;
    let mut trailers = HeaderMap::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| stream_error(&e))?;
        match frame.into_data() {
            Ok(data) => decoder.push(&data),
            Err(frame) => trailers = frame.into_trailers().unwrap_or_default(),
        }
        while let Some(f) = decoder.next_frame().map_err(frame_error)? {
            let payload = decompress(f, headers, limit)?;
            if message.replace(payload).is_some() {
                return Err(several_messages(plan));
            }
        }
    }
    decoder.finish().map_err(frame_error)?;
    Ok((message, trailers))
}

fn several_messages(plan: &RoutePlan) -> GatewayError {
    GatewayError::upstream(
        Code::Internal,
        format!(
            "upstream sent several response messages for unary method {}",
            plan.method_name()
        ),
    )
}

/// The payload of a response frame, decoded when its compressed flag is set: with the
/// response's `grpc-encoding`, to at most `limit` bytes (the limit a frame has on the wire).
pub(crate) fn decompress(
    frame: Frame,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Bytes, GatewayError> {
    if !frame.compressed {
        return Ok(frame.payload);
    }
    let header = headers
        .get(GRPC_ENCODING)
        .map(|v| v.to_str().unwrap_or("?"));
    let encoding = match header.map(|h| (h, Encoding::parse(h))) {
        None | Some((_, Some(Encoding::Identity))) => {
            return Err(frame_error(FrameError::CompressedWithoutEncoding))
        }
        Some((_, Some(encoding))) if ACCEPTED.contains(&encoding) => encoding,
        Some((token, _)) => {
            let token = crate::error::clipped(token);
            return Err(frame_error(FrameError::UnsupportedEncoding(token)));
        }
    };
    compression::decode(encoding, &frame.payload, limit).map_err(|e| {
        let code = match e {
            DecodeError::TooLarge { .. } => Code::ResourceExhausted,
            DecodeError::Corrupt { .. } => Code::Internal,
        };
        GatewayError::upstream(code, format!("upstream response: {encoding} message: {e}"))
    })
}

pub(crate) fn frame_error(error: FrameError) -> GatewayError {
    let code = crate::error::code_from_frame_error(&error);
    GatewayError::upstream(code, format!("upstream response: {error}"))
}

/// A stream reset or broken connection mid-response, mapped as the gRPC spec maps
/// RST_STREAM codes.
pub(crate) fn stream_error(error: &hyper::Error) -> GatewayError {
    let text = crate::upstream::error_chain(error);
    let code = crate::error::code_from_reset(crate::error::h2_reset(error));
    GatewayError::upstream(code, format!("upstream response failed: {text}"))
}
