//! Streaming methods over WebSocket, against a real streaming gRPC backend: bidi, client and
//! server streams in text and binary frames, how a call's end reaches the client (Close 1000,
//! or an error frame and Close 4000 + code), the refusals before the upgrade, the bounds
//! (message size, idle time, a client that vanishes or stops answering pings), HTTP/2
//! extended CONNECT, and real clients other than tungstenite: Python's `websockets`, node's
//! built-in WebSocket and headless Chromium's, from a page on another origin.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use futures_util::{stream, SinkExt, StreamExt};
use prost_reflect::DescriptorPool;
use protogate::demo::backend::{self, Handlers, MessageStream, Reply, StreamCall};
use protogate::descriptor::Sources;
use protogate::server::{CorsPolicy, Settings};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn sources() -> Sources {
    Sources {
        protos: vec![
            "testapi/v1/rest_streams.proto".into(),
            "testapi/v1/library.proto".into(),
        ],
        includes: vec![repo_path("tests/protos")],
        ..Sources::default()
    }
}

/// What the backend tells the test.
#[derive(Default)]
struct Signals {
    /// Notified when a response stream is dropped (its call was cancelled or finished).
    dropped: Notify,
    /// Request messages received, over every call.
    received: AtomicUsize,
    /// Response messages produced, over every call.
    produced: AtomicUsize,
    /// The metadata of the last streaming call.
    metadata: Mutex<Option<tonic::metadata::MetadataMap>>,
}

struct DropSignal(Arc<Signals>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        self.0.dropped.notify_one();
    }
}

fn tick(pool: &DescriptorPool, name: &str, n: i32, text: &str) -> Bytes {
    encode_json(
        pool,
        "testapi.v1.Tick",
        json!({"name": name, "n": n, "text": text}),
    )
}

/// Ticks answers `count` ticks (then fails with ABORTED on `fail`, or hangs after the first
/// on `hang`; 1 KiB each for the name `flood`), Upload counts the messages (and stops
/// reading after the first one with the text `stall`), Chat echoes each as it arrives.
fn handlers(pool: DescriptorPool, signals: Arc<Signals>) -> Handlers {
    let paths = ["Ticks", "Upload", "Chat"]
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
    *signals.metadata.lock().unwrap() = Some(call.metadata.clone());
    let method = call.path.rsplit('/').next().unwrap_or_default().to_string();
    match method.as_str() {
        "Upload" => {
            let mut names = Vec::new();
            while let Some(m) = call.messages.message().await? {
                signals.received.fetch_add(1, Ordering::Relaxed);
                let tick = decode_json(&pool, "testapi.v1.Tick", &m);
                if tick["text"] == "stall" {
                    // Reads nothing more, ever.
                    std::future::pending::<()>().await;
                }
                names.push(tick["name"].clone());
            }
            let summary = encode_json(
                &pool,
                "testapi.v1.Summary",
                json!({"count": names.len(), "names": names}),
            );
            Ok(Box::pin(stream::iter([Ok(summary)])))
        }
        "Chat" => {
            let state = (call.messages, pool, DropSignal(signals.clone()), signals);
            let echoes = stream::unfold(state, |(mut messages, pool, guard, signals)| async move {
                let m = messages.message().await.ok()??;
                signals.received.fetch_add(1, Ordering::Relaxed);
                let name = decode_json(&pool, "testapi.v1.Tick", &m)["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let echo = tick(&pool, &name, 0, &format!("echo:{name}"));
                Some((Ok(echo), (messages, pool, guard, signals)))
            });
            Ok(Box::pin(echoes))
        }
        _ => {
            let request = call.messages.message().await?.unwrap_or_default();
            signals.received.fetch_add(1, Ordering::Relaxed);
            let request = decode_json(&pool, "testapi.v1.TickRequest", &request);
            Ok(ticks(pool, signals, request))
        }
    }
}

fn ticks(pool: DescriptorPool, signals: Arc<Signals>, request: Value) -> MessageStream {
    let name = request["name"].as_str().unwrap_or_default().to_string();
    let count = request["count"].as_i64().unwrap_or(0) as i32;
    let fail = request["fail"].as_bool().unwrap_or(false);
    let hang = request["hang"].as_bool().unwrap_or(false);
    let state = (0, DropSignal(signals.clone()), pool);
    Box::pin(stream::unfold(state, move |(i, guard, pool)| {
        let (name, signals) = (name.clone(), signals.clone());
        async move {
            if i == 1 && hang {
                std::future::pending::<()>().await;
            }
            if i >= count {
                let failure = (Err(tonic::Status::aborted("boom")), (i + 1, guard, pool));
                return fail.then_some(failure).filter(|_| i == count);
            }
            signals.produced.fetch_add(1, Ordering::Relaxed);
            let text = match name.as_str() {
                "flood" => "x".repeat(1024),
                _ => format!("t{i}"),
            };
            let message = tick(&pool, &name, i, &text);
            Some((Ok(message), (i + 1, guard, pool)))
        }
    }))
}

struct Fixture {
    gw: Gw,
    signals: Arc<Signals>,
    pool: DescriptorPool,
    _backend: Served,
}

async fn fixture() -> Fixture {
    fixture_with(Settings::default()).await
}

async fn fixture_with(settings: Settings) -> Fixture {
    let pool = protogate::descriptor::load(&sources()).unwrap();
    let signals = Arc::new(Signals::default());
    let backend = serve_handlers(handlers(pool.clone(), signals.clone())).await;
    let gw = start_gateway(sources(), &backend.url, settings).await;
    Fixture {
        gw,
        signals,
        pool,
        _backend: backend,
    }
}

impl Fixture {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gw.base.replacen("http://", "ws://", 1))
    }

    async fn connect(&self, path: &str) -> Ws {
        connect_with(&self.url(path), &[]).await.unwrap()
    }
}

