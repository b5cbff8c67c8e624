//! Real clients that nobody here wrote, against the real gateway in front of a real gRPC
//! backend: Connect-ES in Node.js (`@connectrpc/connect-node`, its gRPC, gRPC-Web and Connect
//! transports, JSON and binary, HTTP/1.1 and HTTP/2), `buf curl`, and Connect-ES in headless
//! chromium (`@connectrpc/connect-web`) on a page served from another origin.
//!
//! The client scripts are `tests/clients/*.mjs`; they run a plan of calls and print what
//! happened as JSON lines. `ci/npm.sh` installs the pinned packages under `target/` and
//! `.ci/run` passes their folder as `PROTOGATE_NODE_MODULES` (without it, the tests look in
//! `target/ci-node/node_modules`). Where node or the packages are missing the tests say so and
//! skip, except under `CI=true`, where they fail.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use prost_reflect::DescriptorPool;
use protogate::demo::backend::{self, Call, Handlers, MessageStream, Reply, StreamCall};
use protogate::server::{CorsPolicy, Settings};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

use crate::support::browser::{chromium, Browser};
use crate::support::*;

const SERVICE: &str = "testapi.v1.Relay";
const SAY: &str = "/testapi.v1.Relay/Say";
const LISTEN: &str = "/testapi.v1.Relay/Listen";
const COLLECT: &str = "/testapi.v1.Relay/Collect";
const CONVERSE: &str = "/testapi.v1.Relay/Converse";
const NOTE: &str = "testapi.v1.Note";
const LOOKUP: &str = "clients.v1.Lookup";
const FIND: &str = "/clients.v1.Lookup/Find";

/// The test API's `Relay` and `clients.v1.Lookup` (a method clients may call with GET).
fn client_sources() -> protogate::descriptor::Sources {
    let mut sources = relay_sources();
    sources
        .protos
        .push(PathBuf::from("clients/v1/lookup.proto"));
    sources.includes.push(repo_path("tests/clients/protos"));
    sources
}

/// The installed packages, or `None` (after saying why) when these tests cannot run here.
fn node_modules() -> Option<PathBuf> {
    let dir = std::env::var_os("PROTOGATE_NODE_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_path("target/ci-node/node_modules"));
    let installed = dir.join("@connectrpc/connect-node/package.json").is_file();
    let node = std::process::Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if installed && node {
        // Absolute, for the link to it in each scripts folder.
        return Some(dir.canonicalize().unwrap_or(dir));
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "node or the client packages are missing under CI (looked in {}): .ci/run installs \
         them with ci/npm.sh and sets PROTOGATE_NODE_MODULES",
        dir.display()
    );
    // Straight to the terminal: libtest would swallow eprintln! of a passing test.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: the client tests need node and the packages of ci/npm.sh (bash ci/npm.sh); \
         CI installs them and runs these tests"
    );
    None
}

/// A folder holding the client scripts beside a link to the packages (ES modules find their
/// imports in the nearest `node_modules`, and nowhere else) and the API's descriptor set.
struct Scripts {
    dir: tempfile::TempDir,
    node_modules: PathBuf,
}

