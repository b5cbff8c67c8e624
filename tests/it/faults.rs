//! Failing upstreams: refused connections, silent backends, streams reset mid-response,
//! frames that lie about their length, compression nobody announced, an L7 proxy's error
//! page, responses beyond the limit, GOAWAY and restarts under load. Each is answered with
//! the status the gRPC spec maps it to and a `google.rpc.Status` body, no request waits past
//! its deadline, the gateway cancels what it gives up on upstream, and it recovers by itself
//! once the backend is back.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;
use bytes::Bytes;
use h2::Reason;
use http::{HeaderMap, HeaderValue, Response};
use protogate::demo::backend::{self, Reply};
use protogate::server::Settings;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
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

fn book(title: &str) -> Bytes {
    encode_json(
        &library_pool(),
        "testapi.v1.Book",
        json!({ "title": title }),
    )
}

/// `GET /v2/books/b1` with the upstream scenario in `Grpc-Metadata-Scenario`.
async fn scenario(gw: &Gw, name: &str, headers: &[(&str, &str)]) -> Resp {
    let mut all = vec![("grpc-metadata-scenario", name)];
    all.extend_from_slice(headers);
    send("GET", &format!("{}/v2/books/b1", gw.base), &all, "").await
}

#[track_caller]
fn assert_dune(resp: &Resp) {
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(resp.json()["title"], "Dune");
}

// --- a hand-built HTTP/2 upstream --------------------------------------------------------

/// One stream as the hand-built upstream sees it.
struct Stream {
    scenario: String,
    respond: h2::server::SendResponse<Bytes>,
    log: Log,
}

/// What the upstream saw: the resets the gateway sent, by scenario.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<(String, Reason)>>>);

impl Log {
    fn resets(&self) -> Vec<(String, Reason)> {
        self.0.lock().unwrap().clone()
    }

