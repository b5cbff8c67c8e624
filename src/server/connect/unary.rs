//! Unary Connect calls: the request message (from a `POST` body or a `GET` query) goes
//! upstream as one gRPC frame, and the single response message comes back bare, its headers
//! as headers and its trailers as `Trailer-*` headers.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_ENCODING, CONTENT_TYPE, VARY};
use http::{HeaderMap, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::{codec_of, coding, send, upstream_metadata, Codec, Target, PROTOCOL_VERSION};
use crate::compression::Encoding;
use crate::error::{quoted, ErrorSource, GatewayError};
use crate::grpc::frame::{self, Decoder, Frame};
use crate::grpc::status::{self, Status};
use crate::grpc::{metadata, Code};
use crate::server::body::{drain, full, ResponseBody};
use crate::server::deadline;
use crate::server::gateway::Gateway;
use crate::server::respond;
use crate::snapshot::Snapshot;
use crate::transcode;
use crate::upstream::call;
use crate::upstream::UpstreamResponseBody;

/// One unary call, ready to go upstream.
pub(super) struct UnaryCall<'a> {
    pub target: &'a Target,
    pub codec: Codec,
    /// The request message as the client wrote it, and its coding.
    pub message: Bytes,
    pub encoding: Encoding,
    pub headers: &'a HeaderMap,
    pub deadline: Option<Duration>,
}

impl Gateway {
    /// A unary `POST`; errors are Connect JSON errors.
    pub(super) async fn connect_unary(
        self: &Arc<Self>,
        snapshot: &Arc<Snapshot>,
        request: Request<Incoming>,
        label: &mut Option<Arc<str>>,
    ) -> Response<ResponseBody> {
        let json = &self.settings.json;
        match self.unary_post(snapshot, request, label).await {
            Ok(response) => response,
            Err(error) => respond::connect(&error, snapshot, json),
        }
    }

    /// What a unary `POST` must be before its body is read: a loaded unary method, a codec,
    /// protocol version, coding and deadline the gateway takes.
    fn unary_checks(
        &self,
        snapshot: &Snapshot,
        parts: &http::request::Parts,
        label: &mut Option<Arc<str>>,
    ) -> Result<(Target, Codec, Encoding, Option<Duration>), GatewayError> {
        let target = self.connect_target(snapshot, parts.uri.path())?;
        *label = Some(target.label.clone());
        check_unary(&target)?;
        let codec = codec_of(&parts.headers, "application/")?;
        check_version(&parts.headers)?;
        let encoding = coding::request(&parts.headers, "content-encoding")?;
        let deadline = deadline::connect_deadline(&self.settings, target.name(), &parts.headers)?;
        Ok((target, codec, encoding, deadline))
    }

    async fn unary_post(
        &self,
        snapshot: &Snapshot,
        request: Request<Incoming>,
        label: &mut Option<Arc<str>>,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let (parts, body) = request.into_parts();
        let checked = self.unary_checks(snapshot, &parts, label);
        let (target, codec, encoding, deadline) = match checked {
            Ok(checked) => checked,
            Err(error) => {
                let limit = self.settings.max_request_bytes;
                drain(parts.version, body, limit, self.settings.body_timeout).await;
                return Err(error);
            }
        };
        let message = self.read_body(body).await?;
        let call = UnaryCall {
            target: &target,
            codec,
            message,
            encoding,
            headers: &parts.headers,
            deadline,
        };
        self.unary_call(snapshot, call).await
    }

    /// Calls the upstream and answers with its message in the client's codec.
    pub(super) async fn unary_call(
        &self,
        snapshot: &Snapshot,
        call: UnaryCall<'_>,
    ) -> Result<Response<ResponseBody>, GatewayError> {
        let json = &self.settings.json;
        let limit = self.settings.max_request_bytes;
        let message = coding::decode(call.encoding, call.message.clone(), limit)?;
        let wire = match call.codec {
            Codec::Proto => message,
            Codec::Json => {
                let input = call.target.method.input();
                transcode::json_to_wire(&snapshot.schemas, &input, &message, json)?
            }
        };
        self.validate_wire(snapshot, &call.target.method.input(), &wire)?;
        let metadata = upstream_metadata(call.headers, call.deadline);
        let limit = self.settings.max_response_bytes;
        let exchange = async {
            let body = call::single_frame(frame::Outgoing::shared(wire));
            let response = send(call.target, metadata, body).await?;
            read_reply(response, limit, call.target).await
        };
        let reply = deadline::within(call.deadline, exchange).await?;
        let offer = &self.settings.response_compression;
        let accepted = coding::response(call.headers, "accept-encoding", offer);
        let (body, encoding) =
            self.answer(snapshot, &call, reply.frame, &reply.headers, accepted)?;
        let mut response = success(body, call.codec, &reply.headers, &reply.trailers);
        if let Some(encoding) = encoding {
            let value = HeaderValue::from_static(encoding.token());
            response.headers_mut().insert(CONTENT_ENCODING, value);
        }
        if !offer.is_empty() {
            response
                .headers_mut()
                .append(VARY, HeaderValue::from_static("accept-encoding"));
        }
        Ok(response)
    }

