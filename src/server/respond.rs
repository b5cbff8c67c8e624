//! The error edge: every error the gateway answers with, its own or an upstream's, written in
//! the client's protocol, in one place.
//!
//! - REST: the status of the table in `error.rs` and a `google.rpc.Status` JSON body, the
//!   upstream's details rendered with the loaded descriptors, its metadata as
//!   `Grpc-Metadata-*` and `Grpc-Trailer-*`, `Allow` for a 405, `WWW-Authenticate` for 401.
//! - native gRPC: a trailers-only response, the status in `grpc-status` and `grpc-message`.
//! - gRPC-Web: the same in the headers, under a gRPC-Web content type.
//! - Connect, unary: the status of the Connect table in `error.rs` and its JSON error,
//!   `{"code":"not_found","message":...,"details":[{"type","value","debug"}]}`, the upstream's
//!   metadata as headers and its trailers as `Trailer-*` headers.
//! - Connect streams: HTTP 200 and one end-stream message, `{"error":...,"metadata":...}`.
//!
//! Each response carries an [`ErrorTag`] for the edge's metrics and access log.

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderMap, Response};

use super::body::{full, ResponseBody};
use super::tags::ErrorTag;
use crate::error::{connect_code, connect_http_status, ErrorExtra, GatewayError};
use crate::grpc::{metadata, status, Code};
use crate::snapshot::Snapshot;
use crate::transcode::{self, JsonOptions};

pub(crate) const JSON: HeaderValue = HeaderValue::from_static("application/json");
const GRPC: HeaderValue = HeaderValue::from_static("application/grpc");
const GRPC_WEB: HeaderValue = HeaderValue::from_static("application/grpc-web+proto");

/// A REST error response, the upstream's details rendered with `snapshot`'s descriptors.
pub(crate) fn rest(
    error: &GatewayError,
    snapshot: &Snapshot,
    json: &JsonOptions,
) -> Response<ResponseBody> {
    rest_plain(&rendered(error, snapshot, json))
}

/// A REST error response whose details need no rendering (the gateway's own errors).
pub(crate) fn rest_plain(error: &GatewayError) -> Response<ResponseBody> {
    let mut response = Response::new(full(Bytes::from(error.to_json())));
    *response.status_mut() = error.status();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, JSON);
    if let Some(extra) = &error.extra {
        add_rest_headers(extra, headers);
    }
    if error.code == Code::Unauthenticated {
        if let Ok(v) = HeaderValue::from_str(&error.message) {
            headers.insert(WWW_AUTHENTICATE, v);
        }
    }
    tagged(response, error)
}

/// The error with the upstream's `google.rpc.Status` details rendered as JSON.
pub(crate) fn rendered(
    error: &GatewayError,
    snapshot: &Snapshot,
    json: &JsonOptions,
) -> GatewayError {
    let mut error = error.clone();
    if let Some(details) = error.status_details() {
        error.details = transcode::render_status_details(&snapshot.pool, details, json);
    }
    error
}

fn add_rest_headers(extra: &ErrorExtra, headers: &mut HeaderMap) {
    if let Some(upstream) = &extra.upstream_headers {
        metadata::response_metadata(upstream, "grpc-metadata-", headers);
    }
    if let Some(trailers) = &extra.upstream_trailers {
        metadata::response_metadata(trailers, "grpc-trailer-", headers);
    }
    if let Some(allow) = &extra.allow {
        headers.insert(ALLOW, allow.clone());
    }
}

/// A trailers-only native gRPC error response.
pub(crate) fn grpc(error: &GatewayError) -> Response<ResponseBody> {
    trailers_only(error, GRPC)
}

/// A gRPC-Web error response: the status in the headers, no body.
pub(crate) fn grpc_web(error: &GatewayError) -> Response<ResponseBody> {
    trailers_only(error, GRPC_WEB)
}

fn trailers_only(error: &GatewayError, content_type: HeaderValue) -> Response<ResponseBody> {
    let mut response = Response::new(full(Bytes::new()));
    let headers = response.headers_mut();
    *headers = status_trailers(error);
    headers.insert(CONTENT_TYPE, content_type);
    tagged(response, error)
}

/// `grpc-status`, `grpc-message` and, when the error has details, `grpc-status-details-bin`
/// for `error`: the trailers that end a gRPC call with it.
pub(crate) fn status_trailers(error: &GatewayError) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    status::insert_status(&mut trailers, error.code, &error.message);
    if let Some(details) = error.status_details() {
        status::insert_details(&mut trailers, details);
    }
    trailers
}

/// A Connect unary error response (also the answer to a `GET`), the upstream's details
/// rendered with `snapshot`'s descriptors.
pub(crate) fn connect(
    error: &GatewayError,
    snapshot: &Snapshot,
    json: &JsonOptions,
) -> Response<ResponseBody> {
    let body = connect_error(error, snapshot, json);
    let mut response = Response::new(full(Bytes::from(body.to_string())));
    *response.status_mut() = connect_status(error);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, JSON);
    if let Some(extra) = &error.extra {
        add_connect_headers(extra, headers);
    }
    tagged(response, error)
}

/// The status of a Connect unary error: the Connect table's, except for the refusals that are
/// about HTTP itself (405, 415, 505), which keep theirs.
fn connect_status(error: &GatewayError) -> http::StatusCode {
    match error.http_status {
        Some(status) if matches!(status.as_u16(), 405 | 415 | 505) => status,
        _ => connect_http_status(error.code),
    }
}

