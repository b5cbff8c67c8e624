//! The conformance corpus: every case in `tests/conformance/*.json` runs against the real
//! gateway and a real gRPC backend on loopback. A suite names its `.proto` (compiled
//! in-process), optional gateway flags, and cases: the HTTP request, the message the upstream
//! must receive, the upstream's reply, and the HTTP response expected.
//!
//! Each case is a test of its own, named `<file stem>::<case name>` with the name in lower
//! case and every run of other characters as one `_` (`40_json_body::int64_as_a_json_number`
//! for "int64 as a JSON number" in `40_json_body.json`), so one case runs by name:
//!
//! ```sh
//! cargo test --test conformance -- --exact 40_json_body::int64_as_a_json_number
//! cargo test --test conformance -- 90_errors::     # one file
//! cargo test --test conformance -- --list          # every name
//! ```
//!
//! Every case runs twice: through the fast paths wherever they apply (the names above), and
//! with them off, through the reference path alone (`reference::40_json_body::...`), so
//! both paths are held to every expected answer.
//!
//! The harness is `libtest-mimic` (`harness = false` in `Cargo.toml`). Each file gets one
//! gateway and one backend, started by its first case to run; the cases of a file take turns
//! on them (the backend answers the case being run), the files run in parallel.

// The harness the integration tests share; this binary uses a part of it.
#[allow(dead_code)]
#[path = "it/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderName;
use libtest_mimic::{Arguments, Failed, Trial};
use prost_reflect::DescriptorPool;
use protogate::demo::backend::{Call, Reply};
use protogate::descriptor::Sources;
use protogate::route::{RouteOptions, Unescape};
use protogate::server::{Gateway, Settings};
use protogate::snapshot::Snapshot;
use serde::Deserialize;
use serde_json::Value as Json;
use support::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Suite {
    /// A `.proto` file under `tests/conformance/protos`.
    proto: String,
    #[serde(default)]
    flags: Flags,
    cases: Vec<Case>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Flags {
    #[serde(default)]
    use_proto_names: bool,
    #[serde(default)]
    omit_unpopulated: bool,
    #[serde(default)]
    enums_as_ints: bool,
    #[serde(default)]
    int64_as_numbers: bool,
    #[serde(default)]
    indent: bool,
    #[serde(default)]
    reject_unknown_fields: bool,
    #[serde(default)]
    reject_unknown_query: bool,
    #[serde(default)]
    expose_unannotated: bool,
    #[serde(default)]
    path_unescape: Option<String>,
    #[serde(default)]
    max_request_bytes: Option<usize>,
    #[serde(default)]
    forward_headers: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    request: HttpRequest,
    /// The call the upstream must receive; `null` when it must receive none.
    upstream: Option<UpstreamCall>,
    #[serde(default)]
    reply: UpstreamReply,
    response: HttpResponse,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpRequest {
    #[serde(default = "get")]
    method: String,
    path: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// A raw body.
    #[serde(default)]
    body: Option<String>,
    /// A JSON body, serialized compactly.
    #[serde(default)]
    json: Option<Json>,
    /// A binary body, in base64.
    #[serde(default)]
    body_base64: Option<String>,
}

fn get() -> String {
    "GET".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamCall {
    /// `/package.Service/Method`.
    method: String,
    /// The request message in proto JSON with proto field names, defaults omitted.
    message: Json,
    /// Metadata the call must carry.
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    /// Metadata keys the call must not carry.
    #[serde(default)]
    absent_metadata: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamReply {
    /// The response message in proto JSON (the method's output type).
    #[serde(default)]
    message: Option<Json>,
    /// An error instead: a `google.rpc.Status` in JSON (`code`, `message`, `details`).
    #[serde(default)]
    error: Option<Json>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpResponse {
    status: u16,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    absent_headers: Vec<String>,
    /// The body as JSON, compared exactly.
    #[serde(default)]
    json: Option<Json>,
    /// The raw body, compared byte for byte.
    #[serde(default)]
    body: Option<String>,
    /// A binary body, in base64, compared byte for byte.
    #[serde(default)]
    body_base64: Option<String>,
    /// Substrings the error message (`message` of a JSON body) must contain.
    #[serde(default)]
    message_contains: Vec<String>,
}

/// The reply the backend gives to the case being run.
type Current = Arc<Mutex<Option<(String, UpstreamReply)>>>;

fn corpus_dir() -> PathBuf {
    repo_path("tests/conformance")
}

fn settings(flags: &Flags, fast_paths: bool) -> Settings {
    let mut settings = Settings::default();
    let json = &mut settings.json;
    json.fast_paths = fast_paths;
    json.use_proto_names = flags.use_proto_names;
    json.emit_unpopulated = !flags.omit_unpopulated;
    json.enums_as_ints = flags.enums_as_ints;
    json.int64_as_numbers = flags.int64_as_numbers;
    json.indent = flags.indent;
    json.reject_unknown_fields = flags.reject_unknown_fields;
    json.reject_unknown_query = flags.reject_unknown_query;
    if let Some(max) = flags.max_request_bytes {
        settings.max_request_bytes = max;
    }
    settings.forward_headers = flags
        .forward_headers
        .iter()
        .map(|h| HeaderName::try_from(h.as_str()).unwrap())
        .collect();
    settings
}

fn route_options(flags: &Flags) -> RouteOptions {
    RouteOptions {
        expose_unannotated: flags.expose_unannotated,
        unescape: match flags.path_unescape.as_deref() {
            Some("all") => Unescape::All,
            Some("all-except-reserved") => Unescape::AllExceptReserved,
            _ => Unescape::AllExceptSlash,
        },
    }
}

fn sources(proto: &str) -> Sources {
    Sources {
        protos: vec![PathBuf::from(proto)],
        includes: vec![corpus_dir().join("protos")],
        ..Sources::default()
    }
}

/// The output type of `/package.Service/Method`.
fn output_type(pool: &DescriptorPool, path: &str) -> String {
    let (service, method) = path.trim_start_matches('/').split_once('/').unwrap();
    let service = pool.get_service_by_name(service).unwrap();
    let method = service.methods().find(|m| m.name() == method).unwrap();
    method.output().full_name().to_string()
}

fn metadata(map: &BTreeMap<String, String>) -> tonic::metadata::MetadataMap {
    let mut out = tonic::metadata::MetadataMap::new();
    for (k, v) in map {
        let key = tonic::metadata::AsciiMetadataKey::from_bytes(k.as_bytes()).unwrap();
        out.insert(key, v.parse().unwrap());
    }
    out
}

fn answer(
    pool: &DescriptorPool,
    call: &Call,
    reply: &UpstreamReply,
) -> Result<Reply, tonic::Status> {
    if let Some(error) = &reply.error {
        let code = tonic::Code::from_i32(error["code"].as_i64().unwrap_or(2) as i32);
        let message = error["message"].as_str().unwrap_or_default().to_string();
        let details = encode_json(pool, "google.rpc.Status", error.clone());
        return Err(tonic::Status::with_details_and_metadata(
            code,
            message,
            details,
            metadata(&reply.metadata),
        ));
    }
    let message = match &reply.message {
        Some(json) => encode_json(pool, &output_type(pool, &call.path), json.clone()),
        None => Bytes::new(),
    };
    Ok(Reply {
        message,
        metadata: metadata(&reply.metadata),
    })
}

struct Runner {
    pool: DescriptorPool,
    backend: Backend,
    gw: Gw,
    current: Current,
}

impl Runner {
    async fn start(proto: &str, flags: &Flags, fast_paths: bool) -> Runner {
        let pool = protogate::descriptor::load(&sources(proto)).unwrap();
        let current: Current = Arc::new(Mutex::new(None));
        let (answer_pool, answer_current) = (pool.clone(), current.clone());
        let backend = Backend::start(move |call: &Call| {
            let current = answer_current.lock().unwrap();
            let (_, reply) = current.as_ref().expect("a case is running");
            answer(&answer_pool, call, reply)
        })
        .await;
        let options = protogate::upstream::UpstreamOptions {
            connections: 1,
            connect_timeout: Duration::from_secs(2),
            ..Default::default()
        };
        let (upstreams, map) =
            protogate::upstream::build_all(Some(&backend.url), &[], &options).unwrap();
        let snapshot = Snapshot::build(&sources(proto), &route_options(flags), Some(&map)).unwrap();
        let gw = start_with(Gateway::new(
            snapshot,
            upstreams,
            settings(flags, fast_paths),
        ))
        .await;
        Runner {
            pool,
            backend,
            gw,
            current,
        }
    }

    /// Runs one case; `Err` lists what differed.
    async fn run(&self, case: &Case) -> Result<(), Vec<String>> {
        let calls_before = self.backend.calls().len();
        *self.current.lock().unwrap() = Some((case.name.clone(), reply_of(case)));
        let resp = self.send(&case.request).await;
        let mut problems = Vec::new();
        let calls = self.backend.calls();
        let new_calls = &calls[calls_before..];
        self.check_upstream(case.upstream.as_ref(), new_calls, &mut problems);
        check_response(&case.response, &resp, &mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    async fn send(&self, request: &HttpRequest) -> Resp {
        let body = match (&request.body, &request.json, &request.body_base64) {
            (Some(raw), _, _) => Bytes::from(raw.clone()),
            (None, Some(json), _) => Bytes::from(serde_json::to_vec(json).unwrap()),
            (None, None, Some(b64)) => Bytes::from(base64_decode(b64)),
            (None, None, None) => Bytes::new(),
        };
        let headers: Vec<(&str, &str)> = request
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let url = format!("{}{}", self.gw.base, request.path);
        send(&request.method, &url, &headers, body).await
    }

    fn check_upstream(
        &self,
        expected: Option<&UpstreamCall>,
        calls: &[Call],
        problems: &mut Vec<String>,
    ) {
        let Some(expected) = expected else {
            if !calls.is_empty() {
                problems.push(format!("expected no upstream call, got {}", calls[0].path));
            }
            return;
        };
        let [call] = calls else {
            problems.push(format!("expected one upstream call, got {}", calls.len()));
            return;
        };
        if call.path != expected.method {
            problems.push(format!(
                "upstream method {} != {}",
                call.path, expected.method
            ));
            return;
        }
        let input = input_type(&self.pool, &call.path);
        let got = decode_json(&self.pool, &input, &call.message);
        if got != expected.message {
            problems.push(format!("upstream message {got} != {}", expected.message));
        }
        for (k, v) in &expected.metadata {
            let actual = call.metadata.get(k.as_str()).and_then(|m| m.to_str().ok());
            if actual != Some(v.as_str()) {
                problems.push(format!("upstream metadata {k}: {actual:?} != {v:?}"));
            }
        }
        for k in &expected.absent_metadata {
            if call.metadata.get(k.as_str()).is_some() {
                problems.push(format!("upstream metadata {k} should be absent"));
            }
        }
    }
}

fn reply_of(case: &Case) -> UpstreamReply {
    UpstreamReply {
        message: case.reply.message.clone(),
        error: case.reply.error.clone(),
        metadata: case.reply.metadata.clone(),
    }
}

fn input_type(pool: &DescriptorPool, path: &str) -> String {
    let (service, method) = path.trim_start_matches('/').split_once('/').unwrap();
    let service = pool.get_service_by_name(service).unwrap();
    let method = service.methods().find(|m| m.name() == method).unwrap();
    method.input().full_name().to_string()
}

fn check_response(expected: &HttpResponse, resp: &Resp, problems: &mut Vec<String>) {
    if resp.status.as_u16() != expected.status {
        problems.push(format!(
            "status {} != {} (body {})",
            resp.status,
            expected.status,
            String::from_utf8_lossy(&resp.body)
        ));
    }
    for (k, v) in &expected.headers {
        if resp.header(k) != Some(v.as_str()) {
            problems.push(format!("header {k}: {:?} != {v:?}", resp.header(k)));
        }
    }
    for k in &expected.absent_headers {
        if resp.headers.contains_key(k.as_str()) {
            problems.push(format!("header {k} should be absent"));
        }
    }
    if let Some(b64) = &expected.body_base64 {
        if resp.body.as_ref() != base64_decode(b64).as_slice() {
            problems.push(format!("body {:?} != base64 {b64}", resp.body));
        }
    }
    if let Some(body) = &expected.body {
        if resp.body.as_ref() != body.as_bytes() {
            problems.push(format!(
                "body {:?} != {body:?}",
                String::from_utf8_lossy(&resp.body)
            ));
        }
    }
    let parsed: Option<Json> = serde_json::from_slice(&resp.body).ok();
    if let Some(json) = &expected.json {
        if parsed.as_ref() != Some(json) {
            problems.push(format!(
                "json {} != {json}",
                String::from_utf8_lossy(&resp.body)
            ));
        }
    }
    let message = parsed
        .as_ref()
        .and_then(|p| p["message"].as_str())
        .unwrap_or_default();
    for part in &expected.message_contains {
        if !message.contains(part.as_str()) {
            problems.push(format!("message {message:?} lacks {part:?}"));
        }
    }
}

fn suites() -> Vec<(PathBuf, Suite)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let suite: Suite =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path, suite)
        })
        .collect()
}

/// A case's name as a test name: lower case, every run of other characters one `_`.
fn test_name(case: &str) -> String {
    let mut out = String::with_capacity(case.len());
    for c in case.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_end_matches('_').to_string()
}

/// One file of the corpus: its gateway and backend, started by the first case to run, and
/// the turn its cases take on them.
struct SuiteRun {
    proto: String,
    flags: Arc<Flags>,
    fast_paths: bool,
    runner: tokio::sync::OnceCell<Runner>,
    turn: tokio::sync::Mutex<()>,
}

/// How long a case may wait for its turn: the cases before it in the same file, each bounded
/// by [`TIMEOUT`], with one per other test thread at most ahead of it.
const TURN_TIMEOUT: Duration = Duration::from_secs(300);

impl SuiteRun {
    /// Runs `case` on this file's gateway; `Err` lists what differed.
    async fn run(&self, case: &Case) -> Result<(), Vec<String>> {
        let runner = self
            .runner
            .get_or_init(|| bounded(Runner::start(&self.proto, &self.flags, self.fast_paths)))
            .await;
        let _turn = tokio::time::timeout(TURN_TIMEOUT, self.turn.lock())
            .await
            .expect("the cases before this one in its file finished");
        bounded(runner.run(case)).await
    }
}

const MIN_CASES: usize = 150;

fn main() {
    let args = Arguments::from_args();
    let runtime = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime"),
    );
    let mut trials = Vec::new();
    let mut total = 0;
    for (path, suite) in suites() {
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let file = file_name(&path);
        let flags = Arc::new(suite.flags);
        let cases: Vec<Arc<Case>> = suite.cases.into_iter().map(Arc::new).collect();
        total += cases.len();
        for (prefix, fast_paths) in [("", true), ("reference::", false)] {
            let run = Arc::new(SuiteRun {
                proto: suite.proto.clone(),
                flags: flags.clone(),
                fast_paths,
                runner: tokio::sync::OnceCell::new(),
                turn: tokio::sync::Mutex::new(()),
            });
            let mut names: HashMap<String, String> = HashMap::new();
            for case in &cases {
                let name = format!("{prefix}{stem}::{}", test_name(&case.name));
                if let Some(other) = names.insert(name.clone(), case.name.clone()) {
                    panic!(
                        "{file}: the cases {other:?} and {:?} have the same test name {name}",
                        case.name
                    );
                }
                let (run, runtime, file, case) =
                    (run.clone(), runtime.clone(), file.clone(), case.clone());
                trials.push(Trial::test(name, move || {
                    runtime.block_on(run.run(&case)).map_err(|problems| {
                        Failed::from(format!(
                            "{file} / {}:\n    {}",
                            case.name,
                            problems.join("\n    ")
                        ))
                    })
                }));
            }
        }
    }
    trials.push(Trial::test("corpus::has_enough_cases", move || {
        if total >= MIN_CASES {
            Ok(())
        } else {
            Err(format!("the corpus has {total} cases; it should have at least {MIN_CASES}").into())
        }
    }));
    libtest_mimic::run(&args, trials).exit();
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("the case's base64 decodes")
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}
