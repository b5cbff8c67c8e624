//! Streaming methods over REST against a real streaming gRPC backend: NDJSON and SSE server
//! streams, HttpBody streams, client streams, bidi streams that answer while the request is
//! still being sent, mid-stream failures, and cancellation reaching the backend.

use std::sync::Arc;

use crate::support::*;
use bytes::Bytes;
use futures_util::stream;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost_reflect::DescriptorPool;
use protogate::demo::backend::{self, Handlers, MessageStream, Reply, StreamCall};
use protogate::descriptor::Sources;
use protogate::server::Settings;
use serde_json::json;
use tokio::sync::{mpsc, Notify};

fn sources() -> Sources {
    Sources {
        protos: vec!["testapi/v1/rest_streams.proto".into()],
        includes: vec![repo_path("tests/protos")],
        ..Sources::default()
    }
}

/// Signals from the backend to the test.
#[derive(Default)]
struct Signals {
    /// Lets a gated stream continue past its first message.
    gate: Notify,
    /// Notified when a response stream is dropped (the call was cancelled or finished).
    dropped: Notify,
    /// Messages produced so far.
    produced: std::sync::atomic::AtomicUsize,
}

struct DropSignal(Arc<Signals>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        self.0.dropped.notify_one();
    }
}

fn decode(pool: &DescriptorPool, name: &str, bytes: Bytes) -> serde_json::Value {
    decode_json(pool, name, &bytes)
}

fn tick(pool: &DescriptorPool, name: &str, n: i32, text: &str) -> Bytes {
    encode_json(
        pool,
        "testapi.v1.Tick",
        json!({"name": name, "n": n, "text": text}),
    )
}

/// The backend: Ticks/TickTexts/Download answer the request's `count` messages (gated,
/// failing or hanging on request), Upload counts messages, Chat echoes each as it arrives.
fn handlers(pool: DescriptorPool, signals: Arc<Signals>) -> Handlers {
    let paths = ["Ticks", "TickTexts", "Upload", "Chat", "Download"]
        .map(|m| format!("/testapi.v1.Streams/{m}"))
        .to_vec();
    let streaming = backend::stream_handler(move |call: StreamCall| {
        let (pool, signals) = (pool.clone(), signals.clone());
        async move { Ok((Default::default(), answer(pool, signals, call).await?)) }
    });
    Handlers {
        unary: backend::handler(|_| async { Ok(Reply::default()) }),
        streaming: Some((paths, streaming)),
    }
}