fn add_connect_headers(extra: &ErrorExtra, headers: &mut HeaderMap) {
    if let Some(upstream) = &extra.upstream_headers {
        metadata::response_metadata(upstream, "", headers);
    }
    if let Some(trailers) = &extra.upstream_trailers {
        metadata::response_metadata(trailers, "trailer-", headers);
    }
    if let Some(allow) = &extra.allow {
        headers.insert(ALLOW, allow.clone());
    }
}

/// A Connect stream that fails before it starts: HTTP 200 under the stream's `content_type`,
/// the upstream's headers, and the end-stream message carrying the error.
pub(crate) fn connect_stream(
    error: &GatewayError,
    snapshot: &Snapshot,
    json: &JsonOptions,
    content_type: HeaderValue,
) -> Response<ResponseBody> {
    let trailers = error
        .extra
        .as_ref()
        .and_then(|e| e.upstream_trailers.as_ref());
    let end = connect_end_stream(Some(error), trailers, snapshot, json);
    let mut response = Response::new(full(end));
    let headers = response.headers_mut();
    if let Some(upstream) = error
        .extra
        .as_ref()
        .and_then(|e| e.upstream_headers.as_ref())
    {
        metadata::response_metadata(upstream, "", headers);
    }
    headers.insert(CONTENT_TYPE, content_type);
    tagged(response, error)
}

/// The end-stream message of a Connect stream (the envelope flagged `0x02`): its error, if it
/// failed, and the upstream's trailers as `metadata`.
pub(crate) fn connect_end_stream(
    error: Option<&GatewayError>,
    trailers: Option<&HeaderMap>,
    snapshot: &Snapshot,
    json: &JsonOptions,
) -> Bytes {
    let mut end = serde_json::Map::new();
    if let Some(error) = error {
        end.insert("error".into(), connect_error(error, snapshot, json));
    }
    if let Some(trailers) = trailers {
        let metadata = connect_metadata(trailers);
        if !metadata.is_empty() {
            end.insert("metadata".into(), serde_json::Value::Object(metadata));
        }
    }
    let body = serde_json::Value::Object(end).to_string();
    super::connect::envelope::encode(super::connect::envelope::END_STREAM, body.as_bytes())
}

/// Metadata as the end-stream message carries it: each key with the list of its values.
fn connect_metadata(upstream: &HeaderMap) -> serde_json::Map<String, serde_json::Value> {
    let mut kept = HeaderMap::new();
    metadata::response_metadata(upstream, "", &mut kept);
    let mut out = serde_json::Map::new();
    for key in kept.keys() {
        let values = kept
            .get_all(key)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(|v| serde_json::Value::String(v.to_string()))
            .collect();
        out.insert(key.as_str().to_string(), serde_json::Value::Array(values));
    }
    out
}

/// The Connect JSON error: `code` by its Connect name, `message` when there is one, and the
/// upstream's `google.rpc.Status` details as `type`, `value` (unpadded base64) and, when the
/// loaded descriptors know the type, `debug` (its JSON).
fn connect_error(
    error: &GatewayError,
    snapshot: &Snapshot,
    json: &JsonOptions,
) -> serde_json::Value {
    let mut body = serde_json::Map::new();
    body.insert("code".into(), connect_code(error.code).into());
    if !error.message.is_empty() {
        body.insert("message".into(), error.message.clone().into());
    }
    let details: Vec<serde_json::Value> = error
        .status_details()
        .map(|d| status::status_details(d))
        .unwrap_or_default()
        .into_iter()
        .map(|(name, value)| connect_detail(name, value, snapshot, json))
        .collect();
    if !details.is_empty() {
        body.insert("details".into(), details.into());
    }
    serde_json::Value::Object(body)
}

fn connect_detail(
    name: String,
    value: Bytes,
    snapshot: &Snapshot,
    json: &JsonOptions,
) -> serde_json::Value {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&value);
    let debug = snapshot
        .pool
        .get_message_by_name(&name)
        .and_then(|desc| transcode::wire_to_json(&snapshot.schemas, &desc, value, json).ok())
        .and_then(|rendered| serde_json::from_slice::<serde_json::Value>(&rendered).ok());
    let mut detail = serde_json::json!({"type": name, "value": encoded});
    if let (Some(debug), Some(object)) = (debug, detail.as_object_mut()) {
        object.insert("debug".into(), debug);
    }
    detail
}

fn tagged(mut response: Response<ResponseBody>, error: &GatewayError) -> Response<ResponseBody> {
    response.extensions_mut().insert(ErrorTag {
        code: error.code,
        source: error.source,
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_grpc_errors_are_trailers_only_and_percent_encoded() {
        let r = grpc(&GatewayError::new(Code::Unavailable, "upstream down: 100%"));
        assert_eq!(r.headers()["grpc-status"], "14");
        assert_eq!(r.headers()["grpc-message"], "upstream%20down%3A%20100%25");
        assert_eq!(r.headers()["content-type"], "application/grpc");
        let tag = r.extensions().get::<ErrorTag>().unwrap();
        assert_eq!(tag.source, crate::error::ErrorSource::Upstream);
    }

    #[test]
    fn a_405_says_allow_and_is_the_clients() {
        let error = GatewayError::not_allowed(
            &http::Method::PUT,
            "/v1/x",
            &[http::Method::GET, http::Method::POST],
        );
        let r = rest_plain(&error);
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers()["allow"], "GET, POST");
        let tag = r.extensions().get::<ErrorTag>().unwrap();
        assert_eq!(tag.source, crate::error::ErrorSource::Client);
    }
}
