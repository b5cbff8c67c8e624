//! The soak run (`bench/soak.sh`): the real `protogate` binary in its own process, in front of
//! an in-process backend that fails on purpose (error statuses, slow and hung calls, invalid
//! and oversized messages, failing streams, and a restart every few minutes), under mixed
//! traffic for a bounded time: small unary calls, the 190 KB VPS sample, requests the gateway
//! itself refuses, and server streams.
//!
//! Every request says which failure the backend should produce (in `Grpc-Metadata-Scenario`),
//! so every answer is checked against the one expected: its status, its `google.rpc.Status`
//! body and code, or its stream of messages. At the end it checks that no response was lost
//! or malformed, every error was mapped, and the gateway's RSS and open descriptors stayed
//! flat; the figures are printed, and the run fails if a check does not hold.
//!
//! Settings (environment): `SOAK_SECONDS` (600), `SOAK_CLIENTS` (16), `SOAK_RESTART_SECONDS`
//! (120, 0 for none), `SOAK_SAMPLE_SECONDS` (10), `SOAK_SEED`, `PROTOGATE_BIN` (the gateway
//! binary; default: this build's).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};
use protogate::demo::backend::{self, Call, Handlers, MessageStream, Reply, StreamCall};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// Each request's own bound: past it, the request counts as lost.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// The gateway's `--timeout`: backend calls that hang past it are answered 504.
const GATEWAY_TIMEOUT: &str = "1s";
const LIMIT: usize = 1 << 20;

#[test]
#[ignore = "the soak run, ten minutes by default: bench/soak.sh"]
fn soak() {
    let config = Config::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let report = runtime.block_on(run(&config));
    println!("{}", report.render(&config));
    let failures = report.failures(&config);
    assert!(failures.is_empty(), "soak checks failed: {failures:#?}");
}

// === Settings ===

struct Config {
    seconds: u64,
    clients: usize,
    restart_every: Option<Duration>,
    sample_every: Duration,
    seed: u64,
    gateway: String,
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

impl Config {
    fn from_env() -> Config {
        let restart = env_u64("SOAK_RESTART_SECONDS", 120);
        Config {
            seconds: env_u64("SOAK_SECONDS", 600).max(10),
            clients: env_u64("SOAK_CLIENTS", 16).max(1) as usize,
            restart_every: (restart > 0).then(|| Duration::from_secs(restart)),
            sample_every: Duration::from_secs(env_u64("SOAK_SAMPLE_SECONDS", 10).max(1)),
            seed: env_u64("SOAK_SEED", 0x5eed),
            gateway: std::env::var("PROTOGATE_BIN")
                .unwrap_or_else(|_| env!("CARGO_BIN_EXE_protogate").to_string()),
        }
    }
}

// === The backend ===

/// The library API's book "Dune", and a 2 MiB one (beyond the gateway's response limit).
struct Books {
    dune: Bytes,
    huge: Bytes,
}

fn encode(pool: &DescriptorPool, name: &str, value: serde_json::Value) -> Bytes {
    let desc = pool.get_message_by_name(name).unwrap();
    Bytes::from(
        DynamicMessage::deserialize(desc, value)
            .unwrap()
            .encode_to_vec(),
    )
}

fn scenario_of(call_metadata: &tonic::metadata::MetadataMap) -> String {
    call_metadata
        .get("scenario")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("ok")
        .to_string()
}

fn backend_handlers() -> Handlers {
    let vps_pool = protogate::descriptor::load(&protogate::demo::vps_sources()).unwrap();
    let vps = protogate::demo::vps_handler(&vps_pool).unwrap();
    let library = library_pool();
    let books = Arc::new(Books {
        dune: encode(&library, "testapi.v1.Book", json!({"title": "Dune"})),
        huge: encode(
            &library,
            "testapi.v1.Book",
            json!({"title": "x".repeat(2 << 20)}),
        ),
    });
    let unary_books = books.clone();
    let unary = backend::handler(move |call: Call| {
        let (vps, books) = (vps.clone(), unary_books.clone());
        async move {
            if call.path == "/grpc.health.v1.Health/Check" {
                return Err(tonic::Status::unimplemented(""));
            }
            let scenario = scenario_of(&call.metadata);
            let reply = |message: Bytes| Reply {
                message,
                metadata: Default::default(),
            };
            if let Some(code) = scenario.strip_prefix("code-") {
                let code = tonic::Code::from_i32(code.parse().unwrap_or(2));
                return Err(tonic::Status::new(code, format!("soak failure {code:?}")));
            }
            if let Some(ms) = scenario.strip_prefix("slow-") {
                tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(10))).await;
            }
            match scenario.as_str() {
                "deadline" => {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    Ok(reply(books.dune.clone()))
                }
                "garbage" => Ok(reply(Bytes::from_static(&[0xff, 0xff, 0xff]))),
                "big" => Ok(reply(books.huge.clone())),
                _ if call.path.starts_with("/vpresult.") => vps(call).await,
                _ => Ok(reply(books.dune.clone())),
            }
        }
    });
    let streaming = backend::stream_handler(move |call: StreamCall| {
        let books = books.clone();
        async move {
            let scenario = scenario_of(&call.metadata);
            if let Some(code) = scenario.strip_prefix("code-") {
                let code = tonic::Code::from_i32(code.parse().unwrap_or(2));
                return Err(tonic::Status::new(code, format!("soak failure {code:?}")));
            }
            let (count, fail) = match scenario.strip_prefix("stream-") {
                Some("fail") => (3, true),
                Some(n) => (n.parse().unwrap_or(1), false),
                None => (1, false),
            };
            let mut items: Vec<Result<Bytes, tonic::Status>> =
                (0..count).map(|_| Ok(books.dune.clone())).collect();
            if fail {
                items.push(Err(tonic::Status::aborted("soak stream failure")));
            }
            let messages: MessageStream = Box::pin(stream::iter(items));
            Ok((Default::default(), messages))
        }
    });
    Handlers {
        unary,
        streaming: Some((vec!["/testapi.v1.Library/Watch".to_string()], streaming)),
    }
}