    /// Waits (bounded) until the gateway has reset a stream of `scenario`.
    async fn wait_reset(&self, scenario: &str) -> Reason {
        bounded(async {
            loop {
                if let Some((_, r)) = self.resets().iter().find(|(s, _)| s == scenario) {
                    return *r;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
    }
}

fn grpc_head() -> Response<()> {
    Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(())
        .unwrap()
}

fn ok_trailers() -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", HeaderValue::from_static("0"));
    t
}

fn framed(payload: &[u8]) -> Bytes {
    protogate::grpc::frame::encode_raw(payload)
}

/// Headers, `data`, then OK trailers.
fn answer(mut respond: h2::server::SendResponse<Bytes>, data: &[u8]) {
    let Ok(mut send) = respond.send_response(grpc_head(), false) else {
        return;
    };
    let _ = send.send_data(Bytes::copy_from_slice(data), false);
    let _ = send.send_trailers(ok_trailers());
}

/// Waits until the gateway resets the stream (or a minute, longer than any request of the
/// tests may take), and logs the reset.
async fn hold<F>(scenario: String, log: Log, mut poll: F)
where
    F: FnMut(&mut std::task::Context<'_>) -> std::task::Poll<Result<Reason, h2::Error>>,
{
    let reset =
        tokio::time::timeout(Duration::from_secs(60), std::future::poll_fn(&mut poll)).await;
    if let Ok(Ok(reason)) = reset {
        log.0.lock().unwrap().push((scenario, reason));
    }
}

/// A response with `head` and one DATA frame, then OK trailers.
fn answer_with(mut respond: h2::server::SendResponse<Bytes>, head: Response<()>, data: Bytes) {
    if let Ok(mut send) = respond.send_response(head, false) {
        let _ = send.send_data(data, false);
        let _ = send.send_trailers(ok_trailers());
    }
}

async fn behave(stream: Stream) {
    let dune = book("Dune");
    let Stream {
        scenario,
        mut respond,
        log,
    } = stream;
    match scenario.as_str() {
        "ok" => answer(respond, &framed(&dune)),
        "hang" => hold(scenario, log, move |cx| respond.poll_reset(cx)).await,
        "reset-mid-internal" | "reset-mid-cancel" | "reset-mid-refused" | "reset-mid-calm" => {
            let Ok(mut send) = respond.send_response(grpc_head(), false) else {
                return;
            };
            let whole = framed(&dune);
            let _ = send.send_data(whole.slice(..4), false);
            tokio::time::sleep(Duration::from_millis(20)).await;
            send.send_reset(match scenario.as_str() {
                "reset-mid-internal" => Reason::INTERNAL_ERROR,
                "reset-mid-cancel" => Reason::CANCEL,
                "reset-mid-refused" => Reason::REFUSED_STREAM,
                _ => Reason::ENHANCE_YOUR_CALM,
            });
        }
        "reset-before-internal" => respond.send_reset(Reason::INTERNAL_ERROR),
        "reset-before-cancel" => respond.send_reset(Reason::CANCEL),
        "reset-before-refused" => respond.send_reset(Reason::REFUSED_STREAM),
        "reset-before-calm" => respond.send_reset(Reason::ENHANCE_YOUR_CALM),
        "longer-than-announced" => {
            // The prefix announces 3 bytes; the message that follows is longer.
            let mut data = vec![0, 0, 0, 0, 3];
            data.extend_from_slice(&dune);
            answer(respond, &data);
        }
        "shorter-than-announced" => {
            let mut data = vec![0, 0, 0, 0, 200];
            data.extend_from_slice(&dune);
            answer(respond, &data);
        }
        "content-length-lies" => {
            let head = Response::builder()
                .status(200)
                .header("content-type", "application/grpc")
                .header("content-length", "3")
                .body(())
                .unwrap();
            answer_with(respond, head, framed(&dune));
        }
        "compressed" => {
            let mut data = framed(&dune).to_vec();
            data[0] = 1;
            answer(respond, &data);
        }
        "compressed-gzip" => {
            let head = Response::builder()
                .status(200)
                .header("content-type", "application/grpc")
                .header("grpc-encoding", "gzip")
                .body(())
                .unwrap();
            let mut data = framed(&dune).to_vec();
            data[0] = 1;
            answer_with(respond, head, Bytes::from(data));
        }
        "proxy-502" | "proxy-503" | "proxy-504" => {
            let status: u16 = scenario[6..].parse().unwrap();
            let head = Response::builder()
                .status(status)
                .header("content-type", "text/html")
                .body(())
                .unwrap();
            if let Ok(mut send) = respond.send_response(head, false) {
                let _ = send.send_data(
                    Bytes::from_static(b"<html><body><h1>502 Bad Gateway</h1></body></html>"),
                    true,
                );
            }
        }
        "huge" => {
            // Announces a 100 MB message, sends 1 KB of it, and waits.
            let Ok(mut send) = respond.send_response(grpc_head(), false) else {
                return;
            };
            let mut data = vec![0u8];
            data.extend_from_slice(&100_000_000u32.to_be_bytes());
            data.extend_from_slice(&[0x12; 1024]);
            let _ = send.send_data(Bytes::from(data), false);
            hold(scenario, log, move |cx| send.poll_reset(cx)).await;
        }
        "trickle" => {
            // A message within the limit, sent a byte at a time: the gateway waits for it.
            let Ok(mut send) = respond.send_response(grpc_head(), false) else {
                return;
            };
            for byte in framed(&dune).iter() {
                let _ = send.send_data(Bytes::copy_from_slice(&[*byte]), false);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let _ = send.send_trailers(ok_trailers());
        }
        other => panic!("unknown scenario {other}"),
    }
}

/// An h2c upstream that answers each stream by its scenario, and sends GOAWAY on each
/// connection after `goaway_after` streams (gracefully or abruptly).
struct H2Upstream {
    url: String,
    addr: SocketAddr,
    log: Log,
    streams: Arc<AtomicUsize>,
    _task: AbortOnDrop,
}

#[derive(Clone, Copy)]
enum GoAway {
    Never,
    Graceful(usize),
    Abrupt(usize),
}

async fn h2_upstream(goaway: GoAway) -> H2Upstream {
    let listener = bounded(TcpListener::bind("127.0.0.1:0")).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Log::default();
    let streams = Arc::new(AtomicUsize::new(0));
    let (task_log, task_streams) = (log.clone(), streams.clone());
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((socket, _)) = listener.accept().await {
            while connections.try_join_next().is_some() {}
            let (log, streams) = (task_log.clone(), task_streams.clone());
            connections.spawn(serve_h2(socket, goaway, log, streams));
        }
    });
    H2Upstream {
        url: format!("http://{addr}"),
        addr,
        log,
        streams,
        _task: AbortOnDrop(task),
    }
}

async fn serve_h2(socket: TcpStream, goaway: GoAway, log: Log, streams: Arc<AtomicUsize>) {
    let Ok(mut connection) = h2::server::handshake(socket).await else {
        return;
    };
    let mut tasks = tokio::task::JoinSet::new();
    let mut n = 0;
    while let Some(Ok((request, respond))) = connection.accept().await {
        n += 1;
        streams.fetch_add(1, Ordering::SeqCst);
        let scenario = request
            .headers()
            .get("scenario")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("ok")
            .to_string();
        let log = log.clone();
        tasks.spawn(behave(Stream {
            scenario,
            respond,
            log,
        }));
        match goaway {
            GoAway::Graceful(k) if n == k => connection.graceful_shutdown(),
            GoAway::Abrupt(k) if n == k => connection.abrupt_shutdown(Reason::NO_ERROR),
            _ => {}
        }
    }
    // Streams still being answered keep the connection's tasks; give them a moment.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
}

// --- refused, silent -------------------------------------------------------------------

/// Nothing listens: 503 at once, every time; once a backend listens there, the same gateway
/// serves without a restart. "At once": the connect timeout and the deadline are a minute
/// here, longer than a request of the test may take, so an answer that waited for either
/// fails.
#[tokio::test]
async fn a_refused_connection_is_503_and_the_gateway_recovers_when_the_backend_starts() {
    let url = dead_url().await;
    let addr: SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    let options = protogate::upstream::UpstreamOptions {
        connect_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let settings = Settings {
        timeout: Some(Duration::from_secs(60)),
        ..Settings::default()
    };
    let gw = start_gateway_with(library_sources(), &url, settings, options).await;
    for _ in 0..3 {
        let resp = get(&format!("{}/v2/books/b1", gw.base)).await;
        let message = status_body(&resp, 503, 14);
        assert_eq!(
            message,
            "service testapi.v1.Library is unavailable: cannot connect"
        );
    }
    let (_backend, _stop) = serve_at(addr).await;
    let resp = get(&format!("{}/v2/books/b1", gw.base)).await;
    assert_dune(&resp);
}

/// A tonic backend answering GetBook with "Dune", bound to `addr` (retrying while the port
/// is still held by the previous one).
async fn serve_at(addr: SocketAddr) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = bounded(async {
        loop {
            match TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
    let dune = book("Dune");
    let handler = backend::handler(move |call| {
        let dune = dune.clone();
        async move {
            match call.path.as_str() {
                "/grpc.health.v1.Health/Check" => Err(tonic::Status::unimplemented("")),
                _ => Ok(Reply {
                    message: dune,
                    metadata: Default::default(),
                }),
            }
        }
    });
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(backend::serve(listener, handler, async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// A backend that accepts TCP connections and never says a word: the deadline answers 504,
/// `--timeout` or the client's shorter `Grpc-Timeout`. Not before it; and not after it: with
/// `--timeout` a minute, the client's deadline is the only one that can end the request
/// within the test's bound.
#[tokio::test]
async fn a_backend_that_never_answers_is_504_at_the_deadline() {
    let listener = bounded(TcpListener::bind("127.0.0.1:0")).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    let _silent = AbortOnDrop(tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            keep.lock().unwrap().push(socket);
        }
    }));
    for (configured, header, deadline) in [
        (Duration::from_millis(500), None, Duration::from_millis(500)),
        (
            Duration::from_secs(60),
            Some("200m"),
            Duration::from_millis(200),
        ),
    ] {
        let settings = Settings {
            timeout: Some(configured),
            ..Settings::default()
        };
        let gw = start_gateway(library_sources(), &url, settings).await;
        let started = Instant::now();
        let headers: Vec<(&str, &str)> = header.map(|t| ("grpc-timeout", t)).into_iter().collect();
        let resp = send("GET", &format!("{}/v2/books/b1", gw.base), &headers, "").await;
        let message = status_body(&resp, 504, 4);
        assert!(message.contains("deadline"), "{message}");
        let took = started.elapsed();
        assert!(
            took >= deadline,
            "{took:?}, before the deadline of {deadline:?}"
        );
    }
    assert!(!held.lock().unwrap().is_empty(), "the gateway connected");
}

/// An HTTP/2 backend that takes the stream and never answers it: 504 at the deadline, and
/// the gateway resets the stream upstream (CANCEL) instead of leaving it open.
#[tokio::test]
async fn a_stream_never_answered_is_504_and_cancelled_upstream() {
    let upstream = h2_upstream(GoAway::Never).await;
    let gw = start_gateway(library_sources(), &upstream.url, Settings::default()).await;
    // With no `--timeout`, only the client's deadline ends the request within the test's
    // bound: the upstream holds the stream for a minute.
    let resp = scenario(&gw, "hang", &[("grpc-timeout", "300m")]).await;
    status_body(&resp, 504, 4);
    assert_eq!(upstream.log.wait_reset("hang").await, Reason::CANCEL);
    assert_dune(&scenario(&gw, "ok", &[]).await);
}

// --- broken responses --------------------------------------------------------------------

/// Each broken response and its answer, then a good request on the same gateway.
#[tokio::test]
async fn broken_responses_map_to_their_statuses() {
    let upstream = h2_upstream(GoAway::Never).await;
    let gw = start_gateway(library_sources(), &upstream.url, Settings::default()).await;
    let cases: &[(&str, u16, i32, &str)] = &[
        ("reset-mid-internal", 500, 13, ""),
        ("reset-mid-cancel", 499, 1, ""),
        ("reset-mid-refused", 503, 14, ""),
        ("reset-mid-calm", 429, 8, ""),
        ("longer-than-announced", 500, 13, ""),
        ("shorter-than-announced", 500, 13, "ended inside a frame"),
        ("content-length-lies", 500, 13, ""),
        ("compressed", 500, 13, "no grpc-encoding"),
        ("compressed-gzip", 500, 13, "gzip"),
        ("proxy-502", 503, 14, "502"),
        ("proxy-503", 503, 14, "503"),
        ("proxy-504", 503, 14, "504"),
    ];
    for (name, status, code, needle) in cases {
        let resp = scenario(&gw, name, &[]).await;
        let message = status_body(&resp, *status, *code);
        assert!(message.contains(needle), "{name}: {message}");
        assert_dune(&scenario(&gw, "ok", &[]).await);
    }
    // A slow but valid response is waited for.
    assert_dune(&scenario(&gw, "trickle", &[]).await);
}

/// A stream reset before any response header is mapped by the same table as one reset
/// mid-response (gRPC's RST_STREAM mapping): the code says what the upstream meant.
#[tokio::test]
async fn a_stream_reset_before_headers_maps_by_its_reason() {
    let upstream = h2_upstream(GoAway::Never).await;
    let gw = start_gateway(library_sources(), &upstream.url, Settings::default()).await;
    for (name, status, code) in [
        ("reset-before-internal", 500, 13),
        ("reset-before-cancel", 499, 1),
        ("reset-before-refused", 503, 14),
        ("reset-before-calm", 429, 8),
    ] {
        let resp = scenario(&gw, name, &[]).await;
        status_body(&resp, status, code);
        assert_dune(&scenario(&gw, "ok", &[]).await);
    }
}

/// A response announcing 100 MB against a 1 MiB limit is refused from its 5-byte prefix:
/// 429 at once, and the upstream stream is reset rather than drained.
#[tokio::test]
async fn a_response_beyond_the_limit_is_429_without_reading_it() {
    let upstream = h2_upstream(GoAway::Never).await;
    let gw = start_gateway(
        library_sources(),
        &upstream.url,
        Settings {
            max_response_bytes: 1 << 20,
            ..Settings::default()
        },
    )
    .await;
    // The upstream holds the rest of the message back for a minute: the answer came from the
    // prefix, or the request would have timed out.
    let resp = scenario(&gw, "huge", &[]).await;
    let message = status_body(&resp, 429, 8);
    assert!(message.contains("100000000"), "{message}");
    upstream.log.wait_reset("huge").await;
    assert_dune(&scenario(&gw, "ok", &[]).await);
}

// --- under load --------------------------------------------------------------------------

/// Runs `workers` clients, each sending `per_worker` requests to `url`, while `disturb` runs;
/// returns the statuses.
async fn load<F: std::future::Future<Output = ()>>(
    url: &str,
    workers: usize,
    per_worker: usize,
    disturb: F,
) -> Vec<u16> {
    let clients: Vec<_> = (0..workers)
        .map(|_| {
            let url = url.to_string();
            tokio::spawn(async move {
                let mut statuses = Vec::with_capacity(per_worker);
                for _ in 0..per_worker {
                    let resp = send("GET", &url, &[], "").await;
                    if resp.status != 200 {
                        let code = resp.json()["code"].as_i64().unwrap_or(-1);
                        assert!(code > 0, "{:?}", resp.body);
                    }
                    statuses.push(resp.status.as_u16());
                }
                statuses
            })
        })
        .collect();
    disturb.await;
    // Each request is bounded by `send`; a worker's whole run by this.
    let all_done = Duration::from_secs(10) * per_worker as u32;
    let mut all = Vec::new();
    for c in clients {
        let statuses = tokio::time::timeout(all_done, c).await;
        all.extend(statuses.expect("a worker never finished").unwrap());
    }
    all
}

fn tally(statuses: &[u16]) -> std::collections::BTreeMap<u16, usize> {
    let mut t = std::collections::BTreeMap::new();
    for s in statuses {
        *t.entry(*s).or_default() += 1;
    }
    t
}

/// The upstream says GOAWAY every 25 streams, gracefully (in-flight streams finish) and
/// abruptly (later streams refused): no request hangs, every answer is 200 or a retryable
/// 503, and the gateway reconnects by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_during_load() {
    for goaway in [GoAway::Graceful(25), GoAway::Abrupt(25)] {
        let upstream = h2_upstream(goaway).await;
        let gw = start_gateway(library_sources(), &upstream.url, Settings::default()).await;
        let url = format!("{}/v2/books/b1", gw.base);
        let statuses = load(&url, 8, 40, async {}).await;
        let t = tally(&statuses);
        eprintln!("GOAWAY under load: {t:?}");
        assert!(t.keys().all(|s| *s == 200 || *s == 503), "{t:?}");
        assert!(
            t.get(&200).copied().unwrap_or(0) >= statuses.len() * 3 / 4,
            "{t:?}"
        );
        assert!(upstream.streams.load(Ordering::SeqCst) >= 300);
        for _ in 0..5 {
            assert_dune(&get(&url).await);
        }
    }
}

/// A graceful GOAWAY (what a server with a maximum connection age sends) refuses no stream
/// the gateway sent before it saw the GOAWAY; a stream refused by it, never processed
/// upstream, is retried on a new connection: no request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_goaway_loses_no_request() {
    let upstream = h2_upstream(GoAway::Graceful(10)).await;
    let gw = start_gateway(library_sources(), &upstream.url, Settings::default()).await;
    let url = format!("{}/v2/books/b1", gw.base);
    let statuses = load(&url, 8, 40, async {}).await;
    let t = tally(&statuses);
    assert_eq!(t.get(&200).copied(), Some(statuses.len()), "{t:?}");
}

/// The backend stops and starts again twice while clients keep sending: no request hangs,
/// every answer is 200 or 503, and once it is back every request is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_restart_during_load() {
    let addr: SocketAddr = dead_url()
        .await
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let (_, stop) = serve_at(addr).await;
    let gw = start_gateway(
        library_sources(),
        &format!("http://{addr}"),
        Settings::default(),
    )
    .await;
    let url = format!("{}/v2/books/b1", gw.base);
    let statuses = load(&url, 6, 60, async move {
        let mut stop = stop;
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let _ = stop.send(());
            tokio::time::sleep(Duration::from_millis(150)).await;
            stop = serve_at(addr).await.1;
        }
        // Keep the last backend for the checks below.
        std::mem::forget(stop);
    })
    .await;
    let t = tally(&statuses);
    eprintln!("restarts under load: {t:?}");
    assert!(t.keys().all(|s| *s == 200 || *s == 503), "{t:?}");
    assert!(t.get(&200).is_some_and(|n| *n > 0), "{t:?}");
    for _ in 0..10 {
        assert_dune(&get(&url).await);
    }
}

/// Connections that die with the backend (killed, not stopped) are replaced: the first
/// requests after may fail with 503, none hangs, and the gateway then serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_is_replaced_without_restarting_the_gateway() {
    let upstream = h2_upstream(GoAway::Never).await;
    let addr = upstream.addr;
    let gw = start_gateway(library_sources(), &upstream.url, Settings::default()).await;
    assert_dune(&scenario(&gw, "ok", &[]).await);
    // Killing the task drops its listener and every connection at once.
    drop(upstream);
    let resp = scenario(&gw, "ok", &[]).await;
    status_body(&resp, 503, 14);
    let (_, _stop) = serve_at(addr).await;
    let mut served = false;
    for _ in 0..3 {
        let resp = get(&format!("{}/v2/books/b1", gw.base)).await;
        if resp.status == 200 {
            served = true;
            break;
        }
        status_body(&resp, 503, 14);
    }
    assert!(served, "not served again after the backend came back");
    for _ in 0..5 {
        assert_dune(&get(&format!("{}/v2/books/b1", gw.base)).await);
    }
}
