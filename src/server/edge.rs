//! The edge of every request: admission (the concurrency limit), the request id, the access
//! log line, the metrics, and (with `--otlp-endpoint`) the trace's server span. Handlers tag
//! their responses with the route they matched and, for errors, the code and whose fault it
//! was ([`super::tags`]); everything else is measured here.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::header::{HeaderValue, RETRY_AFTER};
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::OwnedSemaphorePermit;

use super::body::ResponseBody;
use super::connection::{Connection, Outgoing};
use super::dispatch::Protocol;
use super::framing;
use super::gateway::Gateway;
use super::respond;
use super::tags::{ErrorTag, RouteTag, SessionHold};
use crate::access;
use crate::error::{ErrorSource, GatewayError};
use crate::grpc::metadata::REQUEST_ID;
use crate::grpc::Code;
use crate::metrics::{self, RequestLabels};
use crate::route::Lookup;
use crate::trace::RequestTrace;

impl Gateway {
    /// Serves one request end to end: admitted or refused, handled, measured and logged.
    pub(crate) async fn serve_request(
        self: &Arc<Self>,
        mut request: Request<Incoming>,
        connection: &Arc<Connection>,
    ) -> Response<ResponseBody> {
        let started = Instant::now();
        let kind = self.classify(&request);
        let protocol = kind.protocol();
        let request_id = request_id(&mut request);
        let (method, path) = (request.method().clone(), request.uri().path().to_string());
        let declared_in = declared_length(request.headers());
        let trace = self.tracing.as_ref().map(|tracing| {
            let (version, headers) = (request.version(), request.headers());
            tracing.server(&method, &path, version, headers, connection.peer)
        });
        let permits = self.admit(connection);
        let _in_flight = self.metrics.start();
        let note = Arc::new(access::Note::traced(trace.clone()));
        let response = match framing::refusal(request.version(), request.headers()) {
            Some(refusal) => closing(respond::rest_plain(&refusal)),
            None => match &permits {
                Err(refusal) if !kind.bypasses_admission() => {
                    self.overloaded(protocol, request.headers(), refusal)
                }
                // Straight into the scope: a future held in a local first would take its
                // room twice in this one, which hyper moves whole.
                _ => {
                    access::scope(note.clone(), self.dispatch(kind, request, connection.peer)).await
                }
            },
        };
        let (mut response, reserved) = reserve_unsent(response, connection);
        response
            .headers_mut()
            .insert(REQUEST_ID, request_id.clone());
        let labels = self.labels(&response, &method, &path, protocol);
        let elapsed = started.elapsed();
        self.metrics.finish(labels.clone(), elapsed.as_secs_f64());
        let line = AccessLine {
            request_id,
            client_addr: connection.peer,
            method,
            path,
            declared_in,
            upstream: note.upstream(),
            note,
            labels,
            elapsed,
        };
        self.outgoing(response, connection, reserved, permits.ok(), line, trace)
    }

    /// A permit from the gateway's budget and one from the connection's, or why not.
    fn admit(&self, connection: &Connection) -> Result<Permits, &'static str> {
        let global = self
            .admission
            .clone()
            .try_acquire_owned()
            .map_err(|_| "the gateway is at its concurrency limit; retry later")?;
        let own = connection.admit().ok_or(
            "this connection has its maximum of requests in progress \
             (--max-concurrent-streams); retry later",
        )?;
        Ok((global, own))
    }

    /// The route of a response no handler tagged (refused before it was handled: the
    /// gateway overloaded, a preflight, gRPC over HTTP/1.1), looked up so that a known path is
    /// never `unmatched`.
    fn untagged_route(&self, method: &http::Method, path: &str) -> Arc<str> {
        let snapshot = self.snapshot();
        if let Some(grpc) = snapshot.grpc_methods.get(path) {
            return grpc.label.clone();
        }
        match snapshot.routes.lookup(method, path) {
            Lookup::Found { value, .. } => value.label.clone(),
            _ => Arc::from("unmatched"),
        }
    }

    fn labels(
        &self,
        response: &Response<ResponseBody>,
        method: &http::Method,
        path: &str,
        protocol: Protocol,
    ) -> RequestLabels {
        let extensions = response.extensions();
        let route = extensions
            .get::<RouteTag>()
            .map_or_else(|| self.untagged_route(method, path), |r| r.0.clone());
        let error = extensions.get::<ErrorTag>();
        RequestLabels {
            http_request_method: metrics::method_label(method.as_str()),
            http_route: route,
            http_response_status_code: response.status().as_u16(),
            rpc_grpc_status_code: error.map_or(Code::Ok, |e| e.code) as u16,
            protocol: protocol.name(),
            error_source: error.map_or("", |e| e.source.name()),
        }
    }

    /// The body as it goes out: counted, watched for a client that stops reading, and
    /// holding the admission permits until it is done.
    fn outgoing(
        self: &Arc<Self>,
        response: Response<ResponseBody>,
        connection: &Arc<Connection>,
        reserved: usize,
        permits: Option<Permits>,
        line: AccessLine,
        trace: Option<Arc<RequestTrace>>,
    ) -> Response<ResponseBody> {
        // An accepted WebSocket keeps the permits for as long as its session lasts.
        let permits = match response.extensions().get::<SessionHold>() {
            Some(hold) => {
                hold.keep(Box::new(permits));
                None
            }
            None => permits,
        };
        let held = Held {
            gateway: self.clone(),
            _permits: permits,
            sent: AtomicU64::new(0),
            line,
            trace,
        };
        let count: fn(&Held, usize) = |held, n| {
            held.gateway.metrics.bytes_out(n as u64);
            held.sent.fetch_add(n as u64, Ordering::Relaxed);
        };
        response.map(|body| {
            Outgoing::new(body, connection.clone(), reserved, count, held).boxed_unsync()
        })
    }
}

