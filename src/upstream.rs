//! Upstream gRPC servers: a few HTTP/2 (h2c) connections per upstream, opened on first use,
//! multiplexed, and replaced when they close.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme, Uri};
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::error::GatewayError;

/// The body type sent upstream: a unary frame or a streamed client body.
pub type UpstreamBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// How connections to upstreams behave.
#[derive(Debug, Clone)]
pub struct UpstreamOptions {
    /// HTTP/2 connections kept per upstream.
    pub connections: usize,
    /// Time allowed to establish a TCP connection and the HTTP/2 handshake.
    pub connect_timeout: Duration,
}

impl Default for UpstreamOptions {
    fn default() -> Self {
        UpstreamOptions {
            connections: 2,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// One upstream gRPC server.
pub struct Upstream {
    url: String,
    scheme: Scheme,
    authority: Authority,
    slots: Vec<Mutex<Option<SendRequest<UpstreamBody>>>>,
    next: AtomicUsize,
    options: UpstreamOptions,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("url", &self.url).finish()
    }
}

impl Upstream {
    /// An upstream at `url` (`http://host:port`, h2c with prior knowledge).
    pub fn new(url: &str, options: UpstreamOptions) -> Result<Upstream, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("upstream {url:?} is not a URL: {e}"))?;
        if uri.scheme() != Some(&Scheme::HTTP) {
            return Err(format!(
                "upstream {url:?}: only http:// (h2c) upstreams are supported"
            ));
        }
        let authority = uri
            .authority()
            .filter(|a| a.port_u16().is_some())
            .cloned()
            .ok_or_else(|| format!("upstream {url:?} needs a host and a port"))?;
        if !matches!(uri.path(), "" | "/") {
            return Err(format!("upstream {url:?} must not have a path"));
        }
        let slots = (0..options.connections.max(1))
            .map(|_| Mutex::new(None))
            .collect();
        Ok(Upstream {
            url: url.to_string(),
            scheme: Scheme::HTTP,
            authority,
            slots,
            next: AtomicUsize::new(0),
            options,
        })
    }

    pub fn url(&self) -> &str {
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

    /// Sends a request on one of the connections, opening it if needed.
    pub async fn send(
        &self,
        request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, GatewayError> {
        let mut sender = self.sender().await?;
        sender
            .ready()
            .await
            .map_err(|e| self.unavailable("connection lost", &e))?;
        sender
            .send_request(request)
            .await
            .map_err(|e| self.request_error(&e))
    }

    async fn sender(&self) -> Result<SendRequest<UpstreamBody>, GatewayError> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[index].lock().await;
        if let Some(sender) = slot.as_ref().filter(|s| !s.is_closed()) {
            return Ok(sender.clone());
        }
        let sender = self.connect().await?;
        *slot = Some(sender.clone());
        Ok(sender)
    }

    async fn connect(&self) -> Result<SendRequest<UpstreamBody>, GatewayError> {
        let timeout = self.options.connect_timeout;
        tokio::time::timeout(timeout, self.handshake())
            .await
            .map_err(|_| {
                GatewayError::unavailable(format!(
                    "upstream {} did not accept a connection within {timeout:?}",
                    self.url
                ))
            })?
    }

    async fn handshake(&self) -> Result<SendRequest<UpstreamBody>, GatewayError> {
        let stream = TcpStream::connect(self.authority.as_str())
            .await
            .map_err(|e| self.unavailable("cannot connect", &e))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .adaptive_window(true)
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.unavailable("HTTP/2 handshake failed", &e))?;
        let url = self.url.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(upstream = %url, error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }

    fn unavailable(&self, what: &str, error: &dyn std::fmt::Display) -> GatewayError {
        GatewayError::unavailable(format!(
            "upstream {} is unavailable: {what}: {error}",
            self.url
        ))
    }

    fn request_error(&self, error: &hyper::Error) -> GatewayError {
        let detail = error_chain(error);
        if detail.contains("REFUSED_STREAM") {
            return self.unavailable("stream refused", &detail);
        }
        GatewayError::unavailable(format!("upstream {} failed the call: {detail}", self.url))
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

/// `grpc.health.v1.HealthCheckResponse`, decoded statically: only `status` matters.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

const SERVING: i32 = 1;

impl Upstream {
    /// Whether the upstream is reachable and, when it offers gRPC health checking, serving.
    pub async fn probe(&self) -> Result<(), String> {
        use http_body_util::{BodyExt, Full, Limited};
        let mut request = Request::new(
            Full::new(crate::grpc::frame::encode_raw(&[]))
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = self
            .uri(&http::uri::PathAndQuery::from_static(
                "/grpc.health.v1.Health/Check",
            ))
            .map_err(|e| e.message)?;
        let headers = request.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
        let response = self.send(request).await.map_err(|e| e.message)?;
        let (parts, body) = response.into_parts();
        let collected = Limited::new(body, 4096)
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let status = crate::grpc::status::Status::from_headers(&parts.headers)
            .or_else(|| crate::grpc::status::Status::from_headers(&trailers));
        health_verdict(status, &collected.to_bytes())
    }
}

fn health_verdict(status: Option<crate::grpc::status::Status>, body: &[u8]) -> Result<(), String> {
    use crate::grpc::Code;
    match status.map(|s| s.code) {
        Some(Code::Unimplemented) => Ok(()),
        Some(Code::Ok) => {
            let frames = crate::grpc::frame::decode_all(body, 4096).map_err(|e| e.to_string())?;
            let payload = frames
                .first()
                .map(|f| f.payload.clone())
                .unwrap_or_default();
            let reply = <HealthCheckResponse as prost::Message>::decode(payload)
                .map_err(|e| e.to_string())?;
            match reply.status {
                SERVING => Ok(()),
                other => Err(format!("health check says {}", health_name(other))),
            }
        }
        Some(code) => Err(format!("health check failed with {}", code.name())),
        None => Err("health check got no grpc-status".into()),
    }
}

fn health_name(status: i32) -> &'static str {
    match status {
        0 => "UNKNOWN",
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "an unknown status",
    }
}
