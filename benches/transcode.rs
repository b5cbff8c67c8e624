//! Microbenchmarks of the pure request-path stages, on fixed inputs:
//!
//! - `route/*`: route lookup in a table of 300 bindings (a generated API of 50 resources with
//!   get, list, create, update, delete and a custom verb each), as the REST handler calls it.
//! - `json_to_frame/*`: JSON (plus path variables and query) into a gRPC frame
//!   (`transcode::build_request`) for the load cases, and for a message of every well-known
//!   type.
//! - `json_to_frame_reference/*`: the same through the reference path (prost-reflect's
//!   `DynamicMessage`), the baseline of the direct JSON-to-wire encoder that
//!   `build_request` takes where it can.
//! - `frame_to_json/*`: an upstream message back to JSON (`transcode::render_response`):
//!   the load cases' replies, the well-known-type message, and the 190 KB VPS sample.
//! - `frame_to_json_reference/*`: the same through the reference path (`DynamicMessage`
//!   decoding, then `message_to_json`), the baseline of the direct wire-to-JSON renderer.
//!
//! Throughput is counted in bytes of JSON on either side, so the MB/s of both directions
//! compare. `cargo bench --bench transcode`; `cargo test --bench transcode` runs each once.

mod common;

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use common::{Case, Resolved};
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use http::Method;
use protogate::descriptor::Sources;
use protogate::grpc::frame;
use protogate::route::Lookup;
use protogate::snapshot::Snapshot;
use protogate::transcode::{
    build_request, render_response, request_message, JsonOptions, RenderedBody,
};

/// Resources in the generated API; six bindings each.
const RESOURCES: usize = 50;

fn configure() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args()
}

// --- route lookup ---

/// A `.proto` with `RESOURCES` resources under `projects/*`, Google API style.
fn routes_proto() -> String {
    let mut proto = String::from(
        "syntax = \"proto3\";\npackage bench.routes.v1;\nimport \"google/api/annotations.proto\";\n\
         message Item { string name = 1; string title = 2; }\n\
         message Req { string name = 1; string parent = 2; Item item = 3; int32 page_size = 4; }\n\
         service Routes {\n",
    );
    for r in 0..RESOURCES {
        let bindings = [
            (
                "Get",
                "get",
                format!("/v1/{{name=projects/*/res{r}/*}}"),
                "",
            ),
            (
                "List",
                "get",
                format!("/v1/{{parent=projects/*}}/res{r}"),
                "",
            ),
            (
                "Create",
                "post",
                format!("/v1/{{parent=projects/*}}/res{r}"),
                "item",
            ),
            (
                "Update",
                "patch",
                format!("/v1/{{item.name=projects/*/res{r}/*}}"),
                "item",
            ),
            (
                "Delete",
                "delete",
                format!("/v1/{{name=projects/*/res{r}/*}}"),
                "",
            ),
            (
                "Cancel",
                "post",
                format!("/v1/{{name=projects/*/res{r}/*}}:cancel"),
                "*",
            ),
        ];
        for (verb, method, path, body) in bindings {
            let _ = writeln!(
                proto,
                "  rpc {verb}{r}(Req) returns (Item) {{ option (google.api.http) = \
                 {{ {method}: \"{path}\" body: \"{body}\" }}; }}"
            );
        }
    }
    proto.push_str("}\n");
    proto
}

fn route_table() -> Snapshot {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("routes.proto"), routes_proto()).expect("write proto");
    let sources = Sources {
        protos: vec!["routes.proto".into()],
        includes: vec![dir.path().to_path_buf()],
        ..Sources::default()
    };
    let snapshot = Snapshot::build(&sources, &Default::default(), None).expect("routes load");
    assert_eq!(snapshot.routes.len(), RESOURCES * 6);
    snapshot
}

fn bench_routes(c: &mut Criterion) {
    let snapshot = route_table();
    let last = RESOURCES - 1;
    let lookups = [
        (
            "get_first",
            Method::GET,
            "/v1/projects/p1/res0/item-1".to_string(),
        ),
        (
            "get_last",
            Method::GET,
            format!("/v1/projects/p1/res{last}/item-1"),
        ),
        (
            "list",
            Method::GET,
            format!("/v1/projects/p1/res{}", last / 2),
        ),
        (
            "custom_verb",
            Method::POST,
            format!("/v1/projects/p1/res{last}/i:cancel"),
        ),
        (
            "not_found",
            Method::GET,
            "/v1/projects/p1/nothing/item-1".to_string(),
        ),
        (
            "method_not_allowed",
            Method::PUT,
            format!("/v1/projects/p1/res{last}/i"),
        ),
    ];
    let mut group = c.benchmark_group(format!("route/{}_routes", snapshot.routes.len()));
    group.throughput(Throughput::Elements(1));
    for (name, method, path) in &lookups {
        let found = matches!(snapshot.routes.lookup(method, path), Lookup::Found { .. });
        assert_eq!(
            found,
            name.starts_with("get") || *name == "list" || *name == "custom_verb"
        );
        group.bench_function(*name, |b| {
            b.iter(|| {
                let lookup = snapshot.routes.lookup(black_box(method), black_box(path));
                black_box(matches!(lookup, Lookup::Found { .. }))
            })
        });
    }
    group.finish();
}