fn library_pool() -> DescriptorPool {
    let sources = protogate::descriptor::Sources {
        protos: vec!["testapi/v1/library.proto".into()],
        includes: vec![format!("{REPO}/tests/protos").into()],
        ..Default::default()
    };
    protogate::descriptor::load(&sources).unwrap()
}

/// Starts the backend on `addr` (the same port across restarts).
async fn start_backend(addr: SocketAddr, handlers: Handlers) -> oneshot::Sender<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) if Instant::now() > deadline => panic!("cannot bind {addr} again: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(backend::serve_all(listener, handlers, async move {
        let _ = stopped.await;
    }));
    stop
}

// === The gateway process ===

struct Gateway {
    child: Child,
    base: String,
    addr: String,
}

/// A run that fails midway still ends the gateway it started.
impl Drop for Gateway {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn spawn_gateway(binary: &str, upstream: &str) -> Gateway {
    let mut child = Command::new(binary)
        .current_dir(REPO)
        .args([
            "serve",
            "--descriptor-set",
            "descriptors/vps.binpb",
            "--proto",
            "testapi/v1/library.proto",
            "-I",
            "tests/protos",
            "--upstream",
            upstream,
            "--listen",
            "127.0.0.1:0",
            "--timeout",
            GATEWAY_TIMEOUT,
            "--max-request-bytes",
            &LIMIT.to_string(),
            "--max-response-bytes",
            &LIMIT.to_string(),
            "--log",
            "info,protogate::access=off",
            "--log-format",
            "json",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line.clone()).is_err() {
                eprintln!("gateway: {line}");
            }
        }
    });
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the gateway logged its address");
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if let Some(address) = v["fields"]["address"].as_str() {
            break address.to_string();
        }
    };
    drop(rx);
    Gateway {
        child,
        base: format!("http://{addr}"),
        addr,
    }
}

/// Resident memory and open descriptors of a process, from `/proc`.
fn usage(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (rss_kb * 1024, fds)
}

// === Traffic ===

/// A small deterministic generator (xorshift64*), one per client.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What a request should get back.
#[derive(Debug, Clone)]
enum Expect {
    /// 200 with this JSON title.
    Book,
    /// 200 with a VPS pose.
    Pose,
    /// 200 with `n` NDJSON results, then an error line with `code` when given.
    Stream(usize, Option<i32>),
    /// An error status with its `google.rpc.Status` code.
    Error(u16, i32),
}