async fn answer(
    pool: DescriptorPool,
    signals: Arc<Signals>,
    mut call: StreamCall,
) -> Result<MessageStream, tonic::Status> {
    let method = call.path.rsplit('/').next().unwrap_or_default().to_string();
    match method.as_str() {
        "Upload" => {
            let mut names = Vec::new();
            while let Some(m) = call.messages.message().await? {
                names.push(decode(&pool, "testapi.v1.Tick", m)["name"].clone());
            }
            let summary = encode_json(
                &pool,
                "testapi.v1.Summary",
                json!({"count": names.len(), "names": names}),
            );
            Ok(Box::pin(stream::iter([Ok(summary)])))
        }
        "Chat" => {
            let echoes = stream::unfold((call.messages, pool), |(mut messages, pool)| async move {
                let m = messages.message().await.ok()??;
                let name = decode(&pool, "testapi.v1.Tick", m)["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let echo = tick(&pool, &name, 0, &format!("echo:{name}"));
                Some((Ok(echo), (messages, pool)))
            });
            Ok(Box::pin(echoes))
        }
        _ => {
            let request = call.messages.message().await?.unwrap_or_default();
            let request = decode(&pool, "testapi.v1.TickRequest", request);
            Ok(ticks(pool, signals, method, request))
        }
    }
}

fn ticks(
    pool: DescriptorPool,
    signals: Arc<Signals>,
    method: String,
    request: serde_json::Value,
) -> MessageStream {
    let name = request["name"].as_str().unwrap_or_default().to_string();
    let count = request["count"].as_i64().unwrap_or(0) as i32;
    let fail = request["fail"].as_bool().unwrap_or(false);
    let hang = request["hang"].as_bool().unwrap_or(false);
    let guard = DropSignal(signals.clone());
    let state = (0, guard, pool, signals);
    Box::pin(stream::unfold(state, move |(i, guard, pool, signals)| {
        let (name, method) = (name.clone(), method.clone());
        async move {
            if i == 1 && (name == "gated" || hang) {
                match hang {
                    true => std::future::pending::<()>().await,
                    false => signals.gate.notified().await,
                }
            }
            if i >= count {
                return fail
                    .then(|| {
                        (
                            Err(tonic::Status::aborted("boom")),
                            (i + 1, guard, pool.clone(), signals.clone()),
                        )
                    })
                    .filter(|_| i == count);
            }
            signals
                .produced
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let message = match method.as_str() {
                _ if name == "flood" => tick(&pool, &name, i, &"x".repeat(1024)),
                "Download" => encode_json(
                    &pool,
                    "google.api.HttpBody",
                    json!({"content_type": "text/plain", "data": base64(&format!("chunk {i}\n"))}),
                ),
                _ => tick(&pool, &name, i, &format!("t{i}")),
            };
            Some((Ok(message), (i + 1, guard, pool, signals)))
        }
    }))
}

fn base64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

struct Fixture {
    gw: Gw,
    signals: Arc<Signals>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn fixture() -> Fixture {
    fixture_with(Settings::default()).await
}

async fn fixture_with(settings: Settings) -> Fixture {
    let pool = protogate::descriptor::load(&sources()).unwrap();
    let signals = Arc::new(Signals::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(backend::serve_all(
        listener,
        handlers(pool, signals.clone()),
        async move {
            let _ = stopped.await;
        },
    ));
    let gw = start_gateway(sources(), &url, settings).await;
    Fixture {
        gw,
        signals,
        _stop: stop,
    }
}

fn lines(body: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(body)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

#[tokio::test]
async fn server_stream_as_newline_delimited_json() {
    let f = fixture().await;
    let resp = get(&format!("{}/v1/ticks/a?count=3", f.gw.base)).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(
        lines(&resp.body),
        vec![
            json!({"result": {"name": "a", "n": 0, "text": "t0"}}),
            json!({"result": {"name": "a", "n": 1, "text": "t1"}}),
            json!({"result": {"name": "a", "n": 2, "text": "t2"}}),
        ]
    );
}

#[tokio::test]
async fn server_stream_as_server_sent_events() {
    let f = fixture().await;
    let url = format!("{}/v1/ticks/s?count=2", f.gw.base);
    let resp = send("GET", &url, &[("accept", "text/event-stream")], "").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("text/event-stream"));
    assert_eq!(
        String::from_utf8_lossy(&resp.body),
        "data: {\"name\":\"s\",\"n\":0,\"text\":\"t0\"}\n\ndata: {\"name\":\"s\",\"n\":1,\"text\":\"t1\"}\n\n"
    );
}

#[tokio::test]
async fn a_failure_after_the_first_message_is_the_last_line() {
    let f = fixture().await;
    let resp = get(&format!("{}/v1/ticks/a?count=2&fail=true", f.gw.base)).await;
    assert_eq!(resp.status, 200);
    let got = lines(&resp.body);
    assert_eq!(got.len(), 3);
    assert_eq!(
        got[2],
        json!({"error": {"code": 10, "message": "boom", "details": []}})
    );

    let url = format!("{}/v1/ticks/a?count=1&fail=true", f.gw.base);
    let sse = send("GET", &url, &[("accept", "text/event-stream")], "").await;
    let text = String::from_utf8_lossy(&sse.body).to_string();
    assert!(
        text.ends_with("event: error\ndata: {\"code\":10,\"message\":\"boom\",\"details\":[]}\n\n"),
        "{text}"
    );
}

#[tokio::test]
async fn a_failure_before_the_first_message_is_a_plain_error() {
    let f = fixture().await;
    let resp = get(&format!("{}/v1/ticks/a?count=0&fail=true", f.gw.base)).await;
    assert_eq!(resp.status, 409);
    assert_eq!(
        resp.json(),
        json!({"code": 10, "message": "boom", "details": []})
    );
    let empty = get(&format!("{}/v1/ticks/a?count=0", f.gw.base)).await;
    assert_eq!(empty.status, 200);
    assert!(empty.body.is_empty());
}

#[tokio::test]
async fn response_body_applies_to_each_message() {
    let f = fixture().await;
    let resp = get(&format!("{}/v1/texts/a?count=2", f.gw.base)).await;
    assert_eq!(
        lines(&resp.body),
        vec![json!({"result": "t0"}), json!({"result": "t1"})]
    );
}

#[tokio::test]
async fn http_body_streams_raw_bytes() {
    let f = fixture().await;
    let resp = get(&format!("{}/v1/download/d?count=3", f.gw.base)).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("text/plain"));
    assert_eq!(resp.body.as_ref(), b"chunk 0\nchunk 1\nchunk 2\n");
}

#[tokio::test]
async fn client_stream_of_concatenated_json_values() {
    let f = fixture().await;
    let body = "{\"name\":\"a\"}\n{\"name\":\"b\"} {\"name\":\"c\"}";
    let resp = send("POST", &format!("{}/v1/upload/x", f.gw.base), &[], body).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    // The path variable binds `text` in every message; the names are the body's.
    assert_eq!(resp.json(), json!({"count": 3, "names": ["a", "b", "c"]}));

    let empty = send("POST", &format!("{}/v1/upload/x", f.gw.base), &[], "").await;
    assert_eq!(empty.json(), json!({"count": 0, "names": []}));
}

#[tokio::test]
async fn a_bad_message_in_a_client_stream_is_a_400_naming_it() {
    let f = fixture().await;
    let body = "{\"name\":\"a\"} {\"name\": 7}";
    let resp = send("POST", &format!("{}/v1/upload/x", f.gw.base), &[], body).await;
    assert_eq!(resp.status, 400, "{:?}", resp.body);
    assert!(
        resp.json()["message"]
            .as_str()
            .unwrap()
            .contains("invalid JSON body"),
        "{:?}",
        resp.json()
    );
    let truncated = send(
        "POST",
        &format!("{}/v1/upload/x", f.gw.base),
        &[],
        "{\"name\":\"a\"} {\"na",
    )
    .await;
    assert_eq!(truncated.status, 400);
    assert!(
        truncated.json()["message"]
            .as_str()
            .unwrap()
            .contains("message 1"),
        "{:?}",
        truncated.json()
    );
}

type PendingResponse = tokio::task::JoinHandle<hyper::Response<hyper::body::Incoming>>;

/// A request whose body the test writes piece by piece (HTTP/2, or HTTP/1.1 chunked); the
/// response arrives on the returned task.
async fn streamed_request(
    base: &str,
    method: &str,
    path: &str,
    http2: bool,
) -> (mpsc::Sender<Bytes>, PendingResponse) {
    let addr = base.trim_start_matches("http://");
    let stream = TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let frames = stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(Frame::data(b)), rx))
    });
    let request = hyper::Request::builder()
        .method(method)
        .uri(if http2 {
            format!("{base}{path}")
        } else {
            path.to_string()
        })
        .header("host", addr)
        .body(StreamBody::new(Box::pin(frames)))
        .unwrap();
    let response = if http2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), stream)
                .await
                .unwrap();
        tokio::spawn(conn);
        tokio::spawn(async move { sender.send_request(request).await.unwrap() })
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(stream).await.unwrap();
        tokio::spawn(conn);
        tokio::spawn(async move { sender.send_request(request).await.unwrap() })
    };
    (tx, response)
}

