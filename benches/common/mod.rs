//! What the benchmarks share: the descriptors, the requests of the load cases, and the
//! backend's canned replies. `benches/transcode.rs` times the pure stages on these inputs;
//! `benches/load_backend.rs` serves the replies and frames the requests for direct gRPC.
#![allow(dead_code)]

use std::path::PathBuf;

use anyhow::{anyhow, Context};
use bytes::Bytes;
use http::Method;
use prost::Message;
use prost_reflect::DynamicMessage;
use protogate::descriptor::Sources;
use protogate::route::{Lookup, RoutePlan};
use protogate::snapshot::Snapshot;
use protogate::transcode::{build_request, JsonOptions, RequestInput};

/// A path inside the repository.
pub(crate) fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The VPS API, the test API and the benchmark API, compiled in-process.
pub(crate) fn sources() -> Sources {
    Sources {
        protos: vec![
            "schema/VPResult/vpresult_grpc_gw.proto".into(),
            "testapi/v1/library.proto".into(),
            "bench/v1/bench.proto".into(),
            "testapi/v1/rest_streams.proto".into(),
        ],
        includes: vec![
            repo_path(""),
            repo_path("tests/protos"),
            repo_path("benches/protos"),
        ],
        ..Sources::default()
    }
}

/// The snapshot of [`sources`], as `protogate routes` builds it.
pub(crate) fn snapshot() -> anyhow::Result<Snapshot> {
    Snapshot::build(&sources(), &Default::default(), None).context("bench descriptors")
}

/// One REST request: a load case, or a microbenchmark input.
#[derive(Debug, Clone)]
pub(crate) struct Case {
    pub name: &'static str,
    pub method: Method,
    /// Path and query, as sent.
    pub target: &'static str,
    /// The body's file, relative to the repository.
    pub body_file: Option<&'static str>,
}

/// The small POST: a 158-byte JSON `Book` into `CreateBook` (`body: "book"`, a path variable).
pub(crate) const SMALL_POST: Case = Case {
    name: "small_post",
    method: Method::POST,
    target: "/v1/shelves/7/books",
    body_file: Some("benches/data/book.json"),
};

/// The GET: `ListBooks` with a path variable and five query parameters (an enum, a repeated).
pub(crate) const GET_QUERY: Case = Case {
    name: "get_query",
    method: Method::GET,
    target: "/v1/shelves/7/books?page_size=20&page_token=abc123&kind=NOVEL&tags=sf&tags=classic",
    body_file: None,
};

/// The VPS sample: the real 190 KB request (mostly a base64 camera image).
pub(crate) const VPS: Case = Case {
    name: "vps",
    method: Method::POST,
    target: "/skvps/locdata",
    body_file: Some("examples/sample.json"),
};

/// One field of every well-known type (`benches/protos/bench/v1/bench.proto`).
pub(crate) const WELL_KNOWN: Case = Case {
    name: "well_known",
    method: Method::POST,
    target: "/v1/wkt",
    body_file: Some("benches/data/wkt.json"),
};

/// The VPS sample into `EchoVps`, whose response type is the request's: its reply is the
/// sample again, for timing frame -> JSON on 190 KB.
pub(crate) const VPS_ECHO: Case = Case {
    name: "vps_echo",
    method: Method::POST,
    target: "/v1/vps:echo",
    body_file: Some("examples/sample.json"),
};

/// The WebSocket echo: one `Tick` a text frame, on a session of the bidi `Chat`
/// (`testapi/v1/rest_streams.proto`); `bench/load.sh` drives it with `load_backend ws`.
pub(crate) const WS_ECHO: Case = Case {
    name: "ws_echo",
    method: Method::POST,
    target: "/v1/chat",
    body_file: Some("benches/data/tick.json"),
};

/// The cases `bench/load.sh` drives.
pub(crate) const LOAD_CASES: [Case; 3] = [SMALL_POST, GET_QUERY, VPS];

