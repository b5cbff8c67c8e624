//! Hostile requests: malformed, oversized, slow, smuggled or abusive input, over real sockets
//! to the real gateway. Each is answered with its status (a `google.rpc.Status` body whenever
//! the gateway sees a request at all: what hyper refuses while parsing HTTP/1.1 it answers
//! with an empty body and closes) and the gateway serves the next request right after.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;
use bytes::Bytes;
use protogate::server::Settings;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const GET_REQ: &str = "testapi.v1.GetBookRequest";
const LIST_REQ: &str = "testapi.v1.ListBooksRequest";

// --- fixtures ------------------------------------------------------------------------

struct Fixture {
    backend: Backend,
    gw: Gw,
    pool: prost_reflect::DescriptorPool,
}

/// The test API behind the gateway; GetBook answers the book "Dune", everything else an
/// empty message.
async fn library(settings: Settings) -> Fixture {
    let pool = library_pool();
    let dune = encode_json(&pool, "testapi.v1.Book", json!({"title": "Dune"}));
    let backend = Backend::start(move |call| {
        let message = match call.path.as_str() {
            "/testapi.v1.Library/GetBook" => dune.clone(),
            _ => Bytes::new(),
        };
        Ok(protogate::demo::backend::Reply {
            message,
            metadata: Default::default(),
        })
    })
    .await;
    let gw = start_gateway(library_sources(), &backend.url, settings).await;
    Fixture { backend, gw, pool }
}

/// The fuzzing API (a field of every kind) behind the gateway, answering empty messages.
async fn kinds(settings: Settings) -> (Backend, Gw) {
    let backend = Backend::start(reply_with(Bytes::new())).await;
    let sources = protogate::descriptor::Sources {
        protos: vec!["fuzzapi/v1/kinds.proto".into()],
        includes: vec![repo_path("tests/fuzz/protos")],
        ..Default::default()
    };
    let gw = start_gateway(sources, &backend.url, settings).await;
    (backend, gw)
}

impl Fixture {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.gw.base, path)
    }

    fn addr(&self) -> String {
        self.gw.base.trim_start_matches("http://").to_string()
    }

    /// The gateway still answers a good request.
    async fn still_serving(&self) {
        still_serving(&self.gw.base).await;
    }
}

/// A good request is answered with its book within [`TIMEOUT`], which no timeout of the
/// gateway's in these tests reaches unless a test sets it lower: an answer that had to wait
/// for one (an idle connection closed, a slot freed) fails.
async fn still_serving(base: &str) {
    let resp = get(&format!("{base}/v2/books/b1")).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(resp.json()["title"], "Dune");
}

/// `resp` is a `google.rpc.Status` error with `status` and `code`; returns its message.
#[track_caller]
fn status_body(resp: &Resp, status: u16, code: i32) -> String {
    let text = String::from_utf8_lossy(&resp.body).into_owned();
    assert_eq!(resp.status, status, "{text}");
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let body = resp.json();
    assert_eq!(body["code"], code, "{text}");
    assert!(body["details"].is_array(), "{text}");
    body["message"].as_str().expect("a message").to_string()
}

// --- a raw HTTP/1.1 client -------------------------------------------------------------

/// A response read off the wire.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&self.body));
        })
    }
}

/// Parses every complete response in `wire` (Content-Length or chunked bodies).
fn parse_responses(mut wire: &[u8]) -> Vec<Raw> {
    let mut out = Vec::new();
    while let Some(end) = wire.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&wire[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let mut rest = &wire[end + 4..];
        let mut body = Vec::new();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            let len = len.min(rest.len());
            body.extend_from_slice(&rest[..len]);
            rest = &rest[len..];
        } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
                    rest = &[];
                    break;
                };
                let size = usize::from_str_radix(
                    String::from_utf8_lossy(&rest[..eol])
                        .split(';')
                        .next()
                        .unwrap()
                        .trim(),
                    16,
                )
                .unwrap_or(0);
                rest = &rest[eol + 2..];
                if size == 0 {
                    rest = rest.get(2..).unwrap_or_default();
                    break;
                }
                let take = size.min(rest.len());
                body.extend_from_slice(&rest[..take]);
                rest = rest.get(take + 2..).unwrap_or_default();
            }
        }
        out.push(Raw {
            status,
            headers,
            body,
        });
        wire = rest;
    }
    out
}

