//! Traces: the real binary exporting to real OTLP receivers on loopback (a tonic
//! `TraceService` for OTLP/gRPC, a hyper server for OTLP/HTTP), checked span by span: names,
//! attributes, parents, the `traceparent` the backend receives, failures, and the spans a full
//! export queue drops.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use protogate::demo::backend::RawCodec;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::support::*;

/// What the receivers got: every span, with its resource's `service.name`.
#[derive(Clone, Default)]
struct Received {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
    arrived: Arc<Notify>,
}

impl Received {
    fn take(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.resource_spans {
            let attributes = resource.resource.map(|r| r.attributes).unwrap_or_default();
            let service = string(&attributes, "service.name").unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    spans.push((service.clone(), span));
                }
            }
        }
        drop(spans);
        self.arrived.notify_waiters();
    }

    /// The spans of trace `trace_id` once there are at least `n`, within [`TIMEOUT`].
    async fn trace(&self, trace_id: &[u8], n: usize) -> Vec<(String, Span)> {
        self.until(|spans| {
            let found: Vec<_> = spans
                .iter()
                .filter(|(_, s)| s.trace_id == trace_id)
                .cloned()
                .collect();
            (found.len() >= n).then_some(found)
        })
        .await
    }

    /// The first `Some` that `check` makes of the spans received so far, waiting for more
    /// (at most [`TIMEOUT`]) while it makes `None`.
    async fn until<T>(&self, check: impl Fn(&[(String, Span)]) -> Option<T>) -> T {
        bounded(async {
            loop {
                let arrived = self.arrived.notified();
                if let Some(found) = check(&self.spans.lock().unwrap()) {
                    return found;
                }
                // Woken by a new export, or looked at again now and then in case the
                // notification came between the check and the wait.
                let _ = tokio::time::timeout(Duration::from_millis(200), arrived).await;
            }
        })
        .await
    }
}

