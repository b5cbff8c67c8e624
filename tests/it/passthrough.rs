//! Native gRPC through the gateway's port with a real tonic client and a real tonic backend:
//! all four call kinds, metadata and statuses unchanged both ways, the gateway's own errors
//! (unknown service, upstream down), cancellation reaching the backend, and a stream that
//! fails midway.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;
use bytes::Bytes;
use futures_util::{stream, StreamExt};
use http::uri::PathAndQuery;
use prost_reflect::DescriptorPool;
use protogate::demo::backend::{self, Call, Handlers, MessageStream, RawCodec, Reply, StreamCall};
use protogate::server::Settings;
use serde_json::json;
use tokio::sync::{mpsc, Notify};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

const SAY: &str = "/testapi.v1.Relay/Say";
const LISTEN: &str = "/testapi.v1.Relay/Listen";
const COLLECT: &str = "/testapi.v1.Relay/Collect";
const CONVERSE: &str = "/testapi.v1.Relay/Converse";
const NOTE: &str = "testapi.v1.Note";
/// `google.rpc.Status{code: 9, message: "details"}`, as `Say` sends it when it fails.
const DETAILS: &[u8] = b"\x08\x09\x12\x07details";

/// What the backend saw, and a signal for the cancellation test.
#[derive(Default)]
struct Seen {
    /// Method path and request metadata of every call.
    calls: Mutex<Vec<(String, MetadataMap)>>,
    /// Notified when a hanging stream's receiver is gone (the call was cancelled).
    cancelled: Notify,
}

struct Fixture {
    pool: DescriptorPool,
    seen: Arc<Seen>,
    gw: Gw,
    _backend: Served,
}

impl Fixture {
    async fn start() -> Fixture {
        Fixture::start_with(Settings::default()).await
    }

    async fn start_with(settings: Settings) -> Fixture {
        let pool = protogate::descriptor::load(&relay_sources()).unwrap();
        let seen = Arc::new(Seen::default());
        let backend = serve_handlers(relay_handlers(&pool, &seen)).await;
        let gw = start_gateway(relay_sources(), &backend.url, settings).await;
        Fixture {
            pool,
            seen,
            gw,
            _backend: backend,
        }
    }

    fn note(&self, text: &str, n: i32) -> Bytes {
        encode_json(&self.pool, NOTE, json!({"text": text, "n": n}))
    }

    fn read(&self, bytes: &Bytes) -> serde_json::Value {
        decode_json(&self.pool, NOTE, bytes)
    }

    fn only_call(&self) -> (String, MetadataMap) {
        let calls = self.seen.calls.lock().unwrap();
        assert_eq!(calls.len(), 1, "expected exactly one backend call");
        calls[0].clone()
    }
}

fn note(pool: &DescriptorPool, text: &str, n: i32) -> Bytes {
    encode_json(pool, NOTE, json!({"text": text, "n": n}))
}

