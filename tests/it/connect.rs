//! The Connect protocol through the gateway, as Connect clients send it, with hand-built
//! requests over HTTP/1.1 and HTTP/2 to the real tonic backend: unary `POST` (JSON and
//! binary) and `GET`, its errors (the gateway's and the upstream's, with details), streams of
//! every kind with their end-stream message, broken envelopes, the metrics label and CORS.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::{stream, StreamExt};
use http::{HeaderMap, Request};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use prost_reflect::DescriptorPool;
use protogate::demo::backend::{self, Call, Handlers, MessageStream, Reply, StreamCall};
use protogate::descriptor::Sources;
use protogate::server::{CorsPolicy, Settings};
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

use crate::support::*;

const SAY: &str = "/testapi.v1.Relay/Say";
const LISTEN: &str = "/testapi.v1.Relay/Listen";
const COLLECT: &str = "/testapi.v1.Relay/Collect";
const CONVERSE: &str = "/testapi.v1.Relay/Converse";
const PEEK: &str = "/testapi.v1.Ledger/Peek";
const NOTE: &str = "testapi.v1.Note";
const JSON: (&str, &str) = ("content-type", "application/json");
const PROTO: (&str, &str) = ("content-type", "application/proto");
const V1: (&str, &str) = ("connect-protocol-version", "1");

/// The Relay and Library services, and `Ledger` (a method callable by GET, a REST route on a
/// Connect path).
fn sources() -> Sources {
    let mut sources = relay_sources();
    sources.protos.push("testapi/v1/connect.proto".into());
    sources
}

fn pool() -> DescriptorPool {
    static POOL: std::sync::OnceLock<DescriptorPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| protogate::descriptor::load(&sources()).unwrap())
        .clone()
}

fn note(text: &str, n: i32) -> Bytes {
    encode_json(&pool(), NOTE, json!({"text": text, "n": n}))
}

fn text_of(message: &[u8]) -> serde_json::Value {
    decode_json(&pool(), NOTE, message)
}

/// The `google.rpc.Status` the backend fails `Say` with.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

fn error_info() -> Bytes {
    encode_json(
        &pool(),
        "google.rpc.ErrorInfo",
        json!({"reason": "NO_NOTE", "domain": "relay.example"}),
    )
}

fn status_details() -> Bytes {
    let status = RpcStatus {
        code: Code::NotFound as i32,
        message: "no such note".into(),
        details: vec![prost_types::Any {
            type_url: "type.googleapis.com/google.rpc.ErrorInfo".into(),
            value: error_info().to_vec(),
        }],
    };
    Bytes::from(status.encode_to_vec())
}

/// Every call the backend got: its path and metadata.
type Seen = Arc<Mutex<Vec<(String, MetadataMap)>>>;

