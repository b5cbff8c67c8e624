//! gRPC-Web through the gateway, as a browser sends it (HTTP/1.1, hand-built frames), binary
//! and base64 text, unary and server streaming, with the trailers decoded from the final
//! `0x80` frame; and CORS: preflights and response headers with `--cors-allow-origin`, none
//! without it.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use crate::support::*;
use base64::Engine;
use bytes::{Buf, Bytes};
use futures_util::stream;
use http::Request;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper_util::rt::TokioIo;
use prost_reflect::DescriptorPool;
use protogate::demo::backend::{self, Call, Handlers, MessageStream, Reply, StreamCall};
use protogate::server::{CorsPolicy, Settings};
use serde_json::json;
use tokio::net::TcpStream;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::Status;

const SAY: &str = "/testapi.v1.Relay/Say";
const LISTEN: &str = "/testapi.v1.Relay/Listen";
const COLLECT: &str = "/testapi.v1.Relay/Collect";
const NOTE: &str = "testapi.v1.Note";
const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const ORIGIN: &str = "https://app.example";

/// What the backend saw: every call's path, and how each `Collect` request stream ended.
#[derive(Default)]
struct Seen {
    calls: Mutex<Vec<String>>,
    collected: Mutex<Vec<Result<usize, Status>>>,
}

/// `Say` echoes with `x-answer: yes` (or fails trailers-only on "fail"); `Listen` streams `n`
/// notes; `Collect` counts the notes it gets; every other method (the REST routes) answers an
/// empty message.
fn handlers(pool: &DescriptorPool, seen: &Arc<Seen>) -> Handlers {
    let (pool_u, seen_u) = (pool.clone(), seen.clone());
    let unary = backend::handler(move |call: Call| {
        seen_u.calls.lock().unwrap().push(call.path.clone());
        let pool = pool_u.clone();
        async move { unary(&pool, call) }
    });
    let (pool_s, seen_s) = (pool.clone(), seen.clone());
    let streaming = backend::stream_handler(move |call: StreamCall| {
        seen_s.calls.lock().unwrap().push(call.path.clone());
        let (pool, seen) = (pool_s.clone(), seen_s.clone());
        async move {
            let messages = match call.path.as_str() {
                COLLECT => collect(pool, seen, call).await?,
                _ => listen(pool, call).await?,
            };
            Ok((MetadataMap::new(), messages))
        }
    });
    Handlers {
        unary,
        streaming: Some((vec![LISTEN.to_string(), COLLECT.to_string()], streaming)),
    }
}

/// Reads the whole request stream and answers how many notes it held.
async fn collect(
    pool: DescriptorPool,
    seen: Arc<Seen>,
    mut call: StreamCall,
) -> Result<MessageStream, Status> {
    let mut count = 0;
    let ended = loop {
        match call.messages.message().await {
            Ok(Some(_)) => count += 1,
            Ok(None) => break Ok(count),
            Err(status) => break Err(status),
        }
    };
    seen.collected.lock().unwrap().push(ended.clone());
    let n = ended? as i32;
    let reply = encode_json(&pool, NOTE, json!({"text": "collected", "n": n}));
    Ok(Box::pin(stream::iter([Ok(reply)])))
}

fn unary(pool: &DescriptorPool, call: Call) -> Result<Reply, Status> {
    if call.path != SAY {
        return Ok(Reply::default());
    }
    if decode_json(pool, NOTE, &call.message)["text"] == "fail" {
        return Err(Status::not_found("no such note"));
    }
    let mut metadata = MetadataMap::new();
    metadata.insert("x-answer", MetadataValue::from_static("yes"));
    Ok(Reply {
        message: call.message,
        metadata,
    })
}

async fn listen(pool: DescriptorPool, mut call: StreamCall) -> Result<MessageStream, Status> {
    let request = call.messages.message().await?.unwrap_or_default();
    let n = decode_json(&pool, NOTE, &request)["n"]
        .as_i64()
        .unwrap_or(0) as i32;
    let notes = (1..=n).map(move |i| Ok(encode_json(&pool, NOTE, json!({"text": "tick", "n": i}))));
    Ok(Box::pin(stream::iter(notes)))
}

