//! Content codings end to end: REST request bodies in every coding (a bomb is 413, an unknown
//! coding 415), REST responses and streams compressed as `Accept-Encoding` asks, compressed
//! upstream gRPC messages decoded for REST and passed through untouched for gRPC clients.
//! Bodies are decoded here with the coding crates' own decoders, not the gateway's.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream;
use http::{HeaderMap, HeaderValue};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::rt::{TokioExecutor, TokioIo};
use protogate::compression::Encoding;
use protogate::demo::backend::{self, Handlers, MessageStream, Reply, StreamCall};
use protogate::descriptor::Sources;
use protogate::server::Settings;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::support::*;

// === codings, with the crates' own encoders and decoders ===

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    w.write_all(data).unwrap();
    w.finish().unwrap()
}

fn encode(encoding: Encoding, data: &[u8]) -> Vec<u8> {
    match encoding {
        Encoding::Identity => data.to_vec(),
        Encoding::Gzip => gzip(data),
        Encoding::Deflate => {
            let mut w = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            w.write_all(data).unwrap();
            w.finish().unwrap()
        }
        Encoding::Brotli => {
            let mut out = Vec::new();
            let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            w.write_all(data).unwrap();
            drop(w);
            out
        }
        Encoding::Zstd => zstd::encode_all(data, 3).unwrap(),
    }
}

/// What a streaming decoder yields from `wire` so far (the stream may be unfinished).
fn decode_prefix(encoding: Encoding, wire: &[u8]) -> Vec<u8> {
    let mut reader: Box<dyn Read + '_> = match encoding {
        Encoding::Identity => Box::new(wire),
        Encoding::Gzip => Box::new(flate2::read::GzDecoder::new(wire)),
        Encoding::Deflate => Box::new(flate2::read::ZlibDecoder::new(wire)),
        Encoding::Brotli => Box::new(brotli::Decompressor::new(wire, 4096)),
        Encoding::Zstd => Box::new(zstd::stream::read::Decoder::new(wire).unwrap()),
    };
    let (mut out, mut buf) = (Vec::new(), [0u8; 4096]);
    while let Ok(n) = reader.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// A whole body in `encoding`, decoded.
fn decoded(resp: &Resp) -> serde_json::Value {
    let encoding = resp
        .header("content-encoding")
        .map(|t| Encoding::parse(t).unwrap())
        .unwrap_or(Encoding::Identity);
    serde_json::from_slice(&decode_prefix(encoding, &resp.body)).unwrap()
}

// === a unary backend ===

fn book(title: &str) -> Bytes {
    encode_json(
        &library_pool(),
        "testapi.v1.Book",
        json!({"name": "shelves/1/books/2", "title": title}),
    )
}

/// A title that makes the rendered book well over the compression threshold.
fn long_title() -> String {
    "a long title, ".repeat(200)
}

async fn gateway(reply: Bytes, settings: Settings) -> (Backend, Gw) {
    let backend = Backend::start(reply_with(reply)).await;
    let gw = start_gateway(library_sources(), &backend.url, settings).await;
    (backend, gw)
}

async fn get_book(gw: &Gw, accept_encoding: &str) -> Resp {
    let url = format!("{}/v1/shelves/1/books/2", gw.base);
    send("GET", &url, &[("accept-encoding", accept_encoding)], "").await
}

// === requests ===

#[tokio::test]
async fn request_bodies_in_every_coding_are_decoded() {
    let (backend, gw) = gateway(book("t"), Settings::default()).await;
    let json = serde_json::to_vec(&json!({"title": "compressed", "pageCount": 7})).unwrap();
    let url = format!("{}/v1/shelves/9/books", gw.base);
    for (token, encoding) in [
        ("gzip", Encoding::Gzip),
        ("br", Encoding::Brotli),
        ("zstd", Encoding::Zstd),
        ("deflate", Encoding::Deflate),
        ("identity", Encoding::Identity),
    ] {
        let body = encode(encoding, &json);
        let resp = send("POST", &url, &[("content-encoding", token)], body).await;
        assert_eq!(
            resp.status,
            200,
            "{token}: {}",
            String::from_utf8_lossy(&resp.body)
        );
    }
    for call in backend.calls() {
        let request = decode_json(
            &library_pool(),
            "testapi.v1.CreateBookRequest",
            &call.message,
        );
        assert_eq!(request["book"]["title"], "compressed");
        assert_eq!(request["shelf"], "9");
    }
    assert_eq!(backend.calls().len(), 5);
}

