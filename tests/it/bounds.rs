//! The attacks that once took the gateway's memory or its whole concurrency budget, replayed
//! against the real gateway over loopback: silent gRPC streams, an upstream that answers a
//! unary call without end, responses that render huge, clients that never read, and
//! HTTP/1.1 framing that a proxy in front could read differently. Each is bounded, answered
//! in the client's protocol, and leaves other clients served.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use protogate::server::Settings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const GET_LOCATION: &str = "/vpresult.LocationService/getLocationPose";

/// The resident memory of this process, in MiB (the gateway runs in it, and so do the other
/// tests: printed for a run with `--test-threads=1`, never asserted on).
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

async fn vps_gateway(settings: Settings) -> (Backend, Gw) {
    let backend = Backend::start(reply_with(Bytes::new())).await;
    let gw = start_gateway(protogate::demo::vps_sources(), &backend.url, settings).await;
    (backend, gw)
}

async fn rest_ok(gw: &Gw) -> u16 {
    send("POST", &format!("{}/skvps/locdata", gw.base), &[], "{}")
        .await
        .status
        .as_u16()
}

/// An h2c connection to the gateway, driven in the background.
async fn h2_connect(addr: &str) -> h2::client::SendRequest<Bytes> {
    let socket = bounded(TcpStream::connect(addr)).await.unwrap();
    let (send, connection) = bounded(h2::client::handshake(socket)).await.unwrap();
    tokio::spawn(connection);
    bounded(send.ready()).await.unwrap()
}

fn grpc_request(addr: &str, path: &str) -> Request<()> {
    Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

/// The `grpc-status` of a response, from its headers (trailers-only) or its trailers.
async fn grpc_outcome(response: Response<h2::RecvStream>) -> (String, String) {
    let (head, mut body) = response.into_parts();
    let status = |h: &HeaderMap| {
        let text = |name| {
            h.get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(String::from)
        };
        let message = text("grpc-message").unwrap_or_default();
        let message = percent_encoding::percent_decode_str(&message)
            .decode_utf8_lossy()
            .into_owned();
        text("grpc-status").map(|s| (s, message))
    };
    if let Some(found) = status(&head.headers) {
        return found;
    }
    while let Some(chunk) = bounded(body.data()).await {
        let _ = chunk;
    }
    let trailers = bounded(body.trailers()).await.unwrap().unwrap_or_default();
    status(&trailers).expect("a grpc-status")
}

// --- 1. silent gRPC streams -----------------------------------------------------------------

/// Four connections each open as many unary gRPC streams as they can and never send a
/// message. Each connection holds at most `--max-concurrent-streams`, so other clients are
/// served throughout; every silent stream ends with DEADLINE_EXCEEDED at `--body-timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_grpc_streams_take_only_their_connections_share_and_time_out() {
    let settings = Settings {
        max_concurrent_requests: 100,
        max_concurrent_streams: 16,
        body_timeout: Duration::from_secs(2),
        ..Settings::default()
    };
    let (_backend, gw) = vps_gateway(settings).await;
    let addr = gw.base.trim_start_matches("http://").to_string();
    let before = rss_mib();
    let mut silent = Vec::new();
    for _ in 0..4 {
        let mut connection = h2_connect(&addr).await;
        for _ in 0..16 {
            connection = bounded(connection.ready()).await.unwrap();
            let (response, stream) = connection
                .send_request(grpc_request(&addr, GET_LOCATION), false)
                .unwrap();
            silent.push((response, stream));
        }
    }
    // 64 of the 100 permits are held; everyone else is still served.
    for _ in 0..20 {
        assert_eq!(rest_ok(&gw).await, 200);
    }
    let during = rss_mib();
    eprintln!(
        "silent streams: RSS {before:.1} MiB before, {during:.1} MiB with 4 x 16 streams held"
    );
    let (response, _stream) = silent.remove(0);
    let response = bounded(response).await.unwrap();
    let (code, message) = grpc_outcome(response).await;
    assert_eq!(code, "4", "{message}");
    assert!(message.contains("--body-timeout"), "{message}");
    assert_eq!(rest_ok(&gw).await, 200);
}