/// `Say` echoes with `x-answer: yes` (fails with details on "fail", waits on "slow"); `Peek`
/// echoes with `cache-control`; other unary methods answer a note naming their path.
/// `Listen` streams `n` notes (then fails, on "fail"), `Collect` counts, `Converse` echoes.
fn handlers(seen: &Seen, arrived: &Arc<Notify>) -> Handlers {
    let (seen_u, arrived) = (seen.clone(), arrived.clone());
    let unary = backend::handler(move |call: Call| {
        seen_u
            .lock()
            .unwrap()
            .push((call.path.clone(), call.metadata.clone()));
        arrived.notify_one();
        async move {
            if text_of(&call.message)["text"] == "slow" {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            unary(call)
        }
    });
    let seen_s = seen.clone();
    let streaming = backend::stream_handler(move |call: StreamCall| {
        seen_s
            .lock()
            .unwrap()
            .push((call.path.clone(), call.metadata.clone()));
        async move {
            let mut metadata = MetadataMap::new();
            metadata.insert("x-stream", MetadataValue::from_static("on"));
            Ok((metadata, streams(call).await?))
        }
    });
    let paths = [LISTEN, COLLECT, CONVERSE].map(String::from).to_vec();
    Handlers {
        unary,
        streaming: Some((paths, streaming)),
    }
}

fn unary(call: Call) -> Result<Reply, Status> {
    let mut metadata = MetadataMap::new();
    match call.path.as_str() {
        SAY if text_of(&call.message)["text"] == "fail" => {
            let mut metadata = MetadataMap::new();
            metadata.insert("x-why", MetadataValue::from_static("because"));
            return Err(Status::with_details_and_metadata(
                Code::NotFound,
                "no such note",
                status_details(),
                metadata,
            ));
        }
        SAY => metadata.insert("x-answer", MetadataValue::from_static("yes")),
        PEEK => metadata.insert("cache-control", MetadataValue::from_static("max-age=60")),
        path => {
            return Ok(Reply {
                message: note(path, 0),
                metadata,
            })
        }
    };
    Ok(Reply {
        message: call.message,
        metadata,
    })
}

async fn streams(mut call: StreamCall) -> Result<MessageStream, Status> {
    match call.path.as_str() {
        LISTEN => {
            let first = call.messages.message().await?.unwrap_or_default();
            let request = text_of(&first);
            let n = request["n"].as_i64().unwrap_or(0) as i32;
            let mut items: Vec<Result<Bytes, Status>> =
                (1..=n).map(|i| Ok(note("tick", i))).collect();
            if request["text"] == "fail" {
                let mut metadata = MetadataMap::new();
                metadata.insert("x-why", MetadataValue::from_static("because"));
                items.push(Err(Status::with_metadata(
                    Code::Aborted,
                    "the stream broke",
                    metadata,
                )));
            }
            Ok(Box::pin(stream::iter(items)))
        }
        COLLECT => {
            let mut count = 0;
            while call.messages.message().await?.is_some() {
                count += 1;
            }
            Ok(Box::pin(stream::iter([Ok(note("collected", count))])))
        }
        _ => {
            let echoes = call.messages.map(|message| {
                let text = text_of(&message?)["text"].clone();
                Ok(note(&format!("echo {}", text.as_str().unwrap_or("")), 0))
            });
            Ok(Box::pin(echoes))
        }
    }
}

struct Fixture {
    seen: Seen,
    /// Told of every unary call the backend gets.
    arrived: Arc<Notify>,
    gw: Gw,
    _backend: Served,
}

impl Fixture {
    async fn start(settings: Settings) -> Fixture {
        let seen = Seen::default();
        let arrived = Arc::new(Notify::new());
        let backend = serve_handlers(handlers(&seen, &arrived)).await;
        let gw = start_gateway(sources(), &backend.url, settings).await;
        Fixture {
            seen,
            arrived,
            gw,
            _backend: backend,
        }
    }

    async fn new() -> Fixture {
        Fixture::start(Settings::default()).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.gw.base, path)
    }

    fn paths(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.0.clone())
            .collect()
    }

    async fn post(&self, path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Resp {
        send("POST", &self.url(path), headers, body).await
    }
}

/// A Connect JSON error's code and message, checking the HTTP status and content type.
fn connect_error(resp: &Resp, status: u16) -> (String, String) {
    assert_eq!(
        resp.status,
        status,
        "{}",
        String::from_utf8_lossy(&resp.body)
    );
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let body = resp.json();
    let code = body["code"].as_str().unwrap_or_default().to_string();
    let message = body["message"].as_str().unwrap_or_default().to_string();
    (code, message)
}

/// One envelope.
fn envelope(flags: u8, payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_u8(flags);
    buf.put_u32(payload.len() as u32);
    buf.put_slice(payload);
    buf.freeze()
}

/// A Connect stream response: its messages, and its end-stream message (flag 0x02) as JSON.
#[derive(Debug)]
struct Streamed {
    messages: Vec<Bytes>,
    end: serde_json::Value,
}

fn parse_stream(mut body: Bytes) -> Streamed {
    let mut messages = Vec::new();
    let mut end = None;
    while body.has_remaining() {
        assert!(end.is_none(), "data after the end-stream message");
        assert!(body.len() >= 5, "truncated envelope");
        let flags = body.get_u8();
        let len = body.get_u32() as usize;
        let payload = body.split_to(len);
        match flags {
            0 => messages.push(payload),
            2 => end = Some(serde_json::from_slice(&payload).unwrap()),
            other => panic!("unexpected flags {other:#x}"),
        }
    }
    Streamed {
        messages,
        end: end.expect("an end-stream message"),
    }
}

type StreamedBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// An HTTP/2 (h2c) connection to the gateway.
async fn h2(base: &str) -> hyper::client::conn::http2::SendRequest<StreamedBody> {
    let authority = base.trim_start_matches("http://").to_string();
    let socket = bounded(TcpStream::connect(&authority)).await.unwrap();
    let (sender, connection) = bounded(hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        TokioIo::new(socket),
    ))
    .await
    .unwrap();
    tokio::spawn(connection);
    sender
}

fn h2_request(
    base: &str,
    path: &str,
    content_type: &str,
    body: StreamedBody,
) -> Request<StreamedBody> {
    Request::builder()
        .method("POST")
        .uri(format!("{base}{path}"))
        .header("content-type", content_type)
        .body(body)
        .unwrap()
}

fn whole(bytes: Bytes) -> StreamedBody {
    http_body_util::Full::new(bytes).boxed()
}

/// Sends a whole stream over HTTP/2 and reads the whole answer.
async fn h2_stream(
    base: &str,
    path: &str,
    content_type: &str,
    body: Bytes,
) -> (HeaderMap, Streamed) {
    let mut sender = h2(base).await;
    let request = h2_request(base, path, content_type, whole(body));
    let response = bounded(sender.send_request(request)).await.unwrap();
    assert_eq!(response.status(), 200);
    let (parts, body) = response.into_parts();
    let body = bounded(body.collect()).await.unwrap().to_bytes();
    (parts.headers, parse_stream(body))
}

#[tokio::test]
async fn unary_json_and_proto_reach_the_upstream_as_grpc() {
    let f = Fixture::new().await;
    let resp = f
        .post(
            SAY,
            &[JSON, V1, ("x-custom", "hi")],
            r#"{"text":"hello","n":2}"#,
        )
        .await;
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(resp.json(), json!({"text": "hello", "n": 2}));
    assert_eq!(resp.header("x-answer"), Some("yes"));

    let resp = f.post(SAY, &[PROTO, V1], note("binary", 7)).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("application/proto"));
    assert_eq!(resp.body, note("binary", 7));

    let seen = f.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    let (path, metadata) = &seen[0];
    assert_eq!(path, SAY);
    assert_eq!(metadata.get("x-custom").unwrap(), "hi");
    assert!(metadata.get("connect-protocol-version").is_none());
}

#[tokio::test]
async fn unknown_methods_codecs_versions_and_encodings_are_refused() {
    let f = Fixture::new().await;
    let resp = f.post("/testapi.v1.Relay/Nope", &[JSON, V1], "{}").await;
    let (code, message) = connect_error(&resp, 501);
    assert_eq!(code, "unimplemented");
    assert!(message.contains("/testapi.v1.Relay/Nope"), "{message}");
    let resp = f.post("/nope.Service/Say", &[JSON, V1], "{}").await;
    assert_eq!(connect_error(&resp, 501).0, "unimplemented");

    let resp = f
        .post(SAY, &[("content-type", "application/xml"), V1], "<a/>")
        .await;
    assert_eq!(resp.status, 415);
    let accept_post = resp.header("accept-post");
    assert_eq!(accept_post, Some("application/json, application/proto"));

    let resp = f
        .post(SAY, &[JSON, ("connect-protocol-version", "2")], "{}")
        .await;
    assert_eq!(connect_error(&resp, 400).0, "invalid_argument");

    let resp = f
        .post(SAY, &[JSON, V1, ("content-encoding", "snappy")], "{}")
        .await;
    let (code, message) = connect_error(&resp, 501);
    assert_eq!(code, "unimplemented");
    assert!(
        message.contains("identity") && message.contains("gzip"),
        "{message}"
    );
    assert_eq!(
        resp.header("accept-encoding"),
        Some("zstd, br, gzip, deflate")
    );

    let resp = f.post(LISTEN, &[JSON, V1], "{}").await;
    assert_eq!(resp.status, 415, "a streaming method called as unary");
    assert!(f.paths().is_empty(), "nothing reached the upstream");
}