/// The backend of `Relay`: `Say` echoes (or fails with details when asked), `Listen` streams
/// `n` notes (or fails after two, or hangs until cancelled), `Collect` joins what it got, and
/// `Converse` echoes each message as it arrives.
fn relay_handlers(pool: &DescriptorPool, seen: &Arc<Seen>) -> Handlers {
    let (pool_u, seen_u) = (pool.clone(), seen.clone());
    let unary = backend::handler(move |call: Call| {
        seen_u
            .calls
            .lock()
            .unwrap()
            .push((call.path.clone(), call.metadata.clone()));
        let pool = pool_u.clone();
        async move {
            if decode_json(&pool, NOTE, &call.message)["text"] == "slow" {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            say(&pool, call)
        }
    });
    let (pool_s, seen_s) = (pool.clone(), seen.clone());
    let streaming = backend::stream_handler(move |call: StreamCall| {
        seen_s
            .calls
            .lock()
            .unwrap()
            .push((call.path.clone(), call.metadata.clone()));
        let (pool, seen) = (pool_s.clone(), seen_s.clone());
        async move { Ok((stream_metadata(), streams(pool, seen, call).await?)) }
    });
    let paths = [LISTEN, COLLECT, CONVERSE].map(String::from).to_vec();
    Handlers {
        unary,
        streaming: Some((paths, streaming)),
    }
}

fn say(pool: &DescriptorPool, call: Call) -> Result<Reply, Status> {
    let request = decode_json(pool, NOTE, &call.message);
    if request["text"] == "fail" {
        let mut metadata = MetadataMap::new();
        metadata.insert("x-reason", MetadataValue::from_static("because"));
        return Err(Status::with_details_and_metadata(
            Code::FailedPrecondition,
            "not now: 100% busy",
            Bytes::from_static(DETAILS),
            metadata,
        ));
    }
    let mut metadata = MetadataMap::new();
    metadata.insert("x-answer", MetadataValue::from_static("yes"));
    Ok(Reply {
        message: call.message,
        metadata,
    })
}

fn stream_metadata() -> MetadataMap {
    let mut metadata = MetadataMap::new();
    metadata.insert("x-stream", MetadataValue::from_static("on"));
    metadata
}

async fn streams(
    pool: DescriptorPool,
    seen: Arc<Seen>,
    mut call: StreamCall,
) -> Result<MessageStream, Status> {
    match call.path.as_str() {
        LISTEN => {
            let first = call.messages.message().await?.unwrap_or_default();
            let request = decode_json(&pool, NOTE, &first);
            Ok(listen(pool, seen, request))
        }
        COLLECT => {
            let mut texts = Vec::new();
            while let Some(message) = call.messages.message().await? {
                texts.push(decode_json(&pool, NOTE, &message)["text"].clone());
            }
            let joined: Vec<&str> = texts.iter().filter_map(|t| t.as_str()).collect();
            let reply = note(&pool, &joined.join(","), texts.len() as i32);
            Ok(Box::pin(stream::iter([Ok(reply)])))
        }
        _ => {
            let echoes = call.messages.map(move |message| {
                let text = decode_json(&pool, NOTE, &message?)["text"].clone();
                Ok(note(
                    &pool,
                    &format!("echo {}", text.as_str().unwrap_or("")),
                    0,
                ))
            });
            Ok(Box::pin(echoes))
        }
    }
}

fn listen(pool: DescriptorPool, seen: Arc<Seen>, request: serde_json::Value) -> MessageStream {
    let n = request["n"].as_i64().unwrap_or(0) as i32;
    match request["text"].as_str() {
        Some("hang") => hang(note(&pool, "first", 1), seen),
        Some("fail") => Box::pin(stream::iter([
            Ok(note(&pool, "one", 1)),
            Ok(note(&pool, "two", 2)),
            Err(Status::aborted("the stream broke")),
        ])),
        _ => Box::pin(stream::iter(
            (1..=n).map(move |i| Ok(note(&pool, "tick", i))),
        )),
    }
}

/// Sends `first`, then waits until the receiving side (the response stream) is dropped,
/// which is how the backend learns that the call was cancelled.
fn hang(first: Bytes, seen: Arc<Seen>) -> MessageStream {
    let (tx, rx) = mpsc::channel::<Result<Bytes, Status>>(1);
    tokio::spawn(async move {
        if tx.send(Ok(first)).await.is_ok() {
            tx.closed().await;
            seen.cancelled.notify_one();
        }
    });
    Box::pin(stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

fn path(p: &'static str) -> PathAndQuery {
    PathAndQuery::from_static(p)
}

#[tokio::test]
async fn unary_messages_and_metadata_pass_unchanged() {
    let f = Fixture::start().await;
    let mut client = grpc_client(&f.gw.base).await;
    let mut request = tonic::Request::new(f.note("hi", 7));
    request
        .metadata_mut()
        .insert("x-custom", MetadataValue::from_static("v1"));
    request
        .metadata_mut()
        .insert_bin("x-data-bin", MetadataValue::from_bytes(&[0, 1, 2, 255]));
    request.set_timeout(Duration::from_secs(7));
    let response = bounded(client.unary(request, path(SAY), RawCodec))
        .await
        .unwrap();
    assert_eq!(f.read(response.get_ref()), json!({"text": "hi", "n": 7}));
    assert_eq!(response.metadata().get("x-answer").unwrap(), "yes");

    let (called, metadata) = f.only_call();
    assert_eq!(called, SAY);
    assert_eq!(metadata.get("x-custom").unwrap(), "v1");
    let binary = metadata.get_bin("x-data-bin").unwrap().to_bytes().unwrap();
    assert_eq!(&binary[..], &[0, 1, 2, 255]);
    let timeout = metadata.get("grpc-timeout").unwrap().to_str().unwrap();
    assert_eq!(
        protogate::grpc::timeout::parse(timeout),
        Some(Duration::from_secs(7))
    );
}

#[tokio::test]
async fn error_status_with_details_and_metadata_comes_back_intact() {
    let f = Fixture::start().await;
    let mut client = grpc_client(&f.gw.base).await;
    let request = tonic::Request::new(f.note("fail", 0));
    let status = bounded(client.unary(request, path(SAY), RawCodec))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "not now: 100% busy");
    assert_eq!(status.details(), DETAILS);
    assert_eq!(status.metadata().get("x-reason").unwrap(), "because");
}

#[tokio::test]
async fn server_streaming_passes_every_message_and_the_trailers() {
    let f = Fixture::start().await;
    let mut client = grpc_client(&f.gw.base).await;
    let mut request = tonic::Request::new(f.note("count", 3));
    request
        .metadata_mut()
        .insert("x-custom", MetadataValue::from_static("s"));
    let response = bounded(client.server_streaming(request, path(LISTEN), RawCodec))
        .await
        .unwrap();
    assert_eq!(response.metadata().get("x-stream").unwrap(), "on");
    let mut messages = response.into_inner();
    let mut got = Vec::new();
    while let Some(message) = bounded(messages.message()).await.unwrap() {
        got.push(f.read(&message));
    }
    let expected: Vec<_> = (1..=3).map(|n| json!({"text": "tick", "n": n})).collect();
    assert_eq!(got, expected);
    assert!(bounded(messages.trailers()).await.unwrap().is_some());
    let (called, metadata) = f.only_call();
    assert_eq!(called, LISTEN);
    assert_eq!(metadata.get("x-custom").unwrap(), "s");
}

#[tokio::test]
async fn client_streaming_sends_every_message() {
    let f = Fixture::start().await;
    let mut client = grpc_client(&f.gw.base).await;
    let notes = vec![f.note("a", 1), f.note("b", 2), f.note("c", 3)];
    let request = tonic::Request::new(stream::iter(notes));
    let response = bounded(client.client_streaming(request, path(COLLECT), RawCodec))
        .await
        .unwrap();
    assert_eq!(response.metadata().get("x-stream").unwrap(), "on");
    assert_eq!(f.read(response.get_ref()), json!({"text": "a,b,c", "n": 3}));
}

#[tokio::test]
async fn bidi_streaming_answers_each_message_before_the_next_is_sent() {
    let f = Fixture::start().await;
    let mut client = grpc_client(&f.gw.base).await;
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let outbound = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    tx.send(f.note("ping", 0)).await.unwrap();
    let response =
        bounded(client.streaming(tonic::Request::new(outbound), path(CONVERSE), RawCodec))
            .await
            .unwrap();
    let mut inbound = response.into_inner();
    for word in ["ping", "pong", "done"] {
        if word != "ping" {
            tx.send(f.note(word, 0)).await.unwrap();
        }
        let echo = bounded(inbound.message()).await.unwrap().unwrap();
        assert_eq!(f.read(&echo)["text"], format!("echo {word}"));
    }
    drop(tx);
    assert!(bounded(inbound.message()).await.unwrap().is_none());
}

/// A bidi stream on which nothing passes either way is cancelled at the idle limit, with
/// DEADLINE_EXCEEDED; the backend sees the cancellation.
#[tokio::test]
async fn a_silent_stream_is_cancelled_at_the_idle_limit() {
    let f = Fixture::start_with(Settings {
        stream_idle_timeout: Duration::from_millis(500),
        ..Settings::default()
    })
    .await;
    let mut client = grpc_client(&f.gw.base).await;
    let (_tx, rx) = mpsc::channel::<Bytes>(1);
    let outbound = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let response =
        bounded(client.streaming(tonic::Request::new(outbound), path(CONVERSE), RawCodec))
            .await
            .unwrap();
    let mut inbound = response.into_inner();
    let status = bounded(inbound.message()).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("--stream-idle-timeout"),
        "{status:?}"
    );
}

/// Messages keep a stream alive however long it lasts: each one restarts the idle limit.
#[tokio::test]
async fn messages_keep_a_stream_alive_past_the_idle_limit() {
    let f = Fixture::start_with(Settings {
        stream_idle_timeout: Duration::from_millis(600),
        ..Settings::default()
    })
    .await;
    let mut client = grpc_client(&f.gw.base).await;
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let outbound = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    tx.send(f.note("m0", 0)).await.unwrap();
    let response =
        bounded(client.streaming(tonic::Request::new(outbound), path(CONVERSE), RawCodec))
            .await
            .unwrap();
    let mut inbound = response.into_inner();
    // Eight messages 300 ms apart: 2.4 s in all, four times the idle limit.
    for i in 0..8 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            tx.send(f.note(&format!("m{i}"), 0)).await.unwrap();
        }
        let echo = bounded(inbound.message()).await.unwrap().unwrap();
        assert_eq!(f.read(&echo)["text"], format!("echo m{i}"));
    }
    drop(tx);
    assert!(bounded(inbound.message()).await.unwrap().is_none());
}

