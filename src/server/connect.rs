//! The Connect protocol (connectrpc.com/docs/protocol), translated to gRPC for the upstream
//! serving the method, so that Connect clients (connect-web, connect-go, `buf curl`) can call
//! any loaded service, with or without `google.api.http` rules.
//!
//! - Unary calls (`unary.rs`): a `POST` of the bare message, `application/proto` or
//!   `application/json`, with `Connect-Protocol-Version: 1`; or a `GET` with the message in the
//!   query (`get.rs`) for methods marked `idempotency_level = NO_SIDE_EFFECTS`.
//! - Streams (`stream.rs`): `application/connect+proto` or `+json`, messages in envelopes
//!   (`envelope.rs`), the last response envelope the end-stream message.
//!
//! Metadata goes upstream as the gRPC passthrough sends it (every header but the hop-by-hop
//! ones and the protocol's own); the deadline is `Connect-Timeout-Ms`, lowered to the
//! configured one (`deadline.rs`). Errors are written by `respond.rs`; compression is
//! `coding.rs`.

mod coding;
pub(super) mod envelope;
mod get;
mod stream;
mod unary;

use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Request, Response};
use hyper::body::Incoming;
use prost_reflect::MethodDescriptor;

use super::body::ResponseBody;
use super::gateway::Gateway;
use super::passthrough::strip_hop_by_hop;
use super::respond;
use super::tags::RouteTag;
use crate::error::{quoted, ErrorSource, GatewayError};
use crate::grpc::{status, Code};
use crate::snapshot::Snapshot;
use crate::upstream::call;
use crate::upstream::{Upstream, UpstreamResponseBody};

/// The header that marks a unary Connect request.
const PROTOCOL_VERSION: &str = "connect-protocol-version";

/// Which form of the Connect protocol a request takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnectKind {
    /// A `POST` of one bare message.
    Unary,
    /// A `POST` of enveloped messages (`application/connect+...`), for every streaming kind.
    Stream,
    /// A `GET` with the message in the query (`connect=v1`).
    Get,
}