// --- transcoding ---

fn bench_json_to_frame(c: &mut Criterion) {
    let snapshot = common::snapshot().expect("bench descriptors");
    let options = JsonOptions::default();
    let mut group = c.benchmark_group("json_to_frame");
    for case in [
        common::SMALL_POST,
        common::GET_QUERY,
        common::WELL_KNOWN,
        common::VPS,
    ] {
        let resolved = Resolved::new(&snapshot, case).expect("case resolves");
        resolved.frame(&snapshot).expect("case transcodes");
        let case = &resolved.case;
        let json_len = resolved.body.len() + case.query().map_or(0, str::len);
        group.throughput(Throughput::Bytes(json_len as u64));
        group.bench_function(case.name, |b| {
            b.iter(|| {
                build_request(
                    &resolved.plan,
                    &snapshot.schemas,
                    &options,
                    black_box(resolved.input()),
                )
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("json_to_frame_reference");
    for case in [common::SMALL_POST, common::WELL_KNOWN, common::VPS] {
        let resolved = Resolved::new(&snapshot, case).expect("case resolves");
        group.throughput(Throughput::Bytes(resolved.body.len() as u64));
        group.bench_function(resolved.case.name, |b| {
            b.iter(|| {
                request_message(&resolved.plan, &options, black_box(resolved.input()))
                    .map(|m| frame::encode(&m))
            })
        });
    }
    group.finish();
}

/// A reply message for `case`, rendered by `case`'s plan.
struct Reply {
    resolved: Resolved,
    payload: Bytes,
}

fn replies(snapshot: &Snapshot) -> Vec<(&'static str, Reply)> {
    let reply = |case: Case, payload: Bytes| Reply {
        resolved: Resolved::new(snapshot, case).expect("case resolves"),
        payload,
    };
    let echo = |case: Case| {
        let resolved = Resolved::new(snapshot, case).expect("case resolves");
        let payload = common::payload(&resolved.frame(snapshot).expect("case transcodes"));
        Reply { resolved, payload }
    };
    let encode =
        |name: &str, file: &str| common::encode_json(snapshot, name, file).expect("reply encodes");
    let vps_reply = common::vps_reply(snapshot).expect("VPS reply");
    vec![
        (
            "small_post",
            reply(
                common::SMALL_POST,
                encode("testapi.v1.Book", "benches/data/book_reply.json"),
            ),
        ),
        (
            "get_query",
            reply(
                common::GET_QUERY,
                encode(
                    "testapi.v1.ListBooksResponse",
                    "benches/data/list_reply.json",
                ),
            ),
        ),
        ("well_known", echo(common::WELL_KNOWN)),
        ("vps_reply", reply(common::VPS, vps_reply)),
        ("vps_sample", echo(common::VPS_ECHO)),
    ]
}

fn bench_frame_to_json(c: &mut Criterion) {
    let snapshot = common::snapshot().expect("bench descriptors");
    let options = JsonOptions::default();
    let mut group: BenchmarkGroup<'_, WallTime> = c.benchmark_group("frame_to_json");
    for (name, reply) in replies(&snapshot) {
        let plan = &reply.resolved.plan;
        let schemas = &snapshot.schemas;
        let rendered =
            render_response(plan, schemas, &options, reply.payload.clone()).expect("renders");
        let RenderedBody::Json(json) = rendered else {
            panic!("{name}: not JSON")
        };
        group.throughput(Throughput::Bytes(json.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| render_response(plan, schemas, &options, black_box(reply.payload.clone())))
        });
    }
    group.finish();

    let reference = JsonOptions {
        fast_paths: false,
        ..JsonOptions::default()
    };
    let mut group = c.benchmark_group("frame_to_json_reference");
    for (name, reply) in replies(&snapshot) {
        let plan = &reply.resolved.plan;
        let schemas = &snapshot.schemas;
        let rendered =
            render_response(plan, schemas, &reference, reply.payload.clone()).expect("renders");
        let RenderedBody::Json(json) = rendered else {
            panic!("{name}: not JSON")
        };
        group.throughput(Throughput::Bytes(json.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| render_response(plan, schemas, &reference, black_box(reply.payload.clone())))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = configure();
    targets = bench_routes, bench_json_to_frame, bench_frame_to_json
}
criterion_main!(benches);