#[tokio::test]
async fn bad_json_and_large_bodies_are_the_clients() {
    let settings = Settings {
        max_request_bytes: 64,
        ..Settings::default()
    };
    let f = Fixture::start(settings).await;
    let resp = f.post(SAY, &[JSON, V1], r#"{"text": 5}"#).await;
    let (code, message) = connect_error(&resp, 400);
    assert_eq!(code, "invalid_argument");
    assert!(message.contains("testapi.v1.Note"), "{message}");

    let resp = f.post(SAY, &[JSON, V1], vec![b' '; 100]).await;
    assert_eq!(connect_error(&resp, 429).0, "resource_exhausted");
    assert!(f.paths().is_empty());
}

#[tokio::test]
async fn connect_timeout_ms_is_the_deadline() {
    let f = Fixture::new().await;
    let resp = f
        .post(
            SAY,
            &[JSON, V1, ("connect-timeout-ms", "200")],
            r#"{"text":"slow"}"#,
        )
        .await;
    assert_eq!(connect_error(&resp, 504).0, "deadline_exceeded");
    let (_, metadata) = f.seen.lock().unwrap()[0].clone();
    assert!(
        metadata.get("grpc-timeout").is_some(),
        "the deadline went upstream"
    );

    let resp = f
        .post(SAY, &[JSON, V1, ("connect-timeout-ms", "soon")], "{}")
        .await;
    assert_eq!(connect_error(&resp, 400).0, "invalid_argument");
}

#[tokio::test]
async fn upstream_errors_carry_their_details_and_trailers() {
    let f = Fixture::new().await;
    let resp = f.post(SAY, &[JSON, V1], r#"{"text":"fail"}"#).await;
    let (code, message) = connect_error(&resp, 404);
    assert_eq!(
        (code.as_str(), message.as_str()),
        ("not_found", "no such note")
    );
    assert_eq!(resp.header("trailer-x-why"), Some("because"));
    let body = resp.json();
    let detail = &body["details"][0];
    assert_eq!(detail["type"], "google.rpc.ErrorInfo", "{body}");
    let value = detail["value"].as_str().unwrap();
    assert!(!value.ends_with('='), "unpadded: {value}");
    let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(value)
        .unwrap();
    assert_eq!(decoded, error_info());
    assert_eq!(detail["debug"]["reason"], "NO_NOTE", "{body}");
    assert_eq!(detail["debug"]["domain"], "relay.example", "{body}");
}

#[tokio::test]
async fn an_upstream_that_is_down_is_unavailable() {
    let url = dead_url().await;
    let gw = start_gateway(sources(), &url, Settings::default()).await;
    let resp = send("POST", &format!("{}{SAY}", gw.base), &[JSON, V1], "{}").await;
    let (code, message) = connect_error(&resp, 503);
    assert_eq!(code, "unavailable");
    let port = url.rsplit(':').next().unwrap();
    assert!(!message.contains(port), "no internal address: {message}");
}

#[tokio::test]
async fn rest_routes_win_and_plain_json_posts_stay_rest() {
    let f = Fixture::new().await;
    // Ledger.Routed has a REST route on the path a Connect client would use for Write.
    let resp = f
        .post("/testapi.v1.Ledger/Write", &[JSON, V1], r#"{"text":"x"}"#)
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["text"], "/testapi.v1.Ledger/Routed");
    // Without Connect-Protocol-Version, application/json is REST: no route here, so 404.
    let resp = f.post(SAY, &[JSON], "{}").await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.json()["code"], 5, "a google.rpc.Status, as before");
    assert_eq!(f.paths(), ["/testapi.v1.Ledger/Routed"]);
}

#[tokio::test]
async fn routes_on_the_methods_own_path_are_answered_in_connect() {
    let seen = Seen::default();
    let backend = serve_handlers(handlers(&seen, &Arc::new(Notify::new()))).await;
    let options = protogate::upstream::UpstreamOptions {
        connections: 2,
        connect_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let (upstreams, map) =
        protogate::upstream::build_all(Some(&backend.url), &[], &options).unwrap();
    let routes = protogate::route::RouteOptions {
        expose_unannotated: true,
        ..Default::default()
    };
    let snapshot =
        protogate::snapshot::Snapshot::build(&relay_sources(), &routes, Some(&map)).unwrap();
    let gw = start_with(protogate::server::Gateway::new(
        snapshot,
        upstreams,
        Settings::default(),
    ))
    .await;
    let url = format!("{}{SAY}", gw.base);
    // `--expose-unannotated` routes POST /testapi.v1.Relay/Say; REST clients keep it...
    let resp = send("POST", &url, &[JSON], r#"{"text":"rest"}"#).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["text"], "rest");
    // ...and Connect clients get Connect, binary codec included.
    let resp = send("POST", &url, &[PROTO, V1], note("connect", 1)).await;
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(resp.body, note("connect", 1));
    let resp = send("POST", &url, &[JSON, V1], r#"{"text":"fail"}"#).await;
    assert_eq!(connect_error(&resp, 404).0, "not_found");
}

#[tokio::test]
async fn side_effect_free_methods_answer_get() {
    let f = Fixture::new().await;
    let message = "%7B%22text%22%3A%22peek%22%7D";
    let url = f.url(&format!(
        "{PEEK}?connect=v1&encoding=json&message={message}"
    ));
    let resp = get(&url).await;
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(resp.json()["text"], "peek");
    assert_eq!(resp.header("cache-control"), Some("max-age=60"));
    assert!(resp.header("set-cookie").is_none());

    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(note("b", 1));
    let url = f.url(&format!(
        "{PEEK}?connect=v1&encoding=proto&base64=1&message={encoded}"
    ));
    let resp = get(&url).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("application/proto"));
    assert_eq!(resp.body, note("b", 1));

    let url = f.url(&format!("{SAY}?connect=v1&encoding=json&message=%7B%7D"));
    let resp = get(&url).await;
    assert_eq!(connect_error(&resp, 405).0, "unimplemented");
    assert_eq!(resp.header("allow"), Some("POST"));
    assert_eq!(f.paths(), [PEEK, PEEK]);
}

#[tokio::test]
async fn server_streams_over_http1_and_http2() {
    let f = Fixture::new().await;
    let request = envelope(0, br#"{"text":"go","n":3}"#);
    let resp = f
        .post(
            LISTEN,
            &[("content-type", "application/connect+json")],
            request,
        )
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("content-type"),
        Some("application/connect+json")
    );
    assert_eq!(resp.header("x-stream"), Some("on"));
    let streamed = parse_stream(resp.body);
    let ns: Vec<serde_json::Value> = streamed
        .messages
        .iter()
        .map(|m| serde_json::from_slice::<serde_json::Value>(m).unwrap()["n"].clone())
        .collect();
    assert_eq!(ns, [1, 2, 3]);
    assert_eq!(streamed.end, json!({}));

    let (headers, streamed) = h2_stream(
        &f.gw.base,
        LISTEN,
        "application/connect+proto",
        envelope(0, &note("go", 2)),
    )
    .await;
    assert_eq!(headers["content-type"], "application/connect+proto");
    assert_eq!(streamed.messages, [note("tick", 1), note("tick", 2)]);
    assert_eq!(streamed.end, json!({}));
}

#[tokio::test]
async fn a_failing_stream_ends_with_its_error_and_trailers() {
    let f = Fixture::new().await;
    let request = envelope(0, br#"{"text":"fail","n":1}"#);
    let resp = f
        .post(
            LISTEN,
            &[("content-type", "application/connect+json")],
            request,
        )
        .await;
    assert_eq!(resp.status, 200, "stream failures are HTTP 200");
    let streamed = parse_stream(resp.body);
    assert_eq!(streamed.messages.len(), 1);
    assert_eq!(streamed.end["error"]["code"], "aborted", "{}", streamed.end);
    assert_eq!(streamed.end["error"]["message"], "the stream broke");
    assert_eq!(streamed.end["metadata"]["x-why"], json!(["because"]));

    let resp = f
        .post(
            "/testapi.v1.Relay/Nope",
            &[("content-type", "application/connect+json")],
            "",
        )
        .await;
    assert_eq!(resp.status, 200);
    let accepted = resp.header("connect-accept-encoding").map(str::to_string);
    let end = parse_stream(resp.body).end;
    assert_eq!(end["error"]["code"], "unimplemented", "{end}");
    assert_eq!(accepted.as_deref(), Some("zstd, br, gzip, deflate"));
}

#[tokio::test]
async fn client_streams_over_http2_and_http1() {
    let f = Fixture::new().await;
    let mut body = BytesMut::new();
    for i in 0..3 {
        body.extend_from_slice(&envelope(0, &note("n", i)));
    }
    let (_, streamed) = h2_stream(
        &f.gw.base,
        COLLECT,
        "application/connect+proto",
        body.clone().freeze(),
    )
    .await;
    assert_eq!(streamed.messages, [note("collected", 3)]);
    assert_eq!(streamed.end, json!({}));

    let resp = f
        .post(
            COLLECT,
            &[("content-type", "application/connect+proto")],
            body.freeze(),
        )
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(parse_stream(resp.body).messages, [note("collected", 3)]);
}

#[tokio::test]
async fn bidi_streams_answer_each_message_as_it_comes() {
    let f = Fixture::new().await;
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let frames = stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(Frame::data(bytes)), rx))
    });
    let body = BodyExt::boxed(StreamBody::new(frames));
    let mut sender = h2(&f.gw.base).await;
    let request = h2_request(&f.gw.base, CONVERSE, "application/connect+json", body);
    tx.send(envelope(0, br#"{"text":"one"}"#)).await.unwrap();
    let response = bounded(sender.send_request(request)).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body: Incoming = response.into_body();
    let text = |(flags, message): (u8, Bytes)| {
        assert_eq!(flags, 0);
        serde_json::from_slice::<serde_json::Value>(&message).unwrap()["text"].clone()
    };
    assert_eq!(text(next_envelope(&mut body).await), "echo one");
    tx.send(envelope(0, br#"{"text":"two"}"#)).await.unwrap();
    assert_eq!(text(next_envelope(&mut body).await), "echo two");
    drop(tx);
    let end = next_envelope(&mut body).await;
    assert_eq!(end, (2, Bytes::from_static(b"{}")));

    let resp = f
        .post(
            CONVERSE,
            &[("content-type", "application/connect+json")],
            "",
        )
        .await;
    assert_eq!(resp.status, 505, "bidi needs HTTP/2");
}

#[tokio::test]
async fn silent_streams_and_deadlines_end_the_stream() {
    let settings = Settings {
        stream_idle_timeout: Duration::from_millis(300),
        ..Settings::default()
    };
    let f = Fixture::start(settings).await;
    // A bidi stream whose client never sends: the idle limit ends it.
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let frames = stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(Frame::data(bytes)), rx))
    });
    let mut sender = h2(&f.gw.base).await;
    let body = BodyExt::boxed(StreamBody::new(frames));
    let request = h2_request(&f.gw.base, CONVERSE, "application/connect+json", body);
    let response = bounded(sender.send_request(request)).await.unwrap();
    let body = bounded(response.into_body().collect()).await.unwrap();
    let end = parse_stream(body.to_bytes()).end;
    assert_eq!(end["error"]["code"], "deadline_exceeded", "{end}");
    assert!(
        end["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--stream-idle-timeout"),
        "{end}"
    );
    drop(tx);

    // Connect-Timeout-Ms bounds a stream too.
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let frames = stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(Frame::data(bytes)), rx))
    });
    let mut request = h2_request(
        &f.gw.base,
        CONVERSE,
        "application/connect+json",
        BodyExt::boxed(StreamBody::new(frames)),
    );
    request
        .headers_mut()
        .insert("connect-timeout-ms", "100".parse().unwrap());
    tx.send(envelope(0, br#"{"text":"hi"}"#)).await.unwrap();
    let response = bounded(sender.send_request(request)).await.unwrap();
    let body = bounded(response.into_body().collect()).await.unwrap();
    let streamed = parse_stream(body.to_bytes());
    assert_eq!(streamed.messages.len(), 1);
    assert_eq!(
        streamed.end["error"]["code"], "deadline_exceeded",
        "{}",
        streamed.end
    );
    drop(tx);
}

/// Reads the next whole envelope of a response body.
async fn next_envelope(body: &mut Incoming) -> (u8, Bytes) {
    let mut buf = BytesMut::new();
    loop {
        if buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if buf.len() >= 5 + len {
                let flags = buf[0];
                buf.advance(5);
                assert_eq!(buf.len(), len, "one envelope per read here");
                return (flags, buf.split_to(len).freeze());
            }
        }
        let frame = bounded(body.frame()).await.expect("more body").unwrap();
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
        }
    }
}

