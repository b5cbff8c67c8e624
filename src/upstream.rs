//! Upstream gRPC servers.
//!
//! An upstream is a URL whose host names one or more endpoints: `http://name:port` (h2c with
//! prior knowledge) or `https://name:port` (TLS, ALPN h2), where the name is resolved by DNS
//! now and every `resolve_interval` (a Kubernetes headless Service answers one address per
//! pod), or a static list `http://10.0.0.1:5000,10.0.0.2:5000`. Every address is an endpoint
//! with a few multiplexed HTTP/2 connections; each request goes to the less loaded of two
//! endpoints chosen at random among the healthy ones (power of two choices on requests in
//! flight). An endpoint whose connection cannot be opened, or breaks, is unhealthy: skipped
//! while others are healthy and reconnected in the background with exponential backoff. A
//! request that never reached an upstream (its connection could not be opened, or was found
//! closed) is retried once, on another endpoint when there is one; a request that was sent is
//! never retried, since the upstream may have acted on it.
//!
//! A failure is told to the client by the service it was for and a short reason ("service
//! pkg.Svc is unavailable: cannot connect"); the upstream's URL, the address and the whole
//! error chain go to the log, never into a response.
//!
//! - `discovery`: the URL's names, their resolution, and the endpoint set.
//! - `endpoint`: one address, its connections, health and load.
//! - `balance`: the choice of endpoint.
//! - `connect`: TCP, TLS and the HTTP/2 handshake.
//! - `tls`: the client TLS configuration (roots, client certificate, server name).
//! - `body`: the response body that carries the endpoint's load until it ends.
//! - `probe`: gRPC health checking for readiness.

mod balance;
mod body;
pub(crate) mod call;
mod connect;
mod discovery;
mod endpoint;
mod probe;
mod random;
mod tls;

use anyhow::bail;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme, Uri};
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;

use crate::error::GatewayError;
use crate::grpc::frame::Outgoing;
use crate::grpc::metadata::REQUEST_ID;

pub use body::UpstreamResponseBody;

use connect::Connector;
use discovery::{EndpointSet, Target};
use endpoint::SendFailure;

/// The body type sent upstream: a unary frame or a streamed client body.
pub type UpstreamBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// TLS to `https://` upstreams (ignored for `http://` ones).
#[derive(Debug, Clone, Default)]
pub struct UpstreamTls {
    /// PEM file of the certificate authorities to trust; the system's roots when unset.
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain presented to the upstream (mutual TLS), with `client_key`.
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
    /// The name sent as SNI and checked against the upstream's certificate, instead of the
    /// URL's host (for addresses, or certificates issued for a Service name).
    pub server_name: Option<String>,
}

/// How connections to upstreams behave.
#[derive(Debug, Clone)]
pub struct UpstreamOptions {
    /// HTTP/2 connections kept per endpoint.
    pub connections: usize,
    /// Time allowed to establish a connection: TCP, TLS and the HTTP/2 handshake.
    pub connect_timeout: Duration,
    /// How often names in upstream URLs are resolved again.
    pub resolve_interval: Duration,
    /// TLS settings for `https://` upstreams.
    pub tls: UpstreamTls,
    /// The `:authority` of requests, instead of the URL's first `host:port`.
    pub authority: Option<String>,
}

impl Default for UpstreamOptions {
    fn default() -> Self {
        UpstreamOptions {
            connections: 2,
            connect_timeout: Duration::from_secs(5),
            resolve_interval: Duration::from_secs(5),
            tls: UpstreamTls::default(),
            authority: None,
        }
    }
}

/// Upstream connections by state, for `protogate_upstream_connections`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionCounts {
    /// Open HTTP/2 connections.
    pub connected: i64,
    /// Connections being opened.
    pub connecting: i64,
    /// Connections whose last attempt failed or that broke, not yet reopened.
    pub failed: i64,
}