struct Fixture {
    pool: DescriptorPool,
    seen: Arc<Seen>,
    gw: Gw,
    _backend: Served,
}

impl Fixture {
    async fn start(settings: Settings) -> Fixture {
        let pool = protogate::descriptor::load(&relay_sources()).unwrap();
        let seen = Arc::new(Seen::default());
        let backend = serve_handlers(handlers(&pool, &seen)).await;
        let gw = start_gateway(relay_sources(), &backend.url, settings).await;
        Fixture {
            pool,
            seen,
            gw,
            _backend: backend,
        }
    }

    fn calls(&self) -> Vec<String> {
        self.seen.calls.lock().unwrap().clone()
    }

    async fn with_cors(origins: &[&str]) -> Fixture {
        let origins: Vec<String> = origins.iter().map(|o| o.to_string()).collect();
        let settings = Settings {
            cors: CorsPolicy::from_origins(&origins).unwrap(),
            ..Settings::default()
        };
        Fixture::start(settings).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.gw.base, path)
    }

    /// One gRPC frame holding the note.
    fn framed_note(&self, text: &str, n: i32) -> Bytes {
        let note = encode_json(&self.pool, NOTE, json!({"text": text, "n": n}));
        protogate::grpc::frame::encode_raw(&note)
    }

    fn notes(&self, messages: &[Bytes]) -> Vec<serde_json::Value> {
        messages
            .iter()
            .map(|m| decode_json(&self.pool, NOTE, m))
            .collect()
    }

    async fn grpc_web(&self, path: &str, content_type: &str, body: Bytes) -> Resp {
        let headers = [
            ("content-type", content_type),
            ("x-grpc-web", "1"),
            ("origin", ORIGIN),
        ];
        send("POST", &self.url(path), &headers, body).await
    }
}

/// A gRPC-Web response body split into its messages and its trailers frame (flag 0x80).
#[derive(Debug)]
struct WebBody {
    messages: Vec<Bytes>,
    trailers: Option<String>,
}

fn parse_web_body(mut body: Bytes) -> WebBody {
    let mut parsed = WebBody {
        messages: Vec::new(),
        trailers: None,
    };
    while body.has_remaining() {
        assert!(parsed.trailers.is_none(), "data after the trailers frame");
        assert!(body.len() >= 5, "truncated frame header");
        let flag = body.get_u8();
        let len = body.get_u32() as usize;
        let payload = body.split_to(len);
        match flag {
            0 => parsed.messages.push(payload),
            0x80 => parsed.trailers = Some(String::from_utf8(payload.to_vec()).unwrap()),
            other => panic!("unexpected frame flag {other:#x}"),
        }
    }
    parsed
}

/// Decodes a text-mode body. Each chunk is encoded on its own, so padding may appear inside
/// the stream; every 4-character group still decodes alone.
fn decode_text(body: &[u8]) -> Bytes {
    assert_eq!(body.len() % 4, 0, "base64 body length");
    let mut out = Vec::new();
    for group in body.chunks(4) {
        out.extend(BASE64.decode(group).expect("response is base64"));
    }
    Bytes::from(out)
}

fn trailer_lines(trailers: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = trailers.split("\r\n").filter(|l| !l.is_empty()).collect();
    lines.sort_unstable();
    lines
}