#[tokio::test]
async fn broken_request_streams_end_with_an_error() {
    let settings = Settings {
        max_request_bytes: 64,
        ..Settings::default()
    };
    let f = Fixture::start(settings).await;
    let proto = [("content-type", "application/connect+proto")];
    let cases: [(Bytes, &str, &str); 4] = [
        (
            envelope(0, &note("cut", 1)).slice(..6),
            "invalid_argument",
            "inside a message",
        ),
        (
            envelope(1, &note("x", 1)),
            "invalid_argument",
            "Connect-Content-Encoding",
        ),
        (envelope(2, b"{}"), "invalid_argument", "end-stream"),
        (
            envelope(0, &[0; 65]),
            "resource_exhausted",
            "limit of 64 bytes",
        ),
    ];
    for (body, code, says) in cases {
        let resp = f.post(COLLECT, &proto, body).await;
        assert_eq!(resp.status, 200);
        let end = parse_stream(resp.body).end;
        assert_eq!(end["error"]["code"], code, "{end}");
        let message = end["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
    }
    let resp = f
        .post(
            COLLECT,
            &[proto[0], ("connect-content-encoding", "snappy")],
            "",
        )
        .await;
    let accepted = resp.header("connect-accept-encoding").map(str::to_string);
    let end = parse_stream(resp.body).end;
    assert_eq!(end["error"]["code"], "unimplemented", "{end}");
    assert_eq!(accepted.as_deref(), Some("zstd, br, gzip, deflate"));
}

#[tokio::test]
async fn overload_is_a_connect_error() {
    let settings = Settings {
        max_concurrent_requests: 1,
        ..Settings::default()
    };
    let f = Fixture::start(settings).await;
    let url = f.url(SAY);
    let held =
        tokio::spawn(async move { send("POST", &url, &[JSON, V1], r#"{"text":"slow"}"#).await });
    bounded(f.arrived.notified()).await;
    let resp = f.post(SAY, &[JSON, V1], "{}").await;
    assert_eq!(connect_error(&resp, 503).0, "unavailable");
    assert_eq!(resp.header("retry-after"), Some("1"));
    let stream = [("content-type", "application/connect+json")];
    let resp = f.post(LISTEN, &stream, envelope(0, b"{}")).await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("content-type"),
        Some("application/connect+json")
    );
    assert_eq!(parse_stream(resp.body).end["error"]["code"], "unavailable");
    held.abort();
}

#[tokio::test]
async fn metrics_label_connect_calls() {
    let f = Fixture::new().await;
    let resp = f.post(SAY, &[JSON, V1], "{}").await;
    assert_eq!(resp.status, 200);
    let metrics = get(&f.url("/metrics")).await;
    let text = String::from_utf8_lossy(&metrics.body);
    let line = text
        .lines()
        .find(|l| l.contains("protocol=\"connect\"") && l.contains(SAY))
        .unwrap_or_else(|| panic!("no connect line in\n{text}"));
    assert!(line.contains("http_response_status_code=\"200\""), "{line}");
}

#[tokio::test]
async fn cors_allows_connect_headers() {
    let settings = Settings {
        cors: CorsPolicy::from_origins(&["https://app.example".to_string()]).unwrap(),
        ..Settings::default()
    };
    let f = Fixture::start(settings).await;
    let asked = "content-type, connect-protocol-version, connect-timeout-ms";
    let resp = send(
        "OPTIONS",
        &f.url(SAY),
        &[
            ("origin", "https://app.example"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", asked),
        ],
        Bytes::new(),
    )
    .await;
    assert_eq!(resp.status, 204);
    assert_eq!(resp.header("access-control-allow-headers"), Some(asked));
    let resp = f
        .post(SAY, &[JSON, V1, ("origin", "https://app.example")], "{}")
        .await;
    assert_eq!(resp.status, 200);
    let exposed = resp.header("access-control-expose-headers").unwrap();
    assert!(exposed.contains("connect-content-encoding"), "{exposed}");
}

// === compression ===

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    w.write_all(data).unwrap();
    w.finish().unwrap()
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// A note large enough to be worth compressing.
fn long_text() -> String {
    "all work and no play ".repeat(100)
}

#[tokio::test]
async fn unary_requests_and_answers_are_compressed_both_ways() {
    let f = Fixture::new().await;
    let body = serde_json::to_vec(&json!({"text": long_text()})).unwrap();
    let headers = [
        JSON,
        V1,
        ("content-encoding", "gzip"),
        ("accept-encoding", "gzip"),
    ];
    let resp = f.post(SAY, &headers, gzip(&body)).await;
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(resp.header("content-encoding"), Some("gzip"));
    let answer: serde_json::Value = serde_json::from_slice(&gunzip(&resp.body)).unwrap();
    assert_eq!(answer["text"], long_text());

    let resp = f
        .post(SAY, &[JSON, V1, ("content-encoding", "gzip")], "not gzip")
        .await;
    assert_eq!(connect_error(&resp, 400).0, "invalid_argument");

    let message = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(gzip(&note("g", 3)));
    let url = f.url(&format!(
        "{PEEK}?connect=v1&encoding=proto&base64=1&compression=gzip&message={message}"
    ));
    let resp = get(&url).await;
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(resp.body, note("g", 3));
}

#[tokio::test]
async fn stream_messages_are_compressed_each() {
    let f = Fixture::new().await;
    let mut body = BytesMut::new();
    body.extend_from_slice(&envelope(1, &gzip(&note(&long_text(), 0))));
    body.extend_from_slice(&envelope(0, &note("plain", 0)));
    let headers = [
        ("content-type", "application/connect+proto"),
        ("connect-content-encoding", "gzip"),
    ];
    let resp = f.post(COLLECT, &headers, body.freeze()).await;
    let streamed = parse_stream(resp.body);
    assert_eq!(
        streamed.messages,
        [note("collected", 2)],
        "{}",
        streamed.end
    );

    let request = envelope(0, &note(&long_text(), 2));
    let headers = [
        ("content-type", "application/connect+proto"),
        ("connect-accept-encoding", "gzip"),
    ];
    let resp = f.post(LISTEN, &headers, request).await;
    assert_eq!(resp.header("connect-content-encoding"), Some("gzip"));
    // The ticks are small: sent as they are, unflagged, in a compressed stream.
    let streamed = parse_stream(resp.body);
    assert_eq!(streamed.messages, [note("tick", 1), note("tick", 2)]);
}

/// A gRPC upstream that answers every call with one message compressed with gzip (flag 1,
/// `grpc-encoding: gzip`) and OK.
async fn gzip_upstream(message: &[u8]) -> (String, tokio::sync::oneshot::Sender<()>) {
    let payload = Bytes::from(gzip(message));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                accepted = listener.accept() => accepted.unwrap(),
                _ = &mut stopped => return,
            };
            let payload = payload.clone();
            let service = hyper::service::service_fn(move |_request: Request<Incoming>| {
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", "0".parse().unwrap());
                let frames = vec![
                    Ok::<_, Infallible>(Frame::data(envelope(1, &payload))),
                    Ok(Frame::trailers(trailers)),
                ];
                let mut response = hyper::Response::new(StreamBody::new(stream::iter(frames)));
                let headers = response.headers_mut();
                headers.insert("content-type", "application/grpc".parse().unwrap());
                headers.insert("grpc-encoding", "gzip".parse().unwrap());
                async move { Ok::<_, Infallible>(response) }
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service),
            );
        }
    });
    (url, stop)
}

