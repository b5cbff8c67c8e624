//! OpenTelemetry traces, exported over OTLP when `--otlp-endpoint` is set: a server span per
//! request, a client span per upstream attempt as its child, and W3C trace context
//! (`traceparent`, `tracestate`) continued from the client and passed on to the upstream from
//! the client span. Without an endpoint none of this exists: the gateway holds no
//! [`Tracing`], and the request path finds no [`RequestTrace`] to note anything in.
//!
//! - `config`: the endpoint, protocol, service name, sampler and queue bounds.
//! - `spans`: span names and attributes, the one place that decides them.
//! - `queue`: the bounded export queue and the task that exports its batches.
//!
//! The edge starts a request's server span ([`Tracing::server`]) and hands its
//! [`RequestTrace`] to the request's access note (`crate::access`); the upstream balancer,
//! which knows each attempt's endpoint, finds it there and starts the client spans
//! ([`RequestTrace::attempt`]), and the upstream response body ends them with the call's
//! status.

mod config;
mod queue;
mod spans;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::Context;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use prometheus_client::metrics::counter::Counter;

use crate::grpc::status::Status as GrpcStatus;
use crate::grpc::Code;
use crate::metrics::{Metrics, RequestLabels};

pub use config::{Protocol, TraceConfig};
use spans::RequestFacts;

/// The tracer of a gateway that exports traces.
#[derive(Debug)]
pub struct Tracing {
    tracer: SdkTracer,
    /// Kept so the tracer keeps its processor.
    _provider: SdkTracerProvider,
    flusher: queue::Flusher,
    scheme: &'static str,
}

/// The tracer of `config` when there is one, counting its dropped spans in `metrics`.
pub fn start_if_set(
    config: Option<&TraceConfig>,
    metrics: &Metrics,
) -> anyhow::Result<Option<Tracing>> {
    config
        .map(|config| Tracing::start(config, metrics.spans_dropped().clone()))
        .transpose()
}

impl Tracing {
    /// Builds the exporter of `config` and starts its export task (on the current runtime);
    /// spans the queue has no room for are counted in `dropped`.
    pub fn start(config: &TraceConfig, dropped: Counter) -> anyhow::Result<Tracing> {
        let resource = Resource::builder()
            .with_service_name(config.service_name.clone())
            .build();
        let mut exporter = exporter(config)?;
        opentelemetry_sdk::trace::SpanExporter::set_resource(&mut exporter, &resource);
        let (processor, flusher) = queue::start(exporter, config, dropped);
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(config.sampler.clone())
            .with_resource(resource)
            .build();
        let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "protogate");
        tracing::info!(
            endpoint = %config.export_url(),
            protocol = ?config.protocol,
            service = %config.service_name,
            "exporting traces over OTLP"
        );
        Ok(Tracing {
            tracer,
            _provider: provider,
            flusher,
            scheme: config.scheme,
        })
    }

    /// Exports the spans still queued, waiting at most `within` (on shutdown).
    pub async fn flush(&self, within: Duration) {
        if let Err(error) = self.flusher.flush(within).await {
            tracing::warn!(error, "spans were not all exported before exit");
        }
    }

    /// Starts the server span of a request with `headers` from `peer`: the child of the
    /// request's `traceparent` when it has a valid one.
    pub(crate) fn server(
        &self,
        method: &http::Method,
        path: &str,
        version: http::Version,
        headers: &HeaderMap,
        peer: SocketAddr,
    ) -> Arc<RequestTrace> {
        let parent = TraceContextPropagator::new().extract(&Headers(headers));
        let span = self
            .tracer
            .span_builder(crate::metrics::method_label(method.as_str()))
            .with_kind(SpanKind::Server)
            .start_with_context(&self.tracer, &parent);
        Arc::new(RequestTrace {
            cx: parent.with_span(span),
            tracer: self.tracer.clone(),
            facts: RequestFacts {
                path: spans::clipped(path).to_string(),
                scheme: self.scheme,
                version: spans::protocol_version(version),
                client: peer.ip(),
            },
            called: OnceLock::new(),
            upstream_code: AtomicI32::new(NO_CODE),
        })
    }
}

/// The OTLP exporter `config` asks for.
fn exporter(config: &TraceConfig) -> anyhow::Result<SpanExporter> {
    let url = config.export_url();
    let built = match config.protocol {
        Protocol::Grpc => SpanExporter::builder()
            .with_tonic()
            .with_endpoint(url.clone())
            .build(),
        Protocol::HttpProtobuf => SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(url.clone())
            .build(),
    };
    built.with_context(|| format!("cannot export traces to {url}"))
}

/// No upstream status noted yet.
const NO_CODE: i32 = -1;

/// One request's trace: its server span, and what its upstream calls note for it.
#[derive(Debug)]
pub(crate) struct RequestTrace {
    /// The context holding the server span, the parent of the client spans.
    cx: Context,
    tracer: SdkTracer,
    facts: RequestFacts,
    /// The path of the first upstream call, for the server span's `rpc.*`.
    called: OnceLock<String>,
    /// The status of the last upstream attempt that ended, or [`NO_CODE`].
    upstream_code: AtomicI32,
}