/// One request of the mix.
struct Planned {
    kind: &'static str,
    method: &'static str,
    path: String,
    scenario: String,
    body: Bytes,
    expect: Expect,
    /// Sent on its own connection while reading the answer (bodies beyond the limit).
    upload: bool,
}

/// The HTTP status of each gRPC code (the standard table).
fn http_of(code: i32) -> u16 {
    match code {
        1 => 499,
        3 | 9 | 11 => 400,
        4 => 504,
        5 => 404,
        6 | 10 => 409,
        7 => 403,
        8 => 429,
        12 => 501,
        14 => 503,
        16 => 401,
        _ => 500,
    }
}

/// A backend scenario for a unary call: mostly fine, sometimes failing each way.
fn unary_scenario(rng: &mut Rng, vps: bool) -> (String, Option<Expect>) {
    match rng.below(100) {
        0..=69 => ("ok".into(), None),
        70..=84 => {
            let code = 1 + rng.below(16) as i32;
            (
                format!("code-{code}"),
                Some(Expect::Error(http_of(code), code)),
            )
        }
        85..=92 => (format!("slow-{}", rng.below(50)), None),
        93..=95 => ("garbage".into(), Some(Expect::Error(500, 13))),
        96..=97 if !vps => ("big".into(), Some(Expect::Error(429, 8))),
        _ => ("deadline".into(), Some(Expect::Error(504, 4))),
    }
}