#[tokio::test]
async fn upstream_compression_is_passed_on_when_the_client_accepts_it() {
    let message = note(&long_text(), 1);
    let (url, _stop) = gzip_upstream(&message).await;
    let gw = start_gateway(sources(), &url, Settings::default()).await;
    let compressed = Bytes::from(gzip(&message));

    let headers = [PROTO, V1, ("accept-encoding", "gzip")];
    let resp = send("POST", &format!("{}{SAY}", gw.base), &headers, note("x", 0)).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-encoding"), Some("gzip"));
    assert_eq!(
        resp.body, compressed,
        "the upstream's bytes, not compressed again"
    );

    let resp = send("POST", &format!("{}{SAY}", gw.base), &[JSON, V1], "{}").await;
    assert_eq!(resp.status, 200);
    assert!(resp.header("content-encoding").is_none());
    assert_eq!(resp.json()["text"], long_text());

    let headers = [
        ("content-type", "application/connect+proto"),
        ("connect-accept-encoding", "gzip"),
    ];
    let url = format!("{}{LISTEN}", gw.base);
    let resp = send("POST", &url, &headers, envelope(0, &note("x", 0))).await;
    let body = resp.body.clone();
    assert_eq!(&body[..1], &[1], "flagged compressed");
    assert_eq!(parse_stream_compressed(body), compressed);
}

/// The payload of the first (compressed) message of a stream.
fn parse_stream_compressed(mut body: Bytes) -> Bytes {
    assert_eq!(body.get_u8(), 1);
    let len = body.get_u32() as usize;
    body.split_to(len)
}