/// Writes `request` on a fresh connection and reads until the gateway closes it (or
/// [`TIMEOUT`] passes without a byte, far longer than answering and closing takes and shorter
/// than the 30 s the gateway leaves an idle connection open): every response it sent, and
/// whether it closed the connection.
async fn raw_exchange(addr: &str, request: &[u8]) -> (Vec<Raw>, bool) {
    let mut stream = bounded(TcpStream::connect(addr)).await.unwrap();
    // The gateway may answer and close before reading all of a hostile request.
    let _ = stream.write_all(request).await;
    let mut wire = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let closed = loop {
        match tokio::time::timeout(TIMEOUT, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => wire.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (parse_responses(&wire), closed)
}

/// Sends `head` and then `body_len` bytes of body (as `chunk`-byte chunks, chunked when
/// `chunked`) while reading the answer, as real clients do: the first response, and how
/// many body bytes were written when it arrived.
async fn raw_upload(addr: &str, head: &[u8], body_len: usize, chunked: bool) -> (Raw, usize) {
    let stream = bounded(TcpStream::connect(addr)).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let head = head.to_vec();
    let written = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = written.clone();
    let sender = tokio::spawn(async move {
        writer.write_all(&head).await?;
        let block = vec![b' '; 64 << 10];
        while counter.load(std::sync::atomic::Ordering::SeqCst) < body_len {
            if chunked {
                writer
                    .write_all(format!("{:x}\r\n", block.len()).as_bytes())
                    .await?;
            }
            writer.write_all(&block).await?;
            if chunked {
                writer.write_all(b"\r\n").await?;
            }
            counter.fetch_add(block.len(), std::sync::atomic::Ordering::SeqCst);
        }
        if chunked {
            writer.write_all(b"0\r\n\r\n").await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut wire = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    while parse_responses(&wire).is_empty() {
        match bounded(reader.read(&mut buf)).await {
            Ok(0) | Err(_) => break,
            Ok(n) => wire.extend_from_slice(&buf[..n]),
        }
    }
    let at = written.load(std::sync::atomic::Ordering::SeqCst);
    sender.abort();
    let response = parse_responses(&wire)
        .into_iter()
        .next()
        .expect("a response");
    (response, at)
}

/// The only response to `request`, which must also close the connection.
async fn raw_refused(addr: &str, request: &[u8]) -> Raw {
    let (mut responses, closed) = raw_exchange(addr, request).await;
    assert!(closed, "the connection stays open after a refused request");
    assert_eq!(responses.len(), 1, "{responses:?}");
    let response = responses.remove(0);
    // hyper's own refusals are empty; the gateway's carry a `google.rpc.Status`.
    if !response.body.is_empty() {
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert_eq!(
            response.json()["code"].as_i64(),
            Some(if response.status == 400 { 3 } else { 8 }),
            "{response:?}"
        );
    }
    response
}

// --- JSON ------------------------------------------------------------------------------

#[tokio::test]
async fn truncated_invalid_and_non_utf8_json_is_400() {
    let f = library(Settings::default()).await;
    let url = f.url("/v1/shelves/s1/books");
    let bodies: [&[u8]; 12] = [
        br#"{"title":"Du"#,
        br#"{"title":"#,
        b"{",
        br#"{title: "x"}"#,
        br#"{"title": "a",}"#,
        b"\x00\x01\x02",
        b"\xef\xbb\xbf{}",
        b"{\"title\": \"\xff\xfe\"}",
        b"{\"title\": \"caf\xc3\"}",
        br#"{"title": "\ud800"}"#,
        br#"{"title": "\u00"}"#,
        br#"{"title": "x"} {"title": "y"}"#,
    ];
    for body in bodies {
        let resp = send("POST", &url, &[("content-type", "application/json")], body).await;
        let message = status_body(&resp, 400, 3);
        assert!(
            message.contains("invalid JSON body"),
            "{:?}: {message}",
            String::from_utf8_lossy(body)
        );
    }
    assert!(f.backend.calls().is_empty());
    f.still_serving().await;
}

#[tokio::test]
async fn json_nested_ten_thousand_levels_is_400() {
    let f = library(Settings::default()).await;
    let deep_object = format!("{}1{}", r#"{"a":"#.repeat(10_000), "}".repeat(10_000));
    let deep_array = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_filter = format!("{}{}", r#"{"nested":"#.repeat(10_000), "}".repeat(10_000));
    for (path, body) in [
        ("/v1/shelves/s1/books", deep_object.clone()),
        ("/v1/shelves/s1/books", deep_array.clone()),
        ("/v1/books:search", format!(r#"{{"filter":{deep_filter}}}"#)),
        ("/v1/books:search", "[".repeat(10_000)),
    ] {
        let method = if path.ends_with(":search") {
            "SEARCH"
        } else {
            "POST"
        };
        let resp = send(method, &f.url(path), &[], body).await;
        let message = status_body(&resp, 400, 3);
        assert!(message.contains("nested deeper than 100"), "{message}");
    }
    assert!(f.backend.calls().is_empty());

    // Nesting within the limit is served.
    let fine = format!(
        r#"{{"filter":{}{{}}{}}}"#,
        r#"{"nested":"#.repeat(98),
        "}".repeat(98)
    );
    let resp = send("SEARCH", &f.url("/v1/books:search"), &[], fine).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    f.still_serving().await;
}

#[tokio::test]
async fn json_depth_limit_raised_still_cannot_overflow_the_stack() {
    let f = library(Settings {
        json: protogate::transcode::JsonOptions {
            max_depth: 1_000_000,
            ..Default::default()
        },
        ..Settings::default()
    })
    .await;
    let deep_filter = format!("{}{}", r#"{"nested":"#.repeat(10_000), "}".repeat(10_000));
    let resp = send(
        "SEARCH",
        &f.url("/v1/books:search"),
        &[],
        format!(r#"{{"filter":{deep_filter}}}"#),
    )
    .await;
    let message = status_body(&resp, 400, 3);
    assert!(message.contains("recursion limit"), "{message}");
    f.still_serving().await;
}

#[tokio::test]
async fn numbers_out_of_range_for_their_field_are_400() {
    let (backend, gw) = kinds(Settings::default()).await;
    let url = format!("{}/v1/all/x", gw.base);
    for body in [
        r#"{"fInt32": 2147483648}"#,
        r#"{"fInt32": -2147483649}"#,
        r#"{"fInt32": 1.5}"#,
        r#"{"fUint32": -1}"#,
        r#"{"fUint32": 4294967296}"#,
        r#"{"fInt64": "9223372036854775808"}"#,
        r#"{"fInt64": 9223372036854775808}"#,
        r#"{"fUint64": "18446744073709551616"}"#,
        r#"{"fUint64": "-1"}"#,
        r#"{"fSint32": 2147483648}"#,
        r#"{"fFixed32": -1}"#,
        r#"{"fSfixed64": "-9223372036854775809"}"#,
        r#"{"fDouble": 1e309}"#,
        r#"{"fFloat": 1e39}"#,
        r#"{"fFloat": -3.5e38}"#,
        r#"{"wInt32": 2147483648}"#,
        r#"{"wFloat": 1e39}"#,
        r#"{"rInt32": [1, 2147483648]}"#,
        r#"{"mInt32": {"2147483648": 1}}"#,
        r#"{"fEnum": 2147483648}"#,
        r#"{"wDuration": "315576000001s"}"#,
        r#"{"wTimestamp": "10000-01-01T00:00:00Z"}"#,
    ] {
        let resp = send("POST", &url, &[], body).await;
        assert_eq!(resp.status, 400, "{body} was accepted");
        status_body(&resp, 400, 3);
    }
    let query = format!("{}/v1/query/x", gw.base);
    for q in [
        "f_int32=2147483648",
        "f_uint32=-1",
        "f_uint64=18446744073709551616",
        "f_int64=9223372036854775808",
        "f_double=1e309",
        "r_int32=9999999999",
        "m_int32[2147483648]=1",
    ] {
        let resp = get(&format!("{query}?{q}")).await;
        assert_eq!(resp.status, 400, "{q} was accepted");
        status_body(&resp, 400, 3);
    }
    assert!(backend.calls().is_empty(), "{:?}", backend.calls());
    let resp = send(
        "POST",
        &url,
        &[],
        r#"{"fInt32": 2147483647, "fFloat": 3.4e38}"#,
    )
    .await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
}

/// A float beyond `f32` from a query string or a path is refused like the same number in
/// JSON, rather than stored as infinity.
#[tokio::test]
async fn float_out_of_range_in_a_query_is_400() {
    let (backend, gw) = kinds(Settings::default()).await;
    for q in [
        "f_float=1e39",
        "w_float=-1e39",
        "r_float=3.5e38",
        "m_sint32[1]=1e39",
    ] {
        let resp = get(&format!("{}/v1/query/x?{q}", gw.base)).await;
        assert_eq!(resp.status, 400, "{q} was accepted");
        status_body(&resp, 400, 3);
    }
    assert!(backend.calls().is_empty());
}

// --- bodies ----------------------------------------------------------------------------

const LIMIT: usize = 64 << 10;

/// Answered while the client is still sending: before the whole body was written, so not
/// after reading it all, and not at the body timeout (a minute here, longer than any read of
/// the test waits).
#[tokio::test]
async fn a_body_beyond_the_limit_sent_quickly_is_413() {
    let f = library(Settings {
        max_request_bytes: LIMIT,
        body_timeout: Duration::from_secs(60),
        ..Settings::default()
    })
    .await;
    let size = 64 << 20;
    let with_length =
        format!("POST /v1/shelves/s1/books HTTP/1.1\r\nhost: x\r\ncontent-length: {size}\r\n\r\n");
    let chunked =
        "POST /v1/shelves/s1/books HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n";
    for (head, is_chunked) in [(with_length.as_str(), false), (chunked, true)] {
        let (resp, written) = raw_upload(&f.addr(), head.as_bytes(), size, is_chunked).await;
        assert_eq!(resp.status, 413, "{resp:?}");
        assert_eq!(resp.json()["code"], 8);
        assert!(written < size, "answered only after the whole body");
    }
    assert!(f.backend.calls().is_empty());
    f.still_serving().await;
}

/// A client streaming a body forever, slowly: the gateway answers 413 as soon as the limit is
/// passed, without waiting for the end.
#[tokio::test]
async fn a_body_beyond_the_limit_sent_slowly_is_413_before_it_ends() {
    let f = library(Settings {
        max_request_bytes: LIMIT,
        ..Settings::default()
    })
    .await;
    let mut stream = bounded(TcpStream::connect(f.addr())).await.unwrap();
    let head =
        b"POST /v1/shelves/s1/books HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n";
    stream.write_all(head).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let sender = tokio::spawn(async move {
        let mut sent = 0usize;
        // At most 4 MiB over at most 40 s: far more than the limit, far longer than needed.
        for _ in 0..1024 {
            let chunk = format!("1000\r\n{}\r\n", " ".repeat(4096));
            if writer.write_all(chunk.as_bytes()).await.is_err() {
                break;
            }
            sent += 4096;
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        sent
    });
    let mut wire = Vec::new();
    let mut buf = [0u8; 4096];
    let started = Instant::now();
    while parse_responses(&wire).is_empty() && started.elapsed() < TIMEOUT {
        match bounded(reader.read(&mut buf)).await {
            Ok(0) | Err(_) => break,
            Ok(n) => wire.extend_from_slice(&buf[..n]),
        }
    }
    let responses = parse_responses(&wire);
    assert_eq!(
        responses.first().map(|r| r.status),
        Some(413),
        "{responses:?}"
    );
    assert!(
        !sender.is_finished(),
        "answered only after the client stopped sending"
    );
    sender.abort();
    assert!(f.backend.calls().is_empty());
    f.still_serving().await;
}

/// A client that sends part of its body and then stalls is answered 408, with a status body,
/// once the body timeout is up, and its connection is closed.
#[tokio::test]
async fn a_body_that_stalls_is_408_after_the_body_timeout() {
    let f = library(Settings {
        body_timeout: Duration::from_secs(1),
        ..Settings::default()
    })
    .await;
    let mut stream = bounded(TcpStream::connect(f.addr())).await.unwrap();
    stream
        .write_all(
            b"POST /v1/shelves/s1/books HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"title\":",
        )
        .await
        .unwrap();
    let started = Instant::now();
    let mut wire = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match bounded(stream.read(&mut buf)).await {
            Ok(0) | Err(_) => break,
            Ok(n) => wire.extend_from_slice(&buf[..n]),
        }
    }
    let waited = started.elapsed();
    let responses = parse_responses(&wire);
    assert_eq!(responses.len(), 1, "{responses:?}");
    assert_eq!(responses[0].status, 408);
    let status: serde_json::Value = serde_json::from_slice(&responses[0].body).unwrap();
    assert_eq!(status["code"], 4, "{status}");
    assert!(
        status["message"].as_str().unwrap().contains("request body"),
        "{status}"
    );
    assert!(
        waited >= Duration::from_millis(900),
        "answered after {waited:?}"
    );
    assert!(f.backend.calls().is_empty());
    f.still_serving().await;
}

/// A request announcing a body beyond the limit is refused from its headers: the gateway
/// does not wait for bytes that may never come. (The body timeout is a minute, longer than the
/// test waits: an answer that waited for the body would come too late.)
#[tokio::test]
async fn an_announced_length_beyond_the_limit_is_413_at_once() {
    let f = library(Settings {
        max_request_bytes: LIMIT,
        body_timeout: Duration::from_secs(60),
        ..Settings::default()
    })
    .await;
    let mut stream = bounded(TcpStream::connect(f.addr())).await.unwrap();
    stream
        .write_all(
            b"POST /v1/shelves/s1/books HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000000000\r\n\r\n{\"title\":",
        )
        .await
        .unwrap();
    let mut wire = Vec::new();
    let mut buf = [0u8; 4096];
    while parse_responses(&wire).is_empty() {
        match tokio::time::timeout(TIMEOUT, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => wire.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let responses = parse_responses(&wire);
    assert_eq!(
        responses.first().map(|r| r.status),
        Some(413),
        "no answer within {TIMEOUT:?} to a request announcing 1 TB"
    );
    f.still_serving().await;
}

// --- query strings, paths, headers ------------------------------------------------------

/// 100,000 parameters cannot fit in a request target (hyper's URI holds at most 64 KiB): 414
/// from hyper, whatever the header limit. The most that fits, 9,000, is parsed in full.
#[tokio::test]
async fn a_hundred_thousand_query_parameters() {
    let f = library(Settings {
        max_header_bytes: 4 << 20,
        ..Settings::default()
    })
    .await;
    let tags = |n: usize| vec!["tags=t"; n].join("&");
    let request = format!(
        "GET /v1/shelves/s1/books?{} HTTP/1.1\r\nhost: x\r\n\r\n",
        tags(100_000)
    );
    let resp = raw_refused(&f.addr(), request.as_bytes()).await;
    assert_eq!(resp.status, 414);

    let base = f.url("/v1/shelves/s1/books");
    let resp = get(&format!("{base}?{}", tags(9_000))).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    let call = f.backend.only_call();
    let sent = decode_json(&f.pool, LIST_REQ, &call.message);
    assert_eq!(sent["tags"].as_array().map(Vec::len), Some(9_000));

    let unknown = (0..6_000)
        .map(|i| format!("u{i}=1"))
        .collect::<Vec<_>>()
        .join("&");
    let resp = get(&format!("{base}?{unknown}")).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);

    let labels = (0..4_000)
        .map(|i| format!("labels[{i}]=v"))
        .collect::<Vec<_>>()
        .join("&");
    let resp = get(&format!("{base}?{labels}")).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);

    let repeated = vec!["page_size=1"; 5_000].join("&");
    let resp = get(&format!("{base}?{repeated}")).await;
    assert!(status_body(&resp, 400, 3).contains("too many values"));

    // With the default header limit the request line alone is refused.
    let small = library(Settings::default()).await;
    let request = format!(
        "GET /v1/shelves/s1/books?{} HTTP/1.1\r\nhost: x\r\n\r\n",
        tags(20_000)
    );
    let resp = raw_refused(&small.addr(), request.as_bytes()).await;
    assert!(matches!(resp.status, 414 | 431), "{}", resp.status);
    small.still_serving().await;
    f.still_serving().await;
}

/// A query key naming a field thousands of messages deep: refused like JSON nested as deep.
#[tokio::test]
async fn a_query_path_thousands_of_fields_deep_is_400() {
    let f = library(Settings::default()).await;
    let key = format!("filter.{}author_name", "nested.".repeat(9_000));
    let resp = get(&f.url(&format!("/v1/shelves/s1/books?{key}=x"))).await;
    status_body(&resp, 400, 3);
    assert!(f.backend.calls().is_empty());
    f.still_serving().await;
}

#[tokio::test]
async fn very_long_paths_and_headers() {
    let f = library(Settings::default()).await;
    let long = format!(
        "GET /v2/books/{} HTTP/1.1\r\nhost: x\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let resp = raw_refused(&f.addr(), long.as_bytes()).await;
    assert!(matches!(resp.status, 414 | 431), "{}", resp.status);

    // Within the header limit, a long path is routed like any other.
    let resp = get(&f.url(&format!("/v1/{}", "a/".repeat(20_000)))).await;
    let message = status_body(&resp, 404, 5);
    assert!(message.contains("no route"), "{}", &message[..100]);
    let segments = format!("/v1/files/{}", "s/".repeat(15_000) + "end");
    let resp = get(&f.url(&segments)).await;
    assert_eq!(resp.status, 200);
    let call = f.backend.calls().pop().unwrap();
    let name = decode_json(&f.pool, GET_REQ, &call.message)["name"]
        .as_str()
        .unwrap()
        .len();
    assert_eq!(name, 30_003);

    let huge_value = "v".repeat(1 << 20);
    let resp = send("GET", &f.url("/v2/books/b1"), &[("x-big", &huge_value)], "").await;
    assert_eq!(resp.status, 431);

    let mut request = b"GET /v2/books/b1 HTTP/1.1\r\nhost: x\r\n".to_vec();
    for i in 0..10_000 {
        request.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    let resp = raw_refused(&f.addr(), &request).await;
    assert_eq!(resp.status, 431);
    f.still_serving().await;
}

/// A 60 KB input named in an error is cut: the answer stays small, and says how long the
/// input was.
#[tokio::test]
async fn long_inputs_are_cut_in_error_messages() {
    let mut settings = Settings::default();
    settings.json.reject_unknown_query = true;
    settings.json.reject_unknown_fields = true;
    let f = library(settings).await;
    let long = "a".repeat(60_000);
    let digits = "9".repeat(60_000);
    let books = f.url("/v1/shelves/s1/books");
    let headers = [("content-type", "application/json")];
    let json = |body: String| send("POST", &books, &headers, body);
    let answers = [
        (get(&f.url(&format!("/v1/{long}"))).await, 404, 5),
        (
            send("PATCH", &f.url(&format!("/v1/books/{long}")), &[], "").await,
            405,
            12,
        ),
        (
            send(&"M".repeat(60_000), &f.url("/v1/books/b1"), &[], "").await,
            405,
            12,
        ),
        (
            get(&f.url(&format!("/v1/shelves/s1/books?{long}=1"))).await,
            400,
            3,
        ),
        (
            get(&f.url(&format!("/v1/shelves/s1/books?pageSize={digits}"))).await,
            400,
            3,
        ),
        (
            send(
                "DELETE",
                &f.url(&format!("/v1/shelves/s1/books/{digits}")),
                &[],
                "",
            )
            .await,
            400,
            3,
        ),
        (json(format!(r#"{{"kind": "{long}"}}"#)).await, 400, 3),
        (json(format!(r#"{{"available": "{long}"}}"#)).await, 400, 3),
        (json(format!(r#"{{"{long}": 1}}"#)).await, 400, 3),
    ];
    for (resp, status, code) in answers {
        let message = status_body(&resp, status, code);
        let start: String = message.chars().take(200).collect();
        assert!(
            resp.body.len() < 1_000,
            "{} bytes: {start}",
            resp.body.len()
        );
        assert!(message.contains("bytes)"), "{start}");
    }
    assert!(f.backend.calls().is_empty());
    f.still_serving().await;
}

#[tokio::test]
async fn nul_and_dot_segments_are_data_never_resolved() {
    let f = library(Settings::default()).await;
    let name_sent = |resp: &Resp| {
        assert_eq!(resp.status, 200, "{:?}", resp.body);
        let call = f.backend.calls().pop().unwrap();
        decode_json(&f.pool, GET_REQ, &call.message)["name"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    for (path, name) in [
        ("/v2/books/%00", "\0"),
        ("/v2/books/a%00b", "a\0b"),
        ("/v2/books/..", ".."),
        ("/v2/books/%2e%2e", ".."),
        (
            "/v2/books/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
            "../../etc/passwd",
        ),
        ("/v1/files/../../etc/passwd", "../../etc/passwd"),
        ("/v1/files/./x", "./x"),
        ("/v1/files/%2e%2e%2f%2e%2e%2fetc", "..%2f..%2fetc"),
    ] {
        let resp = get(&f.url(path)).await;
        assert_eq!(name_sent(&resp), name, "{path}");
    }
    for path in [
        "/v2/books/../books/b1",
        "/v2/%2e%2e/v2/books/b1",
        "/v1/%00",
        "/v2/books/b1/..",
        "/%00/v2/books/b1",
    ] {
        let resp = get(&f.url(path)).await;
        let message = status_body(&resp, 404, 5);
        assert!(message.contains("no route"), "{path}: {message}");
    }
    f.still_serving().await;
}

#[tokio::test]
async fn invalid_utf8_in_paths() {
    let f = library(Settings::default()).await;
    // Percent-encoded: the gateway decodes it and refuses the value.
    for path in ["/v2/books/%FF", "/v2/books/%C3%28", "/v1/files/a/%ED%A0%80"] {
        let resp = get(&f.url(path)).await;
        assert!(status_body(&resp, 400, 3).contains("UTF-8"), "{path}");
    }
    // In a literal it is just a path no route has.
    let resp = get(&f.url("/v1/%FF/books")).await;
    status_body(&resp, 404, 5);
    // Raw UTF-8 on the wire is taken as it is.
    let resp = raw_exchange(
        &f.addr(),
        "GET /v2/books/caf\u{e9} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".as_bytes(),
    )
    .await
    .0;
    assert_eq!(resp[0].status, 200);
    let call = f.backend.only_call();
    assert_eq!(
        decode_json(&f.pool, GET_REQ, &call.message)["name"],
        "caf\u{e9}"
    );
    // Other raw bytes are not a valid request target.
    for request in [
        &b"GET /v2/books/\xff\xfe HTTP/1.1\r\nhost: x\r\n\r\n"[..],
        b"GET /v2/books/a\x00b HTTP/1.1\r\nhost: x\r\n\r\n",
        b"GET /v2/books/a b HTTP/1.1\r\nhost: x\r\n\r\n",
    ] {
        let resp = raw_refused(&f.addr(), request).await;
        assert_eq!(resp.status, 400, "{:?}", String::from_utf8_lossy(request));
    }
    let resp = raw_refused(
        &f.addr(),
        b"GET /v2/books/b1 HTTP/1.1\r\nhost: x\r\nx-bad: \xff\x00\r\n\r\n",
    )
    .await;
    assert_eq!(resp.status, 400);
    assert_eq!(f.backend.calls().len(), 1);
    f.still_serving().await;
}

// --- request smuggling -----------------------------------------------------------------

/// Conflicting framing: hyper refuses what is ambiguous and, for `Content-Length` with
/// `Transfer-Encoding`, reads the chunked body and then closes, so whatever was hidden after
/// it is never read as a request.
#[tokio::test]
async fn request_smuggling_attempts_never_reach_the_backend() {
    let f = library(Settings::default()).await;
    let smuggled = "GET /v2/books/smuggled HTTP/1.1\r\nhost: x\r\n\r\n";
    // CL.TE and TE.CL: both headers; Transfer-Encoding wins and the connection closes.
    for request in [
        format!(
            "POST /v1/books/b1 HTTP/1.1\r\nhost: x\r\ncontent-length: 6\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST /v1/books/b1 HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n{smuggled}"
        ),
    ] {
        let (responses, closed) = raw_exchange(&f.addr(), request.as_bytes()).await;
        assert!(closed, "kept the connection open after CL + TE");
        assert_eq!(responses.len(), 1, "{responses:?}");
        assert_eq!(responses[0].status, 405, "{responses:?}");
    }
    // Refused outright: 400 and the connection closed.
    for request in [
        format!("POST /v1/books/b1 HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\ncontent-length: 40\r\n\r\n{{}}{smuggled}"),
        format!("PUT /v1/books/b1 HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggled}"),
        format!("PUT /v1/books/b1 HTTP/1.1\r\nhost: x\r\ntransfer-encoding: xchunked\r\n\r\n0\r\n\r\n{smuggled}"),
        format!("PUT /v1/books/b1 HTTP/1.1\r\nhost: x\r\ntransfer-encoding : chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        format!("PUT /v1/books/b1 HTTP/1.0\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        format!("PUT /v1/books/b1 HTTP/1.1\r\nhost: x\r\ncontent-length: +2\r\n\r\n{{}}{smuggled}"),
        format!("PUT /v1/books/b1 HTTP/1.1\r\nhost: x\r\ncontent-length: 0x2\r\n\r\n{{}}{smuggled}"),
        format!("PUT /v1/books/b1 HTTP/1.1\r\nhost: x\r\n content-length: 2\r\n\r\n{{}}{smuggled}"),
        format!("PUT /v1/books/b1 HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nz\r\n\r\n{smuggled}"),
    ] {
        let resp = raw_refused(&f.addr(), request.as_bytes()).await;
        assert_eq!(resp.status, 400, "{request:?}");
    }
    let seen: Vec<String> = f
        .backend
        .calls()
        .iter()
        .map(|c| decode_json(&f.pool, GET_REQ, &c.message)["name"].to_string())
        .collect();
    assert!(
        !seen.iter().any(|n| n.contains("smuggled")),
        "a smuggled request reached the backend: {seen:?}"
    );
    f.still_serving().await;
}

// --- HTTP/2 rapid reset ----------------------------------------------------------------

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// HPACK for `GET http://x/v2/books/b1`, literals without indexing.
fn h2_get_headers() -> Vec<u8> {
    let mut block = vec![0x82, 0x86];
    for (index, value) in [(4u8, "/v2/books/b1"), (1, "x")] {
        block.push(index);
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    block
}

/// CVE-2023-44487: streams opened and reset at once, thousands of them. The gateway closes
/// the connection (GOAWAY), the backend sees a small fraction of them, and the gateway
/// serves the next client.
#[tokio::test]
async fn http2_rapid_reset_is_cut_off() {
    let f = library(Settings::default()).await;
    let mut stream = bounded(TcpStream::connect(f.addr())).await.unwrap();
    let mut flood = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    flood.extend(h2_frame(4, 0, 0, &[]));
    let headers = h2_get_headers();
    const STREAMS: u32 = 5_000;
    for i in 0..STREAMS {
        let id = 1 + 2 * i;
        flood.extend(h2_frame(1, 0x5, id, &headers));
        flood.extend(h2_frame(3, 0, id, &8u32.to_be_bytes()));
    }
    let (mut reader, mut writer) = stream.split();
    let write = async {
        let _ = writer.write_all(&flood).await;
    };
    let read = async {
        let mut wire = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), reader.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(n)) => wire.extend_from_slice(&buf[..n]),
            }
            if goaway(&wire).is_some() {
                break;
            }
        }
        wire
    };
    let ((), wire) = bounded(async { tokio::join!(write, read) }).await;
    let code = goaway(&wire).expect("the gateway sent GOAWAY");
    assert_eq!(code, 0xb, "GOAWAY with ENHANCE_YOUR_CALM");
    let calls = f.backend.calls().len();
    eprintln!("rapid reset: GOAWAY {code:#x} after {} bytes, {calls} of {STREAMS} streams reached the backend", wire.len());
    assert!(
        calls < 100,
        "{calls} of {STREAMS} reset streams reached the backend"
    );
    drop(stream);
    f.still_serving().await;
}

/// The error code of the first GOAWAY frame in `wire`, which starts with the server preface.
fn goaway(wire: &[u8]) -> Option<u32> {
    let mut rest = wire;
    while rest.len() >= 9 {
        let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        if rest.len() < 9 + len {
            return None;
        }
        if rest[3] == 7 && len >= 8 {
            return Some(u32::from_be_bytes(rest[13..17].try_into().unwrap()));
        }
        rest = &rest[9 + len..];
    }
    None
}

// --- slowloris -------------------------------------------------------------------------

/// How many idle connections the process can afford: 5,000 (each costs two descriptors, the
/// client's and the gateway's), fewer when the descriptor limit cannot be raised that far.
/// The other tests run in the same process meanwhile: at least half the descriptors are left
/// to them. (The soft limit is raised for the whole process and never lowered again, which
/// only ever helps the others.)
fn affordable_connections() -> usize {
    const WANTED: usize = 5_000;
    let soft = rlimit::increase_nofile_limit(4 * WANTED as u64).unwrap_or(1024);
    let n = WANTED.min(soft as usize / 4);
    if n < WANTED {
        eprintln!("descriptor limit {soft}: slowloris scaled to {n} connections");
    }
    n
}

/// Opens `n` connections to `addr`, 250 at a time (the listen backlog), each sending
/// `greeting` and then nothing.
async fn idle_connections(addr: &str, n: usize, greeting: &'static [u8]) -> Vec<TcpStream> {
    let mut open = Vec::with_capacity(n);
    while open.len() < n {
        let batch = (n - open.len()).min(250);
        let connects = (0..batch).map(|_| async move {
            let mut s = TcpStream::connect(addr).await?;
            s.write_all(greeting).await?;
            Ok::<_, std::io::Error>(s)
        });
        for s in bounded(futures_util::future::join_all(connects)).await {
            open.push(s.expect("connect"));
        }
    }
    open
}

/// Thousands of idle connections, and good requests are served meanwhile. The idle ones stay
/// open throughout: the header read and detection timeouts are a minute here, so a good
/// request cannot be served by waiting for them to close (each is bounded by [`TIMEOUT`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_do_not_starve_other_clients() {
    let n = affordable_connections();
    let f = Arc::new(
        library(Settings {
            header_read_timeout: Duration::from_secs(60),
            detection_timeout: Duration::from_secs(60),
            ..Settings::default()
        })
        .await,
    );
    let addr = f.addr();
    let started = Instant::now();
    let silent = idle_connections(&addr, n * 4 / 5, b"").await;
    let partial =
        idle_connections(&addr, n / 10, b"GET /v2/books/b1 HTTP/1.1\r\nhost: x\r\n").await;
    let preface = idle_connections(
        &addr,
        n - silent.len() - partial.len(),
        b"PRI * HTTP/2.0\r\n",
    )
    .await;
    eprintln!("{n} idle connections opened in {:?}", started.elapsed());
    for _ in 0..20 {
        f.still_serving().await;
    }
    let metrics = get(&format!("{}/metrics", f.gw.base)).await;
    assert_eq!(metrics.status, 200);
    drop((silent, partial, preface));
    f.still_serving().await;
}

/// Settings whose header read and protocol detection timeouts are a second (30 s by default),
/// so that the tests of idle connections take about that long.
fn quick_idle_timeouts() -> Settings {
    Settings {
        header_read_timeout: Duration::from_secs(1),
        detection_timeout: Duration::from_secs(1),
        ..Settings::default()
    }
}

/// Waits until every connection in `groups` is closed by the gateway, failing after
/// [`TIMEOUT`] (the timeouts are a second: [`quick_idle_timeouts`]).
async fn assert_closed_in_time(groups: &mut [(&str, Vec<TcpStream>)]) {
    let deadline = Instant::now() + TIMEOUT;
    for (what, connections) in groups.iter_mut() {
        for s in connections.iter_mut() {
            let mut buf = [0u8; 1024];
            let closed = tokio::time::timeout_at(deadline.into(), async {
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            assert!(
                closed.is_ok(),
                "a connection that sent {what} is still open after {TIMEOUT:?}"
            );
        }
    }
}

/// An idle connection is closed by the gateway once the header read timeout passes, whether
/// it sent nothing at all, one byte or half a request line.
#[tokio::test]
async fn idle_connections_are_closed_after_the_header_timeout() {
    let f = library(quick_idle_timeouts()).await;
    let addr = f.addr();
    let mut groups = Vec::new();
    for (what, greeting) in [
        ("nothing", &b""[..]),
        ("one byte", b"G"),
        ("half a request line", b"GET /v2/books/b1 HTTP/1.1\r\n"),
    ] {
        groups.push((what, idle_connections(&addr, 10, greeting).await));
    }
    assert_closed_in_time(&mut groups).await;
    f.still_serving().await;
}

/// The same for a connection that stops inside the HTTP/2 connection preface.
#[tokio::test]
async fn a_connection_stopping_inside_the_http2_preface_is_closed() {
    let f = library(quick_idle_timeouts()).await;
    let addr = f.addr();
    let mut groups = vec![
        (
            "half the HTTP/2 preface",
            idle_connections(&addr, 10, b"PRI * HTTP/2.0\r\n").await,
        ),
        (
            "23 of the 24 preface bytes",
            idle_connections(&addr, 10, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r").await,
        ),
    ];
    assert_closed_in_time(&mut groups).await;
    f.still_serving().await;
}

// --- overload --------------------------------------------------------------------------

/// Far beyond the concurrency limit: the surplus is refused at once with 503 and
/// `Retry-After`, and the admitted requests are served. "At once" without a clock: the backend
/// holds every call it gets until the test lets them go, so a refusal that waited for a slot
/// would never come; all of them come while the admitted requests are held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_refused_at_once_and_the_admitted_requests_are_served() {
    const LIMIT: usize = 8;
    const CLIENTS: usize = 200;
    let pool = library_pool();
    let dune = encode_json(&pool, "testapi.v1.Book", json!({"title": "Dune"}));
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel::<()>();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let held = gate.clone();
    let handler = protogate::demo::backend::handler(move |call| {
        let (arrived_tx, held, dune) = (arrived_tx.clone(), held.clone(), dune.clone());
        async move {
            if call.path == "/grpc.health.v1.Health/Check" {
                return Err(tonic::Status::unimplemented("no health service"));
            }
            let _ = arrived_tx.send(());
            let _permit = held.acquire().await;
            Ok(protogate::demo::backend::Reply {
                message: dune,
                metadata: Default::default(),
            })
        }
    });
    let backend = serve_handlers(protogate::demo::backend::Handlers {
        unary: handler,
        streaming: None,
    })
    .await;
    let gw = start_gateway(
        library_sources(),
        &backend.url,
        Settings {
            max_concurrent_requests: LIMIT,
            ..Settings::default()
        },
    )
    .await;
    let url = format!("{}/v2/books/b1", gw.base);
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let url = url.clone();
        clients.spawn(async move { send("GET", &url, &[], "").await });
    }
    // Every client but the admitted ones is answered while those are held upstream.
    for _ in 0..CLIENTS - LIMIT {
        let resp = bounded(clients.join_next()).await.unwrap().unwrap();
        assert_eq!(resp.status, 503, "{:?}", resp.body);
        assert_eq!(resp.header("retry-after"), Some("1"));
        status_body(&resp, 503, 14);
    }
    for _ in 0..LIMIT {
        bounded(arrived.recv()).await.unwrap();
    }
    assert!(
        arrived.try_recv().is_err(),
        "more than {LIMIT} calls upstream"
    );
    assert_eq!(
        clients.len(),
        LIMIT,
        "the admitted requests are still running"
    );
    gate.add_permits(LIMIT);
    while let Some(done) = bounded(clients.join_next()).await {
        let resp = done.unwrap();
        assert_eq!(resp.status, 200, "{:?}", resp.body);
        assert_eq!(resp.json()["title"], "Dune");
    }
    let resp = get(&url).await;
    assert_eq!(resp.status, 200);
}

/// A multipart body is bounded by its part count as well as its size: one part more than
/// `--max-form-parts` is 413 with a Status body, and the upstream is never called.
#[tokio::test]
async fn a_multipart_body_with_too_many_parts_is_413() {
    let f = library(Settings {
        max_form_parts: 3,
        ..Settings::default()
    })
    .await;
    let body = |n: usize| {
        let mut out = String::new();
        for i in 0..n {
            out.push_str(&format!(
                "--b\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nt{i}\r\n"
            ));
        }
        out + "--b--\r\n"
    };
    let url = f.url("/v1/shelves/s1/books");
    let headers = [("content-type", "multipart/form-data; boundary=b")];
    let refused = send("POST", &url, &headers, body(4)).await;
    let message = status_body(&refused, 413, 8);
    assert!(message.contains("more than 3 parts"), "{message}");
    assert!(f.backend.calls().is_empty());
    let accepted = send("POST", &url, &headers, body(1)).await;
    assert_eq!(
        accepted.status,
        200,
        "{}",
        String::from_utf8_lossy(&accepted.body)
    );
    f.still_serving().await;
}