#[tokio::test]
async fn an_unknown_request_coding_is_415_naming_the_accepted_ones() {
    let (backend, gw) = gateway(book("t"), Settings::default()).await;
    let url = format!("{}/v1/shelves/9/books", gw.base);
    let resp = send("POST", &url, &[("content-encoding", "snappy")], "{}").await;
    assert_eq!(resp.status, 415);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(
        resp.header("accept-encoding"),
        Some("zstd, br, gzip, deflate, identity")
    );
    let status = resp.json();
    assert_eq!(status["code"], 12);
    assert!(
        status["message"].as_str().unwrap().contains("snappy"),
        "{status}"
    );
    assert!(backend.calls().is_empty());
}

#[tokio::test]
async fn a_corrupt_request_body_is_400() {
    let (_backend, gw) = gateway(book("t"), Settings::default()).await;
    let url = format!("{}/v1/shelves/9/books", gw.base);
    let resp = send(
        "POST",
        &url,
        &[("content-encoding", "gzip")],
        "{\"not\": \"gzip\"}",
    )
    .await;
    assert_eq!(resp.status, 400);
    assert_eq!(resp.json()["code"], 3);
}

#[tokio::test]
async fn a_gzip_bomb_is_413_at_the_decoded_limit() {
    // 256 gzip members of 4 MiB of zeros each: about 1 MB that expands to 1 GiB.
    let member = gzip(&vec![0u8; 4 << 20]);
    let bomb: Vec<u8> = member
        .iter()
        .copied()
        .cycle()
        .take(member.len() * 256)
        .collect();
    assert!(bomb.len() < 2 << 20, "{}", bomb.len());
    let settings = Settings {
        max_request_bytes: 2 << 20,
        ..Settings::default()
    };
    let (backend, gw) = gateway(book("t"), settings).await;
    let url = format!("{}/v1/shelves/9/books", gw.base);
    let resp = send("POST", &url, &[("content-encoding", "gzip")], bomb).await;
    assert_eq!(resp.status, 413);
    assert_eq!(resp.json()["code"], 8);
    assert!(backend.calls().is_empty());
}

// === unary responses ===

#[tokio::test]
async fn responses_come_in_the_coding_asked_for() {
    let (_backend, gw) = gateway(book(&long_title()), Settings::default()).await;
    for (accept, expected) in [
        ("gzip", "gzip"),
        ("br", "br"),
        ("zstd", "zstd"),
        ("gzip, deflate, br, zstd", "zstd"),
        ("gzip;q=0.5, br;q=0.9", "br"),
    ] {
        let resp = get_book(&gw, accept).await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("content-encoding"), Some(expected), "{accept}");
        assert_eq!(resp.header("vary"), Some("accept-encoding"));
        assert_eq!(decoded(&resp)["title"], long_title(), "{accept}");
        assert!(
            resp.body.len() < 1000,
            "{accept}: {} bytes",
            resp.body.len()
        );
    }
}

#[tokio::test]
async fn no_coding_without_an_acceptable_one() {
    let (_backend, gw) = gateway(book(&long_title()), Settings::default()).await;
    for accept in ["*;q=0", "identity", "deflate", "compress"] {
        let resp = get_book(&gw, accept).await;
        assert_eq!(resp.header("content-encoding"), None, "{accept}");
        assert_eq!(resp.header("vary"), Some("accept-encoding"));
        assert_eq!(resp.json()["title"], long_title());
    }
    let plain = get(&format!("{}/v1/shelves/1/books/2", gw.base)).await;
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.json()["title"], long_title());
}

