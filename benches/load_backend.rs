//! The helper of the load benchmark (`bench/load.sh`), a bench target so that it builds with
//! the release profile and compiles with every `cargo clippy --all-targets`:
//!
//! ```text
//! load_backend serve 127.0.0.1:50051   # a tonic gRPC backend answering canned replies
//! load_backend frames DIR              # the requests of the load cases, framed for h2load
//! load_backend ws URL MESSAGE CLIENTS SECONDS THREADS          # WebSocket echo load
//! load_backend bidi URL PATH FRAME CLIENTS SECONDS THREADS     # the same over gRPC
//! ```
//!
//! `serve` answers `testapi.v1.Library/CreateBook`, `testapi.v1.Library/ListBooks` and
//! `vpresult.LocationService/getLocationPose` with fixed messages (the last is what the built-in
//! VPS backend answers to the sample), so the backend's cost per call is tonic's alone and the
//! same for direct gRPC and for the gateway; and it echoes every message of the bidi
//! `testapi.v1.Streams/Chat` back as it is. It serves until killed.
//!
//! `frames` writes, for each load case, `DIR/CASE.grpc` (the 5-byte gRPC header and the message
//! the gateway builds from that request), `DIR/CASE.rpc` (the gRPC path) and `DIR/CASE.http`
//! (`METHOD TARGET BODY-FILE`, the REST request), so both sides of the comparison send the same
//! message; and `DIR/descriptors.binpb`, the benchmark's descriptors and all their imports as
//! one `FileDescriptorSet` (for Envoy's gRPC-JSON transcoder).
//!
//! `ws` opens CLIENTS WebSocket sessions to URL (`ws://127.0.0.1:PORT/v1/chat`) and on each,
//! for SECONDS, sends the JSON of the file MESSAGE as a text frame and waits for its answer
//! before sending the next; `bidi` does the same over one bidi gRPC stream per client (each
//! on its own HTTP/2 connection) to URL (`http://127.0.0.1:PORT`) and PATH, sending the message
//! of the gRPC frame in FRAME. Both run on THREADS tokio worker threads, stop by themselves
//! and print what they did as JSON in the shape of oha's (`statusCodeDistribution."200"`:
//! echoes received as expected; `errorDistribution`; `summary.total`: seconds;
//! `metrics.latency_ms.p50`, `p99`: round trips).
//!
//! With no command (as `cargo bench` and `cargo test --benches` run it) it does nothing.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use bytes::Bytes;
use futures_util::{stream, SinkExt, StreamExt};
use prost::Message as _;
use prost_reflect::{DynamicMessage, Value};
use protogate::demo::backend::{self, Call, Handlers, MessageStream, RawCodec, Reply, StreamCall};
use tokio::net::TcpListener;
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tonic::Status;

/// The bidi method the backend echoes.
const CHAT: &str = "/testapi.v1.Streams/Chat";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["serve", addr] => serve(addr),
        ["frames", dir] => frames(Path::new(dir)),
        ["ws", url, message, clients, seconds, threads] => {
            loopback(url)?;
            let message = std::fs::read_to_string(message).context("reading the message")?;
            let load = Load::new(clients, seconds, threads)?;
            load.run(ws_session(
                (*url).to_string(),
                message.trim_end().to_string(),
            ))
        }
        ["bidi", url, path, frame, clients, seconds, threads] => {
            loopback(url)?;
            let frame = std::fs::read(frame).context("reading the frame")?;
            if frame.len() < 5 {
                return Err(anyhow!("the frame has no 5-byte gRPC header"));
            }
            let message = Bytes::from(frame).slice(5..);
            let path: http::uri::PathAndQuery = path.parse()?;
            let load = Load::new(clients, seconds, threads)?;
            load.run(bidi_session((*url).to_string(), path, message))
        }
        _ => {
            eprintln!(
                "load_backend: nothing to do (commands: `serve ADDR`, `frames DIR`, \
                 `ws URL MESSAGE CLIENTS SECONDS THREADS`, \
                 `bidi URL PATH FRAME CLIENTS SECONDS THREADS`)"
            );
            Ok(())
        }
    }
}

