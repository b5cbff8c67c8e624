//! Shared test harness: a real tonic gRPC backend and the real gateway on loopback sockets,
//! and a small HTTP/1.1 client. Every await that could hang is bounded by [`TIMEOUT`].

pub(crate) mod certs;

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};
use protogate::demo::backend::{self, Call, Reply};
use protogate::descriptor::Sources;
use protogate::server::{Gateway, Settings};
use protogate::snapshot::Snapshot;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// The bound on every await that could hang.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(20);

/// Awaits `f`, failing the test if it takes longer than [`TIMEOUT`].
pub(crate) async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(TIMEOUT, f)
        .await
        .expect("operation timed out")
}

pub(crate) fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The test API in `tests/protos`, compiled in-process.
pub(crate) fn library_sources() -> Sources {
    Sources {
        protos: vec![PathBuf::from("testapi/v1/library.proto")],
        includes: vec![repo_path("tests/protos")],
        ..Sources::default()
    }
}

/// The test API's descriptors, compiled once for every test of the binary (a compilation
/// takes about 100 ms in a debug build; the pool is immutable and cheap to clone).
pub(crate) fn library_pool() -> DescriptorPool {
    static POOL: std::sync::OnceLock<DescriptorPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| protogate::descriptor::load(&library_sources()).expect("test protos load"))
        .clone()
}

type Responder = Arc<dyn Fn(&Call) -> Result<Reply, tonic::Status> + Send + Sync>;

/// A real gRPC server that records every call and answers through a closure.
pub(crate) struct Backend {
    pub url: String,
    pub addr: std::net::SocketAddr,
    calls: Arc<Mutex<Vec<Call>>>,
    _stop: oneshot::Sender<()>,
}

impl Backend {
    /// Starts a backend answering with `respond`.
    pub(crate) async fn start(
        respond: impl Fn(&Call) -> Result<Reply, tonic::Status> + Send + Sync + 'static,
    ) -> Backend {
        Self::start_async(Arc::new(respond), None).await
    }

    /// Starts a backend that waits `delay` before answering.
    pub(crate) async fn start_slow(
        delay: Duration,
        respond: impl Fn(&Call) -> Result<Reply, tonic::Status> + Send + Sync + 'static,
    ) -> Backend {
        Self::start_async(Arc::new(respond), Some(delay)).await
    }

    async fn start_async(respond: Responder, delay: Option<Duration>) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let recorded = calls.clone();
        let handler = backend::handler(move |call: Call| {
            recorded.lock().unwrap().push(call.clone());
            let respond = respond.clone();
            async move {
                if let Some(d) = delay {
                    tokio::time::sleep(d).await;
                }
                respond(&call)
            }
        });
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(backend::serve(listener, handler, async move {
            let _ = stopped.await;
        }));
        Backend {
            url: format!("http://{addr}"),
            addr,
            calls,
            _stop: stop,
        }
    }

    pub(crate) fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// The only call received so far.
    pub(crate) fn only_call(&self) -> Call {
        let calls = self.calls();
        assert_eq!(calls.len(), 1, "expected exactly one upstream call");
        calls[0].clone()
    }
}

/// A backend that answers every call with `message` (and has no health service, like most
/// servers: health checks get UNIMPLEMENTED).
pub(crate) fn reply_with(message: Bytes) -> impl Fn(&Call) -> Result<Reply, tonic::Status> {
    move |call| {
        if call.path == "/grpc.health.v1.Health/Check" {
            return Err(tonic::Status::unimplemented("no health service"));
        }
        Ok(Reply {
            message: message.clone(),
            metadata: Default::default(),
        })
    }
}

/// The gateway serving on a loopback port.
pub(crate) struct Gw {
    pub base: String,
    pub gateway: Arc<Gateway>,
    _stop: oneshot::Sender<()>,
}

