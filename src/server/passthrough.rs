//! Native gRPC passthrough: the request goes to the upstream serving its service, and the
//! upstream's answer comes back, both streamed frame by frame without being decoded.
//!
//! Bodies are handed from one side's hyper connection to the other's, so HTTP/2 flow control
//! carries back-pressure end to end and nothing is buffered here. When the client goes away,
//! hyper drops the response body, which is the upstream's body: dropping it resets the
//! upstream stream (RST_STREAM CANCEL), so the upstream sees the cancellation too.

use http::header::{HeaderName, HeaderValue, CONNECTION, HOST, TE, TRANSFER_ENCODING, UPGRADE};
use http::uri::PathAndQuery;
use http::{HeaderMap, Request, Response, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body::{drain, ResponseBody};
use super::call_clock::{CallClock, Counted, Timed};
use super::deadline;
use super::gateway::Gateway;
use super::reflection;
use super::respond;
use super::tags::{ErrorTag, RouteTag};
use crate::error::{quoted, ErrorSource, GatewayError};
use crate::grpc::status::{self, Status};
use crate::grpc::{timeout, Code};
use crate::snapshot::GrpcMethod;
use crate::upstream::{Upstream, UpstreamBody};

const TRAILERS: HeaderValue = HeaderValue::from_static("trailers");

/// Hop-by-hop headers (RFC 9110 §7.6.1) and `host`, which the upstream URI replaces. `te` is
/// dropped too, then set to the one value HTTP/2 allows and gRPC requires.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

impl Gateway {
    /// Answers a native gRPC request.
    pub(super) async fn handle_grpc(&self, request: Request<Incoming>) -> Response<ResponseBody> {
        self.passthrough(request.map(|body| body.map_err(Into::into).boxed_unsync()))
            .await
    }

    /// Forwards a gRPC request (native, or translated from gRPC-Web) to the upstream serving
    /// its service; reflection is answered here. Never fails: errors are gRPC statuses.
    pub(super) async fn passthrough(
        &self,
        request: Request<UpstreamBody>,
    ) -> Response<ResponseBody> {
        let snapshot = self.snapshot();
        let Some(service) = service_of(request.uri().path()) else {
            let message = format!("{} is not a gRPC method path", quoted(request.uri().path()));
            return respond::grpc(&GatewayError::new(Code::Unimplemented, message));
        };
        if reflection::is_reflection(service) {
            let current = self.current();
            let label = reflection::label(request.uri().path());
            let limit = self.settings.max_request_bytes;
            let mut response =
                reflection::serve(&current.snapshot, &current.reflection, request, limit).await;
            if let Some(label) = label {
                response.extensions_mut().insert(RouteTag(label));
            }
            return response;
        }
        let upstream = snapshot
            .upstream_of_service(service)
            .and_then(|index| self.upstream(index));
        let Some(upstream) = upstream else {
            let message = format!("unknown service {}", quoted(service));
            let refusal = respond::grpc(&GatewayError::new(Code::Unimplemented, message));
            let (version, limit) = (request.version(), self.settings.max_request_bytes);
            drain(
                version,
                request.into_body(),
                limit,
                self.settings.body_timeout,
            )
            .await;
            return refusal;
        };
        let method = snapshot.grpc_methods.get(request.uri().path()).cloned();
        let request = match self
            .validated(snapshot.clone(), method.clone(), request)
            .await
        {
            Ok(request) => request,
            Err(error) => return respond::grpc(&error),
        };
        let clock = self.call_clock(method.as_ref());
        let request = request.map(|body| {
            Counted::new(crate::access::Reading::new(body), clock.clone()).boxed_unsync()
        });
        let mut response = tokio::select! {
            response = self.forward_within_deadline(upstream, request) => response,
            expiry = clock.expired() => {
                respond::grpc(&expiry.error())
            }
        };
        // Labelled by method when the descriptors have it: clients cannot grow the label set.
        if let Some(method) = method {
            response.extensions_mut().insert(RouteTag(method.label));
        }
        response.map(|body| Timed::new(body, clock, respond::status_trailers).boxed_unsync())
    }

    /// The clock of a call: the body limit when the method is known to take one message
    /// (an unknown method may stream), the idle limit always.
    fn call_clock(&self, method: Option<&GrpcMethod>) -> CallClock {
        let unary = method.is_some_and(|m| !m.client_streaming);
        let settings = &self.settings;
        CallClock::new(
            unary.then_some(settings.body_timeout),
            settings.stream_idle_timeout,
        )
    }

    /// Forwards with the deadline the gateway configures for the method, if any: the client's
    /// `grpc-timeout` is lowered to it (the upstream ends the call there), and the upstream's
    /// response headers are awaited no longer.
    async fn forward_within_deadline(
        &self,
        upstream: &Upstream,
        mut request: Request<UpstreamBody>,
    ) -> Response<ResponseBody> {
        let Some(deadline) = self.passthrough_deadline(&request) else {
            return forwarded(forward(upstream, request).await);
        };
        if let Some(value) = timeout::header_value(deadline) {
            request.headers_mut().insert(timeout::HEADER, value);
        }
        match tokio::time::timeout(deadline, forward(upstream, request)).await {
            Ok(result) => forwarded(result),
            Err(_) => respond::grpc(&deadline::exceeded(deadline)),
        }
    }
}

impl Gateway {
    /// The call's deadline; a client's `grpc-timeout` the gateway cannot read is left for the
    /// upstream to refuse, and the configured deadline applies.
    fn passthrough_deadline(&self, request: &Request<UpstreamBody>) -> Option<std::time::Duration> {
        let path = request.uri().path();
        deadline::deadline(&self.settings, path, request.headers())
            .or_else(|_| deadline::deadline(&self.settings, path, &HeaderMap::new()))
            .ok()
            .flatten()
    }
}

fn forwarded(result: Result<Response<ResponseBody>, GatewayError>) -> Response<ResponseBody> {
    match result {
        Ok(response) => tag_trailers_only(response),
        Err(e) => respond::grpc(&e),
    }
}

/// The service of a `/package.Service/Method` path.
fn service_of(path: &str) -> Option<&str> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/')).then_some(service)
}