fn serve(addr: &str) -> anyhow::Result<()> {
    let snapshot = common::snapshot()?;
    let replies: Arc<HashMap<String, bytes::Bytes>> =
        Arc::new(common::canned_replies(&snapshot)?.into_iter().collect());
    let handler = backend::handler(move |call: Call| {
        let reply = replies.get(&call.path).cloned();
        async move {
            let message = reply.ok_or_else(|| Status::unimplemented(call.path))?;
            Ok(Reply {
                message,
                metadata: Default::default(),
            })
        }
    });
    let echo = backend::stream_handler(|call: StreamCall| async move {
        let echoes: MessageStream = Box::pin(stream::unfold(call.messages, |mut messages| async {
            let message = messages.message().await.transpose()?;
            Some((message, messages))
        }));
        Ok((Default::default(), echoes))
    });
    let handlers = Handlers {
        unary: handler,
        streaming: Some((vec![CHAT.to_string()], echo)),
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        println!("listening on {}", listener.local_addr()?);
        backend::serve_all(listener, handlers, std::future::pending()).await;
        Ok(())
    })
}

fn frames(dir: &Path) -> anyhow::Result<()> {
    let snapshot = common::snapshot()?;
    std::fs::create_dir_all(dir)?;
    let descriptors = dir.join("descriptors.binpb");
    std::fs::write(&descriptors, envoy_descriptors(&snapshot)?)
        .map_err(|e| anyhow!("{}: {e}", descriptors.display()))?;
    for case in common::LOAD_CASES.into_iter().chain([common::WS_ECHO]) {
        let resolved = common::Resolved::new(&snapshot, case.clone())?;
        let frame = resolved.frame(&snapshot)?;
        let grpc_path = resolved.plan.grpc_path.path();
        let body = case
            .body_file
            .map(|f| common::repo_path(f).display().to_string())
            .unwrap_or_else(|| "-".into());
        let write = |ext: &str, bytes: &[u8]| {
            let path = dir.join(format!("{}.{ext}", case.name));
            std::fs::write(&path, bytes).map_err(|e| anyhow!("{}: {e}", path.display()))
        };
        write("grpc", &frame)?;
        write("rpc", grpc_path.as_bytes())?;
        write(
            "http",
            format!("{} {} {body}", case.method, case.target).as_bytes(),
        )?;
        println!("{} {} bytes -> {grpc_path}", case.name, frame.len());
    }
    Ok(())
}

/// The benchmark's descriptors with all their imports, as one `FileDescriptorSet`, for
/// Envoy's transcoder: a service the load cases call keeps only the methods they call (Envoy
/// refuses a whole service for one binding it does not support, such as a `response_body` of
/// a field other than an `HttpBody`). Every message is as the gateway has it.
fn envoy_descriptors(snapshot: &protogate::snapshot::Snapshot) -> anyhow::Result<Vec<u8>> {
    let mut called: HashMap<String, Vec<String>> = HashMap::new();
    for case in common::LOAD_CASES {
        let resolved = common::Resolved::new(snapshot, case.clone())?;
        let path = resolved.plan.grpc_path.path().to_string();
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .ok_or_else(|| anyhow!("{path}: not a gRPC path"))?;
        called
            .entry(service.to_string())
            .or_default()
            .push(method.to_string());
    }
    // Edited as a dynamic message of the pool's own `descriptor.proto`, so that options
    // (the `google.api.http` rules) stay as they are.
    let pool = &snapshot.pool;
    let set_type = pool
        .get_message_by_name("google.protobuf.FileDescriptorSet")
        .ok_or_else(|| anyhow!("no descriptor.proto in the bench descriptors"))?;
    let mut set = DynamicMessage::decode(set_type, pool.encode_to_vec().as_slice())?;
    for file in list_mut(&mut set, "file")? {
        let Value::Message(file) = file else { continue };
        let package = file
            .get_field_by_name("package")
            .and_then(|p| p.as_str().map(String::from));
        for service in list_mut(file, "service")? {
            let Value::Message(service) = service else {
                continue;
            };
            let name = match (&package, name_of(service)) {
                (Some(package), name) if !package.is_empty() => format!("{package}.{name}"),
                (_, name) => name,
            };
            if let Some(methods) = called.get(&name) {
                list_mut(service, "method")?.retain(|method| match method {
                    Value::Message(method) => methods.contains(&name_of(method)),
                    _ => true,
                });
            }
        }
    }
    Ok(set.encode_to_vec())
}

/// The `name` field of a descriptor message.
fn name_of(message: &DynamicMessage) -> String {
    message
        .get_field_by_name("name")
        .and_then(|n| n.as_str().map(String::from))
        .unwrap_or_default()
}

