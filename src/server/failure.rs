//! A failed REST request and how it is answered: HTTP status, `google.rpc.Status` JSON body,
//! and the headers that go with it (`Allow`, `WWW-Authenticate`, upstream metadata).

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderMap, Response};
use http_body_util::{BodyExt, Full};

use super::ResponseBody;
use crate::error::GatewayError;
use crate::grpc::{metadata, Code};
use crate::snapshot::Snapshot;
use crate::transcode::{self, JsonOptions};

pub const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// A failed request: the error, plus what the response needs besides it.
#[derive(Debug, Clone)]
pub struct Failure {
    pub error: GatewayError,
    pub extra: Option<Box<FailureExtra>>,
}

/// The rarer parts of a failure, boxed to keep `Result<_, Failure>` small.
#[derive(Debug, Clone, Default)]
pub struct FailureExtra {
    /// The upstream's serialized `google.rpc.Status`, rendered into `details`.
    pub details: Option<Bytes>,
    /// The upstream's response headers (metadata) for an upstream error.
    pub upstream_headers: Option<HeaderMap>,
    /// The upstream's trailers (metadata) for an upstream error.
    pub upstream_trailers: Option<HeaderMap>,
    /// The `Allow` header of a 405.
    pub allow: Option<HeaderValue>,
}

impl From<GatewayError> for Failure {
    fn from(error: GatewayError) -> Self {
        Failure { error, extra: None }
    }
}

impl Failure {
    pub fn not_allowed(method: &http::Method, path: &str, allowed: &[http::Method]) -> Failure {
        let list: Vec<&str> = allowed.iter().map(http::Method::as_str).collect();
        Failure {
            error: GatewayError::method_not_allowed(method, path),
            extra: Some(Box::new(FailureExtra {
                allow: HeaderValue::from_str(&list.join(", ")).ok(),
                ..FailureExtra::default()
            })),
        }
    }

    /// The error with the upstream's details rendered into it.
    pub fn rendered(&self, snapshot: &Snapshot, json: &JsonOptions) -> GatewayError {
        let mut error = self.error.clone();
        if let Some(details) = self.extra.as_ref().and_then(|e| e.details.as_ref()) {
            error.details = transcode::render_status_details(&snapshot.pool, details, json);
        }
        error
    }

    /// The whole error response.
    pub fn response(&self, snapshot: &Snapshot, json: &JsonOptions) -> Response<ResponseBody> {
        let error = self.rendered(snapshot, json);
        let mut response = Response::new(full(Bytes::from(error.to_json())));
        *response.status_mut() = error.status();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, JSON);
        if let Some(extra) = &self.extra {
            extra.add_headers(headers);
        }
        if error.code == Code::Unauthenticated {
            if let Ok(v) = HeaderValue::from_str(&error.message) {
                headers.insert(WWW_AUTHENTICATE, v);
            }
        }
        response
            .extensions_mut()
            .insert(super::observe::CodeTag(error.code));
        response
    }
}

/// An error of the gateway's own as a REST response (no upstream details to render).
pub fn error_response(error: &GatewayError) -> Response<ResponseBody> {
    let mut response = Response::new(full(Bytes::from(error.to_json())));
    *response.status_mut() = error.status();
    response.headers_mut().insert(CONTENT_TYPE, JSON);
    response
        .extensions_mut()
        .insert(super::observe::CodeTag(error.code));
    response
}

impl FailureExtra {
    fn add_headers(&self, headers: &mut HeaderMap) {
        if let Some(upstream) = &self.upstream_headers {
            metadata::response_metadata(upstream, "grpc-metadata-", headers);
        }
        if let Some(trailers) = &self.upstream_trailers {
            metadata::response_metadata(trailers, "grpc-trailer-", headers);
        }
        if let Some(allow) = &self.allow {
            headers.insert(ALLOW, allow.clone());
        }
    }
}

/// A complete body.
pub fn full(bytes: Bytes) -> ResponseBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}