/// The gateway's admission permit and the connection's.
type Permits = (OwnedSemaphorePermit, OwnedSemaphorePermit);

/// What a response body keeps until it is done: the permits, the bytes sent, the access
/// line written when it ends (so that it can say how many bytes went out), and the request's
/// trace, whose server span ends then too.
struct Held {
    gateway: Arc<Gateway>,
    _permits: Option<Permits>,
    sent: AtomicU64,
    line: AccessLine,
    trace: Option<Arc<RequestTrace>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.line.log(self.sent.load(Ordering::Relaxed));
        if let Some(trace) = &self.trace {
            trace.finish(&self.line.labels);
        }
    }
}

/// The request's `content-length`, when it declares one.
fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
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

/// A unique id: the start time and a process-wide counter (the process id in its top bits,
/// read once: it is a system call each time), as 32 hex digits.
fn new_request_id() -> HeaderValue {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static PROCESS: OnceLock<u64> = OnceLock::new();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let process = *PROCESS.get_or_init(|| u64::from(std::process::id()) << 40);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) ^ process;
    let mut text = [0u8; 32];
    hex_into(&mut text[..16], now);
    hex_into(&mut text[16..], n);
    HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static("0"))
}

/// `value` as 16 lowercase hex digits into `out`.
fn hex_into(out: &mut [u8], value: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in out.iter_mut().enumerate() {
        let shift = 60 - 4 * i;
        *byte = DIGITS[((value >> shift) & 0xf) as usize];
    }
}

impl Gateway {
    /// Refused at once: the gateway or the connection is at its concurrency limit.
    fn overloaded(
        &self,
        protocol: Protocol,
        headers: &http::HeaderMap,
        message: &str,
    ) -> Response<ResponseBody> {
        let error = GatewayError::unavailable(message).from_source(ErrorSource::Gateway);
        let mut response = match protocol {
            Protocol::Grpc | Protocol::GrpcWeb => respond::grpc(&error),
            Protocol::Rest | Protocol::WebSocket => respond::rest_plain(&error),
            Protocol::Connect(kind) => self.connect_error(kind, headers, &error),
        };
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        response
    }
}

/// Counts a complete body against the connection's bound of unsent bytes, and how many; past
/// the bound, the client gets an error instead (a client reading none of many large answers).
fn reserve_unsent(
    response: Response<ResponseBody>,
    connection: &Connection,
) -> (Response<ResponseBody>, usize) {
    let size = http_body::Body::size_hint(response.body())
        .exact()
        .unwrap_or(0);
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    if connection.reserve_unsent(size) {
        return (response, size);
    }
    let error = GatewayError::new(
        Code::ResourceExhausted,
        "earlier responses on this connection are still unread; read them first",
    )
    .with_status(http::StatusCode::SERVICE_UNAVAILABLE);
    let mut refused = respond::rest_plain(&error);
    if let Some(route) = response.extensions().get::<RouteTag>() {
        refused.extensions_mut().insert(route.clone());
    }
    (refused, 0)
}

/// `response`, after which the connection is closed (its framing cannot be trusted).
fn closing(mut response: Response<ResponseBody>) -> Response<ResponseBody> {
    response
        .headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// What the access line of a request says, gathered when its response headers are ready.
struct AccessLine {
    request_id: HeaderValue,
    client_addr: SocketAddr,
    method: http::Method,
    path: String,
    /// The request's `content-length`, when it declared one.
    declared_in: Option<u64>,
    /// What the request's handling noted; read when the line is written, since a streamed
    /// request body may still be arriving when the response headers go out.
    note: Arc<access::Note>,
    /// The endpoint that answered and the time to its response headers.
    upstream: Option<(SocketAddr, Duration)>,
    labels: RequestLabels,
    /// To the response headers.
    elapsed: Duration,
}

impl AccessLine {
    /// One line per request, when its body is done; never headers (they may carry
    /// credentials).
    fn log(&self, bytes_out: u64) {
        // The fields below are made before the event is filtered: skip them when it would be.
        if !tracing::enabled!(target: "protogate::access", tracing::Level::INFO) {
            return;
        }
        let labels = &self.labels;
        let upstream = self.upstream.map(|(addr, _)| addr.to_string());
        let upstream_ms = self.upstream.map(|(_, took)| took.as_secs_f64() * 1000.0);
        tracing::info!(
            target: "protogate::access",
            request_id = self.request_id.to_str().unwrap_or(""),
            client_addr = %self.client_addr,
            method = %self.method,
            path = self.path,
            route = &*labels.http_route,
            protocol = labels.protocol,
            status = labels.http_response_status_code,
            grpc_code = labels.rpc_grpc_status_code,
            error_source = labels.error_source,
            bytes_in = self.declared_in.unwrap_or_else(|| self.note.bytes_in()),
            bytes_out,
            upstream = upstream.as_deref().unwrap_or(""),
            upstream_ms,
            duration_ms = self.elapsed.as_secs_f64() * 1000.0,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{hex_into, new_request_id};

    #[test]
    fn hex_digits_are_written_most_significant_first() {
        let mut out = [0u8; 16];
        hex_into(&mut out, 0x0123_4567_89ab_cdef);
        assert_eq!(&out, b"0123456789abcdef");
    }

    #[test]
    fn request_ids_are_32_hex_digits_and_differ() {
        let (a, b) = (new_request_id(), new_request_id());
        assert_ne!(a, b);
        for id in [a, b] {
            assert_eq!(id.len(), 32);
            assert!(id.as_bytes().iter().all(u8::is_ascii_hexdigit), "{id:?}");
        }
    }
}