/// Starts the gateway for `sources` with one default upstream.
pub(crate) async fn start_gateway(sources: Sources, upstream: &str, settings: Settings) -> Gw {
    let options = protogate::upstream::UpstreamOptions {
        connections: 2,
        connect_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    start_gateway_with(sources, upstream, settings, options).await
}

/// [`start_gateway`] with the upstream's connection `options`.
pub(crate) async fn start_gateway_with(
    sources: Sources,
    upstream: &str,
    settings: Settings,
    options: protogate::upstream::UpstreamOptions,
) -> Gw {
    let (upstreams, map) = protogate::upstream::build_all(Some(upstream), &[], &options).unwrap();
    let snapshot = Snapshot::build(&sources, &Default::default(), Some(&map)).unwrap();
    start_with(Gateway::new(snapshot, upstreams, settings)).await
}

/// Serves an already built gateway on a loopback port.
pub(crate) async fn start_with(gateway: Arc<Gateway>) -> Gw {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    tokio::spawn(protogate::server::serve(
        listener,
        gateway.clone(),
        shutdown,
        Duration::from_secs(1),
    ));
    Gw {
        base,
        gateway,
        _stop: stop,
    }
}

/// A response as the test sees it.
#[derive(Debug)]
pub(crate) struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends one HTTP/1.1 request on a fresh connection.
pub(crate) async fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Resp {
    bounded(send_unbounded(method, url, headers, body.into())).await
}

async fn send_unbounded(method: &str, url: &str, headers: &[(&str, &str)], body: Bytes) -> Resp {
    let uri: http::Uri = url.parse().unwrap();
    let authority = uri.authority().unwrap().clone();
    let stream = TcpStream::connect(authority.as_str()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut request = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .header("host", authority.as_str());
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = sender
        .send_request(request.body(Full::new(body)).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Resp {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub(crate) async fn get(url: &str) -> Resp {
    send("GET", url, &[], Bytes::new()).await
}

pub(crate) async fn post_json(url: &str, json: &serde_json::Value) -> Resp {
    send(
        "POST",
        url,
        &[("content-type", "application/json")],
        serde_json::to_vec(json).unwrap(),
    )
    .await
}

/// Encodes a message of `type_name` given in JSON.
pub(crate) fn encode_json(
    pool: &DescriptorPool,
    type_name: &str,
    json: serde_json::Value,
) -> Bytes {
    let desc = pool.get_message_by_name(type_name).unwrap();
    let message = DynamicMessage::deserialize(desc, json).unwrap();
    Bytes::from(message.encode_to_vec())
}

/// Decodes a message of `type_name` and renders it as JSON (proto names, defaults omitted).
pub(crate) fn decode_json(
    pool: &DescriptorPool,
    type_name: &str,
    bytes: &[u8],
) -> serde_json::Value {
    let desc = pool.get_message_by_name(type_name).unwrap();
    let message = DynamicMessage::decode(desc, bytes).unwrap();
    let options = prost_reflect::SerializeOptions::new().use_proto_field_name(true);
    message
        .serialize_with_options(serde_json::value::Serializer, &options)
        .unwrap()
}

/// The test API plus `Relay` (every call kind, no HTTP rules), compiled in-process: what the
/// passthrough, gRPC-Web and reflection tests serve.
pub(crate) fn relay_sources() -> Sources {
    Sources {
        protos: vec![
            PathBuf::from("testapi/v1/library.proto"),
            PathBuf::from("testapi/v1/streams.proto"),
        ],
        includes: vec![repo_path("tests/protos")],
        ..Sources::default()
    }
}

/// A real gRPC server with unary and streaming handlers, stopped when dropped.
pub(crate) struct Served {
    pub url: String,
    _stop: oneshot::Sender<()>,
}

/// Starts a gRPC server for `handlers` on a loopback port.
pub(crate) async fn serve_handlers(handlers: backend::Handlers) -> Served {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(backend::serve_all(listener, handlers, async move {
        let _ = stopped.await;
    }));
    Served { url, _stop: stop }
}

/// A tonic HTTP/2 channel to `base` (`http://host:port`), connected.
pub(crate) async fn grpc_channel(base: &str) -> tonic::transport::Channel {
    let endpoint = tonic::transport::Endpoint::from_shared(base.to_string()).unwrap();
    bounded(endpoint.connect()).await.unwrap()
}

/// A raw-bytes gRPC client to the gateway at `base`, ready for a call.
pub(crate) async fn grpc_client(base: &str) -> tonic::client::Grpc<tonic::transport::Channel> {
    let mut client = tonic::client::Grpc::new(grpc_channel(base).await);
    bounded(client.ready()).await.unwrap();
    client
}

/// A loopback URL where nothing listens (the port was just bound and released).
pub(crate) async fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

/// The real binary, serving on a loopback port it reports in its log; killed when dropped.
pub(crate) struct Process {
    pub child: std::process::Child,
    pub base: String,
    /// Its log lines (JSON) after the one that named the address.
    pub log: std::sync::mpsc::Receiver<String>,
}

impl Process {
    /// The log lines that arrive within [`TIMEOUT`] until `done` holds for one (included).
    pub(crate) fn log_until(
        &self,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> Vec<serde_json::Value> {
        let mut lines = Vec::new();
        loop {
            let line = self
                .log
                .recv_timeout(TIMEOUT)
                .expect("the awaited log line");
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let last = done(&v);
            lines.push(v);
            if last {
                return lines;
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `protogate serve --listen 127.0.0.1:0` with `args`, from the repository root, and
/// waits (at most [`TIMEOUT`]) until it logs the address it listens on.
pub(crate) fn spawn_gateway(args: &[&str]) -> Process {
    spawn_gateway_env(args, &[])
}

/// [`spawn_gateway`] with these environment variables set too.
pub(crate) fn spawn_gateway_env(args: &[&str], env: &[(&str, &str)]) -> Process {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let mut child = Command::new(env!("CARGO_BIN_EXE_protogate"))
        .current_dir(repo_path(""))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("PROTOGATE_LOG_FORMAT", "json")
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let base = loop {
        let line = rx
            .recv_timeout(TIMEOUT)
            .expect("the gateway logged its address");
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if let Some(address) = v["address"].as_str() {
            break format!("http://{address}");
        }
    };
    Process {
        child,
        base,
        log: rx,
    }
}

/// A headless browser driven over DevTools, for the browser tests.
pub(crate) mod browser;
