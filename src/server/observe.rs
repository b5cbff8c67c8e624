//! The edge of every request: admission (the concurrency limit), the request id, the access
//! log line, and the metrics. Handlers tag their responses with the route they matched and
//! the gRPC code they ended with; everything else is measured here.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::dispatch::{classify, Protocol};
use super::{Gateway, ResponseBody};
use crate::error::GatewayError;
use crate::grpc::Code;
use crate::metrics::RequestLabels;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The route a response was served by, for metrics and logs.
#[derive(Debug, Clone)]
pub struct RouteTag(pub Arc<str>);

/// The gRPC code a response ended with (when it is not OK).
#[derive(Debug, Clone, Copy)]
pub struct CodeTag(pub Code);

impl Gateway {
    /// Serves one request end to end: admitted or refused, handled, measured and logged.
    pub async fn serve_request(
        self: &Arc<Self>,
        mut request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ResponseBody> {
        let started = Instant::now();
        let protocol = classify(request.headers());
        let request_id = request_id(&mut request);
        let (method, path) = (request.method().clone(), request.uri().path().to_string());
        let permit = self.admission.clone().try_acquire_owned().ok();
        let _in_flight = self.metrics.start();
        let mut response = match (&permit, self.admin_response(&request).await) {
            (_, Some(admin)) => admin,
            (None, None) => overloaded(protocol),
            (Some(_), None) => self.handle(request, peer).await,
        };
        response
            .headers_mut()
            .insert(REQUEST_ID, request_id.clone());
        let labels = self.labels(&response, protocol);
        self.metrics
            .finish(labels.clone(), started.elapsed().as_secs_f64());
        access_log(&request_id, &method, &path, &labels, started);
        self.count_body(response, permit)
    }

    fn labels(&self, response: &Response<ResponseBody>, protocol: Protocol) -> RequestLabels {
        let extensions = response.extensions();
        let route = extensions
            .get::<RouteTag>()
            .map_or_else(|| Arc::from("unmatched"), |r| r.0.clone());
        let code = extensions.get::<CodeTag>().map_or(Code::Ok, |c| c.0);
        RequestLabels {
            route,
            protocol: protocol_name(protocol),
            status: response.status().as_u16(),
            grpc_code: code.name(),
        }
    }

    /// Counts the bytes sent and keeps the admission permit until the body is done.
    fn count_body(
        self: &Arc<Self>,
        response: Response<ResponseBody>,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Response<ResponseBody> {
        let gateway = self.clone();
        response.map(move |body| {
            body.map_frame(move |frame| {
                let _held = &permit;
                if let Some(data) = frame.data_ref() {
                    gateway.metrics.bytes_out(data.len() as u64);
                }
                frame
            })
            .boxed_unsync()
        })
    }
}

fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Grpc => "grpc",
        Protocol::GrpcWeb => "grpc-web",
        Protocol::Rest => "rest",
    }
}

/// The request's `x-request-id`, or a new one set on the request so it is forwarded upstream.
fn request_id(request: &mut Request<Incoming>) -> HeaderValue {
    if let Some(id) = request
        .headers()
        .get(&REQUEST_ID)
        .filter(|v| !v.is_empty() && v.len() <= 128)
    {
        return id.clone();
    }
    let id = new_request_id();
    request.headers_mut().insert(REQUEST_ID, id.clone());
    id
}

/// A unique id: the start time and a process-wide counter, as 32 hex digits.
fn new_request_id() -> HeaderValue {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let text = format!(
        "{now:016x}{:016x}",
        n ^ (u64::from(std::process::id()) << 40)
    );
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("0"))
}

/// Refused at once: the gateway is at its concurrency limit.
fn overloaded(protocol: Protocol) -> Response<ResponseBody> {
    let message = "the gateway is at its concurrency limit; retry later";
    let mut response = match protocol {
        Protocol::Grpc | Protocol::GrpcWeb => {
            super::passthrough::grpc_error(Code::Unavailable, message)
        }
        Protocol::Rest => {
            let error = GatewayError::unavailable(message);
            let mut r = Response::new(super::failure::full(Bytes::from(error.to_json())));
            *r.status_mut() = error.status();
            r.headers_mut()
                .insert(http::header::CONTENT_TYPE, super::failure::JSON);
            r
        }
    };
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response.extensions_mut().insert(CodeTag(Code::Unavailable));
    response
}

/// One line per request; never headers (they may carry credentials).
fn access_log(
    id: &HeaderValue,
    method: &http::Method,
    path: &str,
    labels: &RequestLabels,
    started: Instant,
) {
    tracing::info!(
        target: "protogate::access",
        request_id = id.to_str().unwrap_or(""),
        method = %method,
        path,
        route = &*labels.route,
        protocol = labels.protocol,
        status = labels.status,
        grpc_code = labels.grpc_code,
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
    );
}