/// A repeated field of a dynamic message, to edit in place.
fn list_mut<'a>(
    message: &'a mut DynamicMessage,
    field: &str,
) -> anyhow::Result<&'a mut Vec<Value>> {
    match message.get_field_by_name_mut(field) {
        Some(Value::List(list)) => Ok(list),
        _ => Err(anyhow!("a descriptor without the list {field}")),
    }
}

/// The load generators aim at this machine only.
fn loopback(url: &str) -> anyhow::Result<()> {
    let uri: http::Uri = url.parse().with_context(|| format!("{url}: not a URL"))?;
    match uri.host() {
        Some("127.0.0.1" | "localhost" | "[::1]") => Ok(()),
        _ => Err(anyhow!("{url}: the load generators only aim at 127.0.0.1")),
    }
}

/// What the sessions of one `ws` or `bidi` load did.
#[derive(Default)]
struct Tally {
    ok: u64,
    errors: BTreeMap<String, u64>,
    latencies_us: Vec<u64>,
}

impl Tally {
    fn error(&mut self, what: impl std::fmt::Display) {
        *self.errors.entry(what.to_string()).or_default() += 1;
    }

    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        for (what, n) in other.errors {
            *self.errors.entry(what).or_default() += n;
        }
        self.latencies_us.extend(other.latencies_us);
    }
}

/// CLIENTS sessions for SECONDS on THREADS worker threads.
struct Load {
    clients: usize,
    duration: Duration,
    threads: usize,
}

impl Load {
    fn new(clients: &str, seconds: &str, threads: &str) -> anyhow::Result<Load> {
        Ok(Load {
            clients: clients.parse().context("CLIENTS")?,
            duration: Duration::from_secs_f64(seconds.parse().context("SECONDS")?),
            threads: threads.parse().context("THREADS")?,
        })
    }

    /// Runs `session` (given its deadline) CLIENTS times at once and prints the tally.
    fn run<F, Fut>(&self, session: F) -> anyhow::Result<()>
    where
        F: Fn(Instant) -> Fut,
        Fut: Future<Output = Tally> + Send + 'static,
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(self.threads.max(1))
            .enable_all()
            .build()?;
        let (tally, seconds) = runtime.block_on(async {
            let start = Instant::now();
            let deadline = start + self.duration;
            let sessions: Vec<_> = (0..self.clients)
                .map(|_| tokio::spawn(session(deadline)))
                .collect();
            let mut tally = Tally::default();
            for joined in futures_util::future::join_all(sessions).await {
                match joined {
                    Ok(one) => tally.merge(one),
                    Err(e) => tally.error(format!("session task: {e}")),
                }
            }
            (tally, start.elapsed().as_secs_f64())
        });
        print_tally(tally, seconds);
        Ok(())
    }
}

/// The tally as JSON, in the shape of oha's output (the fields `bench/summarize.py` reads).
fn print_tally(mut tally: Tally, seconds: f64) {
    tally.latencies_us.sort_unstable();
    let percentile = |p: f64| {
        let n = tally.latencies_us.len();
        if n == 0 {
            return serde_json::Value::Null;
        }
        let at = ((n - 1) as f64 * p / 100.0).round() as usize;
        serde_json::json!(tally.latencies_us[at] as f64 / 1000.0)
    };
    let report = serde_json::json!({
        "summary": {
            "total": seconds,
            "requestsPerSec": tally.ok as f64 / seconds,
        },
        "statusCodeDistribution": {"200": tally.ok},
        "errorDistribution": tally.errors,
        "metrics": {"latency_ms": {"p50": percentile(50.0), "p99": percentile(99.0)}},
    });
    println!("{report}");
}