/// Sends `request` to `upstream` and returns its response as soon as its headers arrive; an
/// invalid `grpc-status-details-bin` is dropped from its trailers (or trailers-only headers).
async fn forward(
    upstream: &Upstream,
    request: Request<UpstreamBody>,
) -> Result<Response<ResponseBody>, GatewayError> {
    let request = upstream_request(upstream, request)?;
    let mut response = upstream.send(request).await?;
    status::sanitize_details(response.headers_mut());
    let sanitized = |mut frame: http_body::Frame<bytes::Bytes>| {
        if let Some(trailers) = frame.trailers_mut() {
            status::sanitize_details(trailers);
        }
        frame
    };
    Ok(response.map(|body| body.map_frame(sanitized).map_err(Into::into).boxed_unsync()))
}

/// The client's request re-addressed to `upstream`: same method, path, metadata (including
/// `grpc-timeout`) and body; hop-by-hop headers dropped; HTTP/2 with `te: trailers`.
fn upstream_request(
    upstream: &Upstream,
    request: Request<UpstreamBody>,
) -> Result<Request<UpstreamBody>, GatewayError> {
    let (mut parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    parts.uri = upstream.uri(&path)?;
    parts.version = Version::HTTP_2;
    // The server connection's extensions describe the client's connection, not this one.
    parts.extensions = http::Extensions::new();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.insert(TE, TRAILERS);
    Ok(Request::from_parts(parts, body))
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    for name in [CONNECTION, HOST, TRANSFER_ENCODING, UPGRADE] {
        headers.remove(name);
    }
}

/// Marks an upstream trailers-only error for the metrics; a status sent in trailers arrives
/// after the response is measured and counts as OK there.
fn tag_trailers_only(mut response: Response<ResponseBody>) -> Response<ResponseBody> {
    if let Some(status) = Status::from_headers(response.headers()) {
        response.extensions_mut().insert(ErrorTag {
            code: status.code,
            source: ErrorSource::Upstream,
        });
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_paths() {
        assert_eq!(service_of("/pkg.Svc/Method"), Some("pkg.Svc"));
        assert_eq!(service_of("/Svc/M"), Some("Svc"));
        for bad in [
            "",
            "/",
            "/pkg.Svc",
            "/pkg.Svc/",
            "//M",
            "/a/b/c",
            "pkg.Svc/M",
        ] {
            assert_eq!(service_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn hop_by_hop_headers_go_and_metadata_stays() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-hop"),
            ("keep-alive", "timeout=5"),
            ("x-hop", "1"),
            ("host", "gateway:8080"),
            ("te", "trailers, deflate"),
            ("transfer-encoding", "chunked"),
            ("grpc-timeout", "5S"),
            ("authorization", "Bearer t"),
            ("x-custom-bin", "AAEC"),
        ] {
            h.append(k, v.parse().unwrap());
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["authorization", "grpc-timeout", "x-custom-bin"]);
    }
}