async fn h2_request(
    base: &str,
    method: &str,
    path: &str,
) -> (mpsc::Sender<Bytes>, PendingResponse) {
    streamed_request(base, method, path, true).await
}

async fn response_of(pending: PendingResponse) -> hyper::Response<hyper::body::Incoming> {
    bounded(pending).await.unwrap()
}

/// The next non-empty chunk of a streaming body.
async fn next_chunk(body: &mut hyper::body::Incoming) -> Option<Bytes> {
    loop {
        let frame = bounded(body.frame()).await?.unwrap();
        if let Ok(data) = frame.into_data() {
            if !data.is_empty() {
                return Some(data);
            }
        }
    }
}

#[tokio::test]
async fn bidi_answers_while_the_request_is_still_open() {
    for http2 in [true, false] {
        bidi_interleaves(http2).await;
    }
}

async fn bidi_interleaves(http2: bool) {
    let f = fixture().await;
    let (tx, pending) = streamed_request(&f.gw.base, "POST", "/v1/chat", http2).await;
    // The response headers can only arrive once the first request message went through.
    tx.send(Bytes::from_static(b"{\"name\":\"one\"}\n"))
        .await
        .unwrap();
    let response = response_of(pending).await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = next_chunk(&mut body).await.unwrap();
    assert_eq!(
        lines(&first),
        vec![json!({"result": {"name": "one", "n": 0, "text": "echo:one"}})]
    );
    // The request is still open: a second message gets a second answer.
    tx.send(Bytes::from_static(b"{\"name\":\"tw"))
        .await
        .unwrap();
    tx.send(Bytes::from_static(b"o\"}")).await.unwrap();
    let second = next_chunk(&mut body).await.unwrap();
    assert_eq!(
        lines(&second),
        vec![json!({"result": {"name": "two", "n": 0, "text": "echo:two"}})]
    );
    drop(tx);
    assert_eq!(next_chunk(&mut body).await, None);
}