impl Scripts {
    fn new(node_modules: PathBuf, pool: &DescriptorPool) -> Scripts {
        let dir = tempfile::tempdir().expect("a temporary folder");
        for entry in std::fs::read_dir(repo_path("tests/clients")).expect("tests/clients") {
            let path = entry.expect("a directory entry").path();
            if path.extension().is_some_and(|e| e == "mjs") {
                let name = path.file_name().expect("a file name");
                std::fs::copy(&path, dir.path().join(name)).expect("copy a client script");
            }
        }
        std::os::unix::fs::symlink(&node_modules, dir.path().join("node_modules"))
            .expect("link node_modules");
        std::fs::write(dir.path().join("api.binpb"), pool.encode_to_vec())
            .expect("write the descriptor set");
        Scripts { dir, node_modules }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn descriptor_set(&self) -> String {
        self.path("api.binpb").display().to_string()
    }

    /// Runs `connect_node.mjs` with `plan` (its descriptor set filled in) and returns the
    /// events it printed.
    async fn node(&self, mut plan: Value) -> Events {
        plan["descriptorSet"] = json!(self.descriptor_set());
        plan["deadlineMs"] = json!(TIMEOUT.as_millis() as u64 - 2000);
        let output = run(tokio::process::Command::new("node")
            .arg(self.path("connect_node.mjs"))
            .arg(plan.to_string()))
        .await;
        Events::parse(&output)
    }

    /// `buf curl` of `url` with `request`, its extra `args` first: the messages it printed,
    /// or the error it printed when it failed.
    async fn buf_curl(
        &self,
        args: &[&str],
        url: &str,
        request: &Value,
    ) -> Result<Vec<Value>, Value> {
        let native = self.node_modules.join("@bufbuild/buf-linux-x64/bin/buf");
        let buf = if native.is_file() {
            native
        } else {
            self.node_modules.join(".bin/buf")
        };
        let output = run_unchecked(
            tokio::process::Command::new(buf)
                .env("BUF_CACHE_DIR", self.path("buf-cache"))
                .arg("curl")
                .args(["--schema", &self.descriptor_set()])
                .args(args)
                .args([
                    "--connect-timeout",
                    "5",
                    "--data",
                    &request.to_string(),
                    url,
                ]),
        )
        .await;
        let json = |bytes: &[u8]| -> Vec<Value> {
            let text = String::from_utf8_lossy(bytes);
            serde_json::Deserializer::from_str(&text)
                .into_iter::<Value>()
                .collect::<Result<_, _>>()
                .unwrap_or_else(|e| panic!("buf curl printed no JSON ({e}): {text}"))
        };
        if output.status.success() {
            return Ok(json(&output.stdout));
        }
        let mut errors = json(&output.stderr);
        assert_eq!(errors.len(), 1, "buf curl {args:?} {url}: {errors:?}");
        Err(errors.remove(0))
    }

    /// Bundles `browser.mjs` for the page with esbuild, into the same folder.
    async fn bundle(&self) -> Bytes {
        let native = self.node_modules.join("@esbuild/linux-x64/bin/esbuild");
        let esbuild = if native.is_file() {
            native
        } else {
            self.node_modules.join(".bin/esbuild")
        };
        run(tokio::process::Command::new(esbuild)
            .arg(self.path("browser.mjs"))
            .args([
                "--bundle",
                "--format=iife",
                "--target=es2020",
                "--log-level=warning",
            ])
            .arg(format!("--outfile={}", self.path("client.js").display())))
        .await;
        std::fs::read(self.path("client.js"))
            .expect("the bundle")
            .into()
    }
}

/// Runs `command` to the end (at most [`TIMEOUT`]; killed when that passes).
async fn run_unchecked(command: &mut tokio::process::Command) -> std::process::Output {
    bounded(
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the client starts")
}

/// Runs `command` to the end and returns its standard output, failing the test with its
/// standard error unless it exited 0.
async fn run(command: &mut tokio::process::Command) -> String {
    let output = run_unchecked(command).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{stdout}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The events a client reported, one JSON object each (see `tests/clients/plan.mjs`).
#[derive(Debug)]
struct Events(Vec<Value>);

/// What one call of a plan saw.
#[derive(Debug, Default)]
struct Outcome {
    headers: Value,
    messages: Vec<Value>,
    trailers: Value,
    error: Value,
    done: bool,
    /// The requests a browser made for it: method and URL.
    requests: Vec<String>,
}

impl Events {
    fn parse(output: &str) -> Events {
        Events(
            output
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
                .collect(),
        )
    }

    fn of(&self, id: &str) -> Outcome {
        let mut outcome = Outcome::default();
        for event in self.0.iter().filter(|e| e["call"] == id) {
            if let Some(h) = event.get("headers") {
                outcome.headers = h.clone();
            } else if let Some(m) = event.get("message") {
                outcome.messages.push(m.clone());
            } else if let Some(t) = event.get("trailers") {
                outcome.trailers = t.clone();
            } else if let Some(e) = event.get("error") {
                outcome.error = e.clone();
            } else if let Some(f) = event.get("fetch") {
                outcome.requests.push(format!(
                    "{} {}",
                    f["method"].as_str().unwrap_or("?"),
                    f["url"].as_str().unwrap_or("?")
                ));
            } else if event["done"] == true {
                outcome.done = true;
            }
        }
        outcome
    }
}

fn note(pool: &DescriptorPool, text: &str, n: i32) -> Bytes {
    encode_json(pool, NOTE, json!({"text": text, "n": n}))
}

/// The backend of `Relay` and `Lookup`: `Find` answers "found" and the text, `Say` echoes with `x-answer: yes` (or fails with
/// `FAILED_PRECONDITION` and `x-reason: because` on "fail"), `Listen` streams `n` ticks with
/// `x-stream: on` (or breaks after two on "fail"), `Collect` joins the texts it got and counts
/// them, `Converse` echoes each message as it arrives.
fn relay_handlers(pool: &DescriptorPool) -> Handlers {
    let pool_u = pool.clone();
    let unary = backend::handler(move |call: Call| {
        let pool = pool_u.clone();
        async move { say(&pool, call) }
    });
    let pool_s = pool.clone();
    let streaming = backend::stream_handler(move |call: StreamCall| {
        let pool = pool_s.clone();
        async move {
            let mut metadata = MetadataMap::new();
            metadata.insert("x-stream", MetadataValue::from_static("on"));
            Ok((metadata, streams(pool, call).await?))
        }
    });
    let paths = [LISTEN, COLLECT, CONVERSE].map(String::from).to_vec();
    Handlers {
        unary,
        streaming: Some((paths, streaming)),
    }
}

fn say(pool: &DescriptorPool, call: Call) -> Result<Reply, Status> {
    if call.path == FIND {
        let text = decode_json(pool, NOTE, &call.message)["text"].clone();
        let found = format!("found {}", text.as_str().unwrap_or_default());
        return Ok(Reply {
            message: note(pool, &found, 1),
            metadata: MetadataMap::new(),
        });
    }
    if call.path != SAY {
        return Err(Status::unimplemented("not here"));
    }
    if decode_json(pool, NOTE, &call.message)["text"] == "fail" {
        let mut metadata = MetadataMap::new();
        metadata.insert("x-reason", MetadataValue::from_static("because"));
        return Err(Status::with_metadata(
            Code::FailedPrecondition,
            "not now: 100% busy",
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

async fn streams(pool: DescriptorPool, mut call: StreamCall) -> Result<MessageStream, Status> {
    use futures_util::StreamExt;
    match call.path.as_str() {
        LISTEN => {
            let first = call.messages.message().await?.unwrap_or_default();
            let request = decode_json(&pool, NOTE, &first);
            let n = request["n"].as_i64().unwrap_or(0) as i32;
            if request["text"] == "fail" {
                return Ok(Box::pin(stream::iter([
                    Ok(note(&pool, "one", 1)),
                    Ok(note(&pool, "two", 2)),
                    Err(Status::aborted("the stream broke")),
                ])));
            }
            Ok(Box::pin(stream::iter(
                (1..=n).map(move |i| Ok(note(&pool, "tick", i))),
            )))
        }
        COLLECT => {
            let mut texts = Vec::new();
            while let Some(message) = call.messages.message().await? {
                let text = decode_json(&pool, NOTE, &message)["text"].clone();
                texts.push(text.as_str().unwrap_or_default().to_string());
            }
            let reply = note(&pool, &texts.join("+"), texts.len() as i32);
            Ok(Box::pin(stream::iter([Ok(reply)])))
        }
        _ => {
            let echoes = call.messages.map(move |message| {
                let request = decode_json(&pool, NOTE, &message?);
                let text = request["text"].as_str().unwrap_or_default();
                let n = request["n"].as_i64().unwrap_or(0) as i32;
                Ok(note(&pool, &format!("echo {text}"), n))
            });
            Ok(Box::pin(echoes))
        }
    }
}

/// The backend and the gateway in front of it, and the scripts.
struct Fixture {
    gw: Gw,
    scripts: Scripts,
    _backend: Served,
}

impl Fixture {
    async fn start(node_modules: PathBuf, settings: Settings) -> Fixture {
        let pool = protogate::descriptor::load(&client_sources()).expect("the test API loads");
        let backend = serve_handlers(relay_handlers(&pool)).await;
        let gw = start_gateway(client_sources(), &backend.url, settings).await;
        Fixture {
            gw,
            scripts: Scripts::new(node_modules, &pool),
            _backend: backend,
        }
    }

    /// Runs `calls` through connect-node's `protocol` transport.
    async fn node(&self, protocol: &str, codec: &str, http: &str, calls: Vec<Value>) -> Events {
        self.node_with(protocol, codec, http, calls, json!({}))
            .await
    }

    /// [`Fixture::node`] with more of the plan (`extra`'s fields).
    async fn node_with(
        &self,
        protocol: &str,
        codec: &str,
        http: &str,
        calls: Vec<Value>,
        extra: Value,
    ) -> Events {
        let mut plan = json!({
            "baseUrl": self.gw.base,
            "protocol": protocol,
            "codec": codec,
            "httpVersion": http,
            "useHttpGet": protocol == "connect",
            "timeoutMs": 10_000,
            "calls": calls,
        });
        for (key, value) in extra.as_object().into_iter().flatten() {
            plan[key] = value.clone();
        }
        self.scripts.node(plan).await
    }
}

/// What a client can ask of `Relay`, by call kind; the ids are what [`check`] looks for.
#[derive(Clone, Copy)]
struct Kinds {
    /// Client streams.
    client: bool,
    /// Bidi streams (interleaved: each request waits for the answer to the one before).
    bidi: bool,
    /// Calls of a method and of a service that are not there. Only over HTTP/2: over HTTP/1.1
    /// the gateway may answer them before reading the body and close the connection, which the
    /// client can see as a broken pipe instead (see [`unknown_over_http1`]).
    unknown: bool,
}

/// What an HTTP/1.1 client can ask.
const HTTP1: Kinds = Kinds {
    client: false,
    bidi: false,
    unknown: false,
};
/// What a Connect client can ask over HTTP/1.1: client streams too.
const CONNECT_HTTP1: Kinds = Kinds {
    client: true,
    bidi: false,
    unknown: false,
};
/// What a gRPC-Web client can ask over HTTP/2.
const UNARY_AND_SERVER: Kinds = Kinds {
    client: false,
    bidi: false,
    unknown: true,
};
const EVERY_KIND: Kinds = Kinds {
    client: true,
    bidi: true,
    unknown: true,
};

/// Calls of each kind, a failing call, a stream that breaks midway, a method of a known service
/// that the backend does not know, and a service nobody knows (the gateway answers).
fn relay_calls(kinds: Kinds) -> Vec<Value> {
    let mut calls = vec![
        json!({"id": "say", "service": SERVICE, "method": "Say",
               "request": {"text": "hello", "n": 7}}),
        json!({"id": "listen", "service": SERVICE, "method": "Listen",
               "request": {"text": "go", "n": 3}}),
        json!({"id": "fail", "service": SERVICE, "method": "Say", "request": {"text": "fail"}}),
        json!({"id": "broken", "service": SERVICE, "method": "Listen",
               "request": {"text": "fail"}}),
        json!({"id": "find", "service": LOOKUP, "method": "Find",
               "request": {"text": "it"}}),
    ];
    if kinds.unknown {
        calls.push(
            json!({"id": "unknown", "service": SERVICE, "method": "Say", "path": "Nope",
                          "request": {"text": "hello"}}),
        );
        calls.push(
            json!({"id": "no-service", "service": SERVICE, "method": "Say",
                          "pathService": "testapi.v1.Nowhere", "request": {"text": "hello"}}),
        );
    }
    if kinds.client {
        calls.push(
            json!({"id": "collect", "service": SERVICE, "method": "Collect",
            "requests": [{"text": "a"}, {"text": "b"}, {"text": "c"}]}),
        );
    }
    if kinds.bidi {
        calls.push(
            json!({"id": "converse", "service": SERVICE, "method": "Converse",
            "interleave": true,
            "requests": [{"text": "one", "n": 1}, {"text": "two", "n": 2},
                         {"text": "three", "n": 3}]}),
        );
    }
    calls
}

/// `count` calls of a service nobody serves, each on the heels of the one before.
fn unknown_calls(count: usize) -> Vec<Value> {
    (0..count)
        .map(|i| {
            json!({"id": format!("unknown-{i}"), "service": SERVICE, "method": "Say",
                   "pathService": "testapi.v1.Nowhere", "request": {"text": "hello"}})
        })
        .collect()
}

/// Asserts that every call of [`unknown_calls`] failed `unimplemented`.
fn check_unknown(events: &Events, count: usize, client: &str) {
    let codes: Vec<Value> = (0..count)
        .map(|i| events.of(&format!("unknown-{i}")).error)
        .collect();
    let wrong: Vec<&Value> = codes
        .iter()
        .filter(|e| e["code"] != "unimplemented")
        .collect();
    assert!(
        wrong.is_empty(),
        "{client}: {} of {count} calls failed otherwise: {wrong:?}",
        wrong.len()
    );
}

/// Asserts what every client must see of [`relay_calls`].
fn check(events: &Events, kinds: Kinds, client: &str) {
    let say = events.of("say");
    assert!(say.done, "{client}: {say:?}");
    assert_eq!(say.messages, [json!({"text": "hello", "n": 7})], "{client}");
    assert_eq!(say.headers["x-answer"], "yes", "{client}: {say:?}");

    let listen = events.of("listen");
    assert!(listen.done, "{client}: {listen:?}");
    let ticks: Vec<Value> = (1..=3).map(|n| json!({"text": "tick", "n": n})).collect();
    assert_eq!(listen.messages, ticks, "{client}");
    assert_eq!(listen.headers["x-stream"], "on", "{client}: {listen:?}");

    let fail = events.of("fail");
    assert!(fail.messages.is_empty(), "{client}: {fail:?}");
    assert_eq!(
        fail.error["code"], "failed_precondition",
        "{client}: {fail:?}"
    );
    assert_eq!(fail.error["message"], "not now: 100% busy", "{client}");
    assert_eq!(fail.error["metadata"]["x-reason"], "because", "{client}");

    let find = events.of("find");
    assert!(find.done, "{client}: {find:?}");
    assert_eq!(
        find.messages,
        [json!({"text": "found it", "n": 1})],
        "{client}"
    );

    let broken = events.of("broken");
    let two = [
        json!({"text": "one", "n": 1}),
        json!({"text": "two", "n": 2}),
    ];
    assert_eq!(broken.messages, two, "{client}: {broken:?}");
    assert_eq!(broken.error["code"], "aborted", "{client}: {broken:?}");
    assert_eq!(broken.error["message"], "the stream broke", "{client}");

    if kinds.unknown {
        let unknown = events.of("unknown");
        assert_eq!(
            unknown.error["code"], "unimplemented",
            "{client}: {unknown:?}"
        );
        let no_service = events.of("no-service");
        assert_eq!(
            no_service.error["code"], "unimplemented",
            "{client}: {no_service:?}"
        );
    }
    if kinds.client {
        let collect = events.of("collect");
        assert!(collect.done, "{client}: {collect:?}");
        assert_eq!(
            collect.messages,
            [json!({"text": "a+b+c", "n": 3})],
            "{client}"
        );
    }
    if kinds.bidi {
        let converse = events.of("converse");
        assert!(converse.done, "{client}: {converse:?}");
        let echoes = [("one", 1), ("two", 2), ("three", 3)]
            .map(|(text, n)| json!({"text": format!("echo {text}"), "n": n}));
        assert_eq!(converse.messages, echoes, "{client}");
        assert_eq!(converse.headers["x-stream"], "on", "{client}: {converse:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_node_grpc_transport_every_call_kind_over_http2() {
    let Some(modules) = node_modules() else {
        return;
    };
    let fx = Fixture::start(modules, Settings::default()).await;
    let events = fx
        .node("grpc", "binary", "2", relay_calls(EVERY_KIND))
        .await;
    check(&events, EVERY_KIND, "grpc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_node_grpc_web_transport_over_http1_and_http2() {
    let Some(modules) = node_modules() else {
        return;
    };
    let fx = Fixture::start(modules, Settings::default()).await;
    for (http, kinds) in [("1.1", HTTP1), ("2", UNARY_AND_SERVER)] {
        let events = fx.node("grpcweb", "binary", http, relay_calls(kinds)).await;
        check(&events, kinds, &format!("grpcweb over HTTP/{http}"));
    }
}

/// The Connect protocol from connect-node, `codec` over both HTTP versions: unary, server and
/// client streams over each, bidi streams over HTTP/2 (the only one that carries them).
async fn connect_node(codec: &str) {
    let Some(modules) = node_modules() else {
        return;
    };
    let fx = Fixture::start(modules, Settings::default()).await;
    for (http, kinds) in [("1.1", CONNECT_HTTP1), ("2", EVERY_KIND)] {
        let events = fx.node("connect", codec, http, relay_calls(kinds)).await;
        check(&events, kinds, &format!("connect {codec} over HTTP/{http}"));
    }
}

/// Connect with every request message gzip-compressed, and gzip accepted (a large answer comes
/// back compressed), over both HTTP versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_node_connect_transport_gzip() {
    let Some(modules) = node_modules() else {
        return;
    };
    let fx = Fixture::start(modules, Settings::default()).await;
    for (http, kinds) in [("1.1", CONNECT_HTTP1), ("2", EVERY_KIND)] {
        let mut calls = relay_calls(kinds);
        let big = "big ".repeat(2048);
        calls.push(json!({"id": "big", "service": SERVICE, "method": "Say",
                          "request": {"text": big}}));
        let gzip = json!({"gzip": true});
        let events = fx.node_with("connect", "binary", http, calls, gzip).await;
        let client = format!("connect gzip over HTTP/{http}");
        check(&events, kinds, &client);
        let big_answer = events.of("big");
        assert_eq!(big_answer.messages, [json!({"text": big})], "{client}");
        // A large answer comes back compressed.
        let encoding = &big_answer.headers["content-encoding"];
        assert_eq!(encoding, "gzip", "{client}: {big_answer:?}");
    }
}

/// An HTTP/1.1 request the gateway refuses before reading its body (an unknown service) must
/// still get its answer: closing the connection with the body unread makes the client's write
/// fail (EPIPE, or a reset) before it reads the response.
async fn unknown_over_http1(protocol: &str, codec: &str) {
    let Some(modules) = node_modules() else {
        return;
    };
    let fx = Fixture::start(modules, Settings::default()).await;
    let events = fx.node(protocol, codec, "1.1", unknown_calls(20)).await;
    check_unknown(&events, 20, &format!("{protocol} {codec} over HTTP/1.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_node_grpc_web_unknown_service_over_http1() {
    unknown_over_http1("grpcweb", "binary").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_node_connect_unknown_service_over_http1() {
    unknown_over_http1("connect", "json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_node_connect_transport_json() {
    connect_node("json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_node_connect_transport_binary() {
    connect_node("binary").await;
}

/// `buf curl` with `protocol_args`: a unary call, a server stream, and a call that fails.
async fn buf_curl(protocol_args: &[&str]) {
    let Some(modules) = node_modules() else {
        return;
    };
    let fx = &Fixture::start(modules, Settings::default()).await;
    let curl = |path: &str, request: Value| {
        let url = format!("{}{path}", fx.gw.base);
        async move { fx.scripts.buf_curl(protocol_args, &url, &request).await }
    };
    let answer = curl(SAY, json!({"text": "hello", "n": 7})).await;
    assert_eq!(
        answer,
        Ok(vec![json!({"text": "hello", "n": 7})]),
        "{protocol_args:?}"
    );
    let ticks = curl(LISTEN, json!({"n": 2})).await;
    let expected = vec![
        json!({"text": "tick", "n": 1}),
        json!({"text": "tick", "n": 2}),
    ];
    assert_eq!(ticks, Ok(expected), "{protocol_args:?}");
    let error = curl(SAY, json!({"text": "fail"}))
        .await
        .expect_err("an error");
    assert_eq!(
        error["code"], "failed_precondition",
        "{protocol_args:?}: {error}"
    );
    assert_eq!(error["message"], "not now: 100% busy", "{protocol_args:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buf_curl_grpc() {
    buf_curl(&["--protocol", "grpc", "--http2-prior-knowledge"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buf_curl_grpc_web_over_http1_and_http2() {
    buf_curl(&["--protocol", "grpcweb"]).await;
    buf_curl(&["--protocol", "grpcweb", "--http2-prior-knowledge"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buf_curl_connect_over_http1_and_http2() {
    buf_curl(&["--protocol", "connect"]).await;
    buf_curl(&["--protocol", "connect", "--http2-prior-knowledge"]).await;
}

/// A static HTTP/1.1 server on a loopback port serving `files` (path → type and body),
/// stopped when dropped.
struct StaticSite {
    origin: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StaticSite {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StaticSite {
    async fn start(files: HashMap<&'static str, (&'static str, Bytes)>) -> StaticSite {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let origin = format!("http://{}", listener.local_addr().expect("an address"));
        let files = Arc::new(files);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let files = files.clone();
                let service = hyper::service::service_fn(move |request: Request<_>| {
                    let found = files.get(request.uri().path()).cloned();
                    async move {
                        match found {
                            Some((content_type, body)) => Response::builder()
                                .header("content-type", content_type)
                                .body(Full::new(body)),
                            None => Response::builder()
                                .status(StatusCode::NOT_FOUND)
                                .body(Full::new(Bytes::new())),
                        }
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        StaticSite { origin, task }
    }
}

/// Connect-ES in chromium: a page from one origin calls the gateway on another, allowed by
/// `--cors-allow-origin`, through `protocol`'s connect-web transport with `codec`.
async fn browser(protocol: &str, codec: &str) {
    let Some(modules) = node_modules() else {
        return;
    };
    let Some(chromium) = chromium() else {
        return;
    };
    let pool = protogate::descriptor::load(&client_sources()).expect("the test API loads");
    let scripts = Scripts::new(modules.clone(), &pool);
    let bundle = scripts.bundle().await;
    let page = "<!doctype html><html><head><meta charset=utf-8><title>clients</title>\
                <script src=\"/client.js\"></script></head><body></body></html>";
    let files = HashMap::from([
        ("/", ("text/html", Bytes::from_static(page.as_bytes()))),
        ("/client.js", ("text/javascript", bundle)),
        (
            "/api.binpb",
            ("application/octet-stream", pool.encode_to_vec().into()),
        ),
    ]);
    let site = StaticSite::start(files).await;
    let settings = Settings {
        cors: CorsPolicy::from_origins(std::slice::from_ref(&site.origin)).expect("an origin"),
        ..Settings::default()
    };
    let fx = Fixture::start(modules, settings).await;
    assert_ne!(fx.gw.base, site.origin);

    let url = format!("{}/", site.origin);
    let browser = Browser::launch(&chromium, &url);
    let mut cdp = browser.page(&url).await;
    cdp.wait_ready().await;
    let plan = json!({
        "baseUrl": fx.gw.base,
        "protocol": protocol,
        "codec": codec,
        "descriptorSet": "/api.binpb",
        "useHttpGet": protocol == "connect",
        "timeoutMs": 10_000,
        "calls": relay_calls(HTTP1),
    });
    let events = cdp.eval(&format!("window.runPlan({plan})")).await;
    let events = Events(events.as_array().cloned().unwrap_or_default());
    check(&events, HTTP1, &format!("connect-web {protocol} {codec}"));
    // Connect calls a method without side effects with GET, the rest with POST.
    let find = format!("{}{FIND}", fx.gw.base);
    let method = if protocol == "connect" { "GET" } else { "POST" };
    let requests = events.of("find").requests;
    assert!(
        requests.len() == 1 && requests[0].starts_with(&format!("{method} {find}")),
        "{requests:?}"
    );
    assert_eq!(
        events.of("say").requests,
        [format!("POST {}{SAY}", fx.gw.base)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_web_grpc_web_transport_in_chromium_from_another_origin() {
    browser("grpcweb", "binary").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_web_connect_transport_json_in_chromium_from_another_origin() {
    browser("connect", "json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_web_connect_transport_binary_in_chromium_from_another_origin() {
    browser("connect", "binary").await;
}