#[tokio::test]
async fn small_responses_are_not_compressed() {
    let (_backend, gw) = gateway(book("short"), Settings::default()).await;
    let resp = get_book(&gw, "gzip").await;
    assert_eq!(resp.header("content-encoding"), None);
    assert_eq!(resp.header("vary"), Some("accept-encoding"));
    assert_eq!(resp.json()["title"], "short");
}

#[tokio::test]
async fn the_flag_chooses_what_is_offered() {
    let gzip_only = serving_settings("gzip");
    assert_eq!(gzip_only.response_compression, vec![Encoding::Gzip]);
    let (_b1, gw) = gateway(book(&long_title()), gzip_only).await;
    let resp = get_book(&gw, "zstd, br, gzip").await;
    assert_eq!(resp.header("content-encoding"), Some("gzip"));
    let resp = get_book(&gw, "gzip;q=0, br").await;
    assert_eq!(resp.header("content-encoding"), None);

    let none = serving_settings("none");
    assert!(none.response_compression.is_empty());
    let (_b2, gw) = gateway(book(&long_title()), none).await;
    let resp = get_book(&gw, "gzip, br, zstd").await;
    assert_eq!(resp.header("content-encoding"), None);
    assert_eq!(resp.header("vary"), None);
    assert_eq!(resp.json()["title"], long_title());
}