impl ConnectionCounts {
    /// The counts with their metric label.
    pub fn by_state(&self) -> [(&'static str, i64); 3] {
        [
            ("connected", self.connected),
            ("connecting", self.connecting),
            ("failed", self.failed),
        ]
    }
}

/// One endpoint as [`Upstream::endpoints`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointStatus {
    pub addr: SocketAddr,
    pub healthy: bool,
    /// Requests sent to it whose response has not ended.
    pub in_flight: usize,
}

/// One upstream gRPC service: its endpoints, their connections, and the balancing.
pub struct Upstream {
    url: Arc<str>,
    scheme: Scheme,
    authority: Authority,
    endpoints: Arc<EndpointSet>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("url", &self.url).finish()
    }
}

impl Upstream {
    /// An upstream at `url`: `http://host:port` (h2c with prior knowledge) or
    /// `https://host:port` (TLS), where `host:port` may be a comma-separated list. Nothing is
    /// resolved or connected until the first request, so this needs no runtime.
    pub fn new(url: &str, options: UpstreamOptions) -> Result<Upstream, String> {
        let target = Target::parse(url)?;
        let authority = match &options.authority {
            Some(a) => a
                .parse::<Authority>()
                .map_err(|e| format!("upstream authority {a:?} is not host[:port]: {e}"))?,
            None => target.authority()?,
        };
        let label: Arc<str> = Arc::from(url);
        let tls = match target.scheme == Scheme::HTTPS {
            true => Some(tls::connect_config(&options.tls, target.first_host())?),
            false => None,
        };
        let connector = Arc::new(Connector::new(label.clone(), tls, options.connect_timeout));
        Ok(Upstream {
            url: label,
            scheme: target.scheme.clone(),
            authority,
            endpoints: Arc::new(EndpointSet::new(target, connector, &options)),
        })
    }

    /// The URL as configured (also the `upstream` label of metrics).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL as a shared string, for metric labels.
    pub fn label(&self) -> &Arc<str> {
        &self.url
    }