/// Sends a POST whose body arrives in the given chunks (chunked transfer encoding).
async fn send_chunks(url: &str, headers: &[(&str, &str)], chunks: Vec<Bytes>) -> Resp {
    bounded(async {
        let uri: http::Uri = url.parse().unwrap();
        let authority = uri.authority().unwrap().clone();
        let stream = TcpStream::connect(authority.as_str()).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let frames = chunks
            .into_iter()
            .map(|c| Ok::<_, Infallible>(Frame::data(c)));
        let mut request = Request::post(uri.path()).header("host", authority.as_str());
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let body = StreamBody::new(stream::iter(frames));
        let response = sender
            .send_request(request.body(body).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        Resp {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    })
    .await
}

#[tokio::test]
async fn binary_unary_call() {
    let f = Fixture::start(Settings::default()).await;
    let resp = f
        .grpc_web(SAY, "application/grpc-web+proto", f.framed_note("hi", 1))
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("content-type"),
        Some("application/grpc-web+proto")
    );
    assert_eq!(resp.header("x-answer"), Some("yes"));
    let body = parse_web_body(resp.body);
    assert_eq!(f.notes(&body.messages), [json!({"text": "hi", "n": 1})]);
    assert_eq!(trailer_lines(&body.trailers.unwrap()), ["grpc-status:0"]);
}

#[tokio::test]
async fn text_unary_call_with_chunks_not_aligned_to_base64_groups() {
    let f = Fixture::start(Settings::default()).await;
    let text = Bytes::from(BASE64.encode(f.framed_note("über", 2)));
    let chunks = vec![
        text.slice(..3),
        text.slice(3..8),
        text.slice(8..9),
        text.slice(9..),
    ];
    let headers = [
        ("content-type", "application/grpc-web-text"),
        ("x-grpc-web", "1"),
    ];
    let resp = send_chunks(&f.url(SAY), &headers, chunks).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        resp.header("content-type"),
        Some("application/grpc-web-text+proto")
    );
    let body = parse_web_body(decode_text(&resp.body));
    assert_eq!(f.notes(&body.messages), [json!({"text": "über", "n": 2})]);
    assert_eq!(trailer_lines(&body.trailers.unwrap()), ["grpc-status:0"]);
}

#[tokio::test]
async fn binary_server_streaming_ends_with_the_trailers_frame() {
    let f = Fixture::start(Settings::default()).await;
    let resp = f
        .grpc_web(LISTEN, "application/grpc-web", f.framed_note("", 3))
        .await;
    assert_eq!(resp.status, 200);
    let body = parse_web_body(resp.body);
    let expected: Vec<_> = (1..=3).map(|n| json!({"text": "tick", "n": n})).collect();
    assert_eq!(f.notes(&body.messages), expected);
    assert_eq!(trailer_lines(&body.trailers.unwrap()), ["grpc-status:0"]);
}

#[tokio::test]
async fn text_server_streaming_is_base64_throughout() {
    let f = Fixture::start(Settings::default()).await;
    let body = Bytes::from(BASE64.encode(f.framed_note("", 2)));
    let resp = f
        .grpc_web(LISTEN, "application/grpc-web-text+proto", body)
        .await;
    assert_eq!(resp.status, 200);
    assert!(resp
        .body
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(b)));
    let body = parse_web_body(decode_text(&resp.body));
    assert_eq!(body.messages.len(), 2, "{resp:?} {body:?}");
    assert_eq!(trailer_lines(&body.trailers.unwrap()), ["grpc-status:0"]);
}

#[tokio::test]
async fn an_error_comes_back_as_grpc_status() {
    let f = Fixture::start(Settings::default()).await;
    let resp = f
        .grpc_web(SAY, "application/grpc-web+proto", f.framed_note("fail", 0))
        .await;
    assert_eq!(resp.status, 200);
    // tonic answers an immediate error trailers-only: the status is in the headers.
    assert_eq!(resp.header("grpc-status"), Some("5"));
    assert_eq!(resp.header("grpc-message"), Some("no%20such%20note"));

    let resp = f
        .grpc_web("/nope.Svc/Call", "application/grpc-web+proto", Bytes::new())
        .await;
    assert_eq!(resp.header("grpc-status"), Some("12"));
}

/// The status of a gRPC-Web answer, from its headers (trailers-only) or its trailers frame:
/// the code and the decoded message.
fn web_status(resp: &Resp, text: bool) -> (String, String) {
    if let Some(code) = resp.header("grpc-status") {
        let message = resp.header("grpc-message").unwrap_or_default();
        let message = protogate::grpc::status::decode_message(message.as_bytes());
        return (code.to_string(), message);
    }
    let body = match text {
        true => decode_text(&resp.body),
        false => resp.body.clone(),
    };
    let trailers = parse_web_body(body).trailers.expect("a trailers frame");
    let field = |name: &str| {
        trailer_lines(&trailers)
            .iter()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_default()
            .to_string()
    };
    let message = protogate::grpc::status::decode_message(field("grpc-message:").as_bytes());
    (field("grpc-status:"), message)
}