impl Case {
    pub(crate) fn path(&self) -> &'static str {
        self.target.split_once('?').map_or(self.target, |(p, _)| p)
    }

    pub(crate) fn query(&self) -> Option<&'static str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    pub(crate) fn body(&self) -> anyhow::Result<Bytes> {
        match self.body_file {
            None => Ok(Bytes::new()),
            Some(file) => std::fs::read(repo_path(file))
                .map(Bytes::from)
                .with_context(|| format!("reading {file}")),
        }
    }
}

/// A case resolved against a snapshot: its plan, path variables and body.
pub(crate) struct Resolved {
    pub case: Case,
    pub plan: std::sync::Arc<RoutePlan>,
    pub vars: Vec<String>,
    pub body: Bytes,
}

impl Resolved {
    pub(crate) fn new(snapshot: &Snapshot, case: Case) -> anyhow::Result<Resolved> {
        let (plan, vars) = match snapshot.routes.lookup(&case.method, case.path()) {
            Lookup::Found { value, vars, .. } => (value.clone(), vars.to_vec()),
            other => return Err(anyhow!("{} {}: {other:?}", case.method, case.target)),
        };
        let body = case.body()?;
        Ok(Resolved {
            case,
            plan,
            vars,
            body,
        })
    }

    pub(crate) fn input(&self) -> RequestInput<'_> {
        RequestInput {
            body: &self.body,
            content_type: Some("application/json"),
            vars: &self.vars,
            query: self.case.query(),
            form: None,
        }
    }

    /// The gRPC frame the gateway sends for this request.
    pub(crate) fn frame(&self, snapshot: &Snapshot) -> anyhow::Result<Bytes> {
        let options = JsonOptions::default();
        build_request(&self.plan, &snapshot.schemas, &options, self.input())
            .map(|frame| frame.to_bytes())
            .map_err(|e| anyhow!("{}: {}", self.case.name, e.message))
    }
}

/// A JSON file encoded as a protobuf message of type `name`.
pub(crate) fn encode_json(snapshot: &Snapshot, name: &str, file: &str) -> anyhow::Result<Bytes> {
    let desc = snapshot
        .pool
        .get_message_by_name(name)
        .ok_or_else(|| anyhow!("no message {name}"))?;
    let json = std::fs::read(repo_path(file)).with_context(|| format!("reading {file}"))?;
    let mut de = serde_json::Deserializer::from_slice(&json);
    let message = DynamicMessage::deserialize(desc, &mut de).with_context(|| file.to_string())?;
    Ok(Bytes::from(message.encode_to_vec()))
}

/// The message of a gRPC frame (the 5-byte header dropped).
pub(crate) fn payload(frame: &Bytes) -> Bytes {
    frame.slice(5..)
}

/// What the built-in VPS backend answers to the sample: a small `VPService_t`.
pub(crate) fn vps_reply(snapshot: &Snapshot) -> anyhow::Result<Bytes> {
    use futures_util::FutureExt;
    let handler = protogate::demo::vps_handler(&snapshot.pool)?;
    let frame = Resolved::new(snapshot, VPS)?.frame(snapshot)?;
    let call = protogate::demo::backend::Call {
        path: "/vpresult.LocationService/getLocationPose".into(),
        metadata: Default::default(),
        message: payload(&frame),
    };
    let reply = handler(call)
        .now_or_never()
        .ok_or_else(|| anyhow!("the VPS handler did not answer at once"))?
        .map_err(|status| anyhow!("the VPS handler failed: {status}"))?;
    Ok(reply.message)
}

/// The load backend's canned replies, by gRPC path.
pub(crate) fn canned_replies(snapshot: &Snapshot) -> anyhow::Result<Vec<(String, Bytes)>> {
    let book = encode_json(snapshot, "testapi.v1.Book", "benches/data/book_reply.json")?;
    let list = encode_json(
        snapshot,
        "testapi.v1.ListBooksResponse",
        "benches/data/list_reply.json",
    )?;
    Ok(vec![
        ("/testapi.v1.Library/CreateBook".into(), book),
        ("/testapi.v1.Library/ListBooks".into(), list),
        (
            "/vpresult.LocationService/getLocationPose".into(),
            vps_reply(snapshot)?,
        ),
    ])
}