fn plan(rng: &mut Rng, sample: &Bytes, oversized: &Bytes) -> Planned {
    let get = |kind, path: String, scenario: String, expect| Planned {
        kind,
        method: "GET",
        path,
        scenario,
        body: Bytes::new(),
        expect,
        upload: false,
    };
    match rng.below(100) {
        0..=39 => {
            let (scenario, expect) = unary_scenario(rng, false);
            let path = format!("/v2/books/b{}", rng.below(1000));
            get("small", path, scenario, expect.unwrap_or(Expect::Book))
        }
        40..=59 => {
            let (scenario, expect) = unary_scenario(rng, true);
            Planned {
                kind: "vps",
                method: "POST",
                path: "/skvps/locdata".into(),
                scenario,
                body: sample.clone(),
                expect: expect.unwrap_or(Expect::Pose),
                upload: false,
            }
        }
        60..=79 => {
            let (method, path, body, expect, upload): (_, &str, Bytes, _, _) = match rng.below(6) {
                0 => (
                    "POST",
                    "/v1/shelves/s1/books",
                    Bytes::from_static(br#"{"title":"#),
                    Expect::Error(400, 3),
                    false,
                ),
                1 => (
                    "GET",
                    "/v1/nowhere",
                    Bytes::new(),
                    Expect::Error(404, 5),
                    false,
                ),
                2 => (
                    "DELETE",
                    "/v2/books/b1",
                    Bytes::new(),
                    Expect::Error(405, 12),
                    false,
                ),
                3 => (
                    "GET",
                    "/v1/shelves/s1/books?page_size=many",
                    Bytes::new(),
                    Expect::Error(400, 3),
                    false,
                ),
                4 => (
                    "GET",
                    "/v2/books/%FF",
                    Bytes::new(),
                    Expect::Error(400, 3),
                    false,
                ),
                _ => (
                    "POST",
                    "/v1/shelves/s1/books",
                    oversized.clone(),
                    Expect::Error(413, 8),
                    true,
                ),
            };
            Planned {
                kind: "refused",
                method,
                path: path.to_string(),
                scenario: "ok".into(),
                body,
                expect,
                upload,
            }
        }
        _ => {
            let (scenario, expect) = match rng.below(10) {
                0 => ("stream-fail".to_string(), Expect::Stream(3, Some(10))),
                1 => ("code-5".to_string(), Expect::Error(404, 5)),
                _ => {
                    let n = 1 + rng.below(20) as usize;
                    (format!("stream-{n}"), Expect::Stream(n, None))
                }
            };
            get(
                "stream",
                format!("/v1/watch/w{}", rng.below(100)),
                scenario,
                expect,
            )
        }
    }
}

/// The outcome of one request.
#[derive(Debug)]
enum Outcome {
    /// The expected answer.
    Ok,
    /// 503 `UNAVAILABLE` while the backend was restarting: mapped, expected then.
    Unavailable,
    /// No answer (connection failure or past [`REQUEST_TIMEOUT`]).
    Lost(String),
    /// An answer other than the expected one, or not well-formed.
    Wrong(String),
}

fn check(planned: &Planned, status: StatusCode, body: &[u8], restarting: bool) -> Outcome {
    let text = || String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    let json = || serde_json::from_slice::<serde_json::Value>(body);
    let status_code = |v: &serde_json::Value| v["code"].as_i64().map(|c| c as i32);
    let is_status = |v: &serde_json::Value| {
        v.as_object().map(|o| o.len()) == Some(3)
            && v["message"].is_string()
            && v["details"].is_array()
    };
    if status == 503 && restarting && planned.kind != "refused" {
        return match json() {
            Ok(v) if status_code(&v) == Some(14) && is_status(&v) => Outcome::Unavailable,
            _ => Outcome::Wrong(format!("503 without a Status body: {}", text())),
        };
    }
    let wrong = |why: &str| {
        Outcome::Wrong(format!(
            "{} {} ({}): {why}: {status} {}",
            planned.method,
            planned.path,
            planned.scenario,
            text()
        ))
    };
    match &planned.expect {
        Expect::Error(http, code) => match json() {
            Ok(v) if status == *http && status_code(&v) == Some(*code) && is_status(&v) => {
                Outcome::Ok
            }
            _ => wrong(&format!("expected {http} with code {code}")),
        },
        Expect::Book => match json() {
            Ok(v) if status == 200 && v["title"] == "Dune" => Outcome::Ok,
            _ => wrong("expected the book"),
        },
        Expect::Pose => match json() {
            Ok(v) if status == 200 && v.is_object() => Outcome::Ok,
            _ => wrong("expected a pose"),
        },
        Expect::Stream(n, error) => {
            if status != 200 {
                return wrong("expected a stream");
            }
            let lines: Vec<serde_json::Value> = match String::from_utf8_lossy(body)
                .lines()
                .map(serde_json::from_str)
                .collect()
            {
                Ok(lines) => lines,
                Err(_) => return wrong("a line is not JSON"),
            };
            let results = lines
                .iter()
                .take_while(|l| l["result"]["title"] == "Dune")
                .count();
            let tail: Vec<_> = lines[results..].iter().collect();
            let cut = restarting
                && tail.len() == 1
                && status_code(&tail[0]["error"]) == Some(14)
                && is_status(&tail[0]["error"]);
            if cut {
                return Outcome::Unavailable;
            }
            let ok = results == *n
                && match error {
                    None => tail.is_empty(),
                    Some(code) => {
                        tail.len() == 1
                            && status_code(&tail[0]["error"]) == Some(*code)
                            && is_status(&tail[0]["error"])
                    }
                };
            if ok {
                Outcome::Ok
            } else {
                wrong(&format!("expected {n} results and {error:?}"))
            }
        }
    }
}

async fn connect(addr: &str) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One request on the client's keep-alive connection (opened again when it closed).
async fn exchange(
    sender: &mut Option<SendRequest<Full<Bytes>>>,
    addr: &str,
    planned: &Planned,
) -> Result<(StatusCode, Bytes), String> {
    if sender.as_ref().is_none_or(|s| s.is_closed()) {
        *sender = Some(connect(addr).await?);
    }
    let s = sender.as_mut().unwrap();
    s.ready().await.map_err(|e| format!("ready: {e}"))?;
    let request = Request::builder()
        .method(planned.method)
        .uri(&planned.path)
        .header("host", addr)
        .header("grpc-metadata-scenario", &planned.scenario)
        .body(Full::new(planned.body.clone()))
        .unwrap();
    let response = s
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok((parts.status, body))
}

/// A body beyond the limit, written on its own connection while the answer is read (as real
/// clients do: the gateway answers 413 before the body ends and closes).
async fn upload(addr: &str, planned: &Planned) -> Result<(StatusCode, Bytes), String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "{} {} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        planned.method,
        planned.path,
        planned.body.len()
    );
    let body = planned.body.clone();
    let sender = tokio::spawn(async move {
        let _ = writer.write_all(head.as_bytes()).await;
        let _ = writer.write_all(&body).await;
    });
    let mut wire = Vec::new();
    let mut buf = vec![0u8; 16 << 10];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => wire.extend_from_slice(&buf[..n]),
        }
    }
    sender.abort();
    let end = wire
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no response head in {} bytes", wire.len()))?;
    let head = String::from_utf8_lossy(&wire[..end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or("no status line")?;
    let mut body = wire[end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok((status, Bytes::from(body)))
}

fn dechunk(mut wire: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = wire.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&wire[..eol]).trim(), 16).unwrap_or(0);
        wire = &wire[eol + 2..];
        if size == 0 || wire.len() < size {
            break;
        }
        out.extend_from_slice(&wire[..size]);
        wire = wire.get(size + 2..).unwrap_or_default();
    }
    out
}