    /// The absolute URI of `path` on this upstream.
    pub fn uri(&self, path: &http::uri::PathAndQuery) -> Result<Uri, GatewayError> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path.clone())
            .build()
            .map_err(|e| GatewayError::internal(format!("bad upstream URI: {e}")))
    }

    /// Sends a request to one endpoint and returns its response once the headers arrive. The
    /// endpoint counts the request as in flight until the response body ends or is dropped.
    pub async fn send(
        &self,
        request: Request<UpstreamBody>,
    ) -> Result<Response<UpstreamResponseBody>, GatewayError> {
        // Cheap (shared bytes), and all the errors need: the service is named by the path.
        let uri = request.uri().clone();
        let id = request_id(&request);
        let endpoints = self
            .endpoints
            .current()
            .await
            .map_err(|e| self.unavailable(&uri, id.text(), &e))?;
        let mut request = request;
        let mut avoid = None;
        let mut last_error = None;
        for _attempt in 0..ATTEMPTS {
            let Some(endpoint) = balance::pick(&endpoints, avoid.as_ref()) else {
                break;
            };
            let span = crate::access::trace()
                .map(|trace| trace.attempt(uri.path(), endpoint.addr, request.headers_mut()));
            let replay = Replay::of(&request);
            let started = std::time::Instant::now();
            match endpoint.send(request).await {
                Ok(response) => {
                    crate::access::answered(endpoint.addr, started.elapsed());
                    return Ok(body::traced(response, span));
                }
                Err(SendFailure::Sent { error, addr }) => {
                    crate::access::answered(addr, started.elapsed());
                    if let Some(span) = span {
                        span.failed(crate::error::code_from_reset(crate::error::h2_reset(
                            &error,
                        )));
                    }
                    // A refused stream was not processed (RFC 9113 §8.7): a request whose body
                    // can be sent again goes once more, as after a connection failure.
                    let refused = crate::error::h2_reset(&error).is_some_and(|r| r.unprocessed());
                    match replay.filter(|_| refused) {
                        Some(replay) => {
                            request = replay.request();
                            let detail =
                                format!("{addr} refused the stream: {}", error_chain(&error));
                            last_error = Some(Unreachable::new("the stream was refused", detail));
                        }
                        None => return Err(self.request_error(&uri, id.text(), &error, addr)),
                    }
                }
                Err(SendFailure::Unsent {
                    request: returned,
                    error,
                    refused,
                }) => {
                    if let Some(span) = span {
                        span.failed(crate::grpc::Code::Unavailable);
                    }
                    request = *returned;
                    last_error = Some(error);
                    // A refused connection says the endpoint is down: go elsewhere. A stale
                    // connection says nothing about it: a new one may do.
                    avoid = refused.then_some(endpoint);
                }
            }
        }
        let error = last_error.unwrap_or_else(|| {
            Unreachable::new("it has no endpoint", "no endpoint to send to".into())
        });
        Err(self.unavailable(&uri, id.text(), &error))
    }

    /// Connections by state, summed over the endpoints, for `protogate_upstream_connections`.
    pub fn connection_counts(&self) -> ConnectionCounts {
        let mut counts = ConnectionCounts::default();
        for endpoint in self.endpoints.snapshot().iter() {
            endpoint.count_connections(&mut counts);
        }
        counts
    }

    /// The endpoints known now (none before the first request resolved them).
    pub fn endpoints(&self) -> Vec<EndpointStatus> {
        self.endpoints
            .snapshot()
            .iter()
            .map(|e| e.status())
            .collect()
    }

    /// No endpoint could take the request: the client learns the service and the reason, the
    /// log the upstream and the detail, with the request id.
    fn unavailable(&self, uri: &Uri, id: &str, error: &Unreachable) -> GatewayError {
        let service = service_named(uri);
        tracing::warn!(
            request_id = id,
            upstream = %self.url,
            service,
            error = %error.detail,
            "upstream unavailable"
        );
        GatewayError::unavailable(client_message(service, Failure::Unavailable(error.reason)))
    }

    /// A call that failed after it was sent, mapped by the stream's reset reason. The client
    /// learns the service; the log gets the endpoint and hyper's error chain.
    fn request_error(
        &self,
        uri: &Uri,
        id: &str,
        error: &hyper::Error,
        addr: SocketAddr,
    ) -> GatewayError {
        let service = service_named(uri);
        let chain = error_chain(error);
        tracing::warn!(
            request_id = id,
            upstream = %self.url,
            endpoint = %addr,
            service,
            error = %chain,
            "upstream call failed"
        );
        let reset = crate::error::h2_reset(error);
        let code = crate::error::code_from_reset(reset);
        GatewayError::upstream(
            code,
            client_message(service, Failure::Call(reset.is_some())),
        )
    }
}