/// The settings of `serve --response-compression LIST`, parsed as the binary parses them.
fn serving_settings(list: &str) -> Settings {
    use clap::Parser;
    use protogate::config::{Cli, Command};
    let args = ["protogate", "serve", "--response-compression", list];
    match Cli::try_parse_from(args).unwrap().command {
        Command::Serve(serve) => serve.serving.settings().unwrap(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn http_body_responses_are_compressed_unless_already_compressed() {
    let pool = library_pool();
    let body = |content_type: &str| {
        let data = base64(long_title().as_bytes());
        encode_json(
            &pool,
            "google.api.HttpBody",
            json!({"content_type": content_type, "data": data}),
        )
    };
    let (_b1, gw) = gateway(body("text/csv"), Settings::default()).await;
    let url = format!("{}/v1/raw/x", gw.base);
    let resp = send("GET", &url, &[("accept-encoding", "gzip")], "").await;
    assert_eq!(resp.header("content-type"), Some("text/csv"));
    assert_eq!(resp.header("content-encoding"), Some("gzip"));
    assert_eq!(
        decode_prefix(Encoding::Gzip, &resp.body),
        long_title().as_bytes()
    );

    let (_b2, gw) = gateway(body("image/png"), Settings::default()).await;
    let url = format!("{}/v1/raw/x", gw.base);
    let resp = send("GET", &url, &[("accept-encoding", "gzip")], "").await;
    assert_eq!(resp.header("content-encoding"), None);
    assert_eq!(resp.header("vary"), None);
    assert_eq!(resp.body, long_title().as_bytes());
}

fn base64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

// === streams ===

fn stream_sources() -> Sources {
    Sources {
        protos: vec!["testapi/v1/rest_streams.proto".into()],
        includes: vec![repo_path("tests/protos")],
        ..Sources::default()
    }
}

/// Ticks and Download (`HttpBody` chunks of the type the request's name gives): two
/// messages, then the stream stays open until the call is cancelled. Upload: counts the
/// messages of a client stream.
fn stream_handlers() -> Handlers {
    let pool = protogate::descriptor::load(&stream_sources()).unwrap();
    let paths = ["Ticks", "Upload", "Download"].map(|m| format!("/testapi.v1.Streams/{m}"));
    let streaming = backend::stream_handler(move |mut call: StreamCall| {
        let pool = pool.clone();
        async move {
            let (mut count, mut name) = (0, String::new());
            let upload = call.path.ends_with("Upload");
            while let Some(m) = call.messages.message().await? {
                count += 1;
                if !upload {
                    let request = decode_json(&pool, "testapi.v1.TickRequest", &m);
                    let text = request["name"].as_str().unwrap_or_default();
                    name = text.replace('_', "/");
                }
            }
            let replies: MessageStream = match call.path.rsplit('/').next().unwrap() {
                "Upload" => {
                    let summary = encode_json(&pool, "testapi.v1.Summary", json!({"count": count}));
                    Box::pin(stream::iter([Ok(summary)]))
                }
                "Download" => {
                    let chunk = |n: i32| {
                        let data = base64(format!("chunk {n}\n").repeat(20).as_bytes());
                        let body = json!({"content_type": name, "data": data});
                        Ok(encode_json(&pool, "google.api.HttpBody", body))
                    };
                    let chunks = stream::iter([chunk(0), chunk(1)]);
                    Box::pin(futures_util::StreamExt::chain(chunks, stream::pending()))
                }
                _ => {
                    let tick = |n: i32| {
                        let tick = json!({"name": "a", "n": n, "text": "tick ".repeat(10)});
                        Ok(encode_json(&pool, "testapi.v1.Tick", tick))
                    };
                    let ticks = stream::iter([tick(0), tick(1)]);
                    Box::pin(futures_util::StreamExt::chain(ticks, stream::pending()))
                }
            };
            Ok((Default::default(), replies))
        }
    });
    Handlers {
        unary: backend::handler(|_| async { Ok(Reply::default()) }),
        streaming: Some((paths.to_vec(), streaming)),
    }
}

/// Opens a streaming GET and reads its body until the decoded text holds `parts` pieces
/// ending in `separator`, while the stream is still open.
async fn read_open_stream(
    base: &str,
    path: &str,
    headers: &[(&str, &str)],
    separator: &str,
    parts: usize,
) -> (HeaderMap, String) {
    let addr = base.trim_start_matches("http://");
    let tcp = bounded(tokio::net::TcpStream::connect(addr)).await.unwrap();
    let (mut sender, conn) = bounded(hyper::client::conn::http1::handshake(TokioIo::new(tcp)))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut request = hyper::Request::get(path).header("host", addr);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request.body(Full::new(Bytes::new())).unwrap();
    let response = bounded(sender.send_request(request)).await.unwrap();
    let (head, mut body) = response.into_parts();
    let encoding = head
        .headers
        .get("content-encoding")
        .map(|v| Encoding::parse(v.to_str().unwrap()).unwrap())
        .unwrap_or(Encoding::Identity);
    let mut wire = Vec::new();
    loop {
        let text = String::from_utf8(decode_prefix(encoding, &wire)).unwrap();
        if text.matches(separator).count() >= parts {
            return (head.headers, text);
        }
        let frame = bounded(body.frame())
            .await
            .expect("the stream ended")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            wire.extend_from_slice(&data);
        }
    }
}

#[tokio::test]
async fn stream_messages_arrive_compressed_one_by_one() {
    let served = serve_handlers(stream_handlers()).await;
    let gw = start_gateway(stream_sources(), &served.url, Settings::default()).await;
    for coding in ["gzip", "br", "zstd"] {
        let headers = [("accept-encoding", coding)];
        let (head, text) = read_open_stream(&gw.base, "/v1/ticks/a", &headers, "\n", 2).await;
        assert_eq!(head["content-encoding"], coding);
        assert_eq!(head["vary"], "accept-encoding");
        assert_eq!(head["content-type"], "application/json");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[1]["result"]["n"], 1, "{coding}");

        let sse = [("accept-encoding", coding), ("accept", "text/event-stream")];
        let (head, text) = read_open_stream(&gw.base, "/v1/ticks/a", &sse, "\n\n", 2).await;
        assert_eq!(head["content-encoding"], coding);
        assert_eq!(head["content-type"], "text/event-stream");
        assert!(text.starts_with("data: {\"name\":\"a\",\"n\":0"), "{text}");
    }
}

#[tokio::test]
async fn http_body_streams_are_compressed_unless_media() {
    let served = serve_handlers(stream_handlers()).await;
    let gw = start_gateway(stream_sources(), &served.url, Settings::default()).await;
    let gzip = [("accept-encoding", "gzip")];
    let (head, text) = read_open_stream(&gw.base, "/v1/download/text_plain", &gzip, "\n", 40).await;
    assert_eq!(head["content-type"], "text/plain");
    assert_eq!(head["content-encoding"], "gzip");
    assert!(text.ends_with("chunk 1\n"), "{text}");
    let (head, _) = read_open_stream(&gw.base, "/v1/download/image_png", &gzip, "\n", 40).await;
    assert_eq!(head["content-type"], "image/png");
    assert!(!head.contains_key("content-encoding"));
}

#[tokio::test]
async fn a_compressed_client_stream_is_decoded_as_it_is_read() {
    let served = serve_handlers(stream_handlers()).await;
    let gw = start_gateway(stream_sources(), &served.url, Settings::default()).await;
    let messages = "{\"name\":\"a\"}\n{\"name\":\"b\"}\n{\"name\":\"c\"}\n".repeat(100);
    for (token, encoding) in [
        ("gzip", Encoding::Gzip),
        ("br", Encoding::Brotli),
        ("zstd", Encoding::Zstd),
    ] {
        let url = format!("{}/v1/upload/x", gw.base);
        let body = encode(encoding, messages.as_bytes());
        let resp = send("POST", &url, &[("content-encoding", token)], body).await;
        assert_eq!(
            resp.status,
            200,
            "{token}: {}",
            String::from_utf8_lossy(&resp.body)
        );
        assert_eq!(resp.json()["count"], 300);
    }
    let url = format!("{}/v1/upload/x", gw.base);
    let resp = send("POST", &url, &[("content-encoding", "gzip")], "not gzip").await;
    assert_eq!(resp.status, 400, "{}", String::from_utf8_lossy(&resp.body));
}

// === compressed upstream messages ===

/// A gRPC server that answers every call with one frame whose compressed flag is `flag`,
/// under `grpc-encoding: encoding` when given, and records the request headers.
struct Upstream {
    url: String,
    wire: Bytes,
    seen: Arc<Mutex<Vec<HeaderMap>>>,
    _stop: oneshot::Sender<()>,
}

async fn upstream(encoding: Option<&'static str>, flag: u8, payload: &[u8]) -> Upstream {
    let mut wire = BytesMut::new();
    wire.put_u8(flag);
    wire.put_u32(payload.len() as u32);
    wire.put_slice(payload);
    let wire = wire.freeze();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (stop, mut stopped) = oneshot::channel::<()>();
    let (answer, record) = (wire.clone(), seen.clone());
    tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                accepted = listener.accept() => accepted.unwrap(),
                _ = &mut stopped => return,
            };
            let (answer, record) = (answer.clone(), record.clone());
            let service = hyper::service::service_fn(move |request: hyper::Request<_>| {
                record.lock().unwrap().push(request.headers().clone());
                let health = request.uri().path().starts_with("/grpc.health");
                let response = grpc_answer(encoding, answer.clone(), health);
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service),
            );
        }
    });
    Upstream {
        url,
        wire,
        seen,
        _stop: stop,
    }
}