/// A connection asking for more streams than `--max-concurrent-streams` is told so in its
/// SETTINGS, and its extra requests wait (h2 queues them) instead of taking permits.
#[tokio::test]
async fn the_stream_limit_is_announced_in_http2_settings() {
    let settings = Settings {
        max_concurrent_streams: 7,
        ..Settings::default()
    };
    let (_backend, gw) = vps_gateway(settings).await;
    let addr = gw.base.trim_start_matches("http://").to_string();
    let mut connection = h2_connect(&addr).await;
    // The SETTINGS frame has arrived once a first request has been answered.
    let (response, mut stream) = connection
        .send_request(grpc_request(&addr, GET_LOCATION), false)
        .unwrap();
    stream
        .send_data(protogate::grpc::frame::encode_raw(b""), true)
        .unwrap();
    let (code, _) = grpc_outcome(bounded(response).await.unwrap()).await;
    assert_eq!(code, "0");
    connection = bounded(connection.ready()).await.unwrap();
    assert_eq!(connection.current_max_send_streams(), 7);
}

// --- 2. an upstream answering a unary call without end --------------------------------------

/// An h2c upstream that answers every call with 1 KiB messages until it is reset; counts the
/// messages it managed to send.
async fn endless_upstream() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(mut connection) = h2::server::handshake(socket).await else {
                    return;
                };
                while let Some(Ok((_request, mut respond))) = connection.accept().await {
                    let counter = counter.clone();
                    tokio::spawn(async move {
                        let head = Response::builder()
                            .header("content-type", "application/grpc")
                            .body(())
                            .unwrap();
                        let Ok(mut send) = respond.send_response(head, false) else {
                            return;
                        };
                        let message = protogate::grpc::frame::encode_raw(&[0x0a; 1024][..]);
                        // Each message waits for window: the gateway's reading sets the pace.
                        loop {
                            send.reserve_capacity(message.len());
                            match std::future::poll_fn(|cx| send.poll_capacity(cx)).await {
                                Some(Ok(_)) => {}
                                _ => return,
                            }
                            if send.send_data(message.clone(), false).is_err() {
                                return;
                            }
                            counter.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
            });
        }
    });
    (url, sent)
}

#[tokio::test]
async fn a_unary_call_fails_at_the_upstreams_second_message() {
    let (url, sent) = endless_upstream().await;
    let gw = start_gateway(protogate::demo::vps_sources(), &url, Settings::default()).await;
    let before = rss_mib();
    for _ in 0..20 {
        let resp = send("POST", &format!("{}/skvps/locdata", gw.base), &[], "{}").await;
        assert_eq!(resp.status, 500, "{:?}", resp.body);
        let body = resp.json();
        assert_eq!(body["code"], 13);
        assert!(body["message"]
            .as_str()
            .unwrap()
            .contains("several response messages"));
    }
    let after = rss_mib();
    eprintln!("endless unary answers: RSS {before:.1} MiB before, {after:.1} MiB after 20 calls");
    // Once the gateway stopped reading, the upstream can send no more than its window: what
    // the gateway could have buffered is bounded by that count. (The RSS is only printed: the
    // other tests run in this process at the same time.)
    let messages = sent.load(Ordering::Relaxed);
    assert!(messages < 20 * 100, "the upstream sent {messages} messages");
}

// --- 3. responses that render huge, clients that never read ---------------------------------

async fn echo_kinds(settings: Settings) -> (Backend, Gw) {
    let backend = Backend::start(|call| {
        Ok(protogate::demo::backend::Reply {
            message: call.message.clone(),
            metadata: Default::default(),
        })
    })
    .await;
    let sources = protogate::descriptor::Sources {
        protos: vec!["fuzzapi/v1/kinds.proto".into()],
        includes: vec![repo_path("tests/fuzz/protos")],
        ..Default::default()
    };
    let gw = start_gateway(sources, &backend.url, settings).await;
    (backend, gw)
}

/// `{"rMessage":[{},{},...]}`: `n` empty messages, each rendered with every default field.
fn empties(n: usize) -> String {
    format!("{{\"rMessage\":[{}]}}", vec!["{}"; n].join(","))
}