impl RequestTrace {
    /// Ends the server span with the request's labels (the metrics' decision of its route,
    /// status and error), once its response is done.
    pub(crate) fn finish(&self, labels: &RequestLabels) {
        let code = match Code::from_i32(i32::from(labels.rpc_grpc_status_code)) {
            Code::Ok => match self.upstream_code.load(Ordering::Relaxed) {
                NO_CODE => Code::Ok,
                n => Code::from_i32(n),
            },
            code => code,
        };
        let called = self.called.get().map(String::as_str);
        let span = self.cx.span();
        span.update_name(spans::server_name(labels));
        span.set_attributes(spans::server_attributes(labels, &self.facts, called, code));
        if let Some(error) = spans::server_error_type(labels, code) {
            span.set_status(Status::error(error));
        }
        span.end();
    }
}

impl RequestTrace {
    /// Starts the client span of an attempt to call `path` on `endpoint`, and sets the
    /// request's `traceparent` (and `tracestate`) from it.
    pub(crate) fn attempt(
        self: &Arc<Self>,
        path: &str,
        endpoint: SocketAddr,
        headers: &mut HeaderMap,
    ) -> ClientSpan {
        let _ = self.called.set(spans::clipped(path).to_string());
        let span = self
            .tracer
            .span_builder(spans::client_name(path))
            .with_kind(SpanKind::Client)
            .with_attributes(spans::client_attributes(path, endpoint))
            .start_with_context(&self.tracer, &self.cx);
        let sent = Context::new().with_remote_span_context(span.span_context().clone());
        TraceContextPropagator::new().inject_context(&sent, &mut HeadersMut(headers));
        ClientSpan(Box::new(Attempt {
            span,
            request: self.clone(),
            code: None,
        }))
    }
}

/// The client span of one upstream attempt, ended with the call's gRPC status: from the
/// response headers (trailers-only, whose body may never be read), its trailers, or the
/// failure; a call dropped before its end was cancelled. Boxed: an upstream call that is not
/// traced carries only an empty `Option` of it.
#[derive(Debug)]
pub(crate) struct ClientSpan(Box<Attempt>);

#[derive(Debug)]
struct Attempt {
    span: opentelemetry_sdk::trace::Span,
    request: Arc<RequestTrace>,
    /// The status the response headers carried, if any.
    code: Option<Code>,
}

impl ClientSpan {
    /// Notes the response head: a status in its headers (trailers-only), or an HTTP status
    /// that is not gRPC's 200.
    pub(crate) fn answered(&mut self, status: StatusCode, headers: &HeaderMap) {
        self.0.code = match GrpcStatus::from_headers(headers) {
            Some(status) => Some(status.code),
            None if status != StatusCode::OK => Some(crate::error::code_from_upstream_http(status)),
            None => None,
        };
    }

    /// Ends the span at the end of the response, with the status of `trailers` (or of the
    /// headers, or none at all: INTERNAL).
    pub(crate) fn ended(mut self, trailers: Option<&HeaderMap>) {
        let code = trailers
            .and_then(GrpcStatus::from_headers)
            .map(|s| s.code)
            .or(self.0.code)
            .unwrap_or(Code::Internal);
        self.0.finish(code);
    }

    /// Ends the span of an attempt that failed with `code`.
    pub(crate) fn failed(mut self, code: Code) {
        self.0.finish(code);
    }
}

impl Attempt {
    fn finish(&mut self, code: Code) {
        self.span.set_attribute(opentelemetry::KeyValue::new(
            "rpc.grpc.status_code",
            code as i64,
        ));
        if let Some(error) = spans::client_error_type(code) {
            self.span
                .set_attribute(opentelemetry::KeyValue::new("error.type", error));
            self.span.set_status(Status::error(error));
        }
        self.request
            .upstream_code
            .store(code as i32, Ordering::Relaxed);
        self.span.end();
    }
}

impl Drop for ClientSpan {
    fn drop(&mut self) {
        if self.0.span.is_recording() {
            let code = self.0.code.unwrap_or(Code::Cancelled);
            self.0.finish(code);
        }
    }
}

/// Request headers as the propagator reads them.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Upstream request headers as the propagator writes them; an empty value removes the header.
struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        let Ok(name) = HeaderName::from_bytes(key.as_bytes()) else {
            return;
        };
        match HeaderValue::from_str(&value) {
            Ok(value) if !value.is_empty() => {
                let value = crate::grpc::metadata::upstream_value(key, value);
                self.0.insert(name, value);
            }
            _ => {
                self.0.remove(name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_untraced_requests_carry_is_an_empty_pointer() {
        let word = std::mem::size_of::<usize>();
        assert_eq!(std::mem::size_of::<Option<ClientSpan>>(), word);
        assert_eq!(std::mem::size_of::<Option<Arc<RequestTrace>>>(), word);
    }

    #[test]
    fn headers_are_read_and_written_for_the_propagator() {
        let mut headers = HeaderMap::new();
        headers.insert("tracestate", HeaderValue::from_static("a=1"));
        let mut writer = HeadersMut(&mut headers);
        writer.set(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        );
        writer.set("tracestate", String::new());
        writer.set("bad header", "x".into());
        writer.set("x-control", "a\nb".into());
        assert!(
            headers.get("tracestate").is_none(),
            "an empty state removes the header"
        );
        assert!(headers.get("x-control").is_none());
        let reader = Headers(&headers);
        assert_eq!(reader.keys(), ["traceparent"]);
        let parent = TraceContextPropagator::new().extract(&reader);
        assert_eq!(
            parent.span().span_context().trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
    }
}