/// One WebSocket session: the message, its answer, again until the deadline. Every answer
/// must be a text frame `{"result": MESSAGE}` (compared as JSON the first time, then byte for
/// byte with the first).
fn ws_session(url: String, message: String) -> impl Fn(Instant) -> BoxedTally {
    let expected = serde_json::from_str::<serde_json::Value>(&message)
        .map(|m| serde_json::json!({ "result": m }))
        .ok();
    let message = Utf8Bytes::from(message);
    move |deadline| {
        let (url, message, expected) = (url.clone(), message.clone(), expected.clone());
        Box::pin(async move {
            let mut tally = Tally::default();
            let Some(expected) = expected else {
                tally.error("the message is not JSON");
                return tally;
            };
            let connect = tokio_tungstenite::connect_async_with_config(url.as_str(), None, true);
            let mut ws = match timeout_at(deadline, connect).await {
                Ok(Ok((ws, _))) => ws,
                Ok(Err(e)) => {
                    tally.error(format!("connect: {e}"));
                    return tally;
                }
                Err(_) => return tally,
            };
            let mut first: Option<Utf8Bytes> = None;
            while Instant::now() < deadline {
                let start = Instant::now();
                let round_trip = async {
                    ws.send(Message::Text(message.clone())).await?;
                    loop {
                        match ws.next().await {
                            Some(Ok(Message::Text(text))) => return Ok(Some(text)),
                            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                            Some(Ok(_)) => return Ok(None),
                            Some(Err(e)) => return Err(e),
                            None => return Ok(None),
                        }
                    }
                };
                let answer = match timeout_at(deadline, round_trip).await {
                    Err(_) => break, // cut off by the deadline: not counted
                    Ok(Err(e)) => {
                        tally.error(e);
                        return tally;
                    }
                    Ok(Ok(None)) => {
                        tally.error("the session ended or answered a non-text frame");
                        return tally;
                    }
                    Ok(Ok(Some(text))) => text,
                };
                let elapsed = start.elapsed();
                let good = match &first {
                    Some(first) => *first == answer,
                    None => {
                        let good = serde_json::from_str::<serde_json::Value>(&answer)
                            .is_ok_and(|a| a == expected);
                        first = Some(answer.clone());
                        good
                    }
                };
                if good {
                    tally.ok += 1;
                    tally.latencies_us.push(elapsed.as_micros() as u64);
                } else {
                    tally.error(format!("unexpected answer: {}", answer.as_str()));
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
            tally
        })
    }
}

type BoxedTally = std::pin::Pin<Box<dyn Future<Output = Tally> + Send>>;

/// One bidi gRPC stream on a connection of its own: the message, its echo, again until the
/// deadline. Every answer must be the message itself.
fn bidi_session(
    url: String,
    path: http::uri::PathAndQuery,
    message: Bytes,
) -> impl Fn(Instant) -> BoxedTally {
    move |deadline| {
        let (url, path, message) = (url.clone(), path.clone(), message.clone());
        Box::pin(async move {
            let mut tally = Tally::default();
            let connect = async {
                let endpoint = tonic::transport::Endpoint::from_shared(url)?.tcp_nodelay(true);
                let mut client = tonic::client::Grpc::new(endpoint.connect().await?);
                client.ready().await?;
                anyhow::Ok(client)
            };
            let mut client = match timeout_at(deadline, connect).await {
                Ok(Ok(client)) => client,
                Ok(Err(e)) => {
                    tally.error(format!("connect: {e}"));
                    return tally;
                }
                Err(_) => return tally,
            };
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
            let outbound =
                stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
            let mut start = Instant::now();
            if tx.send(message.clone()).await.is_err() {
                tally.error("the request stream closed");
                return tally;
            }
            let call = client.streaming(tonic::Request::new(outbound), path, RawCodec);
            let mut inbound = match timeout_at(deadline, call).await {
                Ok(Ok(response)) => response.into_inner(),
                Ok(Err(status)) => {
                    tally.error(format!("call: {status}"));
                    return tally;
                }
                Err(_) => return tally,
            };
            loop {
                match timeout_at(deadline, inbound.message()).await {
                    Err(_) => break,
                    Ok(Ok(Some(answer))) if answer == message => {
                        tally.ok += 1;
                        tally.latencies_us.push(start.elapsed().as_micros() as u64);
                    }
                    Ok(Ok(Some(_))) => tally.error("an answer other than the message"),
                    Ok(Ok(None)) => {
                        tally.error("the stream ended");
                        return tally;
                    }
                    Ok(Err(status)) => {
                        tally.error(format!("stream: {status}"));
                        return tally;
                    }
                }
                if Instant::now() >= deadline {
                    break;
                }
                start = Instant::now();
                if tx.send(message.clone()).await.is_err() {
                    tally.error("the request stream closed");
                    return tally;
                }
            }
            drop(tx);
            let _ = tokio::time::timeout(Duration::from_secs(1), inbound.message()).await;
            tally
        })
    }
}