/// How an upstream call failed, as far as a client is told.
enum Failure {
    /// Never reached an endpoint, for this short reason.
    Unavailable(&'static str),
    /// Sent, then failed: the stream was reset (true) or the connection broke (false).
    Call(bool),
}

/// The one place that decides what a client reads of an upstream failure: the service and a
/// short reason, never the upstream's URL, addresses or error chain (those go to the log).
fn client_message(service: &str, failure: Failure) -> String {
    match failure {
        Failure::Unavailable(reason) => format!("service {service} is unavailable: {reason}"),
        Failure::Call(true) => format!("service {service} failed the call: the stream was reset"),
        Failure::Call(false) => {
            format!("service {service} failed the call: the connection broke")
        }
    }
}

/// The request's `x-request-id` (the edge sets one on every request), for log lines.
/// The request's id, for the logs of the error paths: a shared value, not a copy.
fn request_id<B>(request: &Request<B>) -> RequestId {
    RequestId(request.headers().get(REQUEST_ID).cloned())
}

/// A request's `x-request-id`, read as text only when a log line needs it.
struct RequestId(Option<http::HeaderValue>);

impl RequestId {
    fn text(&self) -> &str {
        self.0.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

/// The service a gRPC request is for: `pkg.Svc` of `/pkg.Svc/Method`.
fn service_named(uri: &Uri) -> &str {
    let path = uri.path().trim_start_matches('/');
    path.split('/').next().unwrap_or(path)
}

/// Why a request could not reach an upstream: a short reason a client may read, and the
/// detail (addresses, host names, the error chain) that only the log gets.
#[derive(Debug, Clone)]
pub(crate) struct Unreachable {
    reason: &'static str,
    detail: String,
}

impl Unreachable {
    pub(crate) fn new(reason: &'static str, detail: String) -> Self {
        Unreachable { reason, detail }
    }
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

/// Tries of one request: an unsent or refused request goes again, at most this many times in
/// all (a GOAWAY can refuse the retry too when a server restarts all its connections at once).
const ATTEMPTS: usize = 3;

/// The body of a request that can be sent again, attached by callers that hold it whole.
#[derive(Debug, Clone)]
pub struct ReplayBody(pub Outgoing);

/// What it takes to send a request again: its head and its whole body.
struct Replay {
    method: http::Method,
    uri: Uri,
    version: http::Version,
    headers: http::HeaderMap,
    body: Outgoing,
}

impl Replay {
    fn of(request: &Request<UpstreamBody>) -> Option<Replay> {
        let body = request.extensions().get::<ReplayBody>()?.0.clone();
        Some(Replay {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: request.headers().clone(),
            body,
        })
    }

    fn request(self) -> Request<UpstreamBody> {
        let mut request = Request::new(body::whole(self.body.clone()));
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers;
        request.extensions_mut().insert(ReplayBody(self.body));
        request
    }
}

/// An error and its sources, joined, for messages.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The upstreams of `--upstream` and `--service-upstream`, in flag order (the default
/// first), and which service goes where.
pub fn build_all(
    default: Option<&str>,
    per_service: &[String],
    options: &UpstreamOptions,
) -> anyhow::Result<(Vec<Arc<Upstream>>, UpstreamMap)> {
    let mut list: Vec<Arc<Upstream>> = Vec::new();
    let mut map = UpstreamMap::default();
    let index_of = |url: &str, list: &mut Vec<Arc<Upstream>>| -> anyhow::Result<usize> {
        if let Some(i) = list.iter().position(|u| u.url() == url) {
            return Ok(i);
        }
        list.push(Arc::new(
            Upstream::new(url, options.clone()).map_err(anyhow::Error::msg)?,
        ));
        Ok(list.len() - 1)
    };
    if let Some(url) = default {
        map.default = Some(index_of(url, &mut list)?);
    }
    for (service, url) in service_entries(per_service)? {
        let index = index_of(&url, &mut list)?;
        map.by_service.insert(service, index);
    }
    Ok((list, map))
}

/// `--service-upstream` values as (service, URL). The flag splits its values at commas, and
/// so does a static list of endpoints (`pkg.Svc=http://10.0.0.1:5000,10.0.0.2:5000`): a value
/// without `=` continues the previous value's list.
fn service_entries(per_service: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let mut entries: Vec<(String, String)> = Vec::new();
    for entry in per_service {
        match (entry.split_once('='), entries.last_mut()) {
            (Some((service, url)), _) => entries.push((
                service.trim().trim_start_matches('.').to_string(),
                url.trim().to_string(),
            )),
            (None, Some((_, url))) => {
                url.push(',');
                url.push_str(entry.trim());
            }
            (None, None) => bail!("--service-upstream {entry:?} is not SERVICE=URL"),
        }
    }
    Ok(entries)
}

/// Which upstream serves which service: per-service overrides, then the default.
#[derive(Debug, Clone, Default)]
pub struct UpstreamMap {
    /// Fully-qualified service name to upstream index.
    pub by_service: std::collections::HashMap<String, usize>,
    /// Index of the default upstream, if there is one.
    pub default: Option<usize>,
}

impl UpstreamMap {
    pub(crate) fn index_of(&self, service: &prost_reflect::ServiceDescriptor) -> Option<usize> {
        self.by_service
            .get(service.full_name())
            .copied()
            .or(self.default)
    }
}