type AnswerBody =
    StreamBody<stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::convert::Infallible>>>>;

fn grpc_answer(encoding: Option<&str>, wire: Bytes, health: bool) -> hyper::Response<AnswerBody> {
    let mut trailers = HeaderMap::new();
    trailers.insert(
        "grpc-status",
        HeaderValue::from_static(if health { "12" } else { "0" }),
    );
    let frames = match health {
        true => vec![Ok(Frame::trailers(trailers))],
        false => vec![Ok(Frame::data(wire)), Ok(Frame::trailers(trailers))],
    };
    let mut response = hyper::Response::new(StreamBody::new(stream::iter(frames)));
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/grpc"));
    if let Some(e) = encoding {
        headers.insert("grpc-encoding", HeaderValue::from_str(e).unwrap());
    }
    response
}

#[tokio::test]
async fn compressed_upstream_messages_are_decoded_for_rest() {
    let message = book(&long_title());
    for (token, encoding) in [
        ("gzip", Encoding::Gzip),
        ("zstd", Encoding::Zstd),
        ("deflate", Encoding::Deflate),
    ] {
        let up = upstream(Some(token), 1, &encode(encoding, &message)).await;
        let gw = start_gateway(library_sources(), &up.url, Settings::default()).await;
        let resp = get(&format!("{}/v1/shelves/1/books/2", gw.base)).await;
        assert_eq!(
            resp.status,
            200,
            "{token}: {}",
            String::from_utf8_lossy(&resp.body)
        );
        assert_eq!(resp.json()["title"], long_title(), "{token}");
        let seen = up.seen.lock().unwrap().clone();
        let call = seen
            .iter()
            .find(|h| {
                h.get("content-type")
                    .is_some_and(|v| v == "application/grpc")
            })
            .unwrap();
        assert_eq!(call["grpc-accept-encoding"], "gzip, zstd, deflate");
    }
}