#[tokio::test]
async fn a_text_body_that_is_not_base64_is_invalid_argument_and_calls_no_upstream() {
    let f = Fixture::start(Settings::default()).await;
    let good = BASE64.encode(f.framed_note("hi", 1));
    for (content_type, body, at) in [
        (
            "application/grpc-web-text",
            "AAAA!AAA".to_string(),
            "at byte 4".to_string(),
        ),
        (
            "application/grpc-web-text+proto",
            format!("{good}*"),
            format!("at byte {}", good.len()),
        ),
        // A body that ends inside a 4-character group.
        (
            "application/grpc-web-text",
            format!("{good}AA"),
            format!("at byte {}", good.len() + 2),
        ),
    ] {
        let resp = f.grpc_web(SAY, content_type, Bytes::from(body)).await;
        assert_eq!(resp.status, 200, "{resp:?}");
        assert_eq!(
            resp.header("content-type"),
            Some("application/grpc-web-text+proto")
        );
        let (code, message) = web_status(&resp, true);
        assert_eq!(code, "3", "{message}");
        assert!(
            message.starts_with("invalid base64 in the grpc-web-text request body ")
                && message.contains(&at),
            "{message}"
        );
        assert!(!message.contains("127.0.0.1"), "{message}");
    }
    assert!(f.calls().is_empty(), "{:?}", f.calls());

    let resp = f
        .grpc_web(SAY, "application/grpc-web-text", Bytes::from(good))
        .await;
    assert_eq!(web_status(&resp, true), ("0".to_string(), String::new()));
}

#[tokio::test]
async fn a_text_body_that_stops_being_base64_midway_cancels_the_call() {
    let f = Fixture::start(Settings::default()).await;
    let first = Bytes::from(BASE64.encode(f.framed_note("one", 1)));
    let at = first.len() + 2;
    let headers = [
        ("content-type", "application/grpc-web-text"),
        ("x-grpc-web", "1"),
    ];
    let chunks = vec![first, Bytes::from_static(b"AA!A")];
    let resp = send_chunks(&f.url(COLLECT), &headers, chunks).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let (code, message) = web_status(&resp, true);
    assert_eq!(code, "3", "{message}");
    assert_eq!(
        message,
        format!("invalid base64 in the grpc-web-text request body at byte {at}")
    );
    // The upstream call had started with the first note; it was cut, not completed.
    assert_eq!(f.calls(), [COLLECT]);
    let collected = f.seen.collected.lock().unwrap().clone();
    assert!(matches!(collected.as_slice(), [Err(_)]), "{collected:?}");
}

// CORS.

fn preflight_headers<'a>(origin: &'a str, method: &'a str) -> [(&'a str, &'a str); 3] {
    [
        ("origin", origin),
        ("access-control-request-method", method),
        (
            "access-control-request-headers",
            "content-type,x-grpc-web,x-user-agent,grpc-timeout",
        ),
    ]
}

#[tokio::test]
async fn preflights_are_answered_for_grpc_web_and_rest() {
    let f = Fixture::with_cors(&[ORIGIN, "https://other.example"]).await;
    for (path, method) in [(SAY, "POST"), ("/v1/shelves/s1/books", "GET")] {
        let headers = preflight_headers(ORIGIN, method);
        let resp = send("OPTIONS", &f.url(path), &headers, Bytes::new()).await;
        assert_eq!(resp.status, 204, "{path}");
        assert_eq!(resp.header("access-control-allow-origin"), Some(ORIGIN));
        assert_eq!(resp.header("access-control-allow-methods"), Some(method));
        assert_eq!(
            resp.header("access-control-allow-headers"),
            Some("content-type,x-grpc-web,x-user-agent,grpc-timeout")
        );
        assert!(resp.header("access-control-max-age").is_some());
        assert!(resp.header("vary").unwrap().contains("origin"));
    }
}