#[tokio::test]
async fn a_stream_failing_midway_delivers_its_messages_then_its_status() {
    let f = Fixture::start().await;
    let mut client = grpc_client(&f.gw.base).await;
    let request = tonic::Request::new(f.note("fail", 0));
    let mut messages = bounded(client.server_streaming(request, path(LISTEN), RawCodec))
        .await
        .unwrap()
        .into_inner();
    for (n, text) in [(1, "one"), (2, "two")] {
        let message = bounded(messages.message()).await.unwrap().unwrap();
        assert_eq!(f.read(&message), json!({"text": text, "n": n}));
    }
    let status = bounded(messages.message()).await.unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
    assert_eq!(status.message(), "the stream broke");
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_upstream_stream() {
    let f = Fixture::start().await;
    let mut client = grpc_client(&f.gw.base).await;
    let request = tonic::Request::new(f.note("hang", 0));
    let mut messages = bounded(client.server_streaming(request, path(LISTEN), RawCodec))
        .await
        .unwrap()
        .into_inner();
    let first = bounded(messages.message()).await.unwrap().unwrap();
    assert_eq!(f.read(&first)["text"], "first");
    drop(messages);
    bounded(f.seen.cancelled.notified()).await;
}

#[tokio::test]
async fn unknown_service_is_unimplemented() {
    let f = Fixture::start().await;
    let mut client = grpc_client(&f.gw.base).await;
    let request = tonic::Request::new(Bytes::new());
    let status = bounded(client.unary(request, path("/nope.v1.Nothing/Call"), RawCodec))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    assert!(status.message().contains("nope.v1.Nothing"), "{status:?}");
    assert!(f.seen.calls.lock().unwrap().is_empty());
}

/// `--timeout` applies to native gRPC too: the client's longer `grpc-timeout` is lowered to it
/// on the way upstream, and a call whose answer does not come in time is DEADLINE_EXCEEDED.
#[tokio::test]
async fn the_configured_timeout_bounds_native_calls() {
    let f = Fixture::start_with(Settings {
        timeout: Some(Duration::from_millis(300)),
        ..Settings::default()
    })
    .await;
    let mut client = grpc_client(&f.gw.base).await;
    let mut request = tonic::Request::new(f.note("slow", 1));
    request.set_timeout(Duration::from_secs(60));
    // The backend answers "slow" after five seconds, within the client's deadline: only the
    // configured one can make this DEADLINE_EXCEEDED.
    let status = bounded(client.unary(request, path(SAY), RawCodec))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    let (_, metadata) = f.only_call();
    let sent = metadata.get("grpc-timeout").unwrap().to_str().unwrap();
    let sent = protogate::grpc::timeout::parse(sent).unwrap();
    assert!(sent <= Duration::from_millis(300), "{sent:?}");
}

/// Native calls are counted under their method when the descriptors have it, and as
/// "unmatched" otherwise (a client cannot grow the set of route labels).
#[tokio::test]
async fn native_calls_are_counted_by_method() {
    let f = Fixture::start().await;
    let mut client = grpc_client(&f.gw.base).await;
    let request = tonic::Request::new(f.note("hi", 1));
    bounded(client.unary(request, path(SAY), RawCodec))
        .await
        .unwrap();
    let mut client = grpc_client(&f.gw.base).await;
    let request = tonic::Request::new(Bytes::new());
    // The backend answers any method; the descriptors do not have this one.
    let _ = bounded(client.unary(request, path("/testapi.v1.Relay/Nope"), RawCodec)).await;
    let metrics = get(&format!("{}/metrics", f.gw.base)).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains(r#"protogate_requests_total{http_request_method="POST",http_route="/testapi.v1.Relay/Say",http_response_status_code="200",rpc_grpc_status_code="0",protocol="grpc",error_source=""} 1"#),
        "{text}"
    );
    assert!(!text.contains("Relay/Nope"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("protogate_requests_total")
                && l.contains(r#"http_route="unmatched""#)
                && l.contains(r#"protocol="grpc""#)),
        "{text}"
    );
}

#[tokio::test]
async fn upstream_down_is_unavailable() {
    let gw = start_gateway(relay_sources(), &dead_url().await, Settings::default()).await;
    let mut client = grpc_client(&gw.base).await;
    let request = tonic::Request::new(Bytes::new());
    let status = bounded(client.unary(request, path(SAY), RawCodec))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("unavailable"), "{status:?}");
}