    /// The answer's body in the client's codec, and its coding: the upstream's compressed
    /// message as it is when the client accepts its coding (binary codec), else decoded,
    /// rendered, and compressed for the client when that is worth it.
    fn answer(
        &self,
        snapshot: &Snapshot,
        call: &UnaryCall<'_>,
        frame: Frame,
        headers: &HeaderMap,
        accepted: Option<Encoding>,
    ) -> Result<(Bytes, Option<Encoding>), GatewayError> {
        let upstream = coding::upstream(headers);
        if call.codec == Codec::Proto
            && frame.compressed
            && upstream.is_some()
            && upstream == accepted
        {
            return Ok((frame.payload, accepted));
        }
        let message = call::decompress(frame, headers, self.settings.max_response_bytes)?;
        let body = match call.codec {
            Codec::Proto => message,
            Codec::Json => {
                let output = call.target.method.output();
                let json = &self.settings.json;
                let rendered = transcode::wire_to_json(&snapshot.schemas, &output, message, json)
                    .map_err(|e| e.from_source(ErrorSource::Upstream))?;
                Bytes::from(rendered)
            }
        };
        Ok(match coding::encode(accepted, &body) {
            Some(compressed) => (compressed, accepted),
            None => (body, None),
        })
    }
}

/// The upstream's single message, still framed (perhaps compressed), with its metadata.
struct RawReply {
    frame: Frame,
    headers: HeaderMap,
    trailers: HeaderMap,
}

/// A unary call's answer: the message, the upstream's headers, its trailers as `trailer-*`.
fn success(
    body: Bytes,
    codec: Codec,
    headers: &HeaderMap,
    trailers: &HeaderMap,
) -> Response<ResponseBody> {
    let mut response = Response::new(full(body));
    let out = response.headers_mut();
    metadata::response_metadata(headers, "", out);
    metadata::response_metadata(trailers, "trailer-", out);
    out.insert(CONTENT_TYPE, codec.unary_content_type());
    response
}

/// A streaming method called as unary is the client's mistake: 415, as for any content type
/// the method does not take.
pub(super) fn check_unary(target: &Target) -> Result<(), GatewayError> {
    let method = &target.method;
    if !method.is_client_streaming() && !method.is_server_streaming() {
        return Ok(());
    }
    Err(super::unsupported_media(format!(
        "{} is a streaming method; call it with application/connect+proto or +json",
        target.name()
    )))
}

/// `Connect-Protocol-Version` must be `1`.
fn check_version(headers: &HeaderMap) -> Result<(), GatewayError> {
    match headers.get(PROTOCOL_VERSION).map(|v| v.as_bytes()) {
        None | Some(b"1") => Ok(()),
        Some(other) => Err(GatewayError::invalid_argument(format!(
            "Connect-Protocol-Version {} is not supported; use 1",
            quoted(&String::from_utf8_lossy(other))
        ))),
    }
}

/// Reads the upstream's single response message and its trailers; an error status, a
/// missing or second message, or a broken frame is the call's error.
async fn read_reply(
    response: Response<UpstreamResponseBody>,
    limit: usize,
    target: &Target,
) -> Result<RawReply, GatewayError> {
    let (parts, mut body) = response.into_parts();
    if let Some(status) = Status::from_headers(&parts.headers) {
        return Err(match status.code {
            Code::Ok => no_message(target),
            // A trailers-only response's headers are its trailers.
            _ => call::status_failure(status, HeaderMap::new(), parts.headers),
        });
    }
    call::check_grpc_response(parts.status, &parts.headers)?;
    let mut decoder = Decoder::new(limit);
    let mut message = None;
    let mut trailers = HeaderMap::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| call::stream_error(&e))?;
        match frame.into_data() {
            Ok(data) => decoder.push(&data),
            Err(frame) => trailers = frame.into_trailers().unwrap_or_default(),
        }
        while let Some(f) = decoder.next_frame().map_err(call::frame_error)? {
            if message.replace(f).is_some() {
                return Err(GatewayError::upstream(
                    Code::Internal,
                    format!(
                        "upstream sent several response messages for unary method {}",
                        target.name()
                    ),
                ));
            }
        }
    }
    decoder.finish().map_err(call::frame_error)?;
    status::sanitize_details(&mut trailers);
    let status = Status::from_headers(&trailers).ok_or_else(|| {
        GatewayError::upstream(
            Code::Internal,
            format!("upstream ended {} without a grpc-status", target.name()),
        )
    })?;
    if status.code != Code::Ok {
        return Err(call::status_failure(status, parts.headers, trailers));
    }
    let message = message.ok_or_else(|| no_message(target))?;
    Ok(RawReply {
        frame: message,
        headers: parts.headers,
        trailers,
    })
}

fn no_message(target: &Target) -> GatewayError {
    GatewayError::upstream(
        Code::Internal,
        format!(
            "upstream sent no response message for unary method {}",
            target.name()
        ),
    )
}