async fn connect_with(url: &str, headers: &[(&str, &str)]) -> Result<Ws, WsError> {
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    bounded(tokio_tungstenite::connect_async(request))
        .await
        .map(|(ws, _)| ws)
}

/// The next data or Close frame (pings are answered by reading on).
async fn next(ws: &mut Ws) -> Message {
    loop {
        let message = bounded(ws.next())
            .await
            .expect("the gateway ended the stream without a Close")
            .unwrap();
        if message.is_text() || message.is_binary() || message.is_close() {
            return message;
        }
    }
}

async fn next_json(ws: &mut Ws) -> Value {
    match next(ws).await {
        Message::Text(text) => serde_json::from_str(&text).unwrap(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

async fn next_close(ws: &mut Ws) -> CloseFrame {
    match next(ws).await {
        Message::Close(Some(frame)) => frame,
        other => panic!("expected a Close frame, got {other:?}"),
    }
}

async fn send_text(ws: &mut Ws, text: &str) {
    bounded(ws.send(Message::text(text))).await.unwrap();
}

/// Sends the client's Close (its half of the call ends; the gateway's answers still come).
async fn close(ws: &mut Ws) {
    bounded(ws.close(None)).await.unwrap();
}

#[tokio::test]
async fn bidi_text_frames_are_answered_before_the_client_closes() {
    let f = fixture().await;
    let mut ws = f.connect("/v1/chat").await;
    send_text(&mut ws, r#"{"name":"one"}"#).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"result": {"name": "one", "n": 0, "text": "echo:one"}})
    );
    send_text(&mut ws, r#"{"name":"two"}"#).await;
    assert_eq!(next_json(&mut ws).await["result"]["text"], "echo:two");
    close(&mut ws).await;
    let closed = next_close(&mut ws).await;
    assert_eq!(closed.code, CloseCode::Normal);
}

#[tokio::test]
async fn a_client_stream_answers_after_the_clients_close() {
    let f = fixture().await;
    let mut ws = f.connect("/v1/upload/fromPath").await;
    for name in ["a", "b", "c"] {
        send_text(&mut ws, &format!(r#"{{"name":"{name}"}}"#)).await;
    }
    close(&mut ws).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"result": {"count": 3, "names": ["a", "b", "c"]}})
    );
    assert_eq!(next_close(&mut ws).await.code, CloseCode::Normal);
}

#[tokio::test]
async fn a_server_stream_starts_with_the_first_frame_and_takes_path_and_query() {
    let f = fixture().await;
    let mut ws = f.connect("/v1/ticks/a?count=3").await;
    send_text(&mut ws, "{}").await;
    for n in 0..3 {
        assert_eq!(
            next_json(&mut ws).await,
            json!({"result": {"name": "a", "n": n, "text": format!("t{n}")}})
        );
    }
    assert_eq!(next_close(&mut ws).await.code, CloseCode::Normal);

    // An empty frame is an empty message too.
    let mut ws = f.connect("/v1/ticks/b?count=1").await;
    send_text(&mut ws, "").await;
    assert_eq!(next_json(&mut ws).await["result"]["name"], "b");
    assert_eq!(next_close(&mut ws).await.code, CloseCode::Normal);
}

#[tokio::test]
async fn binary_frames_carry_wire_bytes_with_path_and_query_applied_over_them() {
    let f = fixture().await;
    let mut ws = f.connect("/v1/chat").await;
    let request = tick(&f.pool, "bin", 0, "");
    bounded(ws.send(Message::binary(request))).await.unwrap();
    let Message::Binary(answer) = next(&mut ws).await else {
        panic!("a binary answer to a binary frame");
    };
    let answer = decode_json(&f.pool, "testapi.v1.Tick", &answer);
    assert_eq!(answer["text"], "echo:bin");
    // The kind of the client's last frame decides the kind of the answer.
    send_text(&mut ws, r#"{"name":"txt"}"#).await;
    assert_eq!(next_json(&mut ws).await["result"]["text"], "echo:txt");
    close(&mut ws).await;
    assert_eq!(next_close(&mut ws).await.code, CloseCode::Normal);

    // The path variable and the query win over the wire bytes (protobuf merge semantics).
    let mut ws = f.connect("/v1/ticks/fromPath?count=2").await;
    let request = encode_json(
        &f.pool,
        "testapi.v1.TickRequest",
        json!({"name": "fromBody", "count": 5}),
    );
    bounded(ws.send(Message::binary(request))).await.unwrap();
    for n in 0..2 {
        let Message::Binary(answer) = next(&mut ws).await else {
            panic!("binary answers");
        };
        let answer = decode_json(&f.pool, "testapi.v1.Tick", &answer);
        assert_eq!(answer["name"], "fromPath");
        assert_eq!(answer["n"].as_i64().unwrap_or(0), n);
    }
    assert_eq!(next_close(&mut ws).await.code, CloseCode::Normal);
}

#[tokio::test]
async fn a_failed_call_sends_its_status_then_closes_with_4000_plus_the_code() {
    let f = fixture().await;
    let mut ws = f.connect("/v1/ticks/a?count=1&fail=true").await;
    // A binary client still gets the error as text.
    let request = encode_json(&f.pool, "testapi.v1.TickRequest", json!({}));
    bounded(ws.send(Message::binary(request))).await.unwrap();
    assert!(next(&mut ws).await.is_binary());
    assert_eq!(
        next_json(&mut ws).await,
        json!({"error": {"code": 10, "message": "boom", "details": []}})
    );
    let closed = next_close(&mut ws).await;
    assert_eq!(u16::from(closed.code), 4010);
    assert_eq!(closed.reason.as_str(), "boom");
}

#[tokio::test]
async fn a_bad_message_fails_the_call_with_invalid_argument() {
    let f = fixture().await;
    let mut ws = f.connect("/v1/chat").await;
    send_text(&mut ws, r#"{"name": 7}"#).await;
    let error = next_json(&mut ws).await;
    assert_eq!(error["error"]["code"], 3, "{error}");
    assert_eq!(u16::from(next_close(&mut ws).await.code), 4003);
}

#[tokio::test]
async fn an_unreachable_upstream_closes_with_4014_and_names_no_address() {
    let dead = dead_url().await;
    let gw = start_gateway(sources(), &dead, Settings::default()).await;
    let url = format!("{}/v1/chat", gw.base.replacen("http://", "ws://", 1));
    let mut ws = connect_with(&url, &[]).await.unwrap();
    send_text(&mut ws, r#"{"name":"one"}"#).await;
    let error = next_json(&mut ws).await;
    assert_eq!(error["error"]["code"], 14, "{error}");
    let closed = next_close(&mut ws).await;
    assert_eq!(u16::from(closed.code), 4014);
    let port = dead.rsplit(':').next().unwrap();
    for text in [error.to_string(), closed.reason.to_string()] {
        assert!(!text.contains(port), "an internal address leaked: {text}");
    }
}

#[tokio::test]
async fn the_upgrades_headers_are_the_calls_metadata() {
    let f = fixture().await;
    let headers = [
        ("authorization", "Bearer t0ken"),
        ("grpc-metadata-tenant", "acme"),
    ];
    let mut ws = connect_with(&f.url("/v1/chat"), &headers).await.unwrap();
    send_text(&mut ws, r#"{"name":"one"}"#).await;
    next_json(&mut ws).await;
    let metadata = f.signals.metadata.lock().unwrap().clone().unwrap();
    assert_eq!(metadata.get("authorization").unwrap(), "Bearer t0ken");
    assert_eq!(metadata.get("tenant").unwrap(), "acme");
    assert!(metadata.get("sec-websocket-key").is_none());
}

#[tokio::test]
async fn a_client_that_vanishes_cancels_the_call() {
    let f = fixture().await;
    for reset in [true, false] {
        let mut ws = f.connect("/v1/ticks/h?count=5&hang=true").await;
        send_text(&mut ws, "{}").await;
        next_json(&mut ws).await;
        let dropped = f.signals.dropped.notified();
        // No Close frame: the connection is reset, or just closed.
        if let (true, MaybeTlsStream::Plain(tcp)) = (reset, ws.get_ref()) {
            tcp.set_zero_linger().unwrap();
        }
        drop(ws);
        bounded(dropped).await;
    }
}

#[tokio::test]
async fn a_client_that_answers_no_ping_is_gone() {
    let f = fixture_with(Settings {
        websocket_ping_interval: Duration::from_millis(200),
        ..Settings::default()
    })
    .await;
    let mut ws = f.connect("/v1/ticks/h?count=5&hang=true").await;
    send_text(&mut ws, "{}").await;
    next_json(&mut ws).await;
    // The client now reads nothing, so it answers no ping: the gateway gives up on it.
    let dropped = f.signals.dropped.notified();
    bounded(dropped).await;
    drop(ws);
}

#[tokio::test]
async fn a_client_that_answers_pings_stays() {
    let f = fixture_with(Settings {
        websocket_ping_interval: Duration::from_millis(100),
        ..Settings::default()
    })
    .await;
    let mut ws = f.connect("/v1/chat").await;
    // Reading answers the gateway's pings; a second at 100 ms is many pings.
    let mut pings = 0;
    let ended = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(message)) = ws.next().await {
            pings += usize::from(message.is_ping());
        }
    })
    .await;
    assert!(
        ended.is_err(),
        "the session ended while the client answered"
    );
    assert!(pings >= 3, "{pings} pings in a second");
    send_text(&mut ws, r#"{"name":"still"}"#).await;
    assert_eq!(next_json(&mut ws).await["result"]["text"], "echo:still");
}

#[tokio::test]
async fn a_message_over_the_limit_closes_with_1009_and_is_not_forwarded() {
    let f = fixture_with(Settings {
        max_request_bytes: 1024,
        ..Settings::default()
    })
    .await;
    let mut ws = f.connect("/v1/chat").await;
    send_text(&mut ws, r#"{"name":"small"}"#).await;
    next_json(&mut ws).await;
    let big = format!(r#"{{"name":"{}"}}"#, "x".repeat(2000));
    // The gateway may close before the whole frame is written.
    let _ = bounded(ws.send(Message::text(big))).await;
    let closed = next_close(&mut ws).await;
    assert_eq!(closed.code, CloseCode::Size);
    assert!(closed.reason.contains("--max-request-bytes"), "{closed:?}");
    assert_eq!(f.signals.received.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn no_message_either_way_for_the_idle_limit_closes_with_1001_and_cancels() {
    let f = fixture_with(Settings {
        stream_idle_timeout: Duration::from_millis(300),
        ..Settings::default()
    })
    .await;
    let mut ws = f.connect("/v1/ticks/h?count=5&hang=true").await;
    send_text(&mut ws, "{}").await;
    next_json(&mut ws).await;
    let dropped = f.signals.dropped.notified();
    let closed = next_close(&mut ws).await;
    assert_eq!(closed.code, CloseCode::Away);
    assert!(
        closed.reason.contains("--stream-idle-timeout"),
        "{closed:?}"
    );
    bounded(dropped).await;
}

/// The status and `google.rpc.Status` body of a refused handshake.
async fn refused(url: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    match connect_with(url, headers).await {
        Err(WsError::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
            (response.status().as_u16(), json)
        }
        Ok(_) => panic!("the upgrade to {url} was accepted"),
        Err(e) => panic!("the upgrade to {url} failed otherwise: {e}"),
    }
}

#[tokio::test]
async fn unknown_paths_and_unary_methods_are_refused_before_the_upgrade() {
    let f = fixture().await;
    let (status, body) = refused(&f.url("/v1/nowhere"), &[]).await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], 5, "{body}");
    let (status, body) = refused(&f.url("/v1/shelves/s1/books"), &[]).await;
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("unary"),
        "{body}"
    );
    assert_eq!(f.signals.received.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn origins_are_checked_before_the_upgrade() {
    let policy = CorsPolicy::from_origins(&["http://app.example".into()]).unwrap();
    let f = fixture_with(Settings {
        cors: policy,
        ..Settings::default()
    })
    .await;
    let (status, body) = refused(&f.url("/v1/chat"), &[("origin", "http://evil.example")]).await;
    assert_eq!(status, 403);
    assert_eq!(body["code"], 7, "{body}");

    let own = f.gw.base.clone();
    for origin in ["http://app.example", own.as_str()] {
        let mut ws = connect_with(&f.url("/v1/chat"), &[("origin", origin)])
            .await
            .unwrap_or_else(|e| panic!("{origin}: {e}"));
        send_text(&mut ws, r#"{"name":"ok"}"#).await;
        assert_eq!(next_json(&mut ws).await["result"]["text"], "echo:ok");
    }
    assert_eq!(f.signals.received.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn the_upgrade_is_counted_under_the_websocket_protocol() {
    let f = fixture().await;
    let mut ws = f.connect("/v1/chat").await;
    send_text(&mut ws, r#"{"name":"m"}"#).await;
    next_json(&mut ws).await;
    let metrics = get(&format!("{}/metrics", f.gw.base)).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.lines().any(|l| l.contains("protocol=\"websocket\"")
            && l.contains("http_response_status_code=\"101\"")),
        "{text}"
    );
}

/// RFC 8441: the same call over an HTTP/2 stream opened by an extended CONNECT.
#[tokio::test]
async fn http2_extended_connect_carries_a_websocket() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio_tungstenite::tungstenite::protocol::Role;

    let f = fixture().await;
    let addr = f.gw.base.trim_start_matches("http://").to_string();
    let tcp = TokioIo::new(TcpStream::connect(&addr).await.unwrap());
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), tcp)
        .await
        .unwrap();
    tokio::spawn(conn);
    // A first request lets the server's SETTINGS (which enable CONNECT) arrive.
    let empty = || http_body_util::Empty::<Bytes>::new();
    let probe = http::Request::get(format!("{}/healthz", f.gw.base))
        .body(empty())
        .unwrap();
    bounded(sender.send_request(probe)).await.unwrap();
    let mut connect = http::Request::connect(format!("{}/v1/chat", f.gw.base))
        .header("sec-websocket-version", "13")
        .body(empty())
        .unwrap();
    connect
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let response = bounded(sender.send_request(connect)).await.unwrap();
    assert_eq!(response.status(), 200);
    let upgraded = bounded(hyper::upgrade::on(response)).await.unwrap();
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    bounded(ws.send(Message::text(r#"{"name":"h2"}"#)))
        .await
        .unwrap();
    let answer = loop {
        match bounded(ws.next()).await.unwrap().unwrap() {
            Message::Text(text) => break serde_json::from_str::<Value>(&text).unwrap(),
            _ => continue,
        }
    };
    assert_eq!(answer["result"]["text"], "echo:h2");
    bounded(ws.close(None)).await.unwrap();
    let closed = loop {
        match bounded(ws.next()).await.unwrap().unwrap() {
            Message::Close(frame) => break frame.unwrap(),
            _ => continue,
        }
    };
    assert_eq!(closed.code, CloseCode::Normal);
}

/// An open session counts against `--max-concurrent-requests` until it closes.
#[tokio::test]
async fn a_session_holds_its_admission_until_it_closes() {
    let f = fixture_with(Settings {
        max_concurrent_requests: 1,
        ..Settings::default()
    })
    .await;
    let mut ws = f.connect("/v1/chat").await;
    send_text(&mut ws, r#"{"name":"one"}"#).await;
    next_json(&mut ws).await;
    let (status, _) = refused(&f.url("/v1/chat"), &[]).await;
    assert_eq!(status, 503);
    close(&mut ws).await;
    assert_eq!(next_close(&mut ws).await.code, CloseCode::Normal);
    drop(ws);
    // Once the session is over, the next one is admitted.
    let again = bounded(async {
        loop {
            if let Ok(ws) = connect_with(&f.url("/v1/chat"), &[]).await {
                return ws;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    drop(again);
}

/// Soak: 200 sessions open at once through one gateway, messages both ways for a few
/// seconds, every one closed cleanly at the end; afterwards the runtime holds no more tasks
/// than before (no session, call or connection left behind).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_sessions_at_once_all_close_cleanly_and_leave_nothing_behind() {
    const SESSIONS: usize = 200;
    const FOR: Duration = Duration::from_secs(3);
    let _ = rlimit::increase_nofile_limit(4 * SESSIONS as u64 + 256);
    let f = fixture().await;
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    // One session first, so the upstream connections (which stay) are open.
    let mut warm = f.connect("/v1/chat").await;
    send_text(&mut warm, r#"{"name":"warm"}"#).await;
    next_json(&mut warm).await;
    close(&mut warm).await;
    assert_eq!(next_close(&mut warm).await.code, CloseCode::Normal);
    drop(warm);
    let settle = |bound: usize| async move {
        bounded(async {
            loop {
                let now = tasks();
                if now <= bound {
                    return now;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
    };
    let tasks_before = settle(usize::MAX).await;
    let rss_before = vm_rss_kib();
    let mut opened = Vec::new();
    for _ in 0..SESSIONS {
        opened.push(f.connect("/v1/chat").await);
    }
    assert!(
        tasks() > tasks_before + SESSIONS,
        "the sessions run as tasks"
    );
    let until = tokio::time::Instant::now() + FOR;
    let sessions = opened.into_iter().enumerate().map(|(i, mut ws)| {
        tokio::spawn(async move {
            let mut exchanged = 0;
            while tokio::time::Instant::now() < until {
                send_text(&mut ws, &format!(r#"{{"name":"s{i}-{exchanged}"}}"#)).await;
                let answer = next_json(&mut ws).await;
                assert_eq!(
                    answer["result"]["text"],
                    format!("echo:s{i}-{exchanged}"),
                    "{answer}"
                );
                exchanged += 1;
            }
            close(&mut ws).await;
            assert_eq!(next_close(&mut ws).await.code, CloseCode::Normal);
            exchanged
        })
    });
    let exchanged: Vec<usize> = bounded(futures_util::future::join_all(sessions))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(exchanged.iter().all(|n| *n > 0), "{exchanged:?}");
    let total: usize = exchanged.iter().sum();
    // Every session's task, call and connection ends (bounded by the gateway's wait for
    // Close answers, which the clients gave).
    // A leak would be a task or more per session; a few come and go with the connections
    // to the backend.
    let settled = settle(tasks_before + 10).await;
    let rss_after = vm_rss_kib();
    let _ = writeln!(
        std::io::stderr(),
        "websocket soak: {SESSIONS} sessions, {total} messages each way in {FOR:?}; tasks \
         {tasks_before} -> {settled}; VmRSS {rss_before} -> {rss_after} KiB (the whole test \
         process, for information)"
    );
    assert!(total >= SESSIONS * 5, "only {total} messages exchanged");
}

/// The process's resident memory, in KiB (0 where `/proc` is missing).
fn vm_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Whether `tool` can run here; skips (with a message) or, under `CI=true`, fails.
fn tool_present(found: bool, what: &str, install: &str) -> bool {
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{what} is missing under CI: .ci/run installs it ({install})"
        );
        // Straight to the terminal: libtest would swallow eprintln! of a passing test.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: the WebSocket client test needs {what} ({install}); CI installs it and \
             runs this test"
        );
    }
    found
}

/// The Python that has the tools: `PROTOGATE_PYTHON` (set by `.ci/run`), else the venv
/// `ci/venv.sh` makes, else `python3`.
fn python() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("PROTOGATE_PYTHON") {
        return path.into();
    }
    let venv = repo_path("target/ci-venv/bin/python");
    if venv.exists() {
        return venv;
    }
    "python3".into()
}

/// Runs `program` with `args` off the runtime's threads, within [`TIMEOUT`], and returns
/// its standard output as JSON.
async fn run_json(program: std::path::PathBuf, args: Vec<String>) -> Value {
    let output = bounded(
        tokio::process::Command::new(&program)
            .args(&args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{} failed: {}\n{stdout}",
        program.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Python's `websockets` (pinned in ci/python-tools.txt): a bidi stream with its own
/// keepalive pings (answered by the gateway), and a failed call's Close as it sees it.
const PYTHON_CLIENT: &str = r#"
import json, sys, time
from websockets.sync.client import connect
from websockets.exceptions import ConnectionClosed

base = sys.argv[1]
out = {}
with connect(base + "/v1/chat", proxy=None, ping_interval=0.2, ping_timeout=1) as ws:
    answers = []
    for name in ("py1", "py2"):
        ws.send(json.dumps({"name": name}))
        answers.append(json.loads(ws.recv(timeout=10)))
        time.sleep(0.6)  # a few of the client's pings, each answered
    ws.close()
    out["answers"] = answers
    out["close"] = [ws.close_code, ws.close_reason]
with connect(base + "/v1/ticks/a?count=1&fail=true", proxy=None) as ws:
    ws.send("{}")
    frames = [json.loads(ws.recv(timeout=10)), json.loads(ws.recv(timeout=10))]
    try:
        ws.recv(timeout=10)
    except ConnectionClosed as closed:
        out["failed"] = {"frames": frames, "code": closed.rcvd.code, "reason": closed.rcvd.reason}
print(json.dumps(out))
"#;

#[tokio::test]
async fn python_websockets_client() {
    let python = python();
    let found = std::process::Command::new(&python)
        .args(["-c", "import websockets.sync.client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !tool_present(found, "python's websockets", "bash ci/venv.sh") {
        return;
    }
    let f = fixture().await;
    let base = f.gw.base.replacen("http://", "ws://", 1);
    let out = run_json(python, vec!["-c".into(), PYTHON_CLIENT.into(), base]).await;
    assert_eq!(
        out["answers"],
        json!([
            {"result": {"name": "py1", "n": 0, "text": "echo:py1"}},
            {"result": {"name": "py2", "n": 0, "text": "echo:py2"}},
        ]),
        "{out}"
    );
    assert_eq!(out["close"], json!([1000, ""]), "{out}");
    assert_eq!(
        out["failed"],
        json!({
            "frames": [
                {"result": {"name": "a", "n": 0, "text": "t0"}},
                {"error": {"code": 10, "message": "boom", "details": []}},
            ],
            "code": 4010,
            "reason": "boom",
        }),
        "{out}"
    );
}

/// Node's built-in WebSocket (the WHATWG API browsers have; behind a flag before node 22): a
/// bidi exchange, then the client's close and the gateway's 1000 as the API reports them.
const NODE_CLIENT: &str = r#"
const base = process.argv[1];
const ws = new WebSocket(base + "/v1/chat");
const answers = [];
const timer = setTimeout(() => { console.error("timed out"); process.exit(2); }, 15000);
ws.onopen = () => ws.send(JSON.stringify({ name: "node1" }));
ws.onmessage = (event) => {
  answers.push(JSON.parse(event.data));
  if (answers.length === 1) ws.send(JSON.stringify({ name: "node2" }));
  else ws.close(1000);
};
ws.onclose = (event) => {
  clearTimeout(timer);
  console.log(JSON.stringify({ answers, code: event.code, clean: event.wasClean }));
};
"#;

#[tokio::test]
async fn node_websocket_client() {
    let node_flags = ["--experimental-websocket", "--no-warnings"];
    let probe = |flags: &[&str]| {
        std::process::Command::new("node")
            .args(flags)
            .args(["-e", "if (typeof WebSocket !== 'function') process.exit(1)"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    // Node 22 and later have it without the flag (and may refuse the flag one day).
    let flags: &[&str] = if probe(&[]) { &[] } else { &node_flags };
    if !tool_present(
        probe(flags),
        "node (20.10 or later)",
        "apt-get install nodejs",
    ) {
        return;
    }
    let f = fixture().await;
    let base = f.gw.base.replacen("http://", "ws://", 1);
    let mut args: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
    args.extend(["-e".into(), NODE_CLIENT.into(), base]);
    let out = run_json("node".into(), args).await;
    assert_eq!(
        out["answers"],
        json!([
            {"result": {"name": "node1", "n": 0, "text": "echo:node1"}},
            {"result": {"name": "node2", "n": 0, "text": "echo:node2"}},
        ]),
        "{out}"
    );
    assert_eq!(out["code"], 1000, "{out}");
    assert_eq!(out["clean"], true, "{out}");
}

/// A client stream from node's `ws` package, in text frames and in binary ones: three
/// messages, its own Close, then the answer
/// (unlike a browser's WebSocket, `ws` keeps reading after it has sent its Close, as RFC 6455
/// allows), then the gateway's Close 1000.
const WS_PACKAGE_CLIENT: &str = r#"
const WebSocket = require("ws");
const socket = new WebSocket(process.argv[1] + "/v1/upload/fromNode");
const answers = [];
const timer = setTimeout(() => { console.error("timed out"); process.exit(2); }, 15000);
const binary = process.argv[2] === "binary";
socket.on("open", () => {
  for (const name of ["a", "b", "c"]) {
    // A Tick: field 1 (name), length-delimited.
    if (binary) socket.send(Buffer.from([0x0a, 1, name.charCodeAt(0)]));
    else socket.send(JSON.stringify({ name }));
  }
  socket.close(1000);
});
socket.on("message", (data, isBinary) =>
  answers.push(isBinary ? { base64: data.toString("base64") } : JSON.parse(data.toString())));
socket.on("close", (code) => {
  clearTimeout(timer);
  console.log(JSON.stringify({ answers, code }));
});
"#;

/// The `ws` package of `ci/npm.sh` (under `PROTOGATE_NODE_MODULES`), or `None` after saying
/// why (a failure under `CI=true`).
fn ws_package() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("PROTOGATE_NODE_MODULES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| repo_path("target/ci-node/node_modules"));
    let found = dir.join("ws/package.json").is_file();
    tool_present(found, "node's ws package", "bash ci/npm.sh").then_some(dir)
}

#[tokio::test]
async fn node_ws_package_client_stream() {
    let Some(modules) = ws_package() else {
        return;
    };
    let f = fixture().await;
    let base = f.gw.base.replacen("http://", "ws://", 1);
    // The Summary {count: 3, names: [a, b, c]} on the wire, for the binary client.
    let summary = [0x08, 3, 0x12, 1, b'a', 0x12, 1, b'b', 0x12, 1, b'c'];
    let summary = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, summary);
    for (kind, answer) in [
        (
            "text",
            json!({"result": {"count": 3, "names": ["a", "b", "c"]}}),
        ),
        ("binary", json!({ "base64": summary })),
    ] {
        let mut command = tokio::process::Command::new("node");
        command
            .env("NODE_PATH", &modules)
            .args(["-e", WS_PACKAGE_CLIENT, &base, kind])
            .kill_on_drop(true);
        let output = bounded(command.output()).await.expect("node runs");
        assert!(output.status.success(), "{output:?}");
        let out: Value = serde_json::from_slice(&output.stdout).expect("one JSON line");
        assert_eq!(out["answers"], json!([answer]), "{kind}: {out}");
        assert_eq!(out["code"], 1000, "{kind}: {out}");
    }
}

/// Serves one small HTML page to every request, on a loopback port of its own: a page whose
/// origin is not the gateway's.
async fn page_server() -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let page = "<!doctype html><title>another origin</title><p>ws client</p>";
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{page}",
                    page.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    (origin, task)
}

/// The page's script: a bidi exchange over `new WebSocket(url)`, answers before its close,
/// and how the close looked to it.
fn browser_exchange(url: &str) -> String {
    format!(
        r#"(async () => {{
            const ws = new WebSocket({url:?});
            const answers = [];
            return await new Promise((resolve, reject) => {{
                setTimeout(() => reject(new Error('no close in time')), 15000);
                ws.onopen = () => ws.send(JSON.stringify({{ name: 'browser1' }}));
                ws.onmessage = (event) => {{
                    answers.push(JSON.parse(event.data));
                    if (answers.length === 1) ws.send(JSON.stringify({{ name: 'browser2' }}));
                    else ws.close(1000);
                }};
                ws.onclose = (event) => resolve({{ answers, code: event.code,
                    clean: event.wasClean, origin: location.origin }});
            }});
        }})()"#
    )
}

/// Headless Chromium's own WebSocket, from a page on another origin: allowed by
/// `--cors-allow-origin`, it holds a bidi stream; a gateway that does not allow that origin
/// refuses the handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_websocket_from_another_origin() {
    let Some(binary) = crate::support::browser::chromium() else {
        return;
    };
    let (origin, _pages) = page_server().await;
    let allowing = fixture_with(Settings {
        cors: CorsPolicy::from_origins(std::slice::from_ref(&origin)).unwrap(),
        ..Settings::default()
    })
    .await;
    let other = fixture().await;
    let url = format!("{origin}/");
    let browser = crate::support::browser::Browser::launch(&binary, &url);
    let mut page = browser.page(&url).await;
    bounded(async {
        // The page, not the blank one before it.
        let loaded = format!(
            "document.readyState === 'complete' && location.origin === {:?}",
            origin
        );
        while page.eval(&loaded).await != json!(true) {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;

    let held = page
        .eval(&browser_exchange(&allowing.url("/v1/chat")))
        .await;
    assert_eq!(held["origin"], origin.as_str(), "{held}");
    assert_eq!(
        held["answers"],
        json!([
            {"result": {"name": "browser1", "n": 0, "text": "echo:browser1"}},
            {"result": {"name": "browser2", "n": 0, "text": "echo:browser2"}},
        ]),
        "{held}"
    );
    assert_eq!(held["code"], 1000, "{held}");
    assert_eq!(held["clean"], true, "{held}");

    let refused = page.eval(&browser_exchange(&other.url("/v1/chat"))).await;
    assert_eq!(refused["answers"], json!([]), "{refused}");
    assert_eq!(refused["code"], 1006, "{refused}");
    assert_eq!(other.signals.received.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn the_deadline_ends_the_call_with_4004() {
    let f = fixture().await;
    let url = f.url("/v1/ticks/h?count=5&hang=true");
    let mut ws = connect_with(&url, &[("grpc-timeout", "300m")])
        .await
        .unwrap();
    send_text(&mut ws, "{}").await;
    assert_eq!(next_json(&mut ws).await["result"]["n"], 0);
    let error = next_json(&mut ws).await;
    assert_eq!(error["error"]["code"], 4, "{error}");
    assert_eq!(u16::from(next_close(&mut ws).await.code), 4004);
}

#[tokio::test]
async fn a_second_message_to_a_server_stream_is_refused() {
    let f = fixture().await;
    let mut ws = f.connect("/v1/ticks/h?count=5&hang=true").await;
    send_text(&mut ws, "{}").await;
    next_json(&mut ws).await;
    let dropped = f.signals.dropped.notified();
    send_text(&mut ws, "{}").await;
    let error = next_json(&mut ws).await;
    assert_eq!(error["error"]["code"], 3, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("one request message"),
        "{error}"
    );
    assert_eq!(u16::from(next_close(&mut ws).await.code), 4003);
    bounded(dropped).await;
}

#[tokio::test]
async fn the_openapi_document_marks_streaming_operations_as_websocket_routes() {
    let f = fixture().await;
    let doc = get(&format!("{}/openapi.json", f.gw.base)).await.json();
    let chat = &doc["paths"]["/v1/chat"]["post"];
    assert_eq!(chat["x-protogate-websocket"], true, "{chat}");
    assert!(
        chat["description"].as_str().unwrap().contains("WebSocket"),
        "{chat}"
    );
    let unary = &doc["paths"]["/v1/shelves/{shelf}/books"]["get"];
    assert!(unary.is_object(), "{}", doc["paths"]);
    assert!(unary.get("x-protogate-websocket").is_none(), "{unary}");
}

/// The `/docs` page's WebSocket console, in headless Chromium: on the bidi route it
/// connects, sends two messages from its text box, shows both answers, and shows the
/// gateway's Close after its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_page_console_holds_a_bidi_stream() {
    let Some(binary) = crate::support::browser::chromium() else {
        return;
    };
    let f = fixture().await;
    let url = format!("{}/docs", f.gw.base);
    let browser = crate::support::browser::Browser::launch(&binary, &url);
    let mut page = browser.page(&url).await;
    let wait = |condition: &str| {
        format!(
            r#"(async () => {{
                const started = Date.now();
                while (!({condition})) {{
                    if (Date.now() - started > 15000) throw new Error('waited in vain for {}');
                    await new Promise((r) => setTimeout(r, 20));
                }}
                return true;
            }})()"#,
            condition.replace('\'', "")
        )
    };
    let ready = "document.documentElement?.dataset.ready === 'true'";
    assert_eq!(page.eval(&wait(ready)).await, json!(true));
    let opened = page
        .eval(
            r#"(() => {
                document.querySelector('[data-route="POST /v1/chat"]').click();
                document.getElementById('ws-connect').click();
                return document.getElementById('ws-connect').disabled;
            })()"#,
        )
        .await;
    assert_eq!(opened, json!(true));
    let open = "document.getElementById('ws-state').textContent === 'open'";
    page.eval(&wait(open)).await;
    for (i, name) in ["console1", "console2"].iter().enumerate() {
        let send = format!(
            r#"(() => {{
                document.getElementById('ws-message').value = '{{"name": "{name}"}}';
                document.getElementById('ws-send').click();
                return true;
            }})()"#
        );
        page.eval(&send).await;
        let received = format!(
            "document.getElementById('ws-log').dataset.received === '{}'",
            i + 1
        );
        page.eval(&wait(&received)).await;
    }
    page.eval("document.getElementById('ws-close').click(); true")
        .await;
    page.eval(&wait("document.getElementById('ws-log').dataset.closed"))
        .await;
    let log = page
        .eval("document.getElementById('ws-log').textContent")
        .await;
    let log = log.as_str().unwrap();
    for needle in ["echo:console1", "echo:console2", "closed 1000"] {
        assert!(
            log.contains(needle),
            "{needle} is not in the console:\n{log}"
        );
    }
}

/// A client that reads nothing holds the upstream back: the backend stops producing long
/// before the stream's end instead of the gateway buffering it.
#[tokio::test]
async fn a_client_that_does_not_read_holds_the_upstream_back() {
    let f = fixture().await;
    let total = 100_000; // about 100 MB if nothing held the backend back
    let mut ws = f.connect(&format!("/v1/ticks/flood?count={total}")).await;
    send_text(&mut ws, "{}").await;
    next_json(&mut ws).await;
    // The client now reads nothing. Wait until the backend stops producing.
    let mut last = 0;
    let mut unchanged = 0;
    for _ in 0..400 {
        tokio::time::sleep(Duration::from_millis(25)).await;
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
    drop(ws);
}

/// A shutdown closes open sessions with 1001 (and cancels their calls) within its grace.
#[tokio::test]
async fn a_shutdown_closes_open_sessions_with_1001() {
    let f = fixture().await;
    let mut ws = f.connect("/v1/ticks/h?count=5&hang=true").await;
    send_text(&mut ws, "{}").await;
    next_json(&mut ws).await;
    let dropped = f.signals.dropped.notified();
    drop(f.gw); // stops the gateway's server
    let closed = next_close(&mut ws).await;
    assert_eq!(closed.code, CloseCode::Away);
    assert!(closed.reason.contains("shutting down"), "{closed:?}");
    bounded(dropped).await;
}

/// A message far larger than the socket reads at once arrives whole, both ways.
#[tokio::test]
async fn large_messages_pass_whole() {
    let f = fixture().await;
    let mut ws = f.connect("/v1/chat").await;
    let name = "n".repeat(300_000);
    send_text(&mut ws, &format!(r#"{{"name":"{name}"}}"#)).await;
    let answer = next_json(&mut ws).await;
    assert_eq!(
        answer["result"]["name"].as_str().map(str::len),
        Some(300_000)
    );
    close(&mut ws).await;
    assert_eq!(next_close(&mut ws).await.code, CloseCode::Normal);
}

/// An upstream that takes no more messages holds the client back: its frames stop being
/// read, and its sends stall, long before it has sent everything.
#[tokio::test]
async fn an_upstream_that_does_not_read_holds_the_client_back() {
    let f = fixture().await;
    let total = 1000; // 64 MB if nothing held the client back
    let message = format!(r#"{{"name":"{}"}}"#, "x".repeat(64 << 10));
    let mut ws = f.connect("/v1/upload/stall").await;
    let mut sent = 0;
    while sent < total {
        let send = ws.send(Message::text(message.clone()));
        if tokio::time::timeout(Duration::from_millis(500), send)
            .await
            .is_err()
        {
            break;
        }
        sent += 1;
    }
    assert!(
        sent < total / 2,
        "{sent} of {total} messages of 64 KiB were taken from a client whose upstream reads nothing"
    );
    assert_eq!(f.signals.received.load(Ordering::Relaxed), 1);
}

/// `wss:`: the same session over TLS on the serving port, from the gateway's own `https`
/// origin.
#[tokio::test]
async fn a_session_over_tls() {
    use crate::support::certs::{client_tls, Pki};

    let pool = protogate::descriptor::load(&sources()).unwrap();
    let signals = Arc::new(Signals::default());
    let backend = serve_handlers(handlers(pool, signals)).await;
    let options = protogate::upstream::UpstreamOptions::default();
    let (upstreams, map) =
        protogate::upstream::build_all(Some(&backend.url), &[], &options).unwrap();
    let snapshot =
        protogate::snapshot::Snapshot::build(&sources(), &Default::default(), Some(&map)).unwrap();
    let gateway = protogate::server::Gateway::new(snapshot, upstreams, Settings::default());
    let pki = Pki::new("gateway");
    let pair = pki.server("server", &["localhost"], "localhost");
    let config = protogate::tls::server_config(&pair.cert, &pair.key).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(protogate::server::serve_tls(
        listener,
        gateway,
        config,
        async move {
            let _ = stopped.await;
        },
        Duration::from_secs(1),
    ));

    let connector = tokio_rustls::TlsConnector::from(client_tls(&pki.ca, &[b"http/1.1"]));
    let tcp = bounded(TcpStream::connect(("127.0.0.1", port)))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = bounded(connector.connect(name, tcp)).await.unwrap();
    let mut request = format!("wss://localhost:{port}/v1/chat")
        .into_client_request()
        .unwrap();
    let origin = format!("https://localhost:{port}");
    request
        .headers_mut()
        .insert("origin", origin.parse().unwrap());
    let (mut ws, _) = bounded(tokio_tungstenite::client_async(request, tls))
        .await
        .unwrap();
    bounded(ws.send(Message::text(r#"{"name":"tls"}"#)))
        .await
        .unwrap();
    let answer = loop {
        match bounded(ws.next()).await.unwrap().unwrap() {
            Message::Text(text) => break serde_json::from_str::<Value>(&text).unwrap(),
            _ => continue,
        }
    };
    assert_eq!(answer["result"]["text"], "echo:tls");
    bounded(ws.close(None)).await.unwrap();
    let closed = loop {
        match bounded(ws.next()).await.unwrap().unwrap() {
            Message::Close(frame) => break frame.unwrap(),
            _ => continue,
        }
    };
    assert_eq!(closed.code, CloseCode::Normal);
}

/// The access log of the real binary: the upgrade's line (protocol `websocket`, status 101)
/// and the session's closing line (close code, gRPC code), under one request id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_has_the_upgrade_and_the_sessions_end() {
    let pool = protogate::descriptor::load(&sources()).unwrap();
    let backend = serve_handlers(handlers(pool, Arc::new(Signals::default()))).await;
    let process = spawn_gateway(&[
        "--proto",
        "testapi/v1/rest_streams.proto",
        "-I",
        "tests/protos",
        "--upstream",
        &backend.url,
    ]);
    let url = format!("{}/v1/chat", process.base.replacen("http://", "ws://", 1));
    let mut ws = connect_with(&url, &[("x-request-id", "ws-log-1")])
        .await
        .unwrap();
    send_text(&mut ws, r#"{"name":"logged"}"#).await;
    next_json(&mut ws).await;
    close(&mut ws).await;
    assert_eq!(next_close(&mut ws).await.code, CloseCode::Normal);
    let lines = tokio::task::spawn_blocking(move || process.log_until(|v| v["event"] == "closed"))
        .await
        .unwrap();
    let ours: Vec<&Value> = lines
        .iter()
        .filter(|v| v["request_id"] == "ws-log-1")
        .collect();
    assert_eq!(ours.len(), 2, "{lines:#?}");
    let (upgrade, closed) = (ours[0], ours[1]);
    assert_eq!(upgrade["protocol"], "websocket", "{upgrade}");
    assert_eq!(upgrade["status"], 101, "{upgrade}");
    assert_eq!(upgrade["route"], "/v1/chat", "{upgrade}");
    assert_eq!(closed["protocol"], "websocket", "{closed}");
    assert_eq!(closed["close_code"], 1000, "{closed}");
    assert_eq!(closed["grpc_code"], 0, "{closed}");
    assert_eq!(closed["route"], "/v1/chat", "{closed}");
}