/// An OTLP/gRPC receiver; `stalled` never answers an export.
struct Collector {
    received: Received,
    stalled: bool,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if self.stalled {
            std::future::pending::<()>().await;
        }
        self.received.take(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Starts an OTLP/gRPC receiver on a loopback port: its URL and what it receives.
async fn grpc_collector(stalled: bool) -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let received = Received::default();
    let service = TraceServiceServer::new(Collector {
        received: received.clone(),
        stalled,
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (url, received)
}

/// Starts an OTLP/HTTP (protobuf) receiver on a loopback port: its base URL and what it
/// receives at `/v1/traces`.
async fn http_collector() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let received = Received::default();
    let taking = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let received = taking.clone();
            let service =
                hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let received = received.clone();
                    async move {
                        let path = request.uri().path().to_string();
                        let body: Bytes = request.into_body().collect().await?.to_bytes();
                        let status = match (path.as_str(), ExportTraceServiceRequest::decode(body))
                        {
                            ("/v1/traces", Ok(export)) => {
                                received.take(export);
                                200
                            }
                            _ => 400,
                        };
                        let answer = ExportTraceServiceResponse::default().encode_to_vec();
                        http::Response::builder()
                            .status(status)
                            .header("content-type", "application/x-protobuf")
                            .body(Full::new(Bytes::from(answer)))
                            .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e.into() })
                    }
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    (url, received)
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn string(attributes: &[KeyValue], key: &str) -> Option<String> {
    match attribute(attributes, key)? {
        Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn int(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match attribute(attributes, key)? {
        Value::IntValue(n) => Some(*n),
        _ => None,
    }
}

/// The attributes of `span` that are strings or whole numbers, as text.
fn attributes(span: &Span) -> HashMap<String, String> {
    span.attributes
        .iter()
        .filter_map(|kv| {
            let text = match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => s.clone(),
                Value::IntValue(n) => n.to_string(),
                _ => return None,
            };
            Some((kv.key.clone(), text))
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// The one span of `kind` among `spans`.
fn only(spans: &[(String, Span)], kind: SpanKind) -> &Span {
    let found: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.kind == kind as i32)
        .collect();
    assert_eq!(found.len(), 1, "one {kind:?} span expected in {spans:#?}");
    found[0]
}

/// The library API on `upstream`, exporting to `collector` quickly, with `env` besides.
fn traced_gateway(upstream: &str, collector: &str, env: &[(&str, &str)]) -> Process {
    let mut all = vec![("OTEL_BSP_SCHEDULE_DELAY", "20")];
    all.extend_from_slice(env);
    spawn_gateway_env(
        &[
            "--proto",
            "testapi/v1/library.proto",
            "-I",
            "tests/protos",
            "--upstream",
            upstream,
            "--otlp-endpoint",
            collector,
        ],
        &all,
    )
}

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT_ID: &str = "b7ad6b7169203331";

#[tokio::test]
async fn a_rest_request_continues_the_clients_trace_through_the_upstream() {
    let backend = Backend::start(reply_with(Bytes::new())).await;
    let (collector, received) = grpc_collector(false).await;
    let gw = traced_gateway(&backend.url, &collector, &[]);
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let response = send(
        "POST",
        &format!("{}/v1/shelves/7/books", gw.base),
        &[("traceparent", &traceparent), ("tracestate", "vendor=x")],
        r#"{"title": "T"}"#,
    )
    .await;
    assert_eq!(response.status, 200, "{:?}", response.body);

    let spans = received.trace(&unhex(TRACE_ID), 2).await;
    assert!(spans.iter().all(|(service, _)| service == "protogate"));
    let server = only(&spans, SpanKind::Server);
    let client = only(&spans, SpanKind::Client);
    assert_eq!(server.name, "POST /v1/shelves/{shelf}/books");
    assert_eq!(hex(&server.parent_span_id), PARENT_ID, "the client's span");
    let a = attributes(server);
    for (key, value) in [
        ("http.request.method", "POST"),
        ("http.route", "/v1/shelves/{shelf}/books"),
        ("http.response.status_code", "200"),
        ("url.path", "/v1/shelves/7/books"),
        ("url.scheme", "http"),
        ("network.protocol.version", "1.1"),
        ("client.address", "127.0.0.1"),
        ("rpc.system", "grpc"),
        ("rpc.service", "testapi.v1.Library"),
        ("rpc.method", "CreateBook"),
        ("rpc.grpc.status_code", "0"),
        ("protogate.protocol", "rest"),
    ] {
        assert_eq!(
            a.get(key).map(String::as_str),
            Some(value),
            "{key} in {a:#?}"
        );
    }
    assert!(!a.contains_key("error.type"), "{a:#?}");
    assert_ne!(
        server.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );

    assert_eq!(client.name, "testapi.v1.Library/CreateBook");
    assert_eq!(
        client.parent_span_id, server.span_id,
        "child of the server span"
    );
    let c = attributes(client);
    let port = backend.addr.port().to_string();
    for (key, value) in [
        ("rpc.system", "grpc"),
        ("rpc.service", "testapi.v1.Library"),
        ("rpc.method", "CreateBook"),
        ("server.address", "127.0.0.1"),
        ("server.port", port.as_str()),
        ("rpc.grpc.status_code", "0"),
    ] {
        assert_eq!(
            c.get(key).map(String::as_str),
            Some(value),
            "{key} in {c:#?}"
        );
    }

    let call = backend.only_call();
    let sent = call.metadata.get("traceparent").unwrap().to_str().unwrap();
    assert_eq!(
        sent,
        format!("00-{TRACE_ID}-{}-01", hex(&client.span_id)),
        "the upstream's parent is the client span"
    );
    assert_eq!(call.metadata.get("tracestate").unwrap(), "vendor=x");
}

#[tokio::test]
async fn a_native_grpc_call_has_a_server_and_a_client_span() {
    let backend = Backend::start(reply_with(Bytes::new())).await;
    let (collector, received) = grpc_collector(false).await;
    let gw = traced_gateway(&backend.url, &collector, &[]);
    let mut client = grpc_client(&gw.base).await;
    let path = http::uri::PathAndQuery::from_static("/testapi.v1.Library/GetBook");
    bounded(client.unary(tonic::Request::new(Bytes::new()), path, RawCodec))
        .await
        .unwrap();

    let spans = received
        .until(|spans| {
            let server = spans
                .iter()
                .find(|(_, s)| s.name == "POST /testapi.v1.Library/GetBook")?;
            let trace: Vec<_> = spans
                .iter()
                .filter(|(_, s)| s.trace_id == server.1.trace_id)
                .cloned()
                .collect();
            (trace.len() >= 2).then_some(trace)
        })
        .await;
    let server = only(&spans, SpanKind::Server);
    let client = only(&spans, SpanKind::Client);
    assert!(server.parent_span_id.is_empty(), "a new trace");
    let a = attributes(server);
    for (key, value) in [
        ("http.route", "/testapi.v1.Library/GetBook"),
        ("network.protocol.version", "2"),
        ("rpc.service", "testapi.v1.Library"),
        ("rpc.method", "GetBook"),
        ("rpc.grpc.status_code", "0"),
        ("protogate.protocol", "grpc"),
    ] {
        assert_eq!(
            a.get(key).map(String::as_str),
            Some(value),
            "{key} in {a:#?}"
        );
    }
    assert_eq!(client.name, "testapi.v1.Library/GetBook");
    assert_eq!(client.parent_span_id, server.span_id);
    assert_eq!(int(&client.attributes, "rpc.grpc.status_code"), Some(0));
    let sent = backend.only_call();
    let sent = sent.metadata.get("traceparent").unwrap().to_str().unwrap();
    assert_eq!(
        sent,
        format!("00-{}-{}-01", hex(&server.trace_id), hex(&client.span_id))
    );
}

#[tokio::test]
async fn an_upstream_that_is_down_fails_both_spans() {
    let (collector, received) = grpc_collector(false).await;
    let gw = traced_gateway(&dead_url().await, &collector, &[]);
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let response = send(
        "POST",
        &format!("{}/v1/shelves/7/books", gw.base),
        &[("traceparent", &traceparent)],
        "{}",
    )
    .await;
    assert_eq!(response.status, 503);

    let spans = received.trace(&unhex(TRACE_ID), 2).await;
    let server = only(&spans, SpanKind::Server);
    assert_eq!(
        server.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
    let a = attributes(server);
    assert_eq!(a["error.type"], "UNAVAILABLE");
    assert_eq!(a["rpc.grpc.status_code"], "14");
    assert_eq!(a["protogate.error_source"], "upstream");
    assert_eq!(a["http.response.status_code"], "503");
    let clients: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.kind == SpanKind::Client as i32)
        .collect();
    assert!(!clients.is_empty());
    for client in clients {
        assert_eq!(client.parent_span_id, server.span_id);
        assert_eq!(
            client.status.as_ref().map(|s| s.code),
            Some(StatusCode::Error as i32)
        );
        assert_eq!(int(&client.attributes, "rpc.grpc.status_code"), Some(14));
        assert_eq!(
            string(&client.attributes, "error.type").as_deref(),
            Some("UNAVAILABLE")
        );
    }
}

#[tokio::test]
async fn otlp_over_http_with_protobuf_and_a_service_name() {
    let backend = Backend::start(reply_with(Bytes::new())).await;
    let (collector, received) = http_collector().await;
    let gw = traced_gateway(
        &backend.url,
        &collector,
        &[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_SERVICE_NAME", "edge-gateway"),
        ],
    );
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let response = send(
        "GET",
        &format!("{}/v1/shelves/3/books", gw.base),
        &[("traceparent", &traceparent)],
        "",
    )
    .await;
    assert_eq!(response.status, 200);
    let spans = received.trace(&unhex(TRACE_ID), 2).await;
    assert!(spans.iter().all(|(service, _)| service == "edge-gateway"));
    assert_eq!(
        only(&spans, SpanKind::Server).name,
        "GET /v1/shelves/{shelf}/books"
    );
    assert_eq!(
        only(&spans, SpanKind::Client).name,
        "testapi.v1.Library/ListBooks"
    );
}

#[tokio::test]
async fn spans_a_full_queue_cannot_take_are_dropped_and_counted() {
    let backend = Backend::start(reply_with(Bytes::new())).await;
    let (collector, _received) = grpc_collector(true).await;
    let gw = traced_gateway(
        &backend.url,
        &collector,
        &[
            ("OTEL_BSP_MAX_QUEUE_SIZE", "1"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "1"),
        ],
    );
    for _ in 0..20 {
        let response = send("GET", &format!("{}/v1/shelves/3/books", gw.base), &[], "").await;
        assert_eq!(response.status, 200, "requests go on while spans cannot");
    }
    let url = format!("{}/metrics", gw.base);
    let text = String::from_utf8_lossy(&get(&url).await.body).to_string();
    let dropped: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("protogate_trace_spans_dropped_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no dropped counter in\n{text}"));
    assert!(dropped > 0.0, "{text}");
    assert!(text.contains("# TYPE protogate_trace_spans_dropped_total counter"));
    let open_metrics = send(
        "GET",
        &url,
        &[("accept", "application/openmetrics-text; version=1.0.0")],
        "",
    )
    .await;
    let text = String::from_utf8_lossy(&open_metrics.body);
    assert!(
        text.contains("# TYPE protogate_trace_spans_dropped counter"),
        "{text}"
    );
    assert!(
        text.contains("protogate_trace_spans_dropped_total "),
        "{text}"
    );
}

#[tokio::test]
async fn without_an_endpoint_the_clients_traceparent_is_forwarded_as_it_came() {
    let backend = Backend::start(reply_with(Bytes::new())).await;
    let gw = spawn_gateway(&[
        "--proto",
        "testapi/v1/library.proto",
        "-I",
        "tests/protos",
        "--upstream",
        &backend.url,
    ]);
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let response = send(
        "GET",
        &format!("{}/v1/shelves/3/books", gw.base),
        &[("traceparent", &traceparent), ("tracestate", "vendor=x")],
        "",
    )
    .await;
    assert_eq!(response.status, 200);
    let call = backend.only_call();
    assert_eq!(
        call.metadata.get("traceparent").unwrap(),
        traceparent.as_str()
    );
    assert_eq!(call.metadata.get("tracestate").unwrap(), "vendor=x");
}

/// Waits for the spans of `trace_id` and checks that the server span is `protocol`'s, named
/// `name`, with the client span its child.
async fn check_protocol(received: &Received, trace_id: &str, protocol: &str, name: &str) {
    let spans = received.trace(&unhex(trace_id), 2).await;
    let server = only(&spans, SpanKind::Server);
    let client = only(&spans, SpanKind::Client);
    assert_eq!(server.name, name);
    assert_eq!(
        string(&server.attributes, "protogate.protocol").as_deref(),
        Some(protocol)
    );
    assert_eq!(hex(&server.parent_span_id), PARENT_ID, "{protocol}");
    assert_eq!(client.parent_span_id, server.span_id, "{protocol}");
    assert_eq!(
        int(&client.attributes, "rpc.grpc.status_code"),
        Some(0),
        "{protocol}"
    );
}

#[tokio::test]
async fn grpc_web_connect_and_websocket_calls_are_client_spans_too() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message as WsMessage;

    let backend = Backend::start(reply_with(Bytes::new())).await;
    let (collector, received) = grpc_collector(false).await;
    let gw = traced_gateway(&backend.url, &collector, &[]);
    let method = format!("{}/testapi.v1.Library/GetBook", gw.base);
    let parent = |trace: &str| format!("00-{trace}-{PARENT_ID}-01");

    let grpc_web_trace = "1af7651916cd43dd8448eb211c80319c";
    let empty = protogate::grpc::frame::encode_raw(&[]);
    let web = send(
        "POST",
        &method,
        &[
            ("content-type", "application/grpc-web+proto"),
            ("x-grpc-web", "1"),
            ("traceparent", &parent(grpc_web_trace)),
        ],
        empty,
    )
    .await;
    assert_eq!(web.status, 200);

    let connect_trace = "2af7651916cd43dd8448eb211c80319c";
    let connect = send(
        "POST",
        &method,
        &[
            ("content-type", "application/proto"),
            ("connect-protocol-version", "1"),
            ("traceparent", &parent(connect_trace)),
        ],
        "",
    )
    .await;
    assert_eq!(connect.status, 200, "{:?}", connect.body);

    let websocket_trace = "3af7651916cd43dd8448eb211c80319c";
    let url = format!("{}/v1/watch/x", gw.base.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().unwrap();
    let traceparent = parent(websocket_trace).parse().unwrap();
    request.headers_mut().insert("traceparent", traceparent);
    let (mut ws, _) = bounded(tokio_tungstenite::connect_async(request))
        .await
        .unwrap();
    bounded(ws.send(WsMessage::text("{}"))).await.unwrap();
    // The answer, then the close that ends the session (and its server span).
    while let Some(message) = bounded(ws.next()).await {
        if matches!(message, Ok(WsMessage::Close(_)) | Err(_)) {
            break;
        }
    }
    drop(ws);

    check_protocol(
        &received,
        grpc_web_trace,
        "grpc-web",
        "POST /testapi.v1.Library/GetBook",
    )
    .await;
    check_protocol(
        &received,
        connect_trace,
        "connect",
        "POST /testapi.v1.Library/GetBook",
    )
    .await;
    check_protocol(
        &received,
        websocket_trace,
        "websocket",
        "GET /v1/watch/{name}",
    )
    .await;
}

#[tokio::test]
async fn spans_still_queued_are_exported_on_shutdown() {
    let backend = Backend::start(reply_with(Bytes::new())).await;
    let (collector, received) = grpc_collector(false).await;
    // Batches would wait ten minutes: only the flush at shutdown sends this one.
    let gw = traced_gateway(
        &backend.url,
        &collector,
        &[("OTEL_BSP_SCHEDULE_DELAY", "600000")],
    );
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let url = format!("{}/v1/shelves/3/books", gw.base);
    let response = send("GET", &url, &[("traceparent", &traceparent)], "").await;
    assert_eq!(response.status, 200);
    let pid = gw.child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let spans = received.trace(&unhex(TRACE_ID), 2).await;
    assert_eq!(
        only(&spans, SpanKind::Server).name,
        "GET /v1/shelves/{shelf}/books"
    );
    let status = bounded(tokio::task::spawn_blocking(move || {
        let mut gw = gw;
        gw.child.wait()
    }))
    .await
    .unwrap()
    .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn an_unsampled_parent_is_followed_and_still_passed_on() {
    let backend = Backend::start(reply_with(Bytes::new())).await;
    let (collector, received) = grpc_collector(false).await;
    let gw = traced_gateway(&backend.url, &collector, &[]);
    let url = format!("{}/v1/shelves/3/books", gw.base);
    let unsampled = "4af7651916cd43dd8448eb211c80319c";
    let traceparent = format!("00-{unsampled}-{PARENT_ID}-00");
    let response = send("GET", &url, &[("traceparent", &traceparent)], "").await;
    assert_eq!(response.status, 200);
    let call = backend.only_call();
    let sent = call.metadata.get("traceparent").unwrap().to_str().unwrap();
    assert!(
        sent.starts_with(&format!("00-{unsampled}-")) && sent.ends_with("-00"),
        "the upstream is told the trace is not sampled: {sent}"
    );
    assert!(
        !sent.contains(PARENT_ID),
        "a span of the gateway is its parent: {sent}"
    );

    // A sampled request after it: once its spans are in, the unsampled ones would be too.
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let response = send("GET", &url, &[("traceparent", &traceparent)], "").await;
    assert_eq!(response.status, 200);
    received.trace(&unhex(TRACE_ID), 2).await;
    let spans = received.spans.lock().unwrap();
    assert!(
        spans.iter().all(|(_, s)| s.trace_id != unhex(unsampled)),
        "{spans:#?}"
    );
}
