//! The REST handler: match the route, assemble the request message, call the upstream, and
//! render its answer (or the error) for the client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use super::call::{self, UnaryReply};
use super::{Gateway, ResponseBody};
use crate::error::GatewayError;
use crate::grpc::{metadata, timeout, Code};
use crate::route::{Lookup, RoutePlan};
use crate::snapshot::Snapshot;
use crate::transcode::{self, RenderedBody, RequestInput};

const JSON: HeaderValue = HeaderValue::from_static("application/json");

impl Gateway {
    /// Answers one REST request; never fails: every error becomes a `google.rpc.Status` body.
    pub(super) async fn handle_rest(
        self: &Arc<Self>,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ResponseBody> {
        let snapshot = self.snapshot();
        match self.rest(&snapshot, request, peer).await {
            Ok(response) => response,
            Err(error) => self.error_response(&snapshot, &error),
        }
    }

    async fn rest(
        &self,
        snapshot: &Snapshot,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<ResponseBody>, Failure> {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path();
        let (plan, vars) = match snapshot.routes.lookup(&parts.method, path) {
            Lookup::Found { value, vars, .. } => (value.clone(), vars),
            Lookup::MethodNotAllowed { allowed } => {
                return Err(Failure::not_allowed(&parts.method, path, &allowed))
            }
            Lookup::NotFound => return Err(GatewayError::not_found(path).into()),
            Lookup::BadPath(message) => return Err(GatewayError::invalid_argument(message).into()),
        };
        if !plan.is_unary() {
            return Err(GatewayError::new(
                Code::Unimplemented,
                format!(
                    "{} is a streaming method; streaming over REST is not served",
                    plan.method_name()
                ),
            )
            .into());
        }
        let deadline = self.deadline(&parts.headers)?;
        let body = read_body(body, self.settings.max_request_bytes).await?;
        let content_type = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let input = RequestInput {
            body: &body,
            content_type,
            vars: &vars,
            query: parts.uri.query(),
        };
        let frame = transcode::build_request(&plan, &self.settings.json, input)?;
        let mut upstream_headers = HeaderMap::new();
        let peer_info = metadata::Peer {
            ip: Some(peer.ip()),
            authority: parts.uri.authority().map(|a| a.as_str()).or_else(|| {
                parts
                    .headers
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
            }),
        };
        metadata::request_metadata(
            &parts.headers,
            peer_info,
            &self.settings.forward_headers,
            &mut upstream_headers,
        )?;
        let reply = self
            .call_upstream(&plan, frame, upstream_headers, deadline)
            .await?;
        self.success_response(&plan, reply)
    }

    /// The earlier of the client's `Grpc-Timeout` and the configured timeout.
    fn deadline(&self, headers: &HeaderMap) -> Result<Option<Duration>, GatewayError> {
        let client = match headers.get("grpc-timeout") {
            None => None,
            Some(v) => Some(v.to_str().ok().and_then(timeout::parse).ok_or_else(|| {
                GatewayError::invalid_argument(format!("invalid Grpc-Timeout header {v:?}"))
            })?),
        };
        Ok(match (client, self.settings.timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    async fn call_upstream(
        &self,
        plan: &RoutePlan,
        frame: Bytes,
        headers: HeaderMap,
        deadline: Option<Duration>,
    ) -> Result<UnaryReply, Failure> {
        let upstream = self
            .upstreams
            .get(plan.upstream)
            .ok_or_else(|| GatewayError::internal("no upstream configured for this route"))?;
        let call = call::unary(
            upstream,
            plan,
            frame,
            headers,
            deadline,
            self.settings.max_response_bytes,
        );
        let reply = match deadline {
            None => call.await,
            Some(d) => tokio::time::timeout(d, call).await.unwrap_or_else(|_| {
                Err(GatewayError::new(
                    Code::DeadlineExceeded,
                    format!("deadline of {d:?} exceeded"),
                )
                .into())
            }),
        }?;
        Ok(reply)
    }

    fn success_response(
        &self,
        plan: &RoutePlan,
        reply: UnaryReply,
    ) -> Result<Response<ResponseBody>, Failure> {
        let rendered = transcode::render_response(plan, &self.settings.json, reply.message)?;
        let (content_type, body) = match rendered {
            RenderedBody::Json(json) => (JSON, Bytes::from(json)),
            RenderedBody::Raw { content_type, data } => {
                let ct = HeaderValue::from_str(&content_type)
                    .unwrap_or(HeaderValue::from_static("application/octet-stream"));
                (ct, data)
            }
        };
        let mut response = Response::new(full(body));
        let mut status = http::StatusCode::OK;
        metadata::apply_http_overrides(&reply.headers, &mut status, response.headers_mut());
        *response.status_mut() = status;
        metadata::response_metadata(&reply.headers, "grpc-metadata-", response.headers_mut());
        metadata::response_metadata(&reply.trailers, "grpc-trailer-", response.headers_mut());
        response.headers_mut().insert(CONTENT_TYPE, content_type);
        Ok(response)
    }

    fn error_response(&self, snapshot: &Snapshot, failure: &Failure) -> Response<ResponseBody> {
        let mut error = failure.error.clone();
        let extra = failure.extra.as_deref().cloned().unwrap_or_default();
        if let Some(details) = &extra.details {
            error.details =
                transcode::render_status_details(&snapshot.pool, details, &self.settings.json);
        }
        let mut response = Response::new(full(Bytes::from(error.to_json())));
        *response.status_mut() = error.status();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, JSON);
        if let Some(upstream) = &extra.upstream_headers {
            metadata::response_metadata(upstream, "grpc-metadata-", headers);
        }
        if let Some(trailers) = &extra.upstream_trailers {
            metadata::response_metadata(trailers, "grpc-trailer-", headers);
        }
        if let Some(allow) = &extra.allow {
            headers.insert(ALLOW, allow.clone());
        }
        if error.code == Code::Unauthenticated {
            if let Ok(v) = HeaderValue::from_str(&error.message) {
                headers.insert(WWW_AUTHENTICATE, v);
            }
        }
        response
    }
}

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
    fn not_allowed(method: &http::Method, path: &str, allowed: &[http::Method]) -> Failure {
        let list: Vec<&str> = allowed.iter().map(http::Method::as_str).collect();
        Failure {
            error: GatewayError::method_not_allowed(method, path),
            extra: Some(Box::new(FailureExtra {
                allow: HeaderValue::from_str(&list.join(", ")).ok(),
                ..FailureExtra::default()
            })),
        }
    }
}

/// Reads the whole body, refusing more than `limit` bytes with 413.
async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, GatewayError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(GatewayError::payload_too_large(limit))
        }
        Err(e) => Err(GatewayError::invalid_argument(format!(
            "cannot read the request body: {e}"
        ))),
    }
}

/// A complete body.
pub fn full(bytes: Bytes) -> ResponseBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}