#[tokio::test]
async fn an_upstream_message_the_gateway_cannot_decode_is_internal() {
    for (header, why) in [
        (Some("snappy"), "snappy"),
        (None, "no grpc-encoding"),
        (Some("identity"), "no grpc-encoding"),
    ] {
        let up = upstream(header, 1, b"whatever").await;
        let gw = start_gateway(library_sources(), &up.url, Settings::default()).await;
        let resp = get(&format!("{}/v1/shelves/1/books/2", gw.base)).await;
        assert_eq!(resp.status, 500);
        let status = resp.json();
        assert_eq!(status["code"], 13);
        let message = status["message"].as_str().unwrap();
        assert!(message.contains(why), "{message}");
        assert!(!message.contains("127.0.0.1"), "{message}");
    }
    // Corrupt data under a known coding, and a bomb past --max-response-bytes.
    let up = upstream(Some("gzip"), 1, b"not gzip at all").await;
    let gw = start_gateway(library_sources(), &up.url, Settings::default()).await;
    let resp = get(&format!("{}/v1/shelves/1/books/2", gw.base)).await;
    assert_eq!(resp.json()["code"], 13);
    let bomb = gzip(&vec![0u8; 1 << 20]);
    let up = upstream(Some("gzip"), 1, &bomb).await;
    let settings = Settings {
        max_response_bytes: 64 << 10,
        ..Settings::default()
    };
    let gw = start_gateway(library_sources(), &up.url, settings).await;
    let resp = get(&format!("{}/v1/shelves/1/books/2", gw.base)).await;
    assert_eq!(
        resp.json()["code"],
        8,
        "{}",
        String::from_utf8_lossy(&resp.body)
    );
}

#[tokio::test]
async fn grpc_clients_get_compressed_frames_as_the_upstream_sent_them() {
    let up = upstream(Some("gzip"), 1, &gzip(&book("t"))).await;
    let gw = start_gateway(library_sources(), &up.url, Settings::default()).await;
    let addr = gw.base.trim_start_matches("http://");
    let tcp = bounded(tokio::net::TcpStream::connect(addr)).await.unwrap();
    let (mut sender, conn) = bounded(hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        TokioIo::new(tcp),
    ))
    .await
    .unwrap();
    tokio::spawn(conn);
    let request = hyper::Request::post(format!("{}/testapi.v1.Library/GetBook", gw.base))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-accept-encoding", "gzip")
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .unwrap();
    let response = bounded(sender.send_request(request)).await.unwrap();
    assert_eq!(response.headers()["grpc-encoding"], "gzip");
    let body = bounded(response.into_body().collect()).await.unwrap();
    assert_eq!(body.trailers().unwrap()["grpc-status"], "0");
    assert_eq!(body.to_bytes(), up.wire);
    let seen = up.seen.lock().unwrap().clone();
    let call = seen.iter().find(|h| h.contains_key("te")).unwrap();
    assert_eq!(
        call["grpc-accept-encoding"], "gzip",
        "the client's, untouched"
    );

    // gRPC-Web: the same frame, then the trailer frame.
    let url = format!("{}/testapi.v1.Library/GetBook", gw.base);
    let web = [("content-type", "application/grpc-web+proto")];
    let resp = send("POST", &url, &web, Bytes::from_static(&[0, 0, 0, 0, 0])).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("grpc-encoding"), Some("gzip"));
    assert!(resp.body.starts_with(&up.wire), "{:?}", resp.body);
}