#[tokio::test]
async fn a_rendering_beyond_the_limit_is_500_resource_exhausted() {
    let mut settings = Settings::default();
    settings.json.max_output_bytes = 1 << 20;
    let (_backend, gw) = echo_kinds(settings).await;
    let url = format!("{}/v1/all/x", gw.base);
    let small = send("POST", &url, &[], empties(10)).await;
    assert_eq!(small.status, 200);
    let before = rss_mib();
    // 40 KB in, about 30 MB of JSON out without the limit.
    let huge = send("POST", &url, &[], empties(20_000)).await;
    let after = rss_mib();
    eprintln!("huge rendering: RSS {before:.1} MiB before, {after:.1} MiB after");
    assert_eq!(
        huge.status,
        500,
        "{:?}",
        &huge.body[..huge.body.len().min(200)]
    );
    let body = huge.json();
    assert_eq!(body["code"], 8);
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("--max-rendered-bytes"));
    assert!(huge.body.len() < 1000);
}

/// Reads from `socket` until it is closed, or `limit` passes; whether it was closed.
async fn closed_within(socket: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = vec![0u8; 1 << 16];
    let read_all = async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read_all).await.is_ok()
}

/// An HTTP/1.1 client that asks for a large response and stops reading: the gateway closes
/// the connection after `--write-timeout` without progress, and serves others meanwhile.
#[tokio::test]
async fn an_http1_client_that_stops_reading_is_disconnected() {
    let settings = Settings {
        write_timeout: Duration::from_millis(500),
        ..Settings::default()
    };
    let (_backend, gw) = echo_kinds(settings).await;
    let addr = gw.base.trim_start_matches("http://").to_string();
    let mut socket = bounded(TcpStream::connect(&addr)).await.unwrap();
    let body = empties(5_000); // renders to several MB
    let request = format!(
        "POST /v1/all/x HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    // The same request pipelined several times, then nothing is read for a while.
    let before = rss_mib();
    for _ in 0..4 {
        bounded(socket.write_all(request.as_bytes())).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_mib();
    eprintln!("HTTP/1.1 client not reading: RSS {before:.1} MiB before, {after:.1} MiB after");
    assert_eq!(
        send("POST", &format!("{}/v1/all/x", gw.base), &[], "{}")
            .await
            .status,
        200
    );
    // Whatever the kernel buffered arrives, then the end: the gateway has given up (nothing
    // else would close the connection).
    assert!(closed_within(&mut socket, TIMEOUT).await);
}

/// An HTTP/2 client that grants no flow-control window: every response stalls, responses
/// beyond the connection's bound of unsent bytes (twice `--max-rendered-bytes`) are refused,
/// and the connection is closed after `--write-timeout`.
#[tokio::test]
async fn an_http2_client_that_grants_no_window_is_disconnected() {
    let mut settings = Settings {
        write_timeout: Duration::from_millis(500),
        ..Settings::default()
    };
    settings.json.max_output_bytes = 400 << 10;
    let (_backend, gw) = echo_kinds(settings).await;
    let addr = gw.base.trim_start_matches("http://").to_string();
    let socket = bounded(TcpStream::connect(&addr)).await.unwrap();
    let (mut sender, connection) = bounded(
        h2::client::Builder::new()
            .initial_window_size(0)
            .handshake::<_, Bytes>(socket),
    )
    .await
    .unwrap();
    let connection = tokio::spawn(connection);
    let before = rss_mib();
    let mut responses = Vec::new();
    for _ in 0..20 {
        sender = bounded(sender.ready()).await.unwrap();
        let request = Request::builder()
            .method("POST")
            .uri(format!("http://{addr}/v1/all/x"))
            .body(())
            .unwrap();
        let (response, mut stream) = sender.send_request(request, false).unwrap();
        stream.send_data(Bytes::from(empties(100)), true).unwrap();
        responses.push(response);
    }
    // Response headers are not flow-controlled: the statuses arrive.
    let mut statuses = Vec::new();
    let mut held = Vec::new(); // dropping a response would reset its stream
    for response in responses {
        let response = bounded(response).await.unwrap();
        statuses.push(response.status().as_u16());
        held.push(response);
    }
    let accepted = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 503).count();
    assert!(accepted >= 1 && refused >= 10, "{statuses:?}");
    // The connection ends (GOAWAY or close) without the client doing anything.
    let ended = tokio::time::timeout(TIMEOUT, connection).await;
    assert!(ended.is_ok(), "the stalled connection was left open");
    let after = rss_mib();
    eprintln!("HTTP/2 client granting no window: RSS {before:.1} MiB before, {after:.1} MiB after");
    assert_eq!(
        send("POST", &format!("{}/v1/all/x", gw.base), &[], "{}")
            .await
            .status,
        200
    );
}

// --- 4, 5. HTTP/1.1 framing, gRPC over HTTP/1.1 ---------------------------------------------

/// Sends raw bytes on a new connection; returns the status line and whether the gateway
/// closed the connection after answering.
async fn raw_exchange(addr: &str, request: &str) -> (String, String) {
    let mut socket = bounded(TcpStream::connect(addr)).await.unwrap();
    bounded(socket.write_all(request.as_bytes())).await.unwrap();
    let mut answer = Vec::new();
    // The gateway closes: read to the end, bounded.
    bounded(socket.read_to_end(&mut answer)).await.unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.lines().next().unwrap_or("").to_string();
    (status, text)
}

#[tokio::test]
async fn http1_framing_a_proxy_could_read_otherwise_is_refused_and_closed() {
    let (_backend, gw) = vps_gateway(Settings::default()).await;
    let addr = gw.base.trim_start_matches("http://").to_string();
    let body = "{}";
    let cases = [
        ("no Host", format!("POST /skvps/locdata HTTP/1.1\r\ncontent-length: 2\r\n\r\n{body}"), "400"),
        (
            "two Hosts",
            format!("POST /skvps/locdata HTTP/1.1\r\nhost: a\r\nhost: b\r\ncontent-length: 2\r\n\r\n{body}"),
            "400",
        ),
        (
            "gzip, chunked",
            format!("POST /skvps/locdata HTTP/1.1\r\nhost: a\r\ntransfer-encoding: gzip, chunked\r\n\r\n2\r\n{body}\r\n0\r\n\r\n"),
            "501",
        ),
        (
            "chunked twice",
            format!("POST /skvps/locdata HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{body}\r\n0\r\n\r\n"),
            "400",
        ),
    ];
    for (name, request, status) in cases {
        let (line, text) = raw_exchange(&addr, &request).await;
        assert!(line.contains(status), "{name}: {text}");
        assert!(
            text.to_ascii_lowercase().contains("connection: close"),
            "{name}: {text}"
        );
        assert!(
            text.contains("\"code\":"),
            "{name}: not a google.rpc.Status: {text}"
        );
    }
    // Plain chunked is fine.
    let ok = format!(
        "POST /skvps/locdata HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n2\r\n{body}\r\n0\r\n\r\n"
    );
    let (line, text) = raw_exchange(&addr, &ok).await;
    assert!(line.contains("200"), "{text}");
}

#[tokio::test]
async fn grpc_over_http1_gets_a_grpc_error() {
    let (backend, gw) = vps_gateway(Settings::default()).await;
    let resp = send(
        "POST",
        &format!("{}{GET_LOCATION}", gw.base),
        &[("content-type", "application/grpc"), ("te", "trailers")],
        protogate::grpc::frame::encode_raw(b""),
    )
    .await;
    assert_eq!(resp.header("grpc-status"), Some("12"), "{:?}", resp.headers);
    let message = resp.header("grpc-message").unwrap_or_default();
    assert!(message.contains("HTTP%2F2"), "{message}");
    assert!(backend.calls().is_empty(), "the call was forwarded");
}

/// A gRPC-Web request body trickled over HTTP/1.1 and never finished is answered with
/// DEADLINE_EXCEEDED at `--body-timeout`.
#[tokio::test]
async fn a_grpc_web_body_never_finished_ends_at_the_body_timeout() {
    let settings = Settings {
        body_timeout: Duration::from_millis(500),
        ..Settings::default()
    };
    let (_backend, gw) = vps_gateway(settings).await;
    let addr = gw.base.trim_start_matches("http://").to_string();
    let mut socket = bounded(TcpStream::connect(&addr)).await.unwrap();
    let head = format!(
        "POST {GET_LOCATION} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/grpc-web\r\n\
         x-grpc-web: 1\r\ntransfer-encoding: chunked\r\n\r\n3\r\n\0\0\0\r\n"
    );
    bounded(socket.write_all(head.as_bytes())).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = bounded(socket.read(&mut answer)).await.unwrap();
    let text = String::from_utf8_lossy(&answer[..n]).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("grpc-status: 4"), "{text}");
    assert!(text.contains("body%2dtimeout"), "{text}");
}