/// A REST bidi stream on which nothing passes for the idle limit ends with an error line
/// (DEADLINE_EXCEEDED), after the answers it had.
#[tokio::test]
async fn a_rest_stream_idle_past_the_limit_ends_with_an_error_line() {
    let f = fixture_with(Settings {
        stream_idle_timeout: std::time::Duration::from_millis(500),
        ..Settings::default()
    })
    .await;
    let (tx, pending) = h2_request(&f.gw.base, "POST", "/v1/chat").await;
    tx.send(Bytes::from_static(b"{\"name\":\"one\"}\n"))
        .await
        .unwrap();
    let mut body = response_of(pending).await.into_body();
    let first = next_chunk(&mut body).await.unwrap();
    assert_eq!(lines(&first)[0]["result"]["text"], "echo:one");
    // The request stays open and silent.
    let last = next_chunk(&mut body).await.unwrap();
    let error = &lines(&last)[0]["error"];
    assert_eq!(error["code"], 4, "{error}");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("--stream-idle-timeout"));
    assert_eq!(next_chunk(&mut body).await, None);
    drop(tx);
}

#[tokio::test]
async fn messages_are_flushed_as_they_arrive() {
    let f = fixture().await;
    let (tx, pending) = h2_request(&f.gw.base, "GET", "/v1/ticks/gated?count=2").await;
    drop(tx);
    let mut body = response_of(pending).await.into_body();
    let first = next_chunk(&mut body).await.unwrap();
    assert_eq!(
        lines(&first)[0]["result"]["n"],
        0,
        "the first message came before the gate opened"
    );
    f.signals.gate.notify_one();
    let second = next_chunk(&mut body).await.unwrap();
    assert_eq!(lines(&second)[0]["result"]["n"], 1);
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_upstream_call() {
    let f = fixture().await;
    let (tx, pending) = h2_request(&f.gw.base, "GET", "/v1/ticks/h?count=5&hang=true").await;
    drop(tx);
    let mut body = response_of(pending).await.into_body();
    assert!(next_chunk(&mut body).await.is_some());
    let dropped = f.signals.dropped.notified();
    drop(body);
    bounded(dropped).await;
}

#[tokio::test]
async fn an_http1_client_also_gets_the_stream() {
    let f = fixture().await;
    let resp = send(
        "POST",
        &format!("{}/v1/chat", f.gw.base),
        &[],
        "{\"name\":\"a\"}{\"name\":\"b\"}",
    )
    .await;
    assert_eq!(resp.status, 200);
    let names: Vec<_> = lines(&resp.body)
        .iter()
        .map(|l| l["result"]["text"].clone())
        .collect();
    assert_eq!(names, vec![json!("echo:a"), json!("echo:b")]);
}

#[tokio::test]
async fn stream_deadline_ends_the_stream_with_504_or_an_error_line() {
    let f = fixture().await;
    let url = format!("{}/v1/ticks/h?count=5&hang=true", f.gw.base);
    let resp = send("GET", &url, &[("grpc-timeout", "300m")], "").await;
    assert_eq!(resp.status, 200);
    let got = lines(&resp.body);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1]["error"]["code"], 4);
}

#[tokio::test]
async fn a_client_that_does_not_read_holds_the_upstream_back() {
    use std::sync::atomic::Ordering;
    let f = fixture().await;
    let total = 100_000; // about 100 MB if nothing held the backend back
    let path = format!("/v1/ticks/flood?count={total}");
    let (tx, pending) = h2_request(&f.gw.base, "GET", &path).await;
    drop(tx);
    let mut body = response_of(pending).await.into_body();
    assert!(next_chunk(&mut body).await.is_some());
    // The client now reads nothing. Wait until the backend stops producing.
    let mut last = 0;
    let mut unchanged = 0;
    for _ in 0..400 {
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        let now = f.signals.produced.load(Ordering::Relaxed);
        unchanged = if now == last { unchanged + 1 } else { 0 };
        last = now;
        if unchanged >= 8 {
            break;
        }
    }
    assert!(
        unchanged >= 8,
        "the backend never stopped: {last} messages produced"
    );
    assert!(
        last < total / 4,
        "{last} of {total} messages were produced for a client that reads nothing"
    );
    drop(body);
}