// === The run ===

#[derive(Default)]
struct Tally {
    total: u64,
    ok: u64,
    unavailable: u64,
    lost: Vec<String>,
    wrong: Vec<String>,
    by_kind: BTreeMap<&'static str, (u64, Vec<Duration>)>,
    errors_by_status: BTreeMap<u16, u64>,
}

struct Sample {
    at: Duration,
    requests: u64,
    rss: u64,
    fds: usize,
}

struct Report {
    tally: Tally,
    samples: Vec<Sample>,
    idle_before: (u64, usize),
    idle_after: (u64, usize),
    restarts: usize,
    elapsed: Duration,
    exit: Option<i32>,
}

async fn run(config: &Config) -> Report {
    let sample = Bytes::from(std::fs::read(format!("{REPO}/examples/sample.json")).unwrap());
    let oversized = Bytes::from(vec![b' '; LIMIT + (512 << 10)]);
    let addr: SocketAddr = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let handlers = backend_handlers();
    let mut stop_backend = Some(start_backend(addr, handlers.clone()).await);
    let mut gateway = spawn_gateway(&config.gateway, &format!("http://{addr}"));
    let pid = gateway.child.id();
    eprintln!(
        "soak: {} s, {} clients, gateway {} (pid {pid}) at {}, backend {addr}, restart every {:?}",
        config.seconds, config.clients, config.gateway, gateway.base, config.restart_every
    );

    let idle_before = usage(pid);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let requests = Arc::new(AtomicU64::new(0));
    let restarting = Arc::new(AtomicBool::new(false));
    // Bumped when the backend stops and when it is back: a request that saw it change ran
    // across a restart.
    let epoch = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let end = started + Duration::from_secs(config.seconds);

    let clients: Vec<_> = (0..config.clients)
        .map(|i| {
            let (tally, requests) = (tally.clone(), requests.clone());
            let (restarting, epoch) = (restarting.clone(), epoch.clone());
            let (addr, sample, oversized) =
                (gateway.addr.clone(), sample.clone(), oversized.clone());
            let mut rng = Rng(config
                .seed
                .wrapping_add((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
                | 1);
            tokio::spawn(async move {
                let mut sender = None;
                while Instant::now() < end {
                    let planned = plan(&mut rng, &sample, &oversized);
                    let began = Instant::now();
                    let epoch_before = epoch.load(Ordering::SeqCst);
                    let during_restart = restarting.load(Ordering::SeqCst);
                    let answer = tokio::time::timeout(REQUEST_TIMEOUT, async {
                        if planned.upload {
                            upload(&addr, &planned).await
                        } else {
                            exchange(&mut sender, &addr, &planned).await
                        }
                    })
                    .await
                    .unwrap_or_else(|_| Err(format!("no answer within {REQUEST_TIMEOUT:?}")));
                    let took = began.elapsed();
                    let restarting_now = during_restart
                        || restarting.load(Ordering::SeqCst)
                        || epoch.load(Ordering::SeqCst) != epoch_before;
                    let outcome = match &answer {
                        Ok((status, body)) => check(&planned, *status, body, restarting_now),
                        Err(e) => {
                            Outcome::Lost(format!("{} {}: {e}", planned.method, planned.path))
                        }
                    };
                    if answer.is_err() {
                        sender = None;
                    }
                    requests.fetch_add(1, Ordering::Relaxed);
                    let mut t = tally.lock().unwrap();
                    t.total += 1;
                    let entry = t.by_kind.entry(planned.kind).or_default();
                    entry.0 += 1;
                    entry.1.push(took);
                    if let Ok((status, _)) = &answer {
                        if *status != 200 {
                            *t.errors_by_status.entry(status.as_u16()).or_default() += 1;
                        }
                    }
                    match outcome {
                        Outcome::Ok => t.ok += 1,
                        Outcome::Unavailable => t.unavailable += 1,
                        Outcome::Lost(e) => t.lost.push(e),
                        Outcome::Wrong(e) => t.wrong.push(e),
                    }
                }
            })
        })
        .collect();

    let mut samples = Vec::new();
    let mut restarts = 0;
    let mut next_sample = started + config.sample_every;
    let mut next_restart = config.restart_every.map(|d| started + d);
    while Instant::now() < end {
        let now = Instant::now();
        let wake = next_restart
            .map_or(next_sample, |r| r.min(next_sample))
            .min(end);
        tokio::time::sleep(wake.saturating_duration_since(now)).await;
        if next_restart.is_some_and(|r| Instant::now() >= r) {
            restarting.store(true, Ordering::SeqCst);
            epoch.fetch_add(1, Ordering::SeqCst);
            if let Some(stop) = stop_backend.take() {
                let _ = stop.send(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            stop_backend = Some(start_backend(addr, handlers.clone()).await);
            restarts += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
            restarting.store(false, Ordering::SeqCst);
            epoch.fetch_add(1, Ordering::SeqCst);
            next_restart = config.restart_every.map(|d| Instant::now() + d);
        }
        if Instant::now() >= next_sample {
            let (rss, fds) = usage(pid);
            let s = Sample {
                at: started.elapsed(),
                requests: requests.load(Ordering::Relaxed),
                rss,
                fds,
            };
            let t = tally.lock().unwrap();
            eprintln!(
                "t={:>4}s requests={:>8} rss={:>6.1} MiB fds={:>4} unexpected={} lost={}",
                s.at.as_secs(),
                s.requests,
                s.rss as f64 / (1 << 20) as f64,
                s.fds,
                t.wrong.len(),
                t.lost.len()
            );
            drop(t);
            samples.push(s);
            next_sample += config.sample_every;
        }
    }
    for c in clients {
        let _ = tokio::time::timeout(REQUEST_TIMEOUT * 2, c).await;
    }
    let elapsed = started.elapsed();
    // The clients' connections are closed; give the gateway a moment to see it.
    let mut idle_after = usage(pid);
    for _ in 0..50 {
        if idle_after.1 <= idle_before.1 + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        idle_after = usage(pid);
    }
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let exit = wait_exit(&mut gateway.child, Duration::from_secs(30));
    if let Some(stop) = stop_backend.take() {
        let _ = stop.send(());
    }
    let tally = Arc::try_unwrap(tally)
        .ok()
        .map(|m| m.into_inner().unwrap())
        .unwrap_or_default();
    Report {
        tally,
        samples,
        idle_before,
        idle_after,
        restarts,
        elapsed,
        exit,
    }
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        #[allow(clippy::disallowed_methods)] // a plain thread polling a child, no runtime here
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}

// === The report ===

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

impl Report {
    /// RSS and descriptors in the settled part of the run (after the first fifth) and at its
    /// end (the last quarter): (settled max RSS, end max RSS, settled max fds, end max fds).
    fn plateaus(&self) -> (u64, u64, usize, usize) {
        let total = self.elapsed.as_secs_f64();
        let settled: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| {
                let t = s.at.as_secs_f64();
                t >= total * 0.2 && t < total * 0.5
            })
            .collect();
        let end: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.at.as_secs_f64() >= total * 0.75)
            .collect();
        let max_rss = |v: &[&Sample]| v.iter().map(|s| s.rss).max().unwrap_or(0);
        let max_fds = |v: &[&Sample]| v.iter().map(|s| s.fds).max().unwrap_or(0);
        (
            max_rss(&settled),
            max_rss(&end),
            max_fds(&settled),
            max_fds(&end),
        )
    }

    fn failures(&self, config: &Config) -> Vec<String> {
        let mut failures = Vec::new();
        let t = &self.tally;
        if !t.lost.is_empty() {
            failures.push(format!(
                "{} responses lost, e.g. {:?}",
                t.lost.len(),
                &t.lost[..t.lost.len().min(5)]
            ));
        }
        if !t.wrong.is_empty() {
            failures.push(format!(
                "{} responses unexpected or malformed, e.g. {:?}",
                t.wrong.len(),
                &t.wrong[..t.wrong.len().min(5)]
            ));
        }
        if t.total == 0 {
            failures.push("no request was made".into());
        }
        let (settled_rss, end_rss, settled_fds, end_fds) = self.plateaus();
        if settled_rss > 0 && end_rss as f64 > settled_rss as f64 * 1.2 + (8 << 20) as f64 {
            failures.push(format!(
                "RSS grew from {:.1} MiB to {:.1} MiB",
                mib(settled_rss),
                mib(end_rss)
            ));
        }
        if end_fds > settled_fds + 8 {
            failures.push(format!(
                "open descriptors grew from {settled_fds} to {end_fds}"
            ));
        }
        if self.idle_after.1 > self.idle_before.1 + 4 {
            failures.push(format!(
                "{} descriptors open once idle again, {} before the run",
                self.idle_after.1, self.idle_before.1
            ));
        }
        if self.exit != Some(0) {
            failures.push(format!(
                "the gateway exited with {:?} on SIGTERM",
                self.exit
            ));
        }
        if config
            .restart_every
            .is_some_and(|d| d.as_secs() < config.seconds)
            && self.restarts == 0
        {
            failures.push("the backend was never restarted".into());
        }
        failures
    }

    fn render(&self, config: &Config) -> String {
        let t = &self.tally;
        let mut out = String::new();
        let secs = self.elapsed.as_secs_f64();
        out.push_str(&format!(
            "soak: {:.0} s, {} clients, {} requests ({:.0}/s), {} as expected, {} 503 during {} backend restarts, {} lost, {} unexpected\n",
            secs,
            config.clients,
            t.total,
            t.total as f64 / secs,
            t.ok,
            t.unavailable,
            self.restarts,
            t.lost.len(),
            t.wrong.len()
        ));
        for (kind, (n, times)) in &t.by_kind {
            let mut sorted = times.clone();
            sorted.sort();
            out.push_str(&format!(
                "  {kind:<8} {n:>8} requests  p50 {:>8.1?}  p99 {:>8.1?}  max {:>8.1?}\n",
                percentile(&sorted, 0.5),
                percentile(&sorted, 0.99),
                sorted.last().copied().unwrap_or_default()
            ));
        }
        out.push_str(&format!(
            "  errors by HTTP status: {:?}\n",
            t.errors_by_status
        ));
        let (settled_rss, end_rss, settled_fds, end_fds) = self.plateaus();
        out.push_str(&format!(
            "  gateway RSS: idle {:.1} MiB, settled max {:.1} MiB, end max {:.1} MiB, idle after {:.1} MiB\n",
            mib(self.idle_before.0),
            mib(settled_rss),
            mib(end_rss),
            mib(self.idle_after.0)
        ));
        out.push_str(&format!(
            "  gateway descriptors: idle {}, settled max {settled_fds}, end max {end_fds}, idle after {}\n",
            self.idle_before.1, self.idle_after.1
        ));
        out.push_str(&format!("  gateway exit on SIGTERM: {:?}\n", self.exit));
        out.push_str("  samples (s, requests, RSS MiB, fds):");
        for s in &self.samples {
            out.push_str(&format!(
                " ({}, {}, {:.1}, {})",
                s.at.as_secs(),
                s.requests,
                mib(s.rss),
                s.fds
            ));
        }
        out.push('\n');
        for e in t.lost.iter().chain(&t.wrong).take(10) {
            out.push_str(&format!("  ! {e}\n"));
        }
        out
    }
}
