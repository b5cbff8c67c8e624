//! The error edge: every error the gateway answers with, its own or an upstream's, written in
//! the client's protocol, in one place.
//!
//! - REST: the status of the table in `error.rs` and a `google.rpc.Status` JSON body, the
//!   upstream's details rendered with the loaded descriptors, its metadata as
//!   `Grpc-Metadata-*` and `Grpc-Trailer-*`, `Allow` for a 405, `WWW-Authenticate` for 401.
//! - native gRPC: a trailers-only response, the status in `grpc-status` and `grpc-message`.
//! - gRPC-Web: the same in the headers, under a gRPC-Web content type.
//!
//! Each response carries an [`ErrorTag`] for the edge's metrics and access log.

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderMap, Response};

use super::body::{full, ResponseBody};
use super::tags::ErrorTag;
use crate::error::{ErrorExtra, GatewayError};
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

/// `grpc-status` and `grpc-message` for `error`: the trailers that end a gRPC call with it.
pub(crate) fn status_trailers(error: &GatewayError) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    status::insert_status(&mut trailers, error.code, &error.message);
    trailers
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