#[tokio::test]
async fn responses_to_allowed_origins_carry_cors_headers() {
    let f = Fixture::with_cors(&[ORIGIN]).await;
    let resp = f
        .grpc_web(SAY, "application/grpc-web+proto", f.framed_note("hi", 1))
        .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("access-control-allow-origin"), Some(ORIGIN));
    let exposed = resp.header("access-control-expose-headers").unwrap();
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        assert!(exposed.contains(name), "{exposed}");
    }
    assert_eq!(parse_web_body(resp.body).messages.len(), 1);

    let resp = send(
        "GET",
        &f.url("/v1/shelves/s1/books"),
        &[("origin", ORIGIN)],
        Bytes::new(),
    )
    .await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("access-control-allow-origin"), Some(ORIGIN));
    // Beside `accept-encoding`, which REST responses that could be compressed carry too.
    let vary: Vec<&str> = resp
        .headers
        .get_all("vary")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(vary.contains(&"origin"), "{vary:?}");
}

#[tokio::test]
async fn other_origins_get_no_access() {
    let f = Fixture::with_cors(&[ORIGIN]).await;
    let headers = preflight_headers("https://evil.example", "POST");
    let resp = send("OPTIONS", &f.url(SAY), &headers, Bytes::new()).await;
    assert_eq!(resp.status, 403);
    assert!(resp.header("access-control-allow-origin").is_none());

    let headers = [("origin", "https://evil.example")];
    let resp = send(
        "GET",
        &f.url("/v1/shelves/s1/books"),
        &headers,
        Bytes::new(),
    )
    .await;
    assert_eq!(resp.status, 200);
    assert!(resp.header("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn any_origin_is_answered_with_a_star() {
    let f = Fixture::with_cors(&["*"]).await;
    let headers = preflight_headers("https://anyone.example", "PATCH");
    let resp = send(
        "OPTIONS",
        &f.url("/v1/shelves/s1/books/b1"),
        &headers,
        Bytes::new(),
    )
    .await;
    assert_eq!(resp.status, 204);
    assert_eq!(resp.header("access-control-allow-origin"), Some("*"));
}

#[tokio::test]
async fn without_the_flag_there_are_no_cors_headers() {
    let f = Fixture::start(Settings::default()).await;
    let headers = preflight_headers(ORIGIN, "GET");
    let resp = send(
        "OPTIONS",
        &f.url("/v1/shelves/s1/books"),
        &headers,
        Bytes::new(),
    )
    .await;
    assert_ne!(resp.status, 204);
    let resp2 = f
        .grpc_web(SAY, "application/grpc-web+proto", f.framed_note("hi", 1))
        .await;
    for r in [&resp, &resp2] {
        let cors: Vec<_> = r
            .headers
            .keys()
            .filter(|k| k.as_str().starts_with("access-control-"))
            .collect();
        assert!(cors.is_empty(), "{cors:?}");
    }
}

#[test]
fn the_flag_reaches_the_settings() {
    use clap::Parser;
    let cli = protogate::config::Cli::try_parse_from([
        "protogate",
        "serve",
        "--cors-allow-origin",
        "https://a.example",
        "--cors-allow-origin",
        "https://b.example:8443",
    ])
    .unwrap();
    let protogate::config::Command::Serve(args) = cli.command else {
        panic!("not serve");
    };
    let cors = args.serving.settings().unwrap().cors.unwrap();
    assert_eq!(
        cors,
        CorsPolicy::Origins(vec![
            "https://a.example".parse().unwrap(),
            "https://b.example:8443".parse().unwrap()
        ])
    );
    let bad = protogate::config::Cli::try_parse_from([
        "protogate",
        "serve",
        "--cors-allow-origin",
        "a.example/path",
    ])
    .unwrap();
    let protogate::config::Command::Serve(args) = bad.command else {
        panic!("not serve");
    };
    assert!(args.serving.settings().is_err());
}