/// Whether a request speaks Connect, and in which form: a `POST` with a Connect stream content
/// type, a `POST` with `Connect-Protocol-Version`, or a `GET` with `connect=v1` in its query.
pub(super) fn kind_of(
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Option<ConnectKind> {
    if method == Method::GET {
        let marked = query.is_some_and(|q| q.split('&').any(|pair| pair == "connect=v1"));
        return marked.then_some(ConnectKind::Get);
    }
    if method != Method::POST {
        return None;
    }
    if media_type_starts_with(headers, "application/connect+") {
        return Some(ConnectKind::Stream);
    }
    headers
        .contains_key(PROTOCOL_VERSION)
        .then_some(ConnectKind::Unary)
}

/// Whether the media type of `content-type` starts with `prefix` (lower-case), read as
/// [`media_type`] reads it, without a copy: every POST asks.
fn media_type_starts_with(headers: &HeaderMap, prefix: &str) -> bool {
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let media = content_type
        .and_then(|ct| ct.split(';').next())
        .unwrap_or("");
    let start = media.trim_start().get(..prefix.len());
    start.is_some_and(|start| start.eq_ignore_ascii_case(prefix))
}

/// The media type of `content-type`, lower-cased, without parameters.
fn media_type(headers: &HeaderMap) -> String {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The content types a 415 says the method takes (RFC 9110's `Accept-Post`, as connect-go
/// sends it).
const ACCEPT_POST: HeaderName = HeaderName::from_static("accept-post");

/// What every Connect answer says it takes: the request codings, and on a 415 the content
/// types.
fn announce(kind: ConnectKind, mut response: Response<ResponseBody>) -> Response<ResponseBody> {
    let accept = match kind {
        ConnectKind::Stream => "connect-accept-encoding",
        ConnectKind::Unary | ConnectKind::Get => "accept-encoding",
    };
    let unsupported = response.status() == http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
    let headers = response.headers_mut();
    headers.insert(accept, coding::ACCEPTED);
    if unsupported {
        headers.insert(ACCEPT_POST, accepted_types(kind));
    }
    response
}

fn accepted_types(kind: ConnectKind) -> HeaderValue {
    match kind {
        ConnectKind::Stream => {
            HeaderValue::from_static("application/connect+json, application/connect+proto")
        }
        ConnectKind::Unary | ConnectKind::Get => {
            HeaderValue::from_static("application/json, application/proto")
        }
    }
}

/// How messages are written: binary protobuf or protobuf JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    Proto,
    Json,
}

impl Codec {
    fn named(name: &str) -> Option<Codec> {
        match name {
            "proto" => Some(Codec::Proto),
            "json" => Some(Codec::Json),
            _ => None,
        }
    }

    fn unary_content_type(self) -> HeaderValue {
        match self {
            Codec::Proto => HeaderValue::from_static("application/proto"),
            Codec::Json => HeaderValue::from_static("application/json"),
        }
    }

    fn stream_content_type(self) -> HeaderValue {
        match self {
            Codec::Proto => HeaderValue::from_static("application/connect+proto"),
            Codec::Json => HeaderValue::from_static("application/connect+json"),
        }
    }
}

/// The codec of a request whose content type is `prefix` followed by the codec's name; a
/// `charset` parameter is allowed if it is UTF-8. Anything else is 415.
fn codec_of(headers: &HeaderMap, prefix: &str) -> Result<Codec, GatewayError> {
    let media = media_type(headers);
    let params_ok = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.split(';').skip(1).all(is_utf8_charset));
    let codec = media.strip_prefix(prefix).and_then(Codec::named);
    match codec {
        Some(codec) if params_ok => Ok(codec),
        _ => {
            let content_type = headers
                .get(CONTENT_TYPE)
                .map(|v| String::from_utf8_lossy(v.as_bytes()))
                .unwrap_or_default();
            Err(unsupported_media(format!(
                "content-type {} is not supported; use {prefix}proto or {prefix}json",
                quoted(&content_type)
            )))
        }
    }
}

fn is_utf8_charset(param: &str) -> bool {
    let Some((name, value)) = param.split_once('=') else {
        return false;
    };
    name.trim().eq_ignore_ascii_case("charset")
        && value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
}

fn unsupported_media(message: String) -> GatewayError {
    GatewayError::new(Code::Unimplemented, message)
        .with_status(http::StatusCode::UNSUPPORTED_MEDIA_TYPE)
        .from_source(ErrorSource::Client)
}

/// The method a Connect request calls, and the upstream that serves it.
pub(super) struct Target {
    method: MethodDescriptor,
    upstream: Arc<Upstream>,
    /// `/package.Service/Method`.
    path: PathAndQuery,
    /// The metrics label: the path, shared.
    label: Arc<str>,
}

impl Target {
    /// `package.Service/Method`, as the configured timeouts name it.
    fn name(&self) -> &str {
        self.path.path().trim_start_matches('/')
    }
}

impl Gateway {
    /// Answers a Connect request. Never fails: errors are Connect errors.
    pub(super) async fn handle_connect(
        self: &Arc<Self>,
        kind: ConnectKind,
        request: Request<Incoming>,
    ) -> Response<ResponseBody> {
        let snapshot = self.snapshot();
        let mut label = None;
        let mut response = match kind {
            ConnectKind::Unary => self.connect_unary(&snapshot, request, &mut label).await,
            ConnectKind::Get => self.connect_get(&snapshot, request, &mut label).await,
            ConnectKind::Stream => self.connect_stream(&snapshot, request, &mut label).await,
        };
        if let Some(label) = label {
            response.extensions_mut().insert(RouteTag(label));
        }
        announce(kind, response)
    }

    /// A Connect error response for a request refused before it was handled (at the edge):
    /// unary requests get the JSON error, streams the end-stream message.
    pub(super) fn connect_error(
        &self,
        kind: ConnectKind,
        headers: &HeaderMap,
        error: &GatewayError,
    ) -> Response<ResponseBody> {
        let snapshot = self.snapshot();
        let json = &self.settings.json;
        match kind {
            ConnectKind::Stream => {
                let content_type = codec_of(headers, "application/connect+")
                    .unwrap_or(Codec::Proto)
                    .stream_content_type();
                respond::connect_stream(error, &snapshot, json, content_type)
            }
            ConnectKind::Unary | ConnectKind::Get => respond::connect(error, &snapshot, json),
        }
    }

    /// The loaded method at `path` and its upstream; `unimplemented` when there is none.
    fn connect_target(&self, snapshot: &Snapshot, path: &str) -> Result<Target, GatewayError> {
        let unknown = || {
            GatewayError::new(
                Code::Unimplemented,
                format!("unknown method {}", quoted(path)),
            )
            .from_source(ErrorSource::Client)
        };
        let label = snapshot
            .grpc_methods
            .get(path)
            .ok_or_else(unknown)?
            .label
            .clone();
        let (service, name) = path
            .trim_start_matches('/')
            .split_once('/')
            .ok_or_else(unknown)?;
        let method = snapshot
            .pool
            .get_service_by_name(service)
            .and_then(|s| s.methods().find(|m| m.name() == name))
            .ok_or_else(unknown)?;
        let upstream = snapshot
            .upstream_of_service(service)
            .and_then(|index| self.upstream(index))
            .ok_or_else(unknown)?
            .clone();
        let path = PathAndQuery::try_from(path).map_err(|_| unknown())?;
        Ok(Target {
            method,
            upstream,
            path,
            label,
        })
    }
}

/// Whether a header belongs to the Connect protocol (or to gRPC's, which clients do not set)
/// rather than to the call's metadata.
fn is_protocol_header(name: &HeaderName) -> bool {
    let name = name.as_str();
    name.starts_with("connect-")
        || name.starts_with("grpc-")
        || matches!(
            name,
            "content-type" | "content-length" | "content-encoding" | "accept-encoding"
        )
}

/// The gRPC metadata of a Connect request: its headers as the passthrough forwards them, less
/// the protocol's own; with the gRPC ones and the deadline as `grpc-timeout`.
fn upstream_metadata(client: &HeaderMap, deadline: Option<Duration>) -> HeaderMap {
    let mut kept = client.clone();
    strip_hop_by_hop(&mut kept);
    let mut metadata = HeaderMap::new();
    for (name, value) in &kept {
        if !is_protocol_header(name) {
            metadata.append(name.clone(), value.clone());
        }
    }
    call::insert_grpc_headers(&mut metadata, deadline);
    metadata
}

/// Sends the gRPC call to the target's upstream, returning once the response headers arrive
/// (an invalid `grpc-status-details-bin` dropped from them). A whole single frame can be sent
/// again if the upstream refuses the stream.
async fn send(
    target: &Target,
    metadata: HeaderMap,
    body: call::CallBody,
) -> Result<Response<UpstreamResponseBody>, GatewayError> {
    let request = call::request_to(&target.upstream, &target.path, body, metadata)?;
    let mut response = target.upstream.send(request).await?;
    status::sanitize_details(response.headers_mut());
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::timeout;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn codecs_by_content_type() {
        let unary = |ct: &str| codec_of(&headers(&[("content-type", ct)]), "application/");
        assert_eq!(unary("application/json").unwrap(), Codec::Json);
        assert_eq!(
            unary("application/JSON; charset=UTF-8").unwrap(),
            Codec::Json
        );
        assert_eq!(unary("application/proto").unwrap(), Codec::Proto);
        for bad in [
            "application/xml",
            "application/json; charset=latin1",
            "text/json",
        ] {
            assert_eq!(unary(bad).unwrap_err().status(), 415, "{bad}");
        }
        let stream = codec_of(
            &headers(&[("content-type", "application/connect+json")]),
            "application/connect+",
        );
        assert_eq!(stream.unwrap(), Codec::Json);
    }

    #[test]
    fn a_connect_stream_is_told_by_its_content_type_in_any_case() {
        let kind = |ct: &str| kind_of(&Method::POST, &headers(&[("content-type", ct)]), None);
        for stream in [
            "application/connect+json",
            " Application/Connect+Proto; charset=utf-8",
        ] {
            assert_eq!(kind(stream), Some(ConnectKind::Stream), "{stream}");
        }
        for other in ["application/connect", "application/json", "ä", ""] {
            assert_eq!(kind(other), None, "{other}");
        }
    }

    #[test]
    fn metadata_keeps_custom_headers_and_drops_the_protocols() {
        let client = headers(&[
            ("connect-protocol-version", "1"),
            ("connect-timeout-ms", "100"),
            ("content-type", "application/json"),
            ("content-length", "2"),
            ("accept-encoding", "gzip"),
            ("grpc-timeout", "1S"),
            ("connection", "keep-alive"),
            ("authorization", "Bearer t"),
            ("x-custom-bin", "AAE"),
        ]);
        let out = upstream_metadata(&client, Some(Duration::from_millis(250)));
        let mut keys: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "authorization",
                "content-type",
                "grpc-accept-encoding",
                "grpc-timeout",
                "te",
                "x-custom-bin"
            ]
        );
        assert_eq!(out["content-type"], "application/grpc");
        let sent = out["grpc-timeout"].to_str().unwrap();
        assert_eq!(timeout::parse(sent), Some(Duration::from_millis(250)));
    }
}
